"""End-to-end CLI tests: real processes, real files."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import photo_like
from PIL import Image

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def crispedit(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "crispedit.cli", *map(str, args)], capture_output=True,
                          text=True, env=ENV, cwd=cwd, timeout=600)


@pytest.fixture
def files(tmp_path):
    img = (photo_like(300, 420, seed=5) * 255 + 0.5).astype(np.uint8)
    ip = tmp_path / "in.png"
    Image.fromarray(img).save(ip)
    m = np.zeros((300, 420), np.uint8)
    m[100:180, 150:260] = 255
    mp = tmp_path / "mask.png"
    Image.fromarray(m).save(mp)
    return tmp_path, ip, mp, img


def test_edit_writes_full_resolution_and_json(files):
    d, ip, mp, img = files
    out = d / "out.png"
    r = crispedit("edit", ip, "--mask", mp, "-o", out, "--seed", "1", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["regions"] and info["engine_calls"] and "timings" in info
    res = np.asarray(Image.open(out))
    assert res.shape == img.shape
    assert np.array_equal(res[:40], img[:40])


def test_box_and_ellipse_shapes(files):
    d, ip, _, img = files
    for flag in ("--box", "--ellipse"):
        out = d / f"o{flag[2:]}.png"
        r = crispedit("edit", ip, flag, "100,80,200,160", "-o", out)
        assert r.returncode == 0, r.stderr
        assert np.asarray(Image.open(out)).shape == img.shape


@pytest.mark.parametrize("case", ["size", "empty", "unreadable", "missing_dir", "same_as_input", "pixels",
                                  "no_mask", "bad_suffix"])
def test_bad_input_one_line_no_output(files, case):
    d, ip, mp, _ = files
    out = d / "out.png"
    args = ["edit", ip, "--mask", mp, "-o", out]
    if case == "size":
        small = d / "small.png"
        Image.fromarray(np.full((10, 10), 255, np.uint8)).save(small)
        args[3] = small
    elif case == "empty":
        empty = d / "empty.png"
        Image.fromarray(np.zeros((300, 420), np.uint8)).save(empty)
        args[3] = empty
    elif case == "unreadable":
        bad = d / "bad.jpg"
        bad.write_bytes(ip.read_bytes()[:200])
        args[1] = bad
    elif case == "missing_dir":
        out = d / "nope" / "out.png"
        args[5] = out
    elif case == "same_as_input":
        out = ip
        args[5] = ip
    elif case == "pixels":
        args += ["--max-pixels", "1000"]
    elif case == "no_mask":
        args = ["edit", ip, "-o", out]
    elif case == "bad_suffix":
        out = d / "out.xyz"
        args[5] = out
    before = ip.read_bytes()
    r = crispedit(*args)
    assert r.returncode not in (0, 1), (r.returncode, r.stderr)
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith("error:")
    assert ip.read_bytes() == before
    if case != "same_as_input":
        assert not out.exists()
    assert not [p for p in d.iterdir() if p.name.startswith(".") or "tmp" in p.name]


def test_cmyk_is_converted_with_a_note(tmp_path):
    img = Image.fromarray((photo_like(120, 160) * 255).astype(np.uint8)).convert("CMYK")
    ip = tmp_path / "cmyk.jpg"
    img.save(ip)
    out = tmp_path / "out.jpg"
    r = crispedit("edit", ip, "--box", "40,40,100,90", "-o", out)
    assert r.returncode == 0, r.stderr
    assert "CMYK" in r.stderr
