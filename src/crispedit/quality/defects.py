"""Test images and planted defects, for the gate's tests and threshold measurements (``bench/``).

``photo_like`` makes a photo-like texture (1/f filtered noise, gradients, soft and hard shapes, film grain);
the defect functions plant one known flaw of a chosen strength inside a mask:

- :func:`paste_seam`: content from elsewhere pasted with a hard edge (``strength`` = opacity 0..1);
- :func:`tone_step`: brightness offset in 8-bit levels (``strength``), hard or feathered;
- :func:`blurred_patch`: Gaussian blur of sigma ``strength`` px, feathered (the 512-px-upscale look);
- :func:`noise_free_patch`: grain removed by fraction ``strength`` (0..1), feathered;
- :func:`hard_block`: a ``strength`` x ``strength`` px square of texture from elsewhere, hard-edged, at the
  mask's deepest point (a pasted patch);
- :func:`grid_lines`: a grid of 2-px lines every 64 px inside the mask, ``strength`` levels brighter (tile seams);
- :func:`colour_cast`: a colour shift of ``strength`` ΔE2000 (mostly in a*/b*) inside the mask, feathered;
- :func:`halo_ring`: a ring of ``strength`` levels just outside the contour (a halo);
- :func:`clean_edit`: the original plus a little fresh noise (a third of the image's own grain; should pass);
- :func:`good_removal`: the second half of a paste-then-remove: the truth (the photo before the paste), lightly
  processed (JPEG q95 re-compression, or a Gaussian blur of sigma 0.5 px), put back over the whole mask and
  faded out over ``feather`` px outside it: what a good removal returns (should pass).

>>> import numpy as np
>>> img = photo_like(256, 256, seed=1)
>>> img.shape, img.dtype
((256, 256, 3), dtype('uint8'))
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from crispedit.geometry import mask_bbox

__all__ = [
    "photo_like",
    "ellipse_mask",
    "feather_weight",
    "paste_seam",
    "tone_step",
    "blurred_patch",
    "noise_free_patch",
    "hard_block",
    "grid_lines",
    "colour_cast",
    "halo_ring",
    "clean_edit",
    "good_removal",
    "denoise_around",
    "planted_change",
    "DEFECTS",
]


def _to_float(a: np.ndarray) -> tuple[np.ndarray, float]:
    scale = 65535.0 if a.dtype == np.uint16 else 255.0
    return a.astype(np.float32) / scale, scale


def _back(f: np.ndarray, scale: float, dtype: np.dtype) -> np.ndarray:
    return np.clip(np.round(f * scale), 0, scale).astype(dtype)


def photo_like(
    h: int, w: int, *, seed: int = 0, grain: float = 2.5, return_parts: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A photo-like RGB uint8 image: 1/f filtered noise over gradients, a few shapes, Gaussian grain of
    ``grain`` 8-bit levels. With ``return_parts``: (image, clean float32 [0,1], grain float32)."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(0.25, 0.6, 3).astype(np.float32)
    gdir = rng.normal(size=(3, 2)).astype(np.float32) * 0.15
    for c in range(3):
        img[:, :, c] = base[c] + gdir[c, 0] * (xx / w - 0.5) + gdir[c, 1] * (yy / h - 0.5)
    mix = rng.normal(size=(3, 3)).astype(np.float32) * 0.3 + np.eye(3, dtype=np.float32)
    for sigma, amp in ((48.0, 0.10), (12.0, 0.05), (3.0, 0.03), (1.0, 0.015)):
        n = rng.normal(size=(h, w, 3)).astype(np.float32)
        n = cv2.GaussianBlur(n, (0, 0), sigma)
        n /= n.std() + 1e-8
        img += amp * (n @ mix.T) / 1.5
    # shapes: soft and hard-edged ellipses and bars
    for _ in range(max(3, (h * w) // 40000)):
        layer = np.zeros((h, w), np.float32)
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        ax, ay = rng.uniform(0.03, 0.15) * w, rng.uniform(0.03, 0.15) * h
        cv2.ellipse(layer, (int(cx), int(cy)), (int(ax), int(ay)), rng.uniform(0, 180), 0, 360, 1.0, -1, cv2.LINE_AA)
        if rng.uniform() < 0.5:
            layer = cv2.GaussianBlur(layer, (0, 0), rng.uniform(2, 10))
        col = rng.uniform(-0.15, 0.15, 3).astype(np.float32)
        img += layer[:, :, None] * col
    clean = np.clip(img, 0.02, 0.98)
    g = rng.normal(size=(h, w, 3)).astype(np.float32) * (grain / 255.0)
    g = 0.7 * g + 0.3 * g.mean(axis=2, keepdims=True)  # partly luminance grain, as in camera noise
    out = _back(clean + g, 255.0, np.uint8)
    if return_parts:
        return out, clean, g
    return out


def ellipse_mask(h: int, w: int, cx: float, cy: float, rx: float, ry: float, angle: float = 0.0) -> np.ndarray:
    """A filled ellipse as a bool mask."""
    m = np.zeros((h, w), np.uint8)
    cv2.ellipse(m, (int(round(cx)), int(round(cy))), (int(round(rx)), int(round(ry))), angle, 0, 360, 1, -1)
    return m.astype(bool)


def feather_weight(mask: np.ndarray, band: int) -> np.ndarray:
    """Soft weight centred on the mask edge: a Gaussian blur of sigma ``band/4`` (reaches ~band/2 outside)."""
    if band <= 0:
        return mask.astype(np.float32)
    return cv2.GaussianBlur(mask.astype(np.float32), (0, 0), band / 4.0)


def _blend(orig: np.ndarray, new_f: np.ndarray, weight: np.ndarray) -> np.ndarray:
    f, scale = _to_float(orig)
    w = weight[:, :, None] if f.ndim == 3 else weight
    out = _back(f + w * (new_f - f), scale, orig.dtype)
    # keep the untouched pixels bit-identical (rounding of f + 0 * x is exact anyway, but be explicit)
    untouched = weight <= 0
    out[untouched] = orig[untouched]
    return out


def paste_seam(orig: np.ndarray, mask: np.ndarray, strength: float, *, offset: tuple[int, int] | None = None) -> np.ndarray:
    """Paste content shifted by ``offset`` (default: half the image) into the mask with a hard edge, at
    opacity ``strength``."""
    f, _ = _to_float(orig)
    h, w = mask.shape
    if offset is None:
        offset = (w // 2, h // 3)
    shifted = np.roll(f, shift=(offset[1], offset[0]), axis=(0, 1))
    return _blend(orig, shifted, mask.astype(np.float32) * float(strength))


def tone_step(orig: np.ndarray, mask: np.ndarray, strength: float, *, feather: int = 0) -> np.ndarray:
    """Add ``strength`` 8-bit levels (slightly warm: R +100%, G +90%, B +70%) inside the mask."""
    f, _ = _to_float(orig)
    delta = np.array([1.0, 0.9, 0.7], np.float32)[: f.shape[2] if f.ndim == 3 else 1] * (strength / 255.0)
    return _blend(orig, f + delta, feather_weight(mask, feather))


def blurred_patch(orig: np.ndarray, mask: np.ndarray, strength: float, *, feather: int = 32) -> np.ndarray:
    """Blur the masked area with a Gaussian of sigma ``strength`` px (feathered edge)."""
    f, _ = _to_float(orig)
    b = cv2.GaussianBlur(f, (0, 0), float(strength)) if strength > 0 else f
    return _blend(orig, b, feather_weight(mask, feather))


def noise_free_patch(
    orig: np.ndarray,
    mask: np.ndarray,
    strength: float,
    *,
    feather: int = 32,
    clean: np.ndarray | None = None,
) -> np.ndarray:
    """Remove a fraction ``strength`` of the grain inside the mask. ``clean`` (float [0,1]) is the noise-free
    image when known (``photo_like(..., return_parts=True)``); otherwise non-local-means denoising is used."""
    f, scale = _to_float(orig)
    if clean is None:
        clean = denoise_around(orig, mask, pad=feather + 8)
    new = f + float(strength) * (clean - f)
    return _blend(orig, new, feather_weight(mask, feather))


def denoise_around(orig: np.ndarray, mask: np.ndarray, *, pad: int = 40) -> np.ndarray:
    """Float [0, 1] copy of ``orig`` with the mask's bounding box (+ ``pad``) denoised by non-local means."""
    f, _ = _to_float(orig)
    x0, y0, x1, y1 = mask_bbox(mask, pad=pad)  # type: ignore[misc]
    crop = orig[y0:y1, x0:x1]
    c8 = crop if crop.dtype == np.uint8 else (crop // 257).astype(np.uint8)
    if c8.ndim == 3 and c8.shape[2] >= 3:
        den = cv2.fastNlMeansDenoisingColored(np.ascontiguousarray(c8[:, :, :3]), None, 6, 6, 7, 21)
    else:
        den = cv2.fastNlMeansDenoising(np.ascontiguousarray(c8.reshape(c8.shape[:2])), None, 6, 7, 21)
        den = den.reshape(crop.shape[:2] + ((1,) if crop.ndim == 3 else ()))
    clean = f.copy()
    if clean.ndim == 3:
        clean[y0:y1, x0:x1, : den.shape[2] if den.ndim == 3 else 1] = (
            den.astype(np.float32).reshape(y1 - y0, x1 - x0, -1) / 255.0
        )
    else:
        clean[y0:y1, x0:x1] = den.astype(np.float32) / 255.0
    return clean


def deepest_point(mask: np.ndarray) -> tuple[int, int, float]:
    """(x, y, inradius) of the mask pixel farthest from the outside."""
    dist = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x), int(y), float(dist[y, x])


