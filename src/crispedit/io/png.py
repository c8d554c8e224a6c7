"""PNG: reading chunk headers (eXIf, text chunks, completeness), 16-bit decoding, and a fast parallel writer.

The writer uses one cheap filter (``Up``) and zlib level 1, compressed in parallel row bands that are stitched
into one deflate stream (a 3840x2160 RGB photo: ~0.3 s on two idle cores, against ~7 s for Pillow's default and
~0.8 s for OpenCV at level 1 with its default filters). Format: PNG specification (W3C, third edition).
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import numpy as np

from crispedit.errors import InputError
from crispedit.io.exif import EXIF_PREFIX
from crispedit.io.image import from_cv2

__all__ = ["PNG_SIGNATURE", "XMP_KEYWORD", "read_text_chunks", "itxt_text", "scan_png", "decode_png16", "write_png"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TEXT_TYPES = (b"tEXt", b"zTXt", b"iTXt")
XMP_KEYWORD = b"XML:com.adobe.xmp"
_BAND_BYTES = 4 << 20  # rows compressed per task


# ---- reading -----------------------------------------------------------------------------------------------


def read_text_chunks(path: Path) -> list[tuple[str, bytes]]:
    """All tEXt / zTXt / iTXt chunks of a PNG, raw, in file order (chunk headers walked, nothing inflated)."""
    chunks: list[tuple[str, bytes]] = []
    with open(path, "rb") as f:
        for ctype, length in _chunk_headers(f, path.stat().st_size):
            if ctype in _TEXT_TYPES:
                chunks.append((ctype.decode("ascii"), f.read(length)))
    return chunks


def _chunk_headers(f: IO[bytes], size: int) -> Iterator[tuple[bytes, int]]:
    """(type, length) of each whole chunk of the PNG open in ``f`` (``size`` bytes), in file order, with ``f`` at
    the chunk's data; nothing for a file without the PNG signature; stops after IEND or before a truncated chunk."""
    if f.read(8) != PNG_SIGNATURE:
        return
    pos = 8
    while pos + 12 <= size:
        f.seek(pos)
        length, ctype = struct.unpack(">I4s", f.read(8))
        if pos + 12 + length > size:
            return
        yield ctype, length
        if ctype == b"IEND":
            return
        pos += 12 + length


def itxt_text(payload: bytes) -> tuple[bytes, bytes] | None:
    """(keyword, UTF-8 text) of an iTXt payload, or None when it is malformed."""
    try:
        keyword, rest = payload.split(b"\x00", 1)
        flag, _method, rest = rest[0], rest[1], rest[2:]
        _lang, rest = rest.split(b"\x00", 1)
        _translated, text = rest.split(b"\x00", 1)
        return keyword, (zlib.decompress(text) if flag else text)
    except (ValueError, IndexError, zlib.error):
        return None


def scan_png(path: Path) -> dict:
    """Walk the chunk headers of a PNG (no decompression): IHDR fields, eXIf data, whether it is complete."""
    out: dict[str, Any] = {"bit_depth": 8, "color_type": 2, "exif": None, "complete": False}
    with open(path, "rb") as f:
        for ctype, length in _chunk_headers(f, path.stat().st_size):
            if ctype == b"IHDR" and length >= 13:
                ihdr = f.read(13)
                out["bit_depth"], out["color_type"] = ihdr[8], ihdr[9]
            elif ctype == b"eXIf" and out["exif"] is None:
                out["exif"] = f.read(length)
            elif ctype == b"IEND":
                out["complete"] = True
    return out


def decode_png16(path: Path, color_type: int) -> np.ndarray:
    """Pixels of a 16-bit PNG (OpenCV: Pillow truncates 16-bit RGB) in our channel layout."""
    import cv2

    buf = np.fromfile(path, dtype=np.uint8)
    arr = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if arr is None or arr.dtype != np.uint16:
        raise InputError(f"cannot decode the 16-bit PNG {path.name}: the file is damaged or too large for OpenCV",
                         "re-export the image (over 2^30 pixels: set CV_IO_MAX_IMAGE_PIXELS)")
    return from_cv2(arr, gray=color_type in (0, 4))


# ---- writing -----------------------------------------------------------------------------------------------


def _chunk(f: IO[bytes], ctype: bytes, payload: bytes | memoryview) -> None:
    f.write(struct.pack(">I", len(payload)))
    f.write(ctype)
    f.write(payload)
    f.write(struct.pack(">I", zlib.crc32(payload, zlib.crc32(ctype)) & 0xFFFFFFFF))


