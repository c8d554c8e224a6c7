"""harness._load_inputs: a mask file read while the image decodes gives what reading one after the other gives,
and the errors come in the same order (the image's first)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import crispedit
from crispedit.errors import InputError
from crispedit.harness import _load_inputs
from crispedit.io import load_image
from crispedit.mask import load_mask_weights


def _files(tmp_path: Path) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (48, 80, 3)).astype(np.uint8)
    m = np.zeros((48, 80), np.uint8)
    m[10:30, 20:50] = 255
    Image.fromarray(img).save(tmp_path / "img.png")
    Image.fromarray(m).save(tmp_path / "mask.png")
    Image.fromarray(m[:40]).save(tmp_path / "small.png")
    return tmp_path / "img.png", tmp_path / "mask.png", tmp_path / "small.png"


def test_overlapped_read_equals_sequential(tmp_path: Path) -> None:
    img, mask, _ = _files(tmp_path)
    data, read = _load_inputs(str(img), str(mask), 10**8)
    assert read is not None
    assert np.array_equal(data.array, load_image(str(img)).array)
    want, reading = load_mask_weights(str(mask), (80, 48))
    assert np.array_equal(read[0], want) and read[1] == reading
    # an array mask is not read ahead
    assert _load_inputs(str(img), np.zeros((48, 80), bool), 10**8)[1] is None


def test_errors_keep_their_order(tmp_path: Path) -> None:
    img, mask, small = _files(tmp_path)
    with pytest.raises(InputError, match="input image not found"):
        crispedit.edit(str(tmp_path / "none.png"), str(tmp_path / "nomask.png"), seed=0)
    with pytest.raises(InputError, match="mask file not found"):
        crispedit.edit(str(img), str(tmp_path / "nomask.png"), seed=0)
    with pytest.raises(InputError, match="mask is 80x40 but the image is 80x48"):
        crispedit.edit(str(img), str(small), seed=0)
    out = crispedit.edit(str(img), str(mask), seed=0)
    assert out.info["mask"]["pixels"] == 20 * 30
