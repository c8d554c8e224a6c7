"""Speed and memory benchmark of the harness (issue 2 "Tests and numbers").

1. A 4K edit (a 3840x2160 crop of a real photo, JPEG in, PNG out) with the classical engine, split into decode,
   plan, engine, composite and encode (``result.info['timings']`` from the harness, plus the encode timed here).
   The I/O floor is decoding the same file plus a fast lossless PNG encode of it (``crispedit.io``).
   Target: harness time (everything but the engine) <= 2 x the I/O floor.
2. Peak RSS of an 8K (7680x4320: the photo upscaled, fine for a memory test only) edit, decode to PNG encode,
   measured in a subprocess with ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``. Target <= 1.5 GB.

Usage::

    .venv/bin/python bench/speed.py            # prints markdown
    .venv/bin/python bench/speed.py --write    # also updates docs/benchmarks.md
    .venv/bin/python bench/speed.py --runs 5 --no-8k
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from photos import get_photo_info  # noqa: E402
from zoom import DOC, ROOT, blob_shape, load_rgb, machine_line, source_state, update_doc  # noqa: E402

STAGES = ("decode", "load_engine", "plan", "engine", "composite", "encode")
TARGET_RATIO = 2.0
TARGET_RSS_MB = 1500.0  # 1.5 GB, decimal


def _center_mask(h: int, w: int, r: int, seed: int = 0) -> np.ndarray:
    shape = blob_shape(r, np.random.default_rng(seed))
    bh, bw = shape.shape
    m = np.zeros((h, w), np.uint8)
    y, x = (h - bh) // 2 + h // 10, (w - bw) // 2 - w // 10
    m[y:y + bh, x:x + bw] = shape.astype(np.uint8) * 255
    return m


def prepare(tmp: Path, photo: str = "seeding") -> dict[str, Path]:
    """Write the 4K and 8K inputs and their masks into ``tmp``."""
    (_, path), = get_photo_info([photo])
    img = load_rgb(path)
    h, w = img.shape[:2]
    y0, x0 = (h - 2160) // 2, (w - 3840) // 2
    four_k = np.ascontiguousarray(img[y0:y0 + 2160, x0:x0 + 3840])
    files = {"4k": tmp / "in-4k.jpg", "4k_mask": tmp / "mask-4k.png",
             "8k": tmp / "in-8k.jpg", "8k_mask": tmp / "mask-8k.png"}
    Image.fromarray(four_k).save(files["4k"], quality=95, subsampling=0)
    Image.fromarray(_center_mask(2160, 3840, 400)).save(files["4k_mask"])
    eight_k = cv2.resize(img, (7680, 4320), interpolation=cv2.INTER_CUBIC)
    del img
    Image.fromarray(eight_k).save(files["8k"], quality=92)
    del eight_k
    Image.fromarray(_center_mask(4320, 7680, 800)).save(files["8k_mask"])
    return files


def _cpu() -> float:
    """CPU seconds (user + sys) of this process so far, all threads."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _classical_counted() -> tuple[Any, list[float]]:
    """The classical engine, its ``inpaint`` wrapped to add up the CPU seconds it takes."""
    from crispedit.engines.base import get_engine

    eng = get_engine("classical")
    spent = [0.0]
    inner = eng.inpaint

    def inpaint(*args: Any, **kwargs: Any) -> Any:
        c = _cpu()
        try:
            return inner(*args, **kwargs)
        finally:
            spent[0] += _cpu() - c

    eng.inpaint = inpaint
    return eng, spent


#: The composite's steps (module, attribute the harness calls through): their CPU seconds are reported one by one.
STEPS = (("compositing", "tone_match"), ("harness", "seam_correct"), ("compositing", "match_sharpness"),
         ("compositing", "cap_detail"), ("compositing", "match_grain"), ("compositing", "synthesise_detail"),
         ("compositing", "transfer_detail"), ("compositing", "multiband_blend"))


