"""Dust spots and a long scratch on a real 5K photo: time, peak RSS, how far from the mask pixels change.

Usage::

    PYTHONPATH=src python bench/dust.py [--photo seeding] [--spots 100 400] [--scratch] [--engine classical|oracle]

Each case runs in its own process (peak RSS is per process) and prints one JSON line: the case, image size,
wall time of ``crispedit.edit`` (the harness plus engine), peak RSS of the process, the number of changed
pixels, the largest distance (px) of a changed pixel from the mask, and the regions the harness planned.
Masks are random (``numpy.random.default_rng(seed)``): dust = discs of radius 3-8 px; scratch = a 7 px wide
sine curve from the left edge to the right edge across the whole photo. ``--engine oracle`` runs
``bench/oracle.py``'s SD-like engine (working size 512: nearby spots share crops; the whole crop comes back
blurred and tone-drifted, so the blend band is exercised).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np


def dust_mask(h: int, w: int, n: int, seed: int = 0, r_min: int = 3, r_max: int = 8) -> np.ndarray:
    """``n`` discs of radius ``r_min``-``r_max`` px at random places."""
    rng = np.random.default_rng(seed)
    m = np.zeros((h, w), np.uint8)
    for _ in range(n):
        r = int(rng.integers(r_min, r_max + 1))
        cv2.circle(m, (int(rng.integers(r, w - r)), int(rng.integers(r, h - r))), r, 1, -1)
    return m.astype(bool)


def scratch_mask(h: int, w: int, width: int = 7, seed: int = 0) -> np.ndarray:
    """A ``width`` px wide curve across the whole image, top-left to bottom-right with a sine wobble."""
    rng = np.random.default_rng(seed)
    xs = np.arange(0, w, 4, dtype=np.float64)
    ys = 0.1 * h + 0.8 * h * xs / w + 0.05 * h * np.sin(xs / w * 2 * np.pi * (2 + rng.random()))
    m = np.zeros((h, w), np.uint8)
    cv2.polylines(m, [np.stack([xs, ys], 1).round().astype(np.int32)], False, 1, width)
    return m.astype(bool)


def changed_distance(before: np.ndarray, after: np.ndarray, mask: np.ndarray) -> tuple[int, float]:
    """Changed pixels and the largest distance (px, exact Euclidean) of one from the mask."""
    changed = np.any(before != after, axis=2) if before.ndim == 3 else before != after
    if not changed.any():
        return 0, 0.0
    d = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return int(changed.sum()), float(d[changed].max())


def run_case(photo: str, case: str, n: int, engine: str, seed: int) -> dict:
    import crispedit
    from crispedit.io import load_image

    data = load_image(photo)
    img = data.array
    h, w = img.shape[:2]
    mask = scratch_mask(h, w, seed=seed) if case == "scratch" else dust_mask(h, w, n, seed=seed)
    eng: object = engine
    if engine == "oracle":  # an engine that behaves like SD 1.5 (working size 512, VAE blur, tone drift)
        sys.path.insert(0, str(Path(__file__).parent))
        from oracle import OracleEngine  # type: ignore

        eng = OracleEngine(img[..., :3], working_size=512, seed=seed)
    t = time.perf_counter()
    res = crispedit.edit(data, mask, engine=eng, seed=seed)
    dt = time.perf_counter() - t
    n_changed, dmax = changed_distance(img, res.array, mask)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB (Linux)
    regions = res.info["regions"]
    return {"case": case if case == "scratch" else f"dust {n}", "size": [w, h], "engine": engine,
            "seconds": round(dt, 2), "peak_rss_mib": round(rss), "changed_px": n_changed,
            "max_changed_distance_px": round(dmax, 2), "regions": len(regions),
            "largest_crop": max(max(r["size"]) for r in regions),
            "bands": sorted({b for r in regions for b in r.get("bands", [r["band"]])}), "timings": res.info["timings"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photo", default="seeding")
    ap.add_argument("--spots", type=int, nargs="*", default=[100, 400])
    ap.add_argument("--scratch", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--engine", default="classical")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args()
    photo = a.photo
    if not Path(photo).is_file():
        sys.path.insert(0, str(Path(__file__).parent))
        from photos import get_photo_info  # type: ignore

        photo = str(get_photo_info([a.photo])[0][1])
    if a.case:
        print(json.dumps(run_case(photo, a.case, a.n, a.engine, a.seed)))
        return
    cases = [("dust", n) for n in a.spots] + ([("scratch", 0)] if a.scratch else [])
    for case, n in cases:
        cmd = [sys.executable, __file__, "--photo", photo, "--case", case, "--n", str(n), "--engine", a.engine,
               "--seed", str(a.seed)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode:
            print(json.dumps({"case": case, "n": n, "error": out.stderr.strip().splitlines()[-1:]}))
        else:
            print(out.stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
