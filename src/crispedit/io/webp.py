"""WebP writing: lossless unless the source was lossy (JPEG, lossy WebP) or a quality is given; gray becomes RGB."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
from PIL import Image

from crispedit.errors import InputError
from crispedit.io.image import ImageData, to_8bit

__all__ = ["source_lossless", "prepare_webp", "write_webp"]

_MAX_SIDE = 16383


def source_lossless(data: ImageData) -> bool:
    """Whether ``data`` came from a lossless source: PNG, TIFF, in-memory, or a lossless WebP."""
    if data.format == "JPEG":
        return False
    if data.format != "WEBP":
        return True
    try:
        with open(data.source, "rb") as fh:  # type: ignore[arg-type]
            head = fh.read(1 << 16)
    except (OSError, TypeError):
        return False
    pos = 12
    while pos + 8 <= len(head):
        fourcc = head[pos : pos + 4]
        (size,) = struct.unpack("<I", head[pos + 4 : pos + 8])
        if fourcc == b"VP8L":
            return True
        if fourcc == b"VP8 ":
            return False
        if fourcc == b"ANMF":  # animation frame: its image chunks start after a 16-byte header
            pos += 8 + 16
            continue
        pos += 8 + size + (size & 1)
    return False


def prepare_webp(arr: np.ndarray, data: ImageData, quality, name: str, notes: list[str]):
    """(Pillow image, lossless) to encode: refuses over 16383 px per side, 16 bits become 8 and gray becomes
    RGB(A), each with a note; lossless when no quality is given and the source was lossless."""
    h, w, c = arr.shape
    if max(h, w) > _MAX_SIDE:
        raise InputError(f"WebP cannot hold {w}x{h} pixels (at most {_MAX_SIDE} per side)",
                         "save as .png or .tif")
    if arr.dtype == np.uint16:
        notes.append("WebP holds 8 bits per channel: saved the 16-bit image as 8-bit (use .png or .tif to keep 16)")
        arr = to_8bit(arr)
    if c <= 2:
        notes.append("WebP has no gray mode: saved the gray image as " + ("RGB" if c == 1 else "RGBA"))
        gray = arr[:, :, :1]
        arr = np.concatenate([gray, gray, gray] + ([arr[:, :, 1:2]] if c == 2 else []), axis=2)
    lossless = quality is None and source_lossless(data)
    return Image.fromarray(np.ascontiguousarray(arr)), lossless


def write_webp(f, pil: Image.Image, lossless: bool, quality, icc, exif, xmp: bytes | None = None) -> None:
    """Encode ``pil`` as WebP into ``f`` (lossless ``exact``, or lossy at ``quality``, default 95) with ICC, EXIF
    and XMP."""
    opts: dict[str, Any] = {}
    if lossless:
        # exact: keep RGB under fully transparent pixels (the alpha channel is data, not a hint).
        opts.update(lossless=True, quality=0, method=0, exact=True)
    else:
        opts.update(quality=int(quality) if quality is not None else 95, method=4, alpha_quality=100, exact=True)
    if icc:
        opts["icc_profile"] = icc
    if exif:
        opts["exif"] = exif
    if xmp:
        opts["xmp"] = bytes(xmp)
    pil.save(f, "WEBP", **opts)
