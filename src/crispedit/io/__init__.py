"""Load and save images without losing pixels or metadata.

This package owns every byte that enters or leaves crispedit as an image file:

* **Formats** — JPEG, PNG, WebP and TIFF in and out (any other format Pillow reads, such as BMP or GIF, loads too).
* **Bit depth** — 8- and 16-bit per channel are kept: 16-bit PNG and TIFF load as ``uint16`` arrays (Pillow would
  truncate 16-bit RGB PNGs to 8 bits, so those go through OpenCV / tifffile) and 16-bit in gives 16-bit out.
* **Orientation** — the EXIF orientation is applied on load (the semantics of ``PIL.ImageOps.exif_transpose``);
  the EXIF kept for saving says orientation 1, so viewers do not rotate twice.
* **Metadata** — the ICC profile, EXIF and resolution (dpi) are written back where the format can hold them.
* **Safety** — sizes are checked from the header before decoding (decompression bombs are refused), truncated
  files fail at load rather than later, outputs never silently replace an input, and writes are atomic.
* **Speed** — PNG is encoded by a small writer (:mod:`crispedit.io.png`): one cheap filter (``Up``) and zlib level 1, compressed
  in parallel row bands (a 3840x2160 RGB photo: ~0.3 s on two idle cores, against ~7 s for Pillow's default
  and ~0.8 s for OpenCV at level 1 with its default filters). TIFF uses tifffile with deflate, a horizontal
  predictor and parallel strips.

Array conventions: ``H x W x C`` with ``C`` in {1 (gray), 2 (gray + alpha), 3 (RGB), 4 (RGBA)}, dtype ``uint8``
or ``uint16``, C-contiguous. Alpha is straight (not premultiplied) and is carried as a channel; nothing in this
package changes it. EXIF bytes follow Pillow's convention: they start with ``b"Exif\\x00\\x00"``.

Rooms
-----
* :mod:`crispedit.io.image` — :class:`ImageData`, float conversions, the Pillow view.
* :mod:`crispedit.io.load` — :func:`load_image` (files, Pillow images, arrays; size checks, mode conversions).
* :mod:`crispedit.io.save` — :func:`save_image` (format by extension, atomic writes, lossy-change notes).
* :mod:`crispedit.io.exif` — EXIF orientation, ICC profile and resolution helpers.
* :mod:`crispedit.io.png`, :mod:`crispedit.io.tiff` — reading and writing of those formats.
* :mod:`crispedit.io.jpeg`, :mod:`crispedit.io.webp` — writing of those formats (Pillow reads them).

Decisions worth knowing
-----------------------
* Saving 16-bit pixels to JPEG or WebP (8-bit formats) converts them to 8 bits with correct rounding and adds a
  note to ``data.notes``; PNG and TIFF keep 16 bits.
* JPEG cannot store transparency: an alpha channel that is fully opaque is dropped with a note, any other alpha
  is refused with an :class:`~crispedit.errors.InputError` (use PNG, WebP or TIFF).
* WebP has no gray mode: gray is written as RGB (gray + alpha as RGBA) with a note. WebP is lossless unless the
  source was lossy (JPEG, lossy WebP) or a ``quality`` is given. WebP is limited to 16383 px per side.
* CMYK is converted to RGB through its embedded profile when there is one (the result is tagged sRGB),
  otherwise naively; palette becomes RGB or RGBA; 1-bit becomes 8-bit gray; 32-bit integer or float becomes
  16-bit; YCbCr, HSV and L*a*b* become RGB. Each conversion adds a note.
* ``save_image`` refuses to replace any of ``inputs`` *and* ``data.source`` unless ``overwrite=True``.
* Notes raised while saving (bit depth reduced, alpha dropped, profile dropped) are appended to ``data.notes``.

Examples
--------
>>> import numpy as np, tempfile, os
>>> from crispedit.io import load_image, save_image
>>> data = load_image(np.zeros((4, 6, 3), np.uint16))
>>> (data.width, data.height, data.channels, data.bit_depth, data.has_alpha)
(6, 4, 3, 16, False)
>>> folder = tempfile.mkdtemp()
>>> out = save_image(data, os.path.join(folder, "out.png"))
>>> load_image(out).array.dtype
dtype('uint16')
"""

from crispedit.io.image import ImageData, from_float, to_float, to_pil
from crispedit.io.load import load_image
from crispedit.io.save import OUTPUT_FORMATS, save_image

__all__ = [
    "ImageData",
    "load_image",
    "save_image",
    "to_pil",
    "to_float",
    "from_float",
    "OUTPUT_FORMATS",
]
