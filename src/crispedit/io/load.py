"""Loading: files (JPEG, PNG, WebP, TIFF and whatever else Pillow reads), Pillow images and arrays.

Sizes are checked from the header before decoding (decompression bombs are refused), truncated files fail here
rather than later, 16-bit PNG and TIFF keep 16 bits (Pillow would truncate 16-bit RGB PNGs, so those go through
OpenCV / tifffile), the EXIF orientation is applied, and other pixel modes are converted with a note (CMYK
through its embedded profile, palette to RGB(A), 1-bit to gray, 32-bit to 16-bit, YCbCr / HSV / L*a*b* to RGB).
"""

from __future__ import annotations

import io
import logging
import os
import re
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from crispedit.errors import InputError
from crispedit.io.exif import (
    ORIENTATION,
    ORIENTATION_NAMES,
    apply_orientation,
    dpi_from_info,
    exif_from_pil,
    exif_orientation,
    icc_fits,
    icc_space,
    normalise_exif,
    reset_orientation,
)
from crispedit.io.image import ImageData, deep_to_uint16
from crispedit.io.png import XMP_KEYWORD, decode_png16, itxt_text, read_text_chunks, scan_png
from crispedit.io.tiff import decode_tiff_deep, is_tiff, read_tiff_meta

__all__ = ["load_image", "pillow_limits"]

logger = logging.getLogger(__name__)

# Pillow's decompression-bomb limit and truncated-image flag are process globals: hold this lock while we
# change them for one load.
_PIL_LOCK = threading.RLock()


def load_image(
    src: str | os.PathLike | Image.Image | np.ndarray, *, max_pixels: int = 300_000_000
) -> ImageData:
    """Load an image file, a Pillow image or an array into :class:`ImageData`.

    Parameters
    ----------
    src : str, path-like, PIL.Image.Image or numpy.ndarray
        A file (JPEG, PNG, WebP, TIFF or another format Pillow reads), an in-memory Pillow image, or an
        ``H x W`` / ``H x W x C`` ``uint8``/``uint16`` array (used as is when already C-contiguous).
    max_pixels : int
        Refuse images with more pixels than this. The size is read from the header, before any decoding.

    Returns
    -------
    ImageData
        Pixels with EXIF orientation applied, plus ICC profile, EXIF (orientation 1), dpi and notes.

    Raises
    ------
    crispedit.errors.InputError
        Missing, unreadable, truncated or too large file; unsupported pixel layout.
    """
    if not isinstance(max_pixels, (int, np.integer)) or isinstance(max_pixels, bool) or max_pixels <= 0:
        raise InputError(f"the pixel limit must be a positive whole number, got {max_pixels!r}",
                         "pass --max-pixels N with N > 0")
    max_pixels = int(max_pixels)
    if isinstance(src, np.ndarray):
        return _load_array(src, max_pixels)
    if isinstance(src, Image.Image):
        return _load_pil_object(src, max_pixels)
    if isinstance(src, (str, os.PathLike)):
        return _load_file(Path(src), max_pixels)
    raise TypeError(f"load_image expects a path, a PIL image or a numpy array, not {type(src).__name__}")


def _too_big(name: str, w: int, h: int, max_pixels: int) -> InputError:
    return InputError(
        f"{name} is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,} pixels",
        f"if you trust this image, raise the limit with --max-pixels {w * h}",
    )


def _load_array(arr: np.ndarray, max_pixels: int) -> ImageData:
    if arr.dtype not in (np.uint8, np.uint16):
        raise InputError(
            f"the image array has dtype {arr.dtype}; pixels must be uint8 or uint16",
            "convert float pixels in [0, 1] with crispedit.io.from_float(array, numpy.uint8)",
        )
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise InputError(f"the image array has shape {arr.shape}; expected H x W x C with C in 1..4",
                         "pass a gray, gray+alpha, RGB or RGBA array")
    h, w = arr.shape[:2]
    if h == 0 or w == 0:
        raise InputError(f"the image array is empty (shape {arr.shape})", "pass an image with pixels")
    if h * w > max_pixels:
        raise _too_big("the image array", w, h, max_pixels)
    return ImageData(array=np.ascontiguousarray(arr), format=None, source=None)


