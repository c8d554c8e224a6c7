"""The verdict: measured thresholds and :func:`assess`, which runs every metric and says pass, fail or unmeasured.

Every connected region of the mask (the largest :data:`MAX_REGIONS` one by one, the small rest pooled) and every
stretch of its contour is judged on its own; the worst decides, so a clean region never dilutes a bad one. A
failure is a named defect with its place (:class:`Defect`); what could not be measured makes the verdict
``'unmeasured'`` with the reason, never ``'pass'``.

>>> import numpy as np
>>> from crispedit.quality.defects import photo_like, ellipse_mask, tone_step
>>> img = photo_like(384, 384, seed=3)
>>> mask = ellipse_mask(384, 384, 192, 192, 70, 60)
>>> assess(img, img, mask).verdict
'pass'
>>> rep = assess(img, tone_step(img, mask, 24), mask)
>>> rep.verdict, rep.seam_score > 5
('fail', True)
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from crispedit.errors import InputError
from crispedit.quality import metrics as M

__all__ = ["Thresholds", "QualityReport", "Defect", "assess", "DEFAULT_THRESHOLDS", "EXIT_CODES"]


#: exit code of ``crispedit quality`` per verdict (2 is a bad input)
EXIT_CODES = {"pass": 0, "fail": 1, "unmeasured": 3}
#: regions judged one by one (the largest); smaller ones are pooled and judged together
MAX_REGIONS = 16
#: a region smaller than this (px) is pooled with the other small ones
POOL_AREA = 4096


@dataclass(frozen=True)
class Thresholds:
    """Acceptance thresholds; the numbers and how they were measured are in ``docs/quality.md``.

    A metric that could not be measured (nan: no ring, no contour) never passes an edit: the region is reported
    as unmeasured, with the reason, unless another check fails it.
    """

    #: pixels beyond the blend band that may differ (the promise is 0: bit-identical)
    outside_changed_max: int = 0
    #: seam score above which the seam is visible (z-like; unedited photos measure about -1 .. 2.2)
    seam_max: float = 4.0
    #: the same for an edit that replaced the content (a removal: no original to compare its tone with; the
    #: demo's darker disc measures 3.4 and 3.8, good removals at most 0.95 on the tuning photos)
    replaced_seam_max: float = 3.0
    #: worst local (per-segment) seam score above which one place along the seam is visible
    seam_local_max: float = 10.5
    #: detail ratio (inside / ring) allowed range
    detail_min: float = 0.70
    detail_max: float = 1.60
    #: noise ratio (inside / ring) allowed range
    noise_min: float = 0.70
    noise_max: float = 1.60
    #: detail added inside (mean |3x3 Laplacian| above the reference's, 8-bit levels) under this is invisible,
    #: whatever the ratio: the Laplacian of grain of 0.4 levels, the noise floor (0.4 x sqrt(20) x sqrt(2 / pi))
    detail_added_visible: float = 1.4
    #: grain added inside (noise sigma above the reference's, 8-bit levels) under this is invisible, whatever the
    #: ratio: the noise floor of the ratios (half a level of grain is not seen at 1:1)
    noise_added_visible: float = 0.4
    #: where the edit kept the content (a retouch, a regrain: ``tone_structure_kept >= kept_structure_min``),
    #: detail and noise are compared with what was there only, in these ranges
    kept_structure_min: float = 0.7
    kept_detail_min: float = 0.75
    kept_detail_max: float = 1.30
    kept_noise_min: float = 0.78
    kept_noise_max: float = 1.30
    #: kept content: the next octave's detail (``detail_ratio_coarse_original``) must stay above this
    kept_coarse_detail_min: float = 0.80
    #: replaced content (a removal): a tone or colour step across the contour passes when it is within this many
    #: robust spreads of what the scene does across the same contour placed on untouched parts of the photo
    scene_z_max: float = 3.0
    #: ΔE2000 of the inner side's colour against the original's (or the outer side's, after a removal)
    colour_delta_e_max: float = 2.0
    #: luminance step along the outline (8-bit levels, median over the contour; metrics.tone_step)
    tone_step_max: float = 3.0
    #: the same over the worst stretch of three contour segments
    tone_step_local_max: float = 6.0
    #: straight edge inside the fill: the step (levels) must exceed the surroundings' 99.9th percentile times this
    edge_step_factor: float = 1.5
    #: and at least this many levels
    edge_step_min: float = 2.5
    #: a fill (replaced content): a block's corner (a horizontal and a vertical step meeting) above the
    #: surroundings' 99.9th percentile of the same times this
    corner_step_factor: float = 3.0
    #: texture break inside the fill above the surroundings' 99.9th percentile plus this (log units)
    edge_break_margin: float = 0.35
    #: this many distinct straight lines or more: a grid
    grid_lines_min: int = 4
    #: a fill (replaced content): its own lattice lines must also exceed the surroundings' by this many
    grid_lines_margin: int = 5
    #: whole-image change: global ΔE2000 and median luminance shift (levels) allowed
    global_delta_e_max: float = 1.0
    global_tone_max: float = 1.5
    #: a region (or the pool of small regions) smaller than this many px cannot be measured
    min_region_px: int = 64
    #: BRISQUE inside minus outside above which the inside looks less natural (informational when None)
    brisque_delta_max: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT_THRESHOLDS = Thresholds()


def _num(x: Any) -> Any:
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return None if not math.isfinite(x) else round(x, 4)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, tuple):
        return [_num(v) for v in x]
    return x


@dataclass
class Defect:
    """One named defect: ``kind`` (ghost, seam, halo, block, grid, soft_patch, too_clean, too_sharp, too_noisy,
    colour_cast, outside_changed, global_shift), the ``region`` it is in (1-based, 0 = the whole image), the
    failing metric ``key`` with its own ``value`` and ``limit``, where it is (``x``, ``y``: full-image px, the
    centre of a 1:1 crop) and a one-line ``message``."""

    kind: str
    region: int
    key: str
    value: float
    limit: float
    x: int | None
    y: int | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {k: _num(v) for k, v in asdict(self).items()}


@dataclass
class QualityReport:
    """What :func:`assess` found.

    ``verdict`` is ``'pass'``, ``'fail'`` or ``'unmeasured'``; ``reasons`` says why it failed (one line per
    defect, each naming the failing key and its own value); ``unmeasured`` says what could not be measured and
    why; ``defects`` the named defects with their places; ``regions`` the per-region metrics, checks and
    verdicts; ``metrics`` holds the numbers of the region that decided (the worst one) plus the global ones (see
    :meth:`to_dict` for the flat JSON form); ``checks`` the per-metric verdict over all regions (``'pass'``,
    ``'fail'`` or ``'n/a'``); ``worst_places`` the (x, y, local seam score) of the most visible places along the
    contours, worst first, in full-image pixels.
    """

    verdict: str
    reasons: list[str]
    metrics: dict[str, Any]
    worst_places: list[tuple[int, int, float]]
    checks: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    mask_source: str = "given"
    band: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    thresholds: Thresholds = DEFAULT_THRESHOLDS
    mask: np.ndarray | None = field(default=None, repr=False, compare=False)
    unmeasured: list[str] = field(default_factory=list)
    defects: list[Defect] = field(default_factory=list)
    regions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    @property
    def exit_code(self) -> int:
        """0 pass, 1 fail, 3 unmeasured (:data:`EXIT_CODES`)."""
        return EXIT_CODES[self.verdict]

    def __getattr__(self, name: str) -> Any:
        # rep.seam_score etc. read from the metrics dict
        metrics = self.__dict__.get("metrics")
        if metrics is not None and name in metrics:
            return metrics[name]
        raise AttributeError(name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict: verdict, reasons, unmeasured, defects, every metric as a top-level key, regions,
        worst_places, checks, notes."""
        out: dict[str, Any] = {"verdict": self.verdict, "reasons": list(self.reasons),
                               "unmeasured": list(self.unmeasured)}
        for k, v in self.metrics.items():
            out[k] = {str(a): _num(b) for a, b in v.items()} if isinstance(v, dict) else _num(v)
        out["defects"] = [d.to_dict() for d in self.defects]
        out["regions"] = [
            {k: ({str(a): _num(b) for a, b in v.items()} if isinstance(v, dict) else
                 (list(v) if isinstance(v, list) else _num(v))) for k, v in r.items()}
            for r in self.regions
        ]
        out["worst_places"] = [{"x": int(x), "y": int(y), "score": _num(s)} for x, y, s in self.worst_places]
        out["checks"] = dict(self.checks)
        out["notes"] = list(self.notes)
        out["mask_source"] = self.mask_source
        out["band"] = int(self.band)
        out["thresholds"] = self.thresholds.to_dict()
        out["timings"] = {k: round(v, 4) for k, v in self.timings.items()}
        return out

    def summary(self) -> str:
        """One line for the CLI: verdict and the key numbers."""
        m = self.metrics

        def f(k: str, fmt: str = "{:.2f}") -> str:
            v = m.get(k)
            return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else fmt.format(v)

        line = (
            f"quality {self.verdict}: seam {f('seam_score')}, tone step {f('tone_step_levels', '{:.1f}')} levels, "
            f"detail {f('detail_ratio')}, noise {f('noise_ratio')}, ΔE {f('colour_delta_e')}, "
            f"outside changed {m.get('outside_changed_pixels', 0)}"
        )
        if self.reasons:
            line += " — " + "; ".join(self.reasons)
        elif self.unmeasured:
            line += " — not measured: " + "; ".join(self.unmeasured)
        return line


