"""The fast paths of the harness's helpers give what the plain NumPy / OpenCV forms give (issue 9, speed)."""

import cv2
import numpy as np
import pytest

from crispedit import compositing
from crispedit.io.image import to_float
from crispedit.mask import mask_weights
from crispedit.membrane import _AreaReduction, neumann_laplacian


@pytest.mark.parametrize("h,w,k", [(41, 53, 6), (36, 48, 6), (30, 31, 2)])
def test_area_reduction_of_sparse_pixels_matches_inter_area(h, w, k):
    rng = np.random.default_rng(0)
    lw, lh = max(1, round(w / k)), max(1, round(h / k))
    img = np.where(rng.random((h, w, 2)) > 0.8, rng.random((h, w, 2)), 0.0).astype(np.float32)
    idx = np.flatnonzero(img.any(axis=2))
    got = _AreaReduction(h, w, lh, lw).sums(idx, img.reshape(-1, 2)[idx].astype(np.float64))
    want = cv2.resize(img, (lw, lh), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("gh,gw", [(1, 1), (1, 4), (4, 1), (3, 5)])
def test_neumann_laplacian_entries(gh, gw):
    lap = neumann_laplacian(gh, gw).toarray()
    n = gh * gw
    want = np.zeros((n, n))
    for y in range(gh):
        for x in range(gw):
            for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
                if 0 <= y + dy < gh and 0 <= x + dx < gw:
                    want[y * gw + x, (y + dy) * gw + x + dx] = -1.0
                    want[y * gw + x, y * gw + x] += 1.0
    np.testing.assert_array_equal(lap, want)


def test_to_float_equals_division():
    a = np.arange(256, dtype=np.uint8).reshape(16, 16)
    for arr in (a, np.dstack([a, a[::-1], a.T]), np.dstack([a] * 4)[:, ::2]):
        want = arr.astype(np.float32) / np.float32(255.0)
        got = to_float(arr)
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("levels", [(0, 255), (0, 127, 255), (0, 128), (0, 3, 255), (0, 200, 255)])
def test_binary_uint8_mask_fast_path_matches_float_rule(levels):
    rng = np.random.default_rng(1)
    a = rng.choice(np.array(levels, np.uint8), size=(40, 50))
    w, reading = mask_weights(a)
    v = a.astype(np.float32) / np.float32(255.0)
    if reading.kind == "binary":
        np.testing.assert_array_equal(w, (v >= 0.5).astype(np.float32))
    assert reading.pixels == int(np.count_nonzero(w))


def test_band_values_gathered_equal_full_band_stack():
    rng = np.random.default_rng(2)
    img = rng.random((70, 90, 3)).astype(np.float32)
    other = rng.random((70, 90, 1)).astype(np.float32)
    region = rng.random((70, 90)) > 0.6
    sig = (1.0, 3.0)
    got = compositing._band_values((img, other), region, sig)
    full = compositing._bands(np.concatenate([img, other], axis=2), sig)
    np.testing.assert_allclose(got, full[region], atol=1e-6)
