"""Paste-then-remove benchmark for the classical engine (issue 10): is a removed object really gone at 1:1?

For every photo (bench/photos.py, >= 3840 px) and object radius (default 120, 270, 420 px): an object is cut
from ANOTHER benchmark photo with a random blob shape (bench/zoom.py ``blob_shape``), pasted at a random place
with a 2 px feather (alpha ramps over 2 px across the blob's contour), and removed with the removal mask = the
blob grown by 6 px. The truth is the photo before pasting. Cases are deterministic per (photo, radius).

Per case, against the truth (metric code shared with bench/zoom.py):

- **lpPSNR**: PSNR (dB, peak 255, RGB) inside the removal mask after a Gaussian low-pass of sigma 1.5 px.
- **detail**: 3x3 Laplacian energy (luma) in the mask eroded by 8 px, edit over truth. Target 0.8-1.25.
- **boundary**: Sobel gradient energy (luma) in a 7 px band on the mask contour, edit over truth. Target 0.85-1.2.
- **ghost**: the step a fill leaves along the contour: luma low-passed (Gaussian sigma 2 px), mean of
  (edit - truth) on the inner ring (4-16 px inside the mask) minus the same on the outer ring (4-16 px outside),
  in 8-bit levels. A darker disc with the mask's outline is a negative ghost. Target |ghost| <= 1.0.

Who is measured, side by side in the same run and through the same metrics:

- **ours**: ``crispedit.edit(image, mask, engine="classical", seed=0)``, the full harness.
- **telea**: ``cv2.inpaint(image, mask, 4, cv2.INPAINT_TELEA)`` on the whole image (IOPaint's ``cv2`` model).
- **pm1024**: InvokeAI's PatchMatch infill: the whole image reduced to 1024 px long side, PyPatchMatch
  (patch_size 3), upscaled bicubic and pasted into the mask.

Done when (issue 10): median lpPSNR of ours above both anchors, |ghost| <= 1.0 in every case, detail 0.8-1.25
and boundary 0.85-1.2 in every case; a 4K removal of a radius-420 object within 15 s on the 2-core machine.

Usage::

    .venv/bin/python bench/removal.py                       # all photos, radii 120 270 420
    .venv/bin/python bench/removal.py --quick               # 2 photos, radii 120 420
    .venv/bin/python bench/removal.py --write               # also update docs/benchmarks.md
    .venv/bin/python bench/removal.py --method shiftmap     # compare engine methods (see engines/classical.py)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from photos import get_photo_info  # noqa: E402
from zoom import _luma, blob_shape, load_rgb, machine_line, metrics, source_state, update_doc  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RADII = (120, 270, 420)
FEATHER = 2.0  # px, width of the paste's alpha ramp
GROW = 6  # px, removal mask = blob grown by this
TARGETS = {"ghost": 1.0, "detail": (0.8, 1.25), "boundary": (0.85, 1.2), "seconds_4k_r420": 15.0}
WHO = ("ours", "telea", "pm1024")


# -- cases -------------------------------------------------------------------------------------------------------
def _rng(*key: Any) -> np.random.Generator:
    seed = int.from_bytes(hashlib.sha256(":".join(map(str, key)).encode()).digest()[:8], "little")
    return np.random.default_rng(seed)


def paste_case(truth: np.ndarray, donor: np.ndarray, r: int, rng: np.random.Generator
               ) -> tuple[np.ndarray, np.ndarray]:
    """Paste a blob-shaped object cut from ``donor`` into ``truth``; return (composite, removal mask)."""
    shape = blob_shape(r, rng)
    bh, bw = shape.shape
    h, w = truth.shape[:2]
    dh, dw = donor.shape[:2]
    margin = 48
    if bh + 2 * margin > min(h, dh) or bw + 2 * margin > min(w, dw):
        raise ValueError(f"blob {bw}x{bh} does not fit")
    sy, sx = int(rng.integers(0, dh - bh + 1)), int(rng.integers(0, dw - bw + 1))
    ty, tx = int(rng.integers(margin, h - margin - bh + 1)), int(rng.integers(margin, w - margin - bw + 1))
    pad = np.pad(shape, 4).astype(np.uint8)
    # signed distance to the contour; alpha ramps linearly over FEATHER px centred on it
    din = cv2.distanceTransform(pad, cv2.DIST_L2, 5)
    dout = cv2.distanceTransform(1 - pad, cv2.DIST_L2, 5)
    alpha = np.clip(0.5 + (din - dout) / FEATHER, 0.0, 1.0)[4:-4, 4:-4, None]
    out = truth.copy()
    region = out[ty:ty + bh, tx:tx + bw].astype(np.float32)
    obj = donor[sy:sy + bh, sx:sx + bw].astype(np.float32)
    out[ty:ty + bh, tx:tx + bw] = np.clip(region * (1 - alpha) + obj * alpha + 0.5, 0, 255).astype(np.uint8)
    blob = np.zeros((h, w), np.uint8)
    blob[ty:ty + bh, tx:tx + bw] = (alpha[..., 0] > 0).astype(np.uint8)
    mask = cv2.distanceTransform(1 - blob, cv2.DIST_L2, 5) <= GROW
    return out, mask


# -- metrics -------------------------------------------------------------------------------------------------------
def ghost_step(truth: np.ndarray, edit: np.ndarray, mask: np.ndarray, sigma: float = 2.0) -> float:
    """Mean low-passed luma step (edit - truth) across the contour: inner 4-16 px ring minus outer 4-16 px ring."""
    x, y, bw, bh = cv2.boundingRect(mask.astype(np.uint8))
    pad = 48
    h, w = mask.shape
    Y0, X0, Y1, X1 = max(0, y - pad), max(0, x - pad), min(h, y + bh + pad), min(w, x + bw + pad)
    m = mask[Y0:Y1, X0:X1]
    diff = _luma(edit[Y0:Y1, X0:X1]) - _luma(truth[Y0:Y1, X0:X1])
    diff = cv2.GaussianBlur(diff, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    din = cv2.distanceTransform(m.astype(np.uint8), cv2.DIST_L2, 5)
    dout = cv2.distanceTransform((~m).astype(np.uint8), cv2.DIST_L2, 5)
    inner = m & (din >= 4) & (din <= 16)
    outer = ~m & (dout >= 4) & (dout <= 16)
    return float(diff[inner].mean() - diff[outer].mean())


def measure(truth: np.ndarray, edit: np.ndarray, mask: np.ndarray, seconds: float) -> dict[str, Any]:
    r = metrics(truth, edit, mask)
    out = {k: r[k] for k in ("lp_psnr", "detail", "boundary", "tone")}
    out["ghost"] = ghost_step(truth, edit, mask)
    # pixels in the mask that the fill left (near-)black where the truth is not
    out["black"] = int(np.count_nonzero(np.all(edit[mask] <= 2, axis=-1) & ~np.all(truth[mask] <= 2, axis=-1)))
    out["seconds"] = round(seconds, 2)
    return out


# -- who -------------------------------------------------------------------------------------------------------------
def run_ours(image: np.ndarray, mask: np.ndarray, options: dict[str, Any]) -> tuple[np.ndarray, dict]:
    import crispedit

    res = crispedit.edit(image, mask, engine="classical", seed=0, **options)
    calls = res.info.get("engine_calls", [])
    return res.array, {"timings": res.info.get("timings"), "calls": len(calls)}


def run_telea(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, dict]:
    """IOPaint's cv2 model: OpenCV inpainting on the whole image."""
    return cv2.inpaint(image, mask.astype(np.uint8) * 255, 4, cv2.INPAINT_TELEA), {}


