"""Tests for crispedit.io: formats, bit depths, metadata, errors, atomic writes, PNG encoder."""

from __future__ import annotations

import io
import os
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageCms, ImageFile, ImageOps

from crispedit.errors import InputError
from crispedit.io import ImageData, from_float, load_image, png, save_image, to_float, to_pil

cv2 = pytest.importorskip("cv2")


def photo(h: int = 48, w: int = 64, c: int = 3, dtype=np.uint8, seed: int = 0) -> np.ndarray:
    """Smooth gradients plus a little noise: compresses like a photo, survives JPEG closely."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    chans = [x / max(w - 1, 1), y / max(h - 1, 1), (x + y) / max(w + h - 2, 1), 1 - x / max(w - 1, 1)]
    f = np.stack(chans[:c], axis=-1) * 0.8 + 0.1 + rng.normal(0, 0.01, (h, w, c)).astype(np.float32)
    return from_float(f, dtype)


def noise(h: int, w: int, c: int, dtype=np.uint8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, np.iinfo(dtype).max + 1, (h, w, c), dtype=np.int64).astype(dtype)


def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def exif_bytes(orientation: int | None = None, with_subifds: bool = True) -> bytes:
    ex = Image.Exif()
    ex[0x010F] = "TestCam"  # Make
    ex[0x0110] = "Model 1"  # Model
    if orientation is not None:
        ex[0x0112] = orientation
    if with_subifds:
        ex.get_ifd(0x8769)[0x9003] = "2024:05:06 07:08:09"  # DateTimeOriginal
        ex.get_ifd(0x8769)[0x8827] = 200  # ISO
        ex.get_ifd(0x8825)[1] = "N"  # GPSLatitudeRef
    return ex.tobytes()


def read_exif(raw: bytes | None) -> Image.Exif:
    ex = Image.Exif()
    assert raw is not None and raw.startswith(b"Exif\x00\x00")
    ex.load(raw)
    return ex


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]


# ----------------------------------------------------------------------------------------------------------------
# Round trips
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".png", ".tif", ".tiff"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("c", [1, 2, 3, 4])
def test_lossless_round_trip_exact(tmp_path, ext, dtype, c):
    a = noise(23, 37, c, dtype, seed=c)
    out = save_image(ImageData(a), tmp_path / f"x{ext}")
    data = load_image(out)
    assert data.array.dtype == dtype
    assert data.array.shape == a.shape
    assert data.array.flags.c_contiguous and data.array.flags.writeable
    np.testing.assert_array_equal(data.array, a)
    assert data.format == "TIFF" if "tif" in ext else "PNG"
    assert data.source == out
    assert data.bit_depth == (16 if dtype == np.uint16 else 8)
    assert data.channels == c and data.has_alpha == (c in (2, 4))
    assert data.notes == []


@pytest.mark.parametrize("c", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_readable_by_pillow_and_opencv(tmp_path, c, dtype, monkeypatch):
    monkeypatch.setattr(png, "_BAND_BYTES", 300)  # many bands -> threaded, stitched deflate stream
    a = noise(41, 29, c, dtype, seed=7)
    out = save_image(ImageData(a), tmp_path / "x.png")
    raw = out.read_bytes()
    assert raw.count(b"IDAT") > 3
    dec = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_UNCHANGED)
    if c == 3:
        dec = dec[:, :, ::-1]
    elif c == 4:
        dec = dec[:, :, [2, 1, 0, 3]]
    elif c == 2:
        dec = dec[:, :, [0, 3]]  # OpenCV expands gray + alpha to BGRA
    assert dec.dtype == dtype
    np.testing.assert_array_equal(dec.reshape(a.shape), a)
    if dtype == np.uint8:
        np.testing.assert_array_equal(np.asarray(Image.open(out)).reshape(a.shape), a)
    elif c == 1:
        np.testing.assert_array_equal(np.asarray(Image.open(out)).astype(np.uint16)[:, :, None], a)


def test_adler32_combine_matches_zlib():
    rng = np.random.default_rng(3)
    for n1, n2 in [(0, 5), (5, 0), (1, 1), (1000, 70000), (65521, 65522), (100_000, 3)]:
        a = rng.integers(0, 256, n1, dtype=np.uint8).tobytes()
        b = rng.integers(0, 256, n2, dtype=np.uint8).tobytes()
        assert png._adler32_combine(zlib.adler32(a), zlib.adler32(b), len(b)) == zlib.adler32(a + b)


@pytest.mark.parametrize("c", [3, 4])
def test_webp_lossless_exact_including_rgb_under_transparent_pixels(tmp_path, c):
    a = noise(20, 30, c, np.uint8, seed=2)
    if c == 4:
        a[:10, :, 3] = 0  # colour under fully transparent pixels must survive too
    out = save_image(ImageData(a, format="PNG"), tmp_path / "x.webp")
    assert b"VP8L" in out.read_bytes()[:64]
    data = load_image(out)
    np.testing.assert_array_equal(data.array, a)
    assert data.format == "WEBP"


def test_webp_lossy_when_source_lossy_or_quality_given(tmp_path):
    a = photo(32, 48)
    src = save_image(ImageData(a), tmp_path / "src.jpg")
    jpg = load_image(src)
    out = save_image(jpg, tmp_path / "a.webp")
    assert b"VP8 " in out.read_bytes()[:64]
    out2 = save_image(ImageData(a), tmp_path / "b.webp", quality=80)
    assert b"VP8 " in out2.read_bytes()[:64]
    # lossless WebP source stays lossless
    ll = save_image(ImageData(a), tmp_path / "c.webp")
    out3 = save_image(load_image(ll), tmp_path / "d.webp")
    assert b"VP8L" in out3.read_bytes()[:64]
    np.testing.assert_array_equal(load_image(out3).array, a)


def test_webp_gray_saved_as_rgb_with_note(tmp_path):
    a = noise(10, 12, 2, np.uint8)
    data = ImageData(a)
    back = load_image(save_image(data, tmp_path / "g.webp")).array
    assert back.shape == (10, 12, 4)
    np.testing.assert_array_equal(back[:, :, 0], a[:, :, 0])
    np.testing.assert_array_equal(back[:, :, 2], a[:, :, 0])
    np.testing.assert_array_equal(back[:, :, 3], a[:, :, 1])
    assert any("gray" in n for n in data.notes)


@pytest.mark.parametrize("c", [1, 3])
def test_jpeg_round_trip_close(tmp_path, c):
    a = photo(40, 56, c)
    out = save_image(ImageData(a), tmp_path / "x.jpg")
    data = load_image(out)
    assert data.array.shape == a.shape and data.array.dtype == np.uint8
    assert np.abs(data.array.astype(int) - a.astype(int)).mean() < 2.0
    assert data.format == "JPEG"
    with Image.open(out) as im:  # 4:4:4 chroma by default
        assert c == 1 or im.layer[0][1:3] == im.layer[1][1:3] == (1, 1)


@pytest.mark.parametrize("ext", [".jpg", ".webp"])
def test_16bit_to_8bit_format_converts_with_note(tmp_path, ext):
    a = photo(16, 20, 3, np.uint16)
    data = ImageData(a)
    back = load_image(save_image(data, tmp_path / f"x{ext}"))
    assert back.array.dtype == np.uint8
    assert any("8-bit" in n for n in data.notes)
    expected = ((a.astype(np.uint32) + 128) // 257).astype(np.int16)
    assert np.abs(back.array.astype(np.int16) - expected).max() <= (0 if ext == ".webp" else 12)


def test_jpeg_alpha_refused_unless_opaque(tmp_path):
    a = noise(8, 8, 4)
    a[0, 0, 3] = 10
    with pytest.raises(InputError, match="transparency"):
        save_image(ImageData(a), tmp_path / "x.jpg")
    assert list(tmp_path.iterdir()) == []
    a[..., 3] = 255
    data = ImageData(a)
    out = save_image(data, tmp_path / "x.jpg")
    assert load_image(out).array.shape == (8, 8, 3)
    assert any("alpha" in n for n in data.notes)


def test_dpi_round_trip(tmp_path):
    a = photo(8, 8)
    for ext in (".png", ".jpg", ".tif"):
        back = load_image(save_image(ImageData(a, dpi=(300.0, 150.0)), tmp_path / f"x{ext}"))
        assert back.dpi == pytest.approx((300.0, 150.0), abs=0.01), ext


def test_array_argument_overrides_pixels_keeps_metadata(tmp_path):
    icc = srgb_icc()
    data = ImageData(photo(8, 8), icc_profile=icc)
    other = photo(8, 8, seed=5)
    back = load_image(save_image(data, tmp_path / "x.png", other))
    np.testing.assert_array_equal(back.array, other)
    assert back.icc_profile == icc


# ----------------------------------------------------------------------------------------------------------------
# Metadata
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow_exif_transpose(tmp_path, orientation):
    a = noise(5, 7, 3, seed=orientation)
    p = tmp_path / "o.png"
    Image.fromarray(a).save(p, exif=exif_bytes(orientation))
    data = load_image(p)
    with Image.open(p) as im:
        expected = np.asarray(ImageOps.exif_transpose(im))
    np.testing.assert_array_equal(data.array, expected)
    ex = read_exif(data.exif)
    assert ex[0x0112] == 1 and ex[0x010F] == "TestCam"
    assert ex.get_ifd(0x8769)[0x8827] == 200
    assert (orientation == 1) == (not any("orientation" in n for n in data.notes))


def test_exif_orientation_jpeg_swaps_dpi_and_saved_file_is_upright(tmp_path):
    a = photo(16, 32)
    p = tmp_path / "o.jpg"
    Image.fromarray(a).save(p, exif=exif_bytes(6), dpi=(100, 200), quality=98)
    data = load_image(p)
    assert data.array.shape == (32, 16, 3)
    assert data.dpi == (200.0, 100.0)
    out = save_image(data, tmp_path / "back.jpg", reencode=True)  # a new picture: written upright
    with Image.open(out) as im:
        assert im.getexif()[0x0112] == 1 and im.size == (16, 32)
    again = load_image(out)
    assert again.array.shape == (32, 16, 3)
    # JPEG to JPEG without re-encoding keeps the file's blocks, so its orientation tag stays (and still applies)
    kept = save_image(data, tmp_path / "kept.jpg")
    with Image.open(kept) as im:
        assert im.getexif()[0x0112] == 6 and im.size == (32, 16)
    assert np.array_equal(load_image(kept).array, data.array)


def test_exif_orientation_16bit_png_and_tiff(tmp_path):
    import tifffile

    a = noise(6, 10, 3, np.uint16)
    with open(tmp_path / "o.png", "wb") as f:
        png.write_png(f, a, None, exif_bytes(8), None)
    tifffile.imwrite(tmp_path / "o.tif", a, photometric="rgb", extratags=[(274, "H", 1, 8, True)])
    for name in ("o.png", "o.tif"):
        data = load_image(tmp_path / name)
        np.testing.assert_array_equal(data.array, np.rot90(a, 1))
        assert read_exif(data.exif)[0x0112] == 1


def test_saved_exif_always_says_upright(tmp_path):
    a = noise(6, 10, 3)
    for ext in (".png", ".jpg", ".tif", ".webp"):
        out = save_image(ImageData(a, exif=exif_bytes(6)), tmp_path / f"s{ext}")
        assert load_image(out).array.shape == a.shape, ext


@pytest.mark.parametrize("orientation", [3, 6])
def test_exif_orientation_from_tiff_tag(tmp_path, orientation):
    # Recent Pillow rotates TIFFs itself while decoding; the result must be rotated exactly once.
    a = noise(6, 10, 3)
    p = tmp_path / "o.tif"
    Image.fromarray(a).save(p, exif=exif_bytes(orientation, with_subifds=False), dpi=(100, 200))
    data = load_image(p)
    expected = a[::-1, ::-1] if orientation == 3 else np.rot90(a, -1)
    np.testing.assert_array_equal(data.array, expected)
    assert data.dpi == ((100.0, 200.0) if orientation == 3 else (200.0, 100.0))
    assert sum("orientation" in n for n in data.notes) == 1


# 16-bit only where the format holds it (JPEG and WebP are 8-bit): no case is generated only to be skipped
@pytest.mark.parametrize("ext, dtype", [(ext, np.uint8) for ext in (".png", ".jpg", ".tif", ".webp")]
                         + [(ext, np.uint16) for ext in (".png", ".tif")])
def test_icc_and_exif_kept(tmp_path, ext, dtype):
    icc = srgb_icc()
    data = ImageData(photo(12, 16, 3, dtype), icc_profile=icc, exif=exif_bytes(1))
    back = load_image(save_image(data, tmp_path / f"x{ext}"))
    assert back.icc_profile == icc
    ex = read_exif(back.exif)
    assert ex[0x010F] == "TestCam" and ex[0x0110] == "Model 1"
    assert ex.get_ifd(0x8769)[0x9003] == "2024:05:06 07:08:09"
    assert ex.get_ifd(0x8825)[1] == "N"


def test_icc_that_does_not_fit_is_dropped_with_note(tmp_path):
    data = ImageData(photo(8, 8, 1), icc_profile=srgb_icc())
    back = load_image(save_image(data, tmp_path / "g.png"))
    assert back.icc_profile is None
    assert any("colour profile" in n for n in data.notes)


def test_icc_from_real_png_file(tmp_path):
    icc = srgb_icc()
    p = tmp_path / "pil.png"
    Image.fromarray(photo(8, 8)).save(p, icc_profile=icc)
    assert load_image(p).icc_profile == icc


# ----------------------------------------------------------------------------------------------------------------
# Modes
# ----------------------------------------------------------------------------------------------------------------


def test_cmyk_jpeg_converted_with_note(tmp_path):
    p = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (12, 10), (0, 255, 255, 0)).save(p, quality=95)
    data = load_image(p)
    assert data.array.shape == (10, 12, 3) and data.array.dtype == np.uint8
    assert any("CMYK" in n for n in data.notes)
    r, g, b = data.array[5, 5]
    assert r > 200 and g < 60 and b < 60  # magenta + yellow = red


def test_palette_one_bit_and_16bit_gray_from_pillow_files(tmp_path):
    pal = Image.fromarray(photo(10, 10)).quantize(8)
    pal.save(tmp_path / "p.png")
    d = load_image(tmp_path / "p.png")
    assert d.array.shape == (10, 10, 3) and any("palette" in n for n in d.notes)
    pal.save(tmp_path / "pt.png", transparency=0)
    d = load_image(tmp_path / "pt.png")
    assert d.array.shape == (10, 10, 4)
    Image.new("1", (9, 7), 1).save(tmp_path / "b.png")
    d = load_image(tmp_path / "b.png")
    assert d.array.shape == (7, 9, 1) and d.array.dtype == np.uint8 and d.array.min() == 255
    g16 = noise(6, 5, 1, np.uint16)
    Image.fromarray(g16[:, :, 0]).save(tmp_path / "g16.png")
    np.testing.assert_array_equal(load_image(tmp_path / "g16.png").array, g16)


@pytest.mark.parametrize("mode", ["CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa", "La", "PA", "1", "P"])
def test_in_memory_modes_convert(mode):
    im = Image.new(mode, (4, 3))
    data = load_image(im)
    assert data.array.shape[:2] == (3, 4)
    assert data.array.shape[2] in (1, 2, 3, 4)
    assert data.format is None and data.source is None
    if mode in ("CMYK", "YCbCr", "LAB", "HSV", "PA", "1", "P"):
        assert data.notes


def test_float_and_int32_tiff_converted_to_16bit(tmp_path):
    f = np.linspace(0, 1, 20, dtype=np.float32).reshape(4, 5)
    import tifffile

    tifffile.imwrite(tmp_path / "f.tif", f)
    d = load_image(tmp_path / "f.tif")
    assert d.array.dtype == np.uint16 and d.array.shape == (4, 5, 1)
    np.testing.assert_array_equal(d.array[:, :, 0], from_float(f, np.uint16))
    assert any("float" in n for n in d.notes)
    i = (np.arange(20, dtype=np.int32) * 1000).reshape(4, 5)
    tifffile.imwrite(tmp_path / "i.tif", i)
    d = load_image(tmp_path / "i.tif")
    np.testing.assert_array_equal(d.array[:, :, 0], i.astype(np.uint16))


def test_planar_16bit_tiff(tmp_path):
    import tifffile

    a = noise(6, 7, 3, np.uint16)
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(a, -1, 0), photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(load_image(tmp_path / "planar.tif").array, a)


def test_multipage_tiff_uses_first_page_with_note(tmp_path):
    frames = [Image.fromarray(noise(5, 6, 3, seed=s)) for s in range(3)]
    frames[0].save(tmp_path / "multi.tif", save_all=True, append_images=frames[1:])
    d = load_image(tmp_path / "multi.tif")
    np.testing.assert_array_equal(d.array, np.asarray(frames[0]))
    assert any("3 pages" in n for n in d.notes)


def test_array_and_pil_inputs():
    g = noise(4, 5, 1)[:, :, 0]
    d = load_image(g)
    assert d.array.shape == (4, 5, 1)
    with pytest.raises(InputError, match="uint8 or uint16"):
        load_image(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(InputError, match="H x W x C"):
        load_image(np.zeros((4, 4, 5), np.uint8))
    im = Image.fromarray(noise(3, 4, 3))
    im.info["exif"] = exif_bytes(6)
    d = load_image(im)
    assert d.array.shape == (4, 3, 3) and d.format is None


# ----------------------------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------------------------


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(InputError, match="folder"):
        load_image(tmp_path)


def test_not_an_image(tmp_path):
    p = tmp_path / "x.png"
    p.write_bytes(b"hello, world" * 10)
    with pytest.raises(InputError, match="not an image"):
        load_image(p)


@pytest.mark.parametrize(
    "ext,dtype", [(".png", np.uint8), (".png", np.uint16), (".jpg", np.uint8), (".tif", np.uint16),
                  (".tif", np.uint8), (".webp", np.uint8)]
)
def test_truncated_file_fails_at_load(tmp_path, ext, dtype, monkeypatch):
    a = noise(64, 64, 3, dtype)
    if ext == ".tif" and dtype == np.uint8:  # uncompressed so that the strip runs past the end
        Image.fromarray(a).save(tmp_path / f"full{ext}")
        full = tmp_path / f"full{ext}"
    else:
        full = save_image(ImageData(a), tmp_path / f"full{ext}", quality=90 if ext != ".png" else None)
    raw = full.read_bytes()
    cut = tmp_path / f"cut{ext}"
    cut.write_bytes(raw[: len(raw) * 2 // 3])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # someone else's global must not hide it
    with pytest.raises(InputError, match="truncated|damaged|cannot read"):
        load_image(cut)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored


def test_pixel_limit_checked_from_header_before_decoding(tmp_path):
    a = noise(40, 50, 3)
    full = save_image(ImageData(a), tmp_path / "big.png")
    with pytest.raises(InputError, match=r"--max-pixels 2000"):
        load_image(full, max_pixels=1999)
    cut = tmp_path / "cut.png"
    cut.write_bytes(full.read_bytes()[:200])  # header intact, pixels missing: the size error comes first
    with pytest.raises(InputError, match="over the limit"):
        load_image(cut, max_pixels=100)
    assert load_image(full, max_pixels=2000).array.shape == a.shape
    with pytest.raises(InputError, match="--max-pixels"):
        load_image(a, max_pixels=10)


def test_decompression_bomb_refused_and_limit_restored(tmp_path):
    old = Image.MAX_IMAGE_PIXELS
    p = tmp_path / "bomb.png"
    Image.new("L", (400, 300)).save(p)  # compresses to almost nothing
    with pytest.raises(InputError, match="--max-pixels 120000"):
        load_image(p, max_pixels=1000)  # over twice the limit: Pillow itself raises at open
    with pytest.raises(InputError, match="--max-pixels 120000"):
        load_image(p, max_pixels=100_000)  # between 1x and 2x: Pillow only warns
    assert Image.MAX_IMAGE_PIXELS == old


def test_output_equal_to_input_refused(tmp_path):
    src = save_image(ImageData(photo(8, 8)), tmp_path / "in.png")
    before = src.read_bytes()
    data = load_image(src)
    with pytest.raises(InputError, match="would overwrite the input .*--overwrite"):
        save_image(data, src)
    other = ImageData(photo(8, 8, seed=3))
    (tmp_path / "sub").mkdir()
    with pytest.raises(InputError, match="would overwrite the input"):
        save_image(other, tmp_path / "sub" / ".." / "in.png", inputs=[str(src)])
    os.link(src, tmp_path / "hard.png")
    with pytest.raises(InputError, match="would overwrite the input"):
        save_image(other, tmp_path / "hard.png", inputs=[src])
    assert src.read_bytes() == before
    save_image(data, src, overwrite=True)
    save_image(other, tmp_path / "fine.png", inputs=[src])


def test_output_path_errors(tmp_path):
    data = ImageData(photo(4, 4))
    with pytest.raises(InputError, match="output folder does not exist"):
        save_image(data, tmp_path / "missing" / "x.png")
    with pytest.raises(InputError, match=r"unknown output format: \.bmp"):
        save_image(data, tmp_path / "x.bmp")
    with pytest.raises(InputError, match="unknown output format"):
        save_image(data, tmp_path / "noext")
    with pytest.raises(InputError, match="quality"):
        save_image(data, tmp_path / "x.jpg", quality=0)
    (tmp_path / "d.png").mkdir()
    with pytest.raises(InputError, match="folder"):
        save_image(data, tmp_path / "d.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.png"]


def test_error_messages_are_one_line_with_fix(tmp_path):
    with pytest.raises(InputError) as e:
        load_image(tmp_path / "nope.png")
    assert "\n" not in str(e.value) and e.value.fix


# ----------------------------------------------------------------------------------------------------------------
# Atomic writes
# ----------------------------------------------------------------------------------------------------------------


def test_atomic_write_leaves_nothing_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "x.png"
    target.write_bytes(b"old contents")

    def broken(f, *args, **kwargs):
        f.write(b"\x89PNG partial")
        raise RuntimeError("encoder crashed")

    monkeypatch.setattr(png, "write_png", broken)
    with pytest.raises(RuntimeError):
        save_image(ImageData(photo(4, 4)), target)
    assert target.read_bytes() == b"old contents"
    assert no_temp_files(tmp_path)

    def disk_full(f, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(png, "write_png", disk_full)
    with pytest.raises(InputError, match="No space left"):
        save_image(ImageData(photo(4, 4)), tmp_path / "y.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png"]


def test_atomic_write_success_leaves_no_temp_and_replaces(tmp_path):
    target = tmp_path / "x.tif"
    target.write_bytes(b"old")
    out = save_image(ImageData(photo(6, 6)), target)
    assert out == target.resolve() and load_image(out).array.shape == (6, 6, 3)
    assert no_temp_files(tmp_path)
    umask = os.umask(0o022)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # a normal new file, not a private temp file


# ----------------------------------------------------------------------------------------------------------------
# Pillow view and float conversion
# ----------------------------------------------------------------------------------------------------------------


def test_to_pil_modes():
    icc = srgb_icc()
    cases = {(1, np.uint8): "L", (1, np.uint16): "I;16", (2, np.uint8): "LA", (2, np.uint16): "LA",
             (3, np.uint8): "RGB", (3, np.uint16): "RGB", (4, np.uint8): "RGBA", (4, np.uint16): "RGBA"}
    for (c, dt), mode in cases.items():
        a = noise(3, 5, c, dt)
        im = to_pil(ImageData(a, icc_profile=icc))
        assert im.mode == mode and im.size == (5, 3)
        back = np.asarray(im).reshape(3, 5, c)
        if dt == np.uint16 and c > 1:
            np.testing.assert_array_equal(back, np.round(a / 257.0).astype(np.uint8))
        else:
            np.testing.assert_array_equal(back, a)
        assert (im.info.get("icc_profile") == icc) == (c >= 3)
    other = noise(2, 2, 3)
    np.testing.assert_array_equal(np.asarray(to_pil(ImageData(noise(9, 9, 1)), other)), other)


def test_float_conversions_exact_round_trip():
    for dt in (np.uint8, np.uint16):
        a = np.arange(np.iinfo(dt).max + 1, dtype=dt)
        f = to_float(a)
        assert f.dtype == np.float32 and f.min() == 0.0 and f.max() == 1.0
        np.testing.assert_array_equal(from_float(f, dt), a)
    got = from_float(np.array([-1, np.nan, 0.5, 2, np.inf], np.float32), np.uint8)
    np.testing.assert_array_equal(got, [0, 0, 128, 255, 255])
    assert from_float(np.zeros((2, 3, 4)), np.uint16).shape == (2, 3, 4)
    with pytest.raises(TypeError):
        from_float(np.zeros(3), np.int32)


# ----------------------------------------------------------------------------------------------------------------
# Property test
# ----------------------------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    h=st.integers(1, 40),
    w=st.integers(1, 40),
    c=st.sampled_from([1, 2, 3, 4]),
    depth=st.sampled_from([8, 16]),
    band=st.sampled_from([1, 64, 4 << 20]),
    seed=st.integers(0, 2**32 - 1),
    smooth=st.booleans(),
)
def test_png_round_trip_property(tmp_path, monkeypatch, h, w, c, depth, band, seed, smooth):
    monkeypatch.setattr(png, "_BAND_BYTES", band)
    dt = np.uint16 if depth == 16 else np.uint8
    a = photo(h, w, c, dt, seed) if smooth else noise(h, w, c, dt, seed)
    out = save_image(ImageData(a), tmp_path / "p.png")
    back = load_image(out)
    assert back.array.dtype == dt and back.array.shape == (h, w, c)
    np.testing.assert_array_equal(back.array, a)


# ----------------------------------------------------------------------------------------------------------------
# Speed (printed, not asserted: the machine may be shared)
# ----------------------------------------------------------------------------------------------------------------


def test_print_png_encode_time_4k(capsys):
    a = photo(2160, 3840, 3, np.uint8)
    buf = io.BytesIO()
    t = time.perf_counter()
    png.write_png(buf, a, None, None, None)
    dt = time.perf_counter() - t
    with capsys.disabled():
        print(f"\n[io.png] PNG encode 3840x2160 RGB 8-bit: {dt:.3f} s, {buf.tell() / 1e6:.1f} MB")
    assert buf.getvalue().startswith(b"\x89PNG")


# ---- metadata everywhere: PNG text chunks, XMP, resolution ------------------------------------------------------

XMP_PACKET = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
              b'<rdf:Description xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="4"/></rdf:RDF></x:xmpmeta>')


def png_with_text(path: Path, arr: np.ndarray) -> list[tuple[str, bytes]]:
    """A PNG with tEXt, zTXt and iTXt chunks (like generation parameters other tools write), XMP and 300 dpi."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a cat, Steps: 20, Sampler: Euler a, Seed: 42")
    info.add_text("Comment", "long text " * 40, zip=True)
    info.add_itxt("Title", "Katze über dem Tisch", lang="de", tkey="Titel")
    info.add_itxt("XML:com.adobe.xmp", XMP_PACKET.decode())
    Image.fromarray(arr).save(path, pnginfo=info, dpi=(300, 300))
    return [c for c in png.read_text_chunks(path) if not c[1].startswith(b"XML:com.adobe.xmp\x00")]


