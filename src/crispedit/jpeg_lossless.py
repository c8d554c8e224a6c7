"""Write an edited JPEG without generation loss outside the edit: re-encode only the touched MCUs.

A JPEG stores each 8x8 block as quantised DCT coefficients. Decoding and re-encoding the whole picture changes
millions of pixels that nobody edited (one more generation of JPEG loss). This module instead

1. reads the input's quantised DCT coefficients, quantisation tables and chroma subsampling (``jpeglib``, a
   wrapper of libjpeg / libjpeg-turbo);
2. finds the MCUs (minimum coded units: 16x16 px for 4:2:0, 8x8 px for 4:4:4) whose decoded pixels the edit
   changed;
3. encodes the bounding box of those MCUs, cut at MCU boundaries, through the same library with the input's own
   quantisation tables and sampling factors, and copies only the touched MCUs' coefficients into the input's
   coefficient arrays (every other block keeps its coefficients bit for bit);
4. writes the coefficients losslessly (``jpeg_write_coefficients``), restores progressive mode and the restart
   interval with ``jpegtran`` when the input had them (where jpegtran is installed), and re-inserts the input's
   APPn and COM segments (EXIF, ICC, XMP, IPTC, comments) byte for byte;
5. reads the written file's coefficients back and checks that every untouched block is identical.

Decoding the output with the same decoder gives the input's pixels everywhere except in the re-encoded MCUs and
the chroma-upsampling reach around them (at most one chroma sample, i.e. 2 px for 4:2:0, into the neighbouring
MCU). No entropy coder lives here: libjpeg does all codec work; this module only splices coefficient arrays and
walks marker segments (ITU-T T.81, annex B).

Examples
--------
>>> import numpy as np, tempfile, os
>>> from PIL import Image
>>> from crispedit.jpeg_lossless import splice_jpeg
>>> folder = tempfile.mkdtemp()
>>> src = os.path.join(folder, "in.jpg")
>>> Image.fromarray(np.full((32, 48, 3), 128, np.uint8)).save(src, quality=90)
>>> orig = np.asarray(Image.open(src))
>>> edit = orig.copy(); edit[0:4, 0:4] = 0
>>> data, report = splice_jpeg(src, orig, edit)
>>> (report.mcus_reencoded, report.mcus_total, report.verified)
(1, 6, True)
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import cast

import numpy as np

__all__ = ["JpegSplice", "UnsupportedJpeg", "splice_jpeg", "metadata_segments", "header_segments",
           "read_coefficients", "insert_segments", "changed_mcus"]

logger = logging.getLogger(__name__)

#: libjpeg build of ``jpeglib`` used for reading and writing (libjpeg-turbo 2.1: the decoder family Pillow uses).
LIBJPEG_VERSION = "turbo210"

# jpeglib picks its libjpeg build through a process-wide setting: hold this lock while using it.
_LOCK = threading.RLock()

_SOF_BASELINE = (0xC0, 0xC1)
_SOF_PROGRESSIVE = 0xC2
_APP0, _APP15, _COM, _SOS, _DHT, _DRI, _EOI = 0xE0, 0xEF, 0xFE, 0xDA, 0xC4, 0xDD, 0xD9


class UnsupportedJpeg(Exception):
    """The input JPEG cannot be edited at block level (the caller re-encodes instead); ``str`` says why."""


@dataclass
class JpegSplice:
    """What a block-level JPEG write did.

    Attributes
    ----------
    mcus_total, mcus_reencoded : int
        MCUs in the picture, and MCUs whose coefficients were re-encoded from the edited pixels.
    mcu_size : tuple of int
        ``(height, width)`` of one MCU in px (16x16 for 4:2:0, 8x8 for 4:4:4 and gray).
    subsampling : str
        ``'4:2:0'``, ``'4:2:2'``, ``'4:4:4'``, ``'gray'`` or the sampling factors.
    progressive, restart_interval : bool, int
        Mode and restart interval (MCUs, 0 = none) of the written file.
    blocks_total, blocks_identical : int
        8x8 blocks over all components, and how many of the untouched ones read back with identical
        coefficients (equal to ``blocks_total - blocks_reencoded`` when ``verified``).
    blocks_reencoded : int
        8x8 blocks (all components) inside the re-encoded MCUs.
    verified : bool
        The written file was read back: every untouched block has the input's coefficients, every re-encoded
        block the intended ones, and the metadata segments are the input's.
    metadata_segments : int
        APPn/COM segments copied byte for byte.
    bytes_in, bytes_out : int
        File sizes.
    notes : list of str
        Anything not kept (e.g. progressive mode without jpegtran, bytes after the end of image).
    timings : dict
        Seconds per step.
    """

    mcus_total: int
    mcus_reencoded: int
    mcu_size: tuple
    subsampling: str
    progressive: bool
    restart_interval: int
    blocks_total: int = 0
    blocks_reencoded: int = 0
    blocks_identical: int = 0
    verified: bool = False
    metadata_segments: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    notes: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)

    def summary(self) -> str:
        """One line for the user."""
        mode = "progressive" if self.progressive else "baseline"
        check = ("every other block is identical in the coefficient domain (read back)" if self.verified
                 else "the read-back check FAILED")
        return (f"JPEG: re-encoded {self.mcus_reencoded:,} of {self.mcus_total:,} MCUs ({self.mcu_size[1]}x"
                f"{self.mcu_size[0]} px, {self.subsampling} {mode}, the input's tables); {check}; "
                f"{self.metadata_segments} metadata segment(s) kept byte for byte; {self.bytes_in:,} -> "
                f"{self.bytes_out:,} bytes")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mcu_size"] = list(self.mcu_size)
        d["mode"] = "block-copy"
        return d


# ---- marker segments ------------------------------------------------------------------------------------------


def header_segments(data: bytes) -> tuple[list[tuple[int, bytes]], int]:
    """Marker segments from SOI up to the first SOS.

    Parameters
    ----------
    data : bytes
        A JPEG file.

    Returns
    -------
    segments : list of (int, bytes)
        ``(marker, whole segment including 0xFF marker and length)`` in file order, SOI excluded.
    sos : int
        Offset of the first SOS marker.

    Raises
    ------
    UnsupportedJpeg
        Not a JPEG, or the header is truncated.
    """
    if data[:2] != b"\xff\xd8":
        raise UnsupportedJpeg("not a JPEG file (no SOI marker)")
    out: list[tuple[int, bytes]] = []
    pos, n = 2, len(data)
    while pos < n:
        if data[pos] != 0xFF:
            raise UnsupportedJpeg(f"damaged JPEG header at byte {pos}")
        while pos < n and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= n:
            break
        marker = data[pos]
        start = pos - 1
        if marker == _SOS:
            return out, start
        if 0xD0 <= marker <= 0xD7 or marker in (0x01, 0xD8):
            pos += 1
            continue
        if pos + 3 > n:
            break
        (length,) = struct.unpack(">H", data[pos + 1 : pos + 3])
        end = pos + 1 + length
        if end > n:
            break
        out.append((marker, data[start:end]))
        pos = end
    raise UnsupportedJpeg("truncated JPEG header (no SOS marker)")


def metadata_segments(data: bytes) -> list[bytes]:
    """The APP0..APP15 and COM segments (EXIF, ICC, XMP, IPTC, JFIF, Adobe, comments) before the first scan."""
    segs, _ = header_segments(data)
    return [s for m, s in segs if _APP0 <= m <= _APP15 or m == _COM]


def _frame_info(segs: list[tuple[int, bytes]]) -> tuple[int, int]:
    """(SOF marker, restart interval in MCUs)."""
    sof = next((m for m, _ in segs if 0xC0 <= m <= 0xCF and m not in (0xC4, 0xC8, 0xCC)), None)
    if sof is None:
        raise UnsupportedJpeg("no frame header (SOF)")
    dri = 0
    for m, s in segs:
        if m == _DRI and len(s) >= 6:
            (dri,) = struct.unpack(">H", s[4:6])
    return sof, dri


def _frame_header(segs: list[tuple[int, bytes]]) -> tuple[int, int, list[tuple[int, int]]]:
    """(height, width, [(vertical, horizontal) sampling factor per component]) from the SOF segment."""
    for m, s in segs:
        if 0xC0 <= m <= 0xCF and m not in (0xC4, 0xC8, 0xCC):
            _p, height, width, n = struct.unpack(">BHHB", s[4:10])
            comps = [(s[10 + 3 * i + 1] & 15, s[10 + 3 * i + 1] >> 4) for i in range(n)]
            return height, width, comps
    raise UnsupportedJpeg("no frame header (SOF)")


def _adobe_transform(segs: list[tuple[int, bytes]]) -> int | None:
    """The colour transform flag of an Adobe APP14 segment (0: none, i.e. RGB; 1: YCbCr), None without one."""
    for m, s in segs:
        if m == 0xEE and s[4:9] == b"Adobe" and len(s) >= 16:
            return s[15]
    return None


def _huffman_tables(segs: list[tuple[int, bytes]]) -> set[bytes]:
    """Each Huffman table of the DHT segments as ``class/id byte + 16 counts + values``."""
    tables = set()
    for m, s in segs:
        if m != _DHT:
            continue
        body, p = s[4:], 0
        while p + 17 <= len(body):
            count = sum(body[p + 1 : p + 17])
            tables.add(bytes(body[p : p + 17 + count]))
            p += 17 + count
    return tables


_STANDARD_TABLES: set[bytes] | None = None


def _standard_huffman_tables() -> set[bytes]:
    """The example tables of T.81 annex K.3 (what libjpeg writes without ``optimize_coding``)."""
    global _STANDARD_TABLES
    if _STANDARD_TABLES is None:
        import io

        from PIL import Image

        buf = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buf, "JPEG", quality=90, optimize=False)
        _STANDARD_TABLES = _huffman_tables(header_segments(buf.getvalue())[0])
    return _STANDARD_TABLES


def _with_metadata(out: bytes, meta: list[bytes]) -> bytes:
    """``out`` with its own APPn/COM segments replaced by ``meta`` (placed right after SOI)."""
    segs, sos = header_segments(out)
    rest = [s for m, s in segs if not (_APP0 <= m <= _APP15 or m == _COM)]
    return b"".join([b"\xff\xd8", *meta, *rest, out[sos:]])


def insert_segments(out: bytes, extra: list[bytes] | tuple[bytes, ...]) -> bytes:
    """``out`` with the marker segments ``extra`` added after its own APPn/COM segments (before the tables)."""
    segs, sos = header_segments(out)
    meta = [s for m, s in segs if _APP0 <= m <= _APP15 or m == _COM]
    rest = [s for m, s in segs if not (_APP0 <= m <= _APP15 or m == _COM)]
    return b"".join([b"\xff\xd8", *meta, *[bytes(e) for e in extra if e not in meta], *rest, out[sos:]])


def _keep_trailer(data: bytes, sos: int, out: bytes, meta: list[bytes], notes: list[str]) -> bytes:
    """Append the input's bytes after its EOI (MPO pictures, motion-photo video, maker trailers) to ``out``,
    moving the MPF (CIPA DC-007) entry offsets by the change in the first picture's length."""
    eoi = data.find(b"\xff\xd9", sos)  # in entropy-coded data 0xFF is always followed by 0x00 or RSTn
    if eoi < 0 or eoi + 2 >= len(data):
        return out
    trailer = data[eoi + 2 :]
    mpf = next((m for m in meta if m[1] == 0xE2 and m[4:8] == b"MPF\x00"), None)
    if mpf is not None:
        try:
            out = _patch_mpf(out, mpf, old_first=eoi + 2, old_pos=data.find(mpf))
        except (ValueError, struct.error, IndexError) as e:
            notes.append(f"dropped {len(trailer):,} bytes after the end of the image (MPO pictures): their "
                         f"index could not be updated ({e})")
            return out
    notes.append(f"kept {len(trailer):,} bytes after the end of the image unchanged (e.g. MPO pictures, a "
                 "motion-photo video or a maker trailer); they still show the unedited picture")
    return out + trailer


