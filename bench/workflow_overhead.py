"""Workflow runner overhead and the cost of a cache hit on a 4K image input.

1. A 12-node graph of trivial nodes (each returns a number at once): the runner's own time per run (validation,
   cache keys, cache lookups and writes, scheduling) = wall time of ``run_workflow`` minus the time spent inside
   the node functions. Measured for a first run (cache empty: 12 entries written), a fully cached run, and a
   ``--no-cache`` run; median of ``--repeat`` runs after one warm-up (imports are reported separately).
   Target: < 50 ms.
2. A 4K (3840x2160) PNG through LoadImage -> MaskFromShape -> Inpaint -> SaveImage with a trivial engine: the
   second run must not decode the image; its cost is the blake2b hash of the input file plus cache lookups.
   Reported next to the decode time of the same file.

    python bench/workflow_overhead.py [--repeat 20] [--json out/workflow_overhead.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

t_import = time.perf_counter()
from crispedit.workflow.library import register_node  # noqa: E402
from crispedit.workflow.runner import file_hash, run_workflow  # noqa: E402
from crispedit.workflow.schema import load_workflow  # noqa: E402
from crispedit.workflow.types import NodeType, Param, Port  # noqa: E402

IMPORT_S = time.perf_counter() - t_import


def _register_trivial() -> None:
    register_node(NodeType("BenchConst", "A number.", lambda ctx, value: {"out": value},
                           outputs=(Port("out", "number"),), params=(Param("value", float, 0.0, "the number"),)),
                  replace=True)
    register_node(NodeType("BenchAdd", "a + b + k.", lambda ctx, a, b, k: {"out": a + (b or 0) + k},
                           inputs=(Port("a", "number"), Port("b", "number", optional=True)),
                           outputs=(Port("out", "number"),), params=(Param("k", float, 0.0, "added"),)),
                  replace=True)


def twelve_nodes(salt: float) -> dict:
    """2 sources, 10 adders in a braided chain (every node has 1-2 inputs)."""
    nodes = {"s0": {"type": "BenchConst", "params": {"value": salt}},
             "s1": {"type": "BenchConst", "params": {"value": salt + 0.5}}}
    prev, prev2 = "s0", "s1"
    for i in range(10):
        name = f"n{i}"
        nodes[name] = {"type": "BenchAdd", "inputs": {"a": prev, "b": prev2}, "params": {"k": float(i)}}
        prev2, prev = prev, name
    return {"version": 1, "name": "bench-12", "nodes": nodes}


def overhead(repeat: int) -> dict:
    _register_trivial()
    out: dict[str, list[float]] = {"first_run_ms": [], "cached_run_ms": [], "no_cache_ms": [], "validate_ms": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "cache"
        run_workflow(twelve_nodes(-1.0), cache_root=root)  # warm-up: imports, first validation
        for i in range(repeat):
            wf = twelve_nodes(float(i))
            t = time.perf_counter()
            load_workflow(wf)
            out["validate_ms"].append((time.perf_counter() - t) * 1000)
            r1 = run_workflow(wf, cache_root=root)
            assert len(r1.ran()) == 12
            r2 = run_workflow(wf, cache_root=root)
            assert r2.ran() == []
            r3 = run_workflow(wf, cache=False)
            out["first_run_ms"].append(r1.overhead_seconds * 1000)
            out["cached_run_ms"].append(r2.overhead_seconds * 1000)
            out["no_cache_ms"].append(r3.overhead_seconds * 1000)
    return {k: round(statistics.median(v), 2) for k, v in out.items()} | {
        "max_first_run_ms": round(max(out["first_run_ms"]), 2)}


class _TrivialEngine:
    working_size = None
    name = "bench-trivial"

    def inpaint(self, image, mask, prompt=None, *, seed=None, strength=1.0, region=None):
        return image.convert("RGB")


def cache_hit_4k() -> dict:
    import numpy as np
    from PIL import Image

    import crispedit.io as io
    from crispedit.engines.base import register_engine

    register_engine("bench-trivial", lambda **kw: _TrivialEngine())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rng = np.random.default_rng(0)
        small = rng.integers(0, 255, (270, 480, 3), np.uint8)
        img = np.asarray(Image.fromarray(small).resize((3840, 2160), Image.BICUBIC))
        img = np.clip(img.astype(np.int16) + rng.integers(-6, 7, img.shape), 0, 255).astype(np.uint8)
        src = tmp / "photo4k.png"
        Image.fromarray(img).save(src, compress_level=1)
        wf = {"version": 1, "nodes": {
            "photo": {"type": "LoadImage", "params": {"path": str(src)}},
            "area": {"type": "MaskFromShape", "inputs": {"image": "photo"},
                     "params": {"shape": "ellipse", "box": [0.4, 0.4, 0.6, 0.7], "units": "fraction"}},
            "edit": {"type": "Inpaint", "inputs": {"image": "photo", "mask": "area"},
                     "params": {"engine": "bench-trivial", "seed": 1, "tone": False, "grain": False}},
            "save": {"type": "SaveImage", "inputs": {"image": "edit.image"}, "params": {"path": str(tmp / "o.png")}},
        }}
        root = tmp / "cache"
        t = time.perf_counter()
        first = run_workflow(wf, cache_root=root)
        first_s = time.perf_counter() - t
        decodes: list[int] = []
        real = io.load_image

        def counting(*a, **k):
            decodes.append(1)
            return real(*a, **k)

        io.load_image = counting
        try:
            os.utime(src)  # new mtime: the content hash is recomputed, not taken from the per-process memo
            t = time.perf_counter()
            hit = run_workflow(wf, cache_root=root)
            hit_s = time.perf_counter() - t
            t = time.perf_counter()
            only_save = run_workflow(wf, cache_root=root, overrides=[f"save.path={tmp / 'o2.png'}"])
            only_save_s = time.perf_counter() - t
        finally:
            io.load_image = real
        os.utime(src)
        t = time.perf_counter()
        file_hash(src)
        hash_s = time.perf_counter() - t
        t = time.perf_counter()
        real(src)
        decode_s = time.perf_counter() - t
        return {
            "image": "3840x2160 RGB PNG", "file_mb": round(src.stat().st_size / 1e6, 1),
            "first_run_s": round(first_s, 3), "first_run_nodes": {r.node: round(r.seconds, 3) for r in first.records},
            "cache_hit_run_ms": round(hit_s * 1000, 1), "cache_hit_statuses": {r.node: r.status for r in hit.records},
            "decodes_during_cache_hit": len(decodes),
            "blake2b_hash_ms": round(hash_s * 1000, 1), "decode_ms": round(decode_s * 1000, 1),
            "only_output_changed_run_ms": round(only_save_s * 1000, 1), "only_output_changed_ran": only_save.ran(),
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    res = {"import_s": round(IMPORT_S, 3), "overhead_12_nodes": overhead(args.repeat), "cache_hit_4k": cache_hit_4k()}
    o, c = res["overhead_12_nodes"], res["cache_hit_4k"]
    print(f"imports (crispedit.workflow, pydantic): {res['import_s'] * 1000:.0f} ms, once per process")
    print(f"12-node graph, runner overhead (median of {args.repeat}): first run {o['first_run_ms']} ms "
          f"(max {o['max_first_run_ms']}), cached run {o['cached_run_ms']} ms, --no-cache {o['no_cache_ms']} ms; "
          f"validation alone {o['validate_ms']} ms  [target < 50 ms]")
    print(f"4K cache hit: {c['cache_hit_run_ms']} ms for the whole run, {c['decodes_during_cache_hit']} decodes; "
          f"blake2b of the {c['file_mb']} MB input {c['blake2b_hash_ms']} ms vs decode {c['decode_ms']} ms; "
          f"statuses {c['cache_hit_statuses']}")
    print(f"4K, only the output path changed: {c['only_output_changed_run_ms']} ms, ran {c['only_output_changed_ran']} "
          f"(first run {c['first_run_s']} s)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2))
    ok = o["first_run_ms"] < 50 and o["cached_run_ms"] < 50 and c["decodes_during_cache_hit"] == 0
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