def run_pm1024(image: np.ndarray, mask: np.ndarray, side: int = 1024) -> tuple[np.ndarray, dict]:
    """InvokeAI's infill: PatchMatch on the whole image at ``side`` px long side, upscaled and pasted."""
    import patchmatch

    h, w = mask.shape
    s = side / max(h, w)
    sw, sh = round(w * s), round(h * s)
    small = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA)
    small_m = cv2.resize(mask.astype(np.float32), (sw, sh), interpolation=cv2.INTER_AREA) > 0
    patchmatch.set_random_seed(0)
    filled = patchmatch.inpaint(small, small_m.astype(np.uint8), patch_size=3)
    up = cv2.resize(filled, (w, h), interpolation=cv2.INTER_CUBIC)
    out = image.copy()
    out[mask] = up[mask]
    return out, {}


# -- running ---------------------------------------------------------------------------------------------------------
def run(photos: list[str] | None, radii: tuple[int, ...], who: tuple[str, ...], options: dict[str, Any],
        verbose: bool = True) -> list[dict[str, Any]]:
    infos = get_photo_info(None)
    names = [p.name for p, _ in infos]
    chosen = [(p, path) for p, path in infos if photos is None or p.name in photos]
    cases = []
    for photo, path in chosen:
        truth = load_rgb(path)
        donor_photo, donor_path = infos[(names.index(photo.name) + 1) % len(infos)]
        donor = load_rgb(donor_path)
        for r in radii:
            rng = _rng("removal", photo.name, r)
            image, mask = paste_case(truth, donor, r, rng)
            case: dict[str, Any] = {"photo": photo.name, "split": photo.split, "radius": r,
                                    "size": [truth.shape[1], truth.shape[0]], "donor": donor_photo.name,
                                    "mask_px": int(mask.sum())}
            for name in who:
                t = time.perf_counter()
                try:
                    if name == "ours":
                        edit, extra = run_ours(image, mask, options)
                    elif name == "telea":
                        edit, extra = run_telea(image, mask)
                    else:
                        edit, extra = run_pm1024(image, mask)
                    dt = time.perf_counter() - t
                    case[name] = {**measure(truth, edit, mask, dt), **extra}
                except Exception as exc:  # record and go on
                    case[name] = {"error": f"{type(exc).__name__}: {exc}"}
                    if verbose:
                        traceback.print_exc(limit=3)
            cases.append(case)
            if verbose:
                print(f"  {photo.name:9s} r={r:3d}: " + " | ".join(f"{n} {_short(case.get(n))}" for n in who),
                      file=sys.stderr, flush=True)
        del truth, donor
    return cases


