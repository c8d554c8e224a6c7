"""JPEG writing: the block-level write that keeps the input's untouched MCUs (:mod:`crispedit.jpeg_lossless`),
the whole-picture encode (Pillow, 4:4:4, quality 95 by default), and the input's IPTC / comment segments."""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from crispedit.errors import InputError
from crispedit.io.exif import ORIENTATION_NAMES, apply_orientation, exif_from_pil, exif_orientation
from crispedit.io.image import ImageData, to_8bit
from crispedit.io.load import pillow_limits

__all__ = ["prepare_jpeg", "write_jpeg", "block_write", "source_segments"]

logger = logging.getLogger(__name__)

_MAX_SIDE = 65500


def _drop_opaque_alpha(arr: np.ndarray, fmt_name: str, name: str, notes: list[str]) -> np.ndarray:
    alpha = arr[:, :, -1]
    if alpha.min() != np.iinfo(arr.dtype).max:
        raise InputError(f"{fmt_name} cannot store transparency and {name} has a transparent alpha channel",
                         "save as .png, .webp or .tif to keep it")
    notes.append(f"dropped the fully opaque alpha channel ({fmt_name} has none)")
    return arr[:, :, :-1]


def prepare_jpeg(arr: np.ndarray, name: str, notes: list[str]) -> Image.Image:
    """The Pillow image to encode: refuses over 65500 px per side and real transparency (InputError), drops an
    opaque alpha and reduces 16 bits to 8, each with a note."""
    h, w, c = arr.shape
    if max(h, w) > _MAX_SIDE:
        raise InputError(f"JPEG cannot hold {w}x{h} pixels (at most {_MAX_SIDE} per side)",
                         "save as .png or .tif")
    if c in (2, 4):
        arr = _drop_opaque_alpha(arr, "JPEG", name, notes)
    if arr.dtype == np.uint16:
        notes.append("JPEG holds 8 bits per channel: saved the 16-bit image as 8-bit (use .png or .tif to keep 16)")
        arr = to_8bit(arr)
    if arr.shape[2] == 1:
        return Image.fromarray(np.ascontiguousarray(arr[:, :, 0]))
    return Image.fromarray(np.ascontiguousarray(arr))


def write_jpeg(f, pil: Image.Image, quality, icc, exif, dpi, notes: list[str], xmp: bytes | None = None,
                extra_segments: Sequence[bytes] = ()) -> None:
    """Encode ``pil`` as JPEG into ``f`` (Pillow, 4:4:4, quality 95 unless given) with ICC, EXIF, XMP and dpi;
    ``extra_segments`` (the input's IPTC / comments) are inserted byte for byte."""
    if extra_segments:  # IPTC / comments of a JPEG input: inserted byte for byte after Pillow's own segments
        from crispedit.jpeg_lossless import insert_segments

        buf = io.BytesIO()
        write_jpeg(buf, pil, quality, icc, exif, dpi, notes, xmp)
        f.write(insert_segments(buf.getvalue(), tuple(extra_segments)))
        return
    opts: dict[str, Any] = dict(quality=int(quality) if quality is not None else 95, subsampling=0)
    if xmp and len(xmp) <= 65502:
        opts["xmp"] = bytes(xmp)
    elif xmp:
        notes.append("the XMP packet is too large for one JPEG segment (64 KB) and was not written")
    if icc:
        opts["icc_profile"] = icc
    if dpi:
        opts["dpi"] = (round(float(dpi[0])), round(float(dpi[1])))
    if exif:
        try:
            pil.save(f, "JPEG", exif=exif, **opts)
            return
        except ValueError as e:
            if "exif" not in str(e).lower():
                raise
            f.seek(0)
            f.truncate()
            notes.append("the EXIF data is too large for JPEG (64 KB) and was not written")
    pil.save(f, "JPEG", **opts)


def source_segments(data: ImageData, notes: list[str], keep: bool, fmt: str = "") -> list[bytes]:
    """IPTC (APP13) and comment (COM) segments of a JPEG input: returned to re-insert them into a re-encoded
    JPEG (``keep``), else named in a note as not kept in ``fmt``."""
    if data.format != "JPEG" or data.source is None:
        return []
    try:
        from crispedit.jpeg_lossless import metadata_segments

        with open(data.source, "rb") as fh:
            head = fh.read(1 << 20)
        segs = [s for s in metadata_segments(head) if s[1] in (0xED, 0xFE)]
    except Exception:  # noqa: BLE001 - informative only
        return []
    if segs and not keep:
        what = " and ".join(n for n, m in (("the IPTC record (APP13)", 0xED), ("the comment", 0xFE))
                            if any(s[1] == m for s in segs))
        notes.append(f"{what} of the JPEG input cannot be stored in {fmt} and is not kept")
    return segs


def block_write(data: ImageData, arr: np.ndarray, out: Path, notes: list[str], record: dict) -> bytes | None:
    """The block-level JPEG (see :mod:`crispedit.jpeg_lossless`), or None when the input does not allow it."""
    if data.format != "JPEG" or data.source is None:
        return None
    src = Path(data.source)
    if not src.is_file() or arr.dtype != np.uint8:
        return None
    from crispedit import jpeg_lossless

    def decode_input() -> np.ndarray:  # the input's pixels in its own orientation, as load_image decodes them
        with pillow_limits(size[0] * size[1] + 1), Image.open(src) as im:
            im.load()
            pixels = np.asarray(im)
        return pixels[:, :, None] if pixels.ndim == 2 else pixels

    try:
        with pillow_limits(arr.shape[0] * arr.shape[1] + 1), Image.open(src) as im:
            if im.mode not in ("RGB", "L") or im.format not in ("JPEG", "MPO"):
                raise jpeg_lossless.UnsupportedJpeg(f"{im.mode} pixels")
            orientation = exif_orientation(exif_from_pil(im) or b"") or 1
            size = tuple(im.size)
        edited = arr
        if edited.shape[2] in (2, 4):
            if edited[:, :, -1].min() != 255:
                return None  # transparency: the regular path refuses it with a clear message
            edited = edited[:, :, :-1]
        if orientation in ORIENTATION_NAMES:  # back to the file's own orientation
            edited = apply_orientation(edited, {6: 8, 8: 6}.get(orientation, orientation))
        if edited.shape[:2] != size[::-1]:
            return None  # resized: nothing to keep
        block, report = jpeg_lossless.splice_jpeg(src, decode_input, np.ascontiguousarray(edited))
    except jpeg_lossless.UnsupportedJpeg as e:
        _fallback(notes, f"the input's blocks cannot be kept ({e})")
        return None
    except ImportError:
        _fallback(notes, "the jpeglib package is not installed")
        return None
    except Exception as e:  # noqa: BLE001 - a codec failure falls back to the whole-picture encode, said so
        _fallback(notes, f"the block-level write failed ({type(e).__name__}: {e})")
        return None
    notes.extend(report.notes)
    notes.append(report.summary())
    record.update(report.to_dict())
    return block


def _fallback(notes: list[str], why: str) -> None:
    """Record (note and log) that the whole JPEG is re-encoded instead of block-copied, and why."""
    notes.append(f"re-encoded the whole JPEG: {why}")
    logger.info("JPEG block-level write not used, re-encoding the whole picture: %s", why)
