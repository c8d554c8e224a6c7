"""TIFF: header metadata without decoding, deep (16/32-bit) decoding, and the writer (tifffile, deflate,
horizontal predictor, parallel strips; the EXIF and GPS directories attached afterwards)."""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path
from typing import IO, Any, cast

import numpy as np
from PIL import Image

from crispedit.errors import InputError
from crispedit.io.exif import EXIF_IFD, GPS_IFD, normalise_exif
from crispedit.io.image import deep_to_uint16, from_cv2

__all__ = ["is_tiff", "read_tiff_meta", "decode_tiff_deep", "write_tiff"]

logger = logging.getLogger(__name__)

# Baseline TIFF tags that belong in an EXIF block; structural tags (size, strips, compression...) do not.
_EXIF_KEEP = (270, 271, 272, 274, 282, 283, 296, 305, 306, 315, 33432)
# Placeholder tag codes that sort just below the real Exif / GPS pointer tags; tifffile refuses to write the
# real ones, so we write these and patch the code afterwards.
_PLACEHOLDER = {EXIF_IFD: 34664, GPS_IFD: 34852}
_IFD0_TEXT = (270, 271, 272, 315, 33432)


# ---- reading -----------------------------------------------------------------------------------------------


def is_tiff(path: Path) -> bool:
    """Whether the file starts with a TIFF or BigTIFF signature."""
    try:
        with open(path, "rb") as fh:
            return fh.read(4) in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
    except OSError:
        return False


def read_tiff_meta(path: Path) -> dict:
    """Header facts and metadata of a TIFF's first page, read without decoding pixels."""
    meta: dict[str, Any] = {"width": 0, "height": 0, "bits": 8, "photometric": None, "icc": None,
                            "dpi": None, "orientation": 1, "exif": None}
    with open(path, "rb") as fp:
        src = Image.Exif()
        src.load_from_fp(fp)
        meta["width"], meta["height"] = int(src.get(256, 0)), int(src.get(257, 0))
        bits = src.get(258, 1)
        meta["bits"] = max(bits) if isinstance(bits, tuple) else int(bits)
        meta["photometric"] = src.get(262)
        meta["orientation"] = int(src.get(274, 1) or 1)
        icc = src.get(34675)
        meta["icc"] = bytes(icc) if isinstance(icc, (bytes, bytearray)) and icc else None
        try:
            unit = int(src.get(296, 2))
            x, y = float(src[282]), float(src[283])
            if unit in (2, 3) and x > 0 and y > 0:
                meta["dpi"] = (x, y) if unit == 2 else (x * 2.54, y * 2.54)
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            pass
        meta["exif"] = _exif_block(src)
    return meta


def _exif_block(src: Image.Exif) -> bytes | None:
    """Build an EXIF block from a TIFF's descriptive tags and its Exif / GPS sub-directories."""
    try:
        new = Image.Exif()
        for tag in _EXIF_KEEP:
            if tag in src:
                value = src[tag]
                if tag == 270 and isinstance(value, str) and (
                    value.lstrip()[:1] in ("{", "<") or value.startswith("ImageJ=")
                ):
                    continue  # machine metadata written by tifffile / ImageJ / OME, not a description
                new[tag] = value
        for sub in (EXIF_IFD, GPS_IFD):
            if sub in src:
                d = src.get_ifd(sub)
                if d:
                    new.get_ifd(sub).update(d)
        if len(new) == 0 and not any(new.get_ifd(s) for s in (EXIF_IFD, GPS_IFD)):
            return None
        return normalise_exif(new.tobytes())
    except Exception:  # noqa: BLE001 - metadata is best effort
        return None


def decode_tiff_deep(path: Path, notes: list[str]) -> np.ndarray:
    """16-bit (or 32-bit) gray/RGB TIFF: tifffile, with OpenCV (libtiff, every codec) as the fallback."""
    import tifffile

    size = path.stat().st_size
    try:
        with tifffile.TiffFile(path) as tf:
            page = cast(tifffile.TiffPage, tf.pages.first if hasattr(tf.pages, "first") else tf.pages[0])
            for off, cnt in zip(page.dataoffsets, page.databytecounts):
                if off + cnt > size:
                    raise InputError(f"cannot decode {path.name}: the file is truncated (the TIFF ends early)",
                                     "re-export or re-download the image")
            photometric = int(page.photometric)
            planar = int(page.planarconfig)
            arr = page.asarray()
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - e.g. a codec tifffile lacks without imagecodecs (LZW)
        logger.info("tifffile cannot decode %s (%s: %s); decoding with OpenCV", path.name, type(e).__name__, e)
        return _decode_cv2(path)
    if arr.ndim == 3 and planar == 2:
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise InputError(f"unsupported TIFF layout in {path.name} (shape {arr.shape})",
                         "save it as a single-page gray or RGB TIFF")
    c = arr.shape[2]
    if photometric in (0, 1) and c > 2 or photometric == 2 and c > 4:
        notes.append(f"kept the first {2 if photometric in (0, 1) else 4} of {c} channels")
        arr = arr[:, :, : (2 if photometric in (0, 1) else 4)]
    if arr.dtype == np.uint16 or arr.dtype == np.uint8:
        pass
    elif arr.dtype.kind in "iuf":
        bits = arr.dtype.itemsize * 8
        arr = deep_to_uint16(arr, notes, f"{bits}-bit {'float' if arr.dtype.kind == 'f' else 'integer'}")
    else:
        raise InputError(f"unsupported TIFF sample type {arr.dtype} in {path.name}", "save it as 8- or 16-bit")
    if photometric == 0:  # min-is-white
        arr = np.iinfo(arr.dtype).max - arr
    return arr


