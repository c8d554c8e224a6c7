"""Zoom benchmark: does an edit survive 100 % zoom? (GUIDE 5, issue 2 "Tests and numbers")

For every photo (bench/photos.py, >= 3840 px wide), irregular blob masks of radius ~150, ~300, ~500 and ~800 px and
every engine model of ``oracle.VARIANTS`` (VAE softness 0.4 / 0.8 / 1.2 px on every call, tone drift up and down,
a noisy engine), run ``crispedit.edit(image, mask, engine=OracleEngine.variant(v, image), seed=0)``: the oracle
knows the true content, so a perfect harness returns the original. Per case:

- **lpPSNR**: PSNR (dB, peak 255, RGB) inside the mask after a Gaussian low-pass of sigma 1.5 px, edit vs
  original: content and tone, blind to grain. Target: median >= 36 dB.
- **detail**: 3x3 Laplacian energy (luma) inside the mask eroded by 8 px, edit over original. Target 0.8-1.25.
- **boundary**: Sobel gradient energy (luma) in a 7-px band on the mask contour, edit over original. Target 0.85-1.2.
- **outside**: pixels farther than the blend band from the mask that changed (band from ``result.info['regions']``,
  else max(32, 4 % of the mask bbox diagonal)). Target 0.

The same cases (same engine variant) run through two ANCHOR strategies: A1111 "only masked" (bbox + 32 px padding,
resized to 512 px long side, one full-strength call, resized back, pasted with the mask blurred by 4 px) and
diffusers ``padding_mask_crop=32`` (bbox + 32 px grown to the 512x512 aspect, resized to 512x512, one call, resized
back, pasted with the hard mask). Summaries are per split (tuning / held-out, bench/photos.py) and variant.

Usage::

    .venv/bin/python bench/zoom.py            # all photos, 4 radii, 5 variants, ours + anchors
    .venv/bin/python bench/zoom.py --quick    # 2 photos (1 tuning, 1 held-out), 2 masks, all variants
    .venv/bin/python bench/zoom.py --write    # also update docs/benchmarks.md
    .venv/bin/python bench/zoom.py --photos sunset bridge --radii 300 800 --json out/zoom.json
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageOps
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from oracle import VARIANTS, OracleEngine  # noqa: E402
from photos import get_photo_info  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
RADII = (150, 300, 500, 800)
TARGETS = {"lp_psnr_median": 36.0, "detail": (0.8, 1.25), "boundary": (0.85, 1.2)}
WHO = ("ours", "a1111", "diffusers")


# -- masks -----------------------------------------------------------------------------------------------------
def blob_shape(r: int, rng: np.random.Generator) -> np.ndarray:
    """An irregular blob of radius ~r (bool, tight bounding box): an ellipse of random aspect and angle whose
    radius is modulated by smooth noise (thresholded smoothed noise around a centre)."""
    R = int(math.ceil(1.7 * r)) + 2
    yy, xx = np.mgrid[-R:R + 1, -R:R + 1].astype(np.float32)
    ang = rng.uniform(0, np.pi)
    a = math.sqrt(rng.uniform(0.75, 1.33))
    u = (xx * math.cos(ang) + yy * math.sin(ang)) / (r * a)
    v = (-xx * math.sin(ang) + yy * math.cos(ang)) * a / r
    d = np.sqrt(u * u + v * v)
    g = rng.normal(size=(7, 7)).astype(np.float32)
    noise = cv2.resize(g, (2 * R + 1, 2 * R + 1), interpolation=cv2.INTER_CUBIC)
    noise = np.clip(noise / (noise.std() + 1e-6), -1.6, 1.6)
    m = d < 1.0 + 0.22 * noise
    lab, n = ndimage.label(m)
    if n > 1:
        keep = lab[R, R] if lab[R, R] else np.argmax(np.bincount(lab.ravel())[1:]) + 1
        m = lab == keep
    m = ndimage.binary_fill_holes(m)
    ys, xs = np.nonzero(m)
    return m[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


def place_blob(h: int, w: int, shape: np.ndarray, rng: np.random.Generator, margin: int = 48) -> np.ndarray:
    """Full-size bool mask with ``shape`` at a random position at least ``margin`` px inside the image."""
    bh, bw = shape.shape
    if bh + 2 * margin > h or bw + 2 * margin > w:
        raise ValueError(f"blob {bw}x{bh} does not fit in {w}x{h}")
    y = int(rng.integers(margin, h - margin - bh + 1))
    x = int(rng.integers(margin, w - margin - bw + 1))
    m = np.zeros((h, w), bool)
    m[y:y + bh, x:x + bw] = shape
    return m


def case_mask(photo: str, h: int, w: int, r: int) -> np.ndarray:
    """The mask of one benchmark case: deterministic per (photo, radius)."""
    seed = int.from_bytes(hashlib.sha256(f"{photo}:{r}".encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    return place_blob(h, w, blob_shape(r, rng), rng)


# -- metrics ---------------------------------------------------------------------------------------------------
def _luma(rgb: np.ndarray) -> np.ndarray:
    f = rgb.astype(np.float32)
    return 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    x, y, bw, bh = cv2.boundingRect(mask.astype(np.uint8))
    return x, y, x + bw, y + bh


def default_band(mask: np.ndarray) -> int:
    x0, y0, x1, y1 = _bbox(mask)
    return int(max(32, math.floor(0.04 * math.hypot(x1 - x0, y1 - y0))))


def band_from_info(info: dict[str, Any] | None, mask: np.ndarray) -> int:
    regions = (info or {}).get("regions") or []
    bands = [int(r["band"]) for r in regions if isinstance(r, dict) and r.get("band") is not None]
    return max(bands) if bands else default_band(mask)


def metrics(orig: np.ndarray, edit: np.ndarray, mask: np.ndarray, band: int | None = None) -> dict[str, float]:
    """lpPSNR, detail ratio, boundary ratio, tone error and outside identity of ``edit`` against ``orig``."""
    h, w = mask.shape
    x0, y0, x1, y1 = _bbox(mask)
    pad = 48
    X0, Y0, X1, Y1 = max(0, x0 - pad), max(0, y0 - pad), min(w, x1 + pad), min(h, y1 + pad)
    o = orig[Y0:Y1, X0:X1, :3].astype(np.float32)
    e = edit[Y0:Y1, X0:X1, :3].astype(np.float32)
    m = mask[Y0:Y1, X0:X1]
    m8 = m.astype(np.uint8)
    res: dict[str, float] = {}
    # low-pass PSNR inside the mask
    lo = cv2.GaussianBlur(o, (0, 0), 1.5, borderType=cv2.BORDER_REFLECT)
    le = cv2.GaussianBlur(e, (0, 0), 1.5, borderType=cv2.BORDER_REFLECT)
    d = (lo - le)[m]
    mse = float(np.mean(d * d))
    res["lp_psnr"] = 99.0 if mse == 0 else 10 * math.log10(255.0**2 / mse)
    # mean low-pass tone error inside the mask (luma levels, signed: edit - original)
    res["tone"] = float(np.mean(_luma(le)[m] - _luma(lo)[m]))
    lum_o, lum_e = _luma(o), _luma(e)
    # detail: 3x3 Laplacian energy in the mask eroded by 8 px
    er = cv2.erode(m8, _disk(8)).astype(bool)
    if not er.any():
        er = m
    lap_o = cv2.Laplacian(lum_o, cv2.CV_32F, ksize=1)
    lap_e = cv2.Laplacian(lum_e, cv2.CV_32F, ksize=1)
    res["detail"] = float(np.mean(lap_e[er] ** 2) / max(1e-9, np.mean(lap_o[er] ** 2)))
    # boundary: Sobel energy in a 7-px band on the contour
    ring = cv2.dilate(m8, _disk(3)).astype(bool) & ~cv2.erode(m8, _disk(3)).astype(bool)

    def sobel_energy(lum: np.ndarray) -> float:
        gx = cv2.Sobel(lum, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(lum, cv2.CV_32F, 0, 1, ksize=3)
        return float(np.sum((gx * gx + gy * gy)[ring]))

    res["boundary"] = sobel_energy(lum_e) / max(1e-9, sobel_energy(lum_o))
    # outside identity: the whole image, pixels farther than the band from the mask
    band = default_band(mask) if band is None else band
    dist = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    beyond = dist > band
    changed = np.any(orig != edit, axis=2) if orig.ndim == 3 else orig != edit
    res["outside"] = int(np.count_nonzero(changed & beyond))
    res["band"] = band
    res["changed_max_dist"] = float(dist[changed].max()) if changed.any() else 0.0
    return res


# -- the anchor ------------------------------------------------------------------------------------------------
def anchor_only_masked(image: np.ndarray, mask: np.ndarray, engine: Any, *, padding: int = 32,
                       size: int = 512, mask_blur: float = 4.0, seed: int = 0) -> np.ndarray:
    """A1111 "Only masked" / diffusers ``padding_mask_crop``: bbox + padding, resize to ``size`` long side, one
    full-strength call, resize back, paste with the mask blurred by ``mask_blur`` px."""
    h, w = mask.shape
    x0, y0, x1, y1 = _bbox(mask)
    x0, y0, x1, y1 = max(0, x0 - padding), max(0, y0 - padding), min(w, x1 + padding), min(h, y1 + padding)
    crop = image[y0:y1, x0:x1, :3]
    ch, cw = crop.shape[:2]
    # the mask is blurred at full resolution (with what lies around the crop), then cropped
    m_pad = 4 * int(math.ceil(mask_blur))
    Y0, X0 = max(0, y0 - m_pad), max(0, x0 - m_pad)
    mwin = mask[Y0:min(h, y1 + m_pad), X0:min(w, x1 + m_pad)].astype(np.float32)
    blurred = cv2.GaussianBlur(mwin, (0, 0), mask_blur)[y0 - Y0:y0 - Y0 + ch, x0 - X0:x0 - X0 + cw]
    s = size / max(cw, ch)
    sw, sh = max(8, int(round(cw * s / 8)) * 8), max(8, int(round(ch * s / 8)) * 8)
    small = Image.fromarray(np.ascontiguousarray(crop)).resize((sw, sh), Image.LANCZOS)
    small_mask = Image.fromarray(np.clip(blurred * 255 + 0.5, 0, 255).astype(np.uint8)).resize((sw, sh), Image.LANCZOS)
    small_mask = small_mask.point(lambda v: 255 if v >= 8 else 0)
    res = engine.inpaint(small, small_mask, None, seed=seed, strength=1.0, region=(x0, y0, x1, y1))
    up = np.asarray(res.convert("RGB").resize((cw, ch), Image.LANCZOS), dtype=np.float32)
    alpha = np.clip(blurred, 0.0, 1.0)[..., None]
    pasted = crop.astype(np.float32) * (1 - alpha) + up * alpha
    out = image.copy()
    out[y0:y1, x0:x1, :3] = np.clip(np.round(pasted), 0, 255).astype(np.uint8)
    return out


def anchor_padding_mask_crop(image: np.ndarray, mask: np.ndarray, engine: Any, *, padding: int = 32,
                             size: tuple[int, int] = (512, 512), seed: int = 0) -> np.ndarray:
    """diffusers ``padding_mask_crop``: the mask's bbox + ``padding``, grown to the aspect of ``size``
    (``VaeImageProcessor.get_crop_region``), resized to ``size``, one full-strength call, resized back and pasted
    with the (hard) mask (``apply_overlay``)."""
    h, w = mask.shape
    x0, y0, x1, y1 = _bbox(mask)
    x0, y0, x1, y1 = max(0, x0 - padding), max(0, y0 - padding), min(w, x1 + padding), min(h, y1 + padding)
    ratio = size[0] / size[1]
    cw, ch = x1 - x0, y1 - y0
    if cw / ch > ratio:  # too wide: grow the height
        need = int(round(cw / ratio)) - ch
        y0, y1 = y0 - need // 2, y1 + need - need // 2
        if y0 < 0:
            y1, y0 = min(h, y1 - y0), 0
        if y1 > h:
            y0, y1 = max(0, y0 - (y1 - h)), h
    else:
        need = int(round(ch * ratio)) - cw
        x0, x1 = x0 - need // 2, x1 + need - need // 2
        if x0 < 0:
            x1, x0 = min(w, x1 - x0), 0
        if x1 > w:
            x0, x1 = max(0, x0 - (x1 - w)), w
    crop = np.ascontiguousarray(image[y0:y1, x0:x1, :3])
    cm = mask[y0:y1, x0:x1]
    small = Image.fromarray(crop).resize(size, Image.LANCZOS)
    small_mask = Image.fromarray(cm.astype(np.uint8) * 255).resize(size, Image.LANCZOS).point(
        lambda v: 255 if v >= 128 else 0)
    res = engine.inpaint(small, small_mask, None, seed=seed, strength=1.0, region=(x0, y0, x1, y1))
    up = np.asarray(res.convert("RGB").resize((x1 - x0, y1 - y0), Image.LANCZOS))
    out = image.copy()
    sub = out[y0:y1, x0:x1, :3]
    sub[cm] = up[cm]
    return out


ANCHORS = {"a1111": anchor_only_masked, "diffusers": anchor_padding_mask_crop}


# -- running ---------------------------------------------------------------------------------------------------
@dataclass
class Case:
    photo: str
    split: str
    radius: int
    variant: str = "soft0.8"
    ours: dict[str, Any] = field(default_factory=dict)
    a1111: dict[str, Any] = field(default_factory=dict)
    diffusers: dict[str, Any] = field(default_factory=dict)


def load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.ascontiguousarray(np.asarray(ImageOps.exif_transpose(im).convert("RGB")))


def _calls_summary(calls: list[dict]) -> dict[str, Any]:
    full = [c for c in calls if c["strength"] >= 0.99]
    ref = [c for c in calls if c["strength"] < 0.99]
    return {"full": len(full), "refine": len(ref), "garbage": sum(c["garbage"] for c in calls),
            "full_sizes": [list(c["size"]) for c in full][:4],
            "refine_strength": sorted({round(c["strength"], 3) for c in ref})}


def run_ours(image: np.ndarray, mask: np.ndarray, options: dict[str, Any], variant: str = "soft0.8") -> dict[str, Any]:
    import crispedit

    eng = OracleEngine.variant(variant, image)
    t = time.perf_counter()
    result = crispedit.edit(image, mask, engine=eng, seed=0, **options)
    dt = time.perf_counter() - t
    out = getattr(result, "array", None)
    if out is None or out.dtype != np.uint8 or out.shape != image.shape:
        out = np.asarray(result.image.convert("RGB"))
    r = metrics(image, out, mask, band_from_info(result.info, mask))
    r["seconds"] = round(dt, 2)
    r["calls"] = _calls_summary(eng.calls)
    r["timings"] = (result.info or {}).get("timings")
    return r


def run_anchor(image: np.ndarray, mask: np.ndarray, variant: str = "soft0.8", which: str = "a1111") -> dict[str, Any]:
    eng = OracleEngine.variant(variant, image)
    t = time.perf_counter()
    out = ANCHORS[which](image, mask, eng)
    r = metrics(image, out, mask, default_band(mask))
    r["seconds"] = round(time.perf_counter() - t, 2)
    r["calls"] = _calls_summary(eng.calls)
    return r


def run(photos: list[str] | None, radii: tuple[int, ...], anchor: bool, ours: bool, options: dict[str, Any],
        verbose: bool = True, variants: tuple[str, ...] = tuple(VARIANTS), jsonl: Path | None = None) -> list[Case]:
    """Run every (photo, radius, variant) case; with ``jsonl`` each finished case is appended there as one line."""
    cases: list[Case] = []
    for photo, path in get_photo_info(photos):
        image = load_rgb(path)
        h, w = image.shape[:2]
        for r in radii:
            mask = case_mask(photo.name, h, w, r)
            for v in variants:
                case = Case(photo.name, photo.split, r, v)
                if ours:
                    try:
                        case.ours = run_ours(image, mask, options, v)
                    except Exception as exc:  # a harness under development: record and go on
                        case.ours = {"error": f"{type(exc).__name__}: {exc}"}
                        if verbose:
                            traceback.print_exc(limit=3)
                if anchor:
                    case.a1111 = run_anchor(image, mask, v, "a1111")
                    case.diffusers = run_anchor(image, mask, v, "diffusers")
                cases.append(case)
                if jsonl is not None:
                    with open(jsonl, "a") as fh:
                        fh.write(json.dumps(asdict(case)) + "\n")
                if verbose:
                    print(f"  {photo.name:9s} r={r:3d} {v:10s}: ours {_short(case.ours)} | a1111 {_short(case.a1111)}"
                          f" | diffusers {_short(case.diffusers)}", file=sys.stderr, flush=True)
    return cases


def _short(r: dict[str, Any]) -> str:
    if not r:
        return "-"
    if "error" in r:
        return "ERROR " + r["error"][:80]
    return (f"{r['lp_psnr']:.1f} dB, detail {r['detail']:.2f}, boundary {r['boundary']:.2f}, "
            f"outside {r['outside']}, {r['seconds']:.1f}s")


# -- reporting -------------------------------------------------------------------------------------------------
def _f(r: dict[str, Any], key: str, fmt: str) -> str:
    if not r:
        return "-"
    if "error" in r:
        return "ERR"
    return format(r[key], fmt)


def _calls(r: dict[str, Any]) -> str:
    c = r.get("calls") if r else None
    if not c:
        return "-"
    s = f"{c['full']}+{c['refine']}r"
    return s + (f" ({c['garbage']} garbage)" if c["garbage"] else "")


def table(cases: list[Case]) -> str:
    lines = ["| photo | split | r px | variant | ours lpPSNR dB | ours detail | ours boundary | ours outside "
             "| ours tone Δ | ours calls | ours s | a1111 lpPSNR / detail / boundary "
             "| diffusers lpPSNR / detail / boundary |",
             "|---|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for c in cases:
        o = c.ours

        def trio(r: dict[str, Any]) -> str:
            return f"{_f(r, 'lp_psnr', '.1f')} / {_f(r, 'detail', '.2f')} / {_f(r, 'boundary', '.2f')}"
        lines.append(f"| {c.photo} | {c.split} | {c.radius} | {c.variant} | {_f(o, 'lp_psnr', '.2f')} "
                     f"| {_f(o, 'detail', '.2f')} | {_f(o, 'boundary', '.2f')} | {_f(o, 'outside', 'd')} "
                     f"| {_f(o, 'tone', '+.2f')} | {_calls(o)} | {_f(o, 'seconds', '.1f')} | {trio(c.a1111)} "
                     f"| {trio(c.diffusers)} |")
    return "\n".join(lines)


def _ok(rs: list[dict]) -> list[dict]:
    return [r for r in rs if r and "error" not in r]


def _row(label: str, who: str, rs_all: list[dict]) -> str | None:
    """One summary row with its verdict against TARGETS (outside identity only binds our harness)."""
    if not rs_all:
        return None
    rs = _ok(rs_all)
    errors = len(rs_all) - len(rs)
    if not rs:
        return f"| {label} | {who} | {len(rs_all)} | - | - | - | - | {errors} errors |"
    med = statistics.median(r["lp_psnr"] for r in rs)
    dmin, dmax = min(r["detail"] for r in rs), max(r["detail"] for r in rs)
    bmin, bmax = min(r["boundary"] for r in rs), max(r["boundary"] for r in rs)
    outside = sum(r["outside"] for r in rs)
    d_ok = sum(TARGETS["detail"][0] <= r["detail"] <= TARGETS["detail"][1] for r in rs)
    b_ok = sum(TARGETS["boundary"][0] <= r["boundary"] <= TARGETS["boundary"][1] for r in rs)
    fails = []
    if med < TARGETS["lp_psnr_median"]:
        fails.append("lpPSNR")
    if d_ok < len(rs):
        fails.append(f"detail ({len(rs) - d_ok} cases)")
    if b_ok < len(rs):
        fails.append(f"boundary ({len(rs) - b_ok} cases)")
    if outside and who == "ours":
        fails.append("outside")
    if errors:
        fails.append(f"{errors} errors")
    verdict = "meets targets" if not fails else "misses: " + ", ".join(fails)
    out_s = str(outside) if who == "ours" else f"({outside})"
    return (f"| {label} | {who} | {len(rs_all)} | {med:.2f} | {dmin:.2f}-{dmax:.2f} | {bmin:.2f}-{bmax:.2f} "
            f"| {out_s} | {verdict} |")


def summary(cases: list[Case]) -> str:
    """Per variant and split, then over all variants per split and overall, for ours and both anchors."""
    lines = ["| variant / split | who | cases | median lpPSNR dB | detail min-max | boundary min-max | outside total "
             "| verdict |", "|---|---|--:|--:|--:|--:|--:|---|"]
    variants = list(dict.fromkeys(c.variant for c in cases))
    splits = [s for s in ("tuning", "held-out") if any(c.split == s for c in cases)]
    groups = [(f"{v} / {s}", [c for c in cases if c.variant == v and c.split == s]) for v in variants for s in splits]
    groups += [(f"**all variants** / {s}", [c for c in cases if c.split == s]) for s in splits]
    groups.append(("**all variants, all photos**", cases))
    for label, cs in groups:
        for who in WHO:
            row = _row(label, who, [getattr(c, who) for c in cs if getattr(c, who)])
            if row:
                lines.append(row)
    return "\n".join(lines)


def source_state() -> str:
    """The commit being measured, with "+ local changes" when src/ differs from it (take it before a run)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True).stdout.strip() or "?"
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=ROOT, capture_output=True,
                               text=True).stdout.strip()
    except OSError:
        return "?"
    return head + (" + local changes in src/" if dirty else "")