def _load_pil_object(im: Image.Image, max_pixels: int) -> ImageData:
    w, h = im.size
    if w * h > max_pixels:
        raise _too_big("the image", w, h, max_pixels)
    notes: list[str] = []
    name = getattr(im, "filename", None) or "the image"
    with pillow_limits(max_pixels):
        try:
            im.load()
        except InputError:
            raise
        except Exception as e:  # noqa: BLE001 - any decoder failure is a bad input
            raise _damaged(str(name), e) from e
        icc = im.info.get("icc_profile") or None
        raw_exif = exif_from_pil(im)
        arr, icc = _pil_pixels(im, icc, notes)
    return _finish(arr, icc, raw_exif, None, None, notes, dpi_from_info(im.info))


def _load_file(path: Path, max_pixels: int) -> ImageData:
    path = path.expanduser()
    if not path.exists():
        raise InputError(f"input image not found: {path}", "check the path and its spelling")
    if path.is_dir():
        raise InputError(f"{path} is a folder, not an image", "pass the path of an image file")
    name = path.name
    notes: list[str] = []
    with pillow_limits(max_pixels):
        try:
            im = Image.open(path)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            size = _size_from_bomb_message(str(e))
            if size is not None:
                raise InputError(
                    f"{name} has {size:,} pixels, over the limit of {max_pixels:,} pixels",
                    f"if you trust this image, raise the limit with --max-pixels {size}",
                ) from e
            raise InputError(f"{name} is over the limit of {max_pixels:,} pixels",
                             "if you trust this image, raise the limit with --max-pixels N") from e
        except UnidentifiedImageError as e:
            if is_tiff(path):  # a layout Pillow has no mode for, e.g. 16-bit gray + alpha
                return _load_tiff_direct(path, max_pixels, notes)
            raise InputError(f"cannot read {path}: not an image, or a format that is not supported",
                             "use a JPEG, PNG, WebP or TIFF image") from e
        except PermissionError as e:
            raise InputError(f"cannot read {path}: permission denied", "check the file's permissions") from e
        except OSError as e:
            raise InputError(f"cannot read {path}: {e}", "check that the file is a complete image") from e
        with im:
            w, h = im.size
            if w * h > max_pixels:
                raise _too_big(name, w, h, max_pixels)
            if w == 0 or h == 0:
                raise InputError(f"{name} has no pixels ({w}x{h})", "use another image")
            fmt = "JPEG" if im.format == "MPO" else im.format  # MPO: camera JPEG with extra pictures
            n_frames = getattr(im, "n_frames", 1) or 1
            if n_frames > 1:
                what = "pages" if fmt == "TIFF" else "frames"
                notes.append(f"{name} has {n_frames} {what}; only the first is used")
            try:
                arr, icc, raw_exif, orientation_hint = _decode_file(path, im, fmt, notes)
            except InputError:
                raise
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
                raise InputError(f"{name} holds a frame over the limit of {max_pixels:,} pixels",
                                 "if you trust this image, raise the limit with --max-pixels N") from e
            except MemoryError as e:
                raise InputError(f"not enough memory to decode {name} ({w}x{h})",
                                 "close other programs or use a smaller image") from e
            except Exception as e:  # noqa: BLE001 - any decoder failure is a bad input
                raise _damaged(name, e) from e
            dpi = dpi_from_info(im.info)
            xmp, text_chunks = _xmp_and_text(path, fmt, im)
    data = _finish(arr, icc, raw_exif, fmt, path.resolve(), notes, dpi, orientation_hint)
    data.xmp, data.text_chunks = xmp, text_chunks
    return data


