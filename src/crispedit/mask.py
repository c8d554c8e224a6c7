"""Masks: load, binarise, shapes from the CLI, and morphology.

A mask is a bool array H x W, True where the image is edited. Anything a user may hand us (a path, a PIL image,
an array of 0/1, 0/255, bool or float) goes through :func:`to_bool_mask`.
"""

from __future__ import annotations

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
    if np.issubdtype(a.dtype, np.integer):
        half = 128 if a.dtype == np.uint8 else (32768 if a.dtype == np.uint16 else 1)
    else:
        half = 0.5
    peak = a.max() if a.size else 0
    return (a >= half) if peak >= half else (a > 0)


def load_mask(src: Any, size: tuple[int, int]) -> np.ndarray:
    """Load a mask from a path, PIL image or array and check it matches ``size`` = (width, height)."""
    if isinstance(src, (str, Path)):
        path = Path(src)
        if not path.is_file():
            raise InputError(f"mask file not found: {path}", "check the --mask path")
        try:
            with Image.open(path) as im:
                im.load()
                from PIL import ImageOps

                im = ImageOps.exif_transpose(im)
                arr = np.asarray(im.convert("L") if im.mode not in ("L", "1", "I;16", "I") else im)
        except (OSError, SyntaxError, ValueError) as exc:
            raise InputError(f"cannot read mask {path}: {exc}", "save the mask as a PNG, white = edit") from None
    elif isinstance(src, Image.Image):
        arr = np.asarray(src if src.mode in ("L", "1", "I;16", "I") else src.convert("L"))
    else:
        arr = np.asarray(src)
    mask = to_bool_mask(arr)
    if mask.shape[::-1] != tuple(size):
        raise InputError(
            f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is {size[0]}x{size[1]}",
            "make the mask the same size as the image (after EXIF rotation)",
        )
    return mask


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
