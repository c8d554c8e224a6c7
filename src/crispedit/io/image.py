"""The in-memory image: :class:`ImageData` (pixels + metadata), float conversions and the Pillow view.

Array conventions: ``H x W x C`` with ``C`` in {1 (gray), 2 (gray + alpha), 3 (RGB), 4 (RGBA)}, dtype ``uint8``
or ``uint16``, C-contiguous. Alpha is straight (not premultiplied) and is carried as a channel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from crispedit.errors import InputError
from crispedit.io.exif import icc_fits

__all__ = ["ImageData", "to_float", "from_float", "to_pil", "to_8bit", "check_array", "deep_to_uint16", "from_cv2"]


@dataclass
class ImageData:
    """Pixels of one image plus the metadata needed to write it back faithfully.

    Attributes
    ----------
    array : numpy.ndarray
        ``H x W x C`` pixels, ``C`` in {1, 2, 3, 4} (gray, gray + alpha, RGB, RGBA), dtype ``uint8`` or
        ``uint16``, C-contiguous, orientation already applied.
    icc_profile : bytes or None
        Embedded ICC profile, written back on save where the format supports it.
    exif : bytes or None
        Raw EXIF (``b"Exif\\x00\\x00"`` + TIFF structure) with orientation reset to 1.
    format : str or None
        ``'JPEG'``, ``'PNG'``, ``'WEBP'``, ``'TIFF'`` (or another Pillow format name); None for in-memory inputs.
    source : pathlib.Path or None
        Resolved path the image was loaded from.
    notes : list of str
        User-facing remarks such as ``"converted CMYK to RGB"``.
    dpi : tuple of float or None
        ``(x, y)`` resolution in dots per inch.
    xmp : bytes or None
        The XMP packet (UTF-8 XML), from JPEG APP1, PNG iTXt ``XML:com.adobe.xmp``, WebP ``XMP `` or TIFF tag 700;
        written back in every output format.
    text_chunks : list of (str, bytes)
        PNG text chunks other than XMP, as ``(chunk type, raw payload)`` with type ``'tEXt'``, ``'zTXt'`` or
        ``'iTXt'`` (e.g. the generation parameters other tools write); written back byte for byte to PNG, with a
        note for formats that cannot hold them.
    """

    array: np.ndarray
    icc_profile: bytes | None = None
    exif: bytes | None = None
    format: str | None = None
    source: Path | None = None
    notes: list[str] = field(default_factory=list)
    dpi: tuple | None = None
    xmp: bytes | None = None
    text_chunks: list = field(default_factory=list)

    @property
    def width(self) -> int:
        return int(self.array.shape[1])

    @property
    def height(self) -> int:
        return int(self.array.shape[0])

    @property
    def channels(self) -> int:
        return int(self.array.shape[2]) if self.array.ndim == 3 else 1

    @property
    def bit_depth(self) -> int:
        return 16 if self.array.dtype == np.uint16 else 8

    @property
    def has_alpha(self) -> bool:
        return self.channels in (2, 4)


def to_float(array: np.ndarray) -> np.ndarray:
    """Convert pixels to ``float32`` in [0, 1].

    ``uint8`` is divided by 255, ``uint16`` by 65535, ``bool`` becomes 0/1; float input is returned as
    ``float32`` unchanged in value. ``from_float(to_float(a), a.dtype)`` gives back ``a`` exactly.

    Examples
    --------
    >>> to_float(np.array([0, 51, 255], np.uint8))
    array([0. , 0.2, 1. ], dtype=float32)
    """
    a = np.asarray(array)
    if a.dtype in (np.uint8, np.uint16):
        out = a.astype(np.float32)
        out /= np.float32(255.0 if a.dtype == np.uint8 else 65535.0)
        return out
    if a.dtype == np.bool_:
        return a.astype(np.float32)
    if np.issubdtype(a.dtype, np.floating):
        return a.astype(np.float32, copy=False)
    raise TypeError(f"to_float expects uint8, uint16, bool or float pixels, got {a.dtype}")


def from_float(f: np.ndarray, dtype: Any = np.uint8) -> np.ndarray:
    """Convert float pixels in [0, 1] to ``uint8`` or ``uint16``: clipped, rounded to nearest, NaN -> 0.

    Examples
    --------
    >>> from_float(np.array([-0.5, 0.2, 0.5, 1.7], np.float32), np.uint8)
    array([  0,  51, 128, 255], dtype=uint8)
    """
    dt = np.dtype(dtype)
    if dt == np.uint8:
        scale = 255.0
    elif dt == np.uint16:
        scale = 65535.0
    else:
        raise TypeError(f"from_float can make uint8 or uint16 pixels, not {dt}")
    a = np.asarray(f)
    work = np.nan_to_num(a.astype(np.float32), copy=False, nan=0.0, posinf=1.0, neginf=0.0)
    np.clip(work, 0.0, 1.0, out=work)
    work *= np.float32(scale)
    # Round half up (x + 0.5, floor): symmetric with the 16 -> 8-bit reduction used on save.
    work += np.float32(0.5)
    np.floor(work, out=work)
    return work.astype(dt)


def to_8bit(array: np.ndarray) -> np.ndarray:
    """``uint16`` -> ``uint8`` rounded to nearest (``round(x / 257)``), exact and fast."""
    if array.dtype == np.uint8:
        return array
    return ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)


def deep_to_uint16(a: np.ndarray, notes: list[str], what: str) -> np.ndarray:
    """32-bit integer or float pixels -> uint16: kept exactly when they fit, else rescaled, with a note."""
    if np.issubdtype(a.dtype, np.integer):
        lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
        if lo >= 0 and hi <= 65535:
            notes.append(f"stored {what} pixels as 16-bit (values fit, nothing lost)")
            return a.astype(np.uint16)
        notes.append(f"rescaled {what} pixels from [{lo}, {hi}] to 16-bit")
        f = (a.astype(np.float64) - lo) / max(hi - lo, 1)
        return from_float(f, np.uint16)
    f = a.astype(np.float32)
    finite = f[np.isfinite(f)]
    flo, fhi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if flo >= 0.0 and fhi <= 1.0:
        notes.append(f"converted {what} pixels in [0, 1] to 16-bit")
        return from_float(f, np.uint16)
    notes.append(f"rescaled {what} pixels from [{flo:g}, {fhi:g}] to 16-bit")
    return from_float((f - flo) / (fhi - flo if fhi > flo else 1.0), np.uint16)


def from_cv2(arr: np.ndarray, gray: bool) -> np.ndarray:
    """OpenCV's BGR/BGRA (or gray) result -> our RGB/RGBA/gray/gray+alpha layout."""
    import cv2

    if arr.ndim == 2:
        return arr[:, :, None]
    c = arr.shape[2]
    if c == 3:
        out = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
        return out[:, :, :1] if gray else out
    if c == 4:
        out = cv2.cvtColor(arr, cv2.COLOR_BGRA2RGBA)
        return np.ascontiguousarray(out[:, :, [0, 3]]) if gray else out
    if c in (1, 2):
        return arr
    raise InputError(f"unsupported image with {c} channels", "convert it to RGB or RGBA first")


