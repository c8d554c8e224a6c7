"""The verdict: measured thresholds and :func:`assess`, which runs every metric and says pass or fail.

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

__all__ = ["Thresholds", "QualityReport", "assess", "DEFAULT_THRESHOLDS"]


@dataclass(frozen=True)
class Thresholds:
    """Acceptance thresholds; the numbers and how they were measured are in ``docs/quality.md``.

    A metric that could not be measured (nan: no ring, no contour) never fails the edit; it is reported.
    """

    #: pixels beyond the blend band that may differ (the promise is 0: bit-identical)
    outside_changed_max: int = 0
    #: seam score above which the seam is visible (z-like; unedited photos measure -0.96 .. 2.17)
    seam_max: float = 4.0
    #: worst local (per-segment) seam score above which one place along the seam is visible
    seam_local_max: float = 8.0
    #: detail ratio (inside / ring) allowed range
    detail_min: float = 0.70
    detail_max: float = 1.60
    #: noise ratio (inside / ring) allowed range
    noise_min: float = 0.70
    noise_max: float = 1.60
    #: ΔE2000 (median over contour segments) allowed above what the same contour measures on untouched pixels
    colour_delta_e_max: float = 2.0
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
    return x


@dataclass
class QualityReport:
    """What :func:`assess` found.

    ``verdict`` is ``'pass'`` or ``'fail'``; ``reasons`` says why it failed (empty on pass); ``metrics`` holds
    every number measured (see :meth:`to_dict` for the flat JSON form); ``checks`` the per-metric verdict
    (``'pass'``, ``'fail'`` or ``'n/a'``); ``worst_places`` the (x, y, local seam score) of the most visible
    places along the contour, worst first, in full-image pixels.
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

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    def __getattr__(self, name: str) -> Any:
        # rep.seam_score etc. read from the metrics dict
        metrics = self.__dict__.get("metrics")
        if metrics is not None and name in metrics:
            return metrics[name]
        raise AttributeError(name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict: verdict, reasons, every metric as a top-level key, worst_places, checks, notes."""
        out: dict[str, Any] = {"verdict": self.verdict, "reasons": list(self.reasons)}
        for k, v in self.metrics.items():
            out[k] = {str(a): _num(b) for a, b in v.items()} if isinstance(v, dict) else _num(v)
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
            f"quality {self.verdict}: seam {f('seam_score')}, detail {f('detail_ratio')}, noise {f('noise_ratio')}, "
            f"ΔE {f('colour_delta_e')}, outside changed {m.get('outside_changed_pixels', 0)}"
        )
        if self.reasons:
            line += " — " + "; ".join(self.reasons)
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


def assess(
    original: np.ndarray,
    edited: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    band: int | None = None,
    thresholds: Thresholds | None = None,
    seed: int = 0,
    no_reference: bool = True,
) -> QualityReport:
    """Measure an edit against its original and give a verdict.

    Parameters
    ----------
    original, edited : ndarray
        H x W or H x W x C, uint8 or uint16, same shape and dtype.
    mask : ndarray of bool, optional
        True where the edit was asked for. ``None``: the changed area is found from the difference
        (:func:`crispedit.quality.metrics.changed_mask`).
    band : int, optional
        Blend band in px; pixels farther than this from the mask must be untouched. Default
        ``max(32, 4% of the diagonal of the mask's bounding box)``.
    thresholds : Thresholds, optional
        Acceptance thresholds (default :data:`DEFAULT_THRESHOLDS`).
    seed : int
        Seed of the null placements (the result is deterministic for a seed).
    no_reference : bool
        Also compute BRISQUE inside vs. outside when the model is installed.

    Returns
    -------
    QualityReport

    Examples
    --------
    >>> from crispedit.quality.defects import photo_like, ellipse_mask, blurred_patch
    >>> img = photo_like(256, 256, seed=2)
    >>> m = ellipse_mask(256, 256, 128, 128, 50, 50)
    >>> rep = assess(img, blurred_patch(img, m, 3.0), m)
    >>> rep.verdict, rep.detail_ratio < 0.5
    ('fail', True)
    """
    t_all = time.perf_counter()
    timings: dict[str, float] = {}
    th = thresholds or DEFAULT_THRESHOLDS
    original = np.asarray(original)
    edited = np.asarray(edited)
    if original.ndim not in (2, 3) or original.size == 0:
        raise InputError(f"expected an H x W or H x W x C image, got shape {original.shape}", "give an image array")
    M.check_pair(original, edited)
    t = time.perf_counter()
    if mask is None:
        mask = M.changed_mask(original, edited)
        source = "difference"
    else:
        mask = _check_mask(mask, original.shape)
        source = "given"
    timings["mask"] = time.perf_counter() - t
    if band is None:
        band = M.default_band(mask)
    band = int(band)
    notes: list[str] = []

    t = time.perf_counter()
    diff = M._max_abs_diff(original, edited)
    changed = diff > 0
    metrics: dict[str, Any] = dict(M.outside_identity(original, edited, mask, band, diff=diff))
    timings["outside"] = time.perf_counter() - t
    metrics["mask_pixels"] = int(np.count_nonzero(mask))
    metrics["changed_pixels"] = int(np.count_nonzero(changed))
    bb = M.mask_bbox(mask)
    h, w = mask.shape
    nan = float("nan")
    worst: list[tuple[int, int, float]] = []
    if bb is None or metrics["mask_pixels"] == h * w:
        # nothing edited, or the whole image: no contour, no ring
        metrics.update(
            seam_score=0.0 if bb is None else nan,
            detail_ratio=nan,
            noise_ratio=nan,
            colour_delta_e=nan,
        )
        notes.append("no edited area found" if bb is None else "the whole image was edited: no seam to measure")
    else:
        t = time.perf_counter()
        seam = M.seam_visibility(edited, mask, band, forbidden=changed, seed=seed)
        timings["seam"] = time.perf_counter() - t
        metrics["seam_score"] = seam.seam_score
        metrics["seam_local_max"] = max((s for _, _, s in seam.worst_places), default=nan)
        # per-statistic z-scores, signed (a negative contrast-ratio z = a smoother-than-natural band)
        metrics["seam_z"] = {k: seam.scale_stat.get(k + "_signed_z", v) for k, v in seam.scale_z.items()}
        metrics["seam_null_placements"] = seam.null_placements
        notes += seam.notes
        worst = seam.worst_places

        t = time.perf_counter()
        ring_w = max(24, band)
        margin = band + ring_w + 8
        x0, y0, x1, y1 = M._crop_box(mask.shape, bb, margin)
        # with a mask found from the difference, the blend band is already inside it: the ring starts at 2 px
        ring_offset = 2 if source == "difference" else band
        dn = M.detail_noise_consistency(
            original[y0:y1, x0:x1],
            edited[y0:y1, x0:x1],
            mask[y0:y1, x0:x1],
            band,
            ring_offset=ring_offset,
        )
        metrics.update(dn)
        timings["detail_noise"] = time.perf_counter() - t

        t = time.perf_counter()
        metrics.update(M.colour_consistency(original, edited, mask, band))
        timings["colour"] = time.perf_counter() - t

        if no_reference:
            t = time.perf_counter()
            zone = mask.copy()
            zx0, zy0, zx1, zy1 = M._crop_box(mask.shape, bb, band)
            zone[zy0:zy1, zx0:zx1] = True
            metrics.update(_brisque_pair(edited, mask, zone | changed))
            timings["brisque"] = time.perf_counter() - t

    # ---- verdict -----------------------------------------------------------------------------------------
    reasons: list[str] = []
    checks: dict[str, str] = {}

    def finite(k: str) -> bool:
        v = metrics.get(k)
        return isinstance(v, (int, float)) and math.isfinite(v)

    n_out = metrics["outside_changed_pixels"]
    if n_out > th.outside_changed_max:
        checks["outside_changed_pixels"] = "fail"
        reasons.append(
            f"{n_out} pixels changed beyond the {band}px blend band (max diff {metrics['outside_max_diff']:g})"
        )
    else:
        checks["outside_changed_pixels"] = "pass"
    if finite("seam_score"):
        ok = metrics["seam_score"] <= th.seam_max
        checks["seam_score"] = "pass" if ok else "fail"
        if not ok:
            where = f" worst at x={worst[0][0]}, y={worst[0][1]}" if worst else ""
            reasons.append(f"visible seam: score {metrics['seam_score']:.1f} > {th.seam_max:g}{where}")
    else:
        checks["seam_score"] = "n/a"
    if finite("seam_local_max"):
        ok = metrics["seam_local_max"] <= th.seam_local_max
        checks["seam_local_max"] = "pass" if ok else "fail"
        if not ok and checks.get("seam_score") != "fail":
            reasons.append(
                f"visible seam at x={worst[0][0]}, y={worst[0][1]}: local score "
                f"{metrics['seam_local_max']:.1f} > {th.seam_local_max:g}"
            )
    # detail, noise: consistent with the surroundings (ring) OR with what was there (the original inside)
    for key, lo, hi, low_msg, high_msg in (
        ("detail_ratio", th.detail_min, th.detail_max, "edit is blurrier than its surroundings",
         "edit is sharper than its surroundings"),
        ("noise_ratio", th.noise_min, th.noise_max, "edit has less grain than its surroundings",
         "edit is noisier than its surroundings"),
    ):
        if finite(key):
            v = metrics[key]
            alt = metrics.get(key + "_original")
            alt_ok = isinstance(alt, float) and math.isfinite(alt) and lo <= alt <= hi
            if lo <= v <= hi or alt_ok:
                checks[key] = "pass"
            else:
                checks[key] = "fail"
                if v < lo:
                    reasons.append(f"{low_msg}: {key} {v:.2f} < {lo:g}")
                else:
                    reasons.append(f"{high_msg}: {key} {v:.2f} > {hi:g}")
        else:
            checks[key] = "n/a"
    if finite("colour_delta_e"):
        # the inner side must keep the original's colour (colour_delta_e_original) ... unless something of
        # another colour was there before (colour_delta_e_before above the threshold: a removed object), when
        # agreeing with the outer side (colour_delta_e) is what counts
        v = metrics["colour_delta_e"]
        alt = metrics.get("colour_delta_e_original")
        before = metrics.get("colour_delta_e_before")
        alt_ok = isinstance(alt, float) and math.isfinite(alt) and alt <= th.colour_delta_e_max
        had_object = not (isinstance(before, float) and math.isfinite(before)) or before > th.colour_delta_e_max
        ok = alt_ok or (had_object and v <= th.colour_delta_e_max)
        checks["colour_delta_e"] = "pass" if ok else "fail"
        if not ok:
            reasons.append(f"colour shift across the boundary: ΔE2000 {v:.1f} > {th.colour_delta_e_max:g}")
    else:
        checks["colour_delta_e"] = "n/a"
    if finite("brisque_delta"):
        if th.brisque_delta_max is None:
            checks["brisque_delta"] = "info"
        else:
            ok = metrics["brisque_delta"] <= th.brisque_delta_max
            checks["brisque_delta"] = "pass" if ok else "fail"
            if not ok:
                reasons.append(f"inside looks less natural (BRISQUE +{metrics['brisque_delta']:.1f})")
    timings["total"] = time.perf_counter() - t_all
    return QualityReport(
        verdict="fail" if reasons else "pass",
        reasons=reasons,
        metrics=metrics,
        worst_places=worst,
        checks=checks,
        notes=notes,
        mask_source=source,
        band=band,
        timings=timings,
        thresholds=th,
        mask=mask,
    )