def test_png_text_chunks_xmp_and_dpi_survive_png(tmp_path):
    src = tmp_path / "in.png"
    chunks = png_with_text(src, photo())
    assert [t for t, _ in chunks] == ["tEXt", "zTXt", "iTXt"]
    data = load_image(src)
    assert data.text_chunks == chunks and data.xmp == XMP_PACKET and data.dpi == (300.0, 300.0)
    out = save_image(data, tmp_path / "out.png")
    back = load_image(out)
    assert back.text_chunks == chunks and back.xmp == XMP_PACKET and back.dpi == (300.0, 300.0)
    im = Image.open(out)
    assert im.text["parameters"].startswith("a cat") and im.text["Title"] == "Katze über dem Tisch"
    assert not data.notes


@pytest.mark.parametrize("ext", [".jpg", ".webp", ".tif"])
def test_xmp_and_dpi_kept_in_other_formats_text_chunks_noted(tmp_path, ext):
    src = tmp_path / "in.png"
    png_with_text(src, photo())
    data = load_image(src)
    out = save_image(data, tmp_path / f"out{ext}")
    back = load_image(out)
    assert back.xmp is not None and b'xmp:Rating="4"' in back.xmp
    if ext != ".webp":  # WebP has no resolution field
        assert back.dpi == (300.0, 300.0)
    assert any("3 PNG text chunk(s)" in n and "parameters" in n for n in data.notes)


