"""Tiny random Stable-Diffusion-1.5-shaped models for offline tests (no downloaded weights).

Same architecture families as SD1.5 (UNet2DConditionModel with cross attention, an /8 AutoencoderKL with a
mid-block attention, a CLIP text encoder, a CLIP BPE tokenizer), just a few thousand times smaller, so the real
loading and sampling code of :mod:`crispedit.engines.sd15` runs on them in well under a second per call.

Importable from any test as ``from tiny_sd import ...`` (pytest puts ``tests/`` on ``sys.path``).

- :func:`build_tiny_pipeline` -> a diffusers pipeline (``StableDiffusionInpaintPipeline`` for the 9-channel
  inpainting UNet, ``StableDiffusionPipeline`` for the plain 4-channel UNet), seeded, so always the same weights.
- :func:`save_tiny_folder` -> a diffusers folder (``model_index.json`` + safetensors), like a HF snapshot.
- :func:`save_tiny_single_file` -> one ``.safetensors`` in the *original* (CompVis/LDM) key layout that
  ``from_single_file`` reads (``model.diffusion_model.*``, ``first_stage_model.*``,
  ``cond_stage_model.transformer.*``), with the diffusers config folder (configs + tokenizer, no weights) written
  next to it, which is where the engine looks for a config offline.
"""

from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path
from typing import Any

import pytest

#: Prompt words the tiny tokenizer knows as whole tokens (everything else falls back to letters).
_MERGES = ["a n", "an d</w>", "t h", "th e</w>", "b e", "be n", "ben c", "benc h</w>"]


def write_tiny_tokenizer_files(folder: str | Path) -> Path:
    """Write a few-token CLIP BPE vocabulary (``vocab.json`` + ``merges.txt``) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = list(string.ascii_lowercase + string.digits + ".,!?'-")
    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    for m in _MERGES:
        vocab[m.replace(" ", "")] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(_MERGES) + "\n")
    return folder


def tiny_vocab_size() -> int:
    return 2 + 2 * len(string.ascii_lowercase + string.digits + ".,!?'-") + len(_MERGES)


def build_tiny_components(in_channels: int = 9) -> dict[str, Any]:
    """unet, vae, text_encoder, tokenizer, scheduler: tiny, random, reproducible (seeded)."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    if in_channels not in (4, 9):
        raise ValueError("in_channels must be 9 (inpainting UNet) or 4 (txt2img UNet)")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=in_channels,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    torch.manual_seed(1)
    vae = AutoencoderKL(  # four blocks: /8 like SD's VAE
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 16, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
        scaling_factor=0.18215,
    )
    torch.manual_seed(2)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32, intermediate_size=37,
        layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=2, vocab_size=tiny_vocab_size(),
        max_position_embeddings=77, projection_dim=32,
    ))
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = CLIPTokenizer.from_pretrained(write_tiny_tokenizer_files(tmp), model_max_length=77)
    scheduler = PNDMScheduler(  # the SD1.5 repos' scheduler config
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
        set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1,
    )
    for m in (unet, vae, text_encoder):
        m.eval()
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer, "scheduler": scheduler}


def build_tiny_pipeline(in_channels: int = 9):
    """A tiny SD1.5-shaped diffusers pipeline with random weights (same weights every call)."""
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline

    cls = StableDiffusionInpaintPipeline if in_channels == 9 else StableDiffusionPipeline
    return cls(**build_tiny_components(in_channels), safety_checker=None, feature_extractor=None,
               requires_safety_checker=False)


def save_tiny_folder(path: str | Path, in_channels: int = 9) -> Path:
    """Save a tiny pipeline as a diffusers folder (safetensors weights) and return the folder."""
    path = Path(path)
    build_tiny_pipeline(in_channels).save_pretrained(path, safe_serialization=True)
    return path


