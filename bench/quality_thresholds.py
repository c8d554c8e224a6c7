"""Measure the quality gate on unedited photos and on planted defects; print what the thresholds rest on.

    .venv/bin/python bench/quality_thresholds.py [PHOTO.jpg ...] [--masks 3] [--quick]

Photos default to /work/bench_photos/*.jpg (real 4K photos) plus one generated photo-like image; nothing here is
needed by the tests. For each photo, elliptic masks of several sizes are placed at seeded random spots; each mask
gets: the unedited image, a clean edit (fresh grain of 0.8 levels), and every planted defect of
``crispedit.quality.defects.DEFECTS`` at each strength, plus feathered tone steps. The table and the summary go
to stdout; the numbers are recorded in docs/quality.md.
"""

from __future__ import annotations

import argparse
import glob
import math
import sys
import time
import zlib
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from crispedit.quality import defects as D
from crispedit.quality.verdict import DEFAULT_THRESHOLDS, assess


def load(path: str) -> np.ndarray:
    im = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    return np.asarray(im)


def masks_for(h: int, w: int, n: int, seed: int) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    short = min(h, w)
    sizes = [0.05, 0.12, 0.25, 0.08, 0.18][:n]
    for i, frac in enumerate(sizes):
        r = frac * short
        cx = rng.uniform(r * 1.3 + 40, w - r * 1.3 - 40)
        cy = rng.uniform(r * 1.3 + 40, h - r * 1.3 - 40)
        out.append((f"ell{int(r)}", D.ellipse_mask(h, w, cx, cy, r * 1.25, r, rng.uniform(0, 180))))
    return out


def cases(img, m, clean=None, quick=False):
    yield "unedited", 0, img
    yield "clean_edit", 0, D.clean_edit(img, m)
    for name, (fn, strengths, _) in D.DEFECTS.items():
        if name == "noise_free_patch" and clean is None:
            if quick:
                continue
            clean = D.denoise_around(img, m, pad=48)
        for s in strengths:
            kw = {"clean": clean} if (name == "noise_free_patch" and clean is not None) else {}
            yield name, s, fn(img, m, s, **kw)
    for s in (3.0, 6.0, 12.0, 24.0):
        yield "tone_step_feathered", s, D.tone_step(img, m, s, feather=32)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("photos", nargs="*")
    ap.add_argument("--masks", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="skip non-local-means denoising on photos")
    ap.add_argument("--no-synthetic", action="store_true")
    args = ap.parse_args(argv)
    photos = args.photos or sorted(glob.glob("/work/bench_photos/*.jpg"))
    items = []
    if not args.no_synthetic:
        img, clean, _ = D.photo_like(1536, 2048, seed=11, return_parts=True)
        items.append(("synthetic", img, clean))
    for p in photos:
        items.append((Path(p).stem, load(p), None))
    rows = []
    print(f"{'image':28s} {'mask':8s} {'case':20s} {'str':>5s} {'verdict':7s} {'seam':>7s} {'local':>6s} "
          f"{'detail':>6s} {'noise':>6s} {'dE':>5s} {'dEo':>5s} {'brisq_in':>8s} {'brisq_out':>9s} {'t_s':>5s}")
    for name, img, clean in items:
        h, w = img.shape[:2]
        for mname, m in masks_for(h, w, args.masks, seed=zlib.crc32(name.encode()) % 1000):
            for case, s, ed in cases(img, m, clean, args.quick):
                t = time.perf_counter()
                r = assess(img, ed, m)
                dt = time.perf_counter() - t
                d = r.to_dict()
                rows.append((name, mname, case, s, d, dt))

                def g(k, fmt="{:7.2f}"):
                    v = d.get(k)
                    return fmt.format(v) if isinstance(v, (int, float)) and v is not None else " " * 4 + "n/a"

                print(f"{name[:28]:28s} {mname:8s} {case:20s} {s:5g} {r.verdict:7s} {g('seam_score')} "
                      f"{g('seam_local_max', '{:6.2f}')} {g('detail_ratio', '{:6.2f}')} {g('noise_ratio', '{:6.2f}')} "
                      f"{g('colour_delta_e', '{:5.2f}')} {g('colour_delta_e_original', '{:5.2f}')} {g('brisque_inside', '{:8.1f}')} {g('brisque_outside', '{:9.1f}')} "
                      f"{dt:5.2f}", flush=True)
    # ---- summary ------------------------------------------------------------------------------------------
    print("\nsummary (min / median / max over images and masks); fail = share failed by the default thresholds")
    groups = defaultdict(list)
    for name, mname, case, s, d, dt in rows:
        groups[(case, s)].append(d)
    keys = ["seam_score", "seam_local_max", "detail_ratio", "noise_ratio", "colour_delta_e", "colour_delta_e_original",
            "brisque_delta"]
    print(f"{'case':20s} {'str':>5s} " + " ".join(f"{k:>22s}" for k in keys) + "   fail")
    for (case, s), ds in groups.items():
        cols = []
        for k in keys:
            v = np.array([x.get(k) for x in ds if isinstance(x.get(k), (int, float))], float)
            cols.append(f"{v.min():6.2f}/{np.median(v):6.2f}/{v.max():6.2f}" if v.size else " " * 18 + "n/a")
        fails = sum(x["verdict"] == "fail" for x in ds)
        print(f"{case:20s} {s:5g} " + " ".join(f"{c:>22s}" for c in cols) + f"   {fails}/{len(ds)}")
    times = [dt for *_, dt in rows]
    print(f"\nassess time: median {np.median(times):.2f}s, max {max(times):.2f}s; thresholds {DEFAULT_THRESHOLDS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
