"""Time of the quality gate (`assess`) at 4K and 8K, with one large mask, 400 dust spots and a speckle mask with
millions of contour pixels.

    PYTHONPATH=src python bench/quality_speed.py [--repeat 3]

The photo is the tuning photo "painting" (6000x4000) resized to 3840x2160 and 7680x4320; the edit is a feathered
6-level tone step inside the mask (so every metric runs). Prints the median wall time of ``--repeat`` runs and
the stage timings of the last, the median CPU time (user + sys of the process, all threads: on a shared machine
wall time includes waiting for a core) and the load average.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from photos import get_photo_info  # noqa: E402

from crispedit.io import load_image  # noqa: E402
from crispedit.quality import defects as D  # noqa: E402
from crispedit.quality.verdict import assess  # noqa: E402


def masks(h: int, w: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {"ellipse": D.ellipse_mask(h, w, 0.55 * w, 0.5 * h, 0.11 * w, 0.09 * w, 20)}
    dust = np.zeros((h, w), np.uint8)
    for x, y in zip(rng.integers(20, w - 20, 400), rng.integers(20, h - 20, 400)):
        cv2.circle(dust, (int(x), int(y)), int(rng.integers(3, 9) * w / 3840), 1, -1)
    out["dust400"] = dust.astype(bool)
    # speckle: thresholded smooth noise in the middle third: thousands of components, millions of contour px
    sp = np.zeros((h, w), bool)
    n = cv2.GaussianBlur(rng.normal(size=(h // 3, w // 3)).astype(np.float32), (0, 0), 2.0)
    sp[h // 3 : h // 3 + n.shape[0], w // 3 : w // 3 + n.shape[1]] = n > 0.15
    out["speckle"] = sp
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sizes", nargs="*", default=["3840x2160", "7680x4320"])
    args = ap.parse_args()
    path = [p for ph, p in get_photo_info() if ph.name == "painting"][0]
    src = load_image(path).array[:, :, :3]
    for size in args.sizes:
        w, h = (int(v) for v in size.split("x"))
        img = cv2.resize(src, (w, h), interpolation=cv2.INTER_AREA if w < src.shape[1] else cv2.INTER_CUBIC)
        for name, m in masks(h, w).items():
            ncomp = cv2.connectedComponents(m.astype(np.uint8))[0] - 1
            contour = int(np.count_nonzero(m ^ cv2.erode(m.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)))
            edited = D.tone_step(img, m, 6.0, feather=8)
            times, cpus = [], []
            for _ in range(args.repeat):
                c0, t = os.times(), time.perf_counter()
                rep = assess(img, edited, m)
                c1 = os.times()
                times.append(time.perf_counter() - t)
                cpus.append(c1.user - c0.user + c1.system - c0.system)
            stages = ", ".join(f"{k} {v:.2f}" for k, v in rep.timings.items() if k != "total")
            print(f"{size:10s} {name:8s} components {ncomp:6d} contour px {contour:9d}  assess median "
                  f"{np.median(times):.2f} s (min {min(times):.2f}, CPU user+sys median {np.median(cpus):.2f} s)  verdict {rep.verdict}  [{stages}]  "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