def _steps_counted() -> tuple[dict[str, float], Any]:
    """Wrap the composite's steps (:data:`STEPS`) to add up their CPU seconds; returns the sums and an undo."""
    import importlib

    spent: dict[str, float] = {}
    undo = []
    for mod_name, attr in STEPS:
        mod = importlib.import_module(f"crispedit.{mod_name}")
        inner = getattr(mod, attr)

        def wrapped(*args: Any, _inner: Any = inner, _name: str = attr, **kwargs: Any) -> Any:
            c = _cpu()
            try:
                return _inner(*args, **kwargs)
            finally:
                spent[_name] = spent.get(_name, 0.0) + _cpu() - c

        setattr(mod, attr, wrapped)
        undo.append((mod, attr, inner))
    return spent, lambda: [setattr(m, a, f) for m, a, f in undo]


def one_edit(image: Path, mask: Path, out: Path) -> dict[str, float]:
    """Edit with the classical engine and encode; seconds per stage (harness timings + encode + wall), the
    CPU seconds (user + sys) of the harness (edit and encode less the engine's calls) and of each composite step
    (``cpu:<step>``)."""
    import crispedit
    from crispedit.io import save_image

    eng, engine_cpu = _classical_counted()
    steps, undo = _steps_counted()
    c, t = _cpu(), time.perf_counter()
    try:
        result = crispedit.edit(str(image), str(mask), engine=eng, seed=0)
    finally:
        undo()
    t_edit = time.perf_counter() - t
    t = time.perf_counter()
    if out.exists():
        out.unlink()
    save_image(result.source, out, array=result.array)
    t_enc = time.perf_counter() - t
    st = dict((result.info or {}).get("timings") or {})
    st["encode"] = t_enc
    st["edit_wall"] = t_edit
    st["total_wall"] = t_edit + t_enc
    st["harness_cpu"] = _cpu() - c - engine_cpu[0]
    st.update({f"cpu:{k}": v for k, v in steps.items()})
    return st


def io_floor(image: Path, out: Path) -> dict[str, float]:
    from crispedit.io import load_image, save_image

    c, t = _cpu(), time.perf_counter()
    data = load_image(str(image))
    t_dec = time.perf_counter() - t
    if out.exists():
        out.unlink()
    t = time.perf_counter()
    save_image(data, out)
    return {"decode": t_dec, "encode": time.perf_counter() - t, "cpu": _cpu() - c}


def harness_seconds(st: dict[str, float]) -> float:
    """Everything but the engine: the edit's wall time minus the engine, plus the encode."""
    return st["edit_wall"] - st.get("engine", 0.0) + st["encode"]


def bench_4k(files: dict[str, Path], tmp: Path, runs: int) -> dict[str, Any]:
    edits, floors = [], []
    for i in range(runs):
        floors.append(io_floor(files["4k"], tmp / "floor.png"))
        edits.append(one_edit(files["4k"], files["4k_mask"], tmp / "out-4k.png"))
        print(f"  4K run {i + 1}/{runs}: harness {harness_seconds(edits[-1]):.2f} s, "
              f"I/O floor {sum(floors[-1].values()):.2f} s", file=sys.stderr, flush=True)
    keys = sorted({k for e in edits for k in e})
    med = {k: statistics.median(e.get(k, 0.0) for e in edits) for k in keys}
    floor = {k: statistics.median(f[k] for f in floors) for k in ("decode", "encode", "cpu")}
    harness = statistics.median(harness_seconds(e) for e in edits)
    return {"stages": med, "floor": floor, "harness": harness, "floor_total": floor["decode"] + floor["encode"],
            "ratio": harness / (floor["decode"] + floor["encode"]), "runs": runs,
            "harness_cpu": med["harness_cpu"], "floor_cpu": floor["cpu"], "load": os.getloadavg()[0]}


def bench_8k(files: dict[str, Path], tmp: Path) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(files["8k"]), str(files["8k_mask"]),
           str(tmp / "out-8k.png")]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    r = subprocess.run(cmd, capture_output=True, text=True)
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if r.returncode != 0:
        return {"error": r.stderr.strip()[-600:]}
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res["peak_rss_mb"] = peak_kb * 1024 / 1e6
    res["earlier_children_kb"] = before
    return res