def _check_mask(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[:, :, 0]
    if mask.shape != tuple(shape[:2]):
        raise InputError(
            f"mask is {mask.shape[1] if mask.ndim > 1 else '?'}x{mask.shape[0]} but the image is {shape[1]}x{shape[0]}",
            "give the mask the edit was made with (same size as the image)",
        )
    return mask.astype(bool) if mask.dtype != bool else mask


def _inscribed_patch(mask: np.ndarray, max_side: int = 384) -> tuple[int, int, int, int] | None:
    """A square patch inside ``mask`` around its deepest point (x0, y0, x1, y1), or None if too small."""
    bb = M.mask_bbox(mask)
    if bb is None:
        return None
    x0, y0, x1, y1 = bb
    sub = np.pad(mask[y0:y1, x0:x1], 1).astype(np.uint8)
    import cv2

    dist = cv2.distanceTransform(sub, cv2.DIST_L2, 5)
    iy, ix = np.unravel_index(int(np.argmax(dist)), dist.shape)
    r = float(dist[iy, ix])
    half = int(min(max_side // 2, r / math.sqrt(2)))
    if half < 24:
        return None
    cx, cy = x0 + ix - 1, y0 + iy - 1
    return cx - half, cy - half, cx + half, cy + half


def _brisque_pair(image: np.ndarray, mask: np.ndarray, zone: np.ndarray) -> dict[str, Any]:
    """BRISQUE of a square inside the edit and of one of the same size on untouched pixels nearby."""
    if not M.brisque_available():
        return {}
    box = _inscribed_patch(mask)
    if box is None:
        return {}
    x0, y0, x1, y1 = box
    side = x1 - x0
    h, w = mask.shape
    inside = M.brisque_score(image[y0:y1, x0:x1])
    # nearest untouched square: try rings of offsets around the edit
    best = None
    bb = M.mask_bbox(zone)
    assert bb is not None
    cands = []
    for ox, oy in ((bb[2] + 4, y0), (bb[0] - side - 4, y0), (x0, bb[3] + 4), (x0, bb[1] - side - 4)):
        cands.append((ox, oy))
    for ox, oy in cands:
        ox = int(min(max(ox, 0), w - side))
        oy = int(min(max(oy, 0), h - side))
        if ox < 0 or oy < 0 or ox + side > w or oy + side > h:
            continue
        if zone[oy : oy + side, ox : ox + side].any():
            continue
        best = (ox, oy)
        break
    outside = M.brisque_score(image[best[1] : best[1] + side, best[0] : best[0] + side]) if best else None
    out: dict[str, Any] = {"brisque_inside": inside, "brisque_outside": outside}
    if inside is not None and outside is not None:
        out["brisque_delta"] = inside - outside
    return out


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool) and math.isfinite(v)


def _units(mask: np.ndarray) -> list[tuple[str, int, np.ndarray, int]]:
    """The mask's regions to judge: (name, index, full-size bool mask, default blend band). The
    :data:`MAX_REGIONS` largest regions of at least :data:`POOL_AREA` px one by one; the rest pooled into one unit.
    A region's band is ``max(32, 4% of its bounding box's diagonal)``; the pool's is the largest band of its
    regions (each small region is blended with its own band, not with one sized from the box around them all)."""
    import cv2

    bb = M.mask_bbox(mask)
    if bb is None:
        return []
    bx, by = bb[0], bb[1]
    sub = mask[bb[1] : bb[3], bb[0] : bb[2]].astype(np.uint8)
    try:  # 16-bit labels: a third of the 32-bit labelling's time on an 8K box; OpenCV refuses past 65 534 regions
        n, labels, stats, _ = cv2.connectedComponentsWithStats(sub, connectivity=8, ltype=cv2.CV_16U)
    except cv2.error:
        n, labels, stats, _ = cv2.connectedComponentsWithStats(sub, connectivity=8)
    if n <= 2:
        return [("region 1", 1, mask, M.default_band(mask))] if n == 2 else []

    def band_of(i: int) -> int:
        return int(max(32, round(0.04 * math.hypot(int(stats[i, cv2.CC_STAT_WIDTH]),
                                                    int(stats[i, cv2.CC_STAT_HEIGHT])))))

    stats[:, cv2.CC_STAT_LEFT] += bx
    stats[:, cv2.CC_STAT_TOP] += by
    order = sorted(range(1, n), key=lambda i: -int(stats[i, cv2.CC_STAT_AREA]))
    single = [i for i in order[:MAX_REGIONS] if stats[i, cv2.CC_STAT_AREA] >= POOL_AREA]
    pooled = [i for i in order if i not in set(single)]
    out = []
    for k, i in enumerate(single, 1):
        x, y, w, h = (int(stats[i, c]) for c in (cv2.CC_STAT_LEFT, cv2.CC_STAT_TOP, cv2.CC_STAT_WIDTH,
                                                  cv2.CC_STAT_HEIGHT))
        m = np.zeros(mask.shape, bool)
        m[y : y + h, x : x + w] = labels[y - by : y - by + h, x - bx : x - bx + w] == i
        out.append((f"region {k}", k, m, band_of(i)))
    if pooled:
        if len(pooled) == 1:
            name = f"region {len(single) + 1}"
        else:
            name = f"{len(pooled)} small regions"
        if not single:  # every region pooled: the pool is the mask
            m = mask.copy()
        else:
            keep = np.zeros(n, bool)
            keep[pooled] = True
            m = np.zeros(mask.shape, bool)
            m[bb[1] : bb[3], bb[0] : bb[2]] = keep[labels]
        out.append((name, len(single) + 1, m, max(band_of(i) for i in pooled)))
    return out


def _measure_unit(original: np.ndarray, edited: np.ndarray, m: np.ndarray, band: int, zone: np.ndarray,
                  all_mask: np.ndarray, source: str, seed: int, cache: dict[str, Any],
                  timings: dict[str, float], *, whole_mask: bool = False
                  ) -> tuple[dict[str, Any], list[tuple[int, int, float]], list[str]]:
    """Every metric of one region (or pool of regions). ``zone``: the mask and the changed pixels (kept out of
    the null placements and of the surroundings' reference). ``whole_mask``: ``m`` is the whole mask (one unit),
    so the cached distance map to the mask serves its ring."""
    metrics: dict[str, Any] = {"mask_pixels": int(np.count_nonzero(m)), "band": band}
    nan = float("nan")

    def tick(name: str, t0: float) -> None:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0

    t = time.perf_counter()
    seam = M.seam_visibility(edited, m, band, forbidden=zone, seed=seed, cache=cache, original=original)
    tick("seam", t)
    measured_seam = bool(seam.scale_z)
    metrics["seam_score"] = seam.seam_score if measured_seam else nan
    metrics["seam_local_max"] = max((s for _, _, s in seam.worst_places), default=nan)
    metrics["seam_local_null"] = seam.local_null
    metrics["seam_local_added"] = seam.local_added
    metrics["seam_z"] = {k: seam.scale_stat.get(k + "_signed_z", v) for k, v in seam.scale_z.items()}
    metrics["seam_null_placements"] = seam.null_placements
    metrics["contour_points"] = seam.contour_points
    bb = M.mask_bbox(m)
    assert bb is not None
    t = time.perf_counter()
    ring_w = max(24, band)
    x0, y0, x1, y1 = M._crop_box(m.shape, bb, band + ring_w + 8)
    # with a mask found from the difference, the blend band is already inside it: the ring starts at 2 px
    ring_offset = 2 if source == "difference" else band
    # other regions stay out of this one's ring (its own blend band's changes are where the ring starts)
    others = all_mask[y0:y1, x0:x1] & ~m[y0:y1, x0:x1]
    md = M.dist_outside_cached(m, band + ring_w + 8, cache) if whole_mask else None
    dn = M.detail_noise_consistency(original[y0:y1, x0:x1], edited[y0:y1, x0:x1], m[y0:y1, x0:x1], band,
                                    ring_offset=ring_offset, exclude=others, mask_dist=md[0] if md else None)
    metrics.update(dn)
    tick("detail_noise", t)
    t = time.perf_counter()
    unit_cache: dict[str, Any] = {}  # this region's contour, shared by the colour and tone checks
    metrics.update(M.colour_consistency(original, edited, m, band, cache=unit_cache))
    tick("colour", t)
    t = time.perf_counter()
    metrics.update(M.tone_step(original, edited, m, band, cache=unit_cache))
    tick("tone", t)
    if not _kept(metrics, max(0.9, DEFAULT_THRESHOLDS.kept_structure_min)):
        # the content was replaced (a removal): how unusual its tone and colour step is for this photo
        t = time.perf_counter()
        metrics.update(M.scene_steps(edited, m, band, forbidden=zone, seed=seed, cache=cache,
                                     contour_cache=unit_cache))
        tick("scene", t)
    t = time.perf_counter()
    metrics.update(M.straight_edges(original, edited, m, band, exclude=zone,
                                    corners=not _kept(metrics, max(0.9, DEFAULT_THRESHOLDS.kept_structure_min))))
    tick("edges", t)
    return metrics, seam.worst_places, seam.notes


def _fl(x: Any) -> float:
    """A metric as a float (nan when missing or not a number)."""
    return float(x) if _finite(x) else float("nan")


def _lower(limit: float, reference: Any) -> float:
    """A lower limit on a detail ratio, lowered to what the reference blur leaves of the same content (when
    measured): the edit fails only when it is softer than both."""
    return min(limit, float(reference)) if _finite(reference) else limit


def _kept(metrics: dict[str, Any], kept_min: float) -> bool:
    """Did the edit keep the content under the mask (a retouch: compare with what was there) rather than replace
    it (a removal: compare with what the scene does)? The larger of the fine-structure and the low-frequency
    correlation with the original (``tone_structure_kept``, ``content_kept``) is at least ``kept_min``."""
    vals = [v for v in (metrics.get("tone_structure_kept"), metrics.get("content_kept")) if _finite(v)]
    return bool(vals) and max(vals) >= kept_min


@dataclass
class _UnitJudge:
    """The judgement of one region's metrics: each check family a method, run in the order of :data:`_UNIT_CHECKS`;
    each adds its ``checks`` entries (pass / fail / n/a), its :class:`Defect` s and what it could not measure."""

    metrics: dict[str, Any]
    worst: list[tuple[int, int, float]]
    th: Thresholds
    index: int
    name: str
    min_px: int
    checks: dict[str, str] = field(default_factory=dict)
    defects: list[Defect] = field(default_factory=list)
    unmeasured: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        m, th = self.metrics, self.th
        self.at = (self.worst[0][0], self.worst[0][1]) if self.worst else (None, None)
        # kept (a retouch: compare with what was there) or replaced (a removal: compare with what the scene does)
        self.replaced = not _kept(m, th.kept_structure_min)
        self.scene_ok = {k: self.replaced and _finite(m.get(k)) and m[k] <= th.scene_z_max
                         for k in ("scene_tone_z", "scene_tone_worst_z", "scene_colour_z")}
        # the inside kept its content and its tone, yet the outline shows: the change is a ring along it
        kept, off = m.get("tone_structure_kept"), m.get("tone_step_original")
        self.halo_like = _finite(kept) and kept >= 0.8 and _finite(off) and abs(off) <= th.tone_step_max / 2

    def add(self, kind: str, key: str, value: float, limit: float, msg: str, xy: Any = None) -> None:
        x, y = xy if xy else self.at
        self.defects.append(Defect(kind, self.index, key, float(value), float(limit), x, y, f"{self.name}: {msg}"))

    def coverage(self) -> None:
        px = self.metrics["mask_pixels"]
        if px < self.min_px or not _finite(self.metrics.get("seam_score")):
            why = f"too small ({px} px)" if px < self.min_px else "no contour to measure inside the image"
            self.unmeasured.append(f"{self.name}: {why}")

    def seam(self) -> None:
        """The whole contour (``seam_score``) and its worst stretch (``seam_local_max``)."""
        m, th = self.metrics, self.th
        z = m.get("seam_z") or {}
        # a fill cannot be compared with what was there: its outline is held to a stricter seam limit
        seam_max = min(th.seam_max, th.replaced_seam_max) if self.replaced else th.seam_max
        v = m.get("seam_score")
        if _finite(v):
            self.checks["seam_score"] = "pass" if v <= seam_max else "fail"
            if v > seam_max:
                top = max(z, key=lambda k: abs(z[k])) if z else ""
                kind = "ghost" if top.startswith("coherence") else ("halo" if z.get(top, 0) < 0 else "seam")
                kind = "halo" if self.halo_like else kind
                what = {"ghost": "a tone step along the outline", "halo": "a smeared band or halo along the outline",
                        "seam": "a visible seam along the outline"}[kind]
                self.add(kind, "seam_score", v, seam_max, f"{what}: seam_score {v:.1f} > {seam_max:g}")
        else:
            self.checks["seam_score"] = "n/a"
        v = _fl(m.get("seam_local_max"))
        if _finite(v):
            # a stretch is a seam when it stands out more than the limit and more than the scene's own worst
            # stretch along copies of this contour (an edge of the scene crossing the outline at a slant) ... and,
            # where the content was kept, only by what the edit added to it (the original's own score there)
            nl = _fl(m.get("seam_local_null"))
            lim = max(th.seam_local_max, nl) if _finite(nl) else th.seam_local_max
            key, added = "seam_local_max", _fl(m.get("seam_local_added"))
            if not self.replaced and _finite(added) and added < v:
                key, v = "seam_local_added", added
            self.checks["seam_local_max"] = "pass" if v <= lim else "fail"
            if v > lim:
                what = "a halo along the outline" if self.halo_like else "a visible seam"
                self.add("halo" if self.halo_like else "seam", key, v, lim,
                         f"{what} at x={self.at[0]}, y={self.at[1]}: {key} {v:.1f} > {lim:.3g}"
                         + (" (the scene's own worst stretch)" if lim > th.seam_local_max else ""))
        else:
            self.checks["seam_local_max"] = "n/a"

    def tone(self) -> None:
        """A ghost: a darker or lighter disc (``tone_step_levels``), or a step along part of the outline."""
        m, th = self.metrics, self.th
        v = m.get("tone_step_levels")
        if not _finite(v):
            self.checks["tone_step_levels"] = "n/a"
            return
        place = m.get("tone_step_place") or None
        # a removal's inside may differ from its outside as much as the scene does across such a contour
        ok = v <= th.tone_step_max or self.scene_ok["scene_tone_z"]
        self.checks["tone_step_levels"] = "pass" if ok else "fail"
        if not ok:
            sign = m.get("tone_step_signed")
            word = "darker" if _finite(sign) and sign < 0 else "lighter"
            self.add("ghost", "tone_step_levels", v, th.tone_step_max,
                     f"a {word} patch with its outline visible: tone_step_levels {v:.1f} > {th.tone_step_max:g} "
                     "levels", place)
        lv = m.get("tone_step_worst")
        if _finite(lv):
            okl = lv <= th.tone_step_local_max or self.scene_ok["scene_tone_worst_z"]
            self.checks["tone_step_worst"] = "pass" if okl else "fail"
            if not okl and ok:
                self.add("ghost", "tone_step_worst", lv, th.tone_step_local_max,
                         f"a tone step along part of the outline: tone_step_worst {lv:.1f} > "
                         f"{th.tone_step_local_max:g} levels", place)

    def texture(self) -> None:
        """Detail and grain: consistent with the surroundings (ring) OR with what was there (the original)."""
        th = self.th
        for key, lo, hi, klo, khi, low, high in (
            ("detail_ratio", th.detail_min, th.detail_max, th.kept_detail_min, th.kept_detail_max,
             ("soft_patch", "blurrier than its surroundings"), ("too_sharp", "sharper than its surroundings")),
            ("noise_ratio", th.noise_min, th.noise_max, th.kept_noise_min, th.kept_noise_max,
             ("too_clean", "less grain than its surroundings"), ("too_noisy", "noisier than its surroundings")),
        ):
            v = self.metrics.get(key)
            if not _finite(v):
                self.checks[key] = "n/a"
                if self.metrics["mask_pixels"] >= POOL_AREA and key == "detail_ratio":
                    self.unmeasured.append(f"{self.name}: no ring of untouched pixels around it to compare detail "
                                           "and grain")
            elif not self.replaced and _finite(self.metrics.get(key + "_original")):
                self._texture_kept(key, klo, khi, low, high)
            else:
                self._texture_ring(key, v, lo, hi, low, high)

    def _texture_kept(self, key: str, klo: float, khi: float, low: tuple[str, str], high: tuple[str, str]) -> None:
        # the content was kept: it must keep its own sharpness and grain
        m, th = self.metrics, self.th
        alt = m[key + "_original"]
        coarse = m.get("detail_ratio_coarse_original") if key == "detail_ratio" else None
        coarse_min = th.kept_coarse_detail_min
        if key == "detail_ratio":
            # softer than the limit AND than a blur of REFERENCE_BLUR_SIGMA px would leave of this content: a
            # tack-sharp photo loses more of its finest octave to an invisible sigma 0.5 blur than bokeh to 1.5
            # (the next octave keeps its fixed limit: a sigma 0.5 blur barely touches it, while a grain removal
            # that smooths like a 1-px blur shows there: dragonfly's measured 0.62, its 1-px reference 0.60)
            klo = _lower(klo, m.get("detail_ratio_reference"))
        coarse_lost = _finite(coarse) and coarse < coarse_min
        fine_ok = klo <= alt <= khi or (alt > khi and self._added_unseen(key, "original"))
        self.checks[key] = "pass" if fine_ok and not coarse_lost else "fail"
        if fine_ok:
            if coarse_lost:  # the finest octave kept, the next one lost: a blur of more than half a px
                self.add(low[0], "detail_ratio_coarse_original", coarse, coarse_min,
                         f"the edit is blurrier than what was there: detail_ratio_coarse_original {coarse:.2f} < "
                         f"{coarse_min:.3g}", m.get("inner_centre"))
            return
        (kind, what), limit, cmp = (low, klo, "<") if alt < klo else (high, khi, ">")
        what = what.replace("its surroundings", "what was there")
        self.add(kind, key + "_original", alt, limit,
                 f"the edit is {what}: {key}_original {alt:.2f} {cmp} {limit:.3g}", m.get("inner_centre"))

    def _added_unseen(self, key: str, ref: str) -> bool:
        """The inside has more detail (``key`` ``detail_ratio``) or grain (``noise_ratio``) than the ``ref``
        (``original`` or ``ring``) by less than a viewer sees (``detail_added_visible``, ``noise_added_visible``): a
        sharper- or noisier-looking ratio of two faint textures (a flat graphic, bokeh, a JPEG-smoothed sky) that
        nobody sees at 1:1."""
        m = self.metrics
        if key == "detail_ratio":
            a, b, limit = _fl(m.get("detail_inside")), _fl(m.get(f"detail_{ref}")), self.th.detail_added_visible
        else:
            a, limit = _fl(m.get("noise_sigma_inside")), self.th.noise_added_visible
            b = _fl(m.get("noise_sigma_ring" if ref == "ring" else "noise_original"))
            r = _fl(m.get("noise_ratio_original"))
            if ref == "original" and not _finite(b) and _finite(a) and _finite(r) and r > 0:
                f = M._NOISE_FLOOR  # records stored before ``noise_original``: from the ratio's definition
                b = (a + f) / r - f
        return _finite(a) and _finite(b) and (a - b) * 255.0 < limit

    def _texture_ring(self, key: str, v: float, lo: float, hi: float, low: tuple[str, str],
                      high: tuple[str, str]) -> None:
        alt = _fl(self.metrics.get(key + "_original"))
        detail = key == "detail_ratio"
        lo_ring = _lower(lo, self.metrics.get("detail_ratio_ring_reference")) if detail else lo
        ok = (lo_ring <= v <= hi or (v > hi and self._added_unseen(key, "ring"))
              or (_finite(alt) and (lo <= alt <= hi or (alt > hi and self._added_unseen(key, "original")))))
        self.checks[key] = "pass" if ok else "fail"
        if ok:
            return
        (kind, what), limit, cmp = (low, lo_ring, "<") if v < lo_ring else (high, hi, ">")
        self.add(kind, key, v, limit, f"the edit is {what}: {key} {v:.2f} {cmp} {limit:.3g}"
                 + (f" ({key}_original {alt:.2f})" if _finite(alt) else ""), self.metrics.get("inner_centre"))

    def colour(self) -> None:
        """The inner side keeps the original's colour (``colour_delta_e_original``) ... unless something of another
        colour was there before (``colour_delta_e_before`` above the limit: a removed object), when agreeing with
        the outer side (``colour_delta_e``) is what counts."""
        m, th = self.metrics, self.th
        v = m.get("colour_delta_e")
        if not _finite(v):
            self.checks["colour_delta_e"] = "n/a"
            return
        alt, before = m.get("colour_delta_e_original"), m.get("colour_delta_e_before")
        had_object = not _finite(before) or before > th.colour_delta_e_max
        key, val = ("colour_delta_e", v) if had_object or not _finite(alt) else ("colour_delta_e_original", alt)
        ok = (val <= th.colour_delta_e_max or (_finite(alt) and alt <= th.colour_delta_e_max)
              or self.scene_ok["scene_colour_z"])
        self.checks["colour_delta_e"] = "pass" if ok else "fail"
        if not ok:
            self.add("colour_cast", key, val, th.colour_delta_e_max,
                     f"a colour shift inside the edit: {key} {val:.1f} > {th.colour_delta_e_max:g} (ΔE2000)",
                     m.get("tone_step_place"))

    def edges(self) -> None:
        """Straight hard edges inside the fill: a pasted block, a grid. What the edit added (minus the original at
        the same place) ... or, when it replaced the content, the fill's own straight edges (the removed object's
        say nothing about it): either against the surroundings' own."""
        m, th = self.metrics, self.th
        s_key, b_key, g_key = "edge_step_max", "edge_break_max", "grid_lines"
        if self.replaced and _finite(m.get("edge_corner_raw")):
            # a block's corner (a horizontal and a vertical hard edge meeting) is what a natural straight edge
            # crossing the fill (a stem, a horizon) does not have
            s_key, b_key, g_key = "edge_corner_raw", "edge_corner_break_raw", "grid_lines_raw"
        corner = s_key == "edge_corner_raw"
        s_in, s_null = m.get(s_key), m.get("edge_corner_null" if corner else "edge_step_null")
        b_in, b_null = m.get(b_key), m.get("edge_corner_break_null" if corner else "edge_break_null")
        if corner and not _finite(s_null):
            s_null, b_null = m.get("edge_step_null"), m.get("edge_break_null")
        if not (_finite(s_in) and _finite(s_null)):
            self.checks["edge_step_max"] = "n/a"
            return
        lim_s = max(th.edge_step_min, (th.corner_step_factor if corner else th.edge_step_factor) * s_null)
        lim_b = b_null + th.edge_break_margin if _finite(b_null) else float("inf")
        bad_step = s_in > lim_s
        bad_break = _finite(b_in) and b_in > lim_b
        self.checks["edge_step_max"] = "fail" if bad_step else "pass"
        self.checks["edge_break_max"] = "fail" if bad_break else "pass"
        glines = int(m.get(g_key) or 0)
        if g_key == "grid_lines_raw" and glines < int(m.get("grid_lines_null") or 0) + th.grid_lines_margin:
            glines = 0  # a fill's lattice no stronger than its surroundings' own (a fence, waves, a pattern)
        self.checks["grid_lines"] = "fail" if glines >= th.grid_lines_min else "pass"
        if glines >= th.grid_lines_min:
            self.add("grid", g_key, glines, th.grid_lines_min,
                     f"a grid of {glines} straight lines inside the fill (strongest {m.get('grid_step_max', 0):.1f}"
                     f" levels): {g_key} {glines} >= {th.grid_lines_min}", m.get("grid_place"))
        elif bad_step:
            self.add("block", s_key, s_in, lim_s,
                     f"a hard straight edge inside the fill: {s_key} {s_in:.1f} > {lim_s:.1f} levels",
                     m.get("edge_place"))
        elif bad_break:
            self.add("block", b_key, b_in, lim_b,
                     f"a hard-edged block of other texture inside the fill: {b_key} {b_in:.2f} > {lim_b:.2f}",
                     m.get("edge_place"))


#: the check families of a region, in the order their defects are listed
_UNIT_CHECKS = (_UnitJudge.coverage, _UnitJudge.seam, _UnitJudge.tone, _UnitJudge.texture, _UnitJudge.colour,
                _UnitJudge.edges)


def _judge_unit(metrics: dict[str, Any], worst: list[tuple[int, int, float]], th: Thresholds, index: int,
                name: str, min_px: int) -> tuple[dict[str, str], list[Defect], list[str]]:
    """Checks, defects and unmeasured reasons of one region's metrics (:data:`_UNIT_CHECKS` in turn)."""
    judge = _UnitJudge(metrics, worst, th, index, name, min_px)
    for check in _UNIT_CHECKS:
        check(judge)
    return judge.checks, judge.defects, judge.unmeasured


def _global_checks(g: dict[str, Any], th: Thresholds) -> tuple[dict[str, str], list[Defect]]:
    checks: dict[str, str] = {}
    defects: list[Defect] = []
    for key, lim, kind, what in (
        ("global_delta_e", th.global_delta_e_max, "global_shift", "the whole image's colour shifted"),
        ("global_tone_levels", th.global_tone_max, "global_shift", "the whole image's brightness shifted"),
    ):
        v = abs(g[key])
        checks[key] = "pass" if v <= lim else "fail"
        if v > lim:
            defects.append(Defect(kind, 0, key, v, lim, None, None, f"{what}: {key} {g[key]:.2f} > {lim:g}"))
    for key, lo, hi, low, high in (
        ("global_detail_ratio", th.detail_min, th.detail_max, "soft_patch", "too_sharp"),
        ("global_noise_ratio", th.noise_min, th.noise_max, "too_clean", "too_noisy"),
    ):
        v = g[key]
        checks[key] = "pass" if lo <= v <= hi else "fail"
        if not lo <= v <= hi:
            lim, cmp, kind = (lo, "<", low) if v < lo else (hi, ">", high)
            defects.append(Defect(kind, 0, key, v, lim, None, None,
                                  f"the whole image is {'blurrier/cleaner' if v < lo else 'sharper/noisier'}"
                                  f" than the original: {key} {v:.2f} {cmp} {lim:g}"))
    return checks, defects


def assess(
    original: np.ndarray,
    edited: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    band: int | None = None,
    thresholds: Thresholds | None = None,
    seed: int = 0,
    no_reference: bool = False,
) -> QualityReport:
    """Measure an edit against its original and give a verdict: pass, fail or unmeasured.

    Parameters
    ----------
    original, edited : ndarray
        H x W or H x W x C, uint8 or uint16, same shape and dtype.
    mask : ndarray of bool, optional
        True where the edit was asked for. ``None``: the changed area is found from the difference
        (:func:`crispedit.quality.metrics.changed_mask`); when that covers (nearly) the whole image, the change
        is measured globally (:func:`crispedit.quality.metrics.global_change`) and, with no seam or untouched
        pixels to check, the verdict is at best ``'unmeasured'``.
    band : int, optional
        Blend band in px; pixels farther than this from the mask must be untouched. Default per region
        ``max(32, 4% of the diagonal of the region's bounding box)``; the outside check uses the largest.
    thresholds : Thresholds, optional
        Acceptance thresholds (default :data:`DEFAULT_THRESHOLDS`).
    seed : int
        Seed of the null placements (the result is deterministic for a seed).
    no_reference : bool
        Also compute BRISQUE inside vs. outside (informational; the HTML report does).

    Returns
    -------
    QualityReport
        ``verdict``: ``'fail'`` when any check of any region fails (each failure a :class:`Defect` with its
        place), else ``'unmeasured'`` when something could not be measured (``unmeasured`` says what and why),
        else ``'pass'``.

    Raises
    ------
    InputError
        Images of different sizes, channels or dtypes, or a mask of another size.

    Examples
    --------
    >>> from crispedit.quality.defects import photo_like, ellipse_mask, blurred_patch
    >>> img = photo_like(256, 256, seed=2)
    >>> m = ellipse_mask(256, 256, 128, 128, 50, 50)
    >>> rep = assess(img, blurred_patch(img, m, 3.0), m)
    >>> rep.verdict, rep.detail_ratio < 0.5, rep.defects[0].kind
    ('fail', True, 'soft_patch')
    >>> tiny = np.zeros((8, 8, 3), np.uint8); sq = np.zeros((8, 8), bool); sq[2:6, 2:6] = True
    >>> assess(tiny, tiny, sq).verdict
    'unmeasured'
    """
    t_all = time.perf_counter()
    th = thresholds or DEFAULT_THRESHOLDS
    original, edited = np.asarray(original), np.asarray(edited)
    if original.ndim not in (2, 3) or original.size == 0:
        raise InputError(f"expected an H x W or H x W x C image, got shape {original.shape}", "give an image array")
    M.check_pair(original, edited)
    acc = _Assessment()
    t = time.perf_counter()
    if mask is None:
        mask, source = M.changed_mask(original, edited), "difference"
    else:
        mask, source = _check_mask(mask, original.shape), "given"
    acc.timings["mask"] = time.perf_counter() - t
    h, w = mask.shape

    t = time.perf_counter()
    diff = M._max_abs_diff(original, edited)
    changed = diff > 0
    acc.metrics.update(mask_pixels=int(np.count_nonzero(mask)), changed_pixels=int(np.count_nonzero(changed)))
    acc.timings["diff"] = time.perf_counter() - t
    whole = acc.metrics["mask_pixels"] >= (1.0 if source == "given" else 0.9) * h * w
    t = time.perf_counter()
    units = [] if whole else _units(mask)
    acc.timings["units"] = time.perf_counter() - t
    bands = {name: int(band) if band is not None else b for name, _, _, b in units}
    band_all = max(bands.values(), default=int(band) if band is not None else 32)

    # one distance map to the mask, on a crop wide enough for the outside check and (with one region) its ring
    cache: dict[str, Any] = {}
    t = time.perf_counter()
    if not whole and len(units) == 1:
        b1 = bands[units[0][0]]
        M.dist_outside_cached(mask, max(band_all + 2, b1 + max(24, b1) + 8), cache)
    acc.timings["mask_distance"] = time.perf_counter() - t
    _judge_outside(acc, original, edited, mask, diff, band_all, whole, th, cache)
    if whole or acc.metrics["mask_pixels"] == 0:
        _judge_whole(acc, original, edited, source, th)
    else:
        _judge_regions(acc, original, edited, mask, changed, units, bands, source, seed, th, cache)
        if no_reference:
            t = time.perf_counter()
            bb = M.mask_bbox(mask)
            assert bb is not None
            zone = mask.copy()
            zx0, zy0, zx1, zy1 = M._crop_box(mask.shape, bb, band_all)
            zone[zy0:zy1, zx0:zx1] = True
            acc.metrics.update(_brisque_pair(edited, mask, zone | changed))
            acc.timings["brisque"] = time.perf_counter() - t
    _judge_brisque(acc, th)
    acc.timings["total"] = time.perf_counter() - t_all
    verdict = "fail" if acc.defects else ("unmeasured" if acc.unmeasured else "pass")
    return QualityReport(
        verdict=verdict,
        reasons=[d.message for d in acc.defects],
        metrics=acc.metrics,
        worst_places=acc.worst[:6],
        checks=acc.checks,
        notes=acc.notes,
        mask_source=source,
        band=band_all,
        timings=acc.timings,
        thresholds=th,
        mask=mask,
        unmeasured=acc.unmeasured,
        defects=acc.defects,
        regions=acc.regions,
    )


@dataclass
class _Assessment:
    """What :func:`assess` gathers while it measures and judges (the fields of the :class:`QualityReport`)."""

    metrics: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, str] = field(default_factory=dict)
    defects: list[Defect] = field(default_factory=list)
    unmeasured: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    regions: list[dict[str, Any]] = field(default_factory=list)
    worst: list[tuple[int, int, float]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def _judge_outside(acc: _Assessment, original: np.ndarray, edited: np.ndarray, mask: np.ndarray, diff: np.ndarray,
                   band_all: int, whole: bool, th: Thresholds, cache: dict[str, Any]) -> None:
    """Pixels changed beyond the blend band (``outside_changed_pixels``)."""
    t = time.perf_counter()
    if whole:
        acc.metrics.update(outside_changed_pixels=0, outside_max_diff=0.0, outside_max_diff_norm=0.0)
        acc.checks["outside_changed_pixels"] = "n/a"
        acc.timings["outside"] = time.perf_counter() - t
        return
    acc.metrics.update(M.outside_identity(original, edited, mask, band_all, diff=diff, cache=cache))
    acc.timings["outside"] = time.perf_counter() - t
    n_out = acc.metrics["outside_changed_pixels"]
    if n_out <= th.outside_changed_max:
        acc.checks["outside_changed_pixels"] = "pass"
        return
    acc.checks["outside_changed_pixels"] = "fail"
    far = diff > 0
    md = M.dist_outside_cached(mask, band_all + 2, cache)
    if md is not None:
        dist, (x0, y0, x1, y1) = md
        far[y0:y1, x0:x1] &= dist > band_all
    ys, xs = np.nonzero(far)
    acc.defects.append(Defect(
        "outside_changed", 0, "outside_changed_pixels", n_out, th.outside_changed_max,
        int(xs[0]) if xs.size else None, int(ys[0]) if ys.size else None,
        f"{n_out} pixels changed beyond the {band_all}px blend band: outside_changed_pixels {n_out} > "
        f"{th.outside_changed_max} (largest difference {acc.metrics['outside_max_diff']:g})"))


def _judge_whole(acc: _Assessment, original: np.ndarray, edited: np.ndarray, source: str, th: Thresholds) -> None:
    """No region to judge: nothing was edited, or the whole image was (measured globally against the original)."""
    nan = float("nan")
    acc.metrics.update(seam_score=nan, detail_ratio=nan, noise_ratio=nan, colour_delta_e=nan)
    if acc.metrics["mask_pixels"] == 0:
        acc.metrics["seam_score"] = 0.0
        acc.notes.append("no edited area found")
        if source == "given":
            acc.notes.append("the mask is empty")
        return
    t = time.perf_counter()
    g = M.global_change(original, edited)
    acc.timings["global"] = time.perf_counter() - t
    acc.metrics.update(g)
    gc, gd = _global_checks(g, th)
    acc.checks.update(gc)
    acc.defects += gd
    acc.checks["seam_score"] = "n/a"
    if source == "difference":
        acc.unmeasured.append("the whole image changed and no mask was given: no seam and no untouched "
                              "pixels to check (global colour, tone, detail and grain were measured)")
    acc.notes.append("the whole image was edited: no seam to measure; global colour, tone, detail and grain "
                     "measured against the original")


def _judge_regions(acc: _Assessment, original: np.ndarray, edited: np.ndarray, mask: np.ndarray,
                   changed: np.ndarray, units: list[tuple[str, int, np.ndarray, int]], bands: dict[str, int],
                   source: str, seed: int, th: Thresholds, cache: dict[str, Any]) -> None:
    """Measure and judge each region alone; the first failing region (else the largest) gives the top metrics.
    ``cache``: shared between the regions' checks (pyramid, distance maps)."""
    h, w = mask.shape
    decided: tuple[str, dict[str, Any]] | None = None
    # changed pixels are kept out of the reference areas (null placements, rings) ... unless they are all over the
    # image (a lossy re-encode): then only the mask is
    touched = changed
    if acc.metrics["outside_changed_pixels"] > 0.01 * h * w:
        touched = np.zeros_like(changed)
        acc.notes.append("pixels changed all over the image: reference areas avoid only the mask")
    zone = touched | mask
    for name, index, m, _ in units:
        um, wp, unotes = _measure_unit(original, edited, m, bands[name], zone, mask, source, seed, cache,
                                       acc.timings, whole_mask=len(units) == 1)
        bbu = M.mask_bbox(m)
        if bbu is not None:
            um["inner_centre"] = ((bbu[0] + bbu[2]) // 2, (bbu[1] + bbu[3]) // 2)
        uc, ud, uu = _judge_unit(um, wp, th, index, name, th.min_region_px)
        verdict_u = "fail" if ud else ("unmeasured" if uu else "pass")
        acc.regions.append({"name": name, "index": index, "verdict": verdict_u, "box": list(bbu or ()),
                            "metrics": {k: v for k, v in um.items() if not isinstance(v, dict)},
                            "checks": uc, "worst_places": [list(p) for p in wp[:3]]})
        acc.defects += ud
        acc.unmeasured += uu
        acc.notes += [f"{name}: {n}" for n in unotes] if len(units) > 1 else unotes
        acc.worst += wp
        for k, v in uc.items():
            if v == "fail" or acc.checks.get(k) in (None, "n/a"):
                acc.checks[k] = v
        if decided is None or (verdict_u == "fail" and decided[0] != "fail"):
            decided = (verdict_u, um)
    assert decided is not None
    acc.metrics.update({k: v for k, v in decided[1].items() if k not in ("mask_pixels",)})
    acc.metrics["regions"] = len(units)
    acc.worst.sort(key=lambda p: -p[2])


def _judge_brisque(acc: _Assessment, th: Thresholds) -> None:
    """BRISQUE inside vs. outside: informational unless a limit is set."""
    v = acc.metrics.get("brisque_delta")
    if not _finite(v):
        return
    if th.brisque_delta_max is None:
        acc.checks["brisque_delta"] = "info"
        return
    ok = v <= th.brisque_delta_max
    acc.checks["brisque_delta"] = "pass" if ok else "fail"
    if not ok:
        acc.defects.append(Defect("unnatural", 0, "brisque_delta", v, th.brisque_delta_max, None, None,
                                  f"inside looks less natural: brisque_delta {v:.1f} > {th.brisque_delta_max:g}"))