def _adler32_combine(a1: int, a2: int, len2: int) -> int:
    """Adler-32 of A + B from adler(A), adler(B) and len(B)."""
    base = 65521
    s1a, s2a = a1 & 0xFFFF, a1 >> 16
    s1b, s2b = a2 & 0xFFFF, a2 >> 16
    n = len2 % base
    s1 = (s1a + s1b - 1) % base
    s2 = (s2a + n * s1a + s2b - n) % base
    return (s2 << 16) | s1


def _band(rows: np.ndarray, prev: np.ndarray | None, last: bool, level: int) -> tuple[bytes, int, int]:
    """Filter rows with PNG filter 2 (Up) and deflate them as one piece of a larger stream."""
    n, row_bytes = rows.shape
    buf = np.empty((n, row_bytes + 1), np.uint8)
    buf[:, 0] = 2
    if prev is None:
        buf[0, 1:] = rows[0]
    else:
        np.subtract(rows[0], prev, out=buf[0, 1:])
    if n > 1:
        np.subtract(rows[1:], rows[:-1], out=buf[1:, 1:])
    raw = buf.data.cast("B")
    co = zlib.compressobj(level, zlib.DEFLATED, -15, 9)
    out = co.compress(raw) + co.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)
    return out, zlib.adler32(raw), raw.nbytes


def write_png(f: IO[bytes], arr: np.ndarray, icc: bytes | None, exif: bytes | None, dpi, level: int = 1, *,
               xmp: bytes | None = None, text_chunks: Sequence = ()) -> None:
    """Write ``arr`` (H x W x C, 8 or 16 bit) as PNG into ``f``: ICC (iCCP), dpi (pHYs), EXIF (eXIf), XMP and
    text chunks, then the pixels filtered with ``Up`` and deflated at ``level`` in parallel row bands."""
    h, w, c = arr.shape
    depth = 16 if arr.dtype == np.uint16 else 8
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    f.write(PNG_SIGNATURE)
    _chunk(f, b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0))
    if icc:
        _chunk(f, b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc, 6))
    if dpi:
        ppm = [max(1, round(float(v) / 0.0254)) for v in dpi[:2]]
        _chunk(f, b"pHYs", struct.pack(">IIB", ppm[0], ppm[1], 1))
    if exif:
        _chunk(f, b"eXIf", exif[len(EXIF_PREFIX):])
    if xmp:  # iTXt, uncompressed, as Adobe's XMP specification part 3 asks
        _chunk(f, b"iTXt", XMP_KEYWORD + b"\x00\x00\x00\x00\x00" + bytes(xmp))
    for ctype, payload in text_chunks:
        if ctype in ("tEXt", "zTXt", "iTXt"):
            _chunk(f, ctype.encode("ascii"), bytes(payload))
    rows = arr.reshape(h, w * c)
    band = max(1, _BAND_BYTES // (w * c * arr.itemsize))
    starts = list(range(0, h, band))

    def as_png_bytes(block: np.ndarray) -> np.ndarray:
        # PNG stores 16-bit samples big-endian; converted band by band to bound memory.
        if depth == 16:
            return np.ascontiguousarray(block, dtype=">u2").view(np.uint8)
        return np.ascontiguousarray(block)

    def task(i: int) -> tuple[bytes, int, int]:
        r0 = starts[i]
        r1 = min(h, r0 + band)
        prev = as_png_bytes(rows[r0 - 1 : r0])[0] if r0 else None
        return _band(as_png_bytes(rows[r0:r1]), prev, r1 == h, level)

    workers = min(len(starts), os.cpu_count() or 1, 8)
    adler = 1
    first = True

    def emit(piece: bytes, a: int, n: int, is_last: bool) -> None:
        nonlocal adler, first
        adler = _adler32_combine(adler, a, n)
        payload = (b"\x78\x01" if first else b"") + piece + (struct.pack(">I", adler) if is_last else b"")
        first = False
        _chunk(f, b"IDAT", payload)

    if workers <= 1:
        for i in range(len(starts)):
            emit(*task(i), i == len(starts) - 1)
    else:
        with ThreadPoolExecutor(max_workers=workers) as ex:
            for i, res in enumerate(ex.map(task, range(len(starts)))):
                emit(*res, i == len(starts) - 1)
    _chunk(f, b"IEND", b"")
