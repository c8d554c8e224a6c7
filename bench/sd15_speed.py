"""SD1.5 engine speed with the real architecture and random weights (no download): seconds per UNet step.

    python bench/sd15_speed.py --steps 2                 # CPU, 512x512, full-size SD1.5 inpainting architecture
    python bench/sd15_speed.py --steps 2 --compare       # + a 4K edit vs diffusers' padding_mask_crop=32

The compute of a diffusion model does not depend on its weights' values, so the full-size SD1.5 inpainting
architecture (UNet 9-channel, block_out_channels 320/640/1280/1280, cross-attention 768; the SD VAE; CLIP ViT-L/14
text encoder, 12 layers, width 768) with random weights times what real weights would. The tokenizer is a small
written vocabulary (it costs nothing either way). Prints a markdown table (machine, date, command) to paste into
``docs/benchmarks.md``.

``build_sd15_random()`` is reusable (``bench/gpu.py``, the harness comparison): it returns the components dict
(``unet``, ``vae``, ``text_encoder``, ``tokenizer``, ``scheduler``) that both ``SD15Engine.from_pipeline`` and
diffusers' own pipelines take.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import string
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

#: diffusers configs of SD1.5 (stable-diffusion-v1-5/stable-diffusion-inpainting), and a tiny stand-in for dry runs.
SD15_UNET = dict(
    sample_size=64, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32, act_fn="silu", flip_sin_to_cos=True,
    freq_shift=0, downsample_padding=1, mid_block_scale_factor=1, norm_eps=1e-5,
)
SD15_VAE = dict(
    in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
    latent_channels=4, norm_num_groups=32, sample_size=512, scaling_factor=0.18215, act_fn="silu",
)
SD15_CLIP = dict(
    hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12, vocab_size=49408,
    max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=768,
    bos_token_id=0, eos_token_id=2, pad_token_id=1,
)
TINY_UNET = dict(
    sample_size=16, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32,
)
TINY_VAE = dict(
    in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(16, 16, 32, 32), layers_per_block=1,
    latent_channels=4, norm_num_groups=8, sample_size=64, scaling_factor=0.18215,
)
TINY_CLIP = dict(
    hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, vocab_size=1000,
    max_position_embeddings=77, projection_dim=32, bos_token_id=0, eos_token_id=1, pad_token_id=1,
)


def write_small_tokenizer(folder: str | Path) -> Path:
    """A CLIP BPE tokenizer with letters and a few merges (vocab.json + merges.txt)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = list(string.ascii_lowercase + string.digits + ".,!?'-")
    merges = ["a n", "an d</w>", "t h", "th e</w>"]
    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars + [c + "</w>" for c in chars] + [m.replace(" ", "") for m in merges]:
        vocab[c] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return folder


def build_sd15_random(in_channels: int = 9, *, scale: str = "full", device: str = "cpu", dtype: Any = None,
                      seed: int = 0) -> dict[str, Any]:
    """SD1.5 components with random weights: ``unet``, ``vae``, ``text_encoder``, ``tokenizer``, ``scheduler``.

    ``scale="full"``: the real SD1.5 architecture (860M-parameter UNet); ``"tiny"``: a few-MB stand-in for dry
    runs. The modules are created directly on ``device`` (fast random init on a GPU) and cast to ``dtype``.
    """
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    unet_cfg, vae_cfg, clip_cfg = (SD15_UNET, SD15_VAE, SD15_CLIP) if scale == "full" else (
        TINY_UNET, TINY_VAE, TINY_CLIP)
    torch.manual_seed(seed)
    with torch.device(device):
        unet = UNet2DConditionModel(in_channels=in_channels, **unet_cfg)
        vae = AutoencoderKL(**vae_cfg)
        text_encoder = CLIPTextModel(CLIPTextConfig(**clip_cfg))
    for m in (unet, vae, text_encoder):
        m.eval().requires_grad_(False)
        if dtype is not None:
            m.to(dtype)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = CLIPTokenizer.from_pretrained(write_small_tokenizer(tmp), model_max_length=77)
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              num_train_timesteps=1000, set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1)
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer, "scheduler": scheduler}


def pipeline_from(components: dict[str, Any]):
    """The diffusers pipeline of these components (inpaint class for a 9-channel UNet)."""
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline

    cls = StableDiffusionInpaintPipeline if components["unet"].config.in_channels == 9 else StableDiffusionPipeline
    pipe = cls(**components, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = ""
    try:
        import psutil

        ram = f", {psutil.virtual_memory().total / 2**30:.0f} GiB RAM"
    except Exception:
        pass
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"
            f"{ram}{gpu}, load avg {os.getloadavg()[0]:.1f}")