def hard_block(orig: np.ndarray, mask: np.ndarray, strength: float, *, source: tuple[int, int] | None = None
               ) -> np.ndarray:
    """Paste a ``strength`` px square of the image's own texture from elsewhere (default: of the image's corners
    and edge midpoints, the square least like the destination) at the mask's deepest point, with hard edges
    (clipped to the mask)."""
    s = int(round(strength))
    h, w = mask.shape
    cx, cy, _ = deepest_point(mask)
    x0, y0 = max(0, cx - s // 2), max(0, cy - s // 2)
    x1, y1 = min(w, x0 + s), min(h, y0 + s)
    bw, bh = x1 - x0, y1 - y0
    if source is None:  # of the corners and edge midpoints, the square least like the destination
        dest = orig[y0:y1, x0:x1].astype(np.float32)
        best = -1.0
        for sx_, sy_ in ((0, 0), (w - bw, 0), (0, h - bh), (w - bw, h - bh), ((w - bw) // 2, 0),
                         ((w - bw) // 2, h - bh), (0, (h - bh) // 2), (w - bw, (h - bh) // 2)):
            diff = float(np.mean(np.abs(orig[sy_ : sy_ + bh, sx_ : sx_ + bw].astype(np.float32) - dest)))
            if diff > best:
                best, sx, sy = diff, sx_, sy_
    else:
        sx, sy = source
    out = orig.copy()
    patch = orig[sy : sy + (y1 - y0), sx : sx + (x1 - x0)]
    keep = mask[y0:y1, x0:x1]
    out[y0:y1, x0:x1][keep] = patch[keep]
    return out


def grid_lines(orig: np.ndarray, mask: np.ndarray, strength: float, *, spacing: int = 64, width: int = 2
               ) -> np.ndarray:
    """Lines ``width`` px wide every ``spacing`` px (both directions) inside the mask, ``strength`` 8-bit levels
    brighter: the look of tile seams."""
    f, scale = _to_float(orig)
    h, w = mask.shape
    lines = np.zeros((h, w), bool)
    for k in range(width):
        lines[k::spacing, :] = True
        lines[:, k::spacing] = True
    weight = (lines & mask).astype(np.float32)
    return _blend(orig, f + strength / 255.0, weight)


def colour_cast(orig: np.ndarray, mask: np.ndarray, strength: float, *, feather: int = 32, hue: float = 60.0
                ) -> np.ndarray:
    """Shift a* and b* inside the mask (feathered) so that the mean colour moves by about ``strength`` ΔE2000,
    in the direction ``hue`` degrees in the a*b* plane; the luminance is kept."""
    from crispedit.quality.metrics import ciede2000, colour_channels, rgb_to_lab

    f, scale = _to_float(orig)
    if f.ndim == 2 or f.shape[2] < 3:
        return tone_step(orig, mask, strength, feather=feather)
    lab = rgb_to_lab(colour_channels(orig))
    ref = lab[mask].reshape(-1, 3).astype(np.float64).mean(axis=0)
    d = np.array([0.0, math.cos(math.radians(hue)), math.sin(math.radians(hue))])
    lo, hi = 0.0, 20.0
    for _ in range(40):  # the a*b* step that gives the wanted ΔE2000 at the mask's mean colour
        mid = 0.5 * (lo + hi)
        if float(ciede2000(ref, ref + mid * d)) < strength:
            lo = mid
        else:
            hi = mid
    shifted = lab + (0.5 * (lo + hi) * d).astype(np.float32)
    rgb = cv2.cvtColor(shifted, cv2.COLOR_Lab2RGB)
    new = f.copy()
    new[:, :, :3] = np.clip(rgb, 0.0, 1.0)
    return _blend(orig, new, feather_weight(mask, feather))


def halo_ring(orig: np.ndarray, mask: np.ndarray, strength: float, *, width: int = 8) -> np.ndarray:
    """A soft ring ``width`` px wide just outside the contour, ``strength`` 8-bit levels brighter."""
    f, _ = _to_float(orig)
    dist = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5)
    ring = ((dist > 0) & (dist <= width)).astype(np.float32)
    ring = cv2.GaussianBlur(ring, (0, 0), max(1.0, width / 4.0))
    return _blend(orig, f + strength / 255.0, ring)


def clean_edit(
    orig: np.ndarray, mask: np.ndarray, *, seed: int = 0, extra_noise: float | None = None, feather: int = 32
) -> np.ndarray:
    """The original plus fresh Gaussian noise: an edit that should pass.

    ``extra_noise`` is in 8-bit levels; default: 0.35 x the image's own noise sigma around the mask (so the
    grain inside rises by about 6%, as when an edit regenerates grain of the right level).
    """
    f, _ = _to_float(orig)
    if extra_noise is None:
        from crispedit.quality.metrics import noise_sigma

        x0, y0, x1, y1 = mask_bbox(mask, pad=64)  # type: ignore[misc]
        g = f[y0:y1, x0:x1]
        g = g.mean(axis=2) if g.ndim == 3 else g
        extra_noise = max(0.1, 0.35 * 255.0 * noise_sigma(np.ascontiguousarray(g, dtype=np.float32)))
    rng = np.random.default_rng(seed)
    n = rng.normal(size=f.shape).astype(np.float32) * (extra_noise / 255.0)
    return _blend(orig, f + n, feather_weight(mask, feather))


def good_removal(pasted: np.ndarray, truth: np.ndarray, mask: np.ndarray, how: str = "jpeg95", *,
                 feather: int = 12) -> np.ndarray:
    """A good removal of what was pasted into ``mask``: ``truth`` (same shape and dtype as ``pasted``, equal to it
    outside the mask) after ``how`` -- ``"jpeg95"``: a JPEG round trip at quality 95 (OpenCV/libjpeg, 4:2:0),
    ``"blur0.5"``: a Gaussian blur of sigma 0.5 px -- blended in with weight 1 over the whole mask, falling to 0
    over ``feather`` px outside it (a smoothstep of the distance to the mask). uint8 RGB for ``"jpeg95"``."""
    if how == "jpeg95":
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(truth, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        new = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        new_f, _ = _to_float(new)
    elif how == "blur0.5":
        new_f = cv2.GaussianBlur(_to_float(truth)[0], (0, 0), 0.5)
    else:
        raise ValueError(f"unknown good removal {how!r}: use 'jpeg95' or 'blur0.5'")
    d = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5)
    x = np.clip(1.0 - d / max(1, feather), 0.0, 1.0)
    weight = (x * x * (3.0 - 2.0 * x)).astype(np.float32)
    return _blend(pasted, new_f, weight)


#: below these (8-bit levels) a change of fine detail (mean |3x3 Laplacian|) or of grain (noise sigma) is not
#: measurable, let alone visible: the floors the gate adds to its detail and noise ratios
CHANGE_FLOOR_DETAIL = 0.25
CHANGE_FLOOR_NOISE = 0.4


def planted_change(orig: np.ndarray, edited: np.ndarray, mask: np.ndarray, *, erode: int = 24) -> dict[str, float]:
    """What a planted softening (a blur, a grain removal) measurably changed, independent of the gate's checks:
    on the luminance inside the mask eroded by ``erode`` px (where the feathered defect is at full strength), the
    fine detail (mean |3x3 Laplacian|) and the grain (Immerkær noise sigma) of the original and of the edit, in
    8-bit levels, what was lost of each (``detail_lost``, ``noise_lost``), and the mean and 99th percentile of the
    absolute luminance change (``change_mean``, ``change_p99``). ``visible`` is 1.0 when the edit removed at least
    :data:`CHANGE_FLOOR_DETAIL` of detail or :data:`CHANGE_FLOOR_NOISE` of grain: a blur of a region whose
    original has no detail above those floors (a smooth gradient, bokeh, a flat graphic) changes nothing there
    that a viewer could see at 1:1, whatever its sigma."""
    from crispedit.quality.metrics import _HF, grey_float

    x0, y0, x1, y1 = mask_bbox(mask, pad=2)  # type: ignore[misc]
    m = mask[y0:y1, x0:x1]
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * erode + 1, 2 * erode + 1))
    inner = cv2.erode(m.astype(np.uint8), k) > 0
    if np.count_nonzero(inner) < 400:
        inner = m
    ga, gb = grey_float(orig[y0:y1, x0:x1]), grey_float(edited[y0:y1, x0:x1])
    ha, hb = _HF(ga), _HF(gb)
    ys, xs = np.nonzero(inner)
    idx = (ys, xs)
    d0, d1 = 255.0 * ha.detail(idx), 255.0 * hb.detail(idx)
    n0, n1 = 255.0 * ha.noise(idx), 255.0 * hb.noise(idx)
    diff = np.abs(gb[idx] - ga[idx]) * 255.0
    out = {"detail_before": d0, "detail_after": d1, "detail_lost": d0 - d1, "noise_before": n0, "noise_after": n1,
           "noise_lost": n0 - n1, "change_mean": float(diff.mean()), "change_p99": float(np.percentile(diff, 99))}
    out["visible"] = float(out["detail_lost"] >= CHANGE_FLOOR_DETAIL or out["noise_lost"] >= CHANGE_FLOOR_NOISE)
    return out


#: name -> (function, strengths from mild to strong, the metric that should rise with strength)
DEFECTS = {
    "paste_seam": (paste_seam, (0.15, 0.3, 0.6, 1.0), "seam_score"),
    "tone_step": (tone_step, (3.0, 6.0, 12.0, 24.0), "seam_score"),
    "blurred_patch": (blurred_patch, (0.8, 1.5, 3.0, 6.0), "detail_deficit"),
    "noise_free_patch": (noise_free_patch, (0.3, 0.6, 0.8, 1.0), "noise_deficit"),
}

#: the planted-defect set of ``bench/quality_thresholds.py``: name -> (function, strengths from just visible to
#: obvious, the strength from which it is "clearly visible at 1:1" and must fail, extra keyword arguments)
PLANTED = {
    "tone_step": (tone_step, (2.0, 4.0, 8.0), 4.0, {}),
    "tone_step_feathered": (tone_step, (2.0, 4.0), 4.0, {"feather": 32}),
    "colour_cast": (colour_cast, (1.5, 3.0), 3.0, {}),
    "hard_block": (hard_block, (32.0, 64.0), 64.0, {}),
    "grid_lines": (grid_lines, (1.5, 3.0), 3.0, {}),
    "blurred_patch": (blurred_patch, (0.8, 1.5), 1.5, {}),
    "noise_free_patch": (noise_free_patch, (1.0,), 1.0, {}),
    "halo_ring": (halo_ring, (4.0, 8.0), 8.0, {}),
    "paste_seam": (paste_seam, (0.3,), 0.3, {}),
}
