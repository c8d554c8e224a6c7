"""One geometry (crispedit.geometry): the Box convention, mask_bbox, pixel and latent tiles (issue 12)."""

import numpy as np
import pytest

from crispedit.geometry import Box, balanced_spans, latent_tiles, mask_bbox, overlaps, pixel_tiles, tile_starts, union


def test_box_is_x_first_and_indexes_arrays():
    a = np.arange(6 * 8).reshape(6, 8)
    b = Box(2, 1, 5, 4)  # x0, y0, x1, y1
    assert (b.width, b.height) == (3, 3) and b == (2, 1, 5, 4)
    assert np.array_equal(a[b.slices], a[1:4, 2:5])


def test_mask_bbox_pads_and_clamps():
    m = np.zeros((20, 30), bool)
    assert mask_bbox(m) is None
    m[5:9, 12:20] = True
    assert mask_bbox(m) == (12, 5, 20, 9)
    assert mask_bbox(m, pad=7) == (5, 0, 27, 16)
    assert mask_bbox(m, pad=100) == (0, 0, 30, 20)
    assert all(type(v) is int for v in mask_bbox(m, pad=3))


def test_union_and_overlaps():
    assert union((0, 0, 4, 4), (2, 3, 9, 5)) == (0, 0, 9, 5)
    assert overlaps((0, 0, 4, 4), (3, 3, 5, 5)) and not overlaps((0, 0, 4, 4), (4, 0, 8, 4))


@pytest.mark.parametrize("h,w,tile,overlap", [(90, 170, 64, 16), (40, 50, 64, 16), (700, 1000, 512, 64),
                                              (1, 9, 8, 0), (270, 480, 64, 24)])
def test_both_tilings_cover_row_major_in_box_order(h, w, tile, overlap):
    for tiles in (pixel_tiles(h, w, tile, overlap), latent_tiles(h, w, tile, overlap)):
        cover = np.zeros((h, w), int)
        for t in tiles:
            assert isinstance(t, Box) and 0 <= t.x0 < t.x1 <= w and 0 <= t.y0 < t.y1 <= h
            assert t.width <= tile and t.height <= tile
            cover[t.slices] += 1
        assert cover.min() >= 1
        assert [(t.y0, t.x0) for t in tiles] == sorted((t.y0, t.x0) for t in tiles)  # row by row


def test_latent_tiles_fixed_size_pixel_tiles_balanced():
    lat = latent_tiles(90, 170, 64, 16)
    assert {(t.width, t.height) for t in lat} == {(64, 64)}
    assert [t.x0 for t in lat if t.y0 == 0] == tile_starts(170, 64, 16) == [0, 48, 96, 106]
    pix = pixel_tiles(500, 1000, 512, 64)
    assert {t.width for t in pix} == {376} and balanced_spans(1000, 512, 64)[-1] == (624, 1000)
    with pytest.raises(ValueError):
        tile_starts(100, 64, 64)