def _xmp_and_text(path: Path, fmt: str | None, im: Image.Image) -> tuple[bytes | None, list[tuple[str, bytes]]]:
    """The XMP packet and the PNG text chunks (XMP excluded) of an opened file; best effort."""
    xmp: bytes | None = None
    text: list[tuple[str, bytes]] = []
    try:
        if fmt == "PNG":
            for ctype, payload in read_text_chunks(path):
                if ctype == "iTXt" and payload.startswith(XMP_KEYWORD + b"\x00"):
                    parsed = itxt_text(payload)
                    if parsed is not None and xmp is None:
                        xmp = parsed[1]
                        continue
                text.append((ctype, payload))
        elif fmt == "TIFF":
            value = getattr(im, "tag_v2", {}).get(700)
            if isinstance(value, str):
                value = value.encode("utf-8")
            xmp = bytes(value) if value else None
        else:
            value = im.info.get("xmp")
            if isinstance(value, str):
                value = value.encode("utf-8")
            xmp = bytes(value) if value else None
    except Exception as e:  # noqa: BLE001 - metadata is best effort
        logger.debug("XMP / PNG text of %s not read: %s", path.name, e)
    return xmp, text


def _damaged(name: str, e: BaseException) -> InputError:
    detail = str(e).strip() or type(e).__name__
    return InputError(f"cannot decode {name}: the file is truncated or damaged ({detail})",
                      "re-export or re-download the image")


def _size_from_bomb_message(msg: str) -> int | None:
    m = re.search(r"\((\d+) pixels\)", msg)
    return int(m.group(1)) if m else None


@contextmanager
def pillow_limits(max_pixels: int) -> Iterator[None]:
    """Hold Pillow's process-wide settings for one decode: the decompression-bomb limit set to ``max_pixels``
    (its warning raised as an error), truncated images kept an error; restored on exit, under a lock."""
    with _PIL_LOCK:
        old = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
        Image.MAX_IMAGE_PIXELS = max_pixels
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                yield
        finally:
            Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = old


def _decode_file(path: Path, im: Image.Image, fmt: str | None, notes: list[str]):
    """Decode pixels of an opened file.

    Returns (array, icc, raw_exif, orientation): the orientation still to apply, or None to take it from the EXIF.
    """
    icc = im.info.get("icc_profile") or None
    if fmt == "PNG":
        scan = scan_png(path)
        if not scan["complete"]:
            raise InputError(f"cannot decode {path.name}: the file is truncated (the PNG ends early)",
                             "re-export or re-download the image")
        raw_exif = normalise_exif(scan["exif"] or im.info.get("exif"))
        if scan["bit_depth"] == 16:
            arr = decode_png16(path, scan["color_type"])
            return arr, icc, raw_exif, None
        im.load()
        raw_exif = raw_exif or normalise_exif(im.info.get("exif"))
        arr, icc = _pil_pixels(im, icc, notes)
        return arr, icc, raw_exif, None
    if fmt == "TIFF":
        meta = read_tiff_meta(path)
        if meta["bits"] > 8 and meta["photometric"] in (0, 1, 2):
            arr = decode_tiff_deep(path, notes)
            return arr, icc, meta["exif"], meta["orientation"]
        im.load()
        arr, icc = _pil_pixels(im, icc, notes)
        # Recent Pillow applies the TIFF orientation itself while loading (and drops the tag); older does not.
        o = meta["orientation"]
        if o in ORIENTATION_NAMES and im.tag_v2.get(ORIENTATION) in (None, 1):  # type: ignore[attr-defined]
            notes.append(f"applied the EXIF orientation ({ORIENTATION_NAMES[o]})")
            dpi = im.info.get("dpi")
            if o >= 5 and dpi and len(dpi) >= 2:
                im.info["dpi"] = (dpi[1], dpi[0])  # Pillow turned the pixels but not the resolution
            return arr, icc, meta["exif"], 1
        return arr, icc, meta["exif"], o
    # JPEG, WebP, and anything else Pillow reads.
    im.load()
    raw_exif = exif_from_pil(im)
    arr, icc = _pil_pixels(im, icc, notes)
    return arr, icc, raw_exif, None


def _load_tiff_direct(path: Path, max_pixels: int, notes: list[str]) -> ImageData:
    """TIFFs Pillow cannot open (no matching mode): metadata from the header, pixels from tifffile."""
    try:
        meta = read_tiff_meta(path)
    except Exception as e:  # noqa: BLE001
        raise _damaged(path.name, e) from e
    w, h = meta["width"], meta["height"]
    if w * h > max_pixels:
        raise _too_big(path.name, w, h, max_pixels)
    try:
        arr = decode_tiff_deep(path, notes)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001
        raise _damaged(path.name, e) from e
    return _finish(arr, meta["icc"], meta["exif"], "TIFF", path.resolve(), notes, meta["dpi"],
                   meta["orientation"])


