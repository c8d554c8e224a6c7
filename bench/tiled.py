"""Tiled SD1.5 benchmark (issue 4): whole-image edits at 2K, 4K and 8K, tile-step cost, tiled vs untiled VAE.

(a) **Whole-image edit** (``crispedit.edit(path, mask=None, strength=0.35)``, img2img over the whole image) with a
    tiny random model at 1920x1080, 3840x2160 and 7680x4320, each in its own process: a wrapper process starts the
    edit process and reads its peak RSS with ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` (so every size gets
    its own peak). Time per stage: the engine's ``_vae_encode``, ``_denoise`` (all UNet tiles of all steps and the
    scheduler) and ``_vae_decode``, timed by wrapping them.
    Expected: UNet time linear in the tile count (constant seconds per tile-step), VAE time linear in pixels, and
    peak RSS growing only by the image buffers (the image-sized float32 RGB copies of the harness and the engine:
    reported as "float32 RGB" = 12 bytes per pixel) plus the VAE tile cache. Two cache settings: the engine's
    default (tiling's budget, min(4 GiB, RAM / 4) on a CPU: tile activations are kept while they fit) and
    ``vae_cache=256`` MiB (bounded: the full-resolution stages recompute instead).
    Model: ``tests/tiny_sd.build_micro_pipeline`` (``--model micro``, default: seconds per 4K edit) or
    ``build_tiny_pipeline`` (``--model tiny``: attention at full tile resolution, minutes per 8K edit).
(b) **Full-size SD1.5 architecture** with random weights (``bench/sd15_speed.build_sd15_random``, 4-channel
    UNet as in a txt2img SD1.5, fp32 on the CPU): seconds per tile-step (one guided UNet call on a 64x64 latent
    tile, CFG batch 2; and two tiles per call, the CPU default ``tile_batch``), the resulting estimate for a 4K
    edit, and the tiled VAE against the untiled one at 1024x1024 in the same run (time and max difference).
(c) The GPU number (4K whole-image edit, fp16, strength 0.35, 25 steps; target <= 20 s on an H100) is section 3
    of ``bench/gpu.py``, which runs it only on CUDA.

Usage::

    .venv/bin/python bench/tiled.py                 # (a) and (b), prints markdown
    .venv/bin/python bench/tiled.py --write         # also updates docs/benchmarks.md (bench:tiled section)
    .venv/bin/python bench/tiled.py --no-full --sizes 2k 4k
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

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests"))
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from zoom import DOC, machine_line, source_state, update_doc  # noqa: E402

SIZES = {"2k": (1920, 1080), "4k": (3840, 2160), "8k": (7680, 4320)}
PROMPT = "autumn colours"


# -- (a) whole-image edits in subprocesses ----------------------------------------------------------------------
def write_photo(path: Path, w: int, h: int) -> None:
    """A photo-like PNG (smooth gradients, mid-scale structure, grain) written in horizontal strips."""
    from PIL import Image

    rng = np.random.default_rng(0)
    out = np.empty((h, w, 3), np.uint8)
    xx = np.arange(w, dtype=np.float32)[None, :, None] / w
    for y0 in range(0, h, 512):
        y1 = min(h, y0 + 512)
        yy = np.arange(y0, y1, dtype=np.float32)[:, None, None] / h
        base = np.concatenate([0.35 + 0.3 * xx + 0 * yy, 0.4 + 0.2 * yy + 0 * xx, 0.5 - 0.2 * xx + 0 * yy], 2)
        base = base + 0.06 * np.sin(xx * w / 37.0 + yy * h / 53.0)
        base = base + rng.normal(0, 0.02, base.shape).astype(np.float32)
        out[y0:y1] = (np.clip(base, 0, 1) * 255 + 0.5).astype(np.uint8)
    Image.fromarray(out).save(path, compress_level=1)


def save_model(kind: str, folder: Path) -> Path:
    from tiny_sd import build_micro_pipeline, build_tiny_pipeline

    (build_micro_pipeline(4) if kind == "micro" else build_tiny_pipeline(4)).save_pretrained(
        folder, safe_serialization=True)
    return folder


def child(image: str, model: str, steps: int, vae_cache: float | None, threads: int) -> None:
    """One whole-image edit; prints a JSON line (wall, stage seconds, tiles, RSS after loading)."""
    import torch

    torch.set_num_threads(threads)
    import crispedit
    from crispedit.engines.sd15 import SD15Engine

    stage_s: dict[str, float] = {}
    eng = SD15Engine(model, steps=steps, device="cpu", vae_cache=vae_cache).load()
    for name, stage in (("_vae_encode", "vae encode"), ("_denoise", "unet"), ("_vae_decode", "vae decode")):
        def timed(*a: Any, _f: Any = getattr(eng, name), _stage: str = stage, **k: Any) -> Any:
            s = time.perf_counter()
            out = _f(*a, **k)
            stage_s[_stage] = stage_s.get(_stage, 0.0) + time.perf_counter() - s
            return out
        setattr(eng, name, timed)
    eng._encode_prompt(PROMPT)
    rss_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    res = crispedit.edit(image, None, PROMPT, engine=eng, seed=0, strength=0.35)
    wall = time.perf_counter() - t0
    call = eng.calls[-1]
    print(json.dumps({"wall_s": wall, "stages": stage_s, "timings": res.info.get("timings", {}),
                      "tiles": call["tiles"], "steps": call["steps"], "engine_s": call["seconds"],
                      "rss_after_load_kb": rss_load, "size": list(res.image.size)}))


def wrapper(cmd: list[str]) -> None:
    """Run the edit process and report its peak RSS (RUSAGE_CHILDREN: this wrapper has no other child)."""
    r = subprocess.run(cmd, capture_output=True, text=True)
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if r.returncode != 0:
        print(json.dumps({"error": r.stderr.strip()[-800:]}))
        return
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res["peak_rss_kb"] = peak_kb
    print(json.dumps(res))


def bench_edits(sizes: list[str], model_kind: str, steps: int, caches: list[float | None], threads: int,
                tmp: Path) -> list[dict[str, Any]]:
    model = save_model(model_kind, tmp / f"model-{model_kind}")
    rows = []
    for key in sizes:
        w, h = SIZES[key]
        img = tmp / f"photo-{key}.png"
        write_photo(img, w, h)
        for cache in caches:
            inner = [sys.executable, str(Path(__file__).resolve()), "--child", str(img), str(model), str(steps),
                     "none" if cache is None else str(cache), str(threads)]
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--wrap", json.dumps(inner)],
                               capture_output=True, text=True)
            res = json.loads(r.stdout.strip().splitlines()[-1]) if r.stdout.strip() else {"error": r.stderr[-800:]}
            res.update(key=key, w=w, h=h, cache=cache, process_s=time.perf_counter() - t0)
            rows.append(res)
            print(f"  {key} cache={cache}: {json.dumps(res)[:300]}", file=sys.stderr, flush=True)
        img.unlink()
    return rows


def edits_table(rows: list[dict[str, Any]]) -> str:
    out = ["| size | VAE cache | UNet tiles x steps | edit s | VAE encode s | UNet s | s per tile-step | "
           "VAE decode s | VAE s per Mpx | peak RSS MB | after load MB | growth MB | float32 RGB MB | "
           "growth / float32 RGB |",
           "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        cache = "default" if r["cache"] is None else f"{r['cache']:g} MiB"
        if "error" in r:
            out.append(f"| {r['w']}x{r['h']} | {cache} | failed: `{r['error'][-200:]}` |" + " |" * 12)
            continue
        st = r["stages"]
        unet = st.get("unet", 0.0)
        ts = r["tiles"] * r["steps"]
        mpx = r["w"] * r["h"] / 1e6
        vae = st.get("vae encode", 0.0) + st.get("vae decode", 0.0)
        peak = r["peak_rss_kb"] / 1024
        load = r["rss_after_load_kb"] / 1024
        buf = r["w"] * r["h"] * 12 / 2**20
        out.append(f"| {r['w']}x{r['h']} | {cache} | {r['tiles']} x {r['steps']} | {r['wall_s']:.1f} | "
                   f"{st.get('vae encode', 0.0):.1f} | {unet:.1f} | {unet / max(ts, 1):.3f} | "
                   f"{st.get('vae decode', 0.0):.1f} | {vae / mpx:.2f} | {peak:.0f} | {load:.0f} | "
                   f"{peak - load:.0f} | {buf:.0f} | {(peak - load) / buf:.1f} |")
    return "\n".join(out)


# -- (b) full-size architecture ------------------------------------------------------------------------------------
def bench_full(vae_side: int, repeats: int) -> list[tuple[str, str]]:
    import torch
    from sd15_speed import build_sd15_random, photo_like, pipeline_from

    from crispedit import tiling
    from crispedit.engines.sd15 import SD15Engine
    from crispedit.geometry import latent_tiles

    rows: list[tuple[str, str]] = []
    t0 = time.perf_counter()
    comps = build_sd15_random(4, scale="full", device="cpu")
    engine = SD15Engine.from_pipeline(pipeline_from(comps), device="cpu", steps=25)
    rows.append(("model", f"SD1.5 architecture, 4-channel UNet "
                          f"({sum(p.numel() for p in comps['unet'].parameters()) / 1e6:.0f}M params), random weights, "
                          f"cpu float32, {torch.get_num_threads()} torch threads (random init {time.perf_counter() - t0:.0f} s)"))
    cond = engine._encode_prompt("a wooden bench")
    t = torch.tensor(500)
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        x1 = torch.randn(1, 4, 64, 64, generator=g)
        x2 = torch.randn(2, 4, 64, 64, generator=g)
        engine._predict_noise(x1, t, cond)  # warm-up
        one, two, loads = [], [], []
        for _ in range(repeats):  # interleaved, so a busy moment of a shared machine hits both
            for x, out in ((x1, one), (x2, two)):
                s = time.perf_counter()
                engine._predict_noise(x, t, cond)
                out.append((time.perf_counter() - s) / len(x))
            loads.append(os.getloadavg()[0])
        per_tile, per_tile2 = statistics.median(one), statistics.median(two)
        rows.append((f"UNet tile-step: one 64x64 latent tile (512 px), CFG batch 2, median of {repeats} "
                     f"(all: {', '.join(f'{v:.1f}' for v in one)}; load avg {', '.join(f'{v:.1f}' for v in loads)})",
                     f"{per_tile:.2f} s"))
        rows.append((f"same, 2 tiles per call (CPU default tile_batch=2, CFG batch 4), per tile, median of {repeats} "
                     f"(all: {', '.join(f'{v:.1f}' for v in two)})", f"{per_tile2:.2f} s"))
    n4k = len(latent_tiles(270, 480, engine.tile, engine.tile_overlap))
    steps = int(25 * 0.35)
    rows.append((f"estimate: 4K whole-image edit UNet time ({n4k} tiles x {steps} steps, strength 0.35 of 25)",
                 f"{n4k * steps * min(per_tile, per_tile2) / 60:.0f} min"))

    vae = engine.pipeline.vae
    img = torch.from_numpy(photo_like(vae_side, vae_side).astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
    img = img.contiguous()
    with torch.inference_mode():
        s = time.perf_counter()
        z_ref = vae.encode(img).latent_dist.mode()
        enc_u = time.perf_counter() - s
        s = time.perf_counter()
        px_ref = vae.decode(z_ref).sample
        dec_u = time.perf_counter() - s
        st_e: dict = {}
        s = time.perf_counter()
        z_t = tiling.tiled_vae_encode(vae, img, tile=8 * engine.vae_tile, stats=st_e)
        enc_t = time.perf_counter() - s
        st_d: dict = {}
        s = time.perf_counter()
        px_t = tiling.tiled_vae_decode(vae, z_ref, tile=engine.vae_tile, stats=st_d)
        dec_t = time.perf_counter() - s
    dz = float((z_t - z_ref).abs().max())
    dpx = float((px_t - px_ref).abs().max())
    rows.append((f"VAE encode {vae_side}x{vae_side}: untiled / tiled ({8 * engine.vae_tile}-px tiles, "
                 f"{st_e.get('tiles')} per segment)", f"{enc_u:.1f} s / {enc_t:.1f} s ({enc_t / enc_u:.2f}x)"))
    rows.append((f"VAE decode {vae_side}x{vae_side}: untiled / tiled ({engine.vae_tile}-latent-px tiles, "
                 f"{st_d.get('tiles')} per segment, halos {st_d.get('halos')})",
                 f"{dec_u:.1f} s / {dec_t:.1f} s ({dec_t / dec_u:.2f}x)"))
    rows.append(("tiled vs untiled: max abs difference (latent mean / pixels in [-1, 1])", f"{dz:.2e} / {dpx:.2e}"))
    del comps, engine
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="*", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--model", choices=["micro", "tiny"], default="micro")
    ap.add_argument("--steps", type=int, default=8, help="steps of the tiny-model edits (strength 0.35: 2 run)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in the edit processes")
    ap.add_argument("--no-bounded-cache", action="store_true", help="skip the vae_cache=256 MiB runs")
    ap.add_argument("--no-edits", action="store_true")
    ap.add_argument("--no-full", action="store_true", help="skip (b), the full-size architecture")
    ap.add_argument("--vae-side", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--write", action="store_true", help="update the bench:tiled section of docs/benchmarks.md")
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    ap.add_argument("--wrap", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.child:
        image, model, steps, cache, threads = args.child
        child(image, model, int(steps), None if cache == "none" else float(cache), int(threads))
        return 0
    if args.wrap:
        wrapper(json.loads(args.wrap))
        return 0

    commit = source_state()
    t0 = time.perf_counter()
    parts = []
    if not args.no_edits:
        caches: list[float | None] = [None] if args.no_bounded_cache else [None, 256.0]
        with tempfile.TemporaryDirectory(prefix="crispedit-tiled-") as d:
            rows = bench_edits(args.sizes, args.model, args.steps, caches, args.threads, Path(d))
        parts.append(f"(a) Whole-image edit, `crispedit.edit(path, None, strength=0.35)`, {args.model} random model "
                     f"(tests/tiny_sd.py), {args.steps} steps (2 run), CPU, {args.threads} torch thread(s), one "
                     "process per row (peak RSS: `getrusage(RUSAGE_CHILDREN).ru_maxrss` of a wrapper whose only "
                     "child is the edit). UNet tiles 64 latent px, overlap 24; VAE tiles 512 px. \"float32 RGB\" = one "
                     "image-sized float32 RGB buffer (12 B/px); \"growth\" = peak minus RSS after loading the model.\n\n"
                     + edits_table(rows))
    if not args.no_full:
        full = bench_full(args.vae_side, args.repeats)
        from sd15_speed import machine

        parts.append(f"(b) Full-size SD1.5 architecture, random weights, CPU ({machine()}):\n\n| measure | value |\n"
                     "|---|---|\n" + "\n".join(f"| {a} | {b} |" for a, b in full))
    parts.append("(c) GPU: `bench/gpu.py` section 3 times a 3840x2160 whole-image edit (fp16, strength 0.35, 25 "
                 "steps; target <= 20 s on an H100) and runs only on CUDA. No GPU was available for this run: "
                 "not measured.")
    text = "\n\n".join(parts)
    print(text)
    if args.write:
        argv_s = " ".join(a for a in (argv if argv is not None else sys.argv[1:]) if a != "--write")
        body = (f"## Tiled SD1.5: whole-image edits at 2K-8K, tile-step cost, tiled VAE\n\n"
                f"`{('python bench/tiled.py ' + argv_s).strip()}` ({time.perf_counter() - t0:.0f} s). "
                f"{machine_line(commit)}\n\n{text}\n")
        update_doc("tiled", body)
        print(f"\nwrote {DOC.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
