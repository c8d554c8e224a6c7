import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from crispedit.errors import InputError
from crispedit.geometry import pixel_tiles
from crispedit.mask import (
    feather,
    grow,
    invert,
    load_mask,
    mask_from_box,
    mask_from_ellipse,
    parse_box,
    shrink,
    to_bool_mask,
    union,
)
from crispedit.regions import (
    MIN_BAND,
    blend_band,
    component_band,
    plan_mask,
    plan_regions,
)


def test_binarise_variants():
    a = np.array([[0, 1], [0, 0]], np.uint8)
    assert to_bool_mask(a).sum() == 1  # 0/1 label image: nonzero is edit
    b = np.array([[0, 255], [3, 127]], np.uint8)
    assert to_bool_mask(b).tolist() == [[False, True], [False, False]]  # JPEG noise near black ignored
    assert to_bool_mask(np.array([[0.0, 0.9]])).tolist() == [[False, True]]
    assert to_bool_mask(np.zeros((2, 2, 3), np.uint8)).shape == (2, 2)


def test_load_mask_size_mismatch_and_file(tmp_path):
    p = tmp_path / "m.png"
    Image.fromarray(np.full((10, 20), 255, np.uint8)).save(p)
    assert load_mask(p, (20, 10)).all()
    with pytest.raises(InputError, match="mask is 20x10 but the image is 30x10"):
        load_mask(p, (30, 10))
    with pytest.raises(InputError, match="not found"):
        load_mask(tmp_path / "nope.png", (20, 10))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(InputError, match="cannot read mask"):
        load_mask(bad, (20, 10))


def test_shapes_and_morphology():
    m = mask_from_box((50, 40), (10, 5, 20, 15))
    assert m.sum() == 100 and m[5, 10] and not m[15, 20]
    e = mask_from_ellipse((50, 40), (10, 10, 30, 30))
    assert 250 < e.sum() < 380
    assert grow(m, 3).sum() > m.sum() and shrink(m, 2).sum() < m.sum()
    assert (grow(m, 3) & m).sum() == m.sum()
    f = feather(m, 4)
    assert f[m].min() == 1.0 and f.max() == 1.0 and f[0, 0] == 0.0
    assert (invert(m) ^ m).all() and union(m, e).sum() >= max(m.sum(), e.sum())
    assert parse_box("1,2,30,40", (50, 50)) == (1, 2, 30, 40)
    with pytest.raises(InputError):
        parse_box("1,2,x,4", (50, 50))
    with pytest.raises(InputError):
        parse_box("60,60,70,70", (50, 50))


def test_regions_merge_close_and_keep_far_apart():
    m = np.zeros((2000, 3000), bool)
    m[100:150, 100:150] = True
    m[100:150, 200:250] = True  # close: merged
    m[1700:1800, 2700:2800] = True  # far: own region
    regions = plan_regions(m)
    assert len(regions) == 2
    assert regions[0].components == 2
    for r in regions:
        x0, y0, x1, y1 = r.box
        assert 0 <= x0 < x1 <= 3000 and 0 <= y0 < y1 <= 2000
        assert (x1 - x0) % 8 == 0 and (y1 - y0) % 8 == 0 and x0 % 8 == 0 or x1 == 3000
        mx0, my0, mx1, my1 = r.mask_box
        assert x0 <= mx0 and mx1 <= x1 and y0 <= my0 and my1 <= y1


@settings(max_examples=40, deadline=None)
@given(h=st.integers(20, 400), w=st.integers(20, 400), max_crop=st.sampled_from([0, 640]), data=st.data())
def test_regions_own_every_mask_pixel_once(h, w, max_crop, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 10**6)))
    m = np.zeros((h, w), bool)
    for _ in range(data.draw(st.integers(1, 5))):
        y, x = rng.integers(0, h), rng.integers(0, w)
        m[y:y + rng.integers(1, 60), x:x + rng.integers(1, 60)] = True
    plan = plan_mask(m, max_crop=max_crop)
    owners = np.zeros((h, w), np.int32)
    for r in plan.regions:
        x0, y0, x1, y1 = r.box
        own = plan.own_mask(r)
        owners[y0:y1, x0:x1] += own
        mx0, my0, mx1, my1 = r.mask_box
        assert x0 <= mx0 and mx1 <= x1 and y0 <= my0 and my1 <= y1 and own.any()
        for part in r.parts:  # each part's band: the region rule, capped by the part's width
            assert MIN_BAND <= part.band <= blend_band(part.box)
            assert part.band <= max(MIN_BAND, np.ceil(0.75 * part.width))
        assert r.band == max(p.band for p in r.parts) and r.bands[0] == r.band
    assert (owners[m] == 1).all() and not owners[~m].any()  # crops may overlap, mask pixels are owned once
    assert plan_regions(m) == plan_mask(m).regions


