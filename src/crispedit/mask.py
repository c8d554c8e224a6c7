"""Masks: load, binarise, read as users paint them (alpha, soft brushes), shapes from the CLI, and morphology.

A mask is a bool array H x W, True where the image is edited. Anything a user may hand us (a path, a PIL image,
an array of 0/1, 0/255, bool or float) goes through :func:`to_bool_mask`; :func:`load_mask_weights` reads the
same inputs as painted opacity (alpha channels, soft brushes, feathered selections) and says how it read them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from crispedit.errors import InputError

Box = tuple[int, int, int, int]


def to_bool_mask(values: np.ndarray) -> np.ndarray:
    """Binarise: True where the mask is white / nonzero.

    Values at or above half the dtype's range count as edit; a mask whose maximum is below that (a 0/1 label
    image) counts every nonzero pixel. This keeps JPEG noise near black out of the edit.
    """
    a = np.asarray(values)
    if a.ndim == 3:
        a = a[..., :3].max(axis=2) if a.shape[2] >= 3 else a[..., 0]
    if a.dtype == bool:
        return a.copy()
    half: float
    if np.issubdtype(a.dtype, np.integer):
        half = 128 if a.dtype == np.uint8 else (32768 if a.dtype == np.uint16 else 1)
    else:
        half = 0.5
    peak = a.max() if a.size else 0
    return (a >= half) if peak >= half else (a > 0)


#: Weights below this (a 1.6 % opacity: JPEG noise around black, a brush's faint tail) count as no edit, above
#: ``1 - SNAP`` as full edit.
SNAP = 4.0 / 255.0
#: Intermediate levels: weights strictly between these are neither black nor white (JPEG noise around 0 and 255
#: stays outside them).
MID = (0.1, 0.9)
#: An intermediate pixel farther than this (px) from the 50 % contour is not anti-aliasing or JPEG ringing.
EDGE_PX = 2.0
#: A mask is soft when at least this fraction of its support (and at least ``SOFT_MIN_PX`` px) is such a pixel.
SOFT_FRACTION = 0.01
SOFT_MIN_PX = 16


@dataclass(frozen=True)
class MaskReading:
    """How a mask was read; the harness reports it as ``info["mask"]``.

    ``source``: ``"bool"`` (a bool array), ``"luma"`` (grey level, or Pillow's luma of a colour file),
    ``"value"`` (max of R, G, B of a colour array), ``"alpha"`` (the alpha channel), ``"luma*alpha"`` /
    ``"value*alpha"`` (colour times alpha). ``kind``: ``"binary"`` or ``"soft"``. ``soft_fraction``: share of
    the support that is intermediate far from any hard edge (the detection statistic). ``pixels``: support size.
    """

    source: str
    kind: str
    soft_fraction: float
    pixels: int

    def as_dict(self) -> dict:
        return {"source": self.source, "kind": self.kind, "soft_fraction": round(self.soft_fraction, 4),
                "pixels": self.pixels}


def _read_array(src: Any) -> tuple[np.ndarray, bool]:
    """Pixels of a mask source and whether they come from a file / PIL image (colour read as luma)."""
    if isinstance(src, (str, Path)):
        path = Path(src)
        if not path.is_file():
            raise InputError(f"mask file not found: {path}", "check the --mask path")
        try:
            with Image.open(path) as im:
                im.load()
                from PIL import ImageOps

                ImageOps.exif_transpose(im, in_place=True)  # (not a copy when there is nothing to turn)
                return _pil_array(im), True
        except (OSError, SyntaxError, ValueError) as exc:
            raise InputError(f"cannot read mask {path}: {exc}", "save the mask as a PNG, white = edit") from None
    if isinstance(src, Image.Image):
        return _pil_array(src), True
    return np.asarray(src), False


def _pil_array(im: Image.Image) -> np.ndarray:
    """Grey modes as they are; modes with transparency as luma + alpha (H, W, 2); other colour as luma."""
    if im.mode in ("L", "1", "I;16", "I", "F"):
        return np.asarray(im)
    if im.mode in ("LA", "La", "RGBA", "RGBa", "PA") or (im.mode == "P" and "transparency" in im.info):
        return np.asarray(im.convert("RGBA").convert("LA"))
    return np.asarray(im.convert("L"))


#: ``level / 255`` as float32 for every 8-bit level (what ``a.astype(np.float32) / 255.0`` gives).
_U8_UNIT = np.arange(256, dtype=np.float32) / np.float32(255.0)


#: ``level / 255 >= 0.5`` (the binary cut of :func:`_weights`) as float32 for every 8-bit level.
_U8_HALF = (_U8_UNIT >= 0.5).astype(np.float32)
#: Whether each 8-bit level is intermediate for :func:`soft_fraction` (strictly inside ``MID``).
_U8_MID = (_U8_UNIT > MID[0]) & (_U8_UNIT < MID[1])


def _plain_binary_u8(a: np.ndarray) -> bool:
    """Whether a 2-D uint8 mask has no intermediate level (then :func:`soft_fraction` is 0 without a float pass)."""
    if a.dtype != np.uint8 or a.ndim != 2 or not a.size:
        return False
    hist = cv2.calcHist([np.ascontiguousarray(a)], [0], None, [256], [0, 256]).reshape(-1)
    return not bool(hist[_U8_MID].any())


def _unit(a: np.ndarray) -> np.ndarray:
    """Levels of any dtype as float32 in [0, 1] (uint8 / 255, uint16 / 65535, 32-bit ints by their peak)."""
    if a.dtype == bool:
        return a.astype(np.float32)
    if a.dtype == np.uint8:
        if a.ndim == 2 and a.size:  # a table lookup: the same float32 quotients, without a float pass over the image
            return cv2.LUT(np.ascontiguousarray(a), _U8_UNIT)
        return a.astype(np.float32) / 255.0
    if a.dtype == np.uint16:
        return a.astype(np.float32) / 65535.0
    if np.issubdtype(a.dtype, np.integer):
        peak = int(a.max()) if a.size else 0
        scale = 65535.0 if peak > 255 else (255.0 if peak > 1 else 1.0)
        return np.clip(a.astype(np.float32) / scale, 0.0, 1.0)
    return np.clip(np.nan_to_num(a.astype(np.float32)), 0.0, 1.0)


def _is_label_image(a: np.ndarray) -> bool:
    """An integer mask of small labels (0/1 up to 0..15: a label map): every nonzero pixel is edit.

    (A grey stroke at partial opacity, e.g. a flat 127, is not a label image but a soft mask.)
    """
    if a.dtype == bool or not np.issubdtype(a.dtype, np.integer) or not a.size:
        return False
    return 0 < int(a.max()) <= 15


def soft_fraction(values: np.ndarray) -> float:
    """Share of a mask's support that is painted opacity rather than an anti-aliased or JPEG-noisy hard edge.

    A pixel counts when its level is intermediate (strictly between ``MID`` = 10 % and 90 %, so JPEG noise
    around black and white does not count) and it lies more than ``EDGE_PX`` = 2 px from the 50 % contour
    (anti-aliasing and ringing stay within about 2 px of a hard edge; a soft brush's or feathered selection's
    ramp, or a flat 50 % stroke, does not). The support is every pixel above ``SNAP``.

    Parameters
    ----------
    values : ndarray of float32, shape (H, W), in [0, 1]

    Returns
    -------
    float in [0, 1]; 0 for an empty support.

    Notes
    -----
    Distances by ``cv2.distanceTransform`` (Borgefors / exact Euclidean), on the support's bounding box only.
    """
    v = np.asarray(values, np.float32)
    support = v > SNAP
    rows, cols = np.flatnonzero(support.any(axis=1)), np.flatnonzero(support.any(axis=0))
    if rows.size == 0:
        return 0.0
    pad = int(EDGE_PX) + 2
    y0, y1 = max(0, rows[0] - pad), min(v.shape[0], rows[-1] + 1 + pad)
    x0, x1 = max(0, cols[0] - pad), min(v.shape[1], cols[-1] + 1 + pad)
    sub = v[y0:y1, x0:x1]
    mid = (sub > MID[0]) & (sub < MID[1])
    n_support = int(support[y0:y1, x0:x1].sum())
    if not mid.any():
        return 0.0
    hard = (sub >= 0.5).astype(np.uint8)
    # distance to the nearest pixel on the other side of the 50 % contour
    d_in = cv2.distanceTransform(hard, cv2.DIST_L2, 3)  # inside: distance to the nearest soft-side pixel
    d_out = cv2.distanceTransform(1 - hard, cv2.DIST_L2, 3)
    d = np.where(hard > 0, d_in, d_out) if hard.any() and not hard.all() else np.full(sub.shape, 1e9, np.float32)
    far = mid & (d > EDGE_PX)
    return float(far.sum()) / max(1, n_support) if int(far.sum()) >= SOFT_MIN_PX else 0.0


def mask_weights(values: Any) -> tuple[np.ndarray, MaskReading]:
    """Read an array as the user painted it: float32 weights in [0, 1] and how they were read.

    The rule (also in README, "Inputs"):

    - **Which channel.** An alpha channel that varies is the mask when the colour under it is constant (an
      opacity stroke on a transparent layer, black or white strokes on transparent); when the visible colour
      varies too (more than 0.1 % of the visible pixels 10 % away from its median) the mask is colour x alpha
      (transparent = no edit). A constant alpha is ignored and the grey
      level is the mask (files: Pillow's luma; arrays: the brightest of R, G, B).
    - **Binary or soft.** The mask is *soft* when at least ``SOFT_FRACTION`` = 1 % of its support (and at least
      16 px) is an intermediate level (10-90 %) more than 2 px from the 50 % contour (see
      :func:`soft_fraction`): a soft brush, a feathered selection, a stroke at partial opacity. Anything else
      (hard strokes, anti-aliased edges, JPEG-saved black/white masks) is *binary*.
    - **Binary** masks are cut at 50 % (an integer label image of values up to 15: every nonzero pixel) and get the harness's own blend
      band. **Soft** masks are the user's blend: weights below 4/255 are 0 (nothing changes there, no band is
      added), above 251/255 are 1 (full edit), in between the edit is mixed in proportion.

    Parameters
    ----------
    values : array-like, shape (H, W), (H, W, 1), (H, W, 2) grey + alpha, (H, W, 3) RGB or (H, W, 4) RGBA;
        bool, uint8, uint16, other integers or float in [0, 1].

    Returns
    -------
    weights : ndarray of float32, shape (H, W), in [0, 1]; exactly 0 / 1 for binary masks.
    reading : MaskReading
    """
    return _weights(np.asarray(values), from_image=False)


def _weights(a: np.ndarray, *, from_image: bool) -> tuple[np.ndarray, MaskReading]:
    colour_name = "luma" if from_image else "value"
    alpha = None
    if a.ndim == 3:
        c = a.shape[2]
        if c in (2, 4):
            alpha = a[..., c - 1]
        colour = a[..., :3].max(axis=2) if c >= 3 else a[..., 0]
    elif a.ndim == 2:
        colour = a
    else:
        raise InputError(f"a mask must be H x W or H x W x channels, got shape {a.shape}",
                         "save the mask as a grey PNG, white = edit")
    source = "bool" if colour.dtype == bool and alpha is None else colour_name
    label = False
    if alpha is not None and alpha.size and alpha.max() != alpha.min():
        au, cu = _unit(alpha), _unit(colour)
        visible = cu[au > 0]
        off = np.count_nonzero(np.abs(visible - np.median(visible)) > 0.1) if visible.size else 0
        if off <= max(16, visible.size // 1000):  # the colour under the alpha is constant
            v, source = au, "alpha"
        else:
            v, source = cu * au, f"{colour_name}*alpha"
    else:
        label = _is_label_image(colour)
        if not label and _plain_binary_u8(colour):
            # an 8-bit mask with no intermediate level (plain black and white): soft_fraction is 0, so the weights
            # are the 50 % cut, read through a table of levels (the same float32 values, no float pass)
            w = cv2.LUT(np.ascontiguousarray(colour), _U8_HALF)
            return w, MaskReading(source=source, kind="binary", soft_fraction=0.0, pixels=int(np.count_nonzero(w)))
        v = _unit(colour)
    frac = 0.0 if (label or source == "bool") else soft_fraction(v)
    if frac >= SOFT_FRACTION:
        w = v.copy()
        w[w < SNAP] = 0.0
        w[w > 1.0 - SNAP] = 1.0
        kind = "soft"
    else:
        w = ((v > 0) if label else (v >= 0.5)).astype(np.float32)
        kind = "binary"
    return w, MaskReading(source=source, kind=kind, soft_fraction=frac, pixels=int(np.count_nonzero(w)))


def load_mask_weights(src: Any, size: tuple[int, int]) -> tuple[np.ndarray, MaskReading]:
    """Load a mask as painted weights (see :func:`mask_weights` for the rule) and check its size.

    Parameters
    ----------
    src : path, PIL image or array (see :func:`mask_weights`).
    size : (width, height) of the image.

    Returns
    -------
    weights : ndarray of float32, shape (height, width), in [0, 1]
    reading : MaskReading

    Raises
    ------
    InputError
        the file is missing or unreadable, or the mask is not ``size``.
    """
    w, reading = read_mask_weights(src)
    check_mask_size(w, size)
    return w, reading


def read_mask_weights(src: Any) -> tuple[np.ndarray, MaskReading]:
    """:func:`load_mask_weights` without the size check (for reading a mask before the image's size is known).

    Raises
    ------
    InputError
        the file is missing or unreadable.
    """
    arr, from_image = _read_array(src)
    return _weights(arr, from_image=from_image)


def check_mask_size(weights: np.ndarray, size: tuple[int, int]) -> None:
    """Raise ``InputError`` unless ``weights`` (H, W) is an image of ``size`` = (width, height)."""
    if weights.shape[::-1] != tuple(size):
        raise InputError(
            f"mask is {weights.shape[1]}x{weights.shape[0]} but the image is {size[0]}x{size[1]}",
            "make the mask the same size as the image (after EXIF rotation)",
        )


def load_mask(src: Any, size: tuple[int, int]) -> np.ndarray:
    """Load a mask from a path, PIL image or array and check it matches ``size`` = (width, height).

    Returns the bool mask of every pixel the edit may change: for binary masks the pixels at or above 50 %, for
    soft masks (see :func:`mask_weights`) the whole painted support. Alpha channels are honoured.
    """
    w, _ = load_mask_weights(src, size)
    return w > 0


def parse_box(text: str, size: tuple[int, int]) -> Box:
    """Parse ``"X0,Y0,X1,Y1"`` (pixels) and check it lies inside an image of ``size``."""
    try:
        x0, y0, x1, y1 = (int(round(float(v))) for v in text.split(","))
    except ValueError:
        raise InputError(f"bad box '{text}'", "write it as X0,Y0,X1,Y1 in pixels, e.g. 100,200,900,800") from None
    w, h = size
    x0, x1 = sorted((x0, x1))
    y0, y1 = sorted((y0, y1))
    x0, x1, y0, y1 = max(0, x0), min(w, x1), max(0, y0), min(h, y1)
    if x1 - x0 < 1 or y1 - y0 < 1:
        raise InputError(f"box '{text}' is empty inside the {w}x{h} image", "give X0<X1 and Y0<Y1 inside the image")
    return x0, y0, x1, y1


def mask_from_box(size: tuple[int, int], box: Box) -> np.ndarray:
    """Rectangle mask of ``size`` = (w, h) covering ``box`` = (x0, y0, x1, y1), end-exclusive."""
    w, h = size
    m = np.zeros((h, w), bool)
    x0, y0, x1, y1 = box
    m[max(0, y0) : min(h, y1), max(0, x0) : min(w, x1)] = True
    return m


def mask_from_ellipse(size: tuple[int, int], box: Box) -> np.ndarray:
    """Ellipse inscribed in ``box``."""
    w, h = size
    x0, y0, x1, y1 = box
    yy, xx = np.ogrid[:h, :w]
    cx, cy = (x0 + x1 - 1) / 2, (y0 + y1 - 1) / 2
    rx, ry = max((x1 - x0) / 2, 0.5), max((y1 - y0) / 2, 0.5)
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0


def _disk(px: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))


def grow(mask: np.ndarray, px: int) -> np.ndarray:
    """Dilate by ``px`` pixels (Euclidean)."""
    if px <= 0:
        return mask.copy()
    dist = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5)
    return dist <= px


def shrink(mask: np.ndarray, px: int) -> np.ndarray:
    """Erode by ``px`` pixels (Euclidean)."""
    if px <= 0:
        return mask.copy()
    return ~grow(~mask, px)


def feather(mask: np.ndarray, px: float) -> np.ndarray:
    """Soft float32 mask: 1 inside, a smooth ramp of width ``px`` outside."""
    if px <= 0:
        return mask.astype(np.float32)
    dist = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5)
    t = np.clip(1.0 - dist / float(px), 0.0, 1.0)
    return (t * t * (3 - 2 * t)).astype(np.float32)


def invert(mask: np.ndarray) -> np.ndarray:
    return ~mask


def union(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.shape != b.shape:
        raise InputError(f"masks differ in size: {a.shape[::-1]} vs {b.shape[::-1]}", "use masks of the same size")
    return a | b