def test_xmp_from_jpeg_kept_in_png(tmp_path):
    src = tmp_path / "in.jpg"
    Image.fromarray(photo()).save(src, quality=90, xmp=XMP_PACKET)
    data = load_image(src)
    assert data.xmp == XMP_PACKET
    assert load_image(save_image(data, tmp_path / "out.png")).xmp == XMP_PACKET


def _edit_env():
    return {**os.environ, "HF_HUB_OFFLINE": "1"}


def test_png_text_xmp_and_dpi_survive_edit_and_run(tmp_path):
    import json
    import subprocess
    import sys

    from crispedit.workflow import builtin

    src = tmp_path / "in.png"
    chunks = png_with_text(src, photo(96, 128))
    out = tmp_path / "out.png"
    r = subprocess.run([sys.executable, "-m", "crispedit.cli", "edit", str(src), "--box", "40,30,80,60", "-o",
                        str(out), "--no-check", "--json"], capture_output=True, text=True, env=_edit_env(),
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["save"]["mode"] == "lossless"
    back = load_image(out)
    assert back.text_chunks == chunks and back.xmp == XMP_PACKET and back.dpi == (300.0, 300.0)

    wf = builtin.save_edit_workflow(tmp_path / "wf.yaml", image=src, output=tmp_path / "run.png",
                                    box="40,30,80,60", no_check=True)
    for extra in ([], []):  # the second run takes the edit from the cache
        r = subprocess.run([sys.executable, "-m", "crispedit.cli", "run", str(wf), *extra], capture_output=True,
                           text=True, env={**_edit_env(), "CRISPEDIT_CACHE": str(tmp_path / "cache")},
                           cwd=tmp_path, timeout=300)
        assert r.returncode == 0, r.stderr
        back = load_image(tmp_path / "run.png")
        assert back.text_chunks == chunks and back.xmp == XMP_PACKET and back.dpi == (300.0, 300.0)