def test_bands_follow_each_component():
    m = np.zeros((1200, 1600), bool)
    cv2.circle(m.view(np.uint8), (800, 600), 300, 1, -1)  # a large object: the region rule
    cv2.circle(m.view(np.uint8), (800, 200), 6, 1, -1)  # dust in its context: its own small band
    cv2.line(m.view(np.uint8), (100, 1100), (1500, 1150), 1, 3)  # a wire: a band from its width
    plan = plan_mask(m)
    bands = {p.band for r in plan.regions for p in r.parts}
    assert bands == {6, 8, blend_band((500, 300, 1101, 901))}
    assert component_band((0, 0, 13, 13), 13.0) == 8 and component_band((0, 0, 7, 2000), 7.0) == 6
    assert component_band((0, 0, 400, 400), 400.0) == 32 and component_band((0, 0, 40, 40), 40.0) == 22


def test_band_and_tiles():
    assert blend_band((0, 0, 100, 100)) == 32
    assert blend_band((0, 0, 3000, 2000)) == int(0.04 * np.hypot(3000, 2000))
    assert pixel_tiles(100, 80, 512, 64) == [(0, 0, 80, 100)]
    row = [t for t in pixel_tiles(500, 1000, 512, 64) if t[1] == 0]
    assert row[0][0] == 0 and row[-1][2] == 1000 and len(row) == 3
    assert all(a[2] - b[0] >= 64 for a, b in zip(row, row[1:]))  # at least the overlap asked for
    tiles = pixel_tiles(700, 1000, 512, 64)
    cov = np.zeros((700, 1000), int)
    for x0, y0, x1, y1 in tiles:
        cov[y0:y1, x0:x1] += 1
    assert cov.min() >= 1


def test_wire_with_a_blob_keeps_a_narrow_band_along_the_wire():
    m = np.zeros((800, 2400), bool)
    cv2.line(m.view(np.uint8), (50, 400), (2350, 420), 1, 5)
    cv2.circle(m.view(np.uint8), (2300, 419), 40, 1, -1)  # a blob at one end, same component
    plan = plan_mask(m, max_crop=640)
    parts = [p for r in plan.regions for p in r.parts]
    assert len({p.label for p in parts}) == 1 and len(parts) > 4
    assert max(p.band for p in parts) > 22  # the blob's piece: its own width
    assert sum(p.band == 6 for p in parts) >= len(parts) - 2  # the wire: 6 px wherever the blob is not


def test_overlapping_pairs_sweep_matches_brute_force():
    from crispedit.geometry import overlaps as _overlap
    from crispedit.regions import _overlapping_pairs

    rng = np.random.default_rng(0)
    xy = rng.integers(0, 1000, (300, 2))
    wh = rng.integers(1, 120, (300, 2))
    c = np.concatenate([xy, xy + wh], axis=1)
    brute = [(i, j) for i in range(300) for j in range(i + 1, 300) if _overlap(tuple(c[i]), tuple(c[j]))]
    assert _overlapping_pairs(c) == brute


def test_part_clusters_are_disjoint_and_cover_every_part():
    from crispedit.regions import part_clusters

    m = np.zeros((700, 700), bool)
    for x, y in ((100, 100), (130, 100), (400, 400), (600, 120)):
        cv2.circle(m.view(np.uint8), (x, y), 5, 1, -1)
    (region,) = plan_mask(m, min_margin=300, max_crop=700).regions
    boxes = part_clusters(region, 20)
    assert len(boxes) == 3  # the two close spots share one box
    for i, a in enumerate(boxes):
        assert all(not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]) for b in boxes[i + 1:])
    cx, cy = region.box[:2]
    for p in region.parts:
        assert any(b[0] <= p.box[0] - cx and p.box[2] - cx <= b[2] and b[1] <= p.box[1] - cy
                   and p.box[3] - cy <= b[3] for b in boxes)