def report(r4: dict[str, Any] | None, r8: dict[str, Any] | None) -> str:
    out = []
    if r4:
        s = r4["stages"]
        out.append(f"4K edit (3840x2160 JPEG in, PNG out, classical engine, blob mask r~400 px), median of "
                   f"{r4['runs']} runs:\n")
        out.append("| stage | seconds |\n|---|--:|")
        for k in STAGES:
            if k in s:
                out.append(f"| {k} | {s[k]:.3f} |")
        other = s["edit_wall"] - sum(s.get(k, 0.0) for k in STAGES if k != "encode")
        out.append(f"| other (inside edit, untimed) | {other:.3f} |")
        out.append(f"| **harness (all but engine)** | **{r4['harness']:.3f}** |")
        out.append(f"| I/O floor: decode {r4['floor']['decode']:.3f} + PNG encode {r4['floor']['encode']:.3f} "
                   f"| {r4['floor_total']:.3f} |")
        ok = "meets" if r4["ratio"] <= TARGET_RATIO else "MISSES"
        out.append(f"| **harness / I/O floor** (target <= {TARGET_RATIO:g}) | **{r4['ratio']:.2f}** ({ok}) |")
        out.append(f"\nCPU seconds (user + sys, all threads; median): harness {r4['harness_cpu']:.3f}, I/O floor "
                   f"{r4['floor_cpu']:.3f}, ratio {r4['harness_cpu'] / r4['floor_cpu']:.2f}; 1-min load average "
                   f"after the runs {r4['load']:.1f} (wall times stretch with the load on a shared machine).")
        parts = [f"{attr} {s[f'cpu:{attr}']:.3f}" for _, attr in STEPS if f"cpu:{attr}" in s]
        if parts:
            out.append(f"\nComposite steps, CPU seconds (median): {', '.join(parts)}.")
    if r8:
        out.append("")
        if "error" in r8:
            out.append(f"8K edit (7680x4320): FAILED: `{r8['error'][-300:]}`")
        else:
            ok = "meets" if r8["peak_rss_mb"] <= TARGET_RSS_MB else "MISSES"
            out.append(f"8K edit (7680x4320 upscaled photo, blob mask r~800 px, decode to PNG encode, subprocess): "
                       f"peak RSS **{r8['peak_rss_mb']:.0f} MB** (target <= {TARGET_RSS_MB:.0f} MB: {ok}); "
                       f"wall {r8['total_wall']:.1f} s (engine {r8.get('engine', 0.0):.1f} s).")
    return "\n".join(out)


def child(image: str, mask: str, out: str) -> None:
    st = one_edit(Path(image), Path(mask), Path(out))
    print(json.dumps(st))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-8k", action="store_true")
    ap.add_argument("--no-4k", action="store_true")
    ap.add_argument("--write", action="store_true", help="update the section in docs/benchmarks.md")
    ap.add_argument("--child", nargs=3, metavar=("IMAGE", "MASK", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    commit = source_state()  # git children are tiny; ru_maxrss of children is a maximum, the 8K edit sets it
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="crispedit-speed-") as d:
        tmp = Path(d)
        files = prepare(tmp)
        r8 = None if args.no_8k else bench_8k(files, tmp)  # first: the only child whose RSS we read
        r4 = None if args.no_4k else bench_4k(files, tmp, args.runs)
    text = report(r4, r8)
    print(text)
    if args.write:
        argv_s = " ".join(a for a in (argv if argv is not None else sys.argv[1:]) if a != "--write")
        body = (f"## Speed and memory\n\n`{('python bench/speed.py ' + argv_s).strip()}`" +
                f" ({time.perf_counter() - t0:.0f} s). {machine_line(commit)}\n\n{text}\n")
        update_doc("speed", body)
        print(f"\nwrote {DOC.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
