"""Prepared GPU benchmark for a lent H100/H200: a 4K SD1.5 edit end to end, fp16, 25 steps (target <= 3 s).

    python bench/gpu.py                                   # on the GPU: 3840x2160, r=380 px, 25 steps, fp16
    python bench/gpu.py --steps 1 --size 1024x576 --dry   # anywhere: tiny random model, checks the script runs

Random full-size SD1.5 inpainting weights (``bench/sd15_speed.build_sd15_random``, created on the GPU: no
download, same compute as real weights) go into ``SD15Engine.from_pipeline``; ``crispedit.edit`` then runs the
whole edit: load, regions, engine calls, tone/grain/blend, with timings per stage. Measured:

1. one 512x512 inpaint call and the UNet step time (engine only);
2. the 4K edit with a 380-px-radius disk mask, ``detail="fast"`` and ``"native"`` (the CUDA default), warm;
3. a 4K whole-image edit (img2img through the tiled UNet and VAE; fp16, strength 0.35, ``--steps`` steps, a
   4-channel txt2img-style UNet; target <= 20 s on an H100), after a warm-up on 1280x720. Runs only on CUDA
   (or with ``--dry``, which uses the tiny model at the dry-run size).

Prints a markdown table and writes JSON to ``--json`` (default ``$OUT/gpu_bench.json`` when ``$OUT`` is set).
Sections are skipped once ``--budget`` seconds have passed, so the script fits a short device lease.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
if str(HERE.parent / "src") not in sys.path:
    sys.path.insert(0, str(HERE.parent / "src"))

from sd15_speed import build_sd15_random, disk_mask, machine, photo_like, pipeline_from, time_engine  # noqa: E402


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _peak_gib() -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def timed_edit(rgb: np.ndarray, mask: np.ndarray | None, engine: Any, repeats: int, warmup: bool = True,
               **options: Any) -> dict[str, Any]:
    """Warm-up once, then ``repeats`` timed ``crispedit.edit`` calls; returns the median and the last info."""
    import crispedit

    engine.calls.clear()
    if warmup:
        crispedit.edit(rgb, mask, "a wooden bench", engine=engine, seed=0, **options)
    times, res = [], None
    for i in range(repeats):
        _sync()
        t0 = time.perf_counter()
        res = crispedit.edit(rgb, mask, "a wooden bench", engine=engine, seed=i + 1, **options)
        _sync()
        times.append(time.perf_counter() - t0)
    info = res.info if res is not None else {}
    calls = info.get("engine_calls", [])
    out = np.asarray(res.image.convert("RGB")) if res is not None else None
    outside_ok = None
    if out is not None and mask is not None:
        far = ~_grow(mask, 256)
        outside_ok = bool(np.array_equal(out[far], rgb[far]))
    return {"seconds": float(np.median(times)), "runs": times, "engine_calls": len(calls),
            "engine_seconds": round(sum(c.get("seconds", 0.0) or 0.0 for c in calls), 3),
            "call_sizes": [c.get("size") for c in calls], "strengths": sorted({c.get("strength") for c in calls}),
            "timings": info.get("timings"), "detail": info.get("detail"), "identical_beyond_256px": outside_ok}


def _grow(mask: np.ndarray, r: int) -> np.ndarray:
    import cv2

    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.dilate(mask.astype(np.uint8), k) > 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--size", default="3840x2160", help="WxH of the edited image")
    ap.add_argument("--radius", type=int, default=None, help="mask radius in px (default 380, scaled with --size)")
    ap.add_argument("--dtype", default=None, help="fp16 (default on CUDA), bf16, fp32")
    ap.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--dry", action="store_true", help="tiny random model: checks the script, times nothing real")
    ap.add_argument("--photo", default=None, help="an image file to edit instead of the generated one")
    ap.add_argument("--budget", type=float, default=270.0, help="skip remaining sections after this many seconds")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from crispedit.engines.sd15 import SD15Engine

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.dry and device == "cpu":
        torch.set_num_threads(1)  # a tiny model only loses to thread spinning on shared cores
    if device == "cpu" and not args.dry:
        print("warning: no GPU; the full-size model on a CPU takes minutes per call (use --dry to check the script)",
              file=sys.stderr)
    w, h = (int(v) for v in args.size.lower().split("x"))
    radius = args.radius if args.radius is not None else max(8, round(380 * min(w / 3840, h / 2160)))
    results: dict[str, Any] = {"machine": machine(), "args": vars(args), "device": device, "radius": radius}

    t0 = time.perf_counter()
    engine = SD15Engine.from_pipeline(
        pipeline_from(build_sd15_random(9, scale="tiny" if args.dry else "full", device=device)),
        steps=args.steps, device=device, dtype=args.dtype)
    _sync()
    results["build_s"] = time.perf_counter() - t0
    results["dtype"] = str(engine.dtype).removeprefix("torch.")
    out_json = args.json or (os.path.join(os.environ["OUT"], "gpu_bench.json") if os.environ.get("OUT") else None)
    rows = _Rows(results, out_json)
    print(f"Machine: {results['machine']}\n\n| measure | value |\n|---|---|", flush=True)
    rows.append(("model", f"SD1.5 inpainting architecture ({'tiny, dry run' if args.dry else 'full'}), random "
                          f"weights, {device} {results['dtype']}, {args.steps} steps, DPM++ 2M Karras"))
    warm = not args.dry

    # 1. engine only
    r = time_engine(engine, size=256 if args.dry else 512, repeats=1 if args.dry else max(1, args.repeats))
    results["engine_512"] = r
    side = 256 if args.dry else 512
    rows.append((f"UNet step {side}x{side} (CFG batch 2)", f"{r['unet_step_s'] * 1000:.1f} ms"))
    rows.append((f"inpaint call {side}x{side}, {args.steps} steps", f"{r['call_s']:.3f} s"))
    rows.append((f"VAE encode / decode {side}", f"{r['vae_encode_s'] * 1000:.0f} / {r['vae_decode_s'] * 1000:.0f} ms"))

    # 2. the 4K edit end to end
    if args.photo:
        from PIL import Image

        rgb = np.asarray(Image.open(args.photo).convert("RGB"))
        h, w = rgb.shape[:2]
    else:
        rgb = photo_like(h, w)
    mask = disk_mask(h, w, radius)
    for detail in ("fast", "native"):
        if time.perf_counter() - t_start > args.budget:
            rows.append((f"{w}x{h} edit, detail {detail}", "skipped (budget)"))
            continue
        e = timed_edit(rgb, mask, engine, 1 if args.dry else args.repeats, warmup=warm, detail=detail)
        results[f"edit_{detail}"] = e
        rows.append((f"{w}x{h} edit, r={radius} px, detail {detail}: end to end (median of {len(e['runs'])})",
                     f"{e['seconds']:.2f} s ({e['engine_calls']} engine calls, {e['engine_seconds']:.2f} s in the "
                     f"engine; outside identical: {e['identical_beyond_256px']})"))
        if e.get("timings"):
            rows.append((f"  stages ({detail})", ", ".join(f"{k} {v:.2f}" for k, v in e["timings"].items())))

    # 3. whole-image 4K edit: img2img through the tiled UNet and VAE, txt2img-style 4-channel UNet (the
    #    recommended model kind for restyles). CUDA only: on a CPU the full model takes hours (bench/tiled.py has
    #    the CPU numbers); --dry runs it with the tiny model anywhere, to check the script.
    try:
        import crispedit.tiling as tiling
    except ImportError:
        tiling = None
    ready = tiling is not None and hasattr(tiling, "tiled_vae_encode") and hasattr(tiling, "tiled_noise_prediction")
    label = f"{w}x{h} whole-image edit, strength 0.35, {args.steps} steps"
    if not ready:
        rows.append((label, "skipped: crispedit.tiling (tiled VAE + UNet) not there yet"))
    elif device != "cuda" and not args.dry:
        rows.append((label, "skipped: runs only on CUDA (see bench/tiled.py for the CPU)"))
    elif time.perf_counter() - t_start > args.budget:
        rows.append((label, "skipped (budget)"))
    else:
        try:
            whole = SD15Engine.from_pipeline(
                pipeline_from(build_sd15_random(4, scale="tiny" if args.dry else "full", device=device, seed=1)),
                steps=args.steps, device=device, dtype=args.dtype)
            if warm:  # kernels for the tile and VAE shapes, on a smaller image that is still tiled
                timed_edit(photo_like(720, 1280), None, whole, 1, warmup=False, strength=0.35)
            e = timed_edit(rgb, None, whole, 1, warmup=False, strength=0.35)
            call = whole.calls[-1]
            e.update(tiles=call.get("tiles"), unet_steps=call.get("steps"), tiling=whole.tiling)
            results["edit_whole"] = e
            ok = "dry run, not a measurement" if args.dry else ("meets" if e["seconds"] <= 20.0 else "MISSES")
            rows.append((f"{label} ({str(whole.dtype).removeprefix('torch.')}; {call.get('tiles')} UNet tiles of "
                         f"{whole.tile} latent px x {call.get('steps')} steps, VAE tiles {whole.vae_tile}): end to end",
                         f"{e['seconds']:.2f} s (target <= 20 s on an H100: {ok})"))
            if e.get("timings"):
                rows.append(("  stages (whole image)", ", ".join(f"{k} {v:.2f}" for k, v in e["timings"].items())))
        except Exception as exc:  # e.g. out of memory
            rows.append((label, f"failed: {type(exc).__name__}: {str(exc)[:120]}"))

    peak = _peak_gib()
    if peak is not None:
        results["peak_gib"] = peak
        rows.append(("peak GPU memory", f"{peak:.1f} GiB"))
    results["total_s"] = time.perf_counter() - t_start
    rows.append(("script wall time (incl. random init)", f"{results['total_s']:.1f} s"))

    if out_json:
        print(f"\nwrote {out_json}")
    return 0


class _Rows(list):
    """Table rows printed as they come, with the JSON rewritten after each (a killed run keeps its numbers)."""

    def __init__(self, results: dict[str, Any], path: str | None):
        super().__init__()
        self.results, self.path = results, path

    def append(self, row: tuple[str, str]) -> None:
        super().append(row)
        print(f"| {row[0]} | {row[1]} |", flush=True)
        self.results["rows"] = list(self)
        if self.path:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            Path(self.path).write_text(json.dumps(self.results, indent=1, default=str))


if __name__ == "__main__":
    raise SystemExit(main())
