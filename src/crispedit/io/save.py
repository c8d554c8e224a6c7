"""Saving: format by extension, atomic writes, inputs never replaced, metadata kept where the format can hold it,
and a note measuring what a lossy write changed."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

import numpy as np

from crispedit.errors import InputError
from crispedit.io import jpeg, png, tiff, webp
from crispedit.io.exif import icc_fits, icc_space, normalise_exif, reset_orientation
from crispedit.io.image import ImageData, check_array, to_8bit
from crispedit.io.load import load_image

__all__ = ["OUTPUT_FORMATS", "save_image"]

#: Output file extensions and the format each one writes.
OUTPUT_FORMATS: dict[str, str] = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".jpe": "JPEG",
    ".jfif": "JPEG",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}


def save_image(
    data: ImageData,
    path: str | os.PathLike,
    array: np.ndarray | None = None,
    *,
    overwrite: bool = False,
    inputs: Sequence[str | os.PathLike] = (),
    quality: int | None = None,
    reencode: bool = False,
    info: dict | None = None,
) -> Path:
    """Write an image atomically, keeping bit depth, alpha, ICC profile, EXIF, XMP, PNG text and dpi where the
    format can.

    JPEG in, JPEG out: when ``data`` was loaded from a JPEG and has its size, only the MCUs (8x8 / 16x16 px
    blocks) whose pixels differ from the input are re-encoded, with the input's quantisation tables and chroma
    subsampling; every other block keeps its DCT coefficients bit for bit and every APPn / COM segment (EXIF,
    ICC, XMP, IPTC, comments) is copied byte for byte (:func:`crispedit.jpeg_lossless.splice_jpeg`). Other lossy
    writes (a JPEG from a PNG, lossy WebP, ``reencode=True``) measure the written file and add a note saying how
    many pixels outside the edit changed and by how much.

    Parameters
    ----------
    data : ImageData
        Pixels and metadata; ``data.array`` is written unless ``array`` is given.
    path : str or path-like
        Output file; its extension picks the format (.png, .jpg/.jpeg, .webp, .tif/.tiff).
    array : numpy.ndarray, optional
        Pixels to write instead of ``data.array`` (same conventions), with ``data``'s metadata.
    overwrite : bool
        Allow ``path`` to be one of ``inputs`` or ``data.source``.
    inputs : sequence of path-like
        Files this output must not replace (the inputs of the edit).
    quality : int, optional
        1..100 for JPEG (default 95, 4:4:4 chroma) and WebP (lossy at this quality; by default WebP is lossless
        unless the source was lossy, then quality 95). Ignored for PNG and TIFF. A quality given for a JPEG
        output implies ``reencode``.
    reencode : bool
        JPEG to JPEG: decode and re-encode the whole picture (the old behaviour) instead of the block-level copy.
    info : dict, optional
        Filled with what the write did: ``format``, ``mode`` (``'block-copy'``, ``'reencode'``, ``'lossless'``)
        and, for block-level JPEG, the :class:`~crispedit.jpeg_lossless.JpegSplice` fields (``mcus_reencoded``,
        ``mcus_total``, ``verified``...); for lossy writes, ``pixels_changed_outside_edit`` and
        ``max_change_outside_edit`` (levels).

    Returns
    -------
    pathlib.Path
        The resolved path written.

    Raises
    ------
    crispedit.errors.InputError
        Unknown extension, missing output folder, output equal to an input, pixels the format cannot hold
        (transparency in JPEG, over 16383 px in WebP), or a write failure (disk full, permissions).
    """
    arr = check_array(data.array if array is None else array)
    path = Path(path).expanduser()
    ext = path.suffix.lower()
    fmt = OUTPUT_FORMATS.get(ext)
    if fmt is None:
        shown = ext or f"no extension ({path.name})"
        raise InputError(f"unknown output format: {shown}", "name the output .png, .jpg, .webp or .tif")
    if quality is not None and (isinstance(quality, bool) or not 1 <= int(quality) <= 100):
        raise InputError(f"quality must be between 1 and 100, got {quality}", "pass --quality 1..100")
    out = path.resolve()
    folder = out.parent
    if not folder.is_dir():
        raise InputError(f"output folder does not exist: {folder}", "create it first or choose another -o")
    if out.is_dir():
        raise InputError(f"the output {out} is a folder", "give a file name such as out.png")
    if not overwrite:
        guarded = [Path(p) for p in inputs]
        if data.source is not None:
            guarded.append(Path(data.source))
        for p in guarded:
            if _same_file(out, p):
                raise InputError(f"would overwrite the input {p}", "choose another -o or pass --overwrite")

    notes = data.notes
    icc = data.icc_profile
    c = arr.shape[2]
    if icc and not icc_fits(icc, 3 if fmt == "WEBP" else c):
        notes.append(f"did not embed the {icc_space(icc) or 'unknown'} colour profile: it does not fit "
                     f"{'gray' if c <= 2 else 'RGB'} pixels")
        icc = None
    exif = normalise_exif(data.exif)
    if exif:  # the pixels are upright: never ask a viewer to rotate them again
        exif = reset_orientation(exif)
    dpi = data.dpi if data.dpi and all(v and v > 0 for v in data.dpi[:2]) else None
    xmp = getattr(data, "xmp", None) or None
    text_chunks = list(getattr(data, "text_chunks", None) or [])
    if fmt != "JPEG":
        jpeg.source_segments(data, notes, keep=False, fmt=fmt)
    if dpi and fmt == "WEBP" and tuple(round(v) for v in dpi[:2]) != (72, 72):
        notes.append(f"WebP has no resolution field: the {dpi[0]:g}x{dpi[1]:g} dpi are not kept (EXIF keeps "
                     "its own copy when there is one)")
    if text_chunks and fmt != "PNG":
        notes.append(f"{len(text_chunks)} PNG text chunk(s) ({_text_keywords(text_chunks)}) not kept: "
                     f"{fmt} has no place for them (save as .png to keep them)")
    record = info if info is not None else {}
    record["format"] = fmt
    lossy = False

    if fmt == "PNG":
        writer: Callable[[IO[bytes]], object] = lambda f: png.write_png(  # noqa: E731
            f, arr, icc, exif, dpi, xmp=xmp, text_chunks=text_chunks)
    elif fmt == "TIFF":
        writer = lambda f: tiff.write_tiff(f, arr, icc, exif, dpi, notes, xmp=xmp)  # noqa: E731
    elif fmt == "JPEG":
        if not reencode and quality is None:
            block = jpeg.block_write(data, arr, out, notes, record)
            if block is not None:
                _atomic_write(out, lambda f: f.write(block))
                return out
        pil = jpeg.prepare_jpeg(arr, out.name, notes)
        extra = jpeg.source_segments(data, notes, keep=True)
        writer = lambda f: jpeg.write_jpeg(f, pil, quality, icc, exif, dpi, notes, xmp=xmp,  # noqa: E731
                                           extra_segments=extra)
        lossy = True
    else:
        pil, lossless = webp.prepare_webp(arr, data, quality, out.name, notes)
        writer = lambda f: webp.write_webp(f, pil, lossless, quality, icc, exif, xmp=xmp)  # noqa: E731
        lossy = not lossless
    _atomic_write(out, writer)
    record["mode"] = "reencode" if lossy else "lossless"
    if lossy:
        _note_lossy_change(data, arr, out, fmt, notes, record)
    return out


def _text_keywords(chunks: list) -> str:
    names = []
    for _ctype, payload in chunks:
        name = bytes(payload).split(b"\x00", 1)[0].decode("latin-1", "replace")
        if name not in names:
            names.append(name)
    return ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")


def _source_pixels(data: ImageData, shape: tuple) -> np.ndarray | None:
    """The input file's pixels as ``load_image`` gives them (oriented, 8-bit), when they match ``shape``."""
    src = data.source
    if src is None or not Path(src).is_file():
        return None
    try:
        original = load_image(src).array
    except Exception:  # noqa: BLE001 - the comparison is informative only
        return None
    return original if original.shape == tuple(shape) else None