def _patch_mpf(out: bytes, mpf: bytes, old_first: int, old_pos: int) -> bytes:
    """``out`` with its MPF segment's MP entries re-pointed: entry 0's size = the new first picture's length,
    other offsets moved by the change of length and of the segment's position."""
    new_pos = out.find(mpf)
    if new_pos < 0 or old_pos < 0:
        raise ValueError("MPF segment not found")
    tiff = new_pos + 8  # FF E2, length, "MPF\0": offsets count from the endianness field
    buf = bytearray(out)
    bo = {b"II": "<", b"MM": ">"}.get(bytes(buf[tiff : tiff + 2]))
    if bo is None:
        raise ValueError("bad MPF byte order")
    (ifd,) = struct.unpack_from(bo + "I", buf, tiff + 4)
    (n,) = struct.unpack_from(bo + "H", buf, tiff + ifd)
    delta = (len(out) - old_first) + (old_pos - new_pos)
    for i in range(n):
        tag, _typ, count, value = struct.unpack_from(bo + "HHII", buf, tiff + ifd + 2 + 12 * i)
        if tag != 0xB002:
            continue
        for k in range(count // 16):
            entry = tiff + value + 16 * k
            if k == 0:
                struct.pack_into(bo + "I", buf, entry + 4, len(out))
            else:
                (off,) = struct.unpack_from(bo + "I", buf, entry + 8)
                if off:
                    struct.pack_into(bo + "I", buf, entry + 8, off + delta)
        return bytes(buf)
    raise ValueError("no MP entry table")


def _subsampling_name(samp: np.ndarray) -> str:
    if samp.shape[0] == 1:
        return "gray"
    (v0, h0), rest = samp[0], samp[1:]
    if all(v == 1 and h == 1 for v, h in rest):
        return {(1, 1): "4:4:4", (1, 2): "4:2:2", (2, 2): "4:2:0", (2, 1): "4:4:0", (1, 4): "4:1:1"}.get(
            (int(v0), int(h0)), f"sampling {samp.tolist()}")
    return f"sampling {samp.tolist()}"


# ---- coefficients ---------------------------------------------------------------------------------------------


def _read_dct(path: str, segs: list[tuple[int, bytes]]) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """(components, qt, quant_tbl_no) of a JPEG, read by libjpeg's ``jpeg_read_coefficients`` through jpeglib.

    Calls jpeglib's C entry point with numpy buffers sized from the frame header: one entropy-decoding pass
    (``jpeglib.read_dct`` makes a second one to count scans, and copies the file to a temporary). Falls back to
    the public ``jpeglib.read_dct`` when that entry point is not there. Hold ``_LOCK`` with the version set.
    """
    import ctypes

    import jpeglib

    height, width, factors = _frame_header(segs)
    try:
        from jpeglib._bind import CJpegLib

        lib = CJpegLib.get()
        vmax, hmax = max(v for v, _ in factors), max(h for _, h in factors)
        comps = [np.zeros((-(-height * v // (8 * vmax)), -(-width * h // (8 * hmax)), 8, 8), np.int16)
                 for v, h in factors]
        qt = np.zeros((4, 8, 8), np.uint16)
        tbl = np.full(4, -1, np.int16)
        short_p = ctypes.POINTER(ctypes.c_short)
        ptrs = [c.ctypes.data_as(short_p) for c in comps] + [None] * (4 - len(comps))
        status = lib.read_jpeg_dct(ctypes.c_char_p(os.fsencode(path)), *ptrs,
                                   qt.ctypes.data_as(ctypes.POINTER(ctypes.c_ushort)), tbl.ctypes.data_as(short_p))
        if status == 0:
            raise UnsupportedJpeg(f"libjpeg could not read the coefficients of {Path(path).name}")
        tbl = tbl[: len(comps)].astype(np.int64)
        return comps, qt[: int(tbl.max()) + 1], tbl
    except (ImportError, AttributeError, TypeError, ctypes.ArgumentError) as e:
        logger.debug("libjpeg's coefficient reader not usable (%s: %s); reading with jpeglib.read_dct",
                     type(e).__name__, e)
        j = jpeglib.read_dct(str(path))
        j.load()
        comps = [np.array(j.Y)] + ([np.array(j.Cb), np.array(j.Cr)] if j.has_chrominance else [])
        return comps, np.array(j.qt), np.array(j.quant_tbl_no)


def read_coefficients(path: str | os.PathLike) -> dict:
    """Quantised DCT coefficients and coding parameters of a JPEG file.

    Parameters
    ----------
    path : str or path-like
        A baseline or progressive Huffman-coded JPEG with 1 or 3 components.

    Returns
    -------
    dict
        ``components``: list of ``int16`` arrays ``(blocks_high, blocks_wide, 8, 8)`` (Y, Cb, Cr);
        ``qt``: ``(n_tables, 8, 8)`` quantisation tables; ``quant_tbl_no``: table index per component;
        ``samp_factor``: ``(n_components, 2)`` as (vertical, horizontal); ``progressive``: bool.

    Notes
    -----
    Uses ``jpeglib.read_dct`` (libjpeg's ``jpeg_read_coefficients``, no inverse DCT).
    """
    import jpeglib

    with open(path, "rb") as fh:
        head = fh.read(1 << 20)
    segs, _ = header_segments(head)
    sof, _ = _frame_info(segs)
    with _LOCK, jpeglib.version(LIBJPEG_VERSION):
        comps, qt, tbl = _read_dct(str(path), segs)
    return {"components": comps, "qt": qt, "quant_tbl_no": tbl,
            "samp_factor": np.array([f for f in _frame_header(segs)[2]]), "progressive": sof == _SOF_PROGRESSIVE}


def changed_mcus(original: np.ndarray, edited: np.ndarray, mh: int, mw: int) -> np.ndarray:
    """``(ceil(H/mh), ceil(W/mw))`` bool: whether any pixel (any channel) of each MCU differs.

    Rows are compared first (contiguous, fast); only MCU rows holding a changed pixel row are split into MCUs.
    """
    h, w, c = original.shape
    gh, gw = -(-h // mh), -(-w // mw)
    a = original.reshape(h, w * c)
    b = edited.reshape(h, w * c)
    rows = np.zeros(gh * mh, bool)
    band = max(mh, (8 << 20) // max(1, w * c) // mh * mh)  # compare ~8 MB at a time
    for y in range(0, h, band):
        rows[y : min(h, y + band)] = np.any(a[y : y + band] != b[y : y + band], axis=1)
    grid = np.zeros((gh, gw), bool)
    for g in np.nonzero(rows.reshape(gh, mh).any(axis=1))[0]:
        y0, y1 = g * mh, min(h, (g + 1) * mh)
        cols = np.any(a[y0:y1] != b[y0:y1], axis=0).reshape(w, c).any(axis=1)
        padded = np.zeros(gw * mw, bool)
        padded[:w] = cols
        grid[g] = padded.reshape(gw, mw).any(axis=1)
    return grid


def _encode_crop(pixels: np.ndarray, qt: np.ndarray, quant_tbl_no: np.ndarray, samp: np.ndarray,
                 folder: str) -> list[np.ndarray]:
    """Coefficients of ``pixels`` encoded by libjpeg with these tables and sampling factors (islow DCT)."""
    import jpeglib

    path = os.path.join(folder, "crop.jpg")
    arr = np.ascontiguousarray(pixels)
    s = jpeglib.from_spatial(arr)
    s.samp_factor = samp
    s.write_spatial(path, qt=qt, quant_tbl_no=quant_tbl_no, dct_method=jpeglib.JDCT_ISLOW)
    j = jpeglib.read_dct(path)
    j.load()
    return [np.array(j.Y)] + ([np.array(j.Cb), np.array(j.Cr)] if j.has_chrominance else [])


def _jpegtran(src: str, dst: str, progressive: bool, restart: int, optimise: bool) -> None:
    """Lossless transcoding (coefficients untouched) by libjpeg-turbo's jpegtran: scan script, restarts."""
    exe = shutil.which("jpegtran")
    if exe is None:
        raise FileNotFoundError("jpegtran")
    cmd = [exe, "-copy", "none"] + (["-optimize"] if optimise else [])
    if progressive:
        cmd.append("-progressive")
    if restart:
        cmd += ["-restart", f"{int(restart)}B"]
    cmd += ["-outfile", dst, src]
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)


def splice_jpeg(source: str | os.PathLike, original: np.ndarray | Callable[[], np.ndarray],
                edited: np.ndarray) -> tuple[bytes, JpegSplice]:
    """Make the edited JPEG by re-encoding only the MCUs where ``edited`` differs from ``original``.

    Parameters
    ----------
    source : str or path-like
        The input JPEG (baseline or progressive, Huffman coded, gray or YCbCr).
    original : numpy.ndarray or callable
        ``H x W x C`` ``uint8`` pixels of ``source`` as decoded (Pillow / libjpeg-turbo), in the file's own
        orientation (no EXIF rotation applied); ``C`` = 1 for gray, 3 for colour. A callable returning them is
        run in a thread while the coefficients are read (decoders release the GIL).
    edited : numpy.ndarray
        The edited pixels, same shape and orientation.

    Returns
    -------
    data : bytes
        The complete output JPEG.
    report : JpegSplice
        MCU counts, mode, read-back verification, sizes and notes.

    Raises
    ------
    UnsupportedJpeg
        Arithmetic-coded, lossless, hierarchical, CMYK or otherwise unsupported input, a shape mismatch, or a
        written file that does not read back as intended; the caller then re-encodes the whole picture.

    Notes
    -----
    Method: coefficient splicing as done by lossless JPEG tools (jpegtran's ``-drop``), with the replacement
    blocks produced by libjpeg's own forward DCT and quantisation (via ``jpeglib``) at the input's tables.
    """
    import jpeglib

    source = Path(source)
    data = source.read_bytes()
    segs, sos = header_segments(data)
    sof, restart = _frame_info(segs)
    if sof not in _SOF_BASELINE and sof != _SOF_PROGRESSIVE:
        raise UnsupportedJpeg(f"JPEG coding process 0x{sof:02X} (arithmetic, lossless or hierarchical)")
    progressive_in = sof == _SOF_PROGRESSIVE
    meta = [s for m, s in segs if _APP0 <= m <= _APP15 or m == _COM]
    notes: list[str] = []
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 4)
        clock = now

    with _LOCK, jpeglib.version(LIBJPEG_VERSION), tempfile.TemporaryDirectory(prefix="crispedit-jpeg-") as tmp, \
            ThreadPoolExecutor(max_workers=1) as pool:
        height, width, factors = _frame_header(segs)
        if len(factors) not in (1, 3):
            raise UnsupportedJpeg(f"{len(factors)}-component JPEG (CMYK or other)")
        if _adobe_transform(segs) == 0 and len(factors) == 3:
            raise UnsupportedJpeg("RGB-coded JPEG (Adobe transform 0)")
        pending = pool.submit(original) if callable(original) else None
        comps, qt_in, tbl = _read_dct(str(source), segs)
        original = cast(np.ndarray, pending.result() if pending is not None else original)
        lap("decode_and_read_coefficients")
        if original.shape != edited.shape or original.ndim != 3 or original.shape[2] not in (1, 3):
            raise UnsupportedJpeg(f"pixel shapes differ ({original.shape} vs {edited.shape})")
        if (height, width) != original.shape[:2]:
            raise UnsupportedJpeg("the file's size does not match the pixels")
        if (original.shape[2] == 1) != (len(comps) == 1):
            raise UnsupportedJpeg("gray pixels for a colour JPEG or the reverse")
        samp_file = np.array(factors)
        samp = samp_file if len(comps) == 3 else np.array([[1, 1]])
        vmax, hmax = int(samp[:, 0].max()), int(samp[:, 1].max())
        mh, mw = 8 * vmax, 8 * hmax
        touched = changed_mcus(original, edited, mh, mw)
        lap("find_changed_mcus")
        n_touched = int(touched.sum())
        report = JpegSplice(mcus_total=int(touched.size), mcus_reencoded=n_touched, mcu_size=(mh, mw),
                            subsampling=_subsampling_name(samp), progressive=progressive_in,
                            restart_interval=restart, blocks_total=int(sum(c.shape[0] * c.shape[1] for c in comps)),
                            bytes_in=len(data), notes=notes)
        if n_touched == 0:  # nothing changed: the input file is the answer
            report.blocks_identical = report.blocks_total
            report.verified, report.metadata_segments, report.bytes_out = True, len(meta), len(data)
            report.timings = timings
            return data, report

        rows, cols = np.nonzero(touched)
        r0, r1, c0, c1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
        y0, y1 = r0 * mh, min(original.shape[0], r1 * mh)
        x0, x1 = c0 * mw, min(original.shape[1], c1 * mw)
        crop = edited[y0:y1, x0:x1]
        new = _encode_crop(crop, qt_in, tbl, samp_file, tmp)
        # Splice: only blocks of touched MCUs change, all inside the bounding box; keep the box's old blocks.
        regions = []  # per component: (block slice, the box's input coefficients, touched-block mask in the box)
        for comp, blocks, (v, h) in zip(comps, new, samp):
            v, h = int(v), int(h)
            by, bx = r0 * v, c0 * h
            box = (slice(by, by + blocks.shape[0]), slice(bx, bx + blocks.shape[1]))
            view = comp[box]
            if view.shape != blocks.shape:
                raise UnsupportedJpeg(f"block grid mismatch {view.shape} vs {blocks.shape}")
            sub = np.repeat(np.repeat(touched[r0:r1, c0:c1], v, axis=0), h, axis=1)[: blocks.shape[0],
                                                                                   : blocks.shape[1]]
            regions.append((box, view.copy(), sub))
            view[sub] = blocks[sub]
        report.blocks_reencoded = int(sum(int(sub.sum()) for _, _, sub in regions))
        lap("encode_touched_mcus")
        # Huffman tables: the input's kind (standard tables stay standard, optimised stay optimised).
        optimise = progressive_in or not _huffman_tables(segs) <= _standard_huffman_tables()
        j = jpeglib.from_dct(Y=comps[0], Cb=comps[1] if len(comps) == 3 else None,
                             Cr=comps[2] if len(comps) == 3 else None, qt=qt_in, quant_tbl_no=tbl)
        j.height, j.width, j.samp_factor = height, width, samp_file
        base = os.path.join(tmp, "base.jpg")  # no markers: the input's APPn/COM segments go back in below
        j.write_dct(base, flags=["+OPTIMIZE_CODING" if optimise else "-OPTIMIZE_CODING"])
        final = base
        lap("write_coefficients")
        if progressive_in or restart:
            try:
                final = os.path.join(tmp, "final.jpg")
                _jpegtran(base, final, progressive_in, restart, optimise)
            except (FileNotFoundError, subprocess.SubprocessError, OSError):
                final = base
                lost = " and ".join(w for w, on in (("progressive mode", progressive_in),
                                                     (f"the restart interval ({restart} MCUs)", restart)) if on)
                notes.append(f"wrote a baseline JPEG without {lost}: jpegtran (libjpeg-turbo-progs) is not "
                             "installed; coefficients and metadata are kept")
                logger.info("jpegtran not available: wrote a baseline JPEG without %s", lost)
                report.progressive, report.restart_interval = False, 0
        if final != base:
            lap("jpegtran")
        out = _with_metadata(Path(final).read_bytes(), meta)
        report.metadata_segments = len(meta)

        # Read back: every untouched block must be the input's, every re-encoded one the intended value.
        check = os.path.join(tmp, "check.jpg")
        Path(check).write_bytes(out)
        back_segs, _ = header_segments(out)
        got, back_qt, back_tbl = _read_dct(check, back_segs)
        ok = (len(got) == len(comps) and all(g.shape == c.shape for g, c in zip(got, comps))
              and np.array_equal(back_qt, qt_in) and np.array_equal(back_tbl, tbl)
              and _frame_header(back_segs) == (height, width, factors))
        identical = 0
        if ok:
            # ``comps`` outside the boxes were never written (the input's coefficients); inside the boxes the
            # untouched blocks are compared with the copies taken before splicing.
            for g, c, (box, old, sub) in zip(got, comps, regions):
                ok = ok and bool(np.array_equal(g, c))  # every block as intended (one pass, no temporaries)
                inside = np.all(g[box] == old, axis=(2, 3)) & ~sub  # untouched blocks of the box: the input's
                identical += g.shape[0] * g.shape[1] - sub.size + int(np.count_nonzero(inside))
        report.blocks_identical = identical
        report.verified = bool(ok and identical == report.blocks_total - report.blocks_reencoded
                               and metadata_segments(out) == meta)
        report.progressive = _frame_info(back_segs)[0] == _SOF_PROGRESSIVE
        if not report.verified:  # never hand out a file that is not what it claims to be
            raise UnsupportedJpeg("the written blocks did not read back as intended")
        out = _keep_trailer(data, sos, out, meta, notes)
        report.bytes_out = len(out)
        lap("read_back_and_verify")
        report.timings = timings
    return out, report