def _pil_pixels(im: Image.Image, icc: bytes | None, notes: list[str]) -> tuple[np.ndarray, bytes | None]:
    """Pixels of a loaded Pillow image in one of our layouts; converts other modes with a note."""
    mode = im.mode
    if mode in ("L", "LA", "RGB", "RGBA"):
        arr = np.asarray(im)
    elif mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        arr = np.asarray(im).astype(np.uint16)
    elif mode == "1":
        arr = np.asarray(im.convert("L"))
        notes.append("converted 1-bit black and white to 8-bit gray")
    elif mode in ("P", "PA"):
        alpha = mode == "PA" or "transparency" in im.info or (
            im.palette is not None and im.palette.mode == "RGBA"
        )
        target = "RGBA" if alpha else "RGB"
        arr = np.asarray(im.convert(target))
        notes.append(f"converted the palette image to {target}")
    elif mode == "La":
        arr = np.asarray(im.convert("LA"))
    elif mode == "RGBa":
        arr = np.asarray(im.convert("RGBA"))
    elif mode == "RGBX":
        arr = np.asarray(im.convert("RGB"))
    elif mode == "CMYK":
        arr, icc = _cmyk_to_rgb(im, icc, notes)
    elif mode in ("YCbCr", "HSV"):
        arr = np.asarray(im.convert("RGB"))
        notes.append(f"converted {mode} to RGB")
    elif mode == "LAB":
        arr = np.asarray(im.convert("RGB"))
        notes.append("converted CIE L*a*b* to RGB")
        icc = None
    elif mode in ("I", "F"):
        arr = deep_to_uint16(np.asarray(im), notes, "32-bit integer" if mode == "I" else "32-bit float")
    else:
        raise InputError(f"unsupported pixel mode {mode!r}", "convert the image to RGB or gray first")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return arr, icc


def _cmyk_to_rgb(im: Image.Image, icc: bytes | None, notes: list[str]) -> tuple[np.ndarray, bytes | None]:
    if icc:
        try:
            from PIL import ImageCms

            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            srgb = ImageCms.createProfile("sRGB")
            out = ImageCms.profileToProfile(im, src, srgb, outputMode="RGB")
            notes.append("converted CMYK to RGB using the embedded colour profile (saved as sRGB)")
            return np.asarray(out), ImageCms.ImageCmsProfile(srgb).tobytes()
        except Exception as e:  # noqa: BLE001 - fall back to the plain conversion
            logger.info("CMYK colour profile not usable (%s: %s); converting naively", type(e).__name__, e)
    notes.append("converted CMYK to RGB (no usable colour profile: colours are approximate)")
    return np.asarray(im.convert("RGB")), None


def _finish(arr, icc, raw_exif, fmt, source, notes, dpi, orientation_hint=None) -> ImageData:
    """Apply the orientation (``orientation_hint``, else the EXIF's) and reset it in the EXIF; check the ICC
    profile fits; make the array C-contiguous and writeable."""
    orientation = orientation_hint
    if orientation is None:
        orientation = (exif_orientation(raw_exif) if raw_exif else None) or 1
    if orientation not in range(1, 9):
        orientation = 1
    if orientation != 1:
        arr = apply_orientation(arr, orientation)
        notes.append(f"applied the EXIF orientation ({ORIENTATION_NAMES[orientation]})")
        if dpi and orientation >= 5:
            dpi = (dpi[1], dpi[0])
    exif = reset_orientation(raw_exif) if raw_exif else None
    if icc is not None and not icc_fits(icc, arr.shape[2]):
        notes.append(f"dropped the embedded {icc_space(icc) or 'unknown'} colour profile: "
                     "it does not fit the pixels")
        icc = None
    arr = np.ascontiguousarray(arr)
    if not arr.flags.writeable:
        arr = arr.copy()
    return ImageData(array=arr, icc_profile=bytes(icc) if icc else None, exif=exif, format=fmt,
                     source=source, notes=notes, dpi=dpi)
