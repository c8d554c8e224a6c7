"""EXIF orientation and the metadata that travels with the pixels: EXIF, ICC profile, resolution.

EXIF bytes follow Pillow's convention: they start with ``b"Exif\\x00\\x00"`` and hold a TIFF structure. The
orientation is applied on load with the semantics of ``PIL.ImageOps.exif_transpose`` and reset to 1 in the EXIF
kept for saving (patched in place, so maker notes and offsets do not move).
"""

from __future__ import annotations

import struct

import numpy as np
from PIL import Image

__all__ = [
    "EXIF_PREFIX", "ORIENTATION", "EXIF_IFD", "GPS_IFD", "ORIENTATION_NAMES", "normalise_exif", "exif_from_pil",
    "exif_orientation", "reset_orientation", "apply_orientation", "icc_space", "icc_fits", "dpi_from_info",
]

EXIF_PREFIX = b"Exif\x00\x00"
ORIENTATION = 0x0112
EXIF_IFD = 0x8769
GPS_IFD = 0x8825

ORIENTATION_NAMES = {
    2: "mirrored left-right",
    3: "rotated 180°",
    4: "mirrored top-bottom",
    5: "transposed",
    6: "rotated 90° clockwise",
    7: "transversed",
    8: "rotated 90° counter-clockwise",
}


def normalise_exif(raw: bytes | None) -> bytes | None:
    """EXIF in Pillow's convention (``Exif\\0\\0`` + TIFF structure), or None."""
    if not raw:
        return None
    raw = bytes(raw)
    if raw.startswith(EXIF_PREFIX):
        return raw
    if raw[:4] in (b"II*\x00", b"MM\x00*"):
        return EXIF_PREFIX + raw
    return None


def exif_from_pil(im: Image.Image) -> bytes | None:
    """The EXIF of an opened Pillow image in Pillow's convention (``info["exif"]``, else ``getexif()``), or None."""
    raw = im.info.get("exif")
    if raw:
        return normalise_exif(raw)
    try:
        ex = im.getexif()
    except Exception:  # noqa: BLE001 - metadata is best effort
        return None
    if len(ex) == 0:
        return None
    try:
        return normalise_exif(ex.tobytes())
    except Exception:  # noqa: BLE001
        return None


def _orientation_entry(tiff: bytes | bytearray) -> tuple[str, int] | None:
    """Byte order and position of the orientation value inside IFD0 of a TIFF structure, or None."""
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return None
    bo = "<" if tiff[:2] == b"II" else ">"
    (ifd,) = struct.unpack(bo + "I", tiff[4:8])
    if ifd + 2 > len(tiff):
        return None
    (n,) = struct.unpack(bo + "H", tiff[ifd : ifd + 2])
    for i in range(n):
        e = ifd + 2 + 12 * i
        if e + 12 > len(tiff):
            return None
        tag, typ, count = struct.unpack(bo + "HHI", tiff[e : e + 8])
        if tag == ORIENTATION:
            if typ == 3 and count >= 1:
                return bo, e + 8
            return None
    return None


def exif_orientation(exif: bytes) -> int | None:
    """Orientation value (1..8) from raw EXIF, None when absent or unreadable."""
    tiff = exif[len(EXIF_PREFIX):] if exif.startswith(EXIF_PREFIX) else exif
    try:
        loc = _orientation_entry(tiff)
        if loc is not None:
            bo, pos = loc
            return int(struct.unpack(bo + "H", tiff[pos : pos + 2])[0])
    except struct.error:
        pass
    try:  # unusual encodings (orientation stored as LONG, ...)
        ex = Image.Exif()
        ex.load(exif)
        value = ex.get(ORIENTATION)
        return int(value) if value is not None else None
    except Exception:  # noqa: BLE001
        return None


def reset_orientation(exif: bytes) -> bytes | None:
    """The same EXIF with orientation 1. Patched in place so nothing else (maker notes...) moves."""
    tiff = bytearray(exif[len(EXIF_PREFIX):])
    try:
        loc = _orientation_entry(tiff)
    except struct.error:
        loc = None
    if loc is not None:
        bo, pos = loc
        tiff[pos : pos + 2] = struct.pack(bo + "H", 1)
        return EXIF_PREFIX + bytes(tiff)
    try:
        ex = Image.Exif()
        ex.load(exif)
        if ex.get(ORIENTATION, 1) in (1, None):
            return exif
        ex[ORIENTATION] = 1
        return normalise_exif(ex.tobytes())
    except Exception:  # noqa: BLE001 - unreadable EXIF is dropped rather than written back wrong
        return None


def apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """The transform of ``PIL.ImageOps.exif_transpose`` for EXIF orientation 2..8, on an H x W x C array."""
    if orientation == 2:
        return arr[:, ::-1]
    if orientation == 3:
        return arr[::-1, ::-1]
    if orientation == 4:
        return arr[::-1]
    if orientation == 5:
        return arr.transpose(1, 0, 2)
    if orientation == 6:
        return np.rot90(arr, -1)
    if orientation == 7:
        return arr.transpose(1, 0, 2)[::-1, ::-1]
    if orientation == 8:
        return np.rot90(arr, 1)
    return arr


def icc_space(icc: bytes) -> str | None:
    """The data colour space of an ICC profile (header bytes 16-20, e.g. ``'RGB'``, ``'GRAY'``, ``'CMYK'``), or None."""
    if len(icc) < 20:
        return None
    return icc[16:20].decode("latin-1").strip() or None


def icc_fits(icc: bytes, channels: int) -> bool:
    """Whether an ICC profile's data colour space suits gray (1-2 channels) or RGB (3-4 channels) pixels."""
    space = icc_space(icc)
    if space is None:
        return False
    return space == ("GRAY" if channels <= 2 else "RGB")


def dpi_from_info(info: dict) -> tuple | None:
    """``(x, y)`` dots per inch from a Pillow ``info`` dict, rounded to 0.01; None when absent or not positive."""
    dpi = info.get("dpi")
    if not dpi:
        return None
    try:
        x, y = (float(v) for v in dpi[:2])
    except (TypeError, ValueError):
        return None
    if not (x > 0 and y > 0 and np.isfinite(x) and np.isfinite(y)):
        return None
    return (round(x, 2), round(y, 2))  # PNG stores dots per metre: 11811 -> 299.9994 -> 300.0
