"""JPEG in, JPEG out: only the edited MCUs are re-encoded; every other block and all metadata stay as they were.

Every JPEG here is made in code (camera-like: gradients, texture, grain; EXIF + ICC + XMP + a comment), edited
through ``load_image`` / ``save_image`` (the path the CLI and workflows use), and checked by reading both files'
DCT coefficients and decoding both with Pillow.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import photo_like
from PIL import Image, ImageCms

from crispedit.io import load_image, save_image
from crispedit.jpeg_lossless import metadata_segments, read_coefficients, splice_jpeg

jpeglib = pytest.importorskip("jpeglib")

XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
       b'<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/" dc:creator="crispedit test"/></rdf:RDF>'
       b'</x:xmpmeta>')
HAVE_JPEGTRAN = shutil.which("jpegtran") is not None


def camera_jpeg(path, h, w, *, subsampling=2, quality=90, progressive=False, orientation=1, seed=0, **extra):
    """A camera-style JPEG: EXIF (make, model, orientation), sRGB ICC profile, XMP and a comment."""
    img = (photo_like(h, w, seed=seed) * 255 + 0.5).astype(np.uint8)
    ex = Image.Exif()
    ex[0x010F], ex[0x0110], ex[0x0112] = "CrispCam", "Model 7", orientation
    ex.get_ifd(0x8769)[0x829A] = 1 / 250  # exposure time
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(img).save(path, "JPEG", quality=quality, subsampling=subsampling, progressive=progressive,
                              exif=ex.tobytes(), icc_profile=icc, xmp=XMP, comment=b"shot on a test", **extra)
    return path


def mcu_of(path):
    c = read_coefficients(path)
    samp = c["samp_factor"]
    return 8 * int(samp[:, 0].max()), 8 * int(samp[:, 1].max()), c


def edit_box(data, y0, y1, x0, x1, value=(200, 40, 30)):
    arr = data.array.copy()
    arr[y0:y1, x0:x1] = value
    return arr


def check_block_level(src, out, box, info):
    """The issue's 'done when' properties for one edit of ``box`` = (y0, y1, x0, x1) in file orientation."""
    mh, mw, before = mcu_of(src)
    after = read_coefficients(out)
    y0, y1, x0, x1 = box
    h, w = Image.open(src).size[::-1]
    gh, gw = -(-h // mh), -(-w // mw)
    touched = np.zeros((gh, gw), bool)
    touched[y0 // mh : -(-y1 // mh), x0 // mw : -(-x1 // mw)] = True
    assert info["mode"] == "block-copy" and info["verified"] is True
    assert info["mcus_reencoded"] == touched.sum() and info["mcus_total"] == gh * gw
    # 1. untouched MCUs: identical coefficients, read from both files
    samp = before["samp_factor"]
    for k, (a, b) in enumerate(zip(before["components"], after["components"])):
        v, hh = (1, 1) if len(samp) == 1 else (int(samp[k, 0]), int(samp[k, 1]))
        bm = np.repeat(np.repeat(touched, v, 0), hh, 1)[: a.shape[0], : a.shape[1]]
        assert a.shape == b.shape
        assert np.array_equal(a[~bm], b[~bm])
        assert not np.array_equal(a[bm], b[bm])  # the edit is really there
    assert np.array_equal(before["qt"], after["qt"])
    # 2. decoded pixels beyond one MCU from the edited MCUs equal the input's
    p_in = np.asarray(Image.open(src)).astype(np.int16)
    p_out = np.asarray(Image.open(out)).astype(np.int16)
    near = np.zeros((gh, gw), bool)
    rows, cols = np.nonzero(touched)
    near[max(rows.min() - 1, 0) : rows.max() + 2, max(cols.min() - 1, 0) : cols.max() + 2] = True
    near_px = np.repeat(np.repeat(near, mh, 0), mw, 1)[:h, :w]
    assert np.array_equal(p_in[~near_px], p_out[~near_px])
    # 3. size: within 5% of the input's
    s_in, s_out = os.path.getsize(src), os.path.getsize(out)
    assert abs(s_out - s_in) <= 0.05 * s_in, (s_in, s_out)
    # 4. metadata segments byte for byte
    meta = metadata_segments(open(src, "rb").read())
    assert meta and metadata_segments(open(out, "rb").read()) == meta
    return p_in, p_out


CASES = [
    pytest.param(dict(subsampling=2, quality=75), id="420-baseline-q75"),
    pytest.param(dict(subsampling=0, quality=98), id="444-baseline-q98"),
    pytest.param(dict(subsampling=2, quality=90, progressive=True), id="420-progressive-q90"),
    pytest.param(dict(subsampling=0, quality=85, progressive=True), id="444-progressive-q85"),
    pytest.param(dict(subsampling=1, quality=80, restart_marker_blocks=6), id="422-restart-q80"),
    pytest.param(dict(subsampling=2, quality=92, optimize=True), id="420-optimised-q92"),
]


@pytest.mark.parametrize("kw", CASES)
def test_small_edit_keeps_every_other_block(tmp_path, kw):
    src = camera_jpeg(tmp_path / "in.jpg", 203, 317, seed=3, **kw)  # not a multiple of the MCU size
    data = load_image(src)
    box = (70, 101, 130, 170)
    info: dict = {}
    out = save_image(data, tmp_path / "out.jpg", edit_box(data, *box), info=info)
    p_in, p_out = check_block_level(src, out, box, info)
    # the edit itself is in the file (JPEG-accurate inside the edited box)
    inner = p_out[box[0] + 4 : box[1] - 4, box[2] + 4 : box[3] - 4]
    assert np.abs(inner - np.array([200, 40, 30])).max() < 24
    if kw.get("progressive"):
        assert info["progressive"] is HAVE_JPEGTRAN
    if kw.get("restart_marker_blocks"):
        assert info["restart_interval"] == (6 if HAVE_JPEGTRAN else 0)
    reloaded = load_image(out)
    assert reloaded.xmp == data.xmp and reloaded.exif == data.exif and reloaded.icc_profile == data.icc_profile


def test_edit_at_the_picture_edge(tmp_path):
    src = camera_jpeg(tmp_path / "in.jpg", 150, 201, subsampling=2, quality=88)
    data = load_image(src)
    box = (140, 150, 190, 201)  # bottom-right corner: partial MCUs
    info: dict = {}
    out = save_image(data, tmp_path / "out.jpg", edit_box(data, *box, value=(10, 200, 10)), info=info)
    check_block_level(src, out, box, info)


def test_two_separate_edits_reencode_only_their_mcus(tmp_path):
    src = camera_jpeg(tmp_path / "in.jpg", 160, 240, subsampling=2, quality=90)
    data = load_image(src)
    arr = data.array.copy()
    arr[5:9, 5:9] = 0
    arr[150:155, 230:236] = 255
    info: dict = {}
    save_image(data, tmp_path / "out.jpg", arr, info=info)
    assert info["mcus_reencoded"] == 2 and info["verified"]


def test_unchanged_pixels_give_the_input_file(tmp_path):
    src = camera_jpeg(tmp_path / "in.jpg", 64, 96)
    info: dict = {}
    out = save_image(load_image(src), tmp_path / "out.jpg", info=info)
    assert out.read_bytes() == src.read_bytes() and info["mcus_reencoded"] == 0


def test_exif_orientation_is_kept_and_blocks_map_back(tmp_path):
    src = camera_jpeg(tmp_path / "in.jpg", 96, 160, subsampling=2, quality=90, orientation=6)
    data = load_image(src)
    assert data.array.shape[:2] == (160, 96)  # shown upright
    arr = data.array.copy()
    arr[0:16, 72:80] = 0  # upright (row, col) -> file (95 - col, row): file rows 16..23, cols 0..15, one MCU
    info: dict = {}
    out = save_image(data, tmp_path / "out.jpg", arr, info=info)
    assert info["mode"] == "block-copy" and info["mcus_reencoded"] == 1 and info["verified"]
    assert metadata_segments(out.read_bytes()) == metadata_segments(src.read_bytes())  # orientation 6 kept
    back = load_image(out)
    assert np.array_equal(back.array[40:, :], data.array[40:, :])
    assert back.array[2:14, 73:79].mean() < 40


def test_gray_jpeg(tmp_path):
    img = (photo_like(80, 120, channels=1)[:, :, 0] * 255).astype(np.uint8)
    src = tmp_path / "gray.jpg"
    Image.fromarray(img).save(src, quality=90)
    data = load_image(src)
    arr = data.array.copy()
    arr[30:40, 50:60] = 255
    info: dict = {}
    out = save_image(data, tmp_path / "out.jpg", arr, info=info)
    assert info["subsampling"] == "gray" and info["mcus_reencoded"] == 4 and info["verified"]
    a, b = read_coefficients(src)["components"][0], read_coefficients(out)["components"][0]
    assert np.array_equal(a[:3], b[:3]) and np.array_equal(a[6:], b[6:])


def test_reencode_and_other_lossy_outputs_say_what_changed(tmp_path):
    src = camera_jpeg(tmp_path / "in.jpg", 120, 160, subsampling=2, quality=85)
    data = load_image(src)
    arr = edit_box(data, 40, 60, 40, 60)
    info: dict = {}
    save_image(data, tmp_path / "re.jpg", arr, reencode=True, info=info)
    assert info["mode"] == "reencode" and info["pixels_changed_outside_edit"] > 1000
    assert any("pixels outside the edit changed" in n for n in data.notes)
    # a JPEG made from a PNG: the same one-line note
    png = tmp_path / "in.png"
    Image.fromarray(data.array).save(png)
    pdata = load_image(png)
    info = {}
    save_image(pdata, tmp_path / "from_png.jpg", edit_box(pdata, 40, 60, 40, 60), info=info)
    assert info["mode"] == "reencode" and info["max_change_outside_edit"] > 0
    assert sum("lossy JPEG" in n for n in pdata.notes) == 1
    # lossless WebP input -> lossless WebP output, nothing changed outside
    webp = tmp_path / "in.webp"
    Image.fromarray(data.array).save(webp, lossless=True)
    wdata = load_image(webp)
    info = {}
    out = save_image(wdata, tmp_path / "out.webp", edit_box(wdata, 40, 60, 40, 60), info=info)
    assert info["mode"] == "lossless"
    assert np.array_equal(load_image(out).array, edit_box(wdata, 40, 60, 40, 60))


def test_splice_refuses_a_size_change(tmp_path):
    from crispedit.jpeg_lossless import UnsupportedJpeg

    src = camera_jpeg(tmp_path / "in.jpg", 32, 48)
    orig = np.asarray(Image.open(src))
    with pytest.raises(UnsupportedJpeg):
        splice_jpeg(src, orig, orig[:16])


def test_cli_edit_jpeg_reports_block_copy_and_reencode_flag(tmp_path):
    src = camera_jpeg(tmp_path / "in.jpg", 180, 240, subsampling=2, quality=90)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "out.jpg"
    r = subprocess.run([sys.executable, "-m", "crispedit.cli", "edit", str(src), "--box", "100,60,140,100", "-o",
                        str(out), "--json", "--no-check"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["save"]["mode"] == "block-copy" and info["save"]["verified"] is True
    assert 0 < info["save"]["mcus_reencoded"] < 40
    assert any("re-encoded" in n and "identical" in n for n in info["notes"])
    assert metadata_segments(out.read_bytes()) == metadata_segments(src.read_bytes())
    out2 = tmp_path / "out2.jpg"
    r = subprocess.run([sys.executable, "-m", "crispedit.cli", "edit", str(src), "--box", "100,60,140,100", "-o",
                        str(out2), "--json", "--no-check", "--reencode"], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["save"]["mode"] == "reencode" and info["save"]["pixels_changed_outside_edit"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("kw", [dict(subsampling=2, quality=92), dict(subsampling=0, quality=95, progressive=True)],
                         ids=["420-baseline", "444-progressive"])
def test_large_camera_jpeg(tmp_path, kw):
    """>= 4000 px wide, EXIF + ICC: the full 'done when' check at camera size."""
    src = camera_jpeg(tmp_path / "in.jpg", 3000, 4000, seed=7, **kw)
    data = load_image(src)
    box = (1200, 1420, 2000, 2260)
    info: dict = {}
    out = save_image(data, tmp_path / "out.jpg", edit_box(data, *box), info=info)
    check_block_level(src, out, box, info)


def test_iptc_and_comment_kept_by_reencode_and_named_elsewhere(tmp_path):
    from crispedit.jpeg_lossless import insert_segments

    src = camera_jpeg(tmp_path / "in.jpg", 64, 96)
    iptc_body = b"Photoshop 3.0\x008BIM\x04\x04\x00\x00\x00\x00\x00\x0b\x1c\x02\x05\x00\x06Title!\x00"
    iptc = b"\xff\xed" + (len(iptc_body) + 2).to_bytes(2, "big") + iptc_body
    src.write_bytes(insert_segments(src.read_bytes(), [iptc]))
    data = load_image(src)
    arr = edit_box(data, 10, 20, 10, 20)
    block = save_image(data, tmp_path / "block.jpg", arr)
    assert metadata_segments(block.read_bytes()) == metadata_segments(src.read_bytes())
    re = save_image(data, tmp_path / "re.jpg", arr, reencode=True)
    kept = metadata_segments(re.read_bytes())
    assert iptc in kept and any(s.startswith(b"\xff\xfe") and s.endswith(b"shot on a test") for s in kept)
    assert load_image(re).xmp == data.xmp
    data.notes.clear()
    out = save_image(data, tmp_path / "out.webp", arr)  # lossy WebP (the input was lossy)
    assert any("IPTC record (APP13) and the comment" in n and "WEBP" in n for n in data.notes)
    assert sum("lossy WEBP" in n and "outside the edit changed" in n for n in data.notes) == 1
    assert load_image(out).xmp == data.xmp


def test_mpo_second_picture_kept_and_reindexed(tmp_path):
    src = tmp_path / "in.mpo"
    first = Image.fromarray((photo_like(96, 128, seed=2) * 255).astype(np.uint8))
    second = Image.fromarray((photo_like(48, 64, seed=4) * 255).astype(np.uint8))
    first.save(src, "MPO", save_all=True, append_images=[second], quality=90)
    data = load_image(src)
    assert data.format == "JPEG"
    info: dict = {}
    out = save_image(data, tmp_path / "out.jpg", edit_box(data, 20, 60, 20, 80), info=info)
    assert info["mode"] == "block-copy" and info["verified"] and info["bytes_out"] == os.path.getsize(out)
    assert any("kept" in n and "after the end of the image" in n for n in data.notes)
    with Image.open(out) as im, Image.open(src) as orig:
        assert im.format == "MPO" and im.n_frames == 2
        im.seek(1)
        orig.seek(1)
        assert np.array_equal(np.asarray(im), np.asarray(orig))


def test_unsupported_inputs_fall_back_with_a_note(tmp_path, caplog):
    # CMYK JPEG: converted on load, so the whole picture is re-encoded, and the note (and the log) says why
    cmyk = tmp_path / "cmyk.jpg"
    Image.fromarray((photo_like(32, 48, channels=3) * 255).astype(np.uint8)).convert("CMYK").save(cmyk, quality=90)
    data = load_image(cmyk)
    info: dict = {}
    with caplog.at_level(logging.INFO, logger="crispedit.io.jpeg"):
        save_image(data, tmp_path / "out.jpg", edit_box(data, 4, 8, 4, 8), info=info)
    assert info["mode"] == "reencode"
    assert any("input's blocks cannot be kept" in n and "CMYK" in n for n in data.notes)
    logged = [r for r in caplog.records if r.name == "crispedit.io.jpeg"]
    assert len(logged) == 1 and "CMYK" in logged[0].getMessage() and logged[0].levelno == logging.INFO
    # arithmetic coding (written by libjpeg through jpeglib): no block-level write
    arith = tmp_path / "arith.jpg"
    with jpeglib.version("turbo210"):
        im = jpeglib.from_spatial((photo_like(32, 48) * 255).astype(np.uint8))
        im.write_spatial(str(arith), qt=90, flags=["+ARITH_CODE"])
    data = load_image(arith)
    info = {}
    save_image(data, tmp_path / "out2.jpg", edit_box(data, 4, 8, 4, 8), info=info)
    assert info["mode"] == "reencode" and any("arithmetic" in n for n in data.notes)
    # a resized picture: nothing to keep, the regular encode
    data = load_image(camera_jpeg(tmp_path / "in.jpg", 32, 48))
    info = {}
    save_image(data, tmp_path / "small.jpg", np.ascontiguousarray(data.array[:16, :24]), info=info)
    assert info["mode"] == "reencode"
