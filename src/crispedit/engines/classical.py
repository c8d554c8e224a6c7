"""The classical engine: exemplar (patch-based) inpainting, no weights (the embedded default).

A hole is filled with patches copied from its surroundings, never invented and never taken from the hole:

- **Exemplar fill** (default, ``method="patchmatch"``): PatchMatch inpainting (Barnes, Shechtman, Finkelstein &
  Goldman, "PatchMatch: a randomized correspondence algorithm for structural image editing", SIGGRAPH 2009;
  the EM completion of Wexler, Shechtman & Irani 2007) from the PyPatchMatch package (MIT). It is multi-scale by
  construction: structure is decided on the coarse levels of its image pyramid, and the finest level votes
  patches of the scale it runs at. Only known pixels are sources (the hole's own pixels never are).
- **Context window**: the fill sees the hole's bounding box plus a context margin (``context`` x the hole's
  long side, at least ``min_context`` px, clipped to the crop the harness passes).
- **Scale**: a window up to ``coarse_pixels / native_above**2`` px (about 1.2 MP) is filled at native scale, so
  the fill carries the photo's own texture at 1:1. A larger window is filled on a copy reduced to
  ``coarse_pixels`` (where the layout is decided) and upscaled bicubically. The octave the reduction
  attenuated is then amplified back, inside the hole only, by the gain that gives it the RMS of the same band
  on a ring around the hole (at most ``band_gain``): edges and texture of the fill read as sharp as their
  surroundings at 1:1 (``bench/removal.py`` detail ratio). The finest grain comes from the harness, which lays
  the photo's own grain (its residual, cut from the ring around the mask) over the fill
  (``compositing.match_grain``). ``texture="patch"`` instead adds the high-pass of a
  second PatchMatch fill at up to ``native_pixels`` (slower; measured in ``bench/removal.py``).
- **Tone lock**: copied patches carry the brightness of wherever they came from (a glow next to the removed
  object, a darker corner), which reads as a lighter or darker disc with the mask's outline. Below a spatial
  scale of ``tone_lock`` x the hole's long side, the fill's local mean is replaced by that of a smooth
  membrane of the surroundings (``membrane.membrane_solve``, the exact harmonic interpolation). Only small
  differences (a drift of up to about ``tone_tolerance`` levels) are corrected: a membrane blends the colours of distinct regions around the
  hole (sky and a roof), so a larger difference is content and is left to the fill; and only where the
  sources the membrane blends agree (else a flat fill beside an edge got a lighter arc).
- **Direction prior**: where the surroundings run one way throughout (grass, hair, wood grain;
  :func:`dominant_direction`), PatchMatch's patch distance gets PyPatchMatch's regularity term on the pixel
  column (or row), weight ``direction_guide``: sources in line with the structure are preferred, and stems run
  through the fill instead of being cut into horizontal streaks (the demo's larger dandelion). Not where the
  surroundings are layered across that direction (sky, a sloped ridge, ground: ``direction_layering``), where
  the same row holds other content than the hole needs.
- **Thin strokes and dust** (no hole pixel farther than ``thin_width`` px from the context): Telea's fast
  marching method (Telea 2004, OpenCV ``cv2.inpaint``), exact enough at that width and much cheaper.
- **Honest limits**: a crop masked above ``max_masked_fraction`` (almost no context), or a hole larger than
  ``max_hole_pixels`` (an outpainting), raises :class:`crispedit.errors.InputError` with one line saying what
  to do, instead of returning a collage. No pixel is left unfilled (no black holes).

The other ``method`` values are there to be measured against (``bench/removal.py --method``): ``"shiftmap"``
(He & Sun 2012) and ``"fsr_fast"`` / ``"fsr_best"`` (frequency-selective reconstruction, Seiler et al. 2015),
both from opencv-contrib ``xphoto``, run through the same window, scale and tone lock; ``"telea"`` / ``"ns"``
(Navier-Stokes, Bertalmio et al. 2001) diffuse every hole from its border.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from PIL import Image

from crispedit.engines.base import Region, register_engine
from crispedit.errors import InputError
from crispedit.membrane import membrane_solve
from crispedit.options import ClassicalOptions, check_classical

_DIFFUSION = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}
_EXEMPLAR = ("patchmatch", "shiftmap", "fsr_fast", "fsr_best")
METHODS = _EXEMPLAR + tuple(_DIFFUSION)
#: Band edges (Gaussian sigmas, native px) of the octaves whose contrast :func:`_restore_mid_bands` restores.
MID_SIGMAS = (1.0, 2.0, 4.0, 8.0, 16.0)


def _patchmatch() -> Any:
    """The PyPatchMatch module, or an InputError saying how to get it."""
    try:
        import patchmatch
    except ImportError:  # pragma: no cover - a declared dependency
        patchmatch = None
    if patchmatch is None or not getattr(patchmatch, "patchmatch_available", False):
        raise InputError("the classical engine needs PyPatchMatch's native library, which is not available",
                         "pip install --force-reinstall PyPatchMatch (or pass engine option method=telea)")
    return patchmatch


def derive_seed(seed: int | None) -> int:
    """The 32-bit seed of the randomized patch search, derived from the user's seed with ``SeedSequence``.

    ``None`` means 0, so an engine call is repeatable even without a seed.
    """
    return int(np.random.SeedSequence(0 if seed is None else int(seed)).generate_state(1, np.uint32)[0])


class ClassicalEngine:
    """Object removal without a model (see the module docstring). ``prompt`` is ignored.

    Parameters
    ----------
    options : crispedit.options.ClassicalOptions, optional
        All options at once (positional); keywords override them. The defaults live in that model, and every
        keyword is validated through it (:class:`~crispedit.errors.InputError` with a did-you-mean on a typo).
    method : str
        ``"patchmatch"`` (default), ``"shiftmap"``, ``"fsr_fast"``, ``"fsr_best"``, ``"telea"`` or ``"ns"``.
    patch_size : int
        PatchMatch patch radius in px (patches are ``2 * patch_size + 1`` wide); PyPatchMatch also tries
        radius 5 on its coarse levels.
    native_pixels : int
        Largest window (px²) of the ``texture="patch"`` native-scale texture pass.
    context : float
        Context margin around the hole's bounding box, as a fraction of the hole's long side.
    min_context : int
        Smallest context margin in px.
    thin_width : float
        Holes whose every pixel lies within this many px of the context take the Telea path.
    radius : int
        Telea / Navier-Stokes neighbourhood radius in px.
    max_masked_fraction : float
        Refuse crops with a larger masked fraction (there is too little context to copy from).
    max_hole_pixels : int
        Refuse holes with more pixels (a fill that large is an outpainting, which this engine does not do).
    coarse_pixels : int
        Size (px²) of the reduced copy on which large windows are filled.
    texture : str
        ``"grain"`` (default): native texture of reduced-scale fills from the harness's grain matching;
        ``"patch"``: add the high-pass (Gaussian sigma ``texture_sigma`` / scale) of a second fill at up to
        ``native_pixels``.
    texture_sigma : float
        See ``texture``.
    native_above : float
        A reduction factor at or above this fills at native scale instead (a slight reduction only blurs).
    tone_lock : float
        Scale of the tone lock as a fraction of the hole's long side (0 = off).
    band_gain : float
        Largest gain of the top-band restore of reduced-scale fills (1 = off).
    tone_tolerance : float
        Tone lock tolerance in 8-bit levels: differences well above it are content and are not corrected.
    direction_guide : float
        Weight of the direction prior of PatchMatch (0 = off) where the surroundings have one dominant
        direction (:func:`dominant_direction`): sources in the same column (vertical structure) or row are
        preferred, so that grass stems run through the fill instead of being cut into horizontal streaks.
    direction_consensus : float
        Fraction of the surroundings' tiles that must share the direction for the prior to apply.
    direction_layering : float
        The prior is not used where the surroundings are layered across the direction (sky, ridge, ground)
        rather than one texture: see :func:`dominant_direction`'s ``layering``.
    mid_gain : float
        Largest gain of :func:`_restore_mid_bands` (default 1 = off): the fill's octaves at 1-16 px get the
        contrast of the same octaves around the hole. Off by default: on the tuning photos, 2 brings seeding
        r=420's detail ratio from 0.71 into range (0.88) but pushes dragonfly r=420's from 0.89 to 1.62, whose
        truth under the object is smoother than the photo around it (``bench/removal.py``).
    """

    working_size: int | None = None
    name = "classical"

    def __init__(self, options: ClassicalOptions | None = None, /, **kwargs: Any):
        # one name, one default, one validation: crispedit.options.ClassicalOptions (did-you-mean on a typo)
        self.options = check_classical(**{**(options.as_dict() if options is not None else {}), **kwargs})
        if self.options.method in ("shiftmap", "fsr_fast", "fsr_best") and getattr(cv2, "xphoto", None) is None:
            raise InputError(f"classical method '{self.options.method}' needs opencv-contrib (cv2.xphoto)",
                             "pip install opencv-contrib-python-headless, or use method=patchmatch")
        for name, value in self.options:
            setattr(self, name, value)
        self._direction: str | None = None
        self.calls: list[dict] = []

    def inpaint(self, image: Image.Image, mask: Image.Image, prompt: str | None = None, *, seed: int | None = None,
                strength: float = 1.0, region: Region | None = None) -> Image.Image:
        """Fill the white part of ``mask`` from the rest of ``image``.

        Parameters
        ----------
        image : PIL.Image.Image
            RGB crop, 8-bit.
        mask : PIL.Image.Image
            L (or 1) image of the same size; >= 128 = fill.
        prompt : str or None
            Ignored.
        seed : int or None
            Seed of the randomized patch search (``derive_seed``); equal inputs and seeds give equal outputs.
        strength : float
            Ignored: every call fills from the context.
        region : tuple of int or None
            Where the crop lies in the full image (recorded only).

        Returns
        -------
        PIL.Image.Image
            RGB, same size; pixels outside the mask are those of ``image``.

        Raises
        ------
        InputError
            The crop is almost all hole, or the hole exceeds ``max_hole_pixels``.
        """
        m = np.asarray(mask.convert("L") if mask.mode not in ("L", "1") else mask)
        hole = m >= 128 if m.dtype != np.bool_ else m
        n = int(np.count_nonzero(hole))
        call: dict[str, Any] = {"kind": "inpaint", "size": list(image.size), "strength": strength,
                                "hole_pixels": n}
        self.calls.append(call)
        if n == 0:
            return image.convert("RGB")
        self._check_fillable(hole, n)
        rgb = np.asarray(image.convert("RGB"))
        used = derive_seed(seed)
        call["seed"] = used
        out, how = self.fill(rgb, hole, used)
        call.update(how)
        return Image.fromarray(out)

    def _check_fillable(self, hole: np.ndarray, n: int) -> None:
        frac = n / hole.size
        h, w = hole.shape
        if frac > self.max_masked_fraction:
            raise InputError(
                f"the mask covers {100 * frac:.0f}% of its {w}x{h} px crop: the classical engine copies from the "
                f"surroundings and there are almost none (limit {100 * self.max_masked_fraction:.0f}%)",
                "mask only the object to remove, or use --engine sd15 to generate new content")
        if n > self.max_hole_pixels:
            raise InputError(
                f"the hole is {n / 1e6:.1f} MP, more than the classical engine fills from context "
                f"({self.max_hole_pixels / 1e6:.0f} MP; larger fills are outpainting)",
                "mask smaller areas one at a time, or use --engine sd15 to generate new content")

    # -- the fill -----------------------------------------------------------------------------------------------
    def fill(self, rgb: np.ndarray, hole: np.ndarray, seed: int = 0) -> tuple[np.ndarray, dict[str, Any]]:
        """Fill ``hole`` (bool HxW) in ``rgb`` (uint8 HxWx3); return the image and what was done.

        Pixels outside ``hole`` are returned unchanged.
        """
        inside = cv2.distanceTransform(hole.astype(np.uint8), cv2.DIST_L2, 5)
        depth = float(inside.max())
        if self.method in _DIFFUSION or depth <= self.thin_width:
            flag = _DIFFUSION.get(self.method, cv2.INPAINT_TELEA)
            out = cv2.inpaint(np.ascontiguousarray(rgb), hole.astype(np.uint8) * 255, self.radius, flag)
            return out, {"path": "thin" if self.method not in _DIFFUSION else self.method, "depth": round(depth, 1)}
        # the window: the hole's box plus context, clipped to the crop
        h, w = hole.shape
        rows, cols = np.flatnonzero(hole.any(axis=1)), np.flatnonzero(hole.any(axis=0))
        hy0, hy1, hx0, hx1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        pad = int(max(self.min_context, round(self.context * max(hy1 - hy0, hx1 - hx0))))
        y0, y1, x0, x1 = max(0, hy0 - pad), min(h, hy1 + pad), max(0, hx0 - pad), min(w, hx1 + pad)
        win = np.ascontiguousarray(rgb[y0:y1, x0:x1])
        whole = hole[y0:y1, x0:x1]
        wh, ww = whole.shape
        area = wh * ww
        scale = min(1.0, float(np.sqrt(self.coarse_pixels / area)))
        if scale >= self.native_above:
            scale = 1.0  # a slight reduction only blurs: fill at native scale
        self._direction = None
        up = self._at_scale(win, whole, scale, seed)
        direction = self._direction
        if scale < 1.0 and self.texture == "patch":
            native = min(1.0, float(np.sqrt(self.native_pixels / area)))
            # an independent stream for the texture pass (SeedSequence child, not seed + 1)
            texture_seed = int(np.random.SeedSequence(seed, spawn_key=(1,)).generate_state(1, np.uint32)[0])
            texture = self._at_scale(win, whole, native, texture_seed)
            sigma = self.texture_sigma / scale
            lo = cv2.GaussianBlur(up.astype(np.float32), (0, 0), sigma)
            hi = texture.astype(np.float32) - cv2.GaussianBlur(texture.astype(np.float32), (0, 0), sigma)
            up = np.clip(lo + hi + 0.5, 0, 255).astype(np.uint8)
        gain = 1.0
        if scale < 1.0 and self.texture != "patch" and self.band_gain > 1.0:
            up, gain = _restore_top_band(win, up, whole, scale, self.band_gain)
        mid: list[float] = []
        if self.options.mid_gain > 1.0:
            up, mid = _restore_mid_bands(win, up, whole, MID_SIGMAS, self.options.mid_gain)
        if self.tone_lock > 0:
            up = _lock_tone(win, up, whole, max(4.0, self.tone_lock * max(hy1 - hy0, hx1 - hx0)),
                            self.tone_tolerance)
        out = rgb.copy()
        sub = out[y0:y1, x0:x1]
        sub[whole] = up[whole]
        return out, {"path": self.method, "window": [x0, y0, x1, y1], "scale": round(scale, 4),
                     "band_gain": round(gain, 3), "mid_gains": mid, "depth": round(depth, 1), "direction": direction}

    def _at_scale(self, win: np.ndarray, hole: np.ndarray, scale: float, seed: int) -> np.ndarray:
        """Exemplar fill of ``win`` at ``scale`` x native, returned at native size."""
        if scale >= 1.0:
            return self._exemplar(win, hole, seed)
        wh, ww = hole.shape
        sw, sh = max(8, round(ww * scale)), max(8, round(wh * scale))
        small = cv2.resize(win, (sw, sh), interpolation=cv2.INTER_AREA)
        # any hole pixel makes its small pixel a hole: no colour of the removed object leaks into the sources
        small_hole = cv2.resize(hole.astype(np.float32), (sw, sh), interpolation=cv2.INTER_AREA) > 0
        filled = self._exemplar(small, small_hole, seed)
        return cv2.resize(filled, (ww, wh), interpolation=cv2.INTER_CUBIC)

    def _exemplar(self, rgb: np.ndarray, hole: np.ndarray, seed: int) -> np.ndarray:
        """One exemplar fill of a (possibly reduced) window at its own scale."""
        if self.method == "patchmatch":
            pm = _patchmatch()
            pm.set_random_seed(seed)
            direction = dominant_direction(rgb, hole, self.direction_consensus,
                                           layering=self.options.direction_layering) if self.direction_guide > 0 else None
            self._direction = direction
            if direction is None:
                return pm.inpaint(rgb, hole.astype(np.uint8), patch_size=self.patch_size)
            # the regularity guide of PyPatchMatch compares one coordinate per pixel (wrapping at 1; kept below
            # 0.5 so that it never wraps): the column for vertical structure, the row for horizontal
            h, w = hole.shape
            guide = np.zeros((h, w, 3), np.float32)
            if direction == "vertical":
                guide[..., 0] = (np.arange(w, dtype=np.float32) * (0.45 / w))[None, :]
            else:
                guide[..., 0] = (np.arange(h, dtype=np.float32) * (0.45 / h))[:, None]
            return pm.inpaint_regularity(rgb, hole.astype(np.uint8), guide, patch_size=self.patch_size,
                                         guide_weight=self.direction_guide)
        known = (~hole).astype(np.uint8) * 255
        if self.method == "shiftmap":
            bgr = np.ascontiguousarray(rgb[..., ::-1])
            dst = bgr.copy()
            cv2.xphoto.inpaint(bgr, known, dst, cv2.xphoto.INPAINT_SHIFTMAP)
            return np.ascontiguousarray(dst[..., ::-1])
        flag = cv2.xphoto.INPAINT_FSR_FAST if self.method == "fsr_fast" else cv2.xphoto.INPAINT_FSR_BEST
        dst = rgb.copy()
        cv2.xphoto.inpaint(rgb, known, dst, flag)
        return dst


def dominant_direction(rgb: np.ndarray, hole: np.ndarray, consensus: float = 0.55, tiles: int = 6,
                       anisotropy: float = 0.7, layering: float = 4.0) -> str | None:
    """``"vertical"`` or ``"horizontal"`` where the known surroundings have one dominant structure direction.

    Grass, hair or wood grain run one way; PatchMatch, left alone, fills such a hole with copied chunks whose
    seams cut across the stems (the demo's fill: horizontal streaks in vertical grass). The structure tensor
    of the surroundings' band-pass (difference of Gaussians, sigma 2 and 20 px: a smooth ramp is no direction)
    is taken per tile of a ``tiles`` x ``tiles`` grid over the known pixels (15 px clear of the hole); a
    direction is dominant when at least ``consensus`` of the tiles have gradient energy across it below
    ``anisotropy`` times the energy along it (a single edge through the window is not a texture).

    A texture running one way is not the same as a scene layered that way. A landscape's sky, ridges and
    ground are horizontal too, but the prior (sources from the same row) then copies whatever lies beside
    the hole at each height: a sloped ridge becomes a flat dark plateau with the mask's outline (a sunset
    photo of the benchmark lost 4.5 dB this way). So the direction is kept only where the surroundings are
    statistically the same across it. The tiles are grouped across the direction (into columns for vertical
    structure, rows for horizontal), and the range of the groups' mean luma must stay within ``layering``
    times the median standard deviation inside a tile. A texture's tile means vary by about its own contrast
    over the square root of the elements in a tile. Layers differ by many times that.

    Parameters
    ----------
    rgb : numpy.ndarray
        H x W x 3 uint8 window.
    hole : numpy.ndarray
        H x W bool, True = to fill.

    Returns
    -------
    str or None
        ``"vertical"`` (structures run up-down: gradients are mostly horizontal), ``"horizontal"``, or None.
    """
    lum = rgb.astype(np.float32).mean(axis=2)
    band = cv2.GaussianBlur(lum, (0, 0), 2.0) - cv2.GaussianBlur(lum, (0, 0), 20.0)
    gxx = cv2.Sobel(band, cv2.CV_32F, 1, 0) ** 2
    gyy = cv2.Sobel(band, cv2.CV_32F, 0, 1) ** 2
    known = cv2.erode((~hole).astype(np.uint8), np.ones((15, 15), np.uint8)) > 0
    h, w = hole.shape
    vertical = horizontal = counted = 0
    means = np.full((tiles, tiles), np.nan)
    stds = np.full((tiles, tiles), np.nan)
    for i in range(tiles):
        for j in range(tiles):
            sl = (slice(i * h // tiles, (i + 1) * h // tiles), slice(j * w // tiles, (j + 1) * w // tiles))
            k = known[sl]
            if k.size == 0 or k.mean() < 0.5:
                continue
            counted += 1
            ex, ey = float(gxx[sl][k].mean()), float(gyy[sl][k].mean())
            vertical += ey < anisotropy * ex
            horizontal += ex < anisotropy * ey
            values = lum[sl][k]
            means[i, j], stds[i, j] = float(values.mean()), float(values.std())
    if counted < 4:
        return None
    direction = ("vertical" if vertical >= consensus * counted
                 else "horizontal" if horizontal >= consensus * counted else None)
    if direction is None:
        return None
    # layered, not a texture: the groups across the direction differ by many times a tile's own contrast
    groups = means[:, np.isfinite(means).any(axis=0)] if direction == "vertical" else \
        means[np.isfinite(means).any(axis=1)]
    group_means = np.nanmean(groups, axis=0 if direction == "vertical" else 1)
    contrast = float(np.nanmedian(stds))
    if float(group_means.max() - group_means.min()) > layering * max(contrast, 0.5):
        return None
    return direction


def _restore_mid_bands(known_rgb: np.ndarray, fill: np.ndarray, hole: np.ndarray, sigmas: tuple[float, ...],
                       max_gain: float, cell: int = 32) -> tuple[np.ndarray, list[float]]:
    """Give a fill the contrast of its surroundings' structure per octave (gain-limited, never reduced).

    PatchMatch's voting averages overlapping patches, and the sources it prefers in a large hole are the
    smooth ones (a smooth patch matches anything): its fills come out flatter than their surroundings at the
    scale of stems and bokeh (2-16 px; ``bench/removal.py``: 0.13-0.45 of the surroundings' power on seeding
    r=420). Per octave of a Gaussian pyramid (``G(s_k) - G(s_{k+1})`` for the consecutive ``sigmas``, px), the
    band's power inside the hole is compared with the same band of the known surroundings, and the fill's band
    is amplified by the gain that matches them (luma, at most ``max_gain``, never below 1). The power is the
    MEDIAN over ``cell``-px cells of the band's local mean power: one edge next to the hole (a painted field's
    border) is not a texture, and must not make a smooth fill contrasty. Each band is measured and faded in
    beyond its own reach (2 sigma + 1 px) from the contour, so the contour itself is not steepened.

    Returns the fill (uint8, same shape) and the gain per band.
    """
    f = fill.astype(np.float32)
    lum_f, lum_k = f.mean(axis=2), known_rgb.astype(np.float32).mean(axis=2)
    h8 = hole.astype(np.uint8)
    inside = cv2.distanceTransform(h8, cv2.DIST_L2, 5)
    outside = cv2.distanceTransform(1 - h8, cv2.DIST_L2, 5)

    def median_power(band: np.ndarray, where: np.ndarray) -> float:
        # local mean power per cell (box filter), its median over the cells wholly inside ``where``
        p = cv2.boxFilter(band * band, -1, (cell, cell))
        w = cv2.boxFilter(where.astype(np.float32), -1, (cell, cell))
        ys, xs = np.mgrid[cell // 2:where.shape[0]:cell, cell // 2:where.shape[1]:cell]
        sel = w[ys, xs] > 0.99
        return float(np.median(p[ys, xs][sel])) if sel.sum() >= 4 else 0.0

    out = f.copy()
    gains: list[float] = []
    gf_prev, gk_prev = cv2.GaussianBlur(lum_f, (0, 0), sigmas[0]), cv2.GaussianBlur(lum_k, (0, 0), sigmas[0])
    for s in sigmas[1:]:
        gf, gk = cv2.GaussianBlur(lum_f, (0, 0), s), cv2.GaussianBlur(lum_k, (0, 0), s)
        bf, bk = gf_prev - gf, gk_prev - gk
        gf_prev, gk_prev = gf, gk
        # each band measured where the other side's pixels (the removed object, the fill) do not reach it
        reach = 2.0 * s + 1.0
        ring = (outside > reach) & (outside <= max(64.0, 4.0 * reach))
        p_in, p_ring = median_power(bf, inside > reach), median_power(bk, ring)
        g = float(np.clip(np.sqrt(p_ring / p_in), 1.0, max_gain)) if p_in > 1e-6 and p_ring > 0 else 1.0
        gains.append(round(g, 3))
        if g > 1.0:
            # faded in over the band's reach inside the contour: the contour's own step is left alone
            fade = np.clip(inside / reach, 0.0, 1.0)
            out += ((g - 1.0) * bf * fade)[..., None]
    out = np.where(hole[..., None], out, f)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8), gains


def _restore_top_band(known_rgb: np.ndarray, fill: np.ndarray, hole: np.ndarray, scale: float,
                      max_gain: float) -> tuple[np.ndarray, float]:
    """Give an upscaled fill back the energy of the octave its reduced scale attenuated (gain-limited).

    A fill made at ``scale`` < 1 and upscaled bicubically keeps its edges and texture, but their top band
    (spatial periods below about ``2 / scale`` px) is attenuated: edges read soft and texture flat at 1:1. The
    fill's band ``fill - G(fill)`` (Gaussian sigma ``0.5 / scale`` px, i.e. the octave just below the reduced
    copy's Nyquist) is amplified inside the hole by one gain per channel, the one that makes its RMS that of the
    same band of the photo on a ring around the hole (an unsharp mask whose amount is measured, not chosen), and
    never more than ``max_gain``. Finer grain, which no gain can bring back, is the harness's grain matching's.

    Returns the fill (uint8, same shape) and the mean gain used.
    """
    sigma = max(0.5, 0.5 / scale)
    f = fill.astype(np.float32)
    band = f - cv2.GaussianBlur(f, (0, 0), sigma)
    k = known_rgb.astype(np.float32)
    kband = k - cv2.GaussianBlur(k, (0, 0), sigma)
    reach = int(np.ceil(3 * sigma)) + 1
    h8 = hole.astype(np.uint8)

    def disc(r: int) -> np.ndarray:
        return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))

    ring = (cv2.dilate(h8, disc(48)) > 0) & (cv2.dilate(h8, disc(reach)) == 0)
    inner = cv2.erode(h8, disc(reach)) > 0
    if ring.sum() < 64 or inner.sum() < 64:
        return fill, 1.0
    e_ring = np.sqrt(np.mean(kband[ring] ** 2, axis=0))
    e_in = np.sqrt(np.mean(band[inner] ** 2, axis=0))
    gain = np.clip(e_ring / np.maximum(e_in, 1e-3), 1.0, max_gain).astype(np.float32)
    # the gain fades in over the band's reach inside the contour: the contour's own step is left alone
    w = np.clip(cv2.distanceTransform(h8, cv2.DIST_L2, 5) / reach, 0.0, 1.0)[..., None]
    out = f + band * (gain - 1.0) * w
    return np.clip(out + 0.5, 0, 255).astype(np.uint8), float(gain.mean())


def _lock_tone(known_rgb: np.ndarray, fill: np.ndarray, hole: np.ndarray, sigma: float,
               tolerance: float = 8.0) -> np.ndarray:
    """Give the fill the large-scale tone of a smooth membrane of its surroundings; keep its finer structure.

    Copied patches carry the brightness of wherever they came from (a glow next to the removed object, a
    darker corner), which reads as a lighter or darker disc in the hole's shape. Below the spatial scale
    ``sigma`` (Gaussian, px) the fill's local mean, taken over hole pixels only, is replaced by that of a
    membrane of the known pixels (:func:`crispedit.membrane.membrane_solve` pinned to them: the harmonic,
    minimum-assumption interpolation of the surroundings), whose sources are the known pixels near the hole
    within ``3 tolerance`` of the fill's local mean beside them (the roof beside a roof fill, not the sky
    beside it). Differences well above
    ``tolerance`` (8-bit levels, RMS over channels) are content, not drift, and are dropped (by
    ``t⁴ / (t⁴ + d⁴)``). Where the membrane blends sources that disagree (its spread, from a membrane of the
    squares, above about ``1.5 tolerance``: a red field and a pink one on either side of an edge) it is not
    trusted either, by the same cut on the spread: otherwise a flat fill is pulled towards a tone neither
    field has, a lighter or darker arc along the contour. Computed on a copy reduced by ``sigma / 4``.
    """
    h, w = hole.shape
    k = max(1, int(sigma // 4))
    lw, lh = max(2, round(w / k)), max(2, round(h / k))

    def down(a: np.ndarray) -> np.ndarray:
        return cv2.resize(a, (lw, lh), interpolation=cv2.INTER_AREA).reshape(lh, lw, -1)

    s = max(0.5, sigma / k)
    hw = hole.astype(np.float32)
    f = fill.astype(np.float32)
    hw_d = down(hw)[..., 0]
    lo_fill = cv2.GaussianBlur(down(f * hw[..., None]), (0, 0), s).reshape(lh, lw, -1) / np.maximum(
        cv2.GaussianBlur(hw_d, (0, 0), s), 1e-4)[..., None]
    # the membrane's sources: known pixels near the hole that look like the fill next to them (a roof pixel
    # beside a roof fill, not the sky beside it), so that it does not blend distinct regions into one tone
    reach = cv2.GaussianBlur(hw_d, (0, 0), s)
    known_d = down(known_rgb.astype(np.float32))
    dist2 = np.sum((known_d - lo_fill) ** 2, axis=2) / known_d.shape[2]
    sources = (hw_d <= 0.0) & (reach > 0.02) & (dist2 < (3.0 * tolerance) ** 2)
    if np.count_nonzero(sources) < 4:
        return fill
    # the membrane and the spread of the sources it blends (a membrane of the squares): where it blends
    # distinct surroundings (a red field and a pink one beside the hole) its tone is neither's, and pulling a
    # flat fill towards it leaves a lighter or darker arc; the correction is trusted where the sources agree
    both = membrane_solve(np.concatenate([known_d, known_d * known_d], axis=2), sources)
    c = known_d.shape[2]
    memb = both[..., :c]
    spread2 = np.maximum(np.sum(both[..., c:] - memb * memb, axis=2, keepdims=True) / c, 0.0)
    lo_memb = cv2.GaussianBlur(memb, (0, 0), s).reshape(lh, lw, -1)
    spread2 = cv2.GaussianBlur(spread2, (0, 0), s).reshape(lh, lw, 1)
    diff = lo_memb - lo_fill
    agree = (1.5 * tolerance) ** 4
    diff *= agree / (agree + spread2 * spread2)
    # a drift (a few levels) is corrected fully; a difference in content (sky where a leaf was) is left alone,
    # so that the membrane does not smear the surroundings' colours into the fill
    size2 = np.sum(diff * diff, axis=2, keepdims=True) / diff.shape[2]
    # (a steep cut, t^4 / (t^4 + d^4): a slow Lorentzian tail let a membrane blended from sky and a roof tint
    # the fill by several levels where the difference was moderate)
    diff *= tolerance ** 4 / (tolerance ** 4 + size2 * size2)
    corr = cv2.resize(diff, (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, -1)
    return np.clip(f + corr * hw[..., None] + 0.5, 0, 255).astype(np.uint8)


register_engine("classical", ClassicalEngine)
