"""Tests for crispedit.compositing (generated images only, offline)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crispedit import compositing
from crispedit.compositing import (
    band_level,
    blend_weight,
    distance_from,
    highpass,
    match_grain,
    multiband_blend,
    restore_detail,
    tone_match,
)

# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def disk(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 < r**2


def smooth_image(h: int, w: int, seed: int, c: int = 3, sigma: float = 12.0) -> np.ndarray:
    """A smooth random 'photo' in [0.2, 0.8] (no clipping in the tests)."""
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.random((h, w, c)).astype(np.float32), (0, 0), sigma)
    img -= img.min()
    img /= max(float(img.max()), 1e-6)
    return (0.2 + 0.6 * img).astype(np.float32)


def grad_mag(img: np.ndarray) -> np.ndarray:
    gy, gx = np.gradient(img.astype(np.float64), axis=(0, 1))
    return np.sqrt(gx**2 + gy**2).max(axis=2)


# --------------------------------------------------------------------------------------------------
# blend_weight
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("band", [1, 4, 17, 40])
def test_blend_weight_support_and_values(band):
    mask = disk(120, 140, 60, 70, 25)
    w = blend_weight(mask, band)
    d = distance_from(mask)
    assert w.dtype == np.float32 and w.shape == mask.shape
    assert np.all(w[mask] == 1.0)
    assert np.all(w[d >= band] == 0.0)
    assert np.all(w[(d > 0) & (d < band)] > 0.0)
    assert np.all(w[(d > 0)] < 1.0)
    assert w.min() >= 0.0 and w.max() <= 1.0


def test_blend_weight_monotone_in_distance():
    rng = np.random.default_rng(3)
    mask = cv2.dilate((rng.random((90, 110)) > 0.995).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    w = blend_weight(mask, 20).astype(np.float64)
    d = distance_from(mask).astype(np.float64)
    order = np.argsort(d, axis=None, kind="stable")
    ws = w.reshape(-1)[order]
    # monotone up to float32 resolution: the weight is computed in float32, and its last bit can differ between
    # processes (SIMD paths depend on memory alignment), so 1e-7 (below one float32 ulp at 1.0) was flaky
    tol = 4 * float(np.finfo(np.float32).eps)
    assert np.all(np.diff(ws) <= tol), (np.diff(ws).max(), int(np.argmax(np.diff(ws))))
    # along a ray from a single-pixel mask: strictly decreasing until 0
    m1 = np.zeros((1, 64), bool)
    m1[0, 0] = True
    ray = blend_weight(m1, 30)[0]
    assert np.all(np.diff(ray[:31]) < 0) and np.all(ray[30:] == 0)


def test_blend_weight_edge_cases():
    empty = np.zeros((10, 12), bool)
    assert not blend_weight(empty, 5).any()
    m = disk(10, 12, 5, 6, 3)
    assert np.array_equal(blend_weight(m, 0), m.astype(np.float32))


# --------------------------------------------------------------------------------------------------
# multiband_blend
# --------------------------------------------------------------------------------------------------


@st.composite
def blend_case(draw):
    h = draw(st.integers(6, 90))
    w = draw(st.integers(6, 90))
    c = draw(st.sampled_from([1, 3, 4]))
    band = draw(st.integers(4, 40))
    seed = draw(st.integers(0, 2**31 - 1))
    kind = draw(st.sampled_from(["blobs", "rect", "noise", "full", "pixel"]))
    return h, w, c, band, seed, kind


def random_mask(h: int, w: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind == "rect":
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        m = np.zeros((h, w), bool)
        m[y0:y0 + rng.integers(1, h + 1), x0:x0 + rng.integers(1, w + 1)] = True
        return m
    if kind == "noise":
        return rng.random((h, w)) > rng.uniform(0.5, 0.99)
    if kind == "full":
        return np.ones((h, w), bool)
    if kind == "pixel":
        m = np.zeros((h, w), bool)
        m[rng.integers(0, h), rng.integers(0, w)] = True
        return m
    seeds = (rng.random((h, w)) > 0.98).astype(np.uint8)
    k = int(rng.integers(1, 8)) * 2 + 1
    return cv2.dilate(seeds, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))) > 0


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blend_case())
def test_multiband_identity_outside_band(case):
    h, w, c, band, seed, kind = case
    rng = np.random.default_rng(seed)
    mask = random_mask(h, w, kind, rng)
    original = rng.random((h, w, c)).astype(np.float32)
    edited = rng.random((h, w, c)).astype(np.float32)
    weight = blend_weight(mask, band)
    out = multiband_blend(original, edited, weight, band=band)
    assert out.dtype == np.float32 and out.shape == original.shape
    assert np.all(np.isfinite(out))
    far = distance_from(mask) >= band
    # bit-identical, not merely close
    assert np.array_equal(out[far].view(np.uint32), original[far].view(np.uint32))
    if mask.any():
        np.testing.assert_allclose(out[mask], edited[mask], atol=1e-5)


def test_multiband_core_gets_exactly_the_edit_and_no_ghost():
    """A removed dark object must not bleed back into the filled mask (all levels weight 1)."""
    h = w = 160
    mask = disk(h, w, 80, 80, 30)
    original = np.full((h, w, 3), 0.7, np.float32)
    original[disk(h, w, 80, 80, 28)] = 0.05  # the object being removed
    edited = np.full((h, w, 3), 0.7, np.float32)
    for band in (8, 24, 48):
        out = multiband_blend(original, edited, blend_weight(mask, band), band=band)
        assert np.abs(out[mask] - 0.7).max() < 1e-5


@pytest.mark.parametrize("band", [6, 16, 32])
def test_multiband_no_step_at_band_edge(band):
    h, w = 200, 220
    mask = disk(h, w, 100, 110, 45)
    original = smooth_image(h, w, 1)
    edited = np.clip(smooth_image(h, w, 2) + 0.15, 0, 1)
    out = multiband_blend(original, edited, blend_weight(mask, band), band=band)
    d = distance_from(mask)
    g = grad_mag(out)
    line = (d > band - 1.5) & (d <= band + 1.5)
    inside = (d > 0) & (d < band - 1.5)
    assert g[line].max() <= g[inside].max()
    # the blend has (almost) vanished before the hard copy line: no step there
    near = (d > band - 1) & (d < band)
    assert np.abs(out[near] - original[near]).max() < 0.02 * np.abs(edited - original).max()
    if band >= 16:
        # wide bands: at the line the output is the original up to a negligible tail
        assert g[line].max() <= grad_mag(original)[line].max() + 2e-3


def test_multiband_fine_detail_switches_faster_than_tone():
    """Multi-band: high frequencies cross over a narrower transition than low frequencies."""
    h, w = 64, 400
    band = 64
    mask = np.zeros((h, w), bool)
    mask[:, :150] = True
    weight = blend_weight(mask, band)
    original = np.zeros((h, w, 1), np.float32)
    tone = multiband_blend(original, np.ones_like(original), weight, band=band)[32, :, 0]
    checker = ((np.indices((h, w)).sum(axis=0) % 2) * 2.0 - 1.0).astype(np.float32)[:, :, None]
    detail = multiband_blend(original, checker, weight, band=band)
    amp = np.abs(detail[30:34, :, 0]).mean(axis=0)

    def width(profile):
        x = np.arange(w)
        hi = x[profile > 0.9].max()
        lo = x[profile > 0.1].max()
        return lo - hi

    assert width(amp) < width(tone)
    assert np.all(amp[150 + band:] == 0) and np.all(tone[150 + band:] == 0)


def test_multiband_shapes_and_no_core():
    rng = np.random.default_rng(0)
    o = rng.random((40, 50)).astype(np.float32)
    e = rng.random((40, 50)).astype(np.float32)
    m = disk(40, 50, 20, 25, 8)
    out = multiband_blend(o, e, blend_weight(m, 6), band=6)
    assert out.shape == (40, 50) and out.dtype == np.float32
    # no weight == 1 anywhere: nothing changes
    out0 = multiband_blend(o, e, np.full((40, 50), 0.5, np.float32), band=6)
    assert np.array_equal(out0, o)


# --------------------------------------------------------------------------------------------------
# tone_match
# --------------------------------------------------------------------------------------------------


def tone_case(h: int = 300, w: int = 360):
    original = smooth_image(h, w, 7, sigma=6)
    rng = np.random.default_rng(8)
    original = np.clip(original + 0.01 * rng.standard_normal(original.shape), 0, 1).astype(np.float32)
    mask = disk(h, w, 150, 180, 70)
    d = distance_from(mask)
    known = (d > 0) & (d <= 48)
    target = d <= 24
    return original, mask, known, target


def test_tone_match_removes_smooth_drift():
    original, mask, known, target = tone_case()
    h, w = mask.shape
    x = np.arange(w, dtype=np.float32)[None, :, None] / w
    edited = original + 0.05 + 0.03 * x
    before = np.abs(edited - original)[target].mean()
    out = tone_match(edited, original, known, target, scale=48)
    after = np.abs(out - original)[target].mean()
    assert after < before / 10, (before, after)
    # untouched outside target
    assert np.array_equal(out[~target], edited[~target])


def test_tone_match_colour_drift_per_channel():
    original, mask, known, target = tone_case()
    h, w = mask.shape
    yy = np.arange(h, dtype=np.float32)[:, None] / h
    edited = original.copy()
    edited[..., 0] += 0.04
    edited[..., 1] -= 0.03 * yy
    edited[..., 2] += 0.02 + 0.02 * yy
    before = np.abs(edited - original)[target].mean()
    out = tone_match(edited, original, known, target, scale=48)
    after = np.abs(out - original)[target].mean()
    assert after < before / 10, (before, after)


def test_tone_match_no_drift_is_a_no_op():
    original, mask, known, target = tone_case()
    edited = original.copy()
    edited[mask] = 0.9  # new content inside the mask; the ring is untouched
    out = tone_match(edited, original, known, target, scale=48)
    assert np.array_equal(out, edited)


def test_tone_match_large_crop_uses_coarse_grid():
    original, mask, known, target = tone_case(600, 500)
    edited = original + 0.06
    out = tone_match(edited, original, known, target, scale=16, max_grid=64)
    after = np.abs(out - original)[target].mean()
    assert after < 0.006 / 2


# --------------------------------------------------------------------------------------------------
# highpass / band_level
# --------------------------------------------------------------------------------------------------


def test_band_level_measures_white_noise_and_ignores_edges():
    rng = np.random.default_rng(0)
    img = np.full((256, 256, 3), 0.3, np.float32)
    img[:, 128:] = 0.8  # a strong edge
    img += (0.02 * rng.standard_normal(img.shape)).astype(np.float32)
    est = band_level(img)
    assert est.shape == (3,)
    np.testing.assert_allclose(est, 0.02, rtol=0.1)
    assert np.abs(highpass(np.full((8, 8), 0.5, np.float32))).max() == 0
    assert np.array_equal(band_level(img, np.zeros((256, 256), bool)), np.zeros(3))


# --------------------------------------------------------------------------------------------------
# match_grain
# --------------------------------------------------------------------------------------------------


def grain_case(h: int = 256, w: int = 256, sigma: float = 0.03, correlated: bool = False, seed: int = 0):
    rng = np.random.default_rng(seed)
    base = smooth_image(h, w, seed + 100, sigma=20)
    if correlated:
        noise = np.repeat(rng.standard_normal((h, w, 1)), 3, axis=2)
    else:
        noise = rng.standard_normal((h, w, 3))
    original = np.clip(base + sigma * noise, 0, 1).astype(np.float32)
    mask = disk(h, w, h / 2, w / 2, min(h, w) * 0.28)
    d = distance_from(mask)
    ring = (d > 0) & (d <= 40)
    edited = original.copy()
    edited[mask] = base[mask]  # a perfectly smooth (engine-like) patch
    return original, edited, mask, ring


def test_match_grain_restores_noise_level_and_leaves_outside():
    original, edited, mask, ring = grain_case()
    inner = ~(distance_from(~mask) < 6)
    before = band_level(edited, inner)
    target = band_level(original, ring)
    assert np.all(before < 0.3 * target)
    out = match_grain(edited, original, mask, ring, seed=1)
    after = band_level(out, inner)
    np.testing.assert_allclose(after, target, rtol=0.2)
    # also the coarser band
    np.testing.assert_allclose(band_level(out, inner, sigma=3.0), band_level(original, ring, sigma=3.0),
                               rtol=0.2)
    assert np.array_equal(out[~mask], edited[~mask])
    assert out.dtype == np.float32


def test_match_grain_deterministic_with_seed():
    original, edited, mask, ring = grain_case(160, 180)
    a = match_grain(edited, original, mask, ring, seed=5)
    b = match_grain(edited, original, mask, ring, seed=5)
    c = match_grain(edited, original, mask, ring, seed=6)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_match_grain_keeps_colour_correlation_of_the_photo():
    original, edited, mask, ring = grain_case(correlated=True)
    out = match_grain(edited, original, mask, ring, seed=2)
    added = (out - edited)[mask]
    corr = np.corrcoef(added.T)
    assert corr[0, 1] > 0.8 and corr[0, 2] > 0.8


def test_match_grain_fallback_when_no_clean_patch_fits():
    # the mask covers almost everything: only a 3-px ring remains, no source window fits
    original, _, _, _ = grain_case(128, 128)
    mask = np.zeros((128, 128), bool)
    mask[3:-3, 3:-3] = True
    ring = ~mask
    edited = original.copy()
    edited[mask] = cv2.GaussianBlur(original, (0, 0), 4)[mask]
    out = match_grain(edited, original, mask, ring, seed=0)
    inner = np.zeros_like(mask)
    inner[12:-12, 12:-12] = True
    np.testing.assert_allclose(band_level(out, inner), band_level(original, ring), rtol=0.25)
    assert np.array_equal(out[~mask], edited[~mask])


def test_match_grain_no_op_when_already_grainy_or_empty():
    original, _, mask, ring = grain_case(128, 128)
    out = match_grain(original, original, mask, ring, seed=0)
    assert np.array_equal(out, original)
    out2 = match_grain(original, original, np.zeros_like(mask), ring, seed=0)
    assert np.array_equal(out2, original)


# --------------------------------------------------------------------------------------------------
# restore_detail
# --------------------------------------------------------------------------------------------------


def test_restore_detail_swaps_high_frequencies_inside_mask():
    original, edited, mask, _ = grain_case(128, 128)
    hi = highpass(original, 2.0)
    out = restore_detail(edited, hi, mask, sigma=2.0)
    assert np.array_equal(out[~mask], edited[~mask])
    inner = ~(distance_from(~mask) < 8)
    np.testing.assert_allclose(band_level(out, inner), band_level(original, inner), rtol=0.1)
    added = restore_detail(edited, hi, mask, sigma=2.0, replace=False)
    np.testing.assert_allclose(added[mask], np.clip(edited + hi, 0, 1)[mask], atol=1e-6)


def test_grayscale_and_single_channel_inputs_keep_their_shape():
    original, edited, mask, ring = grain_case(96, 112)
    d = distance_from(mask)
    for o, e in ((original[..., 0], edited[..., 0]), (original[..., :1], edited[..., :1]),
                 (np.concatenate([original, original[..., :1]], 2),
                  np.concatenate([edited, edited[..., :1]], 2))):
        assert multiband_blend(o, e, blend_weight(mask, 8), band=8).shape == o.shape
        assert tone_match(e, o, ring, d <= 8, scale=16).shape == o.shape
        g = match_grain(e, o, mask, ring, seed=0)
        assert g.shape == o.shape and g.dtype == np.float32
        assert restore_detail(e, highpass(o, 1.0), mask, sigma=1.0).shape == o.shape
        assert band_level(o, ring).shape == ((1,) if o.ndim == 2 else (o.shape[2],))


# --------------------------------------------------------------------------------------------------
# sharpness matching and the band's own detail (issue 9)
# --------------------------------------------------------------------------------------------------


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth tone + fine texture + a few hard edges, float RGB in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 0.45 + 0.15 * np.sin(xx / 23.0)[..., None] * np.cos(yy / 31.0)[..., None] * np.ones(3, np.float32)
    base[h // 4:h // 2, :] += 0.15
    base[:, w // 3:w // 3 + 6] -= 0.2
    fine = cv2.GaussianBlur(rng.standard_normal((h, w, 3)).astype(np.float32), (0, 0), 0.7) * 0.06
    return np.clip(base + fine, 0, 1).astype(np.float32)


def _octaves(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Stationary texture with a photo-like spectrum: noise octaves from 0.5 to 8 px, float RGB."""
    rng = np.random.default_rng(seed)
    acc = np.zeros((h, w, 3), np.float32)
    for s, a in ((0.5, 0.012), (1.0, 0.02), (2.0, 0.03), (4.0, 0.04), (8.0, 0.05)):
        acc += a * s * cv2.GaussianBlur(rng.standard_normal((h, w, 3)).astype(np.float32), (0, 0), s)
    return np.clip(0.5 + acc, 0, 1).astype(np.float32)