def _note_lossy_change(data: ImageData, arr: np.ndarray, out: Path, fmt: str, notes: list[str],
                       record: dict) -> None:
    """Decode what was written and say, in one note, how many pixels outside the edit the lossy codec changed."""
    try:
        written = load_image(out).array
    except Exception:  # noqa: BLE001
        return
    target = to_8bit(arr)
    if target.shape[2] in (2, 4) and written.shape[2] == target.shape[2] - 1:
        target = target[:, :, :-1]
    if written.shape != target.shape:
        return
    original = _source_pixels(data, arr.shape)
    if original is not None:
        outside = np.all(original == arr, axis=2)
        where = "outside the edit"
    else:
        outside = np.ones(arr.shape[:2], bool)
        where = "in the picture"
    delta = np.abs(written.astype(np.int16) - target.astype(np.int16)).max(axis=2)
    moved = (delta > 0) & outside
    n = int(np.count_nonzero(moved))
    worst = int(delta[moved].max()) if n else 0
    record["pixels_changed_outside_edit"] = n
    record["max_change_outside_edit"] = worst
    if n:
        hint = ("keep the input's JPEG blocks by not passing --reencode" if data.format == "JPEG" and fmt == "JPEG"
                else "save as .png or .tif (or lossless .webp) to keep them")
        notes.append(f"lossy {fmt}: {n:,} pixels {where} changed (up to {worst} levels) by re-encoding; {hint}")


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.resolve() == Path(b).expanduser().resolve():
            return True
        return a.exists() and Path(b).exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _atomic_write(out: Path, writer: Callable[[IO[bytes]], object]) -> None:
    """Write via a temporary file in the same folder, then rename over ``out``; nothing is left on failure."""
    tmp = out.with_name(f".{out.name}.{secrets.token_hex(6)}.tmp")
    try:
        f = open(tmp, "x+b")  # exclusive create; permissions follow the umask like any new file
    except OSError as e:
        raise InputError(f"cannot write to {out.parent}: {e.strerror or e}",
                         "check the folder's permissions or choose another -o") from e
    try:
        with f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError):
            raise InputError(f"could not write {out}: {e.strerror or e}",
                             "check free disk space and permissions, or choose another -o") from e
        raise
