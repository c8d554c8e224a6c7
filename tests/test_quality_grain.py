"""Grain and planted softenings: added grain too faint to see (``noise_added_visible``), the original's grain,
and what a planted blur or grain removal measurably changed
(:func:`crispedit.quality.defects.planted_change`)."""

from __future__ import annotations

import numpy as np

from crispedit.quality import defects as D
from crispedit.quality.verdict import DEFAULT_THRESHOLDS, _judge_unit, assess

H, W = 320, 384


def _grainy(seed: int = 3, grain: float = 4.0) -> np.ndarray:
    out = D.photo_like(H, W, seed=seed, grain=grain)
    assert isinstance(out, np.ndarray)
    return out


def test_original_grain_is_reported():
    img = _grainy()
    mask = D.ellipse_mask(H, W, 192, 160, 100, 80, 10)
    m = assess(img, D.good_removal(img, img, mask, "blur0.5"), mask).regions[0]["metrics"]
    # the original's grain (levels / 255), what "too noisy" compares the added grain with
    assert np.isfinite(m["noise_original"]) and m["noise_original"] > 1.0 / 255.0


def _faint_grain_metrics(added_levels: float) -> dict:
    """A kept region whose grain went from 0.02 to 0.02 + ``added_levels`` levels: the ratio is over 1.3 either
    way (the floors are 0.4 levels)."""
    n0 = 0.02 / 255.0
    n1 = n0 + added_levels / 255.0
    return {"mask_pixels": 100_000, "band": 32, "tone_structure_kept": 0.99, "content_kept": 0.99,
            "seam_score": 0.0, "detail_ratio": 1.0, "detail_ratio_original": 1.0, "noise_ratio": 1.0,
            "noise_sigma_inside": n1, "noise_sigma_ring": n1, "noise_original": n0,
            "noise_ratio_original": (n1 + 0.4 / 255) / (n0 + 0.4 / 255)}


def test_grain_added_under_the_floor_is_not_too_noisy():
    faint = _faint_grain_metrics(0.15)  # wine's q95 retouch of a JPEG-smoothed area measured 0.02 -> 0.15 levels
    assert faint["noise_ratio_original"] > DEFAULT_THRESHOLDS.kept_noise_max
    checks, defects, _ = _judge_unit(faint, [], DEFAULT_THRESHOLDS, 1, "region 1", 64)
    assert checks["noise_ratio"] == "pass", defects
    strong = _faint_grain_metrics(1.0)
    checks, defects, _ = _judge_unit(strong, [], DEFAULT_THRESHOLDS, 1, "region 1", 64)
    assert checks["noise_ratio"] == "fail" and defects[0].kind == "too_noisy"
    # a record without ``noise_original`` (stored before it) gets it from the ratio's definition
    legacy = dict(faint)
    del legacy["noise_original"]
    assert _judge_unit(legacy, [], DEFAULT_THRESHOLDS, 1, "region 1", 64)[0]["noise_ratio"] == "pass"


def test_planted_change_of_a_blur_on_a_smooth_gradient_is_below_the_floor():
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    grad = np.stack([80 + 0.1 * xx, 40 + 0.05 * yy, 60 + 0.02 * (xx + yy)], axis=2)
    smooth = np.clip(np.round(grad), 0, 255).astype(np.uint8)  # no detail, no grain: bokeh, a flat graphic
    mask = D.ellipse_mask(H, W, 192, 160, 110, 90, 0)
    ch = D.planted_change(smooth, D.blurred_patch(smooth, mask, 1.5), mask)
    assert ch["visible"] == 0.0 and ch["detail_lost"] < D.CHANGE_FLOOR_DETAIL
    img = _grainy()
    ch2 = D.planted_change(img, D.blurred_patch(img, mask, 1.5), mask)
    assert ch2["visible"] == 1.0 and ch2["detail_lost"] > 1.0 and ch2["noise_lost"] > 0.0
    assert ch2["change_mean"] > ch["change_mean"]
