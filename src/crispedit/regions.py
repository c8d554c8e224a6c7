"""Plan where the engine works: one crop per cluster of mask components, and tiles inside a crop.

Crops carry context around the edit (the engine needs to see the scene, the tone matcher needs a ring of
untouched pixels), grow with the region, are snapped to multiples of 8 and clamped inside the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Region:
    """One crop of the image and the mask part it edits.

    ``box`` is the crop (x0, y0, x1, y1), end-exclusive; ``mask_box`` the bounding box of the mask pixels it
    covers; ``band`` the blend band in px (pixels farther than this from the mask stay bit-identical).
    """

    box: Box
    mask_box: Box
    band: int
    components: int

    @property
    def size(self) -> tuple[int, int]:
        return self.box[2] - self.box[0], self.box[3] - self.box[1]

    def as_dict(self) -> dict:
        return {"box": list(self.box), "mask_box": list(self.mask_box), "band": self.band,
                "components": self.components, "size": list(self.size)}


def blend_band(mask_box: Box) -> int:
    """Blend band for a region: max(32 px, 4% of the region's diagonal), the harness's promise."""
    diag = math.hypot(mask_box[2] - mask_box[0], mask_box[3] - mask_box[1])
    return int(max(32, math.floor(0.04 * diag)))


def context_margin(mask_box: Box, band: int, min_margin: int = 64) -> int:
    """Context around the mask: grows with the region (a third of its long side), never below 3 bands."""
    long_side = max(mask_box[2] - mask_box[0], mask_box[3] - mask_box[1])
    return int(max(min_margin, 3 * band, round(long_side / 3)))


def _snap(lo: int, hi: int, limit: int, multiple: int = 8) -> tuple[int, int]:
    """Grow [lo, hi) outward to aligned multiples of ``multiple`` inside [0, limit).

    At the image edge the crop grows inward instead; when even that cannot make a multiple (the crop spans
    the whole side), the whole side is used and the engine pads.
    """
    lo = max(0, (lo // multiple) * multiple)
    hi = min(limit, -(-hi // multiple) * multiple)
    length = hi - lo
    if length % multiple:
        target = -(-length // multiple) * multiple
        if target >= limit:
            return 0, limit
        lo = hi - target
    return lo, hi


def _union(a: Box, b: Box) -> Box:
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def _overlap(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _crop_for(mask_box: Box, width: int, height: int, min_margin: int) -> Box:
    band = blend_band(mask_box)
    m = context_margin(mask_box, band, min_margin)
    x0, x1 = _snap(mask_box[0] - m, mask_box[2] + m, width)
    y0, y1 = _snap(mask_box[1] - m, mask_box[3] + m, height)
    return x0, y0, x1, y1


def plan_regions(mask: np.ndarray, *, min_margin: int = 64) -> list[Region]:
    """Group mask components into non-overlapping crops.

    Components whose crops (mask box + context margin) overlap are merged, repeatedly, so no two crops touch
    and each pixel is edited by exactly one crop.
    """
    h, w = mask.shape
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return []
    oy, ox = int(rows[0]), int(cols[0])  # label only the mask's bounding box: cheap on 8K+ images
    sub = np.ascontiguousarray(mask[oy:rows[-1] + 1, ox:cols[-1] + 1], dtype=np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(sub, connectivity=8)
    groups: list[tuple[Box, int]] = []
    for i in range(1, n):
        x, y, bw, bh, _area = (int(v) for v in stats[i])
        groups.append(((ox + x, oy + y, ox + x + bw, oy + y + bh), 1))
    merged = True
    while merged:
        merged = False
        crops = [_crop_for(b, w, h, min_margin) for b, _ in groups]
        for i in range(len(groups)):
            for j in range(i + 1, len(groups)):
                if _overlap(crops[i], crops[j]):
                    (bi, ci), (bj, cj) = groups[i], groups[j]
                    groups[i] = (_union(bi, bj), ci + cj)
                    del groups[j]
                    merged = True
                    break
            if merged:
                break
    regions = [Region(_crop_for(b, w, h, min_margin), b, blend_band(b), c) for b, c in groups]
    return sorted(regions, key=lambda r: (r.box[1], r.box[0]))


def _balanced(length: int, tile: int, overlap: int, multiple: int) -> list[tuple[int, int]]:
    """Fewest tiles of at most ``tile`` px with at least ``overlap`` px overlap, all the same (smaller) size."""
    if length <= tile:
        return [(0, length)]
    n = -(-(length - overlap) // (tile - overlap))
    size = min(tile, -(-(-(-(length + (n - 1) * overlap) // n)) // multiple) * multiple)
    starts = np.linspace(0, length - size, n).round().astype(int)
    return [(int(a), int(a) + size) for a in starts]


def tile_grid(h: int, w: int, tile: int, overlap: int, multiple: int = 8) -> list[Box]:
    """Tiles (x0, y0, x1, y1) covering an h x w area with at least ``overlap`` px overlap.

    Tiles are balanced: the fewest that fit, shrunk to a common size (a multiple of ``multiple``) and spread
    evenly, so the overlap does not pile up at the far edge; this keeps engine work close to the area.
    """
    return [(x0, y0, x1, y1) for y0, y1 in _balanced(h, tile, overlap, multiple)
            for x0, x1 in _balanced(w, tile, overlap, multiple)]
