"""Plan where the engine works: crops around clusters of mask components (tiles inside a crop: :mod:`crispedit.geometry`).

Every connected component of the mask gets its own blend band and context, sized from its own size (its width
for thin strokes), and keeps them when it shares a crop with others. Long thin components (scratches, wires)
are cut into pieces so no crop spans the whole photo. Crops carry context around the edit (the engine needs to
see the scene, the tone matcher needs a ring of untouched pixels), are snapped to multiples of 8 and clamped
inside the image. Crops may overlap: each mask pixel belongs to exactly one region, and the harness edits the
regions one after the other, each on the result so far.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from crispedit.geometry import Box, union

#: Narrowest blend band (px) of any component.
MIN_BAND = 6
#: Band classes below 32 px: a component's band is rounded down to one of these, so a crop blends in few passes.
BAND_CLASSES = (6, 8, 11, 16, 22)
#: Band of a component as a fraction of its width (2 x the radius of its largest inscribed disc).
BAND_PER_WIDTH = 0.75
#: Merged crops stay within this long side (px) unless one of their components alone needs a larger crop.
MAX_MERGED_CROP = 640


@dataclass(frozen=True)
class Part:
    """One connected component of the mask, or one piece of a long thin one.

    ``label`` is the component's label in :attr:`MaskPlan.labels`; ``box`` (x0, y0, x1, y1, end-exclusive,
    image px) the tight box of this part's pixels; ``band`` its blend band (px); ``width`` the component's
    width (px, 2 x the largest inscribed radius).
    """

    label: int
    box: Box
    band: int
    width: float


@dataclass(frozen=True)
class Region:
    """One crop of the image and the mask parts it edits.

    ``box`` is the crop (x0, y0, x1, y1), end-exclusive; ``mask_box`` the bounding box of its parts' pixels;
    ``band`` the widest blend band of its parts (px; each part keeps its own, pixels farther than its part's
    band from every part stay bit-identical); ``parts`` the components (or pieces) it edits.
    """

    box: Box
    mask_box: Box
    band: int
    components: int
    parts: tuple[Part, ...] = field(default=())

    @property
    def size(self) -> tuple[int, int]:
        return self.box[2] - self.box[0], self.box[3] - self.box[1]

    @property
    def bands(self) -> list[int]:
        """Distinct part bands, widest first."""
        return sorted({p.band for p in self.parts} or {self.band}, reverse=True)

    def as_dict(self) -> dict:
        return {"box": list(self.box), "mask_box": list(self.mask_box), "band": self.band,
                "bands": self.bands, "components": self.components, "parts": len(self.parts),
                "size": list(self.size)}


def blend_band(mask_box: Box) -> int:
    """Blend band for a region: max(32 px, 4% of the region's diagonal), the harness's promise."""
    diag = math.hypot(mask_box[2] - mask_box[0], mask_box[3] - mask_box[1])
    return int(max(32, math.floor(0.04 * diag)))


def component_band(mask_box: Box, width: float) -> int:
    """Blend band of one component: the region rule capped by its width, rounded down to a band class.

    ``min(blend_band(box), max(MIN_BAND, ceil(0.75 * width)))``; below 32 px rounded down to
    ``BAND_CLASSES``. A dust spot of radius 3-8 px gets 6-11 px, a 7 px scratch 6 px, an object wider than
    43 px the region rule (32 px and up).
    """
    b = min(blend_band(mask_box), max(MIN_BAND, math.ceil(BAND_PER_WIDTH * width)))
    if b < 32:
        b = max(c for c in BAND_CLASSES if c <= b)
    return int(b)


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


def _snap_box(box: Box, width: int, height: int) -> Box:
    x0, x1 = _snap(box[0], box[2], width)
    y0, y1 = _snap(box[1], box[3], height)
    return Box(x0, y0, x1, y1)


def _crop_for(mask_box: Box, width: int, height: int, min_margin: int, band: int | None = None) -> Box:
    band = blend_band(mask_box) if band is None else band
    m = context_margin(mask_box, band, min_margin)
    return _snap_box(Box(mask_box[0] - m, mask_box[1] - m, mask_box[2] + m, mask_box[3] + m), width, height)


def piece_side(width: float) -> int:
    """Side (px) of the pieces a long thin component is cut into: 16 widths, within 128-512 px."""
    return int(min(512, max(128, 16 * width)))


def _is_thin(box: Box, area: int, width: float) -> bool:
    """Long and thin: the box is more than two piece sides long and the component fills < 25 % of it."""
    bw, bh = box[2] - box[0], box[3] - box[1]
    return max(bw, bh) > 2 * piece_side(width) and area < 0.25 * bw * bh


@dataclass
class MaskPlan:
    """The regions of a mask and the component labels their parts refer to.

    ``labels`` is int32, the mask's bounding box only (``origin`` = its top-left (x, y) in the image), 0 off
    the mask and ``Part.label`` on it.
    """

    regions: list[Region]
    labels: np.ndarray
    origin: tuple[int, int]

    def own_mask(self, region: Region, box: Box | None = None) -> np.ndarray:
        """Bool mask of the pixels ``region`` edits, over ``box`` (default: the region's crop)."""
        return self.band_masks(region, box, split=False)[0][1]

    def band_masks(self, region: Region, box: Box | None = None, *,
                   split: bool = True) -> list[tuple[int, np.ndarray]]:
        """[(band, bool mask over ``box``)] of ``region``'s parts, one per band class, widest band first."""
        bx0, by0, bx1, by1 = region.box if box is None else box
        ox, oy = self.origin
        groups: dict[int, np.ndarray] = {}
        for part in region.parts:
            key = part.band if split else region.band
            x0, y0 = max(bx0, part.box[0]), max(by0, part.box[1])
            x1, y1 = min(bx1, part.box[2]), min(by1, part.box[3])
            if x0 >= x1 or y0 >= y1:
                continue
            out = groups.setdefault(key, np.zeros((by1 - by0, bx1 - bx0), bool))
            lab = self.labels[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
            out[y0 - by0:y1 - by0, x0 - bx0:x1 - bx0] |= lab == part.label
        if not groups:
            groups[region.band] = np.zeros((by1 - by0, bx1 - bx0), bool)
        return sorted(groups.items(), key=lambda kv: -kv[0])


def _parts(mask: np.ndarray) -> tuple[np.ndarray, tuple[int, int], list[Part]]:
    """Label the mask's bounding box and make its parts: one per component, long thin ones cut in pieces.

    A component's width is 2 x its largest inscribed radius (``cv2.distanceTransform``; the box edge counts as
    off the mask, so a component cut by the image edge reads a little narrower: a narrower band). Whether it is
    long and thin is judged on its typical width, the median over its medial ridge (local maxima of the
    distance), so a wire with a blob at one end is still a wire; each piece then takes its band from its own
    (local) width.
    """
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    oy, ox = int(rows[0]), int(cols[0])  # label only the mask's bounding box: cheap on 8K+ images
    sub = np.ascontiguousarray(mask[oy:rows[-1] + 1, ox:cols[-1] + 1], dtype=np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(sub, connectivity=8, ltype=cv2.CV_32S)
    dist = cv2.distanceTransform(cv2.copyMakeBorder(sub, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0),
                                 cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    del sub
    parts: list[Part] = []
    for i in range(1, n):
        x, y, bw, bh, area = (int(v) for v in stats[i])
        own = labels[y:y + bh, x:x + bw] == i
        d = np.where(own, dist[y:y + bh, x:x + bw], np.float32(0))
        width = max(1.0, 2.0 * float(d.max()) - 1.0)
        box = Box(ox + x, oy + y, ox + x + bw, oy + y + bh)
        if max(bw, bh) > 2 * piece_side(1.0) and area < 0.25 * bw * bh:  # maybe long and thin
            ridge = own & (d >= cv2.dilate(d, np.ones((3, 3), np.uint8)))
            typical = max(1.0, 2.0 * float(np.median(d[ridge])) - 1.0)
            if _is_thin(box, area, typical):
                side = piece_side(typical)
                for pb in _pieces(labels, (ox, oy), i, box, side):
                    pd = dist[pb[1] - oy:pb[3] - oy, pb[0] - ox:pb[2] - ox][
                        labels[pb[1] - oy:pb[3] - oy, pb[0] - ox:pb[2] - ox] == i]
                    pw = max(1.0, 2.0 * float(pd.max()) - 1.0)
                    parts.append(Part(i, pb, component_band(pb, pw), pw))
                continue
        parts.append(Part(i, box, component_band(box, width), width))
    return labels, (ox, oy), parts


def _pieces(labels: np.ndarray, origin: tuple[int, int], label: int, box: Box, side: int) -> list[Box]:
    """Tight boxes of ``label``'s pixels in a grid of ``side`` px cells over its box."""
    ox, oy = origin
    out = []
    for cy in range(box[1], box[3], side):
        for cx in range(box[0], box[2], side):
            x1, y1 = min(box[2], cx + side), min(box[3], cy + side)
            cell = labels[cy - oy:y1 - oy, cx - ox:x1 - ox] == label
            r, c = np.flatnonzero(cell.any(axis=1)), np.flatnonzero(cell.any(axis=0))
            if r.size:
                out.append(Box(cx + int(c[0]), cy + int(r[0]), cx + int(c[-1]) + 1, cy + int(r[-1]) + 1))
    return out


def _overlapping_pairs(c: np.ndarray) -> list[tuple[int, int]]:
    """Pairs (i, j), i < j, of boxes (N x 4: x0, y0, x1, y1) that overlap; a sweep along x, O(N log N + pairs)."""
    order = np.argsort(c[:, 0], kind="stable")
    xs = c[order, 0]
    pairs = []
    for k, i in enumerate(order.tolist()):
        hi = int(np.searchsorted(xs, c[i, 2], side="left"))
        if hi <= k + 1:
            continue
        cand = order[k + 1:hi]
        hit = cand[(c[cand, 1] < c[i, 3]) & (c[i, 1] < c[cand, 3])]
        pairs += [(min(i, j), max(i, j)) for j in hit.tolist()]
    return sorted(pairs)


@dataclass
class _Group:
    """Parts merged into one crop while planning; ``side`` is the largest own crop side of its parts."""

    parts: list[Part]
    crop: Box
    side: int


def plan_mask(mask: np.ndarray, *, min_margin: int = 64, max_crop: int = MAX_MERGED_CROP) -> MaskPlan:
    """Plan the regions of a mask: per-component bands, thin components in pieces, nearby crops merged.

    Each component gets :func:`component_band` and a crop of its own context (:func:`context_margin`). Long
    thin components are cut into :func:`piece_side` pieces. Parts whose crops overlap share one crop (one
    engine call) as long as the merged crop's long side stays within ``max(max_crop, 1.5 x`` the largest crop
    one of its parts needs alone``)``; otherwise crops overlap and each region edits only its own parts.

    Parameters
    ----------
    mask : ndarray of bool, shape (H, W)
    min_margin : int
        Least context around a part (px).
    max_crop : int
        Long side (px) up to which crops of nearby parts are merged.

    Returns
    -------
    MaskPlan
        Regions sorted top to bottom, left to right; no regions for an empty mask.

    Notes
    -----
    Components: ``cv2.connectedComponentsWithStats`` (8-connected); widths: ``cv2.distanceTransform``
    (exact Euclidean) over each component's box. Merging finds overlapping crops with a sweep along x, a few
    passes; cost grows with the mask's components, not with the image size.
    """
    h, w = mask.shape
    if not mask.any():
        return MaskPlan([], np.zeros((0, 0), np.int32), (0, 0))
    labels, origin, parts = _parts(mask)
    groups: list[_Group | None] = []
    for p in parts:
        crop = _crop_for(p.box, w, h, min_margin, p.band)
        groups.append(_Group([p], crop, max(crop[2] - crop[0], crop[3] - crop[1])))
    while len(groups) > 1:
        live: list[_Group | None] = [g for g in groups if g is not None]
        crops = np.array([g.crop for g in groups if g is not None], np.int64)
        used: set[int] = set()
        for i, j in _overlapping_pairs(crops):
            if i in used or j in used:
                continue
            gi, gj = live[i], live[j]
            assert gi is not None and gj is not None  # pairs with a merged (None) group were skipped above
            crop = _snap_box(union(gi.crop, gj.crop), w, h)
            if max(crop[2] - crop[0], crop[3] - crop[1]) <= max(max_crop, 1.5 * max(gi.side, gj.side)):
                live[i] = _Group(gi.parts + gj.parts, crop, max(gi.side, gj.side))
                used.update((i, j))
                live[j] = None
        groups = [g for g in live if g is not None]
        if not used:
            break
    regions = []
    for g in groups:
        assert g is not None
        mbox = g.parts[0].box
        for p in g.parts[1:]:
            mbox = union(mbox, p.box)
        regions.append(Region(g.crop, mbox, max(p.band for p in g.parts), len({p.label for p in g.parts}),
                              tuple(g.parts)))
    regions.sort(key=lambda r: (r.box[1], r.box[0]))
    return MaskPlan(regions, labels, origin)


def _find(root: list[int], i: int) -> int:
    """Union-find root of ``i`` (with path halving)."""
    while root[i] != i:
        root[i] = root[root[i]]
        i = root[i]
    return i


def part_clusters(region: Region, pad: int) -> list[Box]:
    """Clusters of a region's parts whose boxes, grown by ``pad`` px, overlap: their grown boxes in crop px.

    The harness finishes (tone, seam, grain, blend) each cluster on its own box, so a crop shared by scattered
    spots costs the spots' boxes, not the crop. Boxes are (x0, y0, x1, y1), clipped to the crop, disjoint.
    """
    cx, cy = region.box[:2]
    cw, ch = region.size
    boxes = [Box(max(0, p.box[0] - cx - pad), max(0, p.box[1] - cy - pad), min(cw, p.box[2] - cx + pad),
                 min(ch, p.box[3] - cy + pad)) for p in region.parts] or [Box(0, 0, cw, ch)]
    while len(boxes) > 1:
        pairs = _overlapping_pairs(np.array(boxes, np.int64))
        if not pairs:
            break
        root = list(range(len(boxes)))
        for i, j in pairs:
            root[_find(root, j)] = _find(root, i)
        merged: dict[int, Box] = {}
        for i, b in enumerate(boxes):
            k = _find(root, i)
            merged[k] = union(merged[k], b) if k in merged else b
        boxes = list(merged.values())
    return boxes


def plan_regions(mask: np.ndarray, *, min_margin: int = 64) -> list[Region]:
    """The regions of :func:`plan_mask` (crops, bands, parts), sorted top to bottom."""
    return plan_mask(mask, min_margin=min_margin).regions
