"""Stable Diffusion 1.5 through diffusers: inpaint, refine (img2img inside a mask), img2img and txt2img.

The engine uses the components of a diffusers pipeline (UNet, VAE, CLIP text encoder, tokenizer, scheduler) and
runs its own sampling loop, split into small steps so that the tiling code can swap the expensive ones::

    cond = engine._encode_prompt(prompt)                 # CLIP, classifier-free guidance pair
    lat = engine._vae_encode(image_tensor)               # pixels [-1, 1] -> scaled latents      (tileable)
    eps = engine._predict_noise(latents_in, t, cond)     # one guided UNet evaluation            (tileable)
    lat = engine._denoise(lat, timesteps, cond, ...)     # the scheduler loop, mask handling
    img = engine._vae_decode(lat)                        # scaled latents -> pixels [-1, 1]      (tileable)

Both SD1.5 checkpoint kinds work:

- the 9-channel inpainting UNet gets ``[latents, mask, masked-image latents]`` at every step;
- a plain 4-channel UNet (any SD1.5 fine-tune) inpaints by RePaint-style blending: after every step the
  latents outside the mask are replaced by the original latents noised to the next timestep.

``strength`` follows diffusers' img2img convention: sampling starts at ``steps * strength`` steps before the
end from the VAE latents of the given image noised to that level, so ``strength < 1`` refines the content
already there (restricted to the mask for ``inpaint``) and ``strength = 1`` regenerates from pure noise.

Images larger than ``untiled_max`` px (default 640, the largest crop the harness hands an engine) are worked
on in tiles (:mod:`crispedit.tiling`), so whole-image edits and the hires stages of text-to-image run at 4K and
8K with memory bounded by the tile size: the UNet predicts noise on overlapping ``tile`` x ``tile`` latent tiles
(batched, blended with tapered Gaussian weights) while the scheduler steps once on the whole latent, and the
VAE encodes/decodes in tiles that share GroupNorm statistics (equal to the untiled VAE within float rounding,
and free of SD1.5's untiled-VAE NaN around 1500 px). Smaller images keep the exact untiled path.

torch and diffusers are imported lazily: importing this module (which registers ``"sd15"``) stays cheap.
"""

from __future__ import annotations

import inspect
import math
import secrets
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from PIL import Image

from crispedit import options as options_mod
from crispedit.engines.base import Region, register_engine
from crispedit.engines.model_source import DEFAULT_MODEL, ModelSource, load_pipeline, quiet_libraries, resolve_model
from crispedit.errors import InputError, ModelError

if TYPE_CHECKING:  # pragma: no cover
    import torch

SCHEDULERS = options_mod.SCHEDULERS
DTYPES = {"fp16": "float16", "float16": "float16", "half": "float16", "bf16": "bfloat16", "bfloat16": "bfloat16",
          "fp32": "float32", "float32": "float32", "float": "float32"}
Progress = Callable[[str, int, int], None]

#: Tiling defaults per device type: UNet tile and overlap (latent px), tiles per UNet call, VAE tile (latent px;
#: the encoder's tile is 8x that in image px). CPU: 512-px tiles (SD1.5's native size), small batches (a CPU gains
#: little from batching); GPU: 768-px UNet tiles batched by 8 and 1024-px VAE tiles (less halo overhead).
#: Overlap about a third of the tile: at a quarter, the blend still shows the tiles' zero-padded edges (measured
#: against an untiled run in tests/test_tiled_sd.py).
TILE_DEFAULTS: dict[str, dict[str, int]] = {
    "cpu": {"tile": 64, "tile_overlap": 24, "tile_batch": 2, "vae_tile": 64},
    "mps": {"tile": 96, "tile_overlap": 32, "tile_batch": 4, "vae_tile": 96},
    "cuda": {"tile": 96, "tile_overlap": 32, "tile_batch": 8, "vae_tile": 128},
}
#: Largest side (px) that runs untiled by default: the harness hands the engine crops of up to 1.25 x 512 px.
UNTILED_MAX = 640

# Loaded pipelines shared by all engine instances of the process: (model key, device, dtype) -> pipeline.
_PIPELINES: dict[tuple[str, str, str], Any] = {}
_PIPELINES_LOCK = threading.Lock()


