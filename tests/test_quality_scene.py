"""The gate compares with what the scene itself does: the scene's own worst stretch along copies of the contour,
the detail a 1-px blur would leave of the same content, added texture too faint to see; and the scene's
tone/colour null shares the contour of the tone and colour checks."""

from __future__ import annotations

import math

import cv2
import numpy as np

from crispedit.quality import defects as D
from crispedit.quality import metrics as M
from crispedit.quality.verdict import DEFAULT_THRESHOLDS, Thresholds, _judge_unit, assess

H, W = 384, 448


def _sharp_photo(seed: int = 21) -> np.ndarray:
    """A tack-sharp photo: soft content (upsampled) under many thin hard strokes: detail at the pixel scale that a
    blur of 0.5 px already lowers by a third, with little grain."""
    img = cv2.resize(D.photo_like(H // 2, W // 2, seed=seed), (W, H), interpolation=cv2.INTER_CUBIC)
    rng = np.random.default_rng(seed)
    for _ in range(900):
        x, y = int(rng.integers(0, W)), int(rng.integers(0, H))
        a, length = rng.uniform(0, math.pi), rng.uniform(6, 30)
        colour = tuple(int(v) for v in rng.integers(0, 255, 3))
        cv2.line(img, (x, y), (int(x + length * math.cos(a)), int(y + length * math.sin(a))), colour, 1, cv2.LINE_8)
    return img


def test_detail_is_judged_against_a_one_px_blur_of_the_same_content():
    img = _sharp_photo()
    mask = D.ellipse_mask(H, W, 224, 192, 110, 90, 15)
    light = assess(img, D.good_removal(img, img, mask, "blur0.5"), mask)
    heavy = assess(img, D.blurred_patch(img, mask, 1.5), mask)
    ml, mh = light.regions[0]["metrics"], heavy.regions[0]["metrics"]
    # on such a photo a fixed limit calls an invisible sigma 0.5 blur soft ...
    assert ml["detail_ratio_original"] < DEFAULT_THRESHOLDS.kept_detail_min
    # ... while the reference (what a 1-px blur leaves of this content) lies between sigma 0.5 and sigma 1.5
    assert mh["detail_ratio_original"] < ml["detail_ratio_reference"] < ml["detail_ratio_original"]
    assert ml["detail_ratio_reference"] == mh["detail_ratio_reference"]  # a property of the original only
    assert mh["detail_ratio_coarse_original"] < DEFAULT_THRESHOLDS.kept_coarse_detail_min
    assert light.verdict == "pass", light.reasons
    assert heavy.verdict == "fail"
    assert any(d.kind == "soft_patch" for d in heavy.defects)


def test_reference_blur_keeps_the_dtype_and_rounds():
    img = _sharp_photo()[:64, :64]
    ref = M._reference_blur(img)
    assert ref.dtype == np.uint8 and ref.shape == img.shape
    exact = cv2.GaussianBlur(img.astype(np.float32), (0, 0), M.REFERENCE_BLUR_SIGMA, borderType=cv2.BORDER_REFLECT)
    assert np.abs(ref.astype(np.float32) - exact).max() <= 1.0  # rounded (OpenCV's fixed-point kernel for uint8)
    assert np.array_equal(ref, M._reference_blur(img))
    grey16 = (img[:, :, 0].astype(np.uint16) * 257)
    assert M._reference_blur(grey16).dtype == np.uint16


def _flat_scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A flat gradient (no texture: the ring's detail is a few hundredths of a level, as a flat graphic's) with a
    soft object pasted in the mask; returns (base as float, pasted original, mask)."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    base = np.stack([90 + 6 * xx / W, 110 + 4 * yy / H, 70 + 0 * xx], 2)
    base_u = np.round(base).astype(np.uint8)
    mask = D.ellipse_mask(H, W, 224, 192, 100, 80, 15)
    pasted = base_u.copy()
    pasted[mask] = (140, 90, 60)
    pasted = cv2.GaussianBlur(pasted, (0, 0), 3.0)
    far = ~cv2.dilate(mask.astype(np.uint8), np.ones((15, 15), np.uint8)).astype(bool)
    pasted[far] = base_u[far]
    return base, pasted, mask


def test_added_texture_too_faint_to_see_is_no_defect():
    base, pasted, mask = _flat_scene()
    rng = np.random.default_rng(3)

    def fill(p: float, amp: float) -> np.ndarray:
        flips = (rng.random((H, W)) < p) * np.sign(rng.normal(size=(H, W))) * amp
        f = np.clip(np.round(base + flips[:, :, None]), 0, 255).astype(np.uint8)
        out = pasted.copy()
        out[mask] = f[mask]
        return out

    faint, grainy = fill(0.06, 1.0), fill(1.0, 3.0)  # one level on 6% of the pixels; grain of 3 levels
    rep = assess(pasted, faint, mask)
    m = rep.regions[0]["metrics"]
    assert m["detail_ratio"] > DEFAULT_THRESHOLDS.detail_max  # a large ratio of two faint textures ...
    assert (m["detail_inside"] - m["detail_ring"]) * 255 < DEFAULT_THRESHOLDS.detail_added_visible
    assert rep.verdict == "pass", rep.reasons  # ... that nobody sees at 1:1
    strict = assess(pasted, faint, mask, thresholds=Thresholds(detail_added_visible=0.0))
    assert strict.verdict == "fail" and strict.defects[0].key == "detail_ratio"
    bad = assess(pasted, grainy, mask)
    assert bad.verdict == "fail" and {d.kind for d in bad.defects} >= {"too_sharp", "too_noisy"}


def _local_metrics(local_max: float, local_null: float) -> dict:
    nan = float("nan")
    return {"mask_pixels": 50_000, "seam_score": 0.5, "seam_z": {}, "seam_local_max": local_max,
            "seam_local_null": local_null, "tone_step_levels": nan, "detail_ratio": nan, "noise_ratio": nan,
            "colour_delta_e": nan, "edge_step_max": nan, "content_kept": 1.0, "tone_structure_kept": 1.0}


def test_a_local_seam_must_stand_out_from_the_scenes_own_worst_stretch():
    th = DEFAULT_THRESHOLDS
    worst = [(10, 20, 11.5)]
    checks, defects, _ = _judge_unit(_local_metrics(11.5, 12.0), worst, th, 1, "region 1", th.min_region_px)
    assert checks["seam_local_max"] == "pass" and not defects  # the scene has such a stretch elsewhere
    checks, defects, _ = _judge_unit(_local_metrics(11.5, 6.0), worst, th, 1, "region 1", th.min_region_px)
    assert checks["seam_local_max"] == "fail" and defects[0].limit == th.seam_local_max
    checks, defects, _ = _judge_unit(_local_metrics(9.0, float("nan")), worst, th, 1, "region 1", th.min_region_px)
    assert checks["seam_local_max"] == "pass"


def test_scene_null_of_the_local_seam_is_measured_and_a_paste_exceeds_it():
    h, w = 512, 640
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    stripes = ((xx + 0.35 * yy) // 170).astype(int) % 2  # a flat graphic with slanted hard edges
    img = np.where(stripes[:, :, None] == 1, np.array([118, 204, 250], np.float32),
                   np.array([140, 155, 160], np.float32))
    img = np.clip(img + np.random.default_rng(1).normal(0, 0.6, img.shape), 0, 255).astype(np.uint8)
    mask = np.zeros((h, w), bool)
    mask[150:350, 200:430] = True
    clean = assess(img, img, mask).regions[0]["metrics"]
    assert math.isfinite(clean["seam_local_null"]) and clean["seam_local_max"] <= clean["seam_local_null"]
    rep = assess(img, D.paste_seam(img, mask, 0.3), mask)
    m = rep.regions[0]["metrics"]
    assert rep.verdict == "fail" and m["seam_local_max"] > max(m["seam_local_null"], DEFAULT_THRESHOLDS.seam_local_max)


def test_scene_steps_share_the_contour_of_the_tone_and_colour_checks():
    img = D.photo_like(H, W, seed=4)
    mask = D.ellipse_mask(H, W, 210, 180, 90, 70, 30)
    edited = D.paste_seam(img, mask, 1.0)
    band = M.default_band(mask)
    unit: dict = {}
    M.tone_step(img, edited, mask, band, cache=unit)
    (key, sides), = unit.items()
    shared = M.scene_steps(edited, mask, band, forbidden=mask, seed=0, cache={}, contour_cache=unit)
    assert list(unit) == [key]  # the tone check's contour served the scene's null: nothing recomputed
    alone = M.scene_steps(edited, mask, band, forbidden=mask, seed=0, cache={})
    assert shared.keys() == alone.keys()
    for k, v in shared.items():
        assert v == alone[k] or (isinstance(v, float) and math.isnan(v) and math.isnan(alone[k])), k
    assert sides.normals.shape == sides.points.shape
    # the normals are unit vectors pointing out of the mask
    assert np.allclose(np.hypot(*sides.normals.T), 1.0, atol=1e-4)
    out = np.round(sides.points + 3 * sides.normals).astype(int)
    assert not mask[out[:, 1], out[:, 0]].mean() > 0.05


def test_a_kept_regions_stretch_counts_only_what_the_edit_added():
    th = DEFAULT_THRESHOLDS
    worst = [(10, 20, 12.0)]
    kept = dict(_local_metrics(12.0, 6.0), seam_local_added=0.5)  # an edge of the scene along the outline
    checks, defects, _ = _judge_unit(kept, worst, th, 1, "region 1", th.min_region_px)
    assert checks["seam_local_max"] == "pass" and not defects
    added = dict(kept, seam_local_added=11.0)
    _, defects, _ = _judge_unit(added, worst, th, 1, "region 1", th.min_region_px)
    assert defects[0].key == "seam_local_added" and defects[0].value == 11.0
    replaced = dict(kept, content_kept=0.1, tone_structure_kept=0.1)  # a fill: the original is the removed object
    _, defects, _ = _judge_unit(replaced, worst, th, 1, "region 1", th.min_region_px)
    assert any(d.key == "seam_local_max" for d in defects)


def test_seam_local_added_is_zero_unedited_and_rises_with_a_step():
    img = D.photo_like(H, W, seed=8)
    mask = D.ellipse_mask(H, W, 224, 192, 100, 80, 15)
    clean = assess(img, img, mask).regions[0]["metrics"]
    assert clean["seam_local_added"] == 0.0
    added = [assess(img, D.tone_step(img, mask, s), mask).regions[0]["metrics"]["seam_local_added"]
             for s in (4.0, 8.0, 24.0)]
    assert 0.0 < added[0] < added[1] < added[2]
