"""The HTML report: self-contained, complete, and it renders in headless Chromium."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crispedit.errors import InputError
from crispedit.quality import defects as D
from crispedit.quality.report import write_report
from crispedit.quality.verdict import assess

H, W = 480, 640


@pytest.fixture(scope="module")
def pair():
    img = D.photo_like(H, W, seed=21)
    mask = D.ellipse_mask(H, W, 320, 240, 110, 80, 10)
    return img, D.tone_step(img, mask, 14), mask


INFO = {
    "model_card": {"name": "classical", "licence": "Apache-2.0", "source": "OpenCV inpainting"},
    "timings": {"engine": 1.25, "compose": 0.31},
    "engine_calls": [{"region": [100, 80, 540, 400], "size": 512, "strength": 1.0}],
    "candidates": [
        {"index": 0, "seed": 0, "prompt": "sky", "status": "rejected", "score": 0.2, "reasons": ["visible seam"]},
        {"index": 1, "seed": 1, "prompt": "sky", "status": "kept", "score": 0.8, "reasons": []},
    ],
    "prompt": "clear <sky>",
}


def _images(text: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r"data:image/(?:png|jpeg);base64,([A-Za-z0-9+/=]+)", text)]


def test_report_is_self_contained_and_complete(pair, tmp_path):
    img, edited, mask = pair
    p = write_report(img, edited, mask, tmp_path / "sub" / "r.html", info=INFO)
    assert p == tmp_path / "sub" / "r.html" and p.is_file()
    text = p.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    # nothing loaded from elsewhere
    assert not re.search(r"""(src|href)=["'](?!data:)""", text)
    assert "http://" not in text and "https://" not in text
    imgs = _images(text)
    # before, after, heatmap + before/after crops at each worst place
    assert len(imgs) >= 5
    for raw in imgs:
        assert raw[:3] == b"\xff\xd8\xff" or raw[:8] == b"\x89PNG\r\n\x1a\n"
    assert 'type="range"' in text and "setSplit" in text and "toggle" in text
    assert "Verdict: FAIL" in text and "visible seam" in text
    assert "seam_score" in text and "detail_ratio" in text and "colour_delta_e" in text
    assert "Worst places along the seam" in text and "1:1" in text
    assert "Model cards" in text and "OpenCV inpainting" in text
    assert "Timings" in text and "Engine calls" in text and "Candidates" in text and "rejected" in text
    assert "clear &lt;sky&gt;" in text  # escaped


def test_crops_are_one_to_one(pair, tmp_path):
    img, edited, mask = pair
    rep = assess(img, edited, mask)
    p = write_report(img, edited, mask, tmp_path / "r.html", report=rep)
    text = p.read_text()
    pngs = [Image.open(__import__("io").BytesIO(b)) for b in _images(text) if b[:4] == b"\x89PNG"]
    assert pngs, "no 1:1 crops"
    x, y, _ = rep.worst_places[0]
    first_before = np.asarray(pngs[0].convert("RGB"))
    side = first_before.shape[0]
    x0 = min(max(0, x - side // 2), W - side)
    y0 = min(max(0, y - side // 2), H - side)
    assert np.array_equal(first_before, img[y0 : y0 + side, x0 : x0 + side])
    first_after = np.asarray(pngs[1].convert("RGB"))
    assert np.array_equal(first_after, edited[y0 : y0 + side, x0 : x0 + side])


def test_report_without_mask_and_with_16_bit_grey(pair, tmp_path):
    img, edited, mask = pair
    p = write_report(img, edited, None, tmp_path / "auto.html")
    assert "difference" in p.read_text()
    g16 = (img[:, :, 1].astype(np.uint16) * 257)
    e16 = D.blurred_patch(g16, mask, 2.0)
    p = write_report(g16, e16, mask, tmp_path / "g16.html")
    assert "uint16" in p.read_text() and "blurrier" in p.read_text()
    with pytest.raises(InputError):
        write_report(img, edited[:-2], mask, tmp_path / "bad.html")


def test_report_cli(pair, tmp_path):
    import typer
    from typer.testing import CliRunner

    from crispedit.quality.cli import report_cmd

    img, edited, mask = pair
    Image.fromarray(img).save(tmp_path / "a.png")
    Image.fromarray(edited).save(tmp_path / "b.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "m.png")
    (tmp_path / "info.json").write_text(json.dumps(INFO))
    app = typer.Typer()
    app.command("report")(report_cmd)
    app.command("noop")(lambda: None)
    r = CliRunner().invoke(app, ["report", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--mask",
                                 str(tmp_path / "m.png"), "-o", str(tmp_path / "out.html"),
                                 "--info", str(tmp_path / "info.json")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "out.html").is_file() and "Model cards" in (tmp_path / "out.html").read_text()
    r = CliRunner().invoke(app, ["report", str(tmp_path / "a.png"), str(tmp_path / "nope.png"), "-o",
                                 str(tmp_path / "x.html")])
    assert r.exit_code == 2


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


def test_report_renders_in_headless_chromium(pair, tmp_path):
    exe = _chromium()
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    img, edited, mask = pair
    page = write_report(img, edited, mask, tmp_path / "r.html", info=INFO)
    shot = tmp_path / "shot.png"
    cmd = [
        exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,900",
        page.resolve().as_uri(),
    ]
    try:
        subprocess.run(cmd, check=False, capture_output=True, timeout=90)
    except subprocess.TimeoutExpired:
        pytest.fail("chromium did not finish the screenshot in 90 s")
    assert shot.is_file(), "no screenshot written"
    im = np.asarray(Image.open(shot).convert("RGB")).astype(np.int16)
    assert im.shape[:2] == (900, 1200)
    # not blank: many colours, real contrast, and the page's dark background with the red FAIL banner
    assert im.std() > 20
    assert len(np.unique(im.reshape(-1, 3) // 8, axis=0)) > 200
    banner = im[40:140, 30:1100].reshape(-1, 3)
    assert np.any((banner[:, 0] > 55) & (banner[:, 0] > banner[:, 1] + 25)), "verdict banner not drawn"
