"""Zoom metrics: plain numpy/OpenCV functions on arrays.

Every function takes arrays as loaded by :mod:`crispedit.io` (H x W or H x W x C, uint8 or uint16) or the
float32 images derived from them, and returns plain numbers or small arrays. Definitions and thresholds are in
``docs/quality.md``; :func:`crispedit.quality.verdict.assess` combines them into a verdict.

The seam metric is the heart of the gate. For a contour point ``p`` with outward normal ``n`` and a scale ``d``
(a low-pass of about ``d/2`` px), the contrast *across* the contour is ``c = |S(p + d n) - S(p - d n)|`` and the
contrast *beside* it is ``r = (|S(p + 3d n) - S(p + d n)| + |S(p - d n) - S(p - 3d n)|) / 2`` (``S``: the
low-passed image in CIE Lab). On natural, stationary image content ``E[c] = E[r]`` whatever the texture, so
``log(mean c / mean r)`` is about 0 on an unedited contour and grows with a step, a paste seam or a halo. The same
statistic on the contour *translated* onto untouched parts of the image gives a null distribution, and the
seam score is a z-score against it.

>>> import numpy as np
>>> from crispedit.quality.metrics import ciede2000
>>> round(float(ciede2000(np.array([50.0, 2.6772, -79.7751]), np.array([50.0, 0.0, -82.7485]))), 4)  # Sharma pair 1
2.0425
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from crispedit.errors import InputError
from crispedit.geometry import Box, mask_bbox
from crispedit.quality.brisque import BRISQUE_MODEL_PATH, brisque_available, brisque_score  # noqa: F401 - re-exported
from crispedit.regions import blend_band

__all__ = [
    "as_float",
    "colour_channels",
    "rgb_to_lab",
    "ciede2000",
    "changed_mask",
    "default_band",
    "outside_identity",
    "noise_sigma",
    "detail_energy",
    "SeamResult",
    "seam_visibility",
    "detail_noise_consistency",
    "colour_consistency",
    "brisque_score",
    "brisque_available",
]

# Sampling distances (px at full resolution) of the seam metric's scales; scales above the band are dropped.
SEAM_SCALES = (2, 8, 32)
# Floors for the null distribution's spread (log-ratio units), so a flat sky does not make every wiggle a seam.
_NULL_STD_FLOOR = 0.04
_SEG_STD_FLOOR = 0.10
_COH_STD_FLOOR = 0.02
_SEG_COH_STD_FLOOR = 0.05
# (median, spread) of the null statistics when no placement fits (ratio, coherence), whole contour / segment
_FALLBACK_NULL = ((0.0, 0.08), (0.05, 0.04))
_DETAIL_FLOOR = 0.25 / 255.0  # mean |Laplacian| added to both sides of the detail ratio
_NOISE_FLOOR = 0.4 / 255.0  # noise sigma added to both sides of the noise ratio
_NULL_MIN = 4  # fewer null placements than this at a scale: the scale is not used
# the reference blur of the detail checks (px): what a Gaussian blur of this sigma would leave of the same content's
# detail (between the sigma 0.5 of an invisible retouch and the sigma 1.5 that is clearly visible at 1:1)
REFERENCE_BLUR_SIGMA = 1.0
_FALLBACK_SEG = ((0.0, 0.2), (0.2, 0.12))
_EPS_LAB = 0.25  # Lab units added to contrasts: below the noise of an 8-bit image after the low-pass


# ----------------------------------------------------------------------------------------------------------------
# conversions
# ----------------------------------------------------------------------------------------------------------------
def _scale_of(arr: np.ndarray) -> float:
    if arr.dtype == np.uint8:
        return 255.0
    if arr.dtype == np.uint16:
        return 65535.0
    if np.issubdtype(arr.dtype, np.floating):
        return 1.0
    raise InputError(f"unsupported pixel type {arr.dtype}", "give uint8 or uint16 images (or float in [0, 1])")


def as_float(arr: np.ndarray) -> np.ndarray:
    """``arr`` as float32 in [0, 1], always H x W x C.

    >>> as_float(np.full((2, 2), 255, np.uint8)).shape
    (2, 2, 1)
    """
    scale = _scale_of(arr)
    if scale != 1.0:  # an integer image: one float32 copy, scaled in place (the same values as ``a * s``)
        out = arr.astype(np.float32)
        out *= np.float32(1.0 / scale)
    else:
        out = np.asarray(arr, dtype=np.float32)
    if out.ndim == 2:
        out = out[:, :, None]
    return out


def colour_channels(arr: np.ndarray) -> np.ndarray:
    """The colour part of an image as float32 RGB in [0, 1] (grey replicated, alpha dropped)."""
    f = as_float(arr)
    c = f.shape[2]
    if c >= 3:
        return np.ascontiguousarray(f[:, :, :3])
    return np.ascontiguousarray(np.repeat(f[:, :, :1], 3, axis=2))


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB float32 in [0, 1] -> CIE Lab (D65; L in 0..100), via OpenCV on float32."""
    return cv2.cvtColor(np.ascontiguousarray(rgb, dtype=np.float32), cv2.COLOR_RGB2Lab)


def ciede2000(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """CIEDE2000 colour difference, vectorised over the leading axes (kL = kC = kH = 1).

    Follows Sharma, Wu & Dalal (2005), "The CIEDE2000 color-difference formula: implementation notes".
    """
    lab1 = np.asarray(lab1, dtype=np.float64)
    lab2 = np.asarray(lab2, dtype=np.float64)
    L1, a1, b1 = lab1[..., 0], lab1[..., 1], lab1[..., 2]
    L2, a2, b2 = lab2[..., 0], lab2[..., 1], lab2[..., 2]
    C1 = np.hypot(a1, b1)
    C2 = np.hypot(a2, b2)
    Cm = 0.5 * (C1 + C2)
    Cm7 = Cm**7
    G = 0.5 * (1.0 - np.sqrt(Cm7 / (Cm7 + 25.0**7)))
    a1p = (1.0 + G) * a1
    a2p = (1.0 + G) * a2
    C1p = np.hypot(a1p, b1)
    C2p = np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360.0
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360.0
    h1p = np.where(C1p == 0, 0.0, h1p)
    h2p = np.where(C2p == 0, 0.0, h2p)

    dLp = L2 - L1
    dCp = C2p - C1p
    dh = h2p - h1p
    dh = np.where(dh > 180.0, dh - 360.0, dh)
    dh = np.where(dh < -180.0, dh + 360.0, dh)
    dh = np.where((C1p * C2p) == 0, 0.0, dh)
    dHp = 2.0 * np.sqrt(C1p * C2p) * np.sin(np.radians(dh) / 2.0)

    Lpm = 0.5 * (L1 + L2)
    Cpm = 0.5 * (C1p + C2p)
    hsum = h1p + h2p
    habs = np.abs(h1p - h2p)
    hpm = np.where(habs <= 180.0, 0.5 * hsum, np.where(hsum < 360.0, 0.5 * (hsum + 360.0), 0.5 * (hsum - 360.0)))
    hpm = np.where((C1p * C2p) == 0, hsum, hpm)

    T = (
        1.0
        - 0.17 * np.cos(np.radians(hpm - 30.0))
        + 0.24 * np.cos(np.radians(2.0 * hpm))
        + 0.32 * np.cos(np.radians(3.0 * hpm + 6.0))
        - 0.20 * np.cos(np.radians(4.0 * hpm - 63.0))
    )
    dtheta = 30.0 * np.exp(-(((hpm - 275.0) / 25.0) ** 2))
    Cpm7 = Cpm**7
    Rc = 2.0 * np.sqrt(Cpm7 / (Cpm7 + 25.0**7))
    Sl = 1.0 + (0.015 * (Lpm - 50.0) ** 2) / np.sqrt(20.0 + (Lpm - 50.0) ** 2)
    Sc = 1.0 + 0.045 * Cpm
    Sh = 1.0 + 0.015 * Cpm * T
    Rt = -np.sin(np.radians(2.0 * dtheta)) * Rc
    tL = dLp / Sl
    tC = dCp / Sc
    tH = dHp / Sh
    return np.sqrt(tL**2 + tC**2 + tH**2 + Rt * tC * tH)


# ----------------------------------------------------------------------------------------------------------------
# masks, bands, outside identity
# ----------------------------------------------------------------------------------------------------------------
def _max_abs_diff(original: np.ndarray, edited: np.ndarray) -> np.ndarray:
    """Per-pixel max over channels of |edited - original|, in the images' own units (uint8/uint16/float)."""
    d = cv2.absdiff(original, edited)
    if d.ndim == 3:
        out = d[:, :, 0].copy()
        for c in range(1, d.shape[2]):
            np.maximum(out, d[:, :, c], out=out)
        return out
    return d


def check_pair(original: np.ndarray, edited: np.ndarray) -> None:
    """Raise :class:`InputError` unless the two images can be compared pixel for pixel."""
    if original.shape[:2] != edited.shape[:2]:
        raise InputError(
            f"original is {original.shape[1]}x{original.shape[0]} but edited is {edited.shape[1]}x{edited.shape[0]}",
            "compare the edit with the image it was made from, at the same size",
        )
    if original.ndim != edited.ndim or (original.ndim == 3 and original.shape[2] != edited.shape[2]):
        raise InputError(
            f"original has shape {original.shape} but edited has {edited.shape}",
            "compare images with the same channels (e.g. both RGB)",
        )
    if original.dtype != edited.dtype:
        raise InputError(
            f"original is {original.dtype} but edited is {edited.dtype}",
            "compare images of the same bit depth (an edit keeps the input's depth)",
        )


def changed_mask(
    original: np.ndarray,
    edited: np.ndarray,
    *,
    threshold: float | None = None,
    density: float = 0.35,
    min_area: int | None = None,
) -> np.ndarray:
    """The changed area found from the difference: bool H x W.

    Pixels with ``|edited - original| > threshold`` (default 0: any change) are counted in a 9 x 9 window; where
    more than ``density`` of the window changed, the pixel is in the edit. So a low-amplitude edit (fresh grain
    of a level or two, where many single pixels happen not to change) still comes out as one solid region, while
    lone flipped pixels do not. The result is opened with a 3x3 cross, closed with a 15 px disc, its holes are
    filled and components smaller than ``min_area`` (default 64 px) are dropped.
    """
    check_pair(original, edited)
    if threshold is None:
        threshold = 0.0
    d = _max_abs_diff(original, edited)
    nz = d > threshold
    if not nz.any():
        return nz
    ys, xs = np.nonzero(nz)
    pad = 24
    y0, y1 = max(0, ys.min() - pad), min(nz.shape[0], ys.max() + pad + 1)
    x0, x1 = max(0, xs.min() - pad), min(nz.shape[1], xs.max() + pad + 1)
    frac = cv2.boxFilter(nz[y0:y1, x0:x1].astype(np.float32), -1, (9, 9), borderType=cv2.BORDER_CONSTANT)
    sub = (frac > density).astype(np.uint8)
    sub = cv2.morphologyEx(sub, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3)))
    sub = cv2.morphologyEx(sub, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (15, 15)))
    sub = _fill_holes(sub)
    if min_area is None:
        min_area = 64
    n, labels, stats, _ = cv2.connectedComponentsWithStats(sub, connectivity=8)
    keep = np.zeros(n, dtype=np.uint8)
    keep[1:] = (stats[1:, cv2.CC_STAT_AREA] >= min_area).astype(np.uint8)
    out = np.zeros(nz.shape, dtype=bool)
    out[y0:y1, x0:x1] = keep[labels].astype(bool)
    return out


def _fill_holes(m: np.ndarray) -> np.ndarray:
    padded = np.pad(m, 1)
    inv = (padded == 0).astype(np.uint8)
    ff = inv.copy()
    fmask = np.zeros((ff.shape[0] + 2, ff.shape[1] + 2), np.uint8)
    cv2.floodFill(ff, fmask, (0, 0), 2)
    holes = ff[1:-1, 1:-1] == 1
    out = m.copy()
    out[holes] = 1
    return out


def default_band(mask: np.ndarray) -> int:
    """Blend band in px of the mask's bounding box: the harness's own formula (:func:`crispedit.regions.blend_band`)."""
    bb = mask_bbox(mask)
    return blend_band(bb if bb is not None else Box(0, 0, 0, 0))


def _crop_box(shape: tuple[int, ...], bb: tuple[int, int, int, int], margin: int) -> tuple[int, int, int, int]:
    h, w = shape[:2]
    return max(0, bb[0] - margin), max(0, bb[1] - margin), min(w, bb[2] + margin), min(h, bb[3] + margin)


def _dist_outside(mask_crop: np.ndarray) -> np.ndarray:
    """Euclidean distance (px) of each pixel to the nearest True pixel of ``mask_crop``."""
    return cv2.distanceTransform((~mask_crop).astype(np.uint8), cv2.DIST_L2, 5)


