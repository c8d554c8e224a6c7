"""Same edits, two source trees: how far apart are their outputs? (a guard for speed work on the harness)

``run`` edits the cases of ``bench/zoom.py --quick`` (photos seeding and sunset, blob masks r=150 and 500, every
engine variant of ``oracle.VARIANTS``) with the crispedit found on ``sys.path`` (set ``PYTHONPATH`` to the tree
under test) and stores, per case, the output inside the box of the changed pixels, that box, and the zoom metrics.
``compare`` reads two such folders and prints, per case, the largest absolute difference (8-bit levels) of the
outputs over the whole image (pixels outside both boxes equal the input in both runs) and the metrics side by side.

Usage::

    PYTHONPATH=/path/to/old/src python bench/harness_diff.py run out/old
    PYTHONPATH=src python bench/harness_diff.py run out/new
    python bench/harness_diff.py compare out/old out/new      # exit code 1 when any case differs by > 1 level
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from oracle import VARIANTS, OracleEngine  # noqa: E402
from photos import get_photo_info  # noqa: E402
from zoom import band_from_info, case_mask, load_rgb, metrics  # noqa: E402

PHOTOS = ("seeding", "sunset")
RADII = (150, 500)


def _changed_box(a: np.ndarray, b: np.ndarray) -> tuple[int, int, int, int]:
    """Box (x0, y0, x1, y1) of the pixels where ``a`` and ``b`` differ; (0, 0, 0, 0) when none do."""
    diff = np.any(a != b, axis=2)
    if not diff.any():
        return 0, 0, 0, 0
    ys, xs = np.flatnonzero(diff.any(axis=1)), np.flatnonzero(diff.any(axis=0))
    return int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1


def run(out_dir: Path, variants: tuple[str, ...]) -> None:
    import crispedit

    out_dir.mkdir(parents=True, exist_ok=True)
    for photo, path in get_photo_info(list(PHOTOS)):
        image = load_rgb(path)
        h, w = image.shape[:2]
        for r in RADII:
            mask = case_mask(photo.name, h, w, r)
            for v in variants:
                eng = OracleEngine.variant(v, image)
                t = time.perf_counter()
                res = crispedit.edit(image, mask, engine=eng, seed=0)
                dt = time.perf_counter() - t
                out = np.asarray(res.array)
                box = _changed_box(image, out)
                x0, y0, x1, y1 = box
                met = metrics(image, out, mask, band_from_info(res.info, mask))
                name = f"{photo.name}-r{r}-{v}"
                np.savez_compressed(out_dir / f"{name}.npz", crop=out[y0:y1, x0:x1], box=np.array(box))
                (out_dir / f"{name}.json").write_text(json.dumps({"metrics": met, "seconds": round(dt, 2)}))
                print(f"{name}: {dt:.1f} s, detail {met['detail']:.3f}, boundary {met['boundary']:.3f}, "
                      f"lpPSNR {met['lp_psnr']:.2f}", file=sys.stderr, flush=True)


def _full(image: np.ndarray, crop: np.ndarray, box: np.ndarray) -> np.ndarray:
    out = image.copy()
    x0, y0, x1, y1 = (int(v) for v in box)
    out[y0:y1, x0:x1] = crop
    return out


def compare(a: Path, b: Path, limit: float = 1.0) -> int:
    images = {photo.name: load_rgb(path) for photo, path in get_photo_info(list(PHOTOS))}
    worst = 0.0
    rows = ["| case | max abs diff (levels) | changed px | detail a / b | boundary a / b | lpPSNR a / b |",
            "|---|--:|--:|--:|--:|--:|"]
    for fa in sorted(a.glob("*.npz")):
        fb = b / fa.name
        if not fb.exists():
            continue
        image = images[fa.name.split("-r")[0]]
        za, zb = np.load(fa), np.load(fb)
        oa, ob = _full(image, za["crop"], za["box"]), _full(image, zb["crop"], zb["box"])
        d = np.abs(oa.astype(np.int16) - ob.astype(np.int16))
        worst = max(worst, float(d.max()))
        ma = json.loads(fa.with_suffix(".json").read_text())["metrics"]
        mb = json.loads(fb.with_suffix(".json").read_text())["metrics"]
        rows.append(f"| {fa.stem} | {int(d.max())} | {int(np.count_nonzero(d.max(axis=2)))} | "
                    f"{ma['detail']:.3f} / {mb['detail']:.3f} | {ma['boundary']:.3f} / {mb['boundary']:.3f} | "
                    f"{ma['lp_psnr']:.2f} / {mb['lp_psnr']:.2f} |")
    print("\n".join(rows))
    print(f"\nlargest difference: {worst:g} levels (limit {limit:g})")
    return 0 if worst <= limit else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("out", type=Path)
    r.add_argument("--variants", nargs="*", choices=list(VARIANTS))
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    c.add_argument("--limit", type=float, default=1.0)
    args = ap.parse_args(argv)
    if args.cmd == "run":
        run(args.out, tuple(args.variants or VARIANTS))
        return 0
    return compare(args.a, args.b, args.limit)


if __name__ == "__main__":
    raise SystemExit(main())
