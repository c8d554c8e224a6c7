"""Do two source trees give the same quality reports? Dumps every number of :func:`assess` (unrounded) on the
planted-defect cases and the speed cases, then compares two dumps.

    PYTHONPATH=/path/to/tree-a/src python bench/quality_same.py dump -o /tmp/a.json
    PYTHONPATH=/path/to/tree-b/src python bench/quality_same.py dump -o /tmp/b.json
    python bench/quality_same.py compare /tmp/a.json /tmp/b.json [--rtol 1e-6]

``dump`` runs :func:`crispedit.quality.verdict.assess` on (1) the planted-defect cases of
bench/quality_thresholds.py (clean, good and planted edits, without crispedit's classical removal) on the tuning
photos given by ``--photos`` (default: painting and fossa) and (2) the cases of bench/quality_speed.py (one
ellipse, 400 dust spots, a speckle mask of thousands of components) at ``--sizes`` (default 4K and 8K). Each
report is stored whole (``QualityReport.to_dict`` without its timings) plus the unrounded metrics of the report
and of every region. ``compare`` lists every value that differs by more than ``--rtol`` (relative, with an
absolute floor of ``--rtol`` too) and exits 1 when there is any: the check that a speed change kept the reports.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _plain(x: Any) -> Any:
    """JSON-able, unrounded: numpy scalars and arrays to Python numbers and lists, non-finite floats to strings."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return _plain(x.tolist())
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return x if math.isfinite(x) else repr(x)
    if x is None or isinstance(x, str):
        return x
    return repr(x)


def _record(rep: Any) -> dict[str, Any]:
    d = rep.to_dict()
    d.pop("timings", None)
    return {"report": _plain(d), "metrics": _plain(rep.metrics), "regions": _plain(rep.regions),
            "worst_places": _plain(rep.worst_places)}


def _cases(args: argparse.Namespace):
    """(name, original, edited, mask) of the planted-defect and the speed cases."""
    import cv2
    import quality_speed
    import quality_thresholds as QT
    from photos import get_photo_info

    from crispedit.io import load_image

    info = {p.name: path for p, path in get_photo_info()}
    for name in args.photos:
        img = load_image(info[name]).array
        if img.ndim == 3 and img.shape[2] > 3:
            img = np.ascontiguousarray(img[:, :, :3])
        h, w = img.shape[:2]
        for mname, m in QT.masks_for(h, w, zlib.crc32(name.encode()) % 10_000):
            for _group, kind, s, _must, orig, ed in QT.cases(img, m, 0, None, engine=False):
                yield f"{name}/{mname}/{kind}/{s:g}", orig, ed, QT.oracle_mask(m) if kind == "good_oracle" else m
    if args.sizes:
        src = load_image(info["painting"]).array[:, :, :3]
        for size in args.sizes:
            w, h = (int(v) for v in size.split("x"))
            img = cv2.resize(src, (w, h), interpolation=cv2.INTER_AREA if w < src.shape[1] else cv2.INTER_CUBIC)
            from crispedit.quality import defects as D

            for mname, m in quality_speed.masks(h, w).items():
                yield f"speed/{size}/{mname}", img, D.tone_step(img, m, 6.0, feather=8), m


def dump(args: argparse.Namespace) -> int:
    import crispedit.quality.verdict as V

    out: dict[str, Any] = {"source": str(Path(V.__file__).resolve()), "cases": {}}
    for name, orig, ed, m in _cases(args):
        t = time.perf_counter()
        rep = V.assess(orig, ed, m)
        out["cases"][name] = _record(rep)
        print(f"{name:50s} {rep.verdict:10s} {time.perf_counter() - t:5.2f} s", flush=True)
    Path(args.output).write_text(json.dumps(out))
    print(f"wrote {args.output}: {len(out['cases'])} cases from {out['source']}")
    return 0


def _diff(a: Any, b: Any, rtol: float, path: str, found: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                found.append(f"{path}/{k}: only in {'second' if k not in a else 'first'}")
            else:
                _diff(a[k], b[k], rtol, f"{path}/{k}", found)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            found.append(f"{path}: {len(a)} vs {len(b)} items")
        for i, (x, y) in enumerate(zip(a, b)):
            _diff(x, y, rtol, f"{path}[{i}]", found)
    elif isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        if abs(a - b) > rtol * max(1.0, abs(a), abs(b)):
            found.append(f"{path}: {a!r} vs {b!r}")
    elif a != b:
        found.append(f"{path}: {a!r} vs {b!r}")


def compare(args: argparse.Namespace) -> int:
    a, b = (json.loads(Path(f).read_text()) for f in (args.first, args.second))
    found: list[str] = []
    _diff(a["cases"], b["cases"], args.rtol, "", found)
    for line in found[:200]:
        print(line)
    n = len(a["cases"])
    print(f"{n} vs {len(b['cases'])} cases; {len(found)} values differ by more than {args.rtol:g}"
          f" ({a['source']} vs {b['source']})")
    return 1 if found else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dump")
    d.add_argument("-o", "--output", required=True)
    d.add_argument("--photos", nargs="*", default=["painting", "fossa"])
    d.add_argument("--sizes", nargs="*", default=["3840x2160", "7680x4320"])
    c = sub.add_parser("compare")
    c.add_argument("first")
    c.add_argument("second")
    c.add_argument("--rtol", type=float, default=1e-6)
    args = ap.parse_args(argv)
    return dump(args) if args.cmd == "dump" else compare(args)


if __name__ == "__main__":
    sys.exit(main())