def clear_pipeline_cache() -> None:
    """Forget the pipelines loaded in this process (frees their memory once no engine holds them)."""
    with _PIPELINES_LOCK:
        _PIPELINES.clear()


def resolve_device_dtype(device: Any = None, dtype: Any = None) -> tuple[torch.device, torch.dtype]:
    """Pick the device (CUDA > MPS > CPU) and dtype (fp16 on CUDA/MPS, fp32 on CPU); validate overrides."""
    import torch

    if device is None:
        if torch.cuda.is_available():
            dev = torch.device("cuda")
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            dev = torch.device("mps")
        else:
            dev = torch.device("cpu")
    else:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError):
            raise InputError(f"unknown device '{device}'", "use cpu, cuda, cuda:N or mps") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise InputError("device 'cuda' was asked for but no CUDA GPU is available", "use --device cpu")
        if dev.type == "mps" and not (getattr(torch.backends, "mps", None) is not None
                                      and torch.backends.mps.is_available()):
            raise InputError("device 'mps' was asked for but MPS is not available", "use --device cpu")
        if dev.type not in ("cpu", "cuda", "mps"):
            raise InputError(f"unsupported device '{device}'", "use cpu, cuda, cuda:N or mps")
    if dtype is None:
        dt = torch.float16 if dev.type in ("cuda", "mps") else torch.float32
    elif isinstance(dtype, torch.dtype):
        dt = dtype
    else:
        name = DTYPES.get(str(dtype).lower().removeprefix("torch."))
        if name is None:
            raise InputError(f"unknown dtype '{dtype}'", "use fp16, bf16 or fp32")
        dt = getattr(torch, name)
    if dt not in (torch.float16, torch.bfloat16, torch.float32):
        raise InputError(f"unsupported dtype '{dtype}'", "use fp16, bf16 or fp32")
    return dev, dt


def _ceil_to(n: int, m: int) -> int:
    return int(math.ceil(n / m) * m)


