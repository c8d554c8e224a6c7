"""SD1.5 end to end through the CLI on a 3840x2160 photo-like image, with tiny random models built here.

Real diffusers loading (diffusers folder and single .safetensors) and sampling code run; only the weights are
tiny and random. Marked slow-ish: each CLI call imports torch.
"""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from conftest import photo_like
from PIL import Image
from tiny_sd import save_tiny_folder, save_tiny_single_file

W, H = 3840, 2160


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("sdcli")
    img = (photo_like(H // 4, W // 4, seed=9) * 255 + 0.5).astype(np.uint8)
    img = cv2.resize(img, (W, H), interpolation=cv2.INTER_CUBIC)
    img = np.clip(img.astype(np.int16) + np.random.default_rng(0).integers(-6, 7, img.shape), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(d / "photo.png", compress_level=1)
    small = np.zeros((H, W), np.uint8)
    cv2.ellipse(small, (1200, 900), (150, 120), 0, 0, 360, 255, -1)
    Image.fromarray(small).save(d / "small.png")
    large = np.zeros((H, W), np.uint8)
    cv2.ellipse(large, (2600, 1200), (520, 420), 0, 0, 360, 255, -1)
    Image.fromarray(large).save(d / "large.png")
    folder9 = save_tiny_folder(d / "tiny9", in_channels=9)
    single4 = save_tiny_single_file(d / "tiny4.safetensors", in_channels=4)
    return d, img, folder9, single4


def cli(*args, env_extra=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "crispedit.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=900)


def far_from(mask_path, info):
    m = np.asarray(Image.open(mask_path)) > 127
    dist = cv2.distanceTransform((~m).astype(np.uint8), cv2.DIST_L2, 5)
    return dist > max(r["band"] for r in info["regions"]) + 1


def test_inpaint_9ch_folder_small_mask_deterministic(work):
    d, img, folder9, _ = work
    outs = []
    for i in range(2):
        out = d / f"o9_{i}.png"
        r = cli("edit", d / "photo.png", "--mask", d / "small.png", "--engine", "sd15", "--model", folder9,
                "--prompt", "a red ball", "--steps", "2", "--seed", "7", "-o", out, "--json", "--no-check")
        assert r.returncode == 0, r.stderr
        outs.append(out)
    info = json.loads(r.stdout)
    a, b = (np.asarray(Image.open(p)) for p in outs)
    assert a.shape == img.shape and Image.open(outs[0]).mode == "RGB"
    assert np.array_equal(a, b)  # same seed and settings, same bytes
    far = far_from(d / "small.png", info)
    assert np.array_equal(a[far], img[far])
    assert info["engine"] == "sd15" and all(c["size"][0] <= 640 for c in info["engine_calls"])


def test_inpaint_4ch_single_file_large_mask_native_detail(work):
    d, img, _, single4 = work
    out = d / "o4.png"
    r = cli("edit", d / "photo.png", "--mask", d / "large.png", "--engine", "sd15", "--model", single4,
            "--steps", "2", "--seed", "1", "--detail", "native", "-o", out, "--json", "--no-check")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    calls = info["engine_calls"]
    full = [c for c in calls if c["strength"] >= 1.0]
    native = [c for c in calls if c["strength"] < 1.0 and
              (c["region"][2] - c["region"][0], c["region"][3] - c["region"][1]) == tuple(c["size"])]
    assert len(full) == 1 and max(full[0]["size"]) <= 512
    assert len(native) >= 4  # refined at native scale in tiles with strength < 1
    res = np.asarray(Image.open(out))
    assert res.shape == img.shape
    far = far_from(d / "large.png", info)
    assert np.array_equal(res[far], img[far])


def test_pickle_refused_and_missing_model_message(work, tmp_path):
    d, _, _, _ = work
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"\x80\x04not really a pickle")
    for model, words in ((ckpt, "pickle"), (tmp_path / "missing", "does not exist"),
                         ("someone/not-cached-model", "huggingface-cli download")):
        out = tmp_path / "o.png"
        r = cli("edit", d / "photo.png", "--mask", d / "small.png", "--engine", "sd15", "--model", model,
                "-o", out, env_extra={"HF_HOME": str(tmp_path / "hf")})
        assert r.returncode == 2, r.stderr
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
        assert words in lines[0].lower() or words in lines[0], lines[0]
        assert not out.exists()