def to_pil(data: ImageData, array: np.ndarray | None = None) -> Image.Image:
    """The closest Pillow image: L, LA, RGB, RGBA, or I;16 for 16-bit gray.

    Pillow has no 16-bit RGB, RGBA or LA mode, so those become 8-bit (rounded to nearest). The ICC profile is
    attached as ``info["icc_profile"]`` when it fits the pixels.

    Examples
    --------
    >>> to_pil(ImageData(np.zeros((2, 3, 4), np.uint16))).mode
    'RGBA'
    """
    arr = check_array(data.array if array is None else array)
    c = arr.shape[2]
    if c == 1:
        im = Image.fromarray(np.ascontiguousarray(arr[:, :, 0]))
    else:
        im = Image.fromarray(np.ascontiguousarray(to_8bit(arr)))
    if data.icc_profile and icc_fits(data.icc_profile, c):
        im.info["icc_profile"] = data.icc_profile
    return im


def check_array(arr: np.ndarray) -> np.ndarray:
    """``arr`` as an H x W x C ``uint8``/``uint16`` array (H x W gets C = 1); ValueError for anything else."""
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"image arrays are H x W x C with C in 1..4, got shape {arr.shape}")
    if arr.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"image arrays are uint8 or uint16, got {arr.dtype} (use from_float to convert)")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"image array is empty (shape {arr.shape})")
    return arr
