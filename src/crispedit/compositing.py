"""Compositing: what happens to the pixels after the engine has returned its crop.

Plain functions on ``float32`` arrays of shape ``(H, W, C)`` (values in ``[0, 1]``; ``(H, W)`` is
accepted too and comes back in the same shape) and ``bool`` masks of shape ``(H, W)``.

- :func:`blend_weight` -- a smooth weight, 1 on the mask, exactly 0 at ``band`` pixels from it.
- :func:`multiband_blend` -- Laplacian-pyramid (Burt & Adelson) blend of the edit into the original
  that is *bit-identical* to the original farther than ``band`` from the mask.
- :func:`tone_match` -- local (spatially varying) tone/colour correction fitted on a ring of pixels
  that should be unchanged and interpolated smoothly (membrane) into the edit.
- :func:`match_grain` -- restores the grain of the surroundings inside a too-smooth edit, using the
  original's own high-frequency residual (random overlapping patches, variance-preserving windows).
- :func:`match_sharpness` -- undoes an engine's softness (and its own grain) band by band: a per-band
  Wiener gain fitted where the engine's output should equal the original (a ring outside the mask).
- :func:`synthesise_detail` -- makes anew (nonlinear extrapolation, at the level the ring predicts) the finest
  octaves a soft decode lost below the quantisation, and takes an engine's excess grain down.
- :func:`transfer_detail` -- gives the blend band back the original's own fine structure outside the mask.
- :func:`restore_detail` -- swaps the high frequencies of the edit for a given detail layer.
- :func:`highpass`, :func:`band_level` -- a band's residual and its robust per-channel amplitude (what
  :func:`match_grain` matches; the project's one noise estimator is :func:`crispedit.quality.metrics.noise_sigma`).

All functions are vectorised with OpenCV/NumPy and work on bounding boxes of the region they change,
so their cost follows the edited area.

Typical use on a crop, after the engine (``d`` = :func:`distance_from` ``(mask)``)::

    known = (d > 0) & (d <= 2 * band)          # ring that should be unchanged
    edit = tone_match(edit, orig, known, d <= band, scale=2 * band)
    edit = match_grain(edit, orig, d <= band, known & (d > band), seed=seed)
    out = multiband_blend(orig, edit, blend_weight(mask, band), band=band)
    # out == orig bit for bit wherever d >= band
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from crispedit.arrays import add_where, copy_where, divide_pixels, plus_pixels, scale_pixels
from crispedit.geometry import mask_bbox
from crispedit.membrane import membrane_solve

__all__ = [
    "blend_weight",
    "multiband_blend",
    "tone_match",
    "match_grain",
    "match_sharpness",
    "sharpness_gains",
    "cap_detail",
    "synthesise_detail",
    "detail_content",
    "transfer_detail",
    "restore_detail",
    "highpass",
    "band_level",
    "distance_from",
]

_MAD_TO_STD = 1.4826
_GRID = 8  # JPEG block size: grain patches are moved by multiples of it
_FAR = np.float32(1e9)


# --------------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------------


def _as_image(img: np.ndarray, name: str = "image") -> tuple[np.ndarray, bool]:
    """Return ``img`` as float32 HxWxC (a view when possible) and whether it was 2-D."""
    arr = np.asarray(img)
    if arr.ndim == 2:
        return arr.astype(np.float32, copy=False)[:, :, None], True
    if arr.ndim != 3:
        raise ValueError(f"{name} must be HxW or HxWxC, got shape {arr.shape}")
    return arr.astype(np.float32, copy=False), False


def _as_pair(edited: np.ndarray, original: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """``edited`` and ``original`` as float32 HxWxC of one shape, and whether they were 2-D; ValueError if not."""
    edit, was_2d = _as_image(edited, "edited")
    orig, _ = _as_image(original, "original")
    if edit.shape != orig.shape:
        raise ValueError(f"edited shape {edit.shape} != original shape {orig.shape}")
    return edit, orig, was_2d


def _as_weight(weight: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A float32 weight map of ``shape`` (H, W); ValueError otherwise."""
    wgt = np.asarray(weight, dtype=np.float32)
    if wgt.shape != tuple(shape):
        raise ValueError(f"weight must have shape {tuple(shape)}, got {wgt.shape}")
    return wgt


def _restore_shape(arr: np.ndarray, was_2d: bool) -> np.ndarray:
    return arr[:, :, 0] if was_2d else arr


def _as_mask(mask: np.ndarray, shape: tuple[int, int], name: str = "mask") -> np.ndarray:
    m = np.asarray(mask)
    if m.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {m.shape}")
    return m.astype(bool, copy=False)


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    out = t * t  # t * t * (3 - 2 t), evaluated in that order with two temporaries
    t *= -2.0
    t += 3.0
    out *= t
    return out


def _cv(arr: np.ndarray, func, *args, **kwargs) -> np.ndarray:
    """Apply an OpenCV filter to HxWxC, keeping the channel axis (OpenCV drops C == 1)."""
    out = func(np.ascontiguousarray(arr), *args, **kwargs)
    if out.ndim == 2 and arr.ndim == 3:
        out = out[:, :, None]
    return out