def machine_line(commit: str | None = None) -> str:
    mem = "?"
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    mem = f"{int(line.split()[1]) / 1024**2:.0f} GiB RAM"
    except OSError:
        pass
    commit = source_state() if commit is None else commit
    date = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {mem}; Python {platform.python_version()}; "
            f"date {date}; commit {commit}.")


def update_doc(key: str, body: str, path: Path = DOC) -> None:
    """Replace (or append) the section between ``<!-- bench:KEY -->`` markers in docs/benchmarks.md."""
    start, end = f"<!-- bench:{key} start -->", f"<!-- bench:{key} end -->"
    text = path.read_text() if path.exists() else (
        "# Benchmarks\n\nNumbers written by `bench/zoom.py --write` and `bench/speed.py --write` "
        "(sections between the markers are regenerated; edit outside them).\n")
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        pre, rest = text.split(start, 1)
        _, post = rest.split(end, 1)
        text = pre + block + post
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def doc_section(cases: list[Case], command: str, seconds: float, commit: str | None = None) -> str:
    variants = ", ".join(f"`{k}` ({', '.join(f'{a} {b:g}' for a, b in v.items())})" for k, v in VARIANTS.items())
    return f"""## Zoom benchmark (oracle engine, all engine variants)

`{command}` ({seconds:.0f} s). {machine_line(commit)} Load before the run: {os.getloadavg()[0]:.1f}.

Oracle engine (`bench/oracle.py`): knows the true photo. Every call, refinements included, is decoded like SD's
VAE: a Gaussian blur of `softness` px at the call's size, optionally the engine's own grain (`noise`, 8-bit levels),
a smooth 2-4 % tone drift (`drift` +1 brighter / -1 darker) with a slight colour cast, rounding to 8 bits (1 level,
as an SD pipeline's decode; the anchors see the same engine).
Full-strength calls return the truth of their region at the call's size (garbage above 1.5x the 512-px working
size); refine calls (strength < 1) keep the low-pass of their input and bring the true high-pass inside the mask.
A perfect harness gives back the original. Variants: {variants}. Anchors on the same cases and variants: `a1111` =
A1111 "only masked" (bbox + 32 px, 512 long side, 4-px-blurred paste); `diffusers` = `padding_mask_crop=32`
(bbox + 32 px at 512x512 aspect, hard-mask paste). Masks: irregular blobs of radius ~r at seeded positions.
Targets (issue 9): median lpPSNR >= 36 dB; detail 0.8-1.25 and boundary 0.85-1.2 in every case; outside = 0.
"tone Δ" = mean low-passed luma error inside the mask (8-bit levels); "calls" = full-strength + refine calls.

{summary(cases)}

<details><summary>Every case</summary>

{table(cases)}

</details>
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="two photos (seeding: tuning, sunset: held-out), two masks (r=150, 500), all variants")
    ap.add_argument("--variants", nargs="*", choices=list(VARIANTS), help="engine variants (default: all)")
    ap.add_argument("--photos", nargs="*", help="photo names (seeding dragonfly sunset bridge kleiber)")
    ap.add_argument("--radii", nargs="*", type=int, help="mask radii in px (default 150 300 500 800)")
    ap.add_argument("--no-anchor", action="store_true")
    ap.add_argument("--anchor-only", action="store_true", help="skip crispedit (runs without the harness)")
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="harness option passed to crispedit.edit (value parsed as JSON when possible)")
    ap.add_argument("--write", action="store_true", help="update the section in docs/benchmarks.md")
    ap.add_argument("--json", type=Path, help="write per-case results as JSON")
    ap.add_argument("--jsonl", type=Path, help="append each case as a JSON line as soon as it is done")
    ap.add_argument("--from-jsonl", type=Path, help="report (and --write) the cases of an earlier --jsonl run")
    args = ap.parse_args(argv)
    photos = args.photos or (["seeding", "sunset"] if args.quick else None)
    variants = tuple(args.variants or VARIANTS)
    radii = tuple(args.radii or ((150, 500) if args.quick else RADII))
    options: dict[str, Any] = {}
    for kv in args.option:
        k, _, v = kv.partition("=")
        try:
            options[k] = json.loads(v)
        except json.JSONDecodeError:
            options[k] = v
    commit = source_state()
    t = time.perf_counter()
    if args.from_jsonl:
        cases = [Case(**json.loads(line)) for line in args.from_jsonl.read_text().splitlines() if line.strip()]
    else:
        cases = run(photos, radii, anchor=not args.no_anchor, ours=not args.anchor_only, options=options,
                    variants=variants, jsonl=args.jsonl)
    seconds = time.perf_counter() - t
    print(summary(cases))
    print()
    print(table(cases))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(c) for c in cases], indent=1))
    if args.write:
        command = "python bench/zoom.py " + " ".join(a for a in (argv if argv is not None else sys.argv[1:]) if a != "--write")
        update_doc("zoom", doc_section(cases, command.strip(), seconds, commit))
        print(f"\nwrote {DOC.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
