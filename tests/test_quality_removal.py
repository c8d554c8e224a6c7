"""The gate on edits that replace content (removals) and on light retouches: no false alarm on a good removal, the
removal's own defects still caught; kept-or-replaced decided from the data; the tiled filters equal whole-image ones."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from crispedit.quality import defects as D
from crispedit.quality import metrics as M
from crispedit.quality.verdict import assess

H, W = 512, 640


@pytest.fixture(scope="module")
def removal():
    """A paste-then-remove on a photo-like scene: (truth, pasted original, good removal, mask)."""
    truth = D.photo_like(H, W, seed=11)
    mask = D.ellipse_mask(H, W, 330, 250, 110, 90, 20)
    pasted = D.paste_seam(truth, mask, 1.0)
    return truth, pasted, truth.copy(), mask  # the removal returns exactly what was behind the pasted object


def test_good_removal_passes_and_is_judged_as_replaced(removal):
    truth, pasted, good, mask = removal
    rep = assess(pasted, good, mask)
    assert rep.verdict == "pass", rep.reasons
    m = rep.regions[0]["metrics"]
    # the content was replaced: neither its fine structure nor its layout matches the pasted original
    assert m["content_kept"] < 0.5 and m["tone_structure_kept"] < 0.5
    # judged against what the scene does across such a contour, not against the pasted object
    assert m["scene_null_placements"] >= 4 and abs(m["scene_tone_z"]) < 3
    assert m["colour_delta_e_original"] > 2.0  # the old reference (the removed object) differs a lot


def test_removal_with_a_hard_block_fails_on_its_corner(removal):
    truth, pasted, good, mask = removal
    bad = D.hard_block(good, mask, 64.0)
    rep = assess(pasted, bad, mask)
    assert rep.verdict == "fail"
    blocks = [d for d in rep.defects if d.kind in ("block", "grid")]
    # a block's signature: a horizontal and a vertical hard edge meeting, or its edges on one lattice
    assert blocks and blocks[0].key in ("edge_corner_raw", "edge_corner_break_raw", "grid_lines_raw"), rep.reasons
    cx, cy, _ = D.deepest_point(mask)
    assert abs(blocks[0].x - cx) <= 64 and abs(blocks[0].y - cy) <= 64
    # the good removal itself has no corner of that strength
    m = assess(pasted, good, mask).regions[0]["metrics"]
    assert m["edge_corner_raw"] < 0.5 * rep.regions[0]["metrics"]["edge_corner_raw"]


def test_removal_leaving_a_darker_disc_fails(removal):
    # the demo's ghost: the fill 4 levels darker than the scene, its outline visible
    truth, pasted, good, mask = removal
    rep = assess(pasted, D.tone_step(good, mask, -4.0), mask)
    assert rep.verdict == "fail"
    assert {d.kind for d in rep.defects} & {"seam", "ghost", "halo"}, rep.reasons
    assert rep.seam_score > 3.0


def test_retouch_is_judged_as_kept():
    img = D.photo_like(H, W, seed=12)
    mask = D.ellipse_mask(H, W, 300, 260, 120, 95, 10)
    for edited in (D.tone_step(img, mask, 4.0, feather=32), D.blurred_patch(img, mask, 1.5),
                   D.colour_cast(img, mask, 3.0)):
        m = assess(img, edited, mask).regions[0]["metrics"]
        assert m["content_kept"] > 0.9
        assert "scene_tone_z" not in m  # the scene's null is only measured for replaced content


def test_light_blur_passes_a_visible_blur_fails():
    # upsampled: grain and detail correlated over a pixel or two, as a demosaiced photo's (white noise would lose
    # half its energy to a blur of 0.5 px)
    img = cv2.resize(D.photo_like(256, 320, seed=13), (W, H), interpolation=cv2.INTER_CUBIC)
    mask = D.ellipse_mask(H, W, 320, 256, 140, 110, 0)
    soft = assess(img, D.good_removal(img, img, mask, "blur0.5"), mask)
    blur = assess(img, D.blurred_patch(img, mask, 1.5), mask)
    c_soft = soft.regions[0]["metrics"]["detail_ratio_coarse_original"]
    c_blur = blur.regions[0]["metrics"]["detail_ratio_coarse_original"]
    assert c_blur < c_soft < 1.0
    assert blur.verdict == "fail"
    assert soft.verdict == "pass", soft.reasons


def test_filtered_at_equals_the_whole_image_filter():
    rng = np.random.default_rng(0)
    img = (rng.random((300, 410, 3)) * 255).astype(np.uint8)
    xy = np.stack([rng.uniform(-2, 412, 5000), rng.uniform(-2, 302, 5000)], 1).astype(np.float32)
    lp = M._luma_lowpass(4.0)
    got = M._filtered_at(img, lp, M._halo(4.0), xy)[:, 0]
    want = M._sample(lp(img)[:, :, None], xy, 1.0)[:, 0]
    assert np.allclose(got, want, atol=1e-3)
    # at half size (the colour check's low-pass): tiles cut at even coordinates match the whole half-size image
    lab = M._lab_lowpass(6.0, 2)
    got2 = M._filtered_at(img, lab, M._halo(6.0), xy, q=2)
    want2 = M._sample(lab(img[:300, :410]), xy, 2.0)
    assert np.allclose(got2, want2, atol=1e-2)
    # scattered points take the tiled path (the dense ones above took the bounding box): the same values
    few = np.array([[5.5, 7.25], [400.0, 290.0], [200.3, 20.9]], np.float32)
    assert np.allclose(M._filtered_at(img, lp, M._halo(4.0), few)[:, 0],
                       M._sample(lp(img)[:, :, None], few, 1.0)[:, 0], atol=1e-3)
    assert np.allclose(M._filtered_at(img, lab, M._halo(6.0), few, q=2),
                       M._sample(lab(img[:300, :410]), few, 2.0), atol=1e-2)


def test_dust_pool_gets_the_band_of_its_spots():
    rng = np.random.default_rng(5)
    img = D.photo_like(600, 900, seed=5)
    mask = np.zeros((600, 900), np.uint8)
    for x, y in zip(rng.integers(20, 880, 60), rng.integers(20, 580, 60)):
        cv2.circle(mask, (int(x), int(y)), 4, 1, -1)
    rep = assess(img, img, mask.astype(bool))
    assert rep.band == 32  # not 4% of the 900-px box around all the spots
    # a change 40 px from every spot is outside the band
    far = img.copy()
    dist = cv2.distanceTransform((1 - mask).astype(np.uint8), cv2.DIST_L2, 5)
    ring = (dist > 38) & (dist < 42)
    far[ring] = 255 - far[ring]
    assert "outside_changed" in {d.kind for d in assess(img, far, mask.astype(bool)).defects}


def test_inradius_bound_is_an_upper_bound():
    rng = np.random.default_rng(2)
    for _ in range(20):
        m = np.zeros((200, 260), np.uint8)
        for x, y, r in zip(rng.integers(0, 260, 5), rng.integers(0, 200, 5), rng.integers(2, 40, 5)):
            cv2.circle(m, (int(x), int(y)), int(r), 1, -1)
        if not m.any():
            continue
        true = cv2.distanceTransform(np.pad(m, 1), cv2.DIST_L2, cv2.DIST_MASK_PRECISE).max()
        assert M._inradius_upper(m.astype(bool), M.mask_bbox(m.astype(bool))) >= true - 1e-3