def _short(r: dict[str, Any] | None) -> str:
    if not r:
        return "-"
    if "error" in r:
        return "ERROR " + r["error"][:80]
    return (f"{r['lp_psnr']:.2f} dB, det {r['detail']:.2f}, bnd {r['boundary']:.2f}, ghost {r['ghost']:+.2f}, "
            f"{r['seconds']:.1f}s")


def _ok(cases: list[dict], who: str) -> list[dict]:
    return [c[who] for c in cases if c.get(who) and "error" not in c[who]]


def table(cases: list[dict], who: tuple[str, ...]) -> str:
    head = "| photo | split | r px |" + "".join(
        f" {n} lpPSNR | {n} detail | {n} boundary | {n} ghost | {n} s |" for n in who)
    lines = [head, "|---|---|--:|" + "--:|" * (5 * len(who))]
    for c in cases:
        row = f"| {c['photo']} | {c['split']} | {c['radius']} |"
        for n in who:
            r = c.get(n)
            if not r or "error" in r:
                row += " ERR |" * 5
                continue
            row += (f" {r['lp_psnr']:.2f} | {r['detail']:.2f} | {r['boundary']:.2f} | {r['ghost']:+.2f} "
                    f"| {r['seconds']:.1f} |")
        lines.append(row)
    return "\n".join(lines)