# Sharing and tiling the 5x5 chamfer distance maps (OpenCV's DIST_L2, mask 5) is exact for the thresholds the
# gate applies: the map counts integer steps of 1, 1.4 and 2.1969 px (scaled by 2^16), and the shortest path from
# a pixel to its nearest feature stays in the box the two span, so any crop holding that box gives the same
# integer distance; only its conversion to float32 may differ in the last bit between crops (vector vs. scalar
# code at a row's end), and a distance is an exact integer number of pixels only along a straight run of unit
# steps (exact in either conversion), so ``dist > k`` and ``dist <= k`` for integer ``k`` never differ.
def dist_outside_cached(mask: np.ndarray, margin: int, cache: dict[str, Any] | None
                        ) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """Distance (px) to the nearest True pixel of ``mask`` (full size) on its bounding box plus ``margin`` px:
    (map, crop box x0, y0, x1, y1), or None for an empty mask. With ``cache`` (one dict per mask), a map computed
    on a larger crop is sliced instead of recomputed (integer thresholds on it are the same; see above)."""
    bb = mask_bbox(mask)
    if bb is None:
        return None
    box = _crop_box(mask.shape, bb, margin)
    if cache is not None and "mask_dist" in cache:
        dist, (cx0, cy0, cx1, cy1) = cache["mask_dist"]
        if cx0 <= box[0] and cy0 <= box[1] and cx1 >= box[2] and cy1 >= box[3]:
            return dist[box[1] - cy0 : box[3] - cy0, box[0] - cx0 : box[2] - cx0], box
    dist = _dist_outside(mask[box[1] : box[3], box[0] : box[2]])
    if cache is not None:
        cache["mask_dist"] = (dist, box)
    return dist, box


_DEPTH_TILE = 64


def _depth_inside(mask: np.ndarray) -> np.ndarray:
    """Distance (px, float32) of each True pixel of ``mask`` to the nearest False pixel, the image's edge counting
    as False: ``cv2.distanceTransform(np.pad(mask, 1), DIST_L2, 5)[1:-1, 1:-1]``, computed only on the
    ``_DEPTH_TILE`` px tiles that hold mask pixels (:func:`_depth_patches`; integer thresholds on it are those of
    the whole map; see :func:`dist_outside_cached`)."""
    patches = _depth_patches(mask)
    if len(patches) == 1 and patches[0][2].shape == mask.shape:
        return patches[0][2]
    out = np.zeros(mask.shape, np.float32)
    for y0, x0, d in patches:
        out[y0 : y0 + d.shape[0], x0 : x0 + d.shape[1]] = d
    return out


def _depth_patches(mask: np.ndarray) -> list[tuple[int, int, np.ndarray]]:
    """:func:`_depth_inside` as patches (y0, x0, float32 map) that cover every True pixel of ``mask`` (0 elsewhere):
    one patch per ``_DEPTH_TILE`` px tile that holds mask pixels, each computed with a halo wider than the mask's
    largest inradius (:func:`_inradius_upper`), so a mask of scattered spots over a large crop costs its spots'
    tiles; or one patch, the whole map, when the tiles would cost more. Empty for an empty mask."""
    h, w = mask.shape
    bb = mask_bbox(mask)
    if bb is None:
        return []
    t = _DEPTH_TILE
    halo = int(math.ceil(1.1 * _inradius_upper(mask, bb))) + 3
    nty, ntx = -(-h // t), -(-w // t)
    # which tiles hold mask pixels: OR over each band of t rows (a contiguous reduction), then over t columns
    full = h // t
    rows = np.zeros((nty, ntx * t), bool)
    if full:
        np.logical_or.reduce(mask[: full * t].reshape(full, t, w), axis=1, out=rows[:full, :w])
    if h > full * t:
        np.logical_or.reduce(mask[full * t :], axis=0, out=rows[full, :w])
    tiles = np.argwhere(rows.reshape(nty, ntx, t).any(axis=2))
    if len(tiles) * (t + 2 * halo) ** 2 >= h * w:
        return [(0, 0, cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1])]
    m8 = mask.view(np.uint8) if mask.dtype == bool else mask.astype(np.uint8)  # bool as 0/1 bytes: no copy
    out = []
    for r, c in tiles:
        y0, x0 = int(r) * t, int(c) * t
        y1, x1 = min(h, y0 + t), min(w, x0 + t)
        sy0, sx0, sy1, sx1 = max(0, y0 - halo), max(0, x0 - halo), min(h, y1 + halo), min(w, x1 + halo)
        # the image's edge counts as outside (a one-pixel False border), a tile's own edge does not
        py0, px0, py1, px1 = int(sy0 == 0), int(sx0 == 0), int(sy1 == h), int(sx1 == w)
        sub = cv2.copyMakeBorder(m8[sy0:sy1, sx0:sx1], py0, py1, px0, px1, cv2.BORDER_CONSTANT, value=0)
        d = cv2.distanceTransform(sub, cv2.DIST_L2, 5)
        out.append((y0, x0, d[y0 - sy0 + py0 : y1 - sy0 + py0, x0 - sx0 + px0 : x1 - sx0 + px0]))
    return out