def _decode_cv2(path: Path) -> np.ndarray:
    import cv2

    buf = np.fromfile(path, dtype=np.uint8)
    arr = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise InputError(f"cannot decode {path.name}: the TIFF is damaged or uses an unsupported layout",
                         "re-export it as an uncompressed or deflate TIFF")
    return from_cv2(arr, gray=False)


# ---- writing -----------------------------------------------------------------------------------------------


def write_tiff(f: IO[bytes], arr: np.ndarray, icc: bytes | None, exif: bytes | None, dpi, notes: list[str], *,
                xmp: bytes | None = None) -> None:
    """Write ``arr`` as a deflate TIFF (tifffile, horizontal predictor, straight alpha) with ICC, dpi, XMP,
    the EXIF's descriptive tags, and its Exif / GPS directories attached afterwards."""
    import tifffile

    c = arr.shape[2]
    ex = None
    extratags: list[tuple] = []
    software: str | bool = "crispedit"
    datetime: str | None = None
    subifds: dict[int, dict] = {}
    if exif:
        try:
            ex = Image.Exif()
            ex.load(exif)
            for tag in _IFD0_TEXT:
                v = ex.get(tag)
                if isinstance(v, str) and v and v.isascii():
                    extratags.append((tag, "s", 0, v, True))
            sw = ex.get(305)
            if isinstance(sw, str) and sw and sw.isascii():
                software = sw
            dt = ex.get(306)
            if isinstance(dt, str) and len(dt) == 19 and dt.isascii():
                datetime = dt
            for sub in (EXIF_IFD, GPS_IFD):
                d = ex.get_ifd(sub)
                if d:
                    subifds[sub] = dict(d)
                    extratags.append((_PLACEHOLDER[sub], 4, 1, 0, True))
        except Exception:  # noqa: BLE001
            notes.append("could not read the EXIF data; it is not written to the TIFF")
            extratags, subifds = [], {}
    if xmp:
        extratags.append((700, 1, len(xmp), bytes(xmp), True))  # XMP: tag 700, BYTE
    kwargs: dict[str, Any] = dict(
        photometric="minisblack" if c <= 2 else "rgb",
        planarconfig="contig",
        extrasamples=(2,) if c in (2, 4) else None,  # unassociated (straight) alpha
        compression="zlib",
        compressionargs={"level": 1},
        predictor=True,
        rowsperstrip=max(1, min(arr.shape[0], (1 << 20) // max(1, arr.shape[1] * c * arr.itemsize))),
        maxworkers=min(os.cpu_count() or 1, 8),
        metadata=None,
        software=software,
        iccprofile=icc or None,
        extratags=extratags,
        byteorder="<",
    )
    if datetime:
        kwargs["datetime"] = datetime
    if dpi:
        kwargs["resolution"] = (float(dpi[0]), float(dpi[1]))
        kwargs["resolutionunit"] = "INCH"
    byteorder = kwargs.pop("byteorder")
    start = f.tell()
    if c == 1:
        kwargs.pop("planarconfig")
        kwargs.pop("extrasamples")
    with tifffile.TiffWriter(f, byteorder=byteorder, bigtiff=arr.nbytes > (3 << 30)) as tw:
        tw.write(arr[:, :, 0] if c == 1 else arr, **kwargs)
    if subifds:
        try:
            _attach_ifds(f, start, subifds)
        except Exception as e:  # noqa: BLE001 - the image is fine without the camera EXIF
            logger.info("EXIF / GPS directories not attached to the TIFF: %s", e)
            notes.append("could not write the EXIF camera data into the TIFF")


def _attach_ifds(f: IO[bytes], start: int, subifds: dict[int, dict]) -> None:
    """Append Exif/GPS directories to a classic little-endian TIFF and point the placeholder tags at them."""
    from PIL import TiffImagePlugin

    f.seek(start)
    head = f.read(8)
    if head[:4] != b"II*\x00":
        raise ValueError("not a classic little-endian TIFF")
    (ifd0,) = struct.unpack("<I", head[4:8])
    f.seek(start + ifd0)
    (n,) = struct.unpack("<H", f.read(2))
    entries = f.read(12 * n)
    positions: dict[int, int] = {}
    for i in range(n):
        tag = struct.unpack("<H", entries[12 * i : 12 * i + 2])[0]
        for real, placeholder in _PLACEHOLDER.items():
            if tag == placeholder:
                positions[real] = start + ifd0 + 2 + 12 * i
    for real, d in subifds.items():
        if real not in positions:
            continue
        f.seek(0, os.SEEK_END)
        end = f.tell()
        if end % 2:
            f.write(b"\x00")
            end += 1
        ifd = TiffImagePlugin.ImageFileDirectory_v2(ifh=b"II*\x00\x08\x00\x00\x00")
        for tag, value in d.items():
            if isinstance(value, dict):
                continue  # nested directories (interoperability) are not carried
            ifd[tag] = value
        blob = ifd.tobytes(end - start)
        f.write(blob)
        f.seek(positions[real])
        f.write(struct.pack("<HHII", real, 4, 1, end - start))
    f.seek(0, os.SEEK_END)