def _lap_energy(x: np.ndarray, sel: np.ndarray) -> float:
    lum = x[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
    return float(np.mean(cv2.Laplacian(lum, cv2.CV_32F, ksize=1)[sel] ** 2))


def _decode(x: np.ndarray, sigma: float, noise: float = 0.0, seed: int = 1) -> np.ndarray:
    """What a VAE-like engine hands back: blurred, optionally grainy, quantised to 8 bits."""
    out = cv2.GaussianBlur(x, (0, 0), sigma) if sigma > 0 else x.copy()
    if noise:
        out = out + noise * np.random.default_rng(seed).standard_normal(x.shape).astype(np.float32)
    return np.round(np.clip(out, 0, 1) * 255).astype(np.float32) / 255


@pytest.mark.parametrize("sigma", [0.5, 1.0])
def test_match_sharpness_brings_a_blurred_edit_back(sigma):
    o = _octaves(192, 192)
    e = _decode(o, sigma)
    ring = np.zeros((192, 192), bool)
    ring[:, :64] = True
    wt = np.zeros((192, 192), np.float32)
    wt[:, 64:] = 1.0
    inner = np.zeros((192, 192), bool)
    inner[8:-8, 72:-8] = True
    before = _lap_energy(e, inner) / _lap_energy(o, inner)
    out = compositing.match_sharpness(e, o, ring, wt)
    after = _lap_energy(out, inner) / _lap_energy(o, inner)
    if sigma <= 0.5:
        assert before < 0.6 and 0.8 <= after <= 1.25, (before, after)
    else:  # a 1 px blur takes the top octave below the 8-bit noise: much comes back, never too much
        assert before < 0.2 and after > 2.5 * before and after <= 1.25, (before, after)
    # closer to the photo, not just sharper
    assert np.abs(out - o)[inner].mean() < np.abs(e - o)[inner].mean()
    assert np.array_equal(out[:, :64], e[:, :64])  # weight 0: untouched


def test_match_sharpness_no_halo_at_a_step_edge():
    rng = np.random.default_rng(0)
    o = np.full((96, 96, 3), 0.3, np.float32)
    o[:, 48:] = 0.7
    o += 0.003 * rng.standard_normal(o.shape).astype(np.float32)
    e = _decode(o, 1.0)
    ring = np.zeros((96, 96), bool)
    ring[:32] = True
    wt = np.zeros((96, 96), np.float32)
    wt[40:] = 1.0
    out = compositing.match_sharpness(e, o, ring, wt)
    rows = out[48:90, :, 0]
    step = 0.4
    assert rows.max() <= 0.7 + 0.03 * step + 0.01 and rows.min() >= 0.3 - 0.03 * step - 0.01  # no overshoot
    # and the edge is steeper than the engine left it
    slope = lambda x: float(np.abs(np.diff(x[48:90, 40:56, 0], axis=1)).max(axis=1).mean())  # noqa: E731
    assert slope(out) > 1.3 * slope(e)


def test_match_sharpness_noisy_engine_not_noisier():
    o = _texture(160, 160, seed=2)
    e = _decode(o, 0.0, noise=0.03)  # an engine that adds its own grain, no blur
    ring = np.zeros((160, 160), bool)
    ring[:, :56] = True
    wt = np.zeros((160, 160), np.float32)
    wt[:, 56:] = 1.0
    inner = np.zeros((160, 160), bool)
    inner[8:-8, 64:-8] = True
    fit = compositing.sharpness_gains(e, o, ring)
    assert fit["noise"][0] > 10 * fit["noise"][2]  # the grain is seen in the finest band
    out = compositing.match_sharpness(e, o, ring, wt)
    r_before = _lap_energy(e, inner) / _lap_energy(o, inner)
    r_after = _lap_energy(out, inner) / _lap_energy(o, inner)
    assert r_before > 1.5 and r_after < 0.75 * r_before, (r_before, r_after)


def test_sharpness_gains_identity_engine_is_a_no_op():
    o = _texture(96, 96)
    ring = np.ones((96, 96), bool)
    fit = compositing.sharpness_gains(o, o, ring)
    assert np.allclose(fit["transfer"], 1.0) and np.allclose(fit["noise"], 0.0, atol=1e-12)
    out = compositing.match_sharpness(o, o, ring, np.ones((96, 96), np.float32))
    assert np.array_equal(out, o)


def test_transfer_detail_keeps_an_edge_crossing_the_contour():
    o = _texture(128, 128)
    o[:, 60:64] = 0.9  # a sharp vertical line crossing the mask's horizontal contour at y = 64
    m = np.zeros((128, 128), bool)
    m[64:, :] = True
    soft = cv2.GaussianBlur(o, (0, 0), 1.2)
    out = compositing.transfer_detail(soft, o, m, width=2.0)

    def grad_energy(x, rows):
        lum = x @ np.array([0.299, 0.587, 0.114], np.float32)
        gx = cv2.Sobel(lum, cv2.CV_32F, 1, 0)
        return float(np.mean(gx[rows] ** 2))
    outside = slice(50, 61)  # 3-14 px outside the contour
    assert grad_energy(soft, outside) < 0.7 * grad_energy(o, outside)
    assert 0.85 < grad_energy(out, outside) / grad_energy(o, outside) < 1.15
    assert np.array_equal(out[m], soft[m])  # the mask keeps the edit
    fine = lambda x: compositing.highpass(x, 1.0)[8:40]  # noqa: E731
    assert np.abs(fine(out) - fine(o)).max() < 0.01 < np.abs(fine(soft) - fine(o)).max()  # the photo's detail


def test_cap_detail_takes_engine_grain_down_to_the_ring_level():
    o = _texture(128, 128)
    m = np.zeros((128, 128), bool)
    m[32:96, 32:96] = True
    e = o.copy()
    e[m] += 0.05 * np.random.default_rng(3).standard_normal((int(m.sum()), 3)).astype(np.float32)
    out = compositing.cap_detail(e, o, m, ~m, limit=1.2)
    inner = np.zeros_like(m)
    inner[40:88, 40:88] = True
    assert _lap_energy(out, inner) < 0.6 * _lap_energy(e, inner)
    assert np.array_equal(out[~m], e[~m])
    t = _octaves(128, 128, seed=4)
    calm = compositing.cap_detail(t, t, m, ~m)  # at the ring's level: nothing to take down
    assert np.array_equal(calm, t)


def test_shared_distance_and_local_morphology_give_the_same_result():
    """The speed paths (a distance passed in, dilation/erosion on the mask's box) change nothing."""
    rng = np.random.default_rng(7)
    m = np.zeros((160, 200), bool)
    m[40:90, 30:120] = True
    m[150:160, 190:200] = True  # touches the image corner: the replicated border must agree
    o = rng.random((160, 200, 3)).astype(np.float32)
    e = rng.random((160, 200, 3)).astype(np.float32)
    d = distance_from(m)
    w = blend_weight(m, 16)
    assert np.array_equal(blend_weight(m, 16, distance=d), w)
    assert np.array_equal(multiband_blend(o, e, w, band=16, distance=d), multiband_blend(o, e, w, band=16))
    for r in (1, 5, 13):
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        u8 = m.astype(np.uint8)
        assert np.array_equal(compositing._dilate(m, r), cv2.dilate(u8, k).astype(bool))
        assert np.array_equal(compositing._erode(m, r),
                              cv2.erode(u8, k, borderType=cv2.BORDER_REPLICATE).astype(bool))
    assert not compositing._dilate(np.zeros_like(m), 3).any()


def test_robust_sigma_and_bands_match_their_plain_definitions():
    rng = np.random.default_rng(8)
    v = rng.standard_normal((1001, 6)).astype(np.float32)
    med = np.median(v, axis=0)
    want = 1.4826 * np.median(np.abs(v - med), axis=0)
    assert np.allclose(compositing._robust_sigma(v), want, rtol=1e-6)
    img = rng.random((40, 50, 3)).astype(np.float32)
    g1, g3 = (cv2.GaussianBlur(img, (0, 0), s, borderType=cv2.BORDER_REFLECT) for s in (1.0, 3.0))
    assert np.array_equal(compositing._bands(img, (1.0, 3.0)), np.concatenate([img - g1, g1 - g3], axis=2))


def test_distance_from_is_exact_and_the_same_in_every_process():
    """The blend weights rest on distance_from: it must be the exact EDT, bit for bit, in any process (OpenCV's
    precise transform alone differed in the last float bit between processes once scipy was imported)."""
    import hashlib
    import subprocess
    import sys

    from scipy import ndimage

    rng = np.random.default_rng(11)
    mask = cv2.dilate((rng.random((300, 400)) > 0.998).astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    d = distance_from(mask)
    assert d.dtype == np.float32
    assert np.array_equal(d, ndimage.distance_transform_edt(~mask).astype(np.float32))
    code = ("import hashlib, numpy as np, cv2; from crispedit.compositing import distance_from, blend_weight; "
            "rng = np.random.default_rng(11); "
            "m = cv2.dilate((rng.random((300, 400)) > 0.998).astype(np.uint8), np.ones((7, 7), np.uint8)) > 0; "
            "print(hashlib.sha256(distance_from(m).tobytes() + blend_weight(m, 40).tobytes()).hexdigest())")
    here = hashlib.sha256(d.tobytes() + blend_weight(mask, 40).tobytes()).hexdigest()
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == here


def _photo_texture(n: int = 192, seed: int = 5) -> np.ndarray:
    """A photo-like texture: 1/f noise (sum of octaves), slightly blurred, 3 correlated channels."""
    rng = np.random.default_rng(seed)
    acc = np.zeros((n, n), np.float32)
    for octave in range(6):
        s = 2 ** octave
        small = rng.standard_normal((n // s + 2, n // s + 2)).astype(np.float32)
        acc += cv2.resize(small, (n + 2 * s, n + 2 * s), interpolation=cv2.INTER_CUBIC)[s:s + n, s:s + n] * s ** 0.5
    acc = cv2.GaussianBlur(acc, (0, 0), 0.5)
    base = 0.5 + 0.04 * acc / acc.std()
    return np.clip(np.stack([base, 0.95 * base + 0.02, 1.05 * base - 0.03], axis=2), 0, 1).astype(np.float32)


def _luma_lap_energy(img: np.ndarray, sel: np.ndarray) -> float:
    y = np.ascontiguousarray((img @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.float32))
    return float((cv2.Laplacian(y, cv2.CV_32F, ksize=1)[sel] ** 2).mean())


def test_synthesise_detail_restores_the_finest_level_of_a_soft_patch():
    o = _photo_texture()
    m = disk(*o.shape[:2], 96, 96, 60)
    soft = np.where(m[..., None], cv2.GaussianBlur(o, (0, 0), 1.2), o).astype(np.float32)
    out = compositing.synthesise_detail(soft, o, m, ~m & (distance_from(m) <= 40))
    inner = ~(distance_from(~m) < 12)
    before = _luma_lap_energy(soft, inner) / _luma_lap_energy(o, inner)
    after = _luma_lap_energy(out, inner) / _luma_lap_energy(o, inner)
    assert before < 0.3
    assert after > 2.0 * before and 0.45 < after < 1.25, (before, after)
    assert np.array_equal(out[~m], soft[~m])  # nothing changes outside the mask
    # low frequencies are the soft patch's: only fine detail was added
    assert np.abs(cv2.GaussianBlur(out, (0, 0), 3.0) - cv2.GaussianBlur(soft, (0, 0), 3.0))[inner].max() < 0.01


def test_synthesise_detail_takes_an_engines_grain_down_and_leaves_a_matching_patch_alone():
    o = _photo_texture(seed=9)
    m = disk(*o.shape[:2], 96, 96, 60)
    ring = ~m & (distance_from(m) <= 40)
    inner = ~(distance_from(~m) < 12)
    rng = np.random.default_rng(2)
    noisy = o + 0.01 * m[..., None] * rng.standard_normal(o.shape).astype(np.float32)  # 2.5 levels
    out = compositing.synthesise_detail(noisy, o, m, ring)
    assert _luma_lap_energy(out, inner) < 0.6 * _luma_lap_energy(noisy, inner)
    # taken down (each band to at most half its power per call: a wrong prediction must not leave a soft patch)
    assert _luma_lap_energy(out, inner) > 0.25 * _luma_lap_energy(noisy, inner)
    same = compositing.synthesise_detail(o, o, m, ring)
    assert np.abs(same - o).max() < 0.02


def test_synthesise_detail_reads_only_its_bands_and_the_two_above():
    # edges past ``bands`` + 2 only widen the filtered box: on an image the box covers either way, the result
    # does not depend on them (the coarsest Gaussians are not computed)
    o = _photo_texture(seed=4)
    m = disk(*o.shape[:2], 96, 96, 50)
    soft = np.where(m[..., None], cv2.GaussianBlur(o, (0, 0), 1.0), o).astype(np.float32)
    ring = ~m & (distance_from(m) <= 40)
    ref = compositing.synthesise_detail(soft, o, m, ring)
    other = compositing.synthesise_detail(soft, o, m, ring, sigmas=(0.5, 1.0, 2.0, 4.0, 8.0, 32.0))
    assert np.abs(ref - soft).max() > 0.005  # something was synthesised
    assert np.array_equal(ref, other)


def test_transfer_detail_narrow_ramp_is_the_outside():
    # a ramp of at most 1 px is 1 on every pixel off the mask (exact distances are 0 or >= 1): the same result as
    # the smoothstep of the distance
    o = _texture(64, 64)
    e = cv2.GaussianBlur(o, (0, 0), 1.5)
    m = disk(64, 64, 30, 34, 17)
    out = compositing.transfer_detail(e, o, m, width=1.0, sigma=3.0)  # below the half-resolution sigmas
    outside = (~m).astype(np.float32)[:, :, None]
    ramp = compositing._smoothstep(distance_from(m))[:, :, None]
    assert np.array_equal(ramp, outside)
    diff = (o - e) * outside
    low = cv2.GaussianBlur(diff, (0, 0), 3.0, borderType=cv2.BORDER_REFLECT) / np.maximum(
        cv2.GaussianBlur(outside, (0, 0), 3.0, borderType=cv2.BORDER_REFLECT)[:, :, None], 1e-6)
    assert np.abs(out - np.clip(e + ramp * (diff - low), 0, 1)).max() < 1e-6
    assert np.array_equal(out[m], e[m])


def test_gauss_coarse_matches_the_full_resolution_filter():
    rng = np.random.default_rng(5)
    img = cv2.GaussianBlur(rng.random((150, 170, 3)).astype(np.float32), (0, 0), 1.0) + _texture(150, 170)
    for sigma in (4.0, 6.0, 8.0):
        full = compositing._gauss(img, sigma)
        half = compositing._gauss_coarse(img, sigma)
        assert half.shape == full.shape and half.dtype == np.float32
        # a small fraction of what the filter removes: far below one 8-bit level
        assert np.abs(half - full).max() < 0.02 * np.abs(img - full).max() and np.abs(half - full).max() < 1 / 255
    assert np.array_equal(compositing._gauss_coarse(img, 2.0), compositing._gauss(img, 2.0))  # narrow: exact


# --------------------------------------------------------------------------------------------------
# detail_content (issue 9: the content's own level of fine detail, read through the engine's decode)
# --------------------------------------------------------------------------------------------------


def _decoded(img: np.ndarray, softness: float, seed: int = 0) -> np.ndarray:
    """An engine's decode of ``img``: a Gaussian blur and the rounding to 8 bits."""
    soft = cv2.GaussianBlur(img, (0, 0), softness)
    return (np.round(np.clip(soft, 0, 1) * 255) / 255).astype(np.float32)


@pytest.mark.parametrize("softness", [0.4, 0.8, 1.2])
def test_detail_content_reads_a_smoother_content_through_a_soft_decode(softness):
    # the truth: a photo texture whose inside has half the fine amplitude of its surroundings (a quarter of the
    # power); the engine returns it blurred and rounded. The content's level relative to the ring is read
    # back through the decode, in every band; the decode itself (read on the ring) cancels
    o = _photo_texture(256, seed=3)
    m = disk(256, 256, 128, 128, 70)
    base = cv2.GaussianBlur(o, (0, 0), 3.0)
    truth = np.where(m[..., None], base + 0.5 * (o - base), o).astype(np.float32)
    d = distance_from(m)
    ring = ~m & (d > 6) & (d <= 60)
    res = compositing.detail_content(_decoded(truth, softness), o, m, ring)
    true = compositing.detail_content(truth, truth, m, ring)["content"]
    assert np.all(np.abs(true[:2] - 0.25) < 0.06), true  # the construction
    assert res["measured"][2:].all()
    # within 1.4x: a blur leaves a band's lower frequencies, where this content's ratio is closer to 1 (a
    # limitation of band powers: 1.02-1.05x at 0.4 px, 1.2-1.35x at 1.2 px here)
    assert np.all(np.abs(np.log(res["content"][:3] / true[:3])) < np.log(1.4)), (res["content"], true)
    # no soft decode: a content as detailed as its surroundings reads 1 in every band
    same = compositing.detail_content(_decoded(o, softness), o, m, ring)["content"]
    assert np.all(np.abs(same - 1.0) < 0.2), same


def test_detail_content_sets_an_engines_noise_apart():
    # grain of the engine (same on both sides of the contour) is not content: a noisy rendering of the photo
    # reads about 1 where the band is measurable, and a band drowned in the grain is not "measured"
    o = _photo_texture(256, seed=8)
    m = disk(256, 256, 128, 128, 70)
    rng = np.random.default_rng(1)
    noisy = o + (4.0 / 255) * rng.standard_normal(o.shape).astype(np.float32)
    d = distance_from(m)
    res = compositing.detail_content(noisy, o, m, ~m & (d > 6) & (d <= 60))
    measured = res["measured"]
    assert measured.any() and not measured[0]
    assert np.all(np.abs(res["content"][measured] - 1.0) < 0.25), res


def test_detail_content_needs_a_ring_and_a_mask():
    o = _photo_texture(64, seed=1)
    m = disk(64, 64, 32, 32, 6)  # too small to measure
    res = compositing.detail_content(o, o, m, ~m)
    assert np.all(np.isnan(res["content"])) and not res["measured"].any()


def test_synthesise_detail_with_a_measured_content_brings_a_soft_patch_to_its_level():
    # a soft patch whose content has half the photo's fine amplitude: told so, the synthesis aims at that level
    # (a quarter of the ring's power), not at the ring's, and sets the finest band on the rounded output
    o = _photo_texture(seed=12)
    m = disk(*o.shape[:2], 96, 96, 60)
    base = cv2.GaussianBlur(o, (0, 0), 3.0)
    truth = np.where(m[..., None], base + 0.5 * (o - base), o).astype(np.float32)
    soft = np.where(m[..., None], _decoded(truth, 1.2), o).astype(np.float32)
    ring = ~m & (distance_from(m) <= 40)
    inner = ~(distance_from(~m) < 12)
    content = compositing.detail_content(truth, truth, m, ring)["content"]
    out = compositing.synthesise_detail(soft, o, m, ring, quantum=1 / 255, content=content)
    written = np.round(out * 255) / 255
    ratio = _luma_lap_energy(written, inner) / _luma_lap_energy(truth, inner)
    assert _luma_lap_energy(soft, inner) < 0.5 * _luma_lap_energy(truth, inner)
    assert 0.8 < ratio < 1.25, ratio
    blind = compositing.synthesise_detail(soft, o, m, ring, quantum=1 / 255)  # predicted from coarse bands only
    assert np.array_equal(out[~m], soft[~m]) and np.array_equal(blind[~m], soft[~m])


def test_cap_detail_keeps_a_detailed_content_and_takes_colour_noise_down():
    # inside: twice the ring's fine amplitude (a more detailed part of the photo) plus colour noise of the engine
    # (luma-free): with the content's level given, the luma detail stays, the colour noise goes
    o = _photo_texture(seed=6)
    m = disk(*o.shape[:2], 96, 96, 60)
    base = cv2.GaussianBlur(o, (0, 0), 3.0)
    rich = np.where(m[..., None], base + 2.0 * (o - base), o).astype(np.float32)
    rng = np.random.default_rng(4)
    chroma = rng.standard_normal(o.shape[:2]).astype(np.float32) * (3.0 / 255)
    noise = np.stack([chroma, -chroma * 0.299 / 0.587, np.zeros_like(chroma)], axis=2) * m[..., None]
    e = (rich + noise).astype(np.float32)
    ring = ~m & (distance_from(m) <= 40)
    inner = ~(distance_from(~m) < 12)
    given_level = compositing.cap_detail(e, o, m, ring, limit=1.15, content=np.array([4.0, 4.0]))
    blind = compositing.cap_detail(e, o, m, ring, limit=1.15)
    luma_kept = _luma_lap_energy(given_level, inner) / _luma_lap_energy(rich, inner)
    assert 0.85 < luma_kept < 1.15, luma_kept
    assert _luma_lap_energy(blind, inner) < 0.6 * _luma_lap_energy(rich, inner)  # without it: capped at the ring

    def chroma_power(x: np.ndarray) -> float:
        cb = compositing.highpass(x @ compositing._YCC[1], 1.0)
        return float((cb[inner] ** 2).mean())

    assert chroma_power(given_level) < 0.5 * chroma_power(e)