def photo_like(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth-plus-grain RGB uint8 image (stand-in for a photo when none is given)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([0.35 + 0.3 * xx / w, 0.4 + 0.2 * yy / h, 0.5 - 0.2 * xx / w], axis=2)
    base += 0.06 * np.sin(xx[..., None] / 37.0 + yy[..., None] / 53.0)
    base += rng.normal(0, 0.02, base.shape).astype(np.float32)
    return (np.clip(base, 0, 1) * 255 + 0.5).astype(np.uint8)


def disk_mask(h: int, w: int, radius: int, center: tuple[int, int] | None = None) -> np.ndarray:
    cy, cx = center if center is not None else (h // 2, w // 2)
    yy, xx = np.ogrid[0:h, 0:w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius * radius


def time_engine(engine: Any, size: int = 512, repeats: int = 1) -> dict[str, float]:
    """Seconds per UNet step (guided: batch 2), VAE encode/decode and one whole inpaint call at ``size``."""
    import torch
    from PIL import Image

    unet_times: list[float] = []
    unet_cpu: list[float] = []
    orig = engine._predict_noise

    def timed(latents_in, t, cond):
        t0, c0 = time.perf_counter(), time.process_time()
        out = orig(latents_in, t, cond)
        if out.is_cuda:
            torch.cuda.synchronize()
        unet_times.append(time.perf_counter() - t0)
        unet_cpu.append(time.process_time() - c0)
        return out

    img = Image.fromarray(photo_like(size, size))
    mask = Image.fromarray((disk_mask(size, size, size // 4) * 255).astype(np.uint8))
    engine._predict_noise = timed
    try:
        engine.inpaint(img, mask, "a wooden bench", seed=0)  # warm-up (allocations, kernels, prompt cache)
        unet_times.clear()
        unet_cpu.clear()
        calls = []
        for r in range(repeats):
            t0 = time.perf_counter()
            engine.inpaint(img, mask, "a wooden bench", seed=r + 1)
            calls.append(time.perf_counter() - t0)
    finally:
        engine._predict_noise = orig
    x = engine._image_tensor(img, size, size)
    with torch.inference_mode():
        t0 = time.perf_counter()
        lat = engine._vae_encode(x)
        t1 = time.perf_counter()
        engine._vae_decode(lat)
        t2 = time.perf_counter()
    return {"unet_step_s": statistics.median(unet_times), "unet_step_cpu_s": statistics.median(unet_cpu),
            "unet_steps_timed": len(unet_times),
            "vae_encode_s": t1 - t0, "vae_decode_s": t2 - t1, "call_s": statistics.median(calls),
            "steps": engine.steps}


def compare_padding_mask_crop(components: dict[str, Any], *, image: np.ndarray | None = None,
                              size: tuple[int, int] = (3840, 2160), radius: int = 120, steps: int = 25,
                              seed: int = 0, prompt: str = "a wooden bench", device: str = "cpu",
                              dtype: Any = None) -> dict[str, Any]:
    """A small-mask 4K edit: diffusers ``StableDiffusionInpaintPipeline(padding_mask_crop=32)`` vs crispedit.

    Same components, scheduler (DPM++ 2M Karras), steps, guidance and seed. Returns both timings, their ratio
    (crispedit / diffusers; the target is <= 1.05) and whether crispedit's pixels beyond its blend band are
    bit-identical to the input (diffusers' overlay is a hard paste of the 512-px crop's VAE round trip).
    """
    import torch
    from diffusers import DPMSolverMultistepScheduler
    from PIL import Image

    import crispedit
    from crispedit.engines.sd15 import SD15Engine

    w, h = size
    rgb = image if image is not None else photo_like(h, w)
    h, w = rgb.shape[:2]
    m = disk_mask(h, w, radius)
    pipe = pipeline_from(components)
    pipe.to(device)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, algorithm_type="dpmsolver++",
                                                             solver_order=2, use_karras_sigmas=True)
    img_pil, mask_pil = Image.fromarray(rgb), Image.fromarray((m * 255).astype(np.uint8))
    t0 = time.perf_counter()
    ref = pipe(prompt=prompt, image=img_pil, mask_image=mask_pil, padding_mask_crop=32, height=512, width=512,
               num_inference_steps=steps, guidance_scale=7.5,
               generator=torch.Generator("cpu").manual_seed(seed)).images[0]
    t_diffusers = time.perf_counter() - t0
    engine = SD15Engine.from_pipeline(pipe, steps=steps, guidance=7.5, device=device, dtype=dtype)
    t0 = time.perf_counter()
    res = crispedit.edit(rgb, m, prompt, engine=engine, seed=seed, detail="fast")
    t_ours = time.perf_counter() - t0
    out = np.asarray(res.image.convert("RGB"))
    changed = np.any(out != rgb, axis=2)
    ys, xs = np.nonzero(changed)
    return {"diffusers_s": t_diffusers, "crispedit_s": t_ours, "ratio": t_ours / t_diffusers,
            "size": (w, h), "radius": radius, "steps": steps, "diffusers_size": ref.size,
            "crispedit_size": res.image.size,
            "changed_bbox": (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1) if len(xs) else None,
            "changed_px": int(changed.sum()), "engine_calls": res.info.get("engine_calls")}


def markdown(rows: list[tuple[str, str]], command: str) -> str:
    lines = [f"SD1.5 engine speed — {_dt.datetime.now():%Y-%m-%d %H:%M}, `{command}`", "",
             f"Machine: {machine()}", "", "| measure | value |", "|---|---|"]
    lines += [f"| {a} | {b} |" for a, b in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=4, help="sampling steps per call (few: CPU steps take seconds)")
    ap.add_argument("--size", type=int, default=512, help="square side of the timed inpaint call")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--scale", choices=["full", "tiny"], default="full")
    ap.add_argument("--compare", action="store_true", help="also the 4K edit vs diffusers' padding_mask_crop=32")
    ap.add_argument("--compare-size", default="3840x2160")
    ap.add_argument("--radius", type=int, default=120, help="mask radius of the comparison (px)")
    args = ap.parse_args(argv)

    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    from crispedit.engines.sd15 import SD15Engine

    t0 = time.perf_counter()
    comps = build_sd15_random(9, scale=args.scale, device=args.device)
    t_build = time.perf_counter() - t0
    n_unet = sum(p.numel() for p in comps["unet"].parameters())
    engine = SD15Engine.from_pipeline(pipeline_from(comps), steps=args.steps, device=args.device, dtype=args.dtype)
    r = time_engine(engine, size=args.size, repeats=args.repeats)
    rows = [
        ("model", f"SD1.5 inpainting architecture ({args.scale}), random weights, UNet {n_unet / 1e6:.0f}M params, "
                  f"{engine.device.type} {str(engine.dtype).removeprefix('torch.')}"),
        (f"UNet step at {args.size}x{args.size} (CFG, batch 2), median of {r['unet_steps_timed']}",
         f"{r['unet_step_s']:.2f} s"),
        ("  same, process CPU time (all threads; under contention wall time can be far above CPU time / threads)",
         f"{r['unet_step_cpu_s']:.2f} s"),
        (f"VAE encode {args.size}x{args.size}", f"{r['vae_encode_s']:.2f} s"),
        (f"VAE decode {args.size}x{args.size}", f"{r['vae_decode_s']:.2f} s"),
        (f"inpaint call {args.size}x{args.size}, {args.steps} steps (text + 1 VAE encode + steps + decode)",
         f"{r['call_s']:.2f} s"),
        (f"estimated 25-step inpaint call at {args.size}",
         f"{r['call_s'] + (25 - args.steps) * r['unet_step_s']:.0f} s"),
        ("random init of the components (not part of a call)", f"{t_build:.1f} s"),
    ]
    if args.compare:
        cw, ch = (int(v) for v in args.compare_size.lower().split("x"))
        c = compare_padding_mask_crop(comps, size=(cw, ch), radius=args.radius, steps=args.steps,
                                      device=args.device, dtype=args.dtype)
        rows += [
            (f"{cw}x{ch} edit, r={args.radius} px: diffusers padding_mask_crop=32", f"{c['diffusers_s']:.1f} s"),
            (f"{cw}x{ch} edit, r={args.radius} px: crispedit.edit (detail fast)", f"{c['crispedit_s']:.1f} s"),
            ("ratio crispedit / diffusers (target <= 1.05)", f"{c['ratio']:.3f}"),
            ("crispedit pixels changed (bbox)", f"{c['changed_px']} px in {c['changed_bbox']}"),
        ]
    cmd = "python bench/sd15_speed.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(markdown(rows, cmd.strip()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