def _gauss(arr: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return arr.copy()
    return _cv(arr, cv2.GaussianBlur, (0, 0), sigmaX=float(sigma), sigmaY=float(sigma),
               borderType=cv2.BORDER_REFLECT)


#: From this sigma (px) on, :func:`_gauss_coarse` filters at half resolution.
_HALF_RES_SIGMA = 4.0


def _gauss_coarse(arr: np.ndarray, sigma: float) -> np.ndarray:
    """:func:`_gauss` for a wide Gaussian, computed on a 2x-reduced copy (a pyramid level) and interpolated back.

    The 2x2 box reduction (variance 1/4 px^2) and the bilinear expansion (about 1/8 px^2) are taken out of the
    Gaussian's variance, so the result matches the full-resolution filter to a small fraction of its smallest
    detail (a Gaussian of ``sigma`` >= 4 px has no energy near the reduced Nyquist frequency): about 4x cheaper.
    Narrower Gaussians and images under 32 px are filtered at full resolution.
    """
    h, w = arr.shape[:2]
    if sigma < _HALF_RES_SIGMA or min(h, w) < 32:
        return _gauss(arr, sigma)
    small = _cv(arr, cv2.resize, ((w + 1) // 2, (h + 1) // 2), interpolation=cv2.INTER_AREA)
    s_half = math.sqrt(max(sigma * sigma - 0.375, 0.25)) / 2.0
    small = _gauss(small, s_half)
    return _cv(small, cv2.resize, (w, h), interpolation=cv2.INTER_LINEAR)


def _disk(radius: int) -> np.ndarray:
    r = max(0, int(radius))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Dilation by a disk, computed on the mask's box grown by ``radius`` (the same result, cheaper)."""
    if radius <= 0:
        return mask.copy()
    out = np.zeros(mask.shape, bool)
    box = mask_bbox(mask, pad=radius + 1)
    if box is not None:
        x0, y0, x1, y1 = box
        out[y0:y1, x0:x1] = cv2.dilate(mask[y0:y1, x0:x1].astype(np.uint8), _disk(radius)).astype(bool)
    return out


def _erode(mask: np.ndarray, radius: int) -> np.ndarray:
    """Erosion by a disk (image edges replicated), computed on the mask's box grown by ``radius``."""
    if radius <= 0:
        return mask.copy()
    out = np.zeros(mask.shape, bool)
    box = mask_bbox(mask, pad=radius + 1)
    if box is not None:
        x0, y0, x1, y1 = box
        out[y0:y1, x0:x1] = cv2.erode(mask[y0:y1, x0:x1].astype(np.uint8), _disk(radius),
                                      borderType=cv2.BORDER_REPLICATE).astype(bool)
    return out


def distance_from(mask: np.ndarray) -> np.ndarray:
    """Exact Euclidean distance (pixels) from every pixel to the nearest ``True`` pixel of ``mask``.

    ``cv2.distanceTransform`` (``DIST_MASK_PRECISE``, Felzenszwalb & Huttenlocher's exact transform) with its
    squared result rounded to the integer it is: the same float32 bits in every process (OpenCV's own output
    can differ in the last bit), equal to ``scipy.ndimage.distance_transform_edt`` up to 2048 px.

    Parameters
    ----------
    mask : ndarray of bool, shape (H, W)

    Returns
    -------
    ndarray of float32, shape (H, W)
        0 on the mask; ``1e9`` everywhere when the mask is empty.

    Examples
    --------
    >>> m = np.zeros((1, 5), bool); m[0, 0] = True
    >>> distance_from(m).tolist()
    [[0.0, 1.0, 2.0, 3.0, 4.0]]
    """
    m = np.asarray(mask, dtype=bool)
    if not m.any():
        return np.full(m.shape, _FAR, np.float32)
    d = cv2.distanceTransform((~m).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    # OpenCV's float result may differ in its last bit between processes (seen once scipy is loaded); the true
    # squared distance is an integer, so rounding it and taking an IEEE (correctly rounded) square root gives the
    # same float32 everywhere, equal to scipy.ndimage.distance_transform_edt (exact while d**2 < 2**22, i.e.
    # d < 2048 px: far beyond any blend band)
    np.multiply(d, d, out=d)
    np.rint(d, out=d)
    np.sqrt(d, out=d)
    return d


def _robust_sigma(values: np.ndarray) -> np.ndarray:
    """Per-column robust standard deviation (MAD x 1.4826) of an ``(N, C)`` array."""
    if values.shape[0] == 0:
        return np.zeros(values.shape[1], np.float64)
    # medians of contiguous rows of one private copy, partitioned in place (np.median's own arithmetic: the two
    # middle values' mean, or the middle one), the deviations written over it: the same values, fewer copies
    cols = np.array(values.T, order="C", copy=True)
    n = cols.shape[1]
    kth = [n // 2 - 1, n // 2] if n % 2 == 0 else [n // 2]
    cols.partition(kth, axis=1)
    med = cols[:, kth].mean(axis=1)
    np.subtract(cols, med[:, None].astype(cols.dtype, copy=False), out=cols)
    np.abs(cols, out=cols)
    cols.partition(kth, axis=1)
    return _MAD_TO_STD * cols[:, kth].mean(axis=1).astype(np.float64)


def _subsample(idx: np.ndarray, limit: int = 30_000) -> np.ndarray:
    """Thin an index array to at most ``limit`` entries (deterministic pseudo-random picks).

    Robust statistics do not need millions of samples; random picks avoid the aliasing of a
    regular stride with image rows.
    """
    if idx.size <= limit:
        return idx
    picks = np.random.default_rng(0x5EED).integers(0, idx.size, size=limit)
    return idx[np.sort(picks)]


def _mean_products(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(a * b).mean(axis=(0, 2))`` in float64 for ``(N, K, C)`` arrays: one ``einsum`` over contiguous rows
    (the same sums, in another order: equal to about 1e-15 relative), not NumPy's slow strided reduction."""
    n, k, c = a.shape
    a2 = np.asarray(a, np.float64).reshape(n, k * c)
    b2 = a2 if b is a else np.asarray(b, np.float64).reshape(n, k * c)
    sums = np.einsum("ij,ij->j", a2, b2).reshape(k, c).sum(axis=1)
    return sums / max(1, n * c)


# --------------------------------------------------------------------------------------------------
# public helpers shared with quality/
# --------------------------------------------------------------------------------------------------


def highpass(img: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """High-frequency residual ``img - GaussianBlur(img, sigma)``.

    Parameters
    ----------
    img : ndarray, shape (H, W) or (H, W, C)
        Image, float in [0, 1] (other dtypes are converted to float32 without rescaling).
    sigma : float
        Standard deviation of the Gaussian in pixels.

    Returns
    -------
    ndarray of float32, same shape as ``img``

    Examples
    --------
    >>> flat = np.full((16, 16, 3), 0.5, np.float32)
    >>> float(np.abs(highpass(flat, 1.0)).max())
    0.0
    """
    arr, was_2d = _as_image(img)
    return _restore_shape(arr - _gauss(arr, sigma), was_2d)


def _highpass_gain(sigma: float) -> float:
    """Std of ``highpass(white noise of std 1, sigma)`` (OpenCV's discrete kernel)."""
    ksize = int(round(sigma * 8 + 1)) | 1  # OpenCV's rule for float images
    g = cv2.getGaussianKernel(ksize, sigma, cv2.CV_64F)[:, 0]
    g2 = np.outer(g, g)
    c = ksize // 2
    return float(math.sqrt(max(1e-12, 1.0 - 2.0 * g2[c, c] + float((g2**2).sum()))))


def band_level(img: np.ndarray, region: np.ndarray | None = None, *, sigma: float = 1.0) -> np.ndarray:
    """Robust per-channel amplitude of the high-pass band of ``img`` on ``region``.

    The median absolute deviation of the residual ``img - gaussian(img, sigma)`` (:func:`highpass`), scaled so
    that for white Gaussian noise of standard deviation ``s`` the result is ``s``. This is the band amplitude
    that :func:`match_grain` and :func:`synthesise_detail` match between an edit and its surroundings, per
    channel and per scale (grain and fine texture together). It is not a noise estimate: the project's one
    noise estimator, which excludes texture and edges, is :func:`crispedit.quality.metrics.noise_sigma`
    (Immerkaer 1996).

    Parameters
    ----------
    img : ndarray, shape (H, W) or (H, W, C)
        Float image in [0, 1].
    region : ndarray of bool, shape (H, W), optional
        Pixels to measure; all pixels when omitted.
    sigma : float
        Scale of the band in px (1 px: grain and the finest texture; 3 px: coarser detail).

    Returns
    -------
    ndarray of float64, shape (C,)
        In the image's units; zeros when the region is empty.

    Raises
    ------
    ValueError
        When ``region`` does not have the image's height and width.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> img = 0.5 + 0.02 * rng.standard_normal((256, 256, 1)).astype(np.float32)
    >>> bool(abs(band_level(img)[0] - 0.02) < 0.002)
    True
    """
    arr, _ = _as_image(img)
    h, w, c = arr.shape
    if region is None:
        reg = np.ones((h, w), bool)
    else:
        reg = _as_mask(region, (h, w), "region")
    box = mask_bbox(reg, pad=int(math.ceil(4 * sigma)))
    if box is None:
        return np.zeros(c, np.float64)
    x0, y0, x1, y1 = box
    res = arr[y0:y1, x0:x1] - _gauss(arr[y0:y1, x0:x1], sigma)
    idx = _subsample(np.flatnonzero(reg[y0:y1, x0:x1]))
    vals = res.reshape(-1, c)[idx]
    return _robust_sigma(vals) / _highpass_gain(sigma)


# --------------------------------------------------------------------------------------------------
# 1. blend weight
# --------------------------------------------------------------------------------------------------


def blend_weight(mask: np.ndarray, band: int, *, distance: np.ndarray | None = None) -> np.ndarray:
    """Blend weight: 1 on ``mask``, smooth monotone falloff, exactly 0 at distance >= ``band``.

    ``w = smoothstep(1 - d / band)`` with ``d`` the exact Euclidean distance to the mask
    (``cv2.distanceTransform`` with ``DIST_MASK_PRECISE``).

    Parameters
    ----------
    mask : ndarray of bool, shape (H, W)
        True where the edit is.
    band : int
        Width of the transition in pixels; ``band <= 0`` gives the hard mask.
    distance : ndarray of float32, shape (H, W), optional
        :func:`distance_from` ``(mask)`` when the caller has it already (saves the transform).

    Returns
    -------
    ndarray of float32, shape (H, W)
        Values in [0, 1]: 1.0 exactly on the mask, 0.0 exactly where ``d >= band``.

    Examples
    --------
    >>> m = np.zeros((1, 8), bool); m[0, :2] = True
    >>> [round(float(v), 3) for v in blend_weight(m, 4)[0]]
    [1.0, 1.0, 0.844, 0.5, 0.156, 0.0, 0.0, 0.0]
    """
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise ValueError(f"mask must be HxW, got shape {m.shape}")
    if band <= 0 or not m.any():
        return m.astype(np.float32)
    d = distance_from(m) if distance is None else distance
    w = _smoothstep(1.0 - d / np.float32(band)).astype(np.float32)
    w[m] = 1.0
    return w


# --------------------------------------------------------------------------------------------------
# 2. multi-band blend
# --------------------------------------------------------------------------------------------------


def _pyr_spread(k: int) -> float:
    """How far (pixels) a level-``k`` Gaussian-pyramid weight, expanded back, reaches past its edge.

    Measured on OpenCV's 5-tap pyramid: beyond ``2.5 (2**k - 1)`` px the tail is below 3e-3.
    """
    return 2.5 * (2**k - 1)


def _pin_radius(k: int) -> float:
    """Level-``k`` pixels closer than this (fine pixels) to the core are expanded onto the core."""
    return 3.0 * 2**k


def _pyramid_plan(band: float) -> tuple[int, float]:
    """Pyramid depth ``K`` and half-width ``h0`` (pixels) of the finest transition.

    The transition is centred on the middle of the band (the 0.5 level of a
    :func:`blend_weight`-like weight).  Coarse levels widen it symmetrically by ``_pyr_spread(k)``,
    so ``K`` is the deepest level whose spread fits in 70 % of the half band (and whose pinned
    neighbourhood of the core, see :func:`_pin_radius`, in 60 % of the band); the finest transition
    takes most of what is left, keeping clear of the mask (weight 1 at every level there) and of
    the band's outer edge.
    """
    half = 0.5 * band
    k = 0
    while (_pyr_spread(k + 1) <= 0.7 * half and _pin_radius(k + 1) <= 0.6 * band and k < 12):
        k += 1
    return k, max(0.5, 0.8 * (half - _pyr_spread(k)))


def multiband_blend(original: np.ndarray, edited: np.ndarray, weight: np.ndarray, *,
                    band: int, distance: np.ndarray | None = None) -> np.ndarray:
    """Laplacian-pyramid (multi-band) blend of ``edited`` into ``original``.

    Each level of the Laplacian pyramid of ``edited - original`` is weighted by the matching level
    of a Gaussian pyramid of the weight and the pyramid is collapsed (Burt & Adelson, 1983): fine
    detail switches over a narrow transition in the middle of the band, low frequencies over a wide
    one that spans the band, so there is neither a halo nor a visible seam.

    Guarantees:

    - bit-identical to ``original`` wherever the Euclidean distance from the core ``weight >= 1``
      is at least ``band``;
    - equal to ``edited`` (up to float rounding, ~1e-7) on the core: every pyramid level has weight
      1 there, so nothing of the original (e.g. a removed object) bleeds back into the edit.

    To make the outer line invisible the blend vanishes before it: the finest weight is the input
    weight steepened around its 0.5 level (half-width ``h0`` px), the pyramid depth is limited so
    that the expanded coarse weights reach at most a quarter of the band beyond that, and a smooth
    envelope fades the remaining tail (< 3e-3) to exactly 0 over the outer 30 % of the band.  Only
    the bounding box of the band is processed.

    Parameters
    ----------
    original, edited : ndarray, shape (H, W) or (H, W, C)
        float images in [0, 1] of the same shape.
    weight : ndarray, shape (H, W)
        Blend weight in [0, 1], 1 on the edit, typically :func:`blend_weight` ``(mask, band)``;
        where the seam goes is its 0.5 level.  Only pixels within ``band`` of ``weight >= 1`` can
        change.
    band : int
        Width of the blend band in pixels.
    distance : ndarray of float32, shape (H, W), optional
        :func:`distance_from` of the core ``weight >= 1`` when the caller has it already (e.g. the one
        :func:`blend_weight` was made from); computed here otherwise.

    Returns
    -------
    ndarray of float32, same shape as ``original``

    Examples
    --------
    >>> m = np.zeros((64, 64), bool); m[24:40, 24:40] = True
    >>> o = np.zeros((64, 64, 3), np.float32); e = np.ones_like(o)
    >>> out = multiband_blend(o, e, blend_weight(m, 8), band=8)
    >>> float(out[32, 32, 0]), float(out[0, 0, 0])
    (1.0, 0.0)
    """
    edit, orig, was_2d = _as_pair(edited, original)
    h, w, c = orig.shape
    wgt = _as_weight(weight, (h, w))
    out = orig.copy()
    core = wgt >= np.float32(1.0 - 1e-6)
    if not core.any():
        return _restore_shape(out, was_2d)
    if band <= 0:
        copy_where(out, edit, core)
        return _restore_shape(out, was_2d)

    band_f = float(band)
    levels, h0 = _pyramid_plan(band_f)
    pad = 4 * 2**levels + 2
    x0, y0, x1, y1 = mask_bbox(core, pad=int(band) + pad)  # type: ignore[misc]
    # exact Euclidean distance: the same on the box as on the whole array (the core lies inside the box)
    d = distance_from(core[y0:y1, x0:x1]) if distance is None else distance[y0:y1, x0:x1]
    inside = d < np.float32(band_f)

    # finest weight: the input weight steepened around its 0.5 level (a blend_weight falls with
    # slope 1.5 / band there), then kept clear of the outer edge
    gain = max(1.0, band_f / (3.0 * h0))
    wb = np.clip(wgt[y0:y1, x0:x1], 0.0, 1.0)
    wb -= np.float32(0.5)
    wb *= np.float32(gain)
    wb += np.float32(0.5)
    wb = _smoothstep(wb)
    limit = band_f - _pyr_spread(levels)
    wb *= _smoothstep((np.float32(limit) - d) / np.float32(max(1.0, 0.15 * band_f)))
    envelope = _smoothstep((np.float32(band_f) - d) / np.float32(0.3 * band_f))

    diff = cv2.subtract(edit[y0:y1, x0:x1], orig[y0:y1, x0:x1])
    if diff.ndim == 2:
        diff = diff[:, :, None]
    # Gaussian pyramids of the difference and of the weight; the weight is pinned to 1 near the
    # core at every level so that the core gets exactly the edit
    gp = [diff]
    wp = [wb]
    for k in range(1, levels + 1):
        if min(gp[-1].shape[:2]) < 2:
            break
        gp.append(_cv(gp[-1], cv2.pyrDown))
        wk = cv2.pyrDown(wp[-1])
        step = 2**k
        dk = d[::step, ::step]
        wk[dk <= np.float32(_pin_radius(k))] = 1.0
        wp.append(wk)
    # collapse: R_K = W_K G_K ; R_k = up(R_{k+1}) + W_k (G_k - up(G_{k+1}))
    acc = gp[-1] * wp[-1][:, :, None]
    for k in range(len(gp) - 2, -1, -1):
        size = (gp[k].shape[1], gp[k].shape[0])
        lap = _cv(gp[k + 1], cv2.pyrUp, dstsize=size)
        np.subtract(gp[k], lap, out=lap)
        scale_pixels(lap, wp[k])
        acc = _cv(acc, cv2.pyrUp, dstsize=size)
        acc += lap
    scale_pixels(acc, envelope)
    region = out[y0:y1, x0:x1]
    add_where(region, acc, inside)
    return _restore_shape(out, was_2d)


# --------------------------------------------------------------------------------------------------
# 3. local tone matching
# --------------------------------------------------------------------------------------------------


def tone_match(edited: np.ndarray, original: np.ndarray, known: np.ndarray, target: np.ndarray, *,
               scale: float, max_grid: int = 160, stiffness: float = 10.0) -> np.ndarray:
    """Spatially varying tone/colour correction of ``edited`` from a ring where it should match.

    1. On ``known`` the engine's local tone drift is ``d = lowpass(original) - lowpass(edited)``,
       a Gaussian of ``sigma = scale / 4`` computed by normalized convolution restricted to
       ``known`` (unknown pixels do not pull the average).
    2. ``d`` is interpolated into ``target`` by a membrane (harmonic) fit, solved exactly on a
       coarse grid (cell ~ ``sigma / 2``, at most ``max_grid`` cells a side) by
       :func:`crispedit.membrane.membrane_solve` (a soft fit weighted by the known fraction of each
       cell): it reproduces constants and linear ramps and never overshoots the measured values.
    3. The bilinearly upsampled correction is added to ``edited`` on ``target``; the result is
       clipped to [0, 1].  Pixels outside ``target`` are returned unchanged.

    Offset only (no gain), per channel: stable, and a no-op when ``edited == original`` on ``known``.

    Parameters
    ----------
    edited, original : ndarray, shape (H, W) or (H, W, C)
        float images in [0, 1].
    known : ndarray of bool, shape (H, W)
        Pixels where ``edited`` should equal ``original`` (a ring outside the mask).
    target : ndarray of bool, shape (H, W)
        Pixels to correct (the mask plus the blend band).
    scale : float
        Spatial scale of the drift in pixels (e.g. the ring width); the low-pass sigma is
        ``scale / 4`` (at least 1 px).
    max_grid : int
        Largest side of the coarse grid of the membrane solve (speed vs. resolution).
    stiffness : float
        Weight of the data term against smoothness on fully known cells.

    Returns
    -------
    ndarray of float32, same shape as ``edited``

    Examples
    --------
    >>> o = np.full((64, 64, 3), 0.5, np.float32)
    >>> e = o + 0.1
    >>> m = np.zeros((64, 64), bool); m[20:44, 20:44] = True
    >>> ring = ~m
    >>> out = tone_match(e, o, ring, np.ones((64, 64), bool), scale=16)
    >>> bool(np.abs(out - o).max() < 1e-3)
    True
    """
    edit, orig, was_2d = _as_pair(edited, original)
    h, w, c = edit.shape
    kn = _as_mask(known, (h, w), "known")
    tg = _as_mask(target, (h, w), "target")
    out = edit.copy()
    if not kn.any() or not tg.any():
        return _restore_shape(out, was_2d)

    sigma = max(1.0, float(scale) / 4.0)
    x0, y0, x1, y1 = mask_bbox(kn | tg)  # type: ignore[misc]
    bh, bw = y1 - y0, x1 - x0
    cell = max(1.0, sigma / 2.0, max(bh, bw) / float(max_grid))
    gh, gw = max(1, int(round(bh / cell))), max(1, int(round(bw / cell)))

    knf = kn[y0:y1, x0:x1].astype(np.float32)
    diff = cv2.subtract(orig[y0:y1, x0:x1], edit[y0:y1, x0:x1])
    if diff.ndim == 2:
        diff = diff[:, :, None]
    scale_pixels(diff, knf)
    if not diff.any():
        return _restore_shape(out, was_2d)

    def down(a: np.ndarray) -> np.ndarray:
        if (gh, gw) == a.shape[:2]:
            return a.copy()
        return _cv(a, cv2.resize, (gw, gh), interpolation=cv2.INTER_AREA)

    frac = down(knf[:, :, None])[:, :, 0]  # fraction of known pixels per cell
    num = down(diff)
    sg = sigma * gh / bh
    if sg >= 0.3:
        num = _gauss(num, sg)
        den = _gauss(frac[:, :, None], sg)[:, :, 0]
    else:
        den = frac
    meas = num / np.maximum(den, 1e-6)[:, :, None]

    corr = membrane_solve(meas, frac, stiffness=stiffness)

    if (gh, gw) != (bh, bw):
        corr = _cv(corr, cv2.resize, (bw, bh), interpolation=cv2.INTER_LINEAR)
    sub = out[y0:y1, x0:x1]
    corr += sub
    np.clip(corr, 0.0, 1.0, out=corr)
    copy_where(sub, corr, tg[y0:y1, x0:x1])
    return _restore_shape(out, was_2d)


# --------------------------------------------------------------------------------------------------
# 4. grain matching
# --------------------------------------------------------------------------------------------------


def _bands(img: np.ndarray, sigmas: tuple[float, ...]) -> np.ndarray:
    """Stack of band-pass layers ``G_{s[i-1]} - G_{s[i]}`` (``G_0`` = identity), channels last.

    Returns ``(H, W, C * len(sigmas))`` ordered band-major: band 0 channels, band 1 channels, ...
    """
    h, w, c = img.shape
    out = np.empty((h, w, c * len(sigmas)), np.result_type(img.dtype, np.float32))
    prev = img
    for i, s in enumerate(sigmas):
        cur = _gauss(img, s)
        np.subtract(prev, cur, out=out[:, :, i * c:(i + 1) * c])
        prev = cur
    return out


def _filter_pad(sigmas: tuple[float, ...]) -> int:
    """Radius of OpenCV's Gaussian kernel for the largest sigma (pixels a band value depends on)."""
    return int(round(max(sigmas) * 8 + 1)) // 2 + 1


def _band_values(img: np.ndarray | tuple[np.ndarray, ...], region: np.ndarray,
                 sigmas: tuple[float, ...], *, budget: int = 300_000, block: int = 128,
                 lattice: bool = False) -> np.ndarray:
    """Band values ``(N, C * len(sigmas))`` of ``img`` at ``region`` pixels.

    ``img`` may be a tuple of HxWxC_i arrays, read as their concatenation along channels.  When the
    region's bounding box is larger than ``budget`` pixels, only a fixed pseudo-random subset of
    ``block`` x ``block`` tiles that touch the region is filtered (statistics do not need every
    pixel, and the cost stays bounded for 3000 px masks); ``lattice``: a regular lattice of them
    (:func:`_lattice_blocks`) instead.
    """
    imgs = img if isinstance(img, tuple) else (img,)
    h, w = imgs[0].shape[:2]
    c = sum(a.shape[2] for a in imgs)
    box = mask_bbox(region)
    if box is None:
        return np.zeros((0, c * len(sigmas)), np.float32)
    x0, y0, x1, y1 = box
    pad = _filter_pad(sigmas)
    if (y1 - y0) * (x1 - x0) <= budget:
        blocks = [(y0, y1, x0, x1)]
    elif lattice:
        blocks = _lattice_blocks(region, budget, block)
    else:
        blocks = [(by, min(by + block, y1), bx, min(bx + block, x1))
                  for by in range(y0, y1, block) for bx in range(x0, x1, block)]
        blocks = [b for b in blocks if region[b[0]:b[1], b[2]:b[3]].any()]
        keep = max(1, budget // (block * block))
        if len(blocks) > keep:
            pick = np.random.default_rng(0x5EED).choice(len(blocks), size=keep, replace=False)
            blocks = [blocks[i] for i in np.sort(pick)]
    # the band values are gathered at the region's pixels only (flat indices and ``take``: the same values as
    # ``_bands(concatenated crop)[sel]`` without the full-size band stack, its strided writes and NumPy's slow
    # boolean gather); each image is filtered on its own (OpenCV filters channels independently)
    nb = len(sigmas)
    offs = np.cumsum([0] + [a.shape[2] for a in imgs])
    dtype = np.result_type(*(a.dtype for a in imgs), np.float32)
    out = []
    for by0, by1, bx0, bx1 in blocks:
        py0, py1, px0, px1 = max(0, by0 - pad), min(h, by1 + pad), max(0, bx0 - pad), min(w, bx1 + pad)
        rows, cols = np.divmod(np.flatnonzero(region[by0:by1, bx0:bx1]), bx1 - bx0)
        pidx = (rows + (by0 - py0)) * (px1 - px0) + (cols + (bx0 - px0))
        vals = np.empty((pidx.size, c * nb), dtype)
        for j, a in enumerate(imgs):
            crop = np.ascontiguousarray(a[py0:py1, px0:px1])
            ca = a.shape[2]
            prev = crop.reshape(-1, ca).take(pidx, axis=0)
            for i, s in enumerate(sigmas):
                cur = _gauss(crop, s).reshape(-1, ca).take(pidx, axis=0)
                np.subtract(prev, cur, out=vals[:, i * c + offs[j]:i * c + offs[j] + ca])
                prev = cur
        out.append(vals)
    return np.concatenate(out, axis=0)


def _box_sums(mask: np.ndarray, size: int, step: int = 1) -> np.ndarray:
    """Number of True pixels in every ``size`` x ``size`` window whose top-left corner is on the ``step`` grid
    (``[i, j]``: the window at ``(i step, j step)``)."""
    ii = cv2.integral(mask.view(np.uint8) if mask.dtype == bool else mask.astype(np.uint8), sdepth=cv2.CV_32S)
    return (ii[size::step, size::step] - ii[:-size:step, size::step] - ii[size::step, :-size:step]
            + ii[:-size:step, :-size:step])


def _grain_bank(original: np.ndarray, mask: np.ndarray, ring: np.ndarray, sigmas: tuple[float, ...],
                ring_sig: np.ndarray, patch: int, rng: np.random.Generator,
                n_windows: int = 24) -> tuple[np.ndarray, int] | None:
    """Windows of the original's band residual, taken from clean unmasked areas near the ring.

    Returns ``(bank, size)``: ``bank`` is ``(N, 2 size, 2 size, C * nb)`` (tiles of ``size`` are cut
    from it at random offsets), or None when no window fits outside the mask.
    """
    h, w, c = original.shape
    pad = _filter_pad(sigmas)
    allowed = ~_dilate(mask, pad)  # band values there do not see the masked content
    size = int(patch)
    while size >= 8:
        win = 2 * size
        if h >= win and w >= win:
            step = _GRID  # corners on the 8 px grid: keeps the phase of JPEG blocks; plenty, cheap
            full = _box_sums(allowed, win, step) == win * win
            if np.count_nonzero(full) >= 8:
                near = full & (_box_sums(ring, win, step) >= 0.25 * win * win)
                ys, xs = np.nonzero(near if np.count_nonzero(near) >= 16 else full)
                ys, xs = ys * step, xs * step
                take = rng.choice(ys.size, size=min(n_windows, ys.size), replace=False)
                bank = []
                for i in np.sort(take):
                    y, x = int(ys[i]), int(xs[i])
                    py0, px0 = max(0, y - pad), max(0, x - pad)
                    py1, px1 = min(h, y + win + pad), min(w, x + win + pad)
                    bands = _bands(original[py0:py1, px0:px1], sigmas)
                    bank.append(bands[y - py0:y - py0 + win, x - px0:x - px0 + win])
                bank_arr = np.stack(bank)
                # reject windows with structure (an edge, a twig, a texture boundary) that would
                # ghost into the edit: its energy concentrates in a few blocks of the window
                scale = np.maximum(ring_sig, 1e-12).astype(np.float32)
                blk = max(4, win // 8)
                nbk = win // blk
                # the mean over the band channels of the squared normalised values, summed in channel order
                # (numpy's own order for so short an axis), one channel at a time (no strided copy of the bank)
                nch = bank_arr.shape[3]
                energy = bank_arr[:, :nbk * blk, :nbk * blk, 0] / scale[0]
                energy *= energy
                for j in range(1, nch):
                    sq = bank_arr[:, :nbk * blk, :nbk * blk, j] / scale[j]
                    sq *= sq
                    energy += sq
                energy /= np.float32(nch)
                energy = energy.reshape(-1, nbk, blk, nbk, blk).mean(axis=(2, 4))
                peak = energy.reshape(energy.shape[0], -1).max(axis=1)
                keep = peak <= 1.5 * np.median(peak) + 1e-20
                if np.count_nonzero(keep) < 4:
                    keep = peak <= np.sort(peak)[min(3, peak.size - 1)]
                bank_arr = bank_arr[keep]
                # tame stray edges: clipped at 3 ring levels (rows of whole windows: a contiguous inner axis)
                flat = bank_arr.reshape(bank_arr.shape[0] * win, win * nch)
                np.clip(flat, np.tile(-3.0 * scale, win), np.tile(3.0 * scale, win), out=flat)
                return bank_arr, size
        size //= 2
    return None


def _tile_grain(patches: np.ndarray, choice: np.ndarray, bh: int, bw: int) -> np.ndarray:
    """Cover a ``bh`` x ``bw`` box with windowed patches overlapped by 50 %.

    ``patches`` is ``(P, size, size, ch)``, already multiplied by the separable sine window
    ``w(t) = sin(pi (t + 0.5) / size)``; tile ``(j, i)`` starts at ``((j - 1) size/2,
    (i - 1) size/2)`` and is ``patches[choice[j, i]]``.  The squared windows of the 2 x 2
    overlapping tiles sum to 1 everywhere, so the variance of an uncorrelated residual is preserved
    (no darker or lighter seams between patches).
    """
    n, size = patches.shape[0], patches.shape[1]
    src = patches.reshape(n * size, size, patches.shape[3])
    half = size // 2
    ys = np.arange(bh) + half
    xs = np.arange(bw) + half
    base = (choice * size).astype(np.float32)
    out = np.zeros((bh, bw, src.shape[2]), np.float32)
    for py in (0, 1):  # the tiles j = py + 2 b do not overlap each other
        by = (ys - py * half) // size
        ty = ((ys - py * half) - by * size).astype(np.float32)
        rows_b, rows_n = np.unique(by, return_counts=True)
        for px in (0, 1):
            bx = (xs - px * half) // size
            tx = ((xs - px * half) - bx * size).astype(np.float32)
            cols_b, cols_n = np.unique(bx, return_counts=True)
            pick = np.ix_(py + 2 * rows_b, px + 2 * cols_b)
            map_y = np.repeat(np.repeat(base[pick], rows_n, axis=0), cols_n, axis=1)
            map_y += ty[:, None]
            map_x = np.broadcast_to(tx[None, :], (bh, bw))
            out += _cv(src, cv2.remap, np.ascontiguousarray(map_x), map_y, cv2.INTER_NEAREST)
    return out


def match_grain(edited: np.ndarray, original: np.ndarray, mask: np.ndarray, ring: np.ndarray, *,
                seed: int | None = None, sigmas: tuple[float, ...] = (1.0, 3.0),
                patch: int = 64, tolerance: float = 0.1) -> np.ndarray:
    """Give a too-smooth edit the grain of its surroundings.

    For each band (``img - G_1``: grain; ``G_1 - G_3``: fine detail) and channel, the robust level
    (MAD) of the original's residual on ``ring`` and of the edit's residual inside ``mask`` are
    measured; where the inside is smoother (by more than ``tolerance``), grain is added inside the
    mask so that the inside's level becomes the ring's.  The Gaussian answer, a missing level of
    ``sqrt(max(0, ring^2 - inside^2))``, is refined on samples (a few multiplicative steps on the
    measured robust level of edit + grain), because robust levels of heavy-tailed texture do not
    add in quadrature.

    The added grain is the original's own residual: 24 windows of ``2 patch`` px taken from unmasked
    areas near the ring (no pixel within the filter reach of the mask; high-energy windows, i.e.
    edges, are rejected; values clipped at 3 sigma), cut into a few hundred ``patch`` px patches at
    random offsets and laid over the mask at random with 50 % overlapping sine windows (variance
    preserving, no visible patch grid).  Its spectrum and colour correlation are those of the
    photo.  When no clean window fits outside the mask (down to 8 px patches), band-filtered
    Gaussian noise with the ring's colour correlation is used instead.  The level is one per crop,
    band and channel (not spatially varying).

    Parameters
    ----------
    edited : ndarray, shape (H, W) or (H, W, C)
        The edit, float in [0, 1].
    original : ndarray, same shape
        The original crop (only its pixels outside ``mask`` are used).
    mask : ndarray of bool, shape (H, W)
        Pixels that may change (the edit).
    ring : ndarray of bool, shape (H, W)
        Reference pixels outside the mask (pixels inside the mask are ignored).
    seed : int, optional
        Seed of the random layout; the result is deterministic for a given seed.
    sigmas : tuple of float
        Band edges in pixels.
    patch : int
        Largest patch size (smaller ones are tried when the unmasked area is narrow).
    tolerance : float
        A band whose inside level is within this fraction of the ring's gets nothing (the two
        estimates differ by a few percent even when nothing is missing).

    Returns
    -------
    ndarray of float32, same shape as ``edited``; pixels outside ``mask`` are unchanged.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> o = (0.5 + 0.03 * rng.standard_normal((128, 128, 3))).astype(np.float32)
    >>> m = np.zeros((128, 128), bool); m[40:88, 40:88] = True
    >>> e = o.copy(); e[m] = 0.5
    >>> out = match_grain(e, o, m, ~m, seed=0)
    >>> bool(abs(band_level(out, m)[0] / band_level(o, ~m)[0] - 1) < 0.2)
    True
    """
    edit, orig, was_2d = _as_pair(edited, original)
    h, w, c = edit.shape
    m = _as_mask(mask, (h, w), "mask")
    rg = _as_mask(ring, (h, w), "ring") & ~m
    out = edit.copy()
    if not m.any() or np.count_nonzero(rg) < 16:
        return _restore_shape(out, was_2d)
    sigmas = tuple(float(s) for s in sigmas)
    nb = len(sigmas)
    pad = _filter_pad(sigmas)

    # --- the missing level per band and channel ---------------------------------------------------
    ring_vals = _band_values(orig, rg, sigmas)
    ring_sig = _robust_sigma(ring_vals[_subsample(np.arange(ring_vals.shape[0]))])
    m_in = _erode(m, int(math.ceil(3 * max(sigmas))))
    if np.count_nonzero(m_in) < 64:
        m_in = m
    in_vals = _band_values(edit, m_in, sigmas)
    in_sig = _robust_sigma(in_vals[_subsample(np.arange(in_vals.shape[0]))])
    missing = np.sqrt(np.maximum(0.0, ring_sig**2 - in_sig**2))
    missing[in_sig >= (1.0 - tolerance) * ring_sig] = 0.0  # estimation noise, not a real deficit
    if not np.any(missing > 1e-5):
        return _restore_shape(out, was_2d)

    rng = np.random.default_rng(seed)
    gx0, gy0, gx1, gy1 = mask_bbox(m)  # type: ignore[misc]
    gy0, gx0 = gy0 - gy0 % _GRID, gx0 - gx0 % _GRID  # tiles on the 8 px grid (JPEG phase)
    bh, bw = gy1 - gy0, gx1 - gx0

    def combine(layers: np.ndarray, gains: np.ndarray) -> np.ndarray:
        """Sum of the unit band layers ``(..., nb*c)`` weighted by ``gains`` ``(nb, c)``."""
        # one contiguous multiply by the gains of all bands, then the bands summed in order (same arithmetic as
        # band by band, without numpy's slow inner loops over c-wide strided slices)
        prod = layers * gains.reshape(-1).astype(np.float32)
        total = prod[..., 0:c].copy()
        for b in range(1, nb):
            total += prod[..., b * c:(b + 1) * c]
        return total

    # --- unit-level grain, one layer per band: the original's own residual ------------------------
    found = _grain_bank(orig, m, rg, sigmas, ring_sig, patch, rng)
    if found is not None:
        bank, size = found
        n, win = bank.shape[0], bank.shape[1]
        bank_sig = _robust_sigma(bank.reshape(-1, nb * c)[_subsample(np.arange(bank[..., 0].size))])
        # a bank of near-flat windows (clipped highlights, a clear sky) has a robust level near 0: floor it
        # against the ring's so normalising cannot blow its few stray values up into salt-and-pepper noise
        bank /= np.maximum(bank_sig, np.maximum(0.25 * ring_sig, 1e-6)).astype(np.float32)
        # a few hundred windowed patches cut at random offsets, later laid out at random
        npatch = 128
        k = rng.integers(0, n, size=npatch)
        oy = _GRID * rng.integers(0, (win - size) // _GRID + 1, size=npatch)
        ox = _GRID * rng.integers(0, (win - size) // _GRID + 1, size=npatch)
        taper = np.sin(np.pi * (np.arange(size) + 0.5) / size).astype(np.float32)
        taper2 = np.outer(taper, taper)[:, :, None]
        patches = np.stack([bank[k[i], oy[i]:oy[i] + size, ox[i]:ox[i] + size] * taper2
                            for i in range(npatch)])

        def grain(hh: int, ww: int, gains: np.ndarray | None = None) -> np.ndarray:
            half = size // 2
            choice = rng.integers(0, npatch, size=((hh + half) // half + 2, (ww + half) // half + 2))
            return _tile_grain(patches if gains is None else combine(patches, gains), choice, hh, ww)
    else:
        # fallback: band-filtered white noise with the ring's colour correlation, per band
        chols = []
        for b in range(nb):
            sl = slice(b * c, (b + 1) * c)
            cov = np.atleast_2d(np.cov(ring_vals[:, sl].astype(np.float64), rowvar=False))
            sd = np.sqrt(np.maximum(np.diag(cov), 1e-24))
            chols.append(np.linalg.cholesky(cov / np.outer(sd, sd) + 1e-6 * np.eye(c)))

        def grain(hh: int, ww: int, gains: np.ndarray | None = None) -> np.ndarray:
            white = rng.standard_normal((hh + 2 * pad, ww + 2 * pad, c)).astype(np.float32)
            nbands = _bands(white, sigmas)[pad:pad + hh, pad:pad + ww]
            parts = []
            for b in range(nb):
                layer = nbands[:, :, b * c:(b + 1) * c]
                layer = layer / np.maximum(layer.reshape(-1, c).std(axis=0), 1e-12).astype(np.float32)
                mixed = np.zeros_like(layer)
                for j in range(c):  # mixed_j = sum_i chol[j, i] layer_i (no tall-skinny matmul)
                    for i in range(j + 1):
                        mixed[:, :, j] += np.float32(chols[b][j, i]) * layer[:, :, i]
                parts.append(mixed)
            layers = np.concatenate(parts, axis=2)
            return layers if gains is None else combine(layers, gains)

    # --- per band and channel gains that hit the ring's level as *measured*: robust levels of a sum
    # are not the quadrature sum for heavy-tailed texture, so calibrate on a sample of grain paired
    # with samples of the edit (the grain is stationary and independent of the edit) -------------
    side = int(min(max(bh, bw), 256))
    sample = grain(side + 2 * pad, side + 2 * pad)
    t_vals = _bands(sample, sigmas)[pad:pad + side, pad:pad + side].reshape(-1, nb, nb, c)
    count = int(min(20_000, t_vals.shape[0], in_vals.shape[0]))
    t_vals = t_vals[rng.choice(t_vals.shape[0], size=count, replace=False)]
    e_vals = in_vals[rng.choice(in_vals.shape[0], size=count, replace=False)].reshape(-1, nb, c)
    gains = _calibrate_gains(e_vals, t_vals, ring_sig.reshape(nb, c), missing.reshape(nb, c))

    # --- add inside the mask only -------------------------------------------------------------------
    total = grain(bh, bw, gains)
    sub = out[gy0:gy1, gx0:gx1]
    total += sub
    np.clip(total, 0.0, 1.0, out=total)
    copy_where(sub, total, m[gy0:gy1, gx0:gx1])
    return _restore_shape(out, was_2d)


def _calibrate_gains(e_vals: np.ndarray, t_vals: np.ndarray, ring: np.ndarray, missing: np.ndarray,
                     iters: int = 4) -> np.ndarray:
    """Gains ``(nb, c)`` of unit grain layers so that the edit's robust band levels match the ring.

    ``e_vals`` ``(N, nb, c)``: band values of the edit; ``t_vals`` ``(N, nb, nb, c)``: band values
    (measured band, layer) of the unit layers at the same pixels.  Starts from the Gaussian answer
    (``missing``) and corrects multiplicatively on the measured levels.
    """
    n, nb, c = e_vals.shape
    inside = _robust_sigma(e_vals.reshape(n, nb * c)).reshape(nb, c)
    gains = missing.astype(np.float64).copy()
    active = gains > 0
    want = np.maximum(ring**2 - inside**2, 0.0)
    for _ in range(iters):
        meas = e_vals + np.einsum("nklc,lc->nkc", t_vals, gains.astype(np.float32))
        level = _robust_sigma(meas.reshape(n, nb * c)).reshape(nb, c)
        have = level**2 - inside**2
        factor = np.sqrt(want / np.maximum(have, 1e-24))
        factor = np.where(active & (have > 1e-24), np.clip(factor, 0.5, 2.0), 1.0)
        gains *= factor
        if np.all(np.abs(factor - 1.0) < 0.01):
            break
    return gains


# --------------------------------------------------------------------------------------------------
# 5. sharpness matching
# --------------------------------------------------------------------------------------------------

#: Band edges (Gaussian sigmas, px) of :func:`match_sharpness`: three octave bands of fine detail.
SHARPNESS_SIGMAS = (0.7, 1.4, 2.8)


def _band_stack(img: np.ndarray, sigmas: tuple[float, ...], *, coarse: bool = False) -> list[np.ndarray]:
    """``[img - G_s0, G_s0 - G_s1, ...]`` (band-pass layers, finest first), each HxWxC float32.

    ``coarse``: Gaussians of sigma >= 4 px are filtered at half resolution (:func:`_gauss_coarse`).
    """
    layers, prev = [], img
    for s in sigmas:
        cur = _gauss_coarse(img, s) if coarse else _gauss(img, s)
        layers.append(prev - cur)
        prev = cur
    return layers


def sharpness_gains(edited: np.ndarray, original: np.ndarray, ring: np.ndarray, *,
                    sigmas: tuple[float, ...] = SHARPNESS_SIGMAS, max_gain: float = 4.0,
                    ) -> dict[str, np.ndarray]:
    """Per-band transfer of an engine and the Wiener gains that undo it, fitted on ``ring``.

    On ``ring`` the engine's output should be the original (both are band-filtered with
    :data:`SHARPNESS_SIGMAS`). Per band ``k``, pooled over channels: the engine's transfer
    ``a_k = <E_k, O_k> / <O_k, O_k>`` (least squares; a blur gives ``a_k < 1``), the engine's own
    noise ``N_k = mean((E_k - a_k O_k)^2)`` (grain uncorrelated with the input), the signal power
    ``S_k = mean(O_k^2)`` and the Wiener gain ``g_k = a_k S_k / (a_k^2 S_k + N_k)`` (Wiener 1949;
    per sub-band as in wavelet-domain Wiener restoration), clipped to ``[0, max_gain]``. The restored
    band's expected power ``g_k^2 (a_k^2 S_k + N_k) <= S_k``: never sharper or noisier than the
    original.

    Parameters
    ----------
    edited, original : ndarray, shape (H, W) or (H, W, C), float in [0, 1]
    ring : ndarray of bool, shape (H, W)
        Pixels where ``edited`` is the engine's rendering of ``original`` (outside the edit).
    sigmas : tuple of float
        Band edges in px.
    max_gain : float
        Upper limit of a band gain.

    Returns
    -------
    dict with float64 arrays of shape (len(sigmas),): ``transfer``, ``noise``, ``signal``, ``gain``
    (gain 1 for every band when the ring has fewer than 256 pixels).
    """
    edit, _ = _as_image(edited, "edited")
    orig, _ = _as_image(original, "original")
    h, w, c = edit.shape
    rg = _as_mask(ring, (h, w), "ring")
    nb = len(sigmas)
    ones = np.ones(nb)
    if np.count_nonzero(rg) < 256:
        return {"transfer": ones, "noise": np.zeros(nb), "signal": np.zeros(nb), "gain": ones.copy(),
                "grain": np.zeros(nb)}
    vals = _band_values((edit, orig), rg, tuple(float(s) for s in sigmas), budget=65_536, block=64)
    vals = vals.astype(np.float64)
    vals = vals.reshape(vals.shape[0], nb, 2, c)
    e, o = np.ascontiguousarray(vals[:, :, 0, :]), np.ascontiguousarray(vals[:, :, 1, :])
    n_vals = max(1, o.shape[0] * o.shape[2])
    signal = _mean_products(o, o)
    so = np.maximum(signal * n_vals, 1e-20)
    a = _mean_products(e, o) * n_vals / so
    resid = e - a[None, :, None] * o
    noise = _mean_products(resid, resid)
    gain = a * signal / np.maximum(a * a * signal + noise, 1e-20)
    gain = np.clip(gain, 0.0, max_gain)
    # the photo's stationary grain: robust (MAD) level of the original's band, mean over channels
    os_ = o[_subsample(np.arange(o.shape[0]))]
    grain = (_robust_sigma(os_.reshape(os_.shape[0], -1)).reshape(nb, c)) ** 2
    return {"transfer": a, "noise": noise, "signal": signal, "gain": gain, "grain": grain.mean(axis=1)}


def match_sharpness(edited: np.ndarray, original: np.ndarray, ring: np.ndarray, weight: np.ndarray, *,
                    sigmas: tuple[float, ...] = SHARPNESS_SIGMAS, max_gain: float = 4.0,
                    overshoot: float = 1.0, overshoot_frac: float = 0.05, gains: np.ndarray | None = None,
                    transfer: np.ndarray | None = None, noise: np.ndarray | None = None,
                    grain: np.ndarray | None = None) -> np.ndarray:
    """Bring an engine output's fine detail to the sharpness of the photo it was made from.

    A generative engine's decoder returns the crop slightly soft (SD 1.5's VAE: about a 0.5-1 px
    Gaussian) and may add grain of its own. Both act on the whole crop it returns, so they can be
    measured where the engine's output should equal the original: on ``ring``,
    :func:`sharpness_gains` fits per band (:data:`SHARPNESS_SIGMAS`) the engine's transfer ``a_k``
    and noise power ``N_k``. Each band of the edit is then equalised locally (power-spectrum
    equalisation, Cannon 1976, per sub-band with a local power estimate as in the adaptive Wiener
    filter of Lee 1980): with ``P`` the band's local power (box mean), the signal's local power is
    estimated as ``S = max((P - N_k) / a_k^2, grain_k)`` (``grain_k``: the photo's own robust band
    level) and the band is multiplied by ``sqrt(S / P)`` (at most ``max_gain``). So a blurred edit
    gets its detail back, an engine's grain in flat areas is taken down to the photo's, and the
    restored band has the expected power of the signal: never sharper than the photo. With
    ``gains`` (and no ``transfer``) fixed per-band gains are used instead.

    Overshoot control: the result stays within the local range (3x3 min/max) of the input widened by
    ``overshoot_frac`` of that range plus ``overshoot`` x the ring's finest-band level, so a
    sharpened edge gets no halo (clamped unsharp masking). The correction is applied in proportion
    to ``weight``.

    Parameters
    ----------
    edited, original : ndarray, shape (H, W) or (H, W, C), float in [0, 1]
    ring : ndarray of bool, shape (H, W)
        Reference pixels (see :func:`sharpness_gains`).
    weight : ndarray of float, shape (H, W)
        How much of the correction each pixel gets (1 where the pixel is the engine's output; 0
        leaves a pixel untouched).
    sigmas, max_gain : see :func:`sharpness_gains`.
    overshoot, overshoot_frac : float
        Allowed excursion beyond the local range: ``overshoot`` x the ring's finest-band robust
        level plus ``overshoot_frac`` x the local range.
    gains : ndarray, shape (len(sigmas),), optional
        Fixed band gains (used when ``transfer`` is not given).
    transfer, noise, grain : ndarray, shape (len(sigmas),), optional
        The engine's fit (from :func:`sharpness_gains`); fitted on ``ring`` when neither these nor
        ``gains`` are given.

    Returns
    -------
    ndarray of float32, same shape as ``edited``; clipped to [0, 1]; unchanged where ``weight`` is 0.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> o = np.clip(0.5 + 0.1 * rng.standard_normal((96, 96, 1)), 0, 1).astype(np.float32)
    >>> soft = cv2.GaussianBlur(o, (0, 0), 0.8)[..., None]
    >>> out = match_sharpness(soft, o, np.ones((96, 96), bool), np.ones((96, 96), np.float32))
    >>> bool(np.abs(highpass(out, 1)).std() > 1.3 * np.abs(highpass(soft, 1)).std())
    True
    """
    edit, orig, was_2d = _as_pair(edited, original)
    h, w, c = edit.shape
    wt = _as_weight(weight, (h, w))
    out = edit.copy()
    if gains is None and transfer is None:
        fit = sharpness_gains(edit, orig, ring, sigmas=sigmas, max_gain=max_gain)
        gains, transfer, noise, grain = fit["gain"], fit["transfer"], fit["noise"], fit["grain"]
    gains = np.asarray(gains if gains is not None else np.ones(len(sigmas)), np.float64)
    if transfer is not None:
        transfer, noise = np.asarray(transfer, np.float64), np.asarray(noise, np.float64)
        if np.all(np.abs(transfer - 1.0) < 0.02) and np.all(noise < 1e-7):
            return _restore_shape(out, was_2d)
    elif np.all(np.abs(gains - 1.0) < 0.02):
        return _restore_shape(out, was_2d)
    box = mask_bbox(wt > 0, pad=_filter_pad(sigmas))
    if box is None:
        return _restore_shape(out, was_2d)
    x0, y0, x1, y1 = box
    sub = edit[y0:y1, x0:x1]
    corr = np.zeros_like(sub)
    for k, layer in enumerate(_band_stack(sub, tuple(sigmas))):
        if transfer is None or noise is None:
            g = np.float32(gains[k])
        else:
            # local power-spectrum equalisation: the signal's local power is the band's local power less the
            # engine's noise, over a^2, and never below the photo's own grain level; the gain brings the band's
            # power to it (textured content fully restored, engine grain in flat areas taken down)
            r = int(round(4.0 * float(sigmas[k]) + 3.0))  # local power: a box mean (O(1) per pixel)
            power = _cv((layer * layer).mean(axis=2, keepdims=True), cv2.blur, (2 * r + 1, 2 * r + 1),
                        borderType=cv2.BORDER_REFLECT)
            a, nz = float(max(transfer[k], 1e-3)), float(noise[k])
            floor = 0.0 if grain is None else float(grain[k])
            s_est = np.maximum((power - np.float32(nz)) / (a * a), np.float32(floor))
            g = np.sqrt(s_est / np.maximum(power, 1e-20))
            g = np.clip(g, 0.0, float(max_gain))
        corr += (g - np.float32(1.0)) * layer
    new = sub + corr * wt[y0:y1, x0:x1, None]
    if transfer is not None or gains.max() > 1.0:  # overshoot control: no halo beyond the local range of the input
        rg = _as_mask(ring, (h, w), "ring")
        vals = (_band_values(orig, rg, (float(sigmas[0]),), budget=65_536, block=64) if rg.any()
                else np.zeros((0, c), np.float32))
        margin = (overshoot * _robust_sigma(vals)).astype(np.float32) if vals.shape[0] else np.zeros(c, np.float32)
        k = np.ones((3, 3), np.uint8)
        lo = _cv(sub, cv2.erode, k, borderType=cv2.BORDER_REPLICATE)
        hi = _cv(sub, cv2.dilate, k, borderType=cv2.BORDER_REPLICATE)
        slack = np.float32(overshoot_frac) * (hi - lo) + margin
        lo -= slack
        hi += slack
        np.clip(new, lo, hi, out=new)
    np.clip(new, 0.0, 1.0, out=new)
    out[y0:y1, x0:x1] = new
    return _restore_shape(out, was_2d)


#: Band edges (Gaussian sigmas, px) of :func:`detail_content`: the bands :func:`synthesise_detail` makes (finest
#: first) and the one above them.
CONTENT_SIGMAS = (0.5, 1.0, 2.0, 4.0)


def _lattice_blocks(region: np.ndarray, budget: int, block: int) -> list[tuple[int, int, int, int]]:
    """``block`` px tiles ``(y0, y1, x0, x1)`` of ``region``'s box that touch it; when they hold more than ``budget``
    pixels, every k-th in both directions (a regular lattice over the whole region: far less sampling variance
    on a heterogeneous region than as many tiles drawn at random)."""
    box = mask_bbox(region)
    if box is None:
        return []
    x0, y0, x1, y1 = box
    ny, nx = -(-(y1 - y0) // block), -(-(x1 - x0) // block)
    step = 1
    while True:
        blocks = [(y0 + j * block, min(y0 + (j + 1) * block, y1), x0 + i * block, min(x0 + (i + 1) * block, x1))
                  for j in range(step // 2, ny, step) for i in range(step // 2, nx, step)]
        blocks = [b for b in blocks if region[b[0]:b[1], b[2]:b[3]].any()]
        if len(blocks) * block * block <= budget or len(blocks) <= 4:
            return blocks
        step += 1


def _window_sums(a: np.ndarray, win: int) -> np.ndarray:
    """Sums of ``a`` (HxW) over ``win`` x ``win`` windows (edges zero-padded), flattened row-major."""
    bh, bw = a.shape
    nh, nw = -(-bh // win), -(-bw // win)
    p = np.zeros((nh * win, nw * win), np.float64)
    p[:bh, :bw] = a
    return p.reshape(nh, win, nw, win).sum(axis=(1, 3)).reshape(-1)


def _window_powers(imgs: tuple[np.ndarray, ...], region: np.ndarray, sigmas: tuple[float, ...], *, win: int = 16,
                   budget: int = 1_000_000, block: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Band powers of each of ``imgs`` (HxWx1 float32) on ``win`` x ``win`` windows of ``region``.

    Returns ``(count, power)``: ``count`` (N,) the region pixels of each window with any, ``power``
    (N, len(imgs), len(sigmas)) their mean squared band values (:func:`_band_stack`). A region whose tiles hold
    more than ``budget`` pixels is read on a regular lattice of ``block`` px tiles (:func:`_lattice_blocks`).
    """
    h, w = region.shape
    nb = len(sigmas)
    pad = _filter_pad(sigmas)
    blocks = _lattice_blocks(region, budget, block)
    if not blocks:
        return np.zeros(0), np.zeros((0, len(imgs), nb))
    counts, powers = [], []
    for by0, by1, bx0, bx1 in blocks:
        py0, py1, px0, px1 = max(0, by0 - pad), min(h, by1 + pad), max(0, bx0 - pad), min(w, bx1 + pad)
        sel = region[by0:by1, bx0:bx1].astype(np.float32)
        bh, bw = sel.shape
        cnt = _window_sums(sel, win)
        per_img = []
        for img in imgs:
            layers = _band_stack(img[py0:py1, px0:px1], sigmas)
            per_img.append([_window_sums(layer[by0 - py0:by1 - py0, bx0 - px0:bx1 - px0, 0] ** 2 * sel, win)
                            for layer in layers])
        ok = cnt > 0
        counts.append(cnt[ok])
        powers.append(np.asarray(per_img).transpose(2, 0, 1)[ok] / cnt[ok, None, None])
    return np.concatenate(counts), np.concatenate(powers)


def _welch(img: np.ndarray, region: np.ndarray, size: int, limit: int = 600) -> tuple[np.ndarray, int]:
    """Mean power spectrum (Welch 1967: Hann-windowed ``size`` px squares, mean removed) of ``img`` (HxW) over the
    squares lying wholly in ``region``, on a lattice of half-overlapping positions (at most ``limit``, evenly
    thinned). Returns the ``(size, size)`` spectrum and the number of squares."""
    h, w = region.shape
    if h < size or w < size:
        return np.zeros((size, size)), 0
    full = _box_sums(region, size) == size * size
    ys, xs = np.nonzero(full[::size // 2, ::size // 2])
    n = ys.size
    if n == 0:
        return np.zeros((size, size)), 0
    if n > limit:
        keep = np.linspace(0, n - 1, limit).round().astype(int)
        ys, xs = ys[keep], xs[keep]
    ys, xs = ys * (size // 2), xs * (size // 2)
    han = np.outer(np.hanning(size), np.hanning(size))
    wins = np.stack([img[y:y + size, x:x + size] for y, x in zip(ys, xs)]).astype(np.float64)
    wins -= wins.mean(axis=(1, 2), keepdims=True)
    wins *= han
    return (np.abs(np.fft.fft2(wins)) ** 2).mean(axis=0) / (han * han).sum(), int(ys.size)


def _spectral_content(ey: np.ndarray, oy: np.ndarray, resid: np.ndarray, inner: np.ndarray, ring: np.ndarray,
                      sigmas: tuple[float, ...], min_snr: float, size: int = 32,
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, float, float] | None:
    """:func:`detail_content`'s ratios frequency by frequency (None when fewer than 6 squares fit a side).

    With ``P_in`` the edit's power spectrum inside, ``P_ring`` the edit's and ``N`` the decode residual's on the
    ring, ``c(f) = (P_in - N) / (P_ring - N)`` where the ring's decoded signal exceeds ``min_snr`` x its noise and
    2 % of the original's power (a decode that kept that frequency); per band, ``c_k`` is the mean of ``c(f)``
    weighted by the original's ring power in the band there, measured when those frequencies hold at least 30 %
    of the band's power. A band-level ratio would weigh the decode's attenuation by the ring's spectrum, not the
    content's (a smooth interior's grain against edges on the ring: 2x off at 0.8 px).
    """
    p_in, n_in = _welch(ey, inner, size)
    p_ring, n_r = _welch(ey, ring, size)
    if n_in < 6 or n_r < 6:
        return None
    noise, _ = _welch(resid, ring, size)
    p_orig, _ = _welch(oy, ring, size)
    f = np.fft.fftfreq(size)
    f2 = f[:, None] ** 2 + f[None, :] ** 2
    f2[0, 0] = np.inf  # the mean is no detail
    gauss = [np.exp(-2.0 * math.pi ** 2 * s * s * f2) for s in sigmas]
    resp = [1.0 - gauss[0]] + [gauss[k - 1] - gauss[k] for k in range(1, len(sigmas))]
    sig_ring = p_ring - noise
    ok = (sig_ring > min_snr * noise) & (sig_ring > 0.02 * p_orig) & np.isfinite(f2)
    ratio = np.where(ok, np.maximum(p_in - noise, 0.0) / np.where(ok, sig_ring, 1.0), 0.0)
    nb = len(sigmas)
    cont, measured = np.full(nb, np.nan), np.zeros(nb, bool)
    signal, nz, orig_pow = np.zeros(nb), np.zeros(nb), np.zeros(nb)
    # the 3x3 Laplacian's response (the finest level one sees at 100 %), read like a band
    lap2 = (2.0 * np.cos(2 * math.pi * f)[:, None] + 2.0 * np.cos(2 * math.pi * f)[None, :] - 4.0) ** 2
    resp_sq = [r ** 2 for r in resp] + [lap2]
    lap_c, lap_pow = np.nan, 0.0
    for k in range(nb + 1):
        if k == nb:  # the Laplacian: its ratio where the decode kept enough of it, else the finest band's
            wk = p_orig * lap2
            wk[~np.isfinite(f2)] = 0.0
            lap_pow = float(wk.sum()) / size ** 2
            part = float(wk[ok].sum())
            inside = float((np.maximum(p_in - noise, 0.0) * lap2)[ok].sum())
            if part >= 0.3 * float(wk.sum()) > 0 and inside >= min_snr * float((noise * lap2)[ok].sum()):
                lap_c = float((ratio * wk)[ok].sum()) / part
            break
        wk = p_orig * resp_sq[k]
        wk[~np.isfinite(f2)] = 0.0
        total, part = float(wk.sum()), float(wk[ok].sum())
        orig_pow[k] = total / size ** 2
        signal[k] = float((sig_ring * resp[k] ** 2)[np.isfinite(f2)].sum()) / size ** 2
        nz[k] = float((noise * resp[k] ** 2)[np.isfinite(f2)].sum()) / size ** 2
        # the content's own signal inside must stand above the noise too, or the ratio is the noise's estimate
        inside = float((np.maximum(p_in - noise, 0.0) * resp[k] ** 2)[ok].sum())
        if total > 0 and part >= 0.3 * total and inside >= min_snr * float((noise * resp[k] ** 2)[ok].sum()):
            measured[k] = True
            cont[k] = float((ratio * wk)[ok].sum()) / part
    return cont, measured, signal, nz, orig_pow, lap_c, lap_pow


def detail_content(edited: np.ndarray, original: np.ndarray, mask: np.ndarray, ring: np.ndarray, *,
                   sigmas: tuple[float, ...] = CONTENT_SIGMAS, sample: np.ndarray | None = None,
                   min_snr: float = 1.0, radius: int = 3, clip_level: float = 2.0) -> dict[str, np.ndarray]:
    """How much fine detail an edit's content has, band by band, relative to the photo around it.

    The edit is an engine's rendering: on ``ring`` (outside the mask) of the original, inside the mask of new
    content, both through the same decode (blur, sharpening, grain, rounding). The decode is fitted on
    ``ring`` (luma) as a linear filter of the original, a ``2 radius + 1`` square kernel plus an offset, by
    least squares (a Wiener-Hopf fit of the engine's point-spread function); what it leaves is the engine's own
    noise. Per band ``k`` (:func:`_band_stack` of ``sigmas``), with ``S_k`` the band power of the filtered
    original on the ring, ``N_k`` that of the residual and ``P_k`` that of the edit inside (``sample``), the
    content's band power relative to the ring's is ``c_k = (P_k - N_k) / S_k``: the same decode on both sides
    cancels. A band is measured when ``S_k`` and ``P_k - N_k`` both exceed ``min_snr`` x ``N_k``.

    The finest band, when a soft or noisy decode took it below its noise, is predicted from the next two:
    ``c_0 = c_1 (c_1 / c_2)^0.5`` (the log-ratio extrapolated at half its slope, the factor clamped to
    [0.5, 2]); coarser gaps are left NaN. On real photos (the benchmark's tuning split, originals as the
    edit) the 3x3 Laplacian energy inside a mask predicted from the ring this way from the 0.5-1 and 1-2 px
    bands is within 0.8-1.25 of the truth in 16 of 16 masks (log-std 0.08), against 10 of 16 (0.46) from the
    2-8 px bands.

    Parameters
    ----------
    edited, original : ndarray, shape (H, W) or (H, W, C), float in [0, 1]
    mask : ndarray of bool, shape (H, W)
        The edit's new content.
    ring : ndarray of bool, shape (H, W)
        Pixels outside ``mask`` where ``edited`` is the engine's rendering of ``original``.
    sigmas : tuple of float
        Band edges (px), finest first.
    sample : ndarray of bool, shape (H, W), optional
        Pixels inside the mask to measure (default: ``mask`` eroded by 8 px, or the mask when that is empty).
    min_snr : float
        When a band counts as measured (see above).
    radius : int
        Half size of the fitted kernel (px).
    clip_level : float
        Pixels of the edit with a channel at or above it (or at or below ``1 - clip_level``), and 2 px around
        them, are left out of both samples: a decode that clipped them (SD's brightening drift on a highlight)
        kept none of their detail. Ignored when too few pixels would be left.

    Returns
    -------
    dict of float64 arrays of shape (len(sigmas),): ``content`` (c_k, measured or predicted; NaN for a band
    that can be neither), ``measured`` (bool), ``signal`` (S_k) and ``noise`` (N_k), in squared [0, 1] units of
    luma; ``level``: the predicted band powers inside (``c_k`` x the original's on the same ring squares) and
    ``laplacian`` (shape (1,)): the predicted mean squared 3x3 Laplacian of luma inside (its own ratio where
    the decode kept enough of it, else ``c_0``); both NaN where the ratios came from band powers (too few
    32 px squares fit the mask or the ring). All NaN / False when the mask or the ring has fewer than 256
    pixels.
    """
    edit, orig, _ = _as_pair(edited, original)
    h, w, c = edit.shape
    m = _as_mask(mask, (h, w))
    rg = _as_mask(ring, (h, w), "ring") & ~m
    nb = len(sigmas)
    nan = np.full(nb, np.nan)
    res = {"content": nan.copy(), "measured": np.zeros(nb, bool), "signal": nan.copy(), "noise": nan.copy(),
           "level": nan.copy(), "laplacian": np.full(1, np.nan)}
    inner = (_erode(m, 8) if sample is None else _as_mask(sample, (h, w), "sample") & m)
    if np.count_nonzero(inner) < 256:
        inner = m
    # pixels the decode clipped (a brightened highlight, a darkened shadow) hold no detail of the content: left
    # out on both sides, with the 2 px the band filters spread them
    box0 = mask_bbox(inner | rg)
    if box0 is not None:
        bx0, by0, bx1, by1 = box0
        part = edit[by0:by1, bx0:bx1]
        clipped = np.zeros((h, w), bool)
        clipped[by0:by1, bx0:bx1] = cv2.dilate(
            ((part.max(axis=2) >= clip_level) | (part.min(axis=2) <= 1.0 - clip_level)).astype(np.uint8),
            _disk(2)).astype(bool)
        if np.count_nonzero(inner & ~clipped) >= 256 and np.count_nonzero(rg & ~clipped) >= 256:
            inner, rg = inner & ~clipped, rg & ~clipped
    if np.count_nonzero(inner) < 256 or np.count_nonzero(rg) < 256:
        return res
    luma = np.array([0.299, 0.587, 0.114], np.float32) if c == 3 else np.full(c, 1.0 / c, np.float32)
    sig = tuple(float(s) for s in sigmas)
    r = int(radius)
    x0, y0, x1, y1 = mask_bbox(inner | rg, pad=_filter_pad(sig) + r)  # type: ignore[misc]
    ey = np.ascontiguousarray(edit[y0:y1, x0:x1] @ luma)
    oy = np.ascontiguousarray(orig[y0:y1, x0:x1] @ luma)
    bh, bw = ey.shape
    # the decode's kernel: least squares on a sample of ring pixels at least ``r`` inside the box
    sel = rg[y0:y1, x0:x1].copy()
    sel[:r], sel[bh - r:], sel[:, :r], sel[:, bw - r:] = False, False, False, False
    idx = _subsample(np.flatnonzero(sel), 40_000)
    offs = [dy * bw + dx for dy in range(-r, r + 1) for dx in range(-r, r + 1)]
    design = np.empty((idx.size, len(offs) + 1), np.float64)
    of = oy.reshape(-1)
    for j, off in enumerate(offs):
        design[:, j] = of[idx + off]
    design[:, -1] = 1.0
    coef = np.linalg.lstsq(design, ey.reshape(-1)[idx].astype(np.float64), rcond=None)[0]
    kernel = coef[:-1].reshape(2 * r + 1, 2 * r + 1).astype(np.float32)
    fitted = cv2.filter2D(oy, cv2.CV_32F, kernel, borderType=cv2.BORDER_REFLECT) + np.float32(coef[-1])
    resid = ey - fitted
    cont = nan.copy()
    spec = _spectral_content(ey, oy, resid, inner[y0:y1, x0:x1], rg[y0:y1, x0:x1], sig, min_snr)
    if spec is not None:
        cont, res["measured"], res["signal"], res["noise"], orig_pow, lap_c, lap_pow = spec
    else:
        cnt, pw = _window_powers((fitted[:, :, None], resid[:, :, None]), rg[y0:y1, x0:x1], sig)
        icnt, ipw = _window_powers((ey[:, :, None],), inner[y0:y1, x0:x1], sig)
        if cnt.size == 0 or icnt.size == 0:
            return res
        s_ring = (pw[:, 0, :] * cnt[:, None]).sum(axis=0) / cnt.sum()
        n_ring = (pw[:, 1, :] * cnt[:, None]).sum(axis=0) / cnt.sum()
        p_in = (ipw[:, 0, :] * icnt[:, None]).sum(axis=0) / icnt.sum()
        res["signal"], res["noise"] = s_ring, n_ring
        for k in range(nb):
            s_in = p_in[k] - n_ring[k]
            if s_ring[k] > min_snr * n_ring[k] and s_in > min_snr * n_ring[k] and s_ring[k] > 0:
                res["measured"][k] = True
                cont[k] = s_in / s_ring[k]
    res["content"] = cont
    # one octave of extrapolation only (from the 0.5-1 px band to the finest): from coarser bands the prediction
    # is no better than the ring's own (log-std 0.43 on the tuning photos), and the bands are left NaN
    if not res["measured"][0] and nb > 2 and res["measured"][1] and res["measured"][2] and cont[2] > 0:
        res["content"][0] = cont[1] * float(np.clip((max(cont[1], 1e-12) / cont[2]) ** 0.5, 0.5, 2.0))
    if spec is not None:
        # the predicted levels inside, in the units of the original (same squares as the ratios: consistent)
        res["level"] = res["content"] * orig_pow
        lap = lap_c if np.isfinite(lap_c) else res["content"][0]
        res["laplacian"] = np.array([lap * lap_pow])
    return res


def synthesise_detail(edited: np.ndarray, original: np.ndarray, mask: np.ndarray, ring: np.ndarray, *,
                      sigmas: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0), bands: int = 3, clip: float = 0.5,
                      max_scale: float = 256.0, excess_limit: float = 1.1, aim: float = 0.85,
                      quantum: float = 0.0,
                      sample: np.ndarray | None = None, content: np.ndarray | None = None,
                      level: np.ndarray | None = None, deep: np.ndarray | None = None) -> np.ndarray:
    """Synthesise the finest octaves an engine's decode lost beyond recovery, at the photo's own level.

    A VAE decode at 0.8-1.2 px softness leaves the top octave below the 8-bit quantisation: no gain can
    bring it back (:func:`match_sharpness` restores what is left). This makes it anew by nonlinear
    extrapolation in frequency (Greenspan, Anderson & Akber 2000, "Image enhancement by nonlinear
    extrapolation in frequency space"): the edit's next two coarser bands ``U`` (which the engine keeps) are
    passed through a bounded nonlinearity (clipped at ``clip`` x their local RMS level), whose harmonics are
    phase-coherent with the edges and texture of ``U``; band ``k`` of the result is the new detail. Its
    power is set so that the band's mean power inside ``mask`` (eroded by the filter reach, or ``sample``)
    reaches the photo's: the original's band power on ``ring`` scaled by the ratio of a coarse reference band
    (the geometric mean over the two bands above the synthesised ones, which the engine keeps) inside
    against on the ring (clamped to [0.1, 10]). A band
    already at that level gets nothing; the gain is at most ``max_scale``. A band above ``excess_limit`` x
    that level (an engine's own grain) is scaled down to it, to no less than 0.7 of its amplitude. Measured and made on luma (fine detail is
    nearly achromatic) and added equally to every channel.

    Parameters
    ----------
    edited, original : ndarray, shape (H, W) or (H, W, C), float in [0, 1]
    mask : ndarray of bool, shape (H, W)
        Pixels that may change (the engine's output).
    ring : ndarray of bool, shape (H, W)
        Reference pixels of the original (outside ``mask``).
    sigmas : tuple of float
        Band edges (px), finest first, at least ``bands`` + 2: the first ``bands`` are synthesised, the next two
        are the reference; later edges only widen the box the bands are filtered on (its border reach). Edges of
        4 px and more are filtered at half resolution (:func:`_gauss_coarse`).
    bands : int
        How many of the finest bands are synthesised.
    clip : float
        Bound of the nonlinearity in local RMS levels of ``U``.
    max_scale : float
        Largest gain of a synthesised layer over its raw level.
    excess_limit : float
        Largest allowed band power over the target before the band is scaled down.
    aim : float
        Fraction of the target power a short band is brought to.
    quantum : float
        Step of the output's later rounding in [0, 1] units (1/255 for 8-bit; 0: none): the finest band is
        measured and set on the output as it will be rounded (rounding adds fine energy of its own).
    sample : ndarray of bool, shape (H, W), optional
        Pixels where the edit's band power is measured (default: ``mask`` eroded by the filter reach).
    content : ndarray of float, shape (>= bands,), optional
        The content's detail per synthesised band relative to the ring's (:func:`detail_content` ``["content"]``,
        measured through the engine's own decode): where finite, it replaces the coarse-band ratio above, a
        short band is brought to the full predicted level (not ``aim`` of it) and a band in excess may be taken
        down to 0.3 of its amplitude (not 0.7).
    level : ndarray of float, shape (>= bands + 1,), optional
        Absolute targets (:func:`detail_content`: its ``level`` and, last, its ``laplacian``): the predicted band
        powers and 3x3 Laplacian power of luma inside, in [0, 1] units; where finite (and ``content`` finite)
        they replace ``content`` x the ring's level (read on the same pixels as the ratio: no second sample).
    deep : ndarray of bool, shape (>= bands,), optional
        Bands that may be taken down to 0.3 of their amplitude even without a measured level: bands an
        engine's own grain drowned (its excess over the photo is that grain, not content).

    Returns
    -------
    ndarray of float32, same shape as ``edited``; clipped to [0, 1]; unchanged outside ``mask``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> o = np.clip(0.5 + 0.1 * rng.standard_normal((128, 128, 1)), 0, 1).astype(np.float32)
    >>> o = cv2.GaussianBlur(o, (0, 0), 0.6)[..., None]
    >>> m = np.zeros((128, 128), bool); m[32:96, 32:96] = True
    >>> soft = np.where(m[..., None], cv2.GaussianBlur(o, (0, 0), 1.2)[..., None], o)
    >>> out = synthesise_detail(soft, o, m, ~m)
    >>> bool(highpass(out, 0.7)[40:88, 40:88].std() > 2 * highpass(soft, 0.7)[40:88, 40:88].std())
    True
    """
    edit, orig, was_2d = _as_pair(edited, original)
    h, w, c = edit.shape
    m = _as_mask(mask, (h, w))
    rg = _as_mask(ring, (h, w), "ring") & ~m
    out = edit.copy()
    sig = tuple(float(v) for v in sigmas)
    nb = len(sig)
    if nb < bands + 2:
        raise ValueError(f"need at least {bands + 2} band edges, got {nb}")
    pad = _filter_pad(sig)
    # measured a little inside the mask (the reach of the synthesised bands), not the coarse bands' full reach:
    # that would leave only the deep interior of a small mask
    inner = _erode(m, _filter_pad(sig[:bands])) if sample is None else _as_mask(sample, (h, w), "sample") & m
    if np.count_nonzero(inner) < 256 or np.count_nonzero(rg) < 256:
        return _restore_shape(out, was_2d)
    # fine detail is nearly achromatic: measured and made on luma (Rec. 601), added equally to every channel
    luma = np.array([0.299, 0.587, 0.114], np.float32) if c == 3 else np.full(c, 1.0 / c, np.float32)
    x0, y0, x1, y1 = mask_bbox(m, pad=pad)  # type: ignore[misc]
    sub_y = (edit[y0:y1, x0:x1] @ luma)[:, :, None]
    # only the synthesised bands and the two reference bands above them are ever read: the coarsest edges'
    # Gaussians (the costliest filters) are not computed, the box keeps the full tuple's reach
    used = sig[:bands + 2]
    layers = _band_stack(sub_y, used, coarse=True)
    # statistics on a fixed pseudo-random sample of pixels (at most 60k), not on every one
    idx = _subsample(np.flatnonzero(inner[y0:y1, x0:x1]), 60_000)

    def power(a: np.ndarray) -> float:
        v = a.reshape(-1)[idx].astype(np.float64)
        return float((v * v).mean())

    e_pow = np.array([power(layer) for layer in layers])
    # the ring's bands are read on the ring only: its box needs the used bands' reach, no more
    rx0, ry0, rx1, ry1 = mask_bbox(rg, pad=_filter_pad(used))  # type: ignore[misc]
    o_y = (orig[ry0:ry1, rx0:rx1] @ luma)[:, :, None]
    ridx = _subsample(np.flatnonzero(rg[ry0:ry1, rx0:rx1]), 60_000)
    o_pow = np.array([float((layer.reshape(-1)[ridx].astype(np.float64) ** 2).mean())
                      for layer in _band_stack(o_y, used, coarse=True)])
    # how much more (or less) detail the edit's content has than the ring's, from the two bands above the
    # synthesised ones (the engine keeps most of them, sharpness matching restored them): the geometric mean
    # of their ratios (the nearer band predicts the finest better, the farther one is better kept)
    ratios = e_pow[bands:bands + 2] / np.maximum(o_pow[bands:bands + 2], 1e-20)
    coarse_ratio = float(np.clip(np.exp(np.mean(np.log(np.maximum(ratios, 1e-12)))), 0.1, 10.0))
    # the finest band's level is that of the 3x3 Laplacian (the pixel-level detail one sees at 100 %)
    o_lap = float((_laplacian(o_y).reshape(-1)[ridx].astype(np.float64) ** 2).mean())
    per_band = np.full(bands, coarse_ratio)
    aims = np.full(bands, aim)
    measured = np.zeros(bands, bool)
    if content is not None:
        given = np.asarray(content, np.float64)[:bands]
        measured = np.isfinite(given)
        per_band[measured] = np.clip(given[measured], 0.01, 100.0)
        aims[measured] = 1.0  # measured through the engine's decode: no margin for an uncertain prediction
    deep_k = measured.copy()
    if deep is not None:
        deep_k |= np.asarray(deep, bool)[:bands]
    target = o_pow.copy()
    target[:bands] *= per_band
    target[0] = o_lap * per_band[0]
    if level is not None:
        lv = np.asarray(level, np.float64)
        absolute = np.concatenate([[lv[-1]], lv[1:bands]])  # the Laplacian stands for the finest band
        use = np.isfinite(absolute) & measured
        target[:bands][use] = np.maximum(absolute[use], 0.0)
    # the output is rounded to ``quantum`` afterwards, which adds fine energy of its own (up to sum(luma^2) x 20 x
    # q^2 / 12 for white rounding noise, far less where the edit keeps the engine's own 8-bit values): the finest
    # band is measured as it will be written, the edit with the correction rounded, at the sample pixels and their
    # four neighbours (the 3x3 Laplacian's stencil; at the box's edge reflected as :func:`_laplacian` does)
    bh, bw = sub_y.shape[:2]
    row, col = np.divmod(idx, bw)
    up, down = np.maximum(row - 1, 0), np.minimum(row + 1, bh - 1)
    left, right = np.maximum(col - 1, 0), np.minimum(col + 1, bw - 1)
    stencil = np.stack([idx, row * bw + left, row * bw + right, up * bw + col, down * bw + col])
    lap_w = np.array([-4.0, 1.0, 1.0, 1.0, 1.0])
    edit_st = edit[y0:y1, x0:x1].reshape(-1, c)[stencil].astype(np.float64) if quantum > 0 else None

    def rounded_power(add: np.ndarray) -> float:
        """Laplacian power of the rounded luma with ``add`` (values at the stencil, (5, N)) added to every channel."""
        v = np.clip(np.round((edit_st + add[:, :, None]) / quantum) * quantum, 0.0, 1.0) @ luma.astype(np.float64)
        lap = np.tensordot(lap_w, v, axes=1)
        return float((lap * lap).mean())

    corr = np.zeros_like(sub_y)
    for k in range(bands - 1, -1, -1):  # coarse to fine: the Laplacian of the finest sees the others' detail
        if target[k] <= 1e-20:
            continue
        ev = (_laplacian(sub_y + corr) if k == 0 else layers[k]).reshape(-1)[idx].astype(np.float64)
        have = float((ev * ev).mean())
        round_k = k == 0 and edit_st is not None
        corr_st = corr.reshape(-1)[stencil].astype(np.float64) if round_k else None
        judged = rounded_power(corr_st) if corr_st is not None else have
        if judged > excess_limit * target[k]:
            # an engine's own grain (or amplified noise) above the photo's level: the band scaled down to it
            # (the finest: the band as it is now, with what the coarser steps added)
            x = layers[k] if k else (sub_y + corr) - _gauss(sub_y + corr, sig[0])
            want = excess_limit * target[k]
            # at most to 0.7 of its amplitude when the level is predicted from coarse bands (uncertain: a soft
            # patch is worse); to 0.3 when it was read through the engine's decode (a noisy engine's grain)
            floor = -0.7 if deep_k[k] else -0.3
        elif judged < (aims[k] - 0.05) * target[k]:
            # synthesised up to ``aim`` x the predicted level only: the prediction from the ring is uncertain,
            # and a patch a little short of the photo is less visible than an over-sharpened one
            u = layers[k + 1] + layers[k + 2]
            # the bound follows the local level of u (an RMS over a few of its wavelengths), so an edge of any
            # contrast and a faint texture both saturate and make harmonics in proportion to their amplitude
            r = int(round(4.0 * sig[k + 2])) + 1
            t = _cv(u * u, cv2.blur, (2 * r + 1, 2 * r + 1), borderType=cv2.BORDER_REFLECT)
            np.sqrt(t, out=t)
            t *= np.float32(clip)
            t += np.float32(1e-6)
            nl = np.minimum(np.maximum(u, -t), t)
            x = nl - _gauss(nl, sig[k]) if k == 0 else _gauss(nl, sig[k - 1]) - _gauss(nl, sig[k])
            want = aims[k] * target[k]
            floor = 0.0
        else:
            continue
        xv = (_laplacian(x) if k == 0 else x).reshape(-1)[idx].astype(np.float64)
        x_pow, cross = float((xv * xv).mean()), float((xv * ev).mean())
        if x_pow <= 1e-20:
            continue

        scale = _solve_scale(want, have, cross, x_pow, floor, max_scale)
        if corr_st is not None:
            # the rounding's own energy, measured at the current scale, taken off the float model's aim (a few
            # fixed-point steps: it changes slowly with the scale)
            x_st = x.reshape(-1)[stencil].astype(np.float64)
            for _ in range(4):
                got = rounded_power(corr_st + scale * x_st)
                if abs(got - want) <= 0.02 * want:
                    break
                model = have + 2.0 * scale * cross + scale * scale * x_pow
                scale = _solve_scale(want - (got - model), have, cross, x_pow, floor, max_scale)
        corr += np.float32(scale) * x
    if not corr.any():
        return _restore_shape(out, was_2d)
    # written on the mask's own box (the padded box was the filters' reach only)
    mx0, my0, mx1, my1 = mask_bbox(m)  # type: ignore[misc]
    new = plus_pixels(edit[my0:my1, mx0:mx1], corr[my0 - y0:my1 - y0, mx0 - x0:mx1 - x0])
    np.clip(new, 0.0, 1.0, out=new)
    copy_where(out[my0:my1, mx0:mx1], new, m[my0:my1, mx0:mx1])
    return _restore_shape(out, was_2d)


def _solve_scale(level: float, have: float, cross: float, x_pow: float, floor: float, top: float) -> float:
    """The scale s nearest 0 with ``have + 2 s cross + s^2 x_pow = level`` (a band's power with s x added),
    clipped to [floor, top]."""
    disc = cross * cross + x_pow * (level - have)
    sc = (-cross + math.sqrt(disc)) / x_pow if disc > 0 else -cross / x_pow
    return float(np.clip(sc, floor, top))


def _laplacian(img: np.ndarray) -> np.ndarray:
    """3x3 Laplacian (``cv2.Laplacian``, ksize 1) of an HxWx1 float32 image, shape (H, W)."""
    return cv2.Laplacian(np.ascontiguousarray(img[:, :, 0]), cv2.CV_32F, ksize=1, borderType=cv2.BORDER_REFLECT)


def _mix_channels(img: np.ndarray, mat: np.ndarray) -> np.ndarray:
    """``img @ mat.T`` for an HxWxC float32 image and a CxC matrix: ``cv2.transform`` for 3 or 4 channels (a fifth
    of NumPy's cost; the same sums to float32 rounding), ``img`` itself for the identity."""
    if np.array_equal(mat, np.eye(mat.shape[0], dtype=mat.dtype)):
        return img
    if img.dtype == np.float32 and img.shape[2] in (3, 4):
        return cv2.transform(np.ascontiguousarray(img), mat.astype(np.float32)).reshape(img.shape)
    return img @ mat.T


def _column_power(vals: np.ndarray) -> np.ndarray:
    """Mean square of each column of an ``(N, K)`` array, in float64 (one ``einsum``, no float64 copy)."""
    return np.einsum("ij,ij->j", vals, vals, dtype=np.float64) / max(1, vals.shape[0])


#: Rec. 601 RGB -> Y, Cb, Cr (linear, no offsets): luma and two colour differences.
_YCC = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], np.float32)


def cap_detail(edited: np.ndarray, original: np.ndarray, mask: np.ndarray, ring: np.ndarray, *,
               sigmas: tuple[float, ...] = SHARPNESS_SIGMAS[:2], limit: float = 1.2,
               content: np.ndarray | None = None) -> np.ndarray:
    """Keep an edit from being noisier than its surroundings: cap its fine-band power at the ring's.

    Per band (``img - G_s0``, ``G_s0 - G_s1``), the mean power of the edit inside ``mask`` (eroded by
    the filter reach) is compared with the original's on ``ring``; a band more than ``limit`` times
    stronger is scaled down inside the mask to ``limit`` times the ring's power. Colour images are capped
    on luma and on chroma (Rec. 601 YCbCr) separately. An engine's own grain
    (or noise amplified by sharpening) is what this removes; a band at or below the ring's level is
    left alone.

    Parameters
    ----------
    edited, original : ndarray, shape (H, W) or (H, W, C), float in [0, 1]
    mask : ndarray of bool, shape (H, W)
        Pixels that may change.
    ring : ndarray of bool, shape (H, W)
        Reference pixels of the original (outside the mask).
    sigmas : tuple of float
        Band edges in px.
    limit : float
        Largest allowed power ratio (edit inside / original on the ring) per band.
    content : ndarray of float, shape (len(sigmas),), optional
        The content's own detail per band relative to the ring's (e.g. from :func:`detail_content`): the cap is
        ``limit`` x the ring's power x ``content`` (a mask over a more detailed part of the photo than its
        surroundings keeps that detail); NaN or omitted: 1.

    Returns
    -------
    ndarray of float32, same shape as ``edited``; unchanged outside ``mask``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> o = np.full((96, 96, 1), 0.5, np.float32) + 0.01 * rng.standard_normal((96, 96, 1)).astype(np.float32)
    >>> m = np.zeros((96, 96), bool); m[24:72, 24:72] = True
    >>> e = o + 0.05 * m[..., None] * rng.standard_normal((96, 96, 1)).astype(np.float32)
    >>> out = cap_detail(e, o, m, ~m)
    >>> bool(highpass(out, 1)[30:66, 30:66].std() < 0.5 * highpass(e, 1)[30:66, 30:66].std())
    True
    """
    edit, was_2d = _as_image(edited, "edited")
    orig, _ = _as_image(original, "original")
    h, w, c = edit.shape
    m = _as_mask(mask, (h, w))
    rg = _as_mask(ring, (h, w), "ring") & ~m
    out = edit.copy()
    pad = _filter_pad(sigmas)
    inner = _erode(m, pad)
    if np.count_nonzero(inner) < 64 or np.count_nonzero(rg) < 64:
        return _restore_shape(out, was_2d)
    nb = len(sigmas)
    # colour images: luma and chroma (Rec. 601 YCbCr, linear) capped separately: an engine's colour noise is
    # taken down without taking the content's luma detail with it, and the reverse
    if c == 3:
        to_ycc = _YCC
        groups = [np.array([0]), np.array([1, 2])]
    else:
        to_ycc = np.eye(c, dtype=np.float32)
        groups = [np.arange(c)]
    # statistics on a regular lattice of tiles (about 1 MP at most): a few random tiles of a heterogeneous
    # region (a dragonfly's edges in one, bokeh in the next) misjudge its level by 2x
    edit_y = _mix_channels(edit, to_ycc)
    e_pow = _column_power(_band_values(edit_y, inner, sigmas, budget=1_000_000, block=64, lattice=True))
    o_pow = _column_power(_band_values(_mix_channels(orig, to_ycc), rg, sigmas, budget=1_000_000, block=64,
                                       lattice=True))
    e_pow, o_pow = e_pow.reshape(nb, c), o_pow.reshape(nb, c)
    factor = np.ones(nb)
    if content is not None:
        given = np.asarray(content, np.float64)
        factor = np.where(np.isfinite(given), np.clip(given, 0.01, 100.0), 1.0)
    gains = np.ones((nb, c), np.float32)
    for g in groups:
        p_in = e_pow[:, g].mean(axis=1)
        p_ring = o_pow[:, g].mean(axis=1) * factor
        gains[:, g] = np.sqrt(np.minimum(1.0, limit * p_ring / np.maximum(p_in, 1e-20)))[:, None]
    if np.all(gains > 0.99):
        return _restore_shape(out, was_2d)
    x0, y0, x1, y1 = mask_bbox(m, pad=pad)  # type: ignore[misc]
    sub = edit[y0:y1, x0:x1]
    corr = np.zeros_like(sub)
    for g, layer in zip(gains, _band_stack(edit_y[y0:y1, x0:x1], tuple(sigmas))):
        if g.min() < 0.999:
            corr += (g - np.float32(1.0)) * layer
    new = sub + _mix_channels(corr, np.linalg.inv(to_ycc).astype(np.float32))
    np.clip(new, 0.0, 1.0, out=new)
    copy_where(out[y0:y1, x0:x1], new, m[y0:y1, x0:x1])
    return _restore_shape(out, was_2d)


def transfer_detail(edited: np.ndarray, original: np.ndarray, mask: np.ndarray, *, width: float = 2.0,
                    sigma: float = 3.0) -> np.ndarray:
    """Give the pixels outside ``mask`` the original's own fine structure back.

    In the blend band the edit's low frequencies carry the tone and content join, but its fine detail
    there is the engine's re-rendering of the photo: softer, re-grained, an edge crossing the contour
    smeared. Outside the mask the original's high-pass (``img - G_sigma``) replaces the edit's,
    ramping in over ``width`` px from the mask's contour (smoothstep of the Euclidean distance); on
    the mask nothing changes. The high-pass is taken from pixels outside the mask only (normalised
    convolution), so the structure under the mask (an object being removed) never comes back.

    Parameters
    ----------
    edited, original : ndarray, shape (H, W) or (H, W, C), float in [0, 1]
    mask : ndarray of bool, shape (H, W)
        The user's edit (kept as the engine made it).
    width : float
        Ramp width in px outside the mask.
    sigma : float
        Gaussian sigma (px) splitting fine detail from the base (from 4 px on filtered at half resolution,
        :func:`_gauss_coarse`: within a small fraction of an 8-bit level of the full-resolution filter).

    Returns
    -------
    ndarray of float32, same shape as ``edited``

    Examples
    --------
    >>> o = np.zeros((8, 16), np.float32); o[:, 12] = 1.0
    >>> m = np.zeros((8, 16), bool); m[:, :4] = True
    >>> out = transfer_detail(np.zeros_like(o), o, m)
    >>> bool(out[:, 12].min() > 0.5), float(out[:, :4].max())
    (True, 0.0)
    """
    edit, orig, was_2d = _as_pair(edited, original)
    m = _as_mask(mask, edit.shape[:2])
    if not m.any() or m.all():
        return _restore_shape(edit.copy(), was_2d)
    outside = (~m).astype(np.float32)
    # the distances are 0 on the mask and at least 1 px off it, so a ramp of width <= 1 px is the outside
    # itself (smoothstep(1) = 1): no distance transform and no multiply by the ramp are needed
    ramp = None if width <= 1.0 else _smoothstep(distance_from(m) / np.float32(max(1e-3, width)))[:, :, None]
    diff = cv2.subtract(orig, edit)  # highpass is linear: highpass(o) - highpass(e) = highpass(o - e)
    if diff.ndim == 2:
        diff = diff[:, :, None]
    # the high-pass of pixels outside the mask from pixels outside the mask only (normalised convolution,
    # Knutsson & Westin 1993): what lies under the mask (an object being removed) never leaks back out
    scale_pixels(diff, outside)
    den = _gauss_coarse(outside[:, :, None], sigma)
    low = _gauss_coarse(diff, sigma)
    divide_pixels(low, np.maximum(den, np.float32(1e-6)))
    new = np.subtract(diff, low, out=low)
    if ramp is not None:
        scale_pixels(new, ramp)
    new += edit
    if ramp is None:
        copy_where(new, edit, m)  # a ramp of 0 on the mask: edit + 0 x (diff - low) is the edit
    np.clip(new, 0.0, 1.0, out=new)
    return _restore_shape(new, was_2d)


# --------------------------------------------------------------------------------------------------
# 6. detail restoration
# --------------------------------------------------------------------------------------------------


def restore_detail(edited: np.ndarray, original_hi: np.ndarray, mask: np.ndarray, *, sigma: float,
                   replace: bool = True) -> np.ndarray:
    """Put a high-frequency layer into ``edited`` inside ``mask``.

    Parameters
    ----------
    edited : ndarray, shape (H, W) or (H, W, C)
        float image in [0, 1].
    original_hi : ndarray, same shape
        Detail layer, e.g. ``highpass(refined, sigma)`` from a native-scale refine.
    mask : ndarray of bool, shape (H, W)
        Pixels to change.
    sigma : float
        Scale that separates detail from base (the one ``original_hi`` was made with).
    replace : bool
        True: the edit's own detail above ``sigma`` is replaced (``lowpass(edited) + hi``), so
        detail is not doubled. False: ``hi`` is simply added.

    Returns
    -------
    ndarray of float32, same shape as ``edited``; clipped to [0, 1] inside ``mask``, unchanged
    outside.

    Examples
    --------
    >>> e = np.full((32, 32, 3), 0.5, np.float32)
    >>> hi = np.zeros_like(e); hi[16, 16] = 0.1
    >>> out = restore_detail(e, hi, np.ones((32, 32), bool), sigma=1.0)
    >>> round(float(out[16, 16, 0]), 3)
    0.6
    """
    edit, was_2d = _as_image(edited, "edited")
    hi, _ = _as_image(original_hi, "original_hi")
    if hi.shape != edit.shape:
        raise ValueError(f"original_hi shape {hi.shape} != edited shape {edit.shape}")
    m = _as_mask(mask, edit.shape[:2])
    out = edit.copy()
    box = mask_bbox(m, pad=int(math.ceil(4 * sigma)))
    if box is None:
        return _restore_shape(out, was_2d)
    x0, y0, x1, y1 = box
    base = _gauss(edit[y0:y1, x0:x1], sigma) if replace else edit[y0:y1, x0:x1]
    new = base + hi[y0:y1, x0:x1]
    np.clip(new, 0.0, 1.0, out=new)
    copy_where(out[y0:y1, x0:x1], new, m[y0:y1, x0:x1])
    return _restore_shape(out, was_2d)