class SD15Engine:
    """Stable Diffusion 1.5 engine (the ``"sd15"`` engine of the registry).

    Parameters
    ----------
    model : Hugging Face id (default ``stable-diffusion-v1-5/stable-diffusion-inpainting``, read from the local
        HF cache unless ``allow_download``), a diffusers folder, or a single original-layout ``.safetensors``.
    steps, guidance, scheduler, negative_prompt : sampling settings; ``scheduler`` is one of
        ``dpmpp_2m_karras`` (DPM++ 2M Karras, default), ``ddim``, ``euler_a``, ``unipc``.
    device, dtype : ``cpu``/``cuda``/``mps`` and ``fp16``/``bf16``/``fp32``; default CUDA fp16 > MPS fp16 > CPU fp32.
    allow_pickle : accept ``.ckpt``/``.bin``/``.pt``/``.pth`` checkpoints (loading a pickle can run code).
    allow_download : let diffusers download a hub model that is not cached.
    progress : ``progress("denoise", step, total)`` after every sampling step; for tiled images also
        ``progress("tiles", done, total)`` inside each step and ``progress("vae encode" | "vae decode", done, total)``.
    config : diffusers config folder (or HF id) for a single-file model; found automatically when omitted.
    tile, tile_overlap : UNet tile side and minimum overlap in latent px (x8 = image px). Default 64 / 24 on CPU
        (512 / 192 px), 96 / 32 on CUDA and MPS. Multiples of 8; overlap at most half the tile.
    tile_batch : tiles per UNet call (default 2 on CPU, 8 on CUDA, 4 on MPS).
    vae_tile : VAE tile core in latent px (the encoder uses 8x that in image px); default 64 on CPU, 128 on CUDA,
        96 on MPS. Any value gives the same result (within float rounding); larger tiles waste less on halos.
    vae_cache : MiB of VAE tile activations kept between GroupNorm passes (default: tiling's own budget, a third
        of free GPU memory or min(4 GiB, RAM / 4)); less keeps memory lower and recomputes tiles (exact, slower).
    untiled_max : images whose sides are all <= this (px, default 640) run the exact untiled UNet and VAE; larger
        ones are tiled. 0 tiles everything that is larger than one tile.

    Attributes
    ----------
    working_size : 512, the side SD1.5 composes at.
    default_detail : ``"native"`` on CUDA, ``"fast"`` on CPU/MPS. The harness's native-detail pass refines a
        large edit at native scale in overlapping 512-px tiles, one engine call per tile: seconds on a GPU, but
        minutes per call on a CPU, so a CPU edit would take tens of minutes; ``--detail native`` still forces it.
    device, dtype : the torch device and dtype the model runs in.
    calls : one dict per engine call (``kind``, ``size`` (w, h), ``strength``, ``steps``, ``tiles`` (UNet tiles per
        step, 1 = untiled), ``seconds``, ``seed``, ``scheduler``, ``region``), for the harness's info.

    The weights are read on the first call (or :meth:`load`) and shared with other engines of the same model,
    device and dtype in this process. Same seed and settings give the same bytes on the same device.
    """

    name = "sd15"
    working_size: int | None = 512

    def __init__(
        self,
        model: str | None = None,
        *,
        steps: int | None = None,
        guidance: float | None = None,
        scheduler: str | None = None,
        negative_prompt: str | None = None,
        device: Any = None,
        dtype: Any = None,
        allow_pickle: bool | None = None,
        allow_download: bool | None = None,
        progress: Progress | None = None,
        config: str | None = None,
        tile: int | None = None,
        tile_overlap: int | None = None,
        tile_batch: int | None = None,
        vae_tile: int | None = None,
        vae_cache: float | None = None,
        untiled_max: int | None = None,
    ):
        opts = options_mod.check_sd15(
            model=model, steps=steps, guidance=guidance, scheduler=scheduler, negative_prompt=negative_prompt,
            device=device, dtype=dtype, allow_pickle=allow_pickle, allow_download=allow_download, progress=progress,
            config=config, tile=tile, tile_overlap=tile_overlap, tile_batch=tile_batch, vae_tile=vae_tile,
            vae_cache=vae_cache, untiled_max=untiled_max)
        self._configure(opts)
        model = str(model) if model not in (None, "") else None
        self.model = model or DEFAULT_MODEL
        self._source: ModelSource | None = resolve_model(model, allow_pickle=self.allow_pickle,
                                                         allow_download=self.allow_download, config=config)
        self._pipe: Any = None

    def _configure(self, opts: options_mod.SD15Options) -> None:
        """Settings from validated options (:class:`crispedit.options.SD15Options`), defaults filled in."""
        self.options = opts
        self.steps = options_mod.DEFAULT_STEPS if opts.steps is None else opts.steps
        self.guidance = options_mod.DEFAULT_GUIDANCE if opts.guidance is None else opts.guidance
        self.scheduler = options_mod.DEFAULT_SCHEDULER if opts.scheduler is None else opts.scheduler
        self.negative_prompt = opts.negative_prompt or ""
        self.allow_pickle = bool(opts.allow_pickle)
        self.allow_download = bool(opts.allow_download)
        self.progress = opts.progress
        self.device, self.dtype = resolve_device_dtype(opts.device, opts.dtype)
        self.default_detail = "native" if self.device.type == "cuda" else "fast"
        defaults = TILE_DEFAULTS.get(self.device.type, TILE_DEFAULTS["cpu"])
        self.tile = defaults["tile"] if opts.tile is None else opts.tile
        if opts.tile_overlap is None:
            self.tile_overlap = min(defaults["tile_overlap"], self.tile // 2)
        else:  # checked again against the tile in effect (a device default when no tile was given)
            self.tile_overlap = options_mod.check_sd15(tile=self.tile, tile_overlap=opts.tile_overlap).tile_overlap
        self.tile_batch = defaults["tile_batch"] if opts.tile_batch is None else opts.tile_batch
        self.vae_tile = defaults["vae_tile"] if opts.vae_tile is None else opts.vae_tile
        self.untiled_max = UNTILED_MAX if opts.untiled_max is None else opts.untiled_max
        self.vae_cache_bytes: int | None = None if opts.vae_cache is None else int(opts.vae_cache * 2**20)
        self.calls: list[dict[str, Any]] = []
        self._prompt_cache: OrderedDict[tuple[str, str], Any] = OrderedDict()

    @property
    def tiling(self) -> dict[str, Any]:
        """The tiling settings in effect (latent px, except ``untiled_max`` in image px)."""
        return {"tile": self.tile, "tile_overlap": self.tile_overlap, "tile_batch": self.tile_batch,
                "vae_tile": self.vae_tile, "untiled_max": self.untiled_max,
                "vae_cache_mib": None if self.vae_cache_bytes is None else self.vae_cache_bytes / 2**20}

    def _tiled(self, h_px: int, w_px: int) -> bool:
        """Whether an image of ``h_px`` x ``w_px`` goes through the tiled UNet and VAE."""
        return max(h_px, w_px) > self.untiled_max

    def _tile_count(self, h_lat: int, w_lat: int) -> int:
        """UNet calls' tiles per sampling step for a latent of ``h_lat`` x ``w_lat`` (1: untiled)."""
        f = self.vae_scale_factor
        if not self._tiled(h_lat * f, w_lat * f) or (h_lat <= self.tile and w_lat <= self.tile):
            return 1
        from crispedit.geometry import latent_tiles

        return len(latent_tiles(h_lat, w_lat, self.tile, self.tile_overlap))

    def _report(self, stage: str) -> Callable[[int, int], None] | None:
        progress = self.progress
        if progress is None:
            return None
        return lambda done, total: progress(stage, done, total)

    @classmethod
    def from_pipeline(cls, pipe: Any, **options: Any) -> SD15Engine:
        """An engine around an already built diffusers SD pipeline (e.g. random full-size weights in a benchmark).

        ``options``: the constructor's keywords except ``model`` and ``config``; the pipeline is moved to the
        engine's device and dtype (and not put into the process-wide cache).
        """
        if "model" in options or "config" in options:
            raise InputError("from_pipeline takes no model or config (the pipeline is the model)",
                             "pass the sampling and tiling options only")
        self = cls.__new__(cls)
        self._configure(options_mod.check_sd15(**options))
        self.model = f"<{type(pipe).__name__}>"
        self._source = None
        self._pipe = self._prepare(pipe)
        return self

    # --- loading -------------------------------------------------------------------------------------------

    def load(self) -> SD15Engine:
        """Read the weights now (otherwise done on the first call)."""
        self._load()
        return self

    @property
    def pipeline(self) -> Any:
        """The diffusers pipeline whose components the engine runs (loaded on first access)."""
        return self._load()

    @property
    def unet_in_channels(self) -> int:
        return int(self._load().unet.config.in_channels)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self._load().vae.config.block_out_channels) - 1)

    def _load(self) -> Any:
        if self._pipe is not None:
            return self._pipe
        assert self._source is not None
        key = (self._source.key, str(self.device), str(self.dtype))
        with _PIPELINES_LOCK:
            pipe = _PIPELINES.get(key)
            if pipe is None:
                pipe = load_pipeline(self._source, dtype=self.dtype, allow_download=self.allow_download,
                                     allow_pickle=self.allow_pickle)
                pipe = self._prepare(pipe)
                _PIPELINES[key] = pipe
        self._pipe = pipe
        return pipe

    def _prepare(self, pipe: Any) -> Any:
        import torch

        for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
            if getattr(pipe, name, None) is None:
                raise ModelError(f"the pipeline has no {name}", "load a full SD1.5 model")
        in_ch = int(pipe.unet.config.in_channels)
        if in_ch not in (4, 9):
            raise ModelError(f"the UNet takes {in_ch} input channels; only 9 (inpainting) and 4 are supported",
                             "use an SD1.5 or SD1.5-inpainting model")
        try:
            with quiet_libraries():
                if all(m.dtype == self.dtype for m in (pipe.unet, pipe.vae, pipe.text_encoder)):
                    pipe.to(self.device)
                else:
                    pipe.to(self.device, self.dtype)
        except RuntimeError as exc:  # e.g. CUDA out of memory
            raise ModelError(f"could not move the model to {self.device} ({' '.join(str(exc).split())[:160]})",
                             "free GPU memory or use --device cpu") from None
        if hasattr(pipe, "safety_checker"):
            pipe.safety_checker = None
        pipe.set_progress_bar_config(disable=True)
        for m in (pipe.unet, pipe.vae, pipe.text_encoder):
            m.eval()
            m.requires_grad_(False)
        # SDPA attention: diffusers' default processor on torch 2; set it explicitly in case a loader changed it.
        try:
            from diffusers.models.attention_processor import AttnProcessor2_0

            if hasattr(torch.nn.functional, "scaled_dot_product_attention"):
                pipe.unet.set_attn_processor(AttnProcessor2_0())
                pipe.vae.set_attn_processor(AttnProcessor2_0())
        except Exception:  # pragma: no cover - processor API differences across diffusers versions
            pass
        return pipe

    # --- building blocks (kept as single methods so tiled versions can replace them) -----------------------

    def _make_scheduler(self) -> Any:
        """A fresh scheduler of the chosen kind (schedulers keep per-run state)."""
        from diffusers import (
            DDIMScheduler,
            DPMSolverMultistepScheduler,
            EulerAncestralDiscreteScheduler,
            UniPCMultistepScheduler,
        )

        base = dict(self._load().scheduler.config)
        if self.scheduler == "dpmpp_2m_karras":
            return DPMSolverMultistepScheduler.from_config(base, algorithm_type="dpmsolver++", solver_order=2,
                                                           use_karras_sigmas=True)
        if self.scheduler == "ddim":
            return DDIMScheduler.from_config(base, clip_sample=False, set_alpha_to_one=False)
        if self.scheduler == "euler_a":
            return EulerAncestralDiscreteScheduler.from_config(base)
        return UniPCMultistepScheduler.from_config(base)

    def _encode_prompt(self, prompt: str | None) -> torch.Tensor:
        """CLIP embeddings: ``[uncond, cond]`` (2, 77, D) with guidance > 1, else ``[cond]``; cached per prompt."""
        import torch

        prompt = prompt or ""
        key = (prompt, self.negative_prompt if self.guidance > 1.0 else "")
        hit = self._prompt_cache.get(key)
        if hit is not None:
            self._prompt_cache.move_to_end(key)
            return hit
        pipe = self._load()
        texts = [key[1], prompt] if self.guidance > 1.0 else [prompt]
        tok = pipe.tokenizer(texts, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt")
        with torch.inference_mode():
            emb = pipe.text_encoder(tok.input_ids.to(self.device))[0].to(self.dtype)
        self._prompt_cache[key] = emb
        while len(self._prompt_cache) > 8:
            self._prompt_cache.popitem(last=False)
        return emb

    def _vae_encode(self, image_tensor: torch.Tensor) -> torch.Tensor:
        """Pixels (B, 3, H, W) in [-1, 1] -> scaled latents (B, 4, H/8, W/8), float32 (distribution mean).

        Images larger than ``untiled_max`` are encoded by the tiled VAE (shared GroupNorm statistics); the image
        stays on the CPU and only tiles move to the device."""
        from crispedit import tiling

        vae = self._load().vae
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        if self._tiled(image_tensor.shape[2], image_tensor.shape[3]):
            lat = tiling.tiled_vae_encode(vae, image_tensor, tile=8 * self.vae_tile,
                                          max_cache_bytes=self.vae_cache_bytes, progress=self._report("vae encode"))
            lat = lat.to(self.device).float()
        else:
            x = image_tensor.to(self.device, vae.dtype)
            lat = vae.encode(x).latent_dist.mode().float()
        return (lat - shift) * float(vae.config.scaling_factor)

    def _vae_decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents (B, 4, h, w) -> pixels (B, 3, 8h, 8w) in [-1, 1], float32.

        Images larger than ``untiled_max`` are decoded by the tiled VAE into a CPU tensor (tiles on the device)."""
        from crispedit import tiling

        vae = self._load().vae
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        f = self.vae_scale_factor
        if self._tiled(latents.shape[2] * f, latents.shape[3] * f):
            z = (latents.float() / float(vae.config.scaling_factor) + shift).cpu()
            px = tiling.tiled_vae_decode(vae, z, tile=self.vae_tile, max_cache_bytes=self.vae_cache_bytes,
                                         progress=self._report("vae decode"))
            del z
            return px.float().clamp_(-1.0, 1.0)
        z = (latents / float(vae.config.scaling_factor) + shift).to(self.device, vae.dtype)
        return vae.decode(z).sample.float().clamp(-1.0, 1.0)

    def _predict_noise(self, latents_in: torch.Tensor, t: Any, cond: torch.Tensor) -> torch.Tensor:
        """One UNet evaluation with classifier-free guidance. ``latents_in``: the full UNet input (B, C_in, h, w)
        (for the 9-channel UNet already ``[latents, mask, masked-image latents]``); returns eps (B, 4, h, w) fp32."""
        import torch

        unet = self._load().unet
        b = latents_in.shape[0]
        x = latents_in.to(self.device, unet.dtype)
        if cond.shape[0] == 2:
            uncond, c = cond[:1], cond[1:]
            hidden = torch.cat([uncond.expand(b, -1, -1), c.expand(b, -1, -1)])
            eps = unet(torch.cat([x, x]), t, encoder_hidden_states=hidden, return_dict=False)[0].float()
            eps_u, eps_c = eps.chunk(2)
            return eps_u + self.guidance * (eps_c - eps_u)
        return unet(x, t, encoder_hidden_states=cond.expand(b, -1, -1), return_dict=False)[0].float()

    def _denoise(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        cond: torch.Tensor,
        *,
        mask_latents: torch.Tensor | None = None,
        known_latents: torch.Tensor | None = None,
        masked_image_latents: torch.Tensor | None = None,
        scheduler: Any = None,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The sampling loop over ``timesteps`` (already cut to the strength).

        ``masked_image_latents`` given: the 9-channel UNet input ``[latents, mask_latents, masked_image_latents]``.
        ``known_latents`` given: RePaint-style blending for a 4-channel UNet, after each step the latents where
        ``mask_latents == 0`` become ``known_latents`` noised to the next timestep (with ``noise``), clean after
        the last step. ``scheduler`` must have had ``set_timesteps`` called (default: a fresh one, full schedule).

        A latent of an image larger than ``untiled_max`` and than one ``tile`` gets its noise predicted tile by tile
        (:func:`crispedit.tiling.tiled_noise_prediction`); everything else (scheduler, blending) is whole-latent.
        """
        import torch

        from crispedit import tiling

        if scheduler is None:
            scheduler = self._make_scheduler()
            scheduler.set_timesteps(self.steps, device=self.device)
        if known_latents is not None:
            if mask_latents is None:
                raise ValueError("known_latents needs mask_latents")
            if noise is None:
                noise = torch.randn(known_latents.shape, generator=generator, dtype=torch.float32).to(self.device)
        step_kwargs: dict[str, Any] = {}
        if generator is not None and "generator" in inspect.signature(scheduler.step).parameters:
            step_kwargs["generator"] = generator
        total = len(timesteps)
        latents = latents.float()
        f = self.vae_scale_factor
        tiled = self._tiled(latents.shape[2] * f, latents.shape[3] * f) and (
            latents.shape[2] > self.tile or latents.shape[3] > self.tile)
        extra = None
        if tiled and masked_image_latents is not None:
            extra = torch.cat([mask_latents.to(latents), masked_image_latents.to(latents)], dim=1)
        for i, t in enumerate(timesteps):
            x = scheduler.scale_model_input(latents, t)
            if tiled:  # scale_model_input is pointwise; the scheduler still steps on the whole latent below
                eps = tiling.tiled_noise_prediction(
                    lambda xt, t=t: self._predict_noise(xt, t, cond), x, tile=self.tile, overlap=self.tile_overlap,
                    batch=self.tile_batch, extra=extra, progress=self._report("tiles"))
            else:
                if masked_image_latents is not None:
                    x = torch.cat([x, mask_latents.to(x), masked_image_latents.to(x)], dim=1)
                eps = self._predict_noise(x, t, cond)
            latents = scheduler.step(eps, t, latents, return_dict=False, **step_kwargs)[0].float()
            if known_latents is not None:
                if i + 1 < total:
                    known_t = scheduler.add_noise(known_latents, noise, timesteps[i + 1:i + 2])
                else:
                    known_t = known_latents
                latents = mask_latents * latents + (1.0 - mask_latents) * known_t
            if self.progress is not None:
                self.progress("denoise", i + 1, total)
        return latents

    # --- helpers ---------------------------------------------------------------------------------------------

    def _timesteps(self, scheduler: Any, strength: float) -> torch.Tensor:
        """diffusers' img2img schedule: the last ``steps * strength`` steps (at least one)."""
        scheduler.set_timesteps(self.steps, device=self.device)
        init = min(max(int(self.steps * strength), 1), self.steps)
        start = (self.steps - init) * scheduler.order
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(start)
        return scheduler.timesteps[start:]

    @staticmethod
    def _image_tensor(image: Image.Image, pw: int, ph: int) -> torch.Tensor:
        """PIL RGB -> (1, 3, ph, pw) float32 in [-1, 1], padded right/bottom by edge replication."""
        import torch

        rgb = np.array(image.convert("RGB"), dtype=np.uint8)
        h, w = rgb.shape[:2]
        if (ph, pw) != (h, w):
            rgb = np.pad(rgb, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")
        out = torch.empty((1, 3, ph, pw), dtype=torch.float32)  # one float buffer: a 4K+ image is 100s of MB
        out[0].copy_(torch.from_numpy(rgb).permute(2, 0, 1))
        return out.div_(127.5).sub_(1.0)

    @staticmethod
    def _mask_tensor(mask: Image.Image, pw: int, ph: int) -> torch.Tensor:
        """PIL L -> (1, 1, ph, pw) float32 {0, 1} (>= 128 is regenerated), padded with 0 (keep)."""
        import torch

        m = (np.asarray(mask.convert("L")) >= 128).astype(np.float32)
        h, w = m.shape
        if (ph, pw) != (h, w):
            m = np.pad(m, ((0, ph - h), (0, pw - w)))
        return torch.from_numpy(m)[None, None]

    @staticmethod
    def _to_pil(pixels: torch.Tensor, w: int, h: int) -> Image.Image:
        import torch

        px = torch.nan_to_num(pixels[0].float(), nan=0.0, posinf=1.0, neginf=-1.0).cpu()  # fp16 overflow: no crash
        px.add_(1.0).mul_(127.5).round_().clamp_(0, 255)  # in place: one float copy of a 4K+ image, not five
        a = px.to(torch.uint8).permute(1, 2, 0).numpy()
        return Image.fromarray(np.ascontiguousarray(a[:h, :w]), "RGB")

    # --- the engine protocol -------------------------------------------------------------------------------------

    def inpaint(
        self,
        image: Image.Image,
        mask: Image.Image,
        prompt: str | None,
        *,
        seed: int | None = None,
        strength: float = 1.0,
        region: Region | None = None,
    ) -> Image.Image:
        """Regenerate the masked area (mask L, >= 128 = regenerate) of an RGB crop; returns RGB of the same size.

        ``strength=1`` starts from noise; ``strength<1`` refines what is in the masked area (img2img inside the
        mask). Pixels outside the mask come back through the VAE (slightly changed); the caller composites.
        """
        if mask.size != image.size:
            raise InputError(f"mask size {mask.size} differs from image size {image.size}",
                             "give the engine a mask of the crop's size")
        return self._run("inpaint", image, mask, prompt, seed, strength, region)

    def img2img(self, image: Image.Image, prompt: str | None, *, strength: float, seed: int | None = None
                ) -> Image.Image:
        """Re-imagine the whole image: noise it to ``strength`` and denoise (0 keeps it, 1 ignores it)."""
        return self._run("img2img", image, None, prompt, seed, strength, None)

    def txt2img(self, prompt: str | None, *, width: int = 512, height: int = 512, seed: int | None = None
                ) -> Image.Image:
        """Generate a ``width`` x ``height`` image from the prompt."""
        if int(width) < 8 or int(height) < 8:
            raise InputError(f"size {width}x{height} is too small", "use at least 8x8 (SD1.5 works best at 512)")
        return self._run("txt2img", Image.new("RGB", (int(width), int(height))), None, prompt, seed, 1.0, None)

    def _run(self, kind: str, image: Image.Image, mask: Image.Image | None, prompt: str | None,
             seed: int | None, strength: float, region: Region | None) -> Image.Image:
        import torch

        t0 = time.perf_counter()
        try:
            strength = float(strength)
        except (TypeError, ValueError):
            raise InputError(f"strength must be a number, got {strength!r}", "use a value in [0, 1]") from None
        if not 0.0 <= strength <= 1.0:
            raise InputError(f"strength {strength} is outside [0, 1]", "use a value in [0, 1]")
        image = image.convert("RGB")
        w, h = image.size
        seed = int(seed) if seed is not None else secrets.randbits(31)
        record = {"kind": kind, "size": (w, h), "strength": strength, "steps": 0, "seconds": 0.0, "seed": seed,
                  "scheduler": self.scheduler, "region": tuple(region) if region is not None else None}
        m_px = None
        pipe = self._load()
        f = self.vae_scale_factor
        pw, ph = _ceil_to(w, f), _ceil_to(h, f)
        if mask is not None:
            m_px = self._mask_tensor(mask, pw, ph)
        if strength == 0.0 or (m_px is not None and not bool(m_px.any())):
            record["seconds"] = round(time.perf_counter() - t0, 4)
            self.calls.append(record)
            return image.copy()

        nine = int(pipe.unet.config.in_channels) == 9
        gen = torch.Generator("cpu").manual_seed(seed)
        with torch.inference_mode():
            scheduler = self._make_scheduler()
            timesteps = self._timesteps(scheduler, strength)
            cond = self._encode_prompt(prompt)
            shape = (1, int(pipe.vae.config.latent_channels), ph // f, pw // f)
            noise = torch.randn(shape, generator=gen, dtype=torch.float32).to(self.device)
            img_t = self._image_tensor(image, pw, ph) if kind != "txt2img" else None
            need_known = kind == "inpaint" and not nine
            image_latents = self._vae_encode(img_t) if (strength < 1.0 or need_known) and img_t is not None else None
            if not nine:
                img_t = None  # image-sized; not needed while sampling
            if strength < 1.0 and image_latents is not None:
                latents = scheduler.add_noise(image_latents, noise, timesteps[:1])
            else:
                latents = noise * float(scheduler.init_noise_sigma)
            mask_lat = None
            if m_px is not None:  # a latent is regenerated when any pixel of its 8x8 block is
                mask_lat = torch.nn.functional.max_pool2d(m_px, kernel_size=f).to(self.device)
            masked_image_latents = None
            if nine:
                if kind == "inpaint":
                    masked = img_t * (m_px < 0.5)
                else:  # img2img / txt2img with an inpainting UNet: everything is "masked", nothing is known
                    masked = torch.zeros((1, 3, ph, pw))
                    mask_lat = torch.ones((1, 1, ph // f, pw // f), device=self.device)
                masked_image_latents = self._vae_encode(masked)
                masked = img_t = None
                latents = self._denoise(latents, timesteps, cond, mask_latents=mask_lat,
                                        masked_image_latents=masked_image_latents, scheduler=scheduler,
                                        generator=gen, noise=noise)
            elif need_known:
                latents = self._denoise(latents, timesteps, cond, mask_latents=mask_lat, known_latents=image_latents,
                                        scheduler=scheduler, generator=gen, noise=noise)
            else:
                latents = self._denoise(latents, timesteps, cond, scheduler=scheduler, generator=gen, noise=noise)
            pixels = self._vae_decode(latents)
        out = self._to_pil(pixels, w, h)
        record["steps"] = len(timesteps)
        record["tiles"] = self._tile_count(ph // f, pw // f)
        record["seconds"] = round(time.perf_counter() - t0, 4)
        self.calls.append(record)
        return out


register_engine("sd15", SD15Engine)
