"""Where the SD1.5 weights come from, and loading them into a diffusers pipeline without surprises.

Three sources are accepted for ``--model``:

- a Hugging Face id (default ``stable-diffusion-v1-5/stable-diffusion-inpainting``): read from the local HF
  cache only, unless downloads are allowed;
- a local diffusers folder (``model_index.json`` + ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``);
- one ``.safetensors`` file in the original (CompVis/LDM) layout, as fine-tunes are shared.

A single file holds weights but no configs and no tokenizer; diffusers' ``from_single_file`` would fetch them
from the hub. Offline we give it ``config=`` a local diffusers config folder instead, found in this order:
the ``config`` option; the file's own folder when it holds a ``model_index.json``; a cached SD1.5 repo of the
same UNet kind; a config folder built from SD1.5's published configs plus a CLIP tokenizer copied from any
cached SD1.5 / CLIP repo. When none is there: a :class:`~crispedit.errors.ModelError` naming the small download.

Pickle checkpoints (``.ckpt``, ``.bin``, ``.pt``, ``.pth``) run code when loaded and are refused unless
``allow_pickle``. Every failure becomes one ``ModelError`` line; the hub is never contacted unless
``allow_download``.

Only the standard library is imported at module level; torch, diffusers and huggingface_hub are imported when
a model is actually resolved or loaded.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from crispedit.errors import ModelError

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-inpainting"
#: SD1.5 repos whose configs fit a single file, per UNet input channels (first: what diffusers itself uses).
SD15_CONFIG_REPOS = {
    9: ("stable-diffusion-v1-5/stable-diffusion-inpainting", "runwayml/stable-diffusion-inpainting"),
    4: ("stable-diffusion-v1-5/stable-diffusion-v1-5", "runwayml/stable-diffusion-v1-5"),
}
#: Repos that hold the CLIP ViT-L/14 tokenizer SD1.5 uses (``tokenizer/`` subfolder or at the root).
TOKENIZER_REPOS = (
    ("stable-diffusion-v1-5/stable-diffusion-inpainting", "tokenizer"),
    ("stable-diffusion-v1-5/stable-diffusion-v1-5", "tokenizer"),
    ("runwayml/stable-diffusion-inpainting", "tokenizer"),
    ("runwayml/stable-diffusion-v1-5", "tokenizer"),
    ("openai/clip-vit-large-patch14", ""),
)
PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth")
SINGLE_FILE_SUFFIXES = (".safetensors", ".sft")
UNET_IN_KEY = "model.diffusion_model.input_blocks.0.0.weight"
CLIP_KEY = "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight"
_CONFIG_FILES = ("model_index.json", "unet/config.json", "vae/config.json", "text_encoder/config.json",
                 "scheduler/scheduler_config.json")
_HF_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


@dataclass(frozen=True)
class ModelSource:
    """A resolved model: what to load and how.

    ``kind``: ``"hub"``, ``"folder"`` or ``"single_file"``. ``location``: repo id, folder or file path.
    ``config``: the diffusers config folder for a single file. ``in_channels``: 9 (inpainting UNet) or 4;
    None when it is only known after a download.
    """

    kind: str
    location: str
    config: str | None = None
    in_channels: int | None = None
    pickle: bool = False

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.location}:{self.config or ''}"


# --- small helpers --------------------------------------------------------------------------------------


@contextlib.contextmanager
def hub_offline(offline: bool = True) -> Iterator[None]:
    """Make huggingface_hub refuse network access inside the block (``HF_HUB_OFFLINE=1``), then restore."""
    if not offline:
        yield
        return
    old_env = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import huggingface_hub.constants as hc
    except ImportError:  # pragma: no cover - diffusers depends on it
        hc = None
    old_const = getattr(hc, "HF_HUB_OFFLINE", None)
    if hc is not None:
        hc.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        if old_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old_env
        if hc is not None:
            hc.HF_HUB_OFFLINE = old_const


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Silence diffusers/transformers warnings and progress bars while loading (restored afterwards)."""
    import diffusers.utils.logging as dlog

    try:
        import transformers.utils.logging as tlog
    except ImportError:  # pragma: no cover
        tlog = None
    d_level, d_bars = dlog.get_verbosity(), dlog.is_progress_bar_enabled()
    dlog.set_verbosity_error()
    dlog.disable_progress_bar()
    if tlog is not None:
        t_level, t_bars = tlog.get_verbosity(), tlog.is_progress_bar_enabled()
        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # e.g. diffusers renaming torch_dtype -> dtype
            yield
    finally:
        dlog.set_verbosity(d_level)
        if d_bars:
            dlog.enable_progress_bar()
        if tlog is not None:
            tlog.set_verbosity(t_level)
            if t_bars:
                tlog.enable_progress_bar()


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def crispedit_cache_dir() -> Path:
    """Where crispedit writes derived files (``$CRISPEDIT_CACHE``, else ``~/.cache/crispedit``)."""
    env = os.environ.get("CRISPEDIT_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "crispedit"


def cached_repo_folder(repo_id: str, must_have: tuple[str, ...] = ("model_index.json",)) -> Path | None:
    """The local snapshot folder of ``repo_id`` if every file of ``must_have`` is in the HF cache; no network."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    folder = None
    for name in must_have:
        try:
            hit = try_to_load_from_cache(repo_id, name)
        except Exception:  # malformed id, unreadable cache: treat as not cached
            return None
        if not isinstance(hit, str):
            return None
        here = Path(hit).parent
        for _ in name.split("/")[:-1]:
            here = here.parent
        folder = folder or here
    return folder


def read_in_channels(folder: Path) -> int | None:
    try:
        return int(json.loads((folder / "unet" / "config.json").read_text())["in_channels"])
    except Exception:
        return None


def single_file_in_channels(path: Path, allow_pickle: bool) -> int:
    """UNet input channels (9 inpainting, 4 txt2img) from a single-file checkpoint, reading only the header."""
    if path.suffix.lower() in SINGLE_FILE_SUFFIXES:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                keys = set(f.keys())
                shape = list(f.get_slice(UNET_IN_KEY).get_shape()) if UNET_IN_KEY in keys else None
        except Exception as exc:
            raise ModelError(f"cannot read {path} as safetensors ({_one_line(exc, 120)})",
                             "check that the file is complete (re-download it)") from None
    else:
        from diffusers.models.model_loading_utils import load_state_dict

        try:
            sd = load_state_dict(str(path))
        except Exception as exc:
            raise ModelError(f"cannot read checkpoint {path} ({_one_line(exc, 120)})",
                             "use a .safetensors file") from None
        while isinstance(sd, dict) and "state_dict" in sd:
            sd = sd["state_dict"]
        keys = set(sd)
        shape = list(sd[UNET_IN_KEY].shape) if UNET_IN_KEY in sd else None
    if shape is None:
        if any(k.startswith("conditioner.embedders") for k in keys):
            raise ModelError(f"{path.name} looks like an SDXL checkpoint; this engine runs Stable Diffusion 1.5",
                             "use an SD1.5 checkpoint (e.g. sd-v1-5-inpainting.safetensors)")
        raise ModelError(f"{path.name} holds no SD1.5 UNet ({UNET_IN_KEY} missing)",
                         "pass an original-layout SD1.5 .safetensors or a diffusers folder")
    if CLIP_KEY not in keys:
        raise ModelError(f"{path.name} holds no SD1.5 CLIP text encoder (SD2/SDXL or a UNet-only file?)",
                         "pass a full SD1.5 checkpoint (UNet + VAE + text encoder)")
    if len(shape) != 4 or shape[1] not in (4, 9):
        raise ModelError(f"{path.name}: UNet takes {shape[1] if len(shape) == 4 else '?'} input channels; "
                         "only 9 (inpainting) and 4 (txt2img) are supported", "use an SD1.5 or SD1.5-inpainting file")
    return int(shape[1])


# --- SD1.5 published configs (for a single file when no config folder is around) ---------------------------


def sd15_configs(in_channels: int) -> dict[str, dict[str, Any]]:
    """The diffusers configs of the SD1.5 repos (architecture constants), with the UNet's input channels."""
    return {
        "model_index.json": {
            "_class_name": "StableDiffusionInpaintPipeline" if in_channels == 9 else "StableDiffusionPipeline",
            "_diffusers_version": "0.31.0",
            "feature_extractor": [None, None], "safety_checker": [None, None], "requires_safety_checker": False,
            "scheduler": ["diffusers", "PNDMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
        },
        "unet/config.json": {
            "_class_name": "UNet2DConditionModel", "act_fn": "silu", "attention_head_dim": 8,
            "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": False, "cross_attention_dim": 768,
            "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                 "DownBlock2D"],
            "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": in_channels,
            "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32,
            "out_channels": 4, "sample_size": 64,
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        },
        "vae/config.json": {
            "_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
            "down_block_types": ["DownEncoderBlock2D"] * 4, "in_channels": 3, "latent_channels": 4,
            "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 3, "sample_size": 512,
            "scaling_factor": 0.18215, "up_block_types": ["UpDecoderBlock2D"] * 4,
        },
        "text_encoder/config.json": {
            "architectures": ["CLIPTextModel"], "attention_dropout": 0.0, "bos_token_id": 0, "dropout": 0.0,
            "eos_token_id": 2, "hidden_act": "quick_gelu", "hidden_size": 768, "initializer_factor": 1.0,
            "initializer_range": 0.02, "intermediate_size": 3072, "layer_norm_eps": 1e-05,
            "max_position_embeddings": 77, "model_type": "clip_text_model", "num_attention_heads": 12,
            "num_hidden_layers": 12, "pad_token_id": 1, "projection_dim": 768, "vocab_size": 49408,
        },
        "scheduler/scheduler_config.json": {
            "_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
            "beta_start": 0.00085, "clip_sample": False, "num_train_timesteps": 1000, "set_alpha_to_one": False,
            "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None,
        },
    }


def find_cached_tokenizer() -> Path | None:
    """A cached folder with the CLIP ViT-L/14 tokenizer files (vocab.json + merges.txt), or None."""
    for repo, sub in TOKENIZER_REPOS:
        root = cached_repo_folder(repo, (f"{sub}/tokenizer_config.json" if sub else "tokenizer_config.json",))
        if root is not None and has_tokenizer_files(root / sub if sub else root):
            return root / sub if sub else root
    return None


def has_tokenizer_files(folder: Path) -> bool:
    """A CLIP tokenizer is there: ``vocab.json`` + ``merges.txt``, or a ``tokenizer.json``."""
    return ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()) or (
        folder / "tokenizer.json").is_file()


def build_config_folder(in_channels: int, tokenizer_dir: str | Path, dest: str | Path | None = None) -> Path:
    """Write an SD1.5 diffusers config folder (no weights) with the tokenizer files of ``tokenizer_dir``."""
    tokenizer_dir = Path(tokenizer_dir)
    dest = Path(dest) if dest is not None else crispedit_cache_dir() / "sd15-config" / f"unet{in_channels}ch"
    if all((dest / n).is_file() for n in _CONFIG_FILES) and has_tokenizer_files(dest / "tokenizer"):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".sd15cfg-", dir=dest.parent))
    try:
        for name, cfg in sd15_configs(in_channels).items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_text(json.dumps(cfg, indent=1))
        tok = tmp / "tokenizer"
        tok.mkdir()
        for name in ("vocab.json", "merges.txt", "tokenizer.json", "special_tokens_map.json",
                     "tokenizer_config.json"):
            if (tokenizer_dir / name).is_file():
                shutil.copyfile(tokenizer_dir / name, tok / name)
        if not (tok / "tokenizer_config.json").is_file():
            (tok / "tokenizer_config.json").write_text(json.dumps(
                {"model_max_length": 77, "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
                 "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "do_lower_case": True}))
        if dest.exists():
            shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def is_config_folder(folder: Path) -> bool:
    return all((folder / n).is_file() for n in _CONFIG_FILES) and has_tokenizer_files(folder / "tokenizer")


def find_single_file_config(path: Path, in_channels: int, config: str | None, allow_download: bool) -> str:
    """The diffusers config folder to pair with a single-file checkpoint (see the module docstring)."""
    if config:
        cfg = Path(config).expanduser()
        if cfg.is_dir():
            if not is_config_folder(cfg):
                raise ModelError(f"config folder {cfg} lacks model_index.json, a component config or the tokenizer",
                                 "pass a diffusers SD1.5 folder (weights not needed: configs + tokenizer)")
            if read_in_channels(cfg) != in_channels:
                raise ModelError(f"config folder {cfg} describes a {read_in_channels(cfg)}-channel UNet but "
                                 f"{path.name} has a {in_channels}-channel one",
                                 "pass the config of the same model kind (inpainting: 9, txt2img: 4)")
            return str(cfg)
        if _HF_ID.match(config):
            found = cached_repo_folder(config, _CONFIG_FILES)
            if found is not None:
                return str(found)
            if allow_download:
                return _download_configs(config)
            raise ModelError(f"config '{config}' is not a folder and not in the local Hugging Face cache",
                             f"run `huggingface-cli download {config} --include '*.json' '*.txt'` or pass a folder")
        raise ModelError(f"config folder {cfg} does not exist", "pass a diffusers SD1.5 folder or a HF id")
    if is_config_folder(path.parent) and read_in_channels(path.parent) == in_channels:
        return str(path.parent)
    for repo in SD15_CONFIG_REPOS[in_channels]:
        found = cached_repo_folder(repo, _CONFIG_FILES)
        if found is not None and has_tokenizer_files(found / "tokenizer"):
            return str(found)
    tok = find_cached_tokenizer()
    if tok is None and allow_download:
        return _download_configs(SD15_CONFIG_REPOS[in_channels][0])
    if tok is None:
        repo = SD15_CONFIG_REPOS[in_channels][0]
        raise ModelError(
            f"{path.name} needs the SD1.5 configs and CLIP tokenizer, which are not in the local Hugging Face cache",
            f"run `huggingface-cli download {repo} --include '*.json' '*.txt'` once (2 MB), "
            "or put the file in a diffusers folder with model_index.json")
    return str(build_config_folder(in_channels, tok))


def _download_configs(repo: str) -> str:
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo, allow_patterns=["*.json", "*.txt"])
    except Exception as exc:
        raise ModelError(f"could not download the configs of {repo} ({_one_line(exc, 120)})",
                         "check the network, or pass a local diffusers folder") from None


# --- resolving ---------------------------------------------------------------------------------------------


def resolve_model(model: str | os.PathLike | None, *, allow_pickle: bool = False, allow_download: bool = False,
                  config: str | None = None) -> ModelSource:
    """Turn ``--model`` into a :class:`ModelSource`; cheap (no weights read), raises ``ModelError``."""
    text = str(model) if model is not None else DEFAULT_MODEL
    path = Path(text).expanduser()
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES and not allow_pickle:
        raise ModelError(f"refusing to load pickle checkpoint {path.name}: loading a pickle can run arbitrary code",
                         "convert it to .safetensors, or pass --allow-pickle if you trust its source")
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ModelError(f"{path} is not a diffusers model folder (no model_index.json)",
                             "pass a diffusers SD1.5 folder, a .safetensors file or a Hugging Face id")
        ch = read_in_channels(path)
        if ch not in (4, 9):
            raise ModelError(f"{path}: UNet config missing or with {ch} input channels (need 9 or 4)",
                             "pass an SD1.5 or SD1.5-inpainting diffusers folder")
        return ModelSource("folder", str(path.resolve()), in_channels=ch)
    if path.is_file():
        if suffix not in SINGLE_FILE_SUFFIXES + PICKLE_SUFFIXES:
            raise ModelError(f"unsupported model file type '{suffix or path.name}'",
                             "pass a .safetensors checkpoint, a diffusers folder or a Hugging Face id")
        ch = single_file_in_channels(path, allow_pickle)
        cfg = find_single_file_config(path, ch, config, allow_download)
        return ModelSource("single_file", str(path.resolve()), config=cfg, in_channels=ch,
                           pickle=suffix in PICKLE_SUFFIXES)
    if not _HF_ID.match(text) or text.startswith((".", "/", "~")) or suffix in SINGLE_FILE_SUFFIXES + PICKLE_SUFFIXES:
        raise ModelError(f"model path {text} does not exist",
                         "pass an existing .safetensors file or diffusers folder, or a Hugging Face id such as "
                         + DEFAULT_MODEL)
    cached = cached_repo_folder(text, ("model_index.json", "unet/config.json"))
    if cached is not None:
        return ModelSource("hub", text, in_channels=read_in_channels(cached))
    if not allow_download:
        raise ModelError(
            f"model '{text}' is not a local path and not in the local Hugging Face cache (downloads are off)",
            f"run `huggingface-cli download {text}` (or `hf download {text}`), allow downloads, "
            "or pass --model /path/to/folder-or-file.safetensors")
    return ModelSource("hub", text, in_channels=None)


# --- loading -----------------------------------------------------------------------------------------------


def load_pipeline(source: ModelSource, *, dtype: Any, allow_download: bool = False, allow_pickle: bool = False):
    """Load a diffusers SD1.5 pipeline (inpaint class for a 9-channel UNet, txt2img class for 4), on the CPU.

    The safety checker and feature extractor are not loaded. Raises ``ModelError`` with one line on failure.
    """
    with quiet_libraries():
        from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline

        common = {"torch_dtype": dtype, "safety_checker": None, "feature_extractor": None,
                  "requires_safety_checker": False}
        try:
            with hub_offline(not allow_download):
                if source.kind == "single_file":
                    cls = StableDiffusionInpaintPipeline if source.in_channels == 9 else StableDiffusionPipeline
                    pipe = cls.from_single_file(source.location, config=source.config, local_files_only=True,
                                                **common)
                else:
                    ch = source.in_channels
                    if ch is None:  # a hub id to download: fetch the UNet config first to pick the class
                        from huggingface_hub import hf_hub_download

                        ch = read_in_channels(Path(hf_hub_download(source.location, "unet/config.json")).parent.parent)
                    cls = StableDiffusionInpaintPipeline if ch == 9 else StableDiffusionPipeline
                    pipe = cls.from_pretrained(source.location, local_files_only=not allow_download,
                                               use_safetensors=None if allow_pickle else True, **common)
        except ModelError:
            raise
        except Exception as exc:
            what = {"hub": f"Hugging Face model '{source.location}'", "folder": f"diffusers folder {source.location}",
                    "single_file": f"checkpoint {source.location}"}[source.kind]
            msg = _one_line(exc)
            if "safetensors" in msg.lower() and not allow_pickle and source.kind != "single_file":
                fix = "the weights are pickle files (.bin): convert them to safetensors, or pass --allow-pickle"
            elif source.kind == "hub":
                fix = (f"run `huggingface-cli download {source.location}` to complete the cached copy, "
                       "or pass --model /path/to/folder-or-file.safetensors")
            else:
                fix = "check that the files are complete and are Stable Diffusion 1.5 weights"
            raise ModelError(f"could not load {what}: {msg}", fix) from None
    return pipe