def build_micro_pipeline(in_channels: int = 4):
    """An even smaller SD1.5-shaped pipeline for whole-image work at 4K-8K in tests and benchmarks.

    The tiny UNet above has self-attention at full tile resolution (4096 tokens on a 64x64 latent tile: ~1 s per
    guided tile on one CPU core, minutes per 4K step); this one has convolutions only at the two upper levels and
    attention (self and cross) only in the mid block at 1/4 of the tile (256 tokens), and a 4-8-channel VAE
    without the mid-block attention (global attention over a 4K latent is quadratic: tens of seconds even at 8
    channels), so a 3840x2160 whole-image edit runs in seconds. Same text encoder and tokenizer as
    :func:`build_tiny_pipeline`.
    """
    import torch
    from diffusers import AutoencoderKL, StableDiffusionInpaintPipeline, StableDiffusionPipeline, UNet2DConditionModel

    comps = build_tiny_components(in_channels)
    torch.manual_seed(3)
    comps["unet"] = UNet2DConditionModel(
        sample_size=16, in_channels=in_channels, out_channels=4, layers_per_block=1, block_out_channels=(8, 16, 16),
        down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
    ).eval()
    torch.manual_seed(4)
    comps["vae"] = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(4, 4, 8, 8), layers_per_block=1,
        latent_channels=4, norm_num_groups=4, sample_size=64, scaling_factor=0.18215, mid_block_add_attention=False,
    ).eval()
    cls = StableDiffusionInpaintPipeline if in_channels == 9 else StableDiffusionPipeline
    return cls(**comps, safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def save_micro_folder(path: str | Path, in_channels: int = 4) -> Path:
    """Save :func:`build_micro_pipeline` as a diffusers folder and return the folder."""
    path = Path(path)
    build_micro_pipeline(in_channels).save_pretrained(path, safe_serialization=True)
    return path


# --- diffusers -> original (CompVis/LDM) key layout --------------------------------------------------------

_UNET_RESNET = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
                ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection")]
_VAE_ATTN = [("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")]


def _rename(rest: str, pairs: list[tuple[str, str]]) -> str:
    for new, old in pairs:
        if rest.startswith(new + "."):
            return old + rest[len(new):]
    return rest


def unet_to_ldm(state: dict, config: dict) -> dict:
    """Rename a diffusers ``UNet2DConditionModel`` state dict to the LDM ``model.diffusion_model.*`` layout."""
    lpb = int(config["layers_per_block"])
    has_attn = ["CrossAttn" in t for t in config["up_block_types"]]
    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        new = None
        head = ".".join(parts[:-1])
        if head in fixed:
            new = f"{fixed[head]}.{parts[-1]}"
        elif parts[0] == "down_blocks":
            b = int(parts[1])
            if parts[2] == "downsamplers":  # down_blocks.b.downsamplers.0.conv.weight
                new = f"input_blocks.{(lpb + 1) * (b + 1)}.0.op.{parts[-1]}"
            else:
                j = int(parts[3])
                idx = (lpb + 1) * b + j + 1
                rest = ".".join(parts[4:])
                if parts[2] == "resnets":
                    new = f"input_blocks.{idx}.0.{_rename(rest, _UNET_RESNET)}"
                else:
                    new = f"input_blocks.{idx}.1.{rest}"
        elif parts[0] == "mid_block":
            k = int(parts[2])
            rest = ".".join(parts[3:])
            if parts[1] == "resnets":
                new = f"middle_block.{2 * k}.{_rename(rest, _UNET_RESNET)}"
            else:
                new = f"middle_block.1.{rest}"
        elif parts[0] == "up_blocks":
            b = int(parts[1])
            if parts[2] == "upsamplers":
                new = f"output_blocks.{(lpb + 1) * b + lpb}.{2 if has_attn[b] else 1}.conv.{parts[-1]}"
            else:
                j = int(parts[3])
                idx = (lpb + 1) * b + j
                rest = ".".join(parts[4:])
                if parts[2] == "resnets":
                    new = f"output_blocks.{idx}.0.{_rename(rest, _UNET_RESNET)}"
                else:
                    new = f"output_blocks.{idx}.1.{rest}"
        if new is None:
            raise KeyError(f"no LDM name for UNet key {key}")
        out["model.diffusion_model." + new] = value
    return out


def vae_to_ldm(state: dict, config: dict) -> dict:
    """Rename a diffusers ``AutoencoderKL`` state dict to the LDM ``first_stage_model.*`` layout."""
    n_up = len(config["up_block_types"])
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        new = key
        if parts[0] in ("encoder", "decoder"):
            side, rest = parts[0], parts[1:]
            if rest[0] == "conv_norm_out":
                new = f"{side}.norm_out.{rest[-1]}"
            elif rest[0] in ("down_blocks", "up_blocks"):
                i = int(rest[1])
                name = "down" if rest[0] == "down_blocks" else "up"
                i_ldm = i if name == "down" else n_up - 1 - i
                if rest[2] == "resnets":
                    tail = ".".join(rest[4:]).replace("conv_shortcut", "nin_shortcut")
                    new = f"{side}.{name}.{i_ldm}.block.{rest[3]}.{tail}"
                else:  # downsamplers.0.conv.* / upsamplers.0.conv.*
                    new = f"{side}.{name}.{i_ldm}.{'downsample' if name == 'down' else 'upsample'}.conv.{rest[-1]}"
            elif rest[0] == "mid_block":
                if rest[1] == "resnets":
                    new = f"{side}.mid.block_{int(rest[2]) + 1}.{'.'.join(rest[3:])}"
                else:
                    new = f"{side}.mid.attn_1.{_rename('.'.join(rest[3:]), _VAE_ATTN)}"
                    if value.ndim == 2:  # LDM keeps attention projections as 1x1 convs
                        value = value[:, :, None, None]
        out["first_stage_model." + new] = value
    return out


def clip_to_ldm(state: dict) -> dict:
    """Rename a transformers ``CLIPTextModel`` state dict to ``cond_stage_model.transformer.text_model.*``."""
    out = {}
    for key, value in state.items():
        rest = key if key.startswith("text_model.") else "text_model." + key
        out["cond_stage_model.transformer." + rest] = value
    return out


def pipeline_to_ldm_state_dict(pipe) -> dict:
    """The whole pipeline as one LDM-layout state dict (what a ``.safetensors`` from the hub or civitai holds)."""
    sd = {}
    sd.update(unet_to_ldm(pipe.unet.state_dict(), dict(pipe.unet.config)))
    sd.update(vae_to_ldm(pipe.vae.state_dict(), dict(pipe.vae.config)))
    sd.update(clip_to_ldm(pipe.text_encoder.state_dict()))
    return {k: v.detach().contiguous() for k, v in sd.items()}


def save_tiny_config_folder(folder: str | Path, in_channels: int = 9) -> Path:
    """The diffusers config folder of the tiny model: ``model_index.json``, component configs, tokenizer; no weights."""
    folder = Path(folder)
    pipe = build_tiny_pipeline(in_channels)
    with tempfile.TemporaryDirectory() as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        for f in Path(tmp).rglob("*"):
            if f.is_file() and f.suffix in (".json", ".txt"):
                dest = folder / f.relative_to(tmp)
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(f.read_bytes())
    return folder


def save_tiny_single_file(path: str | Path, in_channels: int = 9, *, with_config: bool = True) -> Path:
    """Save the tiny pipeline as one original-layout ``.safetensors`` file.

    With ``with_config`` the diffusers config folder (no weights) is written into the file's directory, which
    the engine uses as ``from_single_file(config=...)``; pass ``with_config=False`` to get only the file (then
    give the engine ``config=`` yourself).
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(pipeline_to_ldm_state_dict(build_tiny_pipeline(in_channels)), str(path))
    if with_config:
        save_tiny_config_folder(path.parent, in_channels)
    return path


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from threads; on busy shared cores extra threads only spin (5x the CPU time).

    Modules that import this fixture from ``tiny_sd`` get it automatically (autouse).
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