def outside_identity(
    original: np.ndarray, edited: np.ndarray, mask: np.ndarray, band: int, *, diff: np.ndarray | None = None,
    cache: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Changed pixels beyond the blend band: the bit-identity promise.

    Returns ``outside_changed_pixels`` (pixels farther than ``band`` px from the mask where any channel differs,
    alpha included), ``outside_max_diff`` (largest absolute difference there, in the image's own units) and
    ``outside_max_diff_norm`` (the same divided by full scale). ``cache`` (a dict kept by the caller for this
    mask) shares the distance map to the mask with the regions' rings (:func:`dist_outside_cached`).
    """
    check_pair(original, edited)
    d = _max_abs_diff(original, edited) if diff is None else diff
    changed = d > 0
    n_total = int(np.count_nonzero(changed))
    if n_total == 0:
        return {"outside_changed_pixels": 0, "outside_max_diff": 0.0, "outside_max_diff_norm": 0.0}
    md = dist_outside_cached(mask, band + 2, cache)
    if md is None:
        far = changed
    else:
        dist, (x0, y0, x1, y1) = md
        far = changed.copy()
        inner = far[y0:y1, x0:x1]
        inner &= dist > band
    n = int(np.count_nonzero(far))
    mx = float(d[far].max()) if n else 0.0
    return {
        "outside_changed_pixels": n,
        "outside_max_diff": mx,
        "outside_max_diff_norm": mx / _scale_of(original),
    }


# ----------------------------------------------------------------------------------------------------------------
# detail and noise
# ----------------------------------------------------------------------------------------------------------------
_IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)


def _luma(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if rgb.shape[2] == 3 else rgb[:, :, 0]


class _HF:
    """High-frequency responses of one grey image (float32 [0, 1]): 3x3 Laplacian, Immerkær response, Sobel
    gradient magnitude, evaluated only at the pixels asked for (a gather of their 3x3 neighbourhoods; border
    pixels repeat the edge, as OpenCV's BORDER_REFLECT), so a region spread thinly over a large crop costs its
    own pixels, not the crop's."""

    def __init__(self, gray: np.ndarray):
        self.g = np.ascontiguousarray(gray, dtype=np.float32)

    def _at(self, region: np.ndarray | tuple[np.ndarray, np.ndarray], what: str) -> tuple[np.ndarray, ...]:
        g = self.g
        h, w = g.shape
        ys, xs = region if isinstance(region, tuple) else np.nonzero(region)
        yl, yh = np.maximum(ys - 1, 0), np.minimum(ys + 1, h - 1)
        xl, xh = np.maximum(xs - 1, 0), np.minimum(xs + 1, w - 1)
        c, n, s, wv, e = g[ys, xs], g[yl, xs], g[yh, xs], g[ys, xl], g[ys, xh]
        cross = n + s + wv + e
        if what == "lap":
            return (cross - 4.0 * c,)
        nw, ne, sw, se = g[yl, xl], g[yl, xh], g[yh, xl], g[yh, xh]
        resp = (nw + ne + sw + se) - 2.0 * cross + 4.0 * c
        gx = (ne + 2.0 * e + se) - (nw + 2.0 * wv + sw)
        gy = (sw + 2.0 * s + se) - (nw + 2.0 * n + ne)
        return resp, np.sqrt(gx * gx + gy * gy)

    def noise(self, region: np.ndarray | tuple[np.ndarray, np.ndarray]) -> float:
        h, w = self.g.shape
        ys, xs = region if isinstance(region, tuple) else np.nonzero(region)
        keep = (ys > 0) & (ys < h - 1) & (xs > 0) & (xs < w - 1)  # no border pixels
        if not keep.any():
            return float("nan")
        resp, m = self._at((ys[keep], xs[keep]), "noise")
        r = np.abs(resp)
        flat = m <= np.median(m)
        if np.count_nonzero(flat) >= 16:
            r = r[flat]
        # trimmed mean of |response| below its 90th percentile (continuous even on 8-bit data, unlike a
        # median); for Gaussian noise it equals 0.6574 x the response's sigma
        q = np.percentile(r, 90)
        kept = r[r <= q]
        t = float(kept.mean()) if kept.size else 0.0
        return t / 0.6574 / 6.0

    def detail(self, region: np.ndarray | tuple[np.ndarray, np.ndarray]) -> float:
        ys, xs = region if isinstance(region, tuple) else np.nonzero(region)
        if ys.size == 0:
            return float("nan")
        return float(np.mean(np.abs(self._at((ys, xs), "lap")[0])))


def noise_sigma(gray: np.ndarray, region: np.ndarray | None = None) -> float:
    """Robust noise sigma of a float image in [0, 1] over ``region`` (bool), in the image's units.

    Immerkær's (1996) Laplacian-difference operator removes smooth structure; its response to white noise of
    sigma s has sigma 6 s. Edges are excluded (pixels whose Sobel magnitude is above the region's median), and
    the sigma of what remains is taken robustly: the mean absolute response below its 90th percentile, divided
    by 0.6574 (that trimmed mean for a Gaussian) and by 6.
    """
    if region is None:
        region = np.ones(gray.shape, dtype=bool)
    return _HF(np.asarray(gray, np.float32)).noise(region)


def detail_energy(gray: np.ndarray, region: np.ndarray) -> float:
    """High-frequency energy: mean absolute 3x3 Laplacian of ``gray`` over ``region``."""
    return _HF(np.asarray(gray, np.float32)).detail(region)


def grey_float(a: np.ndarray) -> np.ndarray:
    """Luminance (Rec. 601 weights, as OpenCV) of an image as loaded, float32 in [0, 1]."""
    if a.ndim == 3 and a.shape[2] >= 3:
        g = cv2.cvtColor(np.ascontiguousarray(a[:, :, :3]), cv2.COLOR_RGB2GRAY)
    else:
        g = a if a.ndim == 2 else a[:, :, 0]
    scale = _scale_of(a)
    if scale == 1.0:
        return np.asarray(g, np.float32) * np.float32(1.0)
    out = g.astype(np.float32)  # an integer image: one float32 copy, scaled in place (the same values as ``g * s``)
    out *= np.float32(1.0 / scale)
    return out


def inner_and_ring(mask: np.ndarray, band: int, ring_offset: int, ring_width: int, *,
                   dist: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Inside = mask eroded by the band (less if that leaves too little); ring = a band of ``ring_width`` px
    starting ``ring_offset`` px outside the mask. Both bool, same shape as ``mask`` (give a crop). ``dist``: the
    distance to ``mask`` on this crop when the caller has it (:func:`dist_outside_cached`)."""
    area = int(np.count_nonzero(mask))
    patches = _depth_patches(mask)  # the depth map on the tiles that hold the mask (``depth > e`` is 0 elsewhere)
    inner = mask
    for e in (band, band // 2, band // 4, 2):
        if sum(int(np.count_nonzero(d > e)) for _, _, d in patches) >= max(400, 0.05 * area):
            inner = np.zeros(mask.shape, bool)
            for y0, x0, d in patches:
                np.greater(d, e, out=inner[y0 : y0 + d.shape[0], x0 : x0 + d.shape[1]])
            break
    if dist is None:
        dist = _dist_outside(mask)
    ring = (dist > ring_offset) & (dist <= ring_offset + ring_width)
    return inner, ring


def _nonzero(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.nonzero`` of a 2-D bool array (row-major order, int64 indices), through OpenCV's ``findNonZero`` when
    under 1% of a large crop is set (several times faster there; slower on dense arrays)."""
    if b.ndim != 2 or b.dtype != bool or b.size < 65536 or np.count_nonzero(b) > 0.01 * b.size:
        ys, xs = np.nonzero(b)
        return ys, xs
    pts = cv2.findNonZero(np.ascontiguousarray(b).view(np.uint8))
    if pts is None:
        z = np.zeros(0, np.int64)
        return z, z.copy()
    pts = pts.reshape(-1, 2)
    return pts[:, 1].astype(np.int64), pts[:, 0].astype(np.int64)


def _thinned_nonzero(region: np.ndarray, max_px: int = 300_000) -> tuple[np.ndarray, np.ndarray]:
    """``_nonzero(_subsample(region, max_px))``: the same indices, in the same order, from the thinning grid's
    pixels only (no full-size copy, no scan of the pixels the grid skips)."""
    n = int(np.count_nonzero(region))
    if n <= max_px:
        return _nonzero(region)
    k = int(math.ceil(math.sqrt(n / max_px)))
    ys, xs = _nonzero(np.ascontiguousarray(region[::k, ::k]))
    return ys * k, xs * k


def _subsample(region: np.ndarray, max_px: int = 300_000) -> np.ndarray:
    """``region`` thinned on a regular grid to at most about ``max_px`` True pixels (for medians)."""
    n = int(np.count_nonzero(region))
    if n <= max_px:
        return region
    k = int(math.ceil(math.sqrt(n / max_px)))
    out = np.zeros_like(region)
    out[::k, ::k] = region[::k, ::k]
    return out


def detail_noise_consistency(
    original: np.ndarray | None,
    edited: np.ndarray,
    mask: np.ndarray,
    band: int,
    *,
    ring_offset: int | None = None,
    exclude: np.ndarray | None = None,
    mask_dist: np.ndarray | None = None,
) -> dict[str, float]:
    """Detail and noise inside the (eroded) mask vs. a ring outside the blend band, on a crop (as loaded).

    ``detail_ratio`` = mean |Laplacian| inside / ring; ``noise_ratio`` = robust noise sigma inside / ring
    (:func:`noise_sigma`), both on the luminance. Both are about 1 for an edit with the surroundings'
    sharpness and grain, < 1 for a blurred or over-smoothed patch, > 1 for over-sharpening or extra noise.
    With ``original``, ``detail_ratio_original`` and ``noise_ratio_original`` compare the edit's inside with
    the original's inside (what was there before). ``exclude`` (bool, same crop): other edited pixels, kept
    ``band`` px out of the ring. ``mask_dist`` (float32, same crop): the distance to ``mask`` when the caller has
    it (:func:`dist_outside_cached`), else computed here.

    The same content's own sensitivity to blur gives the references: ``detail_ratio_ring_reference`` is the ring's
    detail after a Gaussian blur of :data:`REFERENCE_BLUR_SIGMA` px (rounded to the image's depth, as a delivered
    image is) over the ring's own; ``detail_ratio_reference`` the same for the original's inside. How much of its
    detail a blur removes depends on the content (a tack-sharp photo loses a third of its finest octave to a sigma
    0.5 px blur, bokeh nothing to sigma 1.5): an edit that kept more detail than that blur would leave is no blurrier
    than a 1-px blur of it. ``noise_original`` is the original's own grain inside (image units).
    """
    if ring_offset is None:
        ring_offset = band
    ring_width = max(24, band)
    inner, ring = inner_and_ring(mask, band, ring_offset, ring_width, dist=mask_dist)
    if exclude is not None and exclude.any():  # other edits nearby are not "the surroundings"
        ring &= _dist_outside(exclude) > band
    nan = float("nan")
    if not inner.any() or not ring.any():
        return {"detail_ratio": nan, "noise_ratio": nan, "detail_ratio_original": nan, "noise_ratio_original": nan}
    inner_s, ring_s = _thinned_nonzero(inner), _thinned_nonzero(ring)  # indices, gathered once
    # below about half an 8-bit level, grain and detail are invisible: floors keep the ratios of a flat sky
    # (JPEG-smoothed, sigma ~0) from exploding
    floor_d, floor_n = _DETAIL_FLOOR, _NOISE_FLOOR
    hf = _HF(grey_float(edited))
    d_in, d_out = hf.detail(inner_s), hf.detail(ring_s)
    n_in, n_out = hf.noise(inner_s), hf.noise(ring_s)
    out = {
        "detail_ratio": (d_in + floor_d) / (d_out + floor_d),
        "noise_ratio": (n_in + floor_n) / (n_out + floor_n),
        "detail_inside": d_in,
        "detail_ring": d_out,
        "noise_sigma_inside": n_in,
        "noise_sigma_ring": n_out,
        "detail_ratio_ring_reference": (_HF(grey_float(_reference_blur(edited))).detail(ring_s) + floor_d)
        / (d_out + floor_d),
    }
    if original is not None:
        hf0 = _HF(grey_float(original))
        d0, n0 = hf0.detail(inner_s), hf0.noise(inner_s)
        hfr = _HF(grey_float(_reference_blur(original)))
        out["detail_ratio_original"] = (d_in + floor_d) / (d0 + floor_d)
        out["noise_ratio_original"] = (n_in + floor_n) / (n0 + floor_n)
        out["detail_ratio_reference"] = (hfr.detail(inner_s) + floor_d) / (d0 + floor_d)
        out["detail_original"] = d0
        out["noise_original"] = n0
        # the next octave: the 3x3 Laplacian on the luminance shrunk by 2 (area averaging). A blur of sigma
        # 0.5 px (invisible at 1:1, as a re-encode) lowers the finest octave only; sigma 1.5 lowers this one too
        h2, w2 = inner.shape[0] // 2, inner.shape[1] // 2
        if h2 >= 3 and w2 >= 3:
            inner2 = _thinned_nonzero(inner[: 2 * h2 : 2, : 2 * w2 : 2])
            if inner2[0].size:
                def half(g: np.ndarray) -> np.ndarray:
                    return cv2.resize(g[: 2 * h2, : 2 * w2], (w2, h2), interpolation=cv2.INTER_AREA)

                c_in, c0 = _HF(half(hf.g)).detail(inner2), _HF(half(hf0.g)).detail(inner2)
                out["detail_ratio_coarse_original"] = (c_in + floor_d) / (c0 + floor_d)
    return out


def _reference_blur(a: np.ndarray, sigma: float = REFERENCE_BLUR_SIGMA) -> np.ndarray:
    """``a`` (a crop as loaded) blurred by a Gaussian of ``sigma`` px and rounded back to its dtype (OpenCV does
    both for integer images), so the reference carries the same quantisation as a delivered edit."""
    a = np.ascontiguousarray(a if a.ndim == 2 else a[:, :, : min(3, a.shape[2])])
    return cv2.GaussianBlur(a, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


# ----------------------------------------------------------------------------------------------------------------
# contour sampling
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Contour:
    """Points along the mask contour (full-image x, y), outward unit normals and segment ids."""

    points: np.ndarray  # (N, 2) float32, x, y
    normals: np.ndarray  # (N, 2) float32
    segments: np.ndarray  # (N,) int
    n_segments: int


def sample_contour(mask: np.ndarray, origin: tuple[int, int], *, step: float = 2.0, segment_px: int = 64) -> Contour:
    """Points every ``step`` px along all contours (outer and holes) of ``mask`` (a crop placed at ``origin``)."""
    m8 = mask.astype(np.uint8)
    contours, _ = cv2.findContours(m8, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    h, w = mask.shape
    pts, seg = _resample_contours([c[:, 0, :] for c in contours if len(c) >= 8], step,
                                  max(2, int(round(segment_px / step))))
    if len(pts) == 0:
        z = np.zeros((0, 2), np.float32)
        return Contour(z, z, np.zeros(0, int), 0)
    xi = np.clip(np.round(pts[:, 0]).astype(int), 0, w - 1)
    yi = np.clip(np.round(pts[:, 1]).astype(int), 0, h - 1)
    # outward normal = minus the gradient of a blurred mask
    gx, gy = _mask_gradient_at(m8, xi, yi)
    nx, ny = -gx, -gy
    norm = np.hypot(nx, ny)
    ok = norm > 1e-6
    nx = np.where(ok, nx / np.maximum(norm, 1e-12), 0.0)
    ny = np.where(ok, ny / np.maximum(norm, 1e-12), 0.0)
    pts = pts[ok]
    seg = seg[ok]
    normals = np.stack([nx[ok], ny[ok]], axis=1).astype(np.float32)
    pts = pts + np.array(origin, np.float32)
    # renumber segments densely
    uniq, seg = np.unique(seg, return_inverse=True)
    return Contour(pts, normals, seg, int(len(uniq)))


def _resample_contours(contours: list[np.ndarray], step: float, per_seg: int) -> tuple[np.ndarray, np.ndarray]:
    """Closed contours ((N_i, 2) int x, y) resampled every ``step`` px of arc length (at least 4 points each),
    all at once (no Python loop over the contours: speckle masks have thousands); returns the (N, 2) float32
    points and (N,) segment ids (segments of ``per_seg`` points, numbered across the contours)."""
    if not contours:
        return np.zeros((0, 2), np.float32), np.zeros(0, int)
    lens = np.array([len(c) for c in contours])
    c = np.concatenate(contours).astype(np.float32)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    nxt = np.arange(len(c)) + 1
    nxt[starts + lens - 1] = starts  # each contour closes on its first point
    dl = np.hypot(*(c[nxt] - c).T)  # float32, as a per-contour resampling would have it
    # arc length at each point (0 at each contour's first point) and each contour's length: a float32 cumulative
    # sum per contour, done row-wise on zero-padded blocks of contours of similar length (the same sums as one
    # np.cumsum per contour, without a Python loop over thousands of contours)
    s = np.zeros(len(c), np.float64)
    total = np.zeros(len(lens), np.float64)
    bucket = np.ceil(np.log2(lens)).astype(int)
    for b in np.unique(bucket):
        ids = np.nonzero(bucket == b)[0]
        width = int(lens[ids].max())
        col = np.arange(width)
        valid = col[None, :] < lens[ids, None]
        idx = np.where(valid, starts[ids, None] + col[None, :], 0)
        block = np.where(valid, dl[idx], np.float32(0)).astype(np.float32)
        cum = np.cumsum(block, axis=1, dtype=np.float32)
        total[ids] = cum[np.arange(len(ids)), lens[ids] - 1]
        prev = np.concatenate([np.zeros((len(ids), 1), np.float32), cum[:, :-1]], axis=1)
        s[idx[valid]] = prev[valid]
    c = c.astype(np.float64)
    n = np.maximum(4, np.floor_divide(total, step).astype(int))
    cid = np.repeat(np.arange(len(lens)), n)
    first = np.concatenate([[0], np.cumsum(n)[:-1]])
    k = np.arange(int(n.sum())) - np.repeat(first, n)
    t = k * np.repeat(total / n, n)
    # the segment each sample falls on: search in (contour id, arc length) order
    key_pts = np.repeat(np.arange(len(lens)), lens) * (total.max() + 2.0) + s
    key_t = cid * (total.max() + 2.0) + t
    j = np.clip(np.searchsorted(key_pts, key_t, side="right") - 1, 0, len(c) - 1)
    dlj = np.maximum(dl[j].astype(np.float64), 1e-12)
    p = (c[nxt[j]] - c[j]) / dlj[:, None] * (t - s[j])[:, None] + c[j]  # as np.interp computes it
    nseg = np.maximum(1, np.rint(n / per_seg).astype(int))
    seg_base = np.concatenate([[0], np.cumsum(nseg)[:-1]])
    seg = np.repeat(seg_base, n) + np.minimum((k * np.repeat(nseg, n)) // np.repeat(n, n), np.repeat(nseg - 1, n))
    return p.astype(np.float32), seg.astype(int)


_GRAD_TILE = 64
_GRAD_HALO = 16  # > the Gaussian's radius (12 px at sigma 3) + the Sobel's (1 px)


def _mask_gradient_at(m8: np.ndarray, xi: np.ndarray, yi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sobel gradient (x, y) of the mask blurred by a Gaussian of sigma 3 px, at pixels (``xi``, ``yi``).

    The same values as blurring and differentiating the whole crop, computed only on boxes around the points
    (:func:`_point_boxes`: per cluster of points or per ``_GRAD_TILE`` px tile, with a ``_GRAD_HALO`` px halo,
    clipped at the crop's edges, where the border rule is the whole crop's): a mask of scattered spots over a large
    crop costs its spots' boxes."""
    h, w = m8.shape
    gx = np.zeros(len(xi), np.float32)
    gy = np.zeros(len(xi), np.float32)
    if len(xi) == 0:
        return gx, gy
    for idx, (x0, y0, x1, y1) in _point_boxes(np.stack([xi, yi], 1), w, h, _GRAD_HALO, _GRAD_TILE):
        blur = cv2.GaussianBlur(m8[y0:y1, x0:x1].astype(np.float32), (0, 0), 3.0)
        py, px = yi[idx] - y0, xi[idx] - x0
        gx[idx] = cv2.Sobel(blur, cv2.CV_32F, 1, 0, ksize=3)[py, px]
        gy[idx] = cv2.Sobel(blur, cv2.CV_32F, 0, 1, ksize=3)[py, px]
    return gx, gy


_REMAP_ROW = 8192


def _sample(img: np.ndarray, xy: np.ndarray, q: float) -> np.ndarray:
    """Bilinear samples of ``img`` (a 1/q-scale image) at full-resolution positions ``xy`` (N, 2)."""
    n = len(xy)
    if n == 0:
        return np.zeros((0, img.shape[2] if img.ndim == 3 else 1), img.dtype)
    # cv2.remap maps must be under 32767 px per side: lay the points out as rows of _REMAP_ROW samples
    cols = min(n, _REMAP_ROW)
    rows = -(-n // cols)
    xs = np.zeros(rows * cols, np.float32)
    ys = np.zeros(rows * cols, np.float32)
    xs[:n] = (xy[:, 0] + 0.5) / q - 0.5
    ys[:n] = (xy[:, 1] + 0.5) / q - 0.5
    parts = []
    for r0 in range(0, rows, _REMAP_ROW):  # and at most _REMAP_ROW rows per call
        r1 = min(rows, r0 + _REMAP_ROW)
        parts.append(cv2.remap(img, xs[r0 * cols : r1 * cols].reshape(r1 - r0, cols),
                               ys[r0 * cols : r1 * cols].reshape(r1 - r0, cols), cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT).reshape(((r1 - r0) * cols, -1)))
    out = np.concatenate(parts) if len(parts) > 1 else parts[0]
    return out[:n]


_LP_TILE = 48
_LP_CELL = 16  # the squares whose 8-connected groups make one cluster of points (:func:`_filtered_at`)


def _point_boxes(xy: np.ndarray, w: int, h: int, halo: int, tile: int, q: int = 1
                 ) -> list[tuple[np.ndarray, tuple[int, int, int, int]]]:
    """Boxes (x0, y0, x1, y1) on a ``w`` x ``h`` image around the points ``xy`` (N, 2: x, y; float or int) with a
    ``halo`` px margin, each with the indices of the points it serves: one box around all points when that costs
    no more than tiling them, else one per cluster of points (the 8-connected groups of ``_LP_CELL`` px squares
    that hold points: a dust spot's samples) or, where a cluster's box would cost more than its tiles, one per
    ``tile``-px tile that holds points (tile plus halo). Box corners are at multiples of ``q``. Every point lies at
    least ``halo`` px inside its box, except where the box meets the image's edge."""
    n = len(xy)
    ntx = (w - 1) // tile + 1
    fx, fy = np.floor(xy[:, 0]).astype(np.int64), np.floor(xy[:, 1]).astype(np.int64)
    key = np.clip(fy // tile, 0, (h - 1) // tile) * ntx + np.clip(fx // tile, 0, ntx - 1)
    tile_cost = (tile + 2 * halo + 1) ** 2

    def box_of(idx: np.ndarray | slice) -> tuple[int, int, int, int]:
        x, y = fx[idx], fy[idx]
        return (max(0, (int(x.min()) - halo) // q * q), max(0, (int(y.min()) - halo) // q * q),
                min(w, int(np.ceil(xy[idx, 0].max())) + 2 + halo), min(h, int(np.ceil(xy[idx, 1].max())) + 2 + halo))

    def area(b: tuple[int, int, int, int]) -> int:
        return (b[2] - b[0]) * (b[3] - b[1])

    # a compact set of points (a large region's contour band): one box costs less than tiles
    box = box_of(slice(None))
    n_tiles = len(np.unique(key))
    if n_tiles * tile_cost >= area(box):
        return [(np.arange(n), box)]
    out = []
    cell = _LP_CELL
    ncx, ncy = (w - 1) // cell + 1, (h - 1) // cell + 1
    cx, cy = np.clip(fx // cell, 0, ncx - 1), np.clip(fy // cell, 0, ncy - 1)
    grid = np.zeros((ncy, ncx), np.uint8)
    grid[cy, cx] = 1
    ncl, labels = cv2.connectedComponents(grid, connectivity=8, ltype=cv2.CV_32S)
    cid = (labels[cy, cx] - 1).astype(np.int64)
    if ncl - 1 > n_tiles:  # more clusters than tiles (many tiny spots): tiles, several spots a call
        cid[:] = 0
    # each cluster's tiles (the cost of tiling it)
    kmax = int(key.max()) + 1
    tiles_of = np.bincount(np.unique(cid * kmax + key) // kmax, minlength=max(1, ncl - 1))
    order = np.argsort(cid, kind="stable")
    starts = np.r_[0, np.flatnonzero(np.diff(cid[order])) + 1]
    # every cluster's box at once (as box_of computes it)
    cx0 = np.maximum(0, (np.minimum.reduceat(fx[order], starts) - halo) // q * q)
    cy0 = np.maximum(0, (np.minimum.reduceat(fy[order], starts) - halo) // q * q)
    cx1 = np.minimum(w, np.ceil(np.maximum.reduceat(xy[order, 0], starts)).astype(np.int64) + 2 + halo)
    cy1 = np.minimum(h, np.ceil(np.maximum.reduceat(xy[order, 1], starts)).astype(np.int64) + 2 + halo)
    boxed = (cx1 - cx0) * (cy1 - cy0) <= tiles_of[cid[order[starts]]] * tile_cost
    tiled: list[np.ndarray] = []
    for k, (a, b) in enumerate(zip(starts, np.r_[starts[1:], n])):
        if boxed[k]:
            out.append((order[a:b], (int(cx0[k]), int(cy0[k]), int(cx1[k]), int(cy1[k]))))
        else:
            tiled.append(order[a:b])
    if tiled:
        rest = np.concatenate(tiled)
        order = rest[np.argsort(key[rest], kind="stable")]
        ks = key[order]
        cuts = np.flatnonzero(np.diff(ks)) + 1
        for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(order)]):
            ty, tx = divmod(int(ks[a]), ntx)
            x0, y0 = max(0, tx * tile - halo), max(0, ty * tile - halo)
            out.append((order[a:b], (x0, y0, min(w, (tx + 1) * tile + 1 + halo), min(h, (ty + 1) * tile + 1 + halo))))
    return out


def _filtered_at(img: np.ndarray, fn: Any, halo: int, xy: np.ndarray, *, tile: int = _LP_TILE, q: int = 1
                 ) -> np.ndarray:
    """Bilinear samples at full-image positions ``xy`` (N, 2: x, y) of ``fn(img)``, where ``fn`` is a local filter
    (reaching at most ``halo`` px, with reflected borders, returning H x W [x C] float32 -- or, with ``q > 1``, an
    image ``q`` times smaller: boxes are then cut at multiples of ``q``), computed only on boxes around the points
    (:func:`_point_boxes`: their bounding box when compact, else per cluster of points or per ``tile``-px tile).
    The same values as ``fn`` on the whole image up to float rounding (a local filter's value away from a box's
    edge does not depend on the box), at a cost that follows the points, not the image: a mask of scattered dust
    spots no longer costs whole-image filters. Returns (N, C) float32."""
    h, w = img.shape[:2]
    halo = -(-halo // q) * q
    tile = -(-tile // q) * q
    if q > 1:
        h, w = h - h % q, w - w % q
    n = len(xy)
    if n == 0:
        return np.zeros((0, 1), np.float32)
    out: np.ndarray | None = None
    for idx, (x0, y0, x1, y1) in _point_boxes(xy, w, h, halo, tile, q):
        x1, y1 = x1 - (x1 - x0) % q, y1 - (y1 - y0) % q  # whole q x q blocks
        sub = fn(img[y0:y1, x0:x1])
        v = _sample(sub if sub.ndim == 3 else sub[:, :, None], xy[idx] - np.array([x0, y0], np.float32), float(q))
        if len(idx) == n:
            return v
        if out is None:
            out = np.empty((n, v.shape[1]), np.float32)
        out[idx] = v
    return out if out is not None else np.zeros((0, 1), np.float32)


def _luma_lowpass(sigma: float) -> Any:
    """A tile filter for :func:`_filtered_at`: the luminance in 8-bit levels, Gaussian-blurred by ``sigma`` px."""
    def fn(a: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(_luma_levels(a), (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    return fn


def _lab_lowpass(sigma: float, q: int = 1) -> Any:
    """A tile filter for :func:`_filtered_at`: shrunk ``q`` times (area averaging), CIE Lab (float32),
    Gaussian-blurred by ``sigma`` full-resolution px."""
    def fn(a: np.ndarray) -> np.ndarray:
        a = np.ascontiguousarray(a if a.ndim == 2 else a[:, :, : min(3, a.shape[2])])
        if q > 1:
            a = cv2.resize(a, (a.shape[1] // q, a.shape[0] // q), interpolation=cv2.INTER_AREA)
        return cv2.GaussianBlur(rgb_to_lab(colour_channels(a)), (0, 0), sigma / q, borderType=cv2.BORDER_REFLECT)
    return fn


def _halo(sigma: float) -> int:
    return int(math.ceil(4.0 * sigma)) + 2


# ----------------------------------------------------------------------------------------------------------------
# seam visibility
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class SeamResult:
    """What :func:`seam_visibility` measured."""

    seam_score: float
    scale_z: dict[str, float]
    scale_stat: dict[str, float]
    null_placements: int
    worst_places: list[tuple[int, int, float]]
    segment_scores: np.ndarray = field(repr=False)
    contour_points: int = 0
    notes: list[str] = field(default_factory=list)
    #: the highest segment score on the null placements (each standardised as the contour's): the worst stretch
    #: the scene itself shows along copies of this contour; nan without placements
    local_null: float = float("nan")
    #: with the original: the largest increase of a segment's score over the original's on the same segment
    #: (what the edit added to the worst stretch); nan without the original
    local_added: float = float("nan")


class _Pyramid:
    """The edited image low-passed per seam scale, computed lazily.

    The finest scale (``d = 2``) is the full-resolution luminance (x100, Lab-L-like units) blurred with
    sigma 1 px: one channel keeps a 4K image fast. Coarser scales are the image shrunk by ``d/2`` (area
    averaging on the stored integers), converted to CIE Lab and blurred with sigma 1 px.
    """

    def __init__(self, image: np.ndarray):
        self.image = image if image.ndim == 3 else image[:, :, None]
        self.levels: dict[int, tuple[np.ndarray, float]] = {}
        self.smalls: dict[int, np.ndarray] = {}

    def _colour(self, a: np.ndarray) -> np.ndarray:
        return colour_channels(a)

    def _small(self, q: int) -> np.ndarray:
        """The colour image shrunk by ``q`` (area averaging), built from the nearest smaller factor."""
        if q not in self.smalls:
            src_q = max((k for k in self.smalls if q % k == 0), default=1)
            src = self.smalls.get(src_q)
            if src is None:
                src = np.ascontiguousarray(self.image[:, :, : min(3, self.image.shape[2])])
            h, w = self.image.shape[:2]
            self.smalls[q] = cv2.resize(src, (max(1, round(w / q)), max(1, round(h / q))), interpolation=cv2.INTER_AREA)
        return self.smalls[q]

    def level(self, d: int) -> tuple[np.ndarray, float]:
        if d not in self.levels:
            q = max(1, d // 2)
            img = self.image
            h, w = img.shape[:2]
            if q == 1:
                c = img.shape[2]
                if c >= 3:
                    g = cv2.cvtColor(np.ascontiguousarray(img[:, :, :3]), cv2.COLOR_RGB2GRAY)
                else:
                    g = np.ascontiguousarray(img[:, :, 0])
                gf = g.astype(np.float32)
                gf *= np.float32(100.0 / _scale_of(img))  # in place: the same values as ``g * s``, one copy less
                lab = cv2.GaussianBlur(gf, (0, 0), 1.0, borderType=cv2.BORDER_REFLECT)[:, :, None]
                qx = 1.0
            else:
                small = self._small(q)
                qx = w / small.shape[1]
                lab = rgb_to_lab(self._colour(small))
                lab = cv2.GaussianBlur(lab, (0, 0), 1.0, borderType=cv2.BORDER_REFLECT)
            if lab.ndim == 2:
                lab = lab[:, :, None]
            self.levels[d] = (lab, qx)
        return self.levels[d]


def _contrast_stats(
    lab: np.ndarray, q: float, pts: np.ndarray, nrm: np.ndarray, d: float, seg: np.ndarray, nseg: int
) -> tuple[np.ndarray, np.ndarray]:
    """The two seam statistics of one scale, over the whole contour and per segment.

    ``ratio``: ``log((mean c + eps) / (mean r + eps))`` with the across (``c``) and beside (``r``) contrasts of
    the module docstring: any discontinuity (paste seam, halo, hard step). ``coherence``:
    ``|mean (S(p - d n) - S(p + d n))| / (mean |S(p - d n) - S(p + d n)| + eps)``, the part of the contrast across
    the contour that has the same sign (Lab direction) all along it: a tone or colour step, even a faint or
    feathered one, while natural texture averages out. Returns (global[2], per_segment[2, nseg]).
    """
    offs = np.array([-3.0, -1.0, 1.0, 3.0], np.float32) * d
    xy = (pts[None, :, :] + offs[:, None, None] * nrm[None, :, :]).reshape(-1, 2)
    s = _sample(lab, xy, q).reshape(4, len(pts), -1).astype(np.float64)
    if s.shape[2] > 3:  # cv2.remap keeps at most 4 channels; never more than Lab here
        s = s[:, :, :3]
    delta = s[1] - s[2]  # inner minus outer
    c = np.linalg.norm(delta, axis=1)
    r = 0.5 * (np.linalg.norm(s[3] - s[2], axis=1) + np.linalg.norm(s[1] - s[0], axis=1))
    g = np.empty(2)
    g[0] = np.log((c.mean() + _EPS_LAB) / (r.mean() + _EPS_LAB))
    g[1] = np.linalg.norm(delta.mean(axis=0)) / (c.mean() + _EPS_LAB)
    cnt = np.bincount(seg, minlength=nseg).astype(np.float64)
    den = np.maximum(cnt, 1)
    cs = np.bincount(seg, weights=c, minlength=nseg) / den
    rs = np.bincount(seg, weights=r, minlength=nseg) / den
    dm = np.stack([np.bincount(seg, weights=delta[:, i], minlength=nseg) for i in range(delta.shape[1])], 1)
    dm /= den[:, None]
    per = np.empty((2, nseg))
    per[0] = np.log((cs + _EPS_LAB) / (rs + _EPS_LAB))
    per[1] = np.linalg.norm(dm, axis=1) / (cs + _EPS_LAB)
    per[:, cnt < 3] = np.nan
    return g, per


def _forbidden_distance(mask: np.ndarray, band: int, extra: np.ndarray | None, f: int) -> tuple[np.ndarray, int]:
    """Distance (full-res px, computed at 1/f scale) from the edited zone (mask + band, plus ``extra``)."""
    h, w = mask.shape
    hs, ws = max(1, h // f), max(1, w // f)
    zone = mask if extra is None else (mask | extra)
    # x255 so that a single changed pixel in an f x f block still averages above 0
    small = cv2.resize(zone.astype(np.uint8) * 255, (ws, hs), interpolation=cv2.INTER_AREA) > 0
    dist = cv2.distanceTransform((~small).astype(np.uint8), cv2.DIST_L2, 5) * f - band - f
    return dist, f


def _choose_placements(
    contour: Contour,
    dist: np.ndarray,
    f: int,
    shape: tuple[int, int],
    reach: float,
    n_wanted: int,
    rng: np.random.Generator,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Offsets that move the contour onto untouched image parts; returns (offset, valid point mask) pairs."""
    h, w = shape
    pts = contour.points
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    bw, bh = x1 - x0, y1 - y0
    # allow the shape to stick half out of the image when it is big
    lo_x, hi_x = -x0 - 0.5 * bw, (w - 1) - x1 + 0.5 * bw
    lo_y, hi_y = -y0 - 0.5 * bh, (h - 1) - y1 + 0.5 * bh
    sub = pts[:: max(1, len(pts) // 200)]
    cand = np.stack([rng.uniform(lo_x, hi_x, 600), rng.uniform(lo_y, hi_y, 600)], axis=1).astype(np.float32)
    hs, ws = dist.shape

    def valid_of(p: np.ndarray) -> np.ndarray:
        inside = (p[:, 0] >= reach) & (p[:, 0] < w - 1 - reach) & (p[:, 1] >= reach) & (p[:, 1] < h - 1 - reach)
        xi = np.clip((p[:, 0] / f).astype(int), 0, ws - 1)
        yi = np.clip((p[:, 1] / f).astype(int), 0, hs - 1)
        return inside & (dist[yi, xi] > reach)

    allp = (sub[None, :, :] + cand[:, None, :]).reshape(-1, 2)
    fracs = valid_of(allp).reshape(len(cand), len(sub)).mean(axis=1)
    min_sep = 0.15 * math.hypot(bw, bh) + 8
    chosen: list[tuple[np.ndarray, np.ndarray]] = []
    for need in (0.8, 0.5, 0.3):
        order = np.argsort(-fracs + rng.uniform(0, 0.05, len(fracs)))
        for i in order:
            if fracs[i] < need or len(chosen) >= n_wanted:
                continue
            o = cand[i]
            if any(np.hypot(*(o - c[0])) < min_sep for c in chosen):
                continue
            v = valid_of(pts + o)
            if v.sum() >= max(min(20, len(pts)), 0.3 * len(pts)):
                chosen.append((o, v))
        if len(chosen) >= max(8, n_wanted // 2):
            break
    return chosen


def _scale_z(pyr: _Pyramid, contour: Contour, placements_by_scale: dict[int, list], used: tuple[int, ...],
             pyr0: _Pyramid | None = None
             ) -> tuple[dict[str, float], dict[str, float], np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Per seam scale, the two statistics on the contour standardised against its null placements: the z-scores
    (``|z|`` for the ratio), the raw statistics and signed z's, the null placements' own z-scores (rows:
    placements), the per-segment z-scores (rows: statistics) and each null placement's own worst segment score
    (the same standardisation; row j mixes the j-th placement of each scale, as the z-scores do) and, with
    ``pyr0`` (the original's pyramid), the per-segment z-scores of the original on the same contour, standardised
    the same way (the placements lie on untouched pixels, the same in both); fixed spreads when a scale has no
    placement."""
    zs: dict[str, float] = {}
    stats: dict[str, float] = {}
    n_stat = 2 * len(used)
    n_pl = max(len(v) for v in placements_by_scale.values())
    null_z = np.full((n_pl, n_stat), np.nan)
    seg_z = np.full((n_stat, contour.n_segments), np.nan)
    seg_z0 = np.full((n_stat, contour.n_segments), np.nan) if pyr0 is not None else None
    null_seg_max = np.full(n_pl, -np.inf)
    floors = (_NULL_STD_FLOOR, _COH_STD_FLOOR)
    seg_floors = (_SEG_STD_FLOOR, _SEG_COH_STD_FLOOR)
    for k, d in enumerate(used):
        placements = placements_by_scale[d]
        lab, q = pyr.level(d)
        g, per = _contrast_stats(lab, q, contour.points, contour.normals, float(d), contour.segments,
                                 contour.n_segments)
        if pyr0 is not None:
            lab0, q0 = pyr0.level(d)
            per0 = _contrast_stats(lab0, q0, contour.points, contour.normals, float(d), contour.segments,
                                   contour.n_segments)[1]
        null_g = np.full((len(placements), 2), np.nan)
        null_per = []
        for j, (o, v) in enumerate(placements):
            gn, pn = _contrast_stats(lab, q, contour.points[v] + o, contour.normals[v], float(d),
                                     contour.segments[v], contour.n_segments)
            null_g[j] = gn
            null_per.append(pn)
        for i, name in enumerate(("ratio", "coherence")):
            key = f"{name}_d{d}"
            stats[key] = float(g[i])
            if placements:
                ns = null_g[:, i]
                med = float(np.median(ns))
                sd = max(float(np.std(ns)), 1.4826 * float(np.median(np.abs(ns - med))), floors[i])
                allseg = np.concatenate([pn[i] for pn in null_per])
                allseg = allseg[np.isfinite(allseg)]
                smed = float(np.median(allseg)) if allseg.size else 0.0
                ssd = max(float(np.std(allseg)) if allseg.size else 0.0, seg_floors[i])
                zn = (ns - med) / sd
                null_z[: len(ns), 2 * k + i] = np.abs(zn) if name == "ratio" else zn
            else:  # no untouched room: fall back to the spreads measured on photos (docs/quality.md)
                med, sd = _FALLBACK_NULL[i]
                smed, ssd = _FALLBACK_SEG[i]
            # ratio: too much contrast across the contour (step, paste seam) and too little (a smeared band, a
            # halo beside the contour) are both visible, so its |z| counts; coherence is one-sided by nature
            z = (float(g[i]) - med) / sd
            zs[key] = abs(z) if name == "ratio" else z
            sz = (per[i] - smed) / ssd
            seg_z[2 * k + i] = np.abs(sz) if name == "ratio" else sz
            if seg_z0 is not None:
                sz0 = (per0[i] - smed) / ssd
                seg_z0[2 * k + i] = np.abs(sz0) if name == "ratio" else sz0
            stats[f"{key}_signed_z"] = z
            for j, pn in enumerate(null_per):  # each copy's own worst stretch, scored the same way
                nz = (pn[i] - smed) / ssd
                nz = np.abs(nz) if name == "ratio" else nz
                if np.isfinite(nz).any():
                    null_seg_max[j] = max(null_seg_max[j], float(np.nanmax(nz)))
    null_seg_max[~np.isfinite(null_seg_max)] = np.nan
    return zs, stats, null_z, seg_z, null_seg_max, seg_z0


def _worst_places(contour: Contour, seg_scores: np.ndarray, segment_px: int, n_worst: int
                  ) -> list[tuple[int, int, float]]:
    """The highest segment scores, their centres at least a segment apart: (x, y, score), worst first."""
    centres = np.zeros((contour.n_segments, 2))
    cnt = np.bincount(contour.segments, minlength=contour.n_segments)
    for ax in range(2):
        centres[:, ax] = np.bincount(contour.segments, weights=contour.points[:, ax], minlength=contour.n_segments)
    centres /= np.maximum(cnt, 1)[:, None]
    worst: list[tuple[int, int, float]] = []
    order = np.argsort(-np.nan_to_num(seg_scores, nan=-np.inf))
    for i in order:
        if len(worst) >= n_worst or not np.isfinite(seg_scores[i]):
            break
        cx, cy = centres[i]
        if any(math.hypot(cx - a, cy - b) < segment_px for a, b, _ in worst):
            continue
        worst.append((int(round(cx)), int(round(cy)), round(float(seg_scores[i]), 3)))
    return worst


def seam_visibility(
    edited: np.ndarray,
    mask: np.ndarray,
    band: int,
    *,
    forbidden: np.ndarray | None = None,
    n_null: int = 24,
    seed: int = 0,
    scales: tuple[int, ...] = SEAM_SCALES,
    segment_px: int | None = None,
    n_worst: int = 6,
    cache: dict[str, Any] | None = None,
    max_points: int = 40_000,
    original: np.ndarray | None = None,
) -> SeamResult:
    """Seam visibility of the mask contour on ``edited`` (the full edited image, as loaded).

    For each scale ``d`` in ``scales`` (px, kept if ``d <= band``; the image is low-passed by about ``d/2``),
    two statistics (:func:`_contrast_stats`: the contrast ratio across/beside the contour and the coherence of
    the step across it) are computed on the contour and on up to ``n_null`` translated copies that fall on
    untouched pixels (every sample, plus the low-pass reach, at least ``4.5 d + 2`` px from the mask and from
    ``forbidden``, the changed pixels). Each becomes ``z = (stat - median(null)) / max(std, 1.4826 MAD, floor)``
    (``|z|`` for the ratio, which is visible both ways); the seam score is the largest z minus the median of
    the same maximum over the null placements, so an unedited contour scores about 0 and a visible seam scores
    high. Per-segment scores (segments of ``segment_px`` px, default ``max(48, 2 band)``) are standardised
    against all segments of the null placements, and the ``n_worst`` highest, at least a segment apart, are
    the worst places. A scale with fewer than 4 placements is skipped; with none at all, fixed spreads are used.

    ``cache`` (a dict kept by the caller) shares the low-passed pyramid and the distance map from ``forbidden``
    between calls on the same image (one call per region); pass the same ``forbidden`` to every call that shares
    it. Contours longer than ``2 max_points`` px are sampled more sparsely (at most ``max_points`` points), so
    masks with millions of contour pixels cost about as much as a large ellipse. With ``original`` (the image
    before the edit, as loaded), each segment is also scored on the original, standardised the same way, and
    ``local_added`` is the largest increase the edit made to a segment's score (an edge of the scene that runs
    along the outline scores as high before as after).
    """
    h, w = mask.shape
    scales = tuple(d for d in scales if d <= max(2, band)) or (2,)
    bb = mask_bbox(mask)
    if bb is None:
        return SeamResult(0.0, {}, {}, 0, [], np.zeros(0), 0, ["empty mask"])
    if segment_px is None:
        segment_px = max(48, 2 * band)
    notes: list[str] = []
    x0, y0, x1, y1 = _crop_box(mask.shape, bb, 4)
    sub = mask[y0:y1, x0:x1]
    step = 2.0
    perim = float(np.count_nonzero(sub ^ cv2.erode(sub.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)))
    if perim > 2 * max_points:
        step = perim / max_points
        notes.append(f"long contour ({int(perim)} px): sampled every {step:.1f} px")
    contour = sample_contour(sub, (x0, y0), step=step, segment_px=max(segment_px, int(4 * step)))
    # contour points on the image border have no outside: drop them
    p = contour.points
    keep = (p[:, 0] > 1) & (p[:, 0] < w - 2) & (p[:, 1] > 1) & (p[:, 1] < h - 2)
    if not keep.all():
        uniq, seg = np.unique(contour.segments[keep], return_inverse=True)
        contour = Contour(contour.points[keep], contour.normals[keep], seg, len(uniq))
    if len(contour.points) < 8:
        return SeamResult(0.0, {}, {}, 0, [], np.zeros(0), len(contour.points), ["no contour inside the image"])
    f = max(2, int(min(h, w) // 256))
    if cache is not None and "dist" in cache:
        dist, f = cache["dist"]
    else:
        dist, f = _forbidden_distance(mask, 0, forbidden, f)
        if cache is not None:
            cache["dist"] = (dist, f)
    # null placements per scale: the sampled footprint (3d) plus the low-pass reach (1.5d) must stay clear of
    # every edited pixel
    placements_by_scale = {}
    for d in scales:
        rng = np.random.default_rng(seed)
        pl = _choose_placements(contour, dist, f, (h, w), 4.5 * d + 2, n_null, rng)
        if len(pl) >= _NULL_MIN:
            placements_by_scale[d] = pl
    if not placements_by_scale:
        notes.append("no room on untouched pixels for null placements; seam score uses fallback spreads")
        placements_by_scale = {scales[0]: []}
    else:
        dropped = [d for d in scales if d not in placements_by_scale]
        if dropped:
            notes.append(f"scales {dropped} px skipped: no room for their null placements")
    used = tuple(placements_by_scale)
    if cache is not None:
        pyr = cache.setdefault("pyramid", _Pyramid(edited))
    else:
        pyr = _Pyramid(edited)
    pyr0 = None
    if original is not None:
        pyr0 = cache.setdefault("pyramid_original", _Pyramid(original)) if cache is not None else _Pyramid(original)
    zs, stats, null_z, seg_z, null_seg_max, seg_z0 = _scale_z(pyr, contour, placements_by_scale, used, pyr0)
    n_min = min(len(v) for v in placements_by_scale.values())
    if 0 < n_min < 8:
        notes.append(f"only {n_min} null placements on untouched pixels; seam score is approximate")
    zmax = max(zs.values())
    # the same maximum for the null contours (row j mixes the j-th placement of each scale)
    null_max = float(np.nanmedian(np.nanmax(null_z, axis=1))) if np.isfinite(null_z).any() else 1.0
    seam_score = float(zmax - null_max)
    placements = placements_by_scale[used[0]]
    seg_scores = np.nanmax(np.where(np.isfinite(seg_z), seg_z, -np.inf), axis=0)
    seg_scores[~np.isfinite(seg_scores)] = np.nan
    # worst places: highest segment scores, centres at least one segment apart
    worst = _worst_places(contour, seg_scores, segment_px, n_worst)
    # the scene's own worst stretch along copies of this contour (an edge of the scene crossing the contour at a
    # slant scores high on a flat graphic, where such crossings are rare among the segments)
    local_null = float(np.nanmax(null_seg_max)) if np.isfinite(null_seg_max).any() else float("nan")
    local_added = float("nan")
    if seg_z0 is not None:
        # what the edit added to each stretch: its score minus the original's on the same stretch
        seg0 = np.nanmax(np.where(np.isfinite(seg_z0), seg_z0, -np.inf), axis=0)
        added = seg_scores - seg0
        if np.isfinite(added).any():
            local_added = float(np.nanmax(np.where(np.isfinite(added), added, -np.inf)))
    return SeamResult(
        seam_score=seam_score,
        local_null=local_null,
        local_added=local_added,
        scale_z=zs,
        scale_stat=stats,
        null_placements=len(placements),
        worst_places=worst,
        segment_scores=seg_scores,
        contour_points=len(contour.points),
        notes=notes,
    )


# ----------------------------------------------------------------------------------------------------------------
# colour
# ----------------------------------------------------------------------------------------------------------------
def _max_inradius(mask: np.ndarray, bb: tuple[int, int, int, int]) -> float:
    """Largest distance (px) from a mask pixel to the outside: half the mask's thickest width."""
    sub = mask[bb[1] : bb[3], bb[0] : bb[2]]
    k = max(1, min(sub.shape) // 256)
    if k > 1:
        sub = cv2.resize(sub.astype(np.uint8), (max(1, sub.shape[1] // k), max(1, sub.shape[0] // k)),
                         interpolation=cv2.INTER_NEAREST)
    dt = cv2.distanceTransform(np.pad(sub.astype(np.uint8), 1), cv2.DIST_L2, 5)
    return float(dt.max()) * k


def _inradius_upper(mask: np.ndarray, bb: tuple[int, int, int, int], k: int = 4) -> float:
    """An upper bound of the largest distance from a mask pixel to the outside, from the ``k`` x ``k`` blocks wholly
    inside the mask (cheap on a mask of scattered spots over a large box)."""
    sub = mask[bb[1] : bb[3], bb[0] : bb[2]].astype(np.uint8) * 255
    hs, ws = sub.shape[0] // k, sub.shape[1] // k
    if hs < 1 or ws < 1:
        return float(max(sub.shape))
    full = cv2.resize(sub[: hs * k, : ws * k], (ws, hs), interpolation=cv2.INTER_AREA) >= 255
    d = float(cv2.distanceTransform(np.pad(full.astype(np.uint8), 1), cv2.DIST_L2, 5).max()) if full.any() else 0.0
    d *= 1.05  # the 5x5 chamfer distance is within a few % of the Euclidean one
    # a pixel of a full block lies within k / sqrt 2 of its centre, the nearest partial block's centre d k away
    # holds an outside pixel within k / sqrt 2 of it; a pixel in a partial block (or in the remainder rows and
    # columns at the box's edge) lies within k sqrt 2 of the outside
    return max(k * math.sqrt(2.0), k * (d + math.sqrt(2.0)))


@dataclass
class _Sides:
    """Where :func:`tone_step`, :func:`colour_consistency` and :func:`scene_steps` sample: contour points
    (full-image x, y) with both sides inside the image, their outward unit normals, the inner and outer sample
    positions ``D`` px along the normal (full-image), the points' segment ids and the crop box (x0, y0, x1, y1)
    around the mask."""

    points: np.ndarray
    normals: np.ndarray
    inner: np.ndarray
    outer: np.ndarray
    segments: np.ndarray
    n_segments: int
    depth: float
    box: tuple[int, int, int, int]


def _contour_sides_cached(cache: dict[str, Any] | None, mask: np.ndarray, band: int, segment_px: int | None,
                          reach: float) -> _Sides | None:
    """:func:`_contour_sides`, kept in ``cache`` (a dict for this mask) for the next check that asks the same."""
    if cache is None:
        return _contour_sides(mask, band, segment_px, reach)
    key = f"sides {band} {segment_px} {reach}"
    if key not in cache:
        cache[key] = _contour_sides(mask, band, segment_px, reach)
    return cache[key]  # type: ignore[no-any-return]


def _contour_sides(mask: np.ndarray, band: int, segment_px: int | None, reach: float) -> _Sides | None:
    """The contour of ``mask`` every 3 px (segments of ``segment_px``, default ``max(48, 2 band)``) and its inner and
    outer sides at ``D = max(8, band)`` px -- clear of a centred blend band, but at most 0.6 x the mask's largest
    inradius, so a thin mask is not sampled on its far side; points whose samples (or themselves) leave the image
    are dropped. ``reach``: how far past the samples the caller's filter reads (sizes the crop box). None when
    fewer than 4 points remain."""
    h, w = mask.shape
    bb = mask_bbox(mask)
    if bb is None:
        return None
    if segment_px is None:
        segment_px = max(48, 2 * band)
    D = float(max(3.0, min(max(8, band), 0.6 * _max_inradius(mask, bb))))
    x0, y0, x1, y1 = _crop_box(mask.shape, bb, int(D + reach) + 4)
    contour = sample_contour(mask[y0:y1, x0:x1], (x0, y0), step=3.0, segment_px=segment_px)
    p = contour.points
    if len(p) < 4:
        return None
    pin, pout = p - D * contour.normals, p + D * contour.normals

    def inside(q: np.ndarray) -> np.ndarray:
        return (q[:, 0] >= x0) & (q[:, 0] < x1) & (q[:, 1] >= y0) & (q[:, 1] < y1)

    ok = inside(pin) & inside(pout) & (p[:, 0] > 1) & (p[:, 0] < w - 2) & (p[:, 1] > 1) & (p[:, 1] < h - 2)
    if ok.sum() < 4:
        return None
    return _Sides(p[ok], contour.normals[ok], pin[ok], pout[ok], contour.segments[ok], contour.n_segments, D,
                  (x0, y0, x1, y1))


def colour_consistency(
    original: np.ndarray | None,
    edited: np.ndarray,
    mask: np.ndarray,
    band: int,
    *,
    sigma: float = 6.0,
    segment_px: int | None = None,
    cache: dict[str, Any] | None = None,
) -> dict[str, float]:
    """ΔE2000 of the low-passed images (Gaussian, ``sigma`` px) on the inner vs. outer side of the contour.

    ``original`` and ``edited`` are the full images as loaded. Colours are sampled ``D`` px inside and ``D`` px
    outside the contour (``D = max(8, band)``, both sides clear of a centred blend band; at most 0.6 x the
    mask's largest inradius, so a thin mask is not sampled on its far side):

    - ``colour_delta_e``: CIEDE2000 between the mean inner and the mean outer colour of the edit along the whole
      contour. A tone or colour shift of the edit adds up, while natural structure crossing the contour has
      both signs and cancels (a linear gradient cancels exactly on a closed contour); but a contour that
      separates an object from its background measures the object's colour too.
    - ``colour_delta_e_original``: the same inner side compared with the original's inner side (the outer side
      is identical in both): the per-segment Lab shifts (edit - original) are reduced to their median, robust to
      segments where removed content touched the inner side, and ΔE2000 is taken between the original's mean
      inner colour and that colour plus the median shift.
    - ``colour_delta_e_before``: ``colour_delta_e`` of the original (how different its inner side already was).
    - ``colour_delta_e_p90``: 90th percentile of the per-segment inner-vs-outer ΔE of the edit (informational).

    ``cache`` (a dict for this mask) shares the contour and its sample positions with :func:`tone_step`.
    """
    nan = {"colour_delta_e": float("nan"), "colour_delta_e_original": float("nan"), "colour_delta_e_p90": float("nan")}
    sides = _contour_sides_cached(cache, mask, band, segment_px, 12.0)
    if sides is None:
        return nan
    # the low-passed Lab only on tiles around the samples (full-image positions)
    n = len(sides.points)
    both = np.concatenate([sides.inner, sides.outer])
    q = max(1, int(sigma // 3))  # the low-pass on a copy q times smaller (as sharp as it needs to be)
    lp = _lab_lowpass(sigma, q)
    v = _filtered_at(edited, lp, _halo(sigma), both, q=q).astype(np.float64)
    inner, outer = v[:n], v[n:]
    seg, nseg = sides.segments, sides.n_segments
    cnt = np.bincount(seg, minlength=nseg)
    good = cnt >= 3

    def seg_mean(v: np.ndarray) -> np.ndarray:
        m = np.stack([np.bincount(seg, weights=v[:, i], minlength=nseg) for i in range(3)], 1)[good]
        return m / cnt[good, None]

    mi, mo = seg_mean(inner), seg_mean(outer)
    wseg = cnt[good].astype(np.float64)
    out = {
        "colour_delta_e": float(ciede2000(np.average(mi, 0, wseg), np.average(mo, 0, wseg))),
        "colour_delta_e_p90": float(np.percentile(ciede2000(mi, mo), 90)),
        "colour_delta_e_original": float("nan"),
    }
    if original is not None:
        v0 = _filtered_at(original, lp, _halo(sigma), both, q=q).astype(np.float64)
        m0, mo0 = seg_mean(v0[:n]), seg_mean(v0[n:])
        shift = np.median(mi - m0, axis=0)
        ref = np.average(m0, 0, wseg)
        out["colour_delta_e_original"] = float(ciede2000(ref, ref + shift))
        out["colour_delta_e_before"] = float(ciede2000(ref, np.average(mo0, 0, wseg)))
    return out


# ----------------------------------------------------------------------------------------------------------------
# tone step along the outline (the "ghost": a darker or lighter disc), in 8-bit luminance levels
# ----------------------------------------------------------------------------------------------------------------
def _luma_levels(a: np.ndarray) -> np.ndarray:
    """Luminance (Rec. 601) of an image as loaded, float32 in 8-bit levels (0..255 whatever the depth)."""
    return grey_float(a) * np.float32(255.0)


def tone_step(
    original: np.ndarray | None,
    edited: np.ndarray,
    mask: np.ndarray,
    band: int,
    *,
    sigma: float = 4.0,
    segment_px: int | None = None,
    cache: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Luminance step across the contour, in 8-bit levels (signed: inside minus outside).

    The luminance (Rec. 601, 8-bit levels), low-passed with a Gaussian of ``sigma`` px, is sampled ``D`` px inside
    and outside the contour (``D = max(8, band)``, at most 0.6 x the mask's largest inradius) and averaged per
    contour segment (``segment_px``, default ``max(48, 2 band)``):

    - ``tone_step_edge``: median over segments of (inside - outside) of the edit;
    - ``tone_step_before``: the same of the original (an object that was there, or a natural edge);
    - ``tone_step_original``: median over segments of (edit inside - original inside): the offset the edit made;
    - ``tone_structure_kept``: correlation of the edit's and the original's fine structure (luminance minus its
      low-pass) inside the mask: about 1 when the content was kept (a retouch, a tone change), low when it was
      replaced (a removal, a fill);
    - ``tone_step_levels``: the visible step: ``|tone_step_original|`` when the content was kept
      (``tone_structure_kept >= 0.8``), else ``min(|tone_step_original|, |tone_step_edge|)``: a new fill must
      match what was there or what is outside; ``tone_step_signed`` with its sign;
    - ``tone_step_worst`` (levels) and ``tone_step_place`` (x, y): the same over the worst run of three
      segments.

    All nan when the contour is too short (fewer than 4 usable points). ``cache`` (a dict for this mask) shares
    the contour and its sample positions with :func:`colour_consistency`.
    """
    nan = float("nan")
    out: dict[str, Any] = {"tone_step_levels": nan, "tone_step_edge": nan, "tone_step_original": nan,
                           "tone_step_before": nan, "tone_step_worst": nan, "tone_step_place": None}
    sides = _contour_sides_cached(cache, mask, band, segment_px, 3 * sigma)
    if sides is None:
        return out
    x0, y0, x1, y1 = sides.box
    seg, nseg = sides.segments, sides.n_segments
    cnt = np.bincount(seg, minlength=nseg)
    good = cnt >= 2

    lumas: list[tuple[np.ndarray, np.ndarray]] = []
    # the inside pixels (thinned) where kept-or-replaced is decided, and how deep each lies
    msk = mask[y0:y1, x0:x1]
    dys, dxs = _deep_region(msk, 12.0)
    iys, ixs = _thinned_nonzero(msk, 30_000)
    n_in = len(iys)
    px = np.concatenate([np.stack([ixs, iys], 1), np.stack([dxs, dys], 1)]).astype(np.float32) + np.array([x0, y0],
                                                                                                        np.float32)
    nok = len(sides.points)
    pts = np.concatenate([sides.inner, sides.outer, px])
    lp = _luma_lowpass(sigma)

    def per_seg(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        v = _filtered_at(img, lp, _halo(sigma), pts)[:, 0]
        vi, vo = v[:nok].astype(np.float64), v[nok : 2 * nok].astype(np.float64)
        ipx = px[:n_in].astype(np.int64)
        raw = _luma_levels(np.ascontiguousarray(img[ipx[:, 1], ipx[:, 0]][None]))[0]
        lumas.append((raw - v[2 * nok : 2 * nok + n_in], v[2 * nok + n_in :]))
        si = np.bincount(seg, weights=vi, minlength=nseg)[good] / cnt[good]
        so = np.bincount(seg, weights=vo, minlength=nseg)[good] / cnt[good]
        return si, so

    ei, eo = per_seg(edited)
    centres = np.stack([np.bincount(seg, weights=sides.points[:, k], minlength=nseg)[good] / cnt[good]
                        for k in (0, 1)], 1)
    edge = ei - eo
    out["tone_step_edge"] = float(np.median(edge))

    def visible(e: np.ndarray, o: np.ndarray | None) -> tuple[float, float]:
        """(value, signed) of the step the edit made: its inner side must match what was there (offset) or
        what is outside (edge); the smaller of the two medians is what a viewer sees."""
        me = float(np.median(e))
        if o is None:
            return abs(me), me
        mo = float(np.median(o))
        return (abs(mo), mo) if abs(mo) < abs(me) else (abs(me), me)

    offset = None
    if original is not None:
        oi, oo = per_seg(original)
        offset = ei - oi
        out["tone_step_before"] = float(np.median(oi - oo))
        out["tone_step_original"] = float(np.median(offset))
    if offset is not None:
        # was the inside kept (the original's own structure plus a smooth offset: a tone change, to be judged
        # against what was there) or replaced (a removal: to be judged against the outside)?
        (he, ge), (ho, go) = lumas
        he, ho = he.astype(np.float64), ho.astype(np.float64)
        den = float(np.sqrt(np.sum(he * he) * np.sum(ho * ho)))
        kept = float(np.sum(he * ho) / den) if den > 0 else 1.0
        out["tone_structure_kept"] = kept
        out["content_kept"] = content_kept = _lowfreq_correlation(ge, go)
        kept = max(kept, content_kept)
        if kept >= 0.8:
            offset_only = float(np.median(offset))
            out["tone_step_levels"], out["tone_step_signed"] = abs(offset_only), offset_only
        else:
            out["tone_step_levels"], out["tone_step_signed"] = visible(edge, offset)
    else:
        out["tone_step_levels"], out["tone_step_signed"] = visible(edge, offset)
    # the worst stretch: runs of 3 segments along the contour
    if len(edge) >= 3:
        if offset is not None and max(out.get("tone_structure_kept", 0.0), out.get("content_kept", 0.0)) >= 0.8:
            v = np.abs(_run3_median(offset))
        else:
            me = _run3_median(edge)
            if offset is None:
                v = np.abs(me)
            else:
                mo = _run3_median(offset)
                v = np.where(np.abs(mo) < np.abs(me), np.abs(mo), np.abs(me))
        # the first largest (a nan never wins), else -1 at the first segment
        vv = np.where(np.isnan(v), -np.inf, v)
        where = int(np.argmax(vv))
        best = float(vv[where]) if vv[where] > -1.0 else -1.0
        if best == -1.0:
            where = 0
        out["tone_step_worst"] = best
        out["tone_step_place"] = (int(round(centres[where, 0])), int(round(centres[where, 1])))
    return out


def _run3_median(x: np.ndarray) -> np.ndarray:
    """Median of each run of three neighbours along ``x`` (two at either end), as ``np.median`` of each slice
    ``x[max(0, i - 1) : i + 2]`` computes it (``len(x) >= 3``)."""
    out = np.empty(len(x), np.float64)
    out[1:-1] = np.median(np.stack([x[:-2], x[1:-1], x[2:]]), axis=0)
    out[0], out[-1] = np.median(x[:2]), np.median(x[-2:])
    return out


def _deep_region(mask: np.ndarray, depth: float) -> tuple[np.ndarray, np.ndarray]:
    """The pixels (rows, columns: :func:`_nonzero`) of ``mask`` eroded by ``depth`` px (distance on a 4x smaller
    copy, where a block counts when wholly inside), thinned to about 30 000 px; the whole mask (thinned) when that
    leaves under 5% of it or 400 px."""
    m = mask.view(np.uint8) if mask.dtype == bool else mask.astype(np.uint8)
    k = 4 if min(m.shape) >= 64 else 1
    small = m if k == 1 else cv2.resize(m * 255, (m.shape[1] // k, m.shape[0] // k), interpolation=cv2.INTER_AREA)
    dsmall = cv2.distanceTransform(np.pad((small >= (255 if k > 1 else 1)).astype(np.uint8), 1), cv2.DIST_L2, 3)
    deep_s = dsmall[1:-1, 1:-1] * k > depth
    deep = np.zeros(m.shape, bool)
    ys, xs = np.nonzero(deep_s)
    y0, y1, x0, x1 = (int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1) if ys.size else (0,) * 4
    if ys.size * 4 < (y1 - y0) * (x1 - x0):  # scattered deep blocks: each back to k x k px, at its own pixels
        oy, ox = np.divmod(np.arange(k * k), k)
        py, px = (ys[:, None] * k + oy).ravel(), (xs[:, None] * k + ox).ravel()
        deep[py, px] = mask[py, px]
    elif ys.size:  # on the deep blocks' bounding box
        blocks = np.broadcast_to(deep_s[y0:y1, None, x0:x1, None], (y1 - y0, k, x1 - x0, k))
        box = (slice(y0 * k, y1 * k), slice(x0 * k, x1 * k))
        deep[box] = blocks.reshape((y1 - y0) * k, (x1 - x0) * k)
        deep[box] &= mask[box].astype(bool)
    region = deep if np.count_nonzero(deep) >= max(400, 0.05 * np.count_nonzero(m)) else mask.astype(bool)
    return _thinned_nonzero(region, 30_000)


def _lowfreq_correlation(ge: np.ndarray, go: np.ndarray, *, floor: float = 0.5) -> float:
    """Correlation of two low-passed luminances (8-bit levels, sampled at the same pixels: the mask eroded by
    12 px, :func:`_deep_region`), each minus its mean; ``floor`` levels of variance are added to both, so two flat
    patches do not correlate. About 1 when the edit kept the scene's layout under the mask (a retouch, a tone or
    colour change, a blur, a regrain: only the fine scales or an offset changed), near 0 when it replaced it (an
    object removal, a fill)."""
    n = len(ge)
    if n < 16:
        return float("nan")
    a = ge.astype(np.float64) - float(np.mean(ge))
    b = go.astype(np.float64) - float(np.mean(go))
    den = math.sqrt((float(a @ a) + n * floor**2) * (float(b @ b) + n * floor**2))
    return float(a @ b) / den


def scene_steps(
    edited: np.ndarray,
    mask: np.ndarray,
    band: int,
    *,
    forbidden: np.ndarray | None = None,
    seed: int = 0,
    cache: dict[str, Any] | None = None,
    n_null: int = 24,
    segment_px: int | None = None,
    contour_cache: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """How unusual the tone and colour difference across the contour is for this photo: the edit's inner vs outer
    side against the same statistics on copies of the contour translated onto untouched parts of the image.

    For an edit that replaced the content (a removal), the inside should look like the scene continues: the
    difference across the contour is then whatever the scene does across a contour of this shape, which on a
    contour crossing objects is not zero. The image low-passed as in the seam check's 8-px scale (shrunk by 4,
    CIE Lab, Gaussian sigma 1 px there) is sampled ``D`` px inside and outside the contour (``D`` as in
    :func:`tone_step`) and averaged per segment; per contour: ``L`` = median over segments of the L* step
    (inside - outside), ``L_worst`` = the largest ``|median|`` over runs of three segments, ``E`` = CIEDE2000 of
    the mean inner and mean outer colour (the contour, its normals and ``D`` are those of :func:`tone_step`;
    ``contour_cache``, a dict for this mask, shares them). The same on up to ``n_null`` placements (chosen as the
    seam check's: seeded offsets, every sample ``D + 8`` px clear of ``forbidden`` and of the mask). Returns ``scene_tone_z``
    (``|L - median| / spread`` of the placements' ``L``), ``scene_tone_worst_z``, ``scene_colour_z`` (one-sided),
    with the spread ``max(1.4826 MAD, floor)`` (floors 0.4 L*, 0.4 ΔE); the raw values (``scene_tone_lstar``,
    ``scene_colour_delta_e``, their null medians) and ``scene_null_placements``. nan when fewer than
    :data:`_NULL_MIN` placements fit.
    """
    nan = float("nan")
    out: dict[str, Any] = {"scene_tone_z": nan, "scene_tone_worst_z": nan, "scene_colour_z": nan,
                           "scene_null_placements": 0}
    h, w = mask.shape
    # the contour, its normals, segments and sample depth D: those of tone_step and colour_consistency
    sides = _contour_sides_cached(contour_cache, mask, band, segment_px, 12.0)
    if sides is None or len(sides.points) < 8:
        return out
    D = sides.depth
    pts, nrm, seg, nseg = sides.points, sides.normals, sides.segments, sides.n_segments
    if cache is not None and "dist" in cache:
        dist, f = cache["dist"]
    else:
        dist, f = _forbidden_distance(mask, 0, forbidden, max(2, int(min(h, w) // 256)))
        if cache is not None:
            cache["dist"] = (dist, f)
    pyr = cache.setdefault("pyramid", _Pyramid(edited)) if cache is not None else _Pyramid(edited)
    lab, q = pyr.level(8)
    rng = np.random.default_rng(seed + 1)
    placements = _choose_placements(Contour(pts, nrm, seg, nseg), dist, f, (h, w), D + 8.0, n_null, rng)

    def stats(pp: np.ndarray, nn: np.ndarray, ss: np.ndarray) -> tuple[float, float, float]:
        vi = _sample(lab, pp - D * nn, q).astype(np.float64)[:, :3]
        vo = _sample(lab, pp + D * nn, q).astype(np.float64)[:, :3]
        cnt = np.bincount(ss, minlength=nseg)
        good = cnt >= 2
        if good.sum() < 1:
            return nan, nan, nan
        mi = np.stack([np.bincount(ss, weights=vi[:, i], minlength=nseg) for i in range(vi.shape[1])], 1)[good]
        mo = np.stack([np.bincount(ss, weights=vo[:, i], minlength=nseg) for i in range(vo.shape[1])], 1)[good]
        mi /= cnt[good, None]
        mo /= cnt[good, None]
        dl = mi[:, 0] - mo[:, 0]
        worst = abs(float(np.median(dl)))
        if len(dl) >= 3:  # (one or two segments: their runs' medians are the median)
            worst = max(worst, float(np.max(np.abs(_run3_median(dl)))))
        wseg = cnt[good].astype(np.float64)
        if mi.shape[1] >= 3:
            de = float(ciede2000(np.average(mi, 0, wseg), np.average(mo, 0, wseg)))
        else:
            de = abs(float(np.average(dl, weights=wseg)))
        return float(np.median(dl)), worst, de

    real = stats(pts, nrm, seg)
    out["scene_tone_lstar"], out["scene_tone_worst_lstar"], out["scene_colour_delta_e"] = real
    out["scene_null_placements"] = len(placements)
    if len(placements) < _NULL_MIN:
        return out
    null = np.array([stats(pts[v] + o, nrm[v], seg[v]) for o, v in placements])
    null = null[np.isfinite(null).all(axis=1)]
    if len(null) < _NULL_MIN:
        return out

    def z(value: float, ns: np.ndarray, floor: float, two_sided: bool) -> tuple[float, float]:
        med = float(np.median(ns))
        sd = max(1.4826 * float(np.median(np.abs(ns - med))), floor)
        zz = (value - med) / sd
        return (abs(zz) if two_sided else zz), med

    out["scene_tone_z"], out["scene_tone_null"] = z(real[0], null[:, 0], 0.4, True)
    out["scene_tone_worst_z"], out["scene_tone_worst_null"] = z(real[1], null[:, 1], 0.4, False)
    out["scene_colour_z"], out["scene_colour_null"] = z(real[2], null[:, 2], 0.4, False)
    return out


# ----------------------------------------------------------------------------------------------------------------
# straight hard edges inside a fill: a pasted block, a tile grid
# ----------------------------------------------------------------------------------------------------------------
def _line_stats(d: np.ndarray, ad: np.ndarray, length: int, with_break: bool = True
                ) -> tuple[np.ndarray, np.ndarray | None]:
    """Per run of ``length`` px along x across row y, from ``d = g(y+1) - g(y-1)`` and ``ad = |d|``:
    (|mean d|, texture break or None)."""
    k = (length, 1)
    md = np.abs(cv2.blur(d, k, borderType=cv2.BORDER_REFLECT))
    if not with_break:
        return md, None
    ma = cv2.blur(ad, k, borderType=cv2.BORDER_REFLECT)
    beside = np.full_like(ma, np.inf)
    beside[3:-3] = 0.5 * (ma[:-6] + ma[6:])
    with np.errstate(divide="ignore"):
        return md, np.log((ma + 0.5) / (beside + 0.5))


def _regular_lines(profile: np.ndarray, thr: float, tol: float = 3.0) -> int:
    """Most lines (peaks of ``profile`` above ``thr``, at least 8 px apart) that fit one lattice ``c0 + k p`` (+-
    ``tol`` px), with at least 3/4 of the lattice positions between its first and last line holding a line."""
    ys = np.flatnonzero(profile > thr)
    if ys.size == 0:
        return 0
    groups = np.split(ys, np.flatnonzero(np.diff(ys) >= 8) + 1)
    c = np.array([g[np.argmax(profile[g])] for g in groups], float)[:64]
    if len(c) < 3:
        return len(c) if len(c) < 2 else 2
    best = 2
    for i in range(len(c)):
        for j in range(i + 1, len(c)):
            p = c[j] - c[i]
            if p < 8:
                continue
            k = (c - c[i]) / p
            on = np.abs(k - np.round(k)) * p <= tol
            ks = np.unique(np.round(k[on]).astype(int))
            # a lattice, not a coincidence: its positions between the first and last line mostly hold a line
            if ks.size >= 3 and ks.size >= 0.75 * (ks.max() - ks.min() + 1):
                best = max(best, int(ks.size))
    return best


def _null_max(step: np.ndarray, brk: np.ndarray | None, vnull: np.ndarray, acc: dict[str, list],
              keys: tuple[str, str], grid_min: float | None) -> int:
    """The surroundings' own straightness: 99.9th percentiles of the step (and break) over the runs ``vnull``,
    appended to ``acc``; with ``grid_min``, the lines on one lattice there (a fence, tiles, a painted pattern)."""
    if vnull.sum() <= 100:
        return 0
    acc[keys[0]].append(float(np.percentile(step[vnull], 99.9)))
    if brk is not None:
        acc[keys[1]].append(float(np.percentile(brk[vnull], 99.9)))
    return _regular_lines(np.where(vnull, step, -np.inf).max(axis=1), grid_min) if grid_min is not None else 0


def _inside_max(step: np.ndarray, brk: np.ndarray | None, vin: np.ndarray, acc: dict[str, list],
                keys: tuple[str, str], grid_min: float | None) -> tuple[np.ndarray, int]:
    """Append the largest step (and break) over the valid runs ``vin`` to ``acc[keys[0]]`` (``acc[keys[1]]``);
    returns the step map inside (-inf elsewhere) and, with ``grid_min``, the lines on one lattice."""
    s_in = np.where(vin, step, -np.inf)
    acc[keys[0]].append(float(s_in.max()))
    if brk is not None:
        acc[keys[1]].append(float(np.where(vin & np.isfinite(brk), brk, -np.inf).max()))
    return s_in, (_regular_lines(s_in.max(axis=1), grid_min) if grid_min is not None else 0)


def _corner_stats(cmaps: list[tuple[np.ndarray, ...]], length: int) -> dict[str, float]:
    """A pasted block has a horizontal and a vertical edge meeting at a corner; a stem or a horizon crossing the
    fill has one direction only. ``cmaps``: per axis (horizontal lines, vertical lines), the step and break maps
    inside and on the surroundings (-inf elsewhere); the corner statistic is the ``min`` of the two directions'
    largest values within ``length + 16`` px."""
    nan = float("nan")
    out = {}
    k = np.ones((length + 16, length + 16), np.uint8)
    for i, name in enumerate(("edge_corner_raw", "edge_corner_break_raw", "edge_corner_null",
                              "edge_corner_break_null")):
        c = np.minimum(cv2.dilate(cmaps[0][i], k), cv2.dilate(cmaps[1][i], k))
        if i < 2:
            v = float(c.max())
        else:
            cc = c[np.isfinite(c)]
            v = float(np.percentile(cc, 99.9)) if cc.size > 100 else nan
        out[name] = v if math.isfinite(v) else nan
    return out


def straight_edges(
    original: np.ndarray | None,
    edited: np.ndarray,
    mask: np.ndarray,
    band: int,
    *,
    length: int = 48,
    grid_length: int = 160,
    grid_step_min: float = 1.5,
    depth: int = 4,
    exclude: np.ndarray | None = None,
    corners: bool = False,
) -> dict[str, Any]:
    """Axis-aligned straight edges inside the mask that were not there and that the surroundings do not have.

    On the luminance (8-bit levels, Gaussian sigma 0.8 px), for horizontal lines the difference
    ``d(y, x) = g(y + 1, x) - g(y - 1, x)`` is averaged over runs of ``length`` px along x (vertical lines: the same
    transposed). Two statistics per run: the **step** ``|mean d|`` (levels: a tone step or a grid line; texture
    averages out) and the **texture break** ``log((mean |d| + 0.5) / (mean of the same 3 rows above and below
    + 0.5))`` (two unrelated textures meeting: a pasted block). Inside the mask (runs whole ``depth`` px deep)
    the edit's statistic minus the original's at the same run counts (what the edit added: ``edge_step_max``,
    ``edge_break_max``); the surroundings' own straight edges (runs on pixels farther than ``band + 4`` px from
    the mask and from ``exclude``, 99.9th percentile: ``edge_step_null``, ``edge_break_null``) say how much
    straightness the scene has anyway. The same step with runs of ``grid_length`` px (at most half the region;
    texture averages out further) gives ``grid_step_max``, ``grid_step_null`` and ``grid_lines``: the largest
    number of added parallel lines stronger than ``grid_step_min`` levels that sit on one regular lattice (a
    common spacing, +-3 px) -- tile seams do, natural straight lines (stems, horizons) do not. ``edge_place`` /
    ``grid_place``: (x, y) of the strongest. With ``corners`` (replaced content) also ``edge_step_raw``,
    ``edge_break_raw``, ``grid_step_raw`` and ``grid_lines_raw``: the same of the edit alone (not minus the original), for an edit that replaced the content
    (the removed object's edges say nothing about the fill); ``grid_lines_null``: the lines on one lattice in the
    surroundings (the scene's own pattern, which a fill may continue). With ``corners``: ``edge_corner_raw`` and
    ``edge_corner_break_raw``, the largest ``min`` of the horizontal and the vertical statistic within
    ``length + 16`` px of each other (a block's corner: two hard edges meet; a stem crossing the fill is one
    direction), and their 99.9th percentiles on the surroundings (``edge_corner_null``, ``edge_corner_break_null``).
    """
    nan = float("nan")
    out: dict[str, Any] = {"edge_step_max": nan, "edge_step_null": nan, "edge_break_max": nan,
                           "edge_break_null": nan, "edge_place": None, "grid_step_max": nan,
                           "grid_step_null": nan, "grid_lines": 0, "grid_place": None, "edge_step_raw": nan,
                           "edge_break_raw": nan, "grid_step_raw": nan, "grid_lines_raw": 0}
    bb = mask_bbox(mask)
    if bb is None:
        return out
    if _inradius_upper(mask, bb) < math.hypot(length / 2.0, depth + 4.5):
        return out  # no run's footprint (9 x length px, depth px inside) fits: small regions, dust
    grid_length = int(max(length, min(grid_length, min(bb[2] - bb[0], bb[3] - bb[1]) // 2)))
    margin = band + 4 + grid_length + 64
    x0, y0, x1, y1 = _crop_box(mask.shape, bb, margin)
    m = mask[y0:y1, x0:x1]
    inner = cv2.distanceTransform(np.pad(m, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1] > depth
    i8 = inner.astype(np.uint8)
    fits = any(cv2.erode(i8, np.ones(k, np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0).any()
               for k in ((9, length), (length, 9)))
    if not fits:  # no run of `length` px fits inside (thin or small regions): nothing to look for
        return out

    def lum(a: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(_luma_levels(a[y0:y1, x0:x1]), (0, 0), 0.8, borderType=cv2.BORDER_REFLECT)

    g = lum(edited)
    g0 = lum(original) if original is not None else None
    zone = m if exclude is None else (m | exclude[y0:y1, x0:x1])
    far = cv2.distanceTransform((~zone).astype(np.uint8), cv2.DIST_L2, 3) > band + 4
    acc: dict[str, list] = {k: [] for k in ("es", "eb", "ns", "nb", "gs", "gn", "rs", "rb", "rg")}
    places: dict[str, tuple[float, Any]] = {"edge": (-1.0, None), "grid": (-1.0, None)}
    lines = lines_raw = lines_null = 0
    cmaps: list[tuple[np.ndarray, ...]] = []
    for axis in (0, 1):
        tr = (lambda a: a) if axis == 0 else (lambda a: np.ascontiguousarray(a.T))
        gg, ii, ff = tr(g), tr(inner), tr(far)
        if gg.shape[0] < 10 or gg.shape[1] < length:
            continue

        def diffs(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            d = np.zeros_like(img)
            d[1:-1] = img[2:] - img[:-2]
            return d, np.abs(d)

        de, ade = diffs(gg)
        do = diffs(tr(g0)) if g0 is not None else None
        # a run's footprint (rows y-4 .. y+4): eroded once, then a run is valid when all of it is in the region
        ii9 = cv2.erode(ii.astype(np.uint8), np.ones((9, 1), np.uint8), borderType=cv2.BORDER_CONSTANT,
                        borderValue=0)
        ff9 = cv2.erode(ff.astype(np.uint8), np.ones((9, 1), np.uint8), borderType=cv2.BORDER_CONSTANT,
                        borderValue=0)
        for L, tag in ((length, "edge"), (grid_length, "grid")):
            if gg.shape[1] < L:
                continue
            # a run is valid when all its L px are (a centred L-px minimum; outside the crop counts as not)
            k1 = np.ones((1, L), np.uint8)
            vin = cv2.erode(ii9, k1, borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0
            vnull = cv2.erode(ff9, k1, borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0
            step, brk = _line_stats(de, ade, L, with_break=tag == "edge")
            lines_null = max(lines_null, _null_max(step, brk, vnull, acc, ("ns", "nb") if tag == "edge" else
                                                   ("gn", ""), grid_step_min if tag == "grid" and corners else None))
            if corners and tag == "edge":
                back = (lambda a: a) if axis == 0 else (lambda a: np.ascontiguousarray(a.T))
                cmaps.append((back(np.where(vin, step, -np.inf).astype(np.float32)),
                              back(np.where(vin & np.isfinite(brk), brk, -np.inf).astype(np.float32)),
                              back(np.where(vnull, step, -np.inf).astype(np.float32)),
                              back(np.where(vnull & np.isfinite(brk), brk, -np.inf).astype(np.float32))))
            if not vin.any():
                continue
            # the edit's own straightness inside (judged against the surroundings when the content was replaced)
            if corners:
                _, n_raw = _inside_max(step, brk, vin, acc, ("rs", "rb") if tag == "edge" else ("rg", ""),
                                       grid_step_min if tag == "grid" else None)
                lines_raw = max(lines_raw, n_raw)
            if do is not None:
                step0, brk0 = _line_stats(do[0], do[1], L, with_break=tag == "edge")
                step = step - step0
                if brk is not None:
                    with np.errstate(invalid="ignore"):
                        brk = brk - brk0
            s_in, n_lines = _inside_max(step, brk, vin, acc, ("es", "eb") if tag == "edge" else ("gs", ""),
                                        grid_step_min if tag == "grid" else None)
            lines = max(lines, n_lines)
            yx = np.unravel_index(int(np.argmax(s_in)), s_in.shape)
            if s_in[yx] > places[tag][0]:
                yy, xx = int(yx[0]), int(yx[1])
                places[tag] = (float(s_in[yx]), (x0 + xx, y0 + yy) if axis == 0 else (x0 + yy, y0 + xx))
    for key, name in (("es", "edge_step_max"), ("eb", "edge_break_max"), ("gs", "grid_step_max"),
                      ("ns", "edge_step_null"), ("nb", "edge_break_null"), ("gn", "grid_step_null"),
                      ("rs", "edge_step_raw"), ("rb", "edge_break_raw"), ("rg", "grid_step_raw")):
        if acc[key]:
            out[name] = max(acc[key])
    out["grid_lines"] = lines
    out["grid_lines_raw"] = lines_raw
    out["grid_lines_null"] = lines_null
    if len(cmaps) == 2:
        out.update(_corner_stats(cmaps, length))
    out["edge_place"] = places["edge"][1]
    out["grid_place"] = places["grid"][1]
    return out


# ----------------------------------------------------------------------------------------------------------------
# a change everywhere: global tone and colour shift, detail, noise
# ----------------------------------------------------------------------------------------------------------------
def global_change(original: np.ndarray, edited: np.ndarray, *, max_side: int = 1024, hf_side: int = 2048) -> dict[str, float]:
    """How the whole image changed: for edits without a mask that touch everything.

    ``global_delta_e``: CIEDE2000 between the original's mean Lab colour and that colour plus the median
    per-pixel Lab shift (both images shrunk by area averaging to at most ``max_side`` px);
    ``global_tone_levels``: the median luminance shift in 8-bit levels; ``global_detail_ratio`` and
    ``global_noise_ratio``: mean |Laplacian| and robust noise sigma of the edit over the original's, on a
    centred full-resolution crop of at most ``hf_side`` px.
    """
    h, w = original.shape[:2]
    f = max(1, int(math.ceil(max(h, w) / max_side)))

    def small(a: np.ndarray) -> np.ndarray:
        c = np.ascontiguousarray(a if a.ndim == 2 else a[:, :, : min(3, a.shape[2])])
        return cv2.resize(c, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA) if f > 1 else c

    so, se = small(original), small(edited)
    lo = rgb_to_lab(colour_channels(so)).reshape(-1, 3).astype(np.float64)
    le = rgb_to_lab(colour_channels(se)).reshape(-1, 3).astype(np.float64)
    shift = np.median(le - lo, axis=0)
    ref = lo.mean(axis=0)
    yo, ye = _luma_levels(so), _luma_levels(se)
    cy, cx = h // 2, w // 2
    r = hf_side // 2
    box = (slice(max(0, cy - r), cy + r), slice(max(0, cx - r), cx + r))
    ho, he = _HF(grey_float(original[box])), _HF(grey_float(edited[box]))
    region = _subsample(np.ones(ho.g.shape, bool))
    d0, d1 = ho.detail(region), he.detail(region)
    n0, n1 = ho.noise(region), he.noise(region)
    return {
        "global_delta_e": float(ciede2000(ref, ref + shift)),
        "global_tone_levels": float(np.median(ye - yo)),
        "global_detail_ratio": (d1 + _DETAIL_FLOOR) / (d0 + _DETAIL_FLOOR),
        "global_noise_ratio": (n1 + _NOISE_FLOOR) / (n0 + _NOISE_FLOOR),
    }
