"""crispedit.arrays (OpenCV masked writes and per-pixel weights) and the exact speed-ups built on them: every
helper must give NumPy's values bit for bit, for every layout (views, channel slices, 1-4 channels, dtypes)."""

from __future__ import annotations

import numpy as np
import pytest

from crispedit import compositing
from crispedit.arrays import add_where, copy_where, divide_pixels, plus_pixels, scale_pixels, times_pixels
from crispedit.mask import _unit

RNG = np.random.default_rng(7)


def _arr(shape: tuple[int, ...], dtype: type) -> np.ndarray:
    return (RNG.random(shape) * 200).astype(dtype)


@pytest.mark.parametrize("channels", [None, 1, 2, 3, 4, 6])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8, np.uint16])
@pytest.mark.parametrize("view", [False, True])
def test_copy_where_matches_numpy(channels: int | None, dtype: type, view: bool) -> None:
    tail = () if channels is None else (channels,)
    big = _arr((40, 60) + tail, dtype)
    dst = big[3:34, 5:52] if view else big[:31, :47].copy()
    src = _arr((31, 47) + tail, dtype)
    mask = RNG.random((31, 47)) > 0.4
    want = dst.copy()
    np.copyto(want, src, where=mask if channels is None else mask[..., None])
    outside = big.copy()
    copy_where(dst, src, mask)
    assert np.array_equal(dst, want)
    if view:  # nothing outside the view was written
        outside[3:34, 5:52] = want
        assert np.array_equal(big, outside)


def test_copy_where_channel_slice_and_casting() -> None:
    rgba = np.zeros((8, 9, 4), np.uint8)
    mask = np.eye(8, 9, dtype=bool)
    copy_where(rgba[..., :3], np.full((8, 9, 3), 7, np.uint8), mask)  # not a Mat layout: NumPy's path
    assert (rgba[..., :3][mask] == 7).all() and not rgba[..., :3][~mask].any() and not rgba[..., 3].any()
    with pytest.raises(ValueError):
        copy_where(np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 3), np.float32), np.zeros((4, 5), bool))


@pytest.mark.parametrize("channels", [1, 3])
def test_add_where_matches_numpy(channels: int) -> None:
    big = _arr((30, 50, channels), np.float32)
    dst = big[2:27, 4:44]
    add = RNG.standard_normal((25, 40, channels)).astype(np.float32)
    mask = RNG.random((25, 40)) > 0.5
    want = dst.copy()
    np.add(want, add, out=want, where=mask[..., None])
    add_where(dst, add, mask)
    assert np.array_equal(dst, want)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_pixel_weights_match_numpy(channels: int) -> None:
    x = RNG.random((33, 45, channels)).astype(np.float32)
    w = (RNG.random((33, 45)) + 0.05).astype(np.float32)
    a = x.copy()
    a *= w[:, :, None]
    assert np.array_equal(scale_pixels(x.copy(), w), a)
    assert np.array_equal(scale_pixels(x.copy(), w[:, :, None]), a)
    assert np.array_equal(times_pixels(x, w), a)
    d = x.copy()
    d /= w[:, :, None]
    assert np.array_equal(divide_pixels(x.copy(), w), d)
    assert np.array_equal(plus_pixels(x, w[:, :, None]), x + w[:, :, None])
    big = np.zeros((40, 50, channels), np.float32)
    big[2:35, 3:48] = x
    view = big[2:35, 3:48]
    scale_pixels(view, w)
    assert np.array_equal(view, a) and not big[:2].any() and not big[:, :3].any()


def test_float64_falls_back_to_numpy() -> None:
    x = RNG.random((10, 12, 3))
    w = RNG.random((10, 12)).astype(np.float32)
    assert times_pixels(x, w).dtype == np.float64
    assert np.array_equal(times_pixels(x, w), x * w[:, :, None])


def test_box_sums_on_the_grid_equal_the_full_sums_subsampled() -> None:
    mask = RNG.random((123, 97)) > 0.3
    for size, step in ((16, 8), (32, 8), (7, 3), (97, 1)):
        full = compositing._box_sums(mask, size)
        assert np.array_equal(compositing._box_sums(mask, size, step), full[::step, ::step])


def test_mean_products_equal_numpy() -> None:
    a = RNG.standard_normal((5000, 3, 3)).astype(np.float32)
    b = RNG.standard_normal((5000, 3, 3)).astype(np.float32)
    want = (a.astype(np.float64) * b).mean(axis=(0, 2))
    np.testing.assert_allclose(compositing._mean_products(a, b), want, rtol=1e-12)
    np.testing.assert_allclose(compositing._mean_products(a, a), (a.astype(np.float64) ** 2).mean(axis=(0, 2)),
                               rtol=1e-12)


def test_mask_levels_by_lookup_equal_division() -> None:
    levels = RNG.integers(0, 256, (50, 70)).astype(np.uint8)
    assert np.array_equal(_unit(levels), levels.astype(np.float32) / 255.0)
    rgba = RNG.integers(0, 256, (20, 30, 4)).astype(np.uint8)
    assert np.array_equal(_unit(rgba[..., 3]), rgba[..., 3].astype(np.float32) / 255.0)  # a strided channel


@pytest.mark.parametrize("n", [1, 2, 7, 30000, 29999])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_robust_sigma_equals_numpy_medians(n: int, dtype: type) -> None:
    v = RNG.standard_normal((n, 6)).astype(dtype)
    med = np.median(v, axis=0)
    want = compositing._MAD_TO_STD * np.median(np.abs(v - med), axis=0).astype(np.float64)
    assert np.array_equal(compositing._robust_sigma(v), want)
    assert compositing._robust_sigma(v[:0]).shape == (6,)