def summary(cases: list[dict], who: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
    lines = ["| who | cases | errors | median lpPSNR dB | detail min-max | boundary min-max | max abs ghost "
             "| black px | r=420 s max |", "|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    stats: dict[str, Any] = {}
    for n in who:
        rs = _ok(cases, n)
        errors = sum(1 for c in cases if c.get(n) and "error" in c[n])
        if not rs:
            lines.append(f"| {n} | {len(cases)} | {errors} | - | - | - | - | - | - |")
            continue
        big = [c[n]["seconds"] for c in cases if c["radius"] == 420 and c.get(n) and "error" not in c[n]]
        st = {"median_lp_psnr": statistics.median(r["lp_psnr"] for r in rs),
              "detail": (min(r["detail"] for r in rs), max(r["detail"] for r in rs)),
              "boundary": (min(r["boundary"] for r in rs), max(r["boundary"] for r in rs)),
              "ghost": max(abs(r["ghost"]) for r in rs), "black": sum(r["black"] for r in rs),
              "r420_s": max(big) if big else None, "errors": errors, "cases": len(rs)}
        stats[n] = st
        lines.append(f"| {n} | {len(cases)} | {errors} | {st['median_lp_psnr']:.2f} | {st['detail'][0]:.2f}-"
                     f"{st['detail'][1]:.2f} | {st['boundary'][0]:.2f}-{st['boundary'][1]:.2f} | "
                     f"{st['ghost']:.2f} | {st['black']} | {'-' if big == [] else format(max(big), '.1f')} |")
    return "\n".join(lines), stats


def split_table(cases: list[dict], who: tuple[str, ...]) -> str:
    """Per split (tuning / held-out / all): median lpPSNR and the cases in each target range, per method."""
    lo_d, hi_d = TARGETS["detail"]
    lo_b, hi_b = TARGETS["boundary"]
    lines = ["| who | split | cases | median lpPSNR dB | ghost <= 1 | detail 0.8-1.25 | boundary 0.85-1.2 "
             "| r=420 s max |", "|---|---|--:|--:|--:|--:|--:|--:|"]
    for n in who:
        for split in ("tuning", "held-out", "all"):
            cs = [c for c in cases if (split == "all" or c["split"] == split) and c.get(n) and "error" not in c[n]]
            if not cs:
                continue
            rs = [c[n] for c in cs]
            big = [c[n]["seconds"] for c in cs if c["radius"] == 420]
            lines.append(
                f"| {n} | {split} | {len(rs)} | {statistics.median(r['lp_psnr'] for r in rs):.2f} | "
                f"{sum(abs(r['ghost']) <= TARGETS['ghost'] for r in rs)} | "
                f"{sum(lo_d <= r['detail'] <= hi_d for r in rs)} | {sum(lo_b <= r['boundary'] <= hi_b for r in rs)} | "
                f"{format(max(big), '.1f') if big else '-'} |")
    return "\n".join(lines)


def verdict(stats: dict[str, Any], cases: list[dict]) -> list[str]:
    """The done-when items of issue 10, each met or missed."""
    o = stats.get("ours")
    if not o:
        return ["ours: no successful case"]
    out = []
    anchors = [stats[a]["median_lp_psnr"] for a in ("telea", "pm1024") if a in stats]
    out.append(("n/a (no anchor in this run)" if not anchors else "met" if o["median_lp_psnr"] > max(anchors)
                else "MISSED")
               + f": median lpPSNR {o['median_lp_psnr']:.2f} dB vs anchors "
               + ", ".join(f"{a} {stats[a]['median_lp_psnr']:.2f}" for a in ("telea", "pm1024") if a in stats))
    out.append(("met" if o["ghost"] <= TARGETS["ghost"] else "MISSED") + f": max |ghost| {o['ghost']:.2f} <= 1.0")
    lo, hi = TARGETS["detail"]
    out.append(("met" if lo <= o["detail"][0] and o["detail"][1] <= hi else "MISSED")
               + f": detail {o['detail'][0]:.2f}-{o['detail'][1]:.2f} in {lo}-{hi}")
    lo, hi = TARGETS["boundary"]
    out.append(("met" if lo <= o["boundary"][0] and o["boundary"][1] <= hi else "MISSED")
               + f": boundary {o['boundary'][0]:.2f}-{o['boundary'][1]:.2f} in {lo}-{hi}")
    if o["r420_s"] is not None:
        out.append(("met" if o["r420_s"] <= TARGETS["seconds_4k_r420"] else "MISSED")
                   + f": slowest 4K r=420 removal {o['r420_s']:.1f} s <= 15 s")
    if o["errors"]:
        out.append(f"MISSED: {o['errors']} cases failed")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", nargs="*")
    ap.add_argument("--radii", nargs="*", type=int, default=list(RADII))
    ap.add_argument("--who", nargs="*", default=list(WHO), choices=WHO)
    ap.add_argument("--method", help="classical engine method for 'ours' (default: the engine's default)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="more classical engine options for 'ours', e.g. patch_size=5")
    ap.add_argument("--quick", action="store_true", help="2 photos, radii 120 and 420")
    ap.add_argument("--json", type=Path, help="write all cases as JSON")
    ap.add_argument("--write", action="store_true", help="update the removal section of docs/benchmarks.md")
    ap.add_argument("--from-json", type=Path, metavar="PATH",
                    help="report (and --write) the cases of an earlier --json run instead of running; its "
                         "recorded command, machine and load are used")
    args = ap.parse_args(argv)
    photos = ["seeding", "fossa"] if args.quick and not args.photos else args.photos
    radii = (120, 420) if args.quick else tuple(args.radii)
    options: dict[str, Any] = {"method": args.method} if args.method else {}
    for kv in args.set:
        key, _, value = kv.partition("=")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        cases, cmd, machine, load = saved["cases"], saved["command"], saved["machine"], saved["load"]
        who = tuple(n for n in WHO if any(n in c for c in cases))
    else:
        commit = source_state()
        load0 = os.getloadavg()
        t0 = time.perf_counter()
        who = tuple(args.who)
        cases = run(photos, radii, who, options)
        load1 = os.getloadavg()
        cmd = "python bench/removal.py " + " ".join(argv if argv is not None else sys.argv[1:])
        load = f"load average {load0[0]:.2f} at start, {load1[0]:.2f} at end ({len(os.sched_getaffinity(0))} CPUs)"
        machine = machine_line(commit)
    tab = table(cases, who)
    summ, stats = summary(cases, who)
    splits = split_table(cases, who)
    ver = verdict(stats, cases)
    print(tab + "\n\n" + summ + "\n\n" + splits + "\n\n" + "\n".join("- " + v for v in ver))
    print(f"\n{machine} {load}" + ("" if args.from_json else f"; wall {time.perf_counter() - t0:.0f} s."))
    if args.json and not args.from_json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"cases": cases, "stats": stats, "verdict": ver, "command": cmd.strip(),
                                         "machine": machine, "load": load}, indent=1, default=float))
    if args.write:
        body = (f"## Paste-then-remove (issue 10, `bench/removal.py`)\n\n`{cmd.strip()}` — {machine} "
                f"{load}. Method: an object cut from another benchmark photo (random blob, 2 px feather) is pasted "
                f"and removed with the blob grown by {GROW} px; the truth is the photo before pasting. ours = "
                "`crispedit.edit(..., engine=\"classical\")` (full harness); telea = OpenCV Telea on the whole "
                "image (IOPaint's cv2 model); pm1024 = PatchMatch at 1024 px, upscaled and pasted (InvokeAI's "
                "infill). Metrics are defined in the script's docstring.\n\n" + summ + "\n\n" + splits + "\n\n"
                + "\n".join("- " + v for v in ver) + "\n\n" + tab + "\n")
        update_doc(f"removal{'-' + args.method if args.method else ''}", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
