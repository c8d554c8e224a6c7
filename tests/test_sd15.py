"""The SD1.5 engine on tiny random SD-shaped models: real loading and sampling code, offline, on the CPU.

The models come from ``tests/tiny_sd.py`` (built once per session). Nothing is downloaded: HF_HUB_OFFLINE is
set, and the tests that need a Hugging Face cache build a fake one in a temporary folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from tiny_sd import (  # noqa: E402
    build_tiny_pipeline,
    one_torch_thread,  # noqa: F401  (autouse fixture)
    save_tiny_folder,
    save_tiny_single_file,
    write_tiny_tokenizer_files,
)

from crispedit.engines import model_source  # noqa: E402
from crispedit.engines.base import get_engine  # noqa: E402
from crispedit.engines.sd15 import SCHEDULERS, SD15Engine, resolve_device_dtype  # noqa: E402
from crispedit.errors import InputError, ModelError  # noqa: E402

STEPS = 4
W, H = 200, 136  # non-square, multiples of 8, as the harness hands crops


# --- fixtures ----------------------------------------------------------------------------------------------




@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Tiny diffusers folders (9- and 4-channel UNet) and single files, written once."""
    root = tmp_path_factory.mktemp("tiny_sd")
    return {
        "folder9": save_tiny_folder(root / "folder9", 9),
        "folder4": save_tiny_folder(root / "folder4", 4),
        "file9": save_tiny_single_file(root / "single9" / "tiny-inpainting.safetensors", 9),
        "file4": save_tiny_single_file(root / "single4" / "tiny-v15.safetensors", 4),
        "bare9": save_tiny_single_file(root / "bare9" / "tiny.safetensors", 9, with_config=False),
    }


@pytest.fixture(scope="session")
def engine9(tiny_models) -> SD15Engine:
    return SD15Engine(str(tiny_models["folder9"]), steps=STEPS, device="cpu").load()


@pytest.fixture(scope="session")
def engine4(tiny_models) -> SD15Engine:
    return SD15Engine(str(tiny_models["folder4"]), steps=STEPS, device="cpu").load()


@pytest.fixture(scope="session")
def crop() -> tuple[Image.Image, Image.Image]:
    """A textured RGB crop and a mask with a hole in the middle."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    base = np.stack([0.3 + 0.4 * xx / W, 0.5 + 0.2 * np.sin(yy / 9), 0.6 - 0.3 * yy / H], axis=2)
    rgb = np.clip(base + rng.normal(0, 0.03, base.shape), 0, 1)
    image = Image.fromarray((rgb * 255 + 0.5).astype(np.uint8), "RGB")
    mask = np.zeros((H, W), np.uint8)
    mask[40:100, 64:152] = 255
    return image, Image.fromarray(mask, "L")


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch) -> Path:
    """Point huggingface_hub at an empty cache so a developer's real cache cannot change the outcome."""
    import huggingface_hub.constants as hc

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def fake_cached_repo(cache: Path, repo_id: str, source: Path) -> Path:
    """Put ``source`` into a Hugging Face cache layout as ``repo_id`` (refs/main -> snapshot)."""
    d = cache / ("models--" + repo_id.replace("/", "--"))
    (d / "refs").mkdir(parents=True)
    commit = "0123456789abcdef0123456789abcdef01234567"
    (d / "refs" / "main").write_text(commit)
    shutil.copytree(source, d / "snapshots" / commit)
    return d / "snapshots" / commit


def arr(im: Image.Image) -> np.ndarray:
    return np.asarray(im, dtype=np.float64)


# --- registry, import cost, device ------------------------------------------------------------------------


def test_import_does_not_load_torch():
    code = ("import sys, crispedit.engines.sd15 as m, crispedit.engines.base as b; "
            "assert 'sd15' in b._FACTORIES; assert 'torch' not in sys.modules, 'torch imported'; "
            "assert 'diffusers' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_registered_and_built_through_get_engine(tiny_models):
    eng = get_engine("sd15", model=str(tiny_models["folder9"]), steps=2)
    assert isinstance(eng, SD15Engine)
    assert eng.working_size == 512
    # CPU: native refinement would multiply minutes-long calls; CUDA: seconds, so native by default
    assert eng.default_detail == ("native" if eng.device.type == "cuda" else "fast")
    cpu = SD15Engine(str(tiny_models["folder9"]), device="cpu")
    assert cpu.default_detail == "fast" and cpu.device.type == "cpu" and cpu.dtype == torch.float32


def test_device_and_dtype_resolution():
    if not torch.cuda.is_available() and not torch.backends.mps.is_available():
        assert resolve_device_dtype() == (torch.device("cpu"), torch.float32)
    assert resolve_device_dtype("cpu", "fp16")[1] == torch.float16
    assert resolve_device_dtype("cpu", "bf16")[1] == torch.bfloat16
    assert resolve_device_dtype(None, "fp32")[1] == torch.float32
    with pytest.raises(InputError):
        resolve_device_dtype("cpu", "int8")
    with pytest.raises(InputError):
        resolve_device_dtype("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA"):
            resolve_device_dtype("cuda")


# --- inpaint ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [9, 4])
def test_inpaint_size_and_mode(kind, engine9, engine4, crop):
    eng = engine9 if kind == 9 else engine4
    image, mask = crop
    out = eng.inpaint(image, mask, "a wooden bench", seed=1)
    assert out.size == (W, H) and out.mode == "RGB"
    assert eng.unet_in_channels == kind
    call = eng.calls[-1]
    assert call["kind"] == "inpaint" and tuple(call["size"]) == (W, H)
    assert call["strength"] == 1.0 and call["steps"] == STEPS and call["seconds"] > 0 and call["seed"] == 1


def test_inpaint_pads_sizes_that_are_not_multiples_of_8(engine9, crop):
    image, mask = crop
    box = (3, 1, 3 + 197, 1 + 131)
    out = engine9.inpaint(image.crop(box), mask.crop(box), "a bench", seed=3, region=(3, 1, 200, 132))
    assert out.size == (197, 131) and out.mode == "RGB"
    assert engine9.calls[-1]["region"] == (3, 1, 200, 132)


def test_same_seed_same_bytes_other_seed_differs(engine9, crop):
    image, mask = crop
    a = engine9.inpaint(image, mask, "a bench", seed=7)
    b = engine9.inpaint(image, mask, "a bench", seed=7)
    c = engine9.inpaint(image, mask, "a bench", seed=8)
    assert a.tobytes() == b.tobytes()
    assert np.abs(arr(a) - arr(c)).mean() > 1.0


def test_nine_channel_unet_sees_mask_and_masked_image(engine9, crop, monkeypatch):
    image, mask = crop
    seen = []
    orig = SD15Engine._predict_noise

    def spy(self, latents_in, t, cond):
        seen.append(latents_in.detach().clone())
        return orig(self, latents_in, t, cond)

    monkeypatch.setattr(SD15Engine, "_predict_noise", spy)
    engine9.inpaint(image, mask, "a bench", seed=1)
    assert len(seen) == STEPS
    x = seen[0]
    assert x.shape == (1, 9, H // 8, W // 8)
    m = x[0, 4]
    assert set(torch.unique(m).tolist()) == {0.0, 1.0}
    assert m[5:12, 8:19].min() == 1.0 and m[:4].max() == 0.0  # the hole (rows 40-100, cols 64-152) is masked
    assert torch.equal(seen[0][:, 4:], seen[-1][:, 4:])  # conditioning fixed over the steps


def test_four_channel_unet_blends_known_latents_each_step(engine4):
    """RePaint-style: after the loop the latents outside the mask are exactly the known latents."""
    g = torch.Generator().manual_seed(0)
    shape = (1, 4, 8, 10)
    known = torch.randn(shape, generator=g)
    mask = torch.zeros(1, 1, 8, 10)
    mask[..., 2:6, 3:8] = 1.0
    sched = engine4._make_scheduler()
    ts = engine4._timesteps(sched, 1.0)
    cond = engine4._encode_prompt("a bench")
    start = torch.randn(shape, generator=g) * float(sched.init_noise_sigma)
    with torch.inference_mode():
        out = engine4._denoise(start, ts, cond, mask_latents=mask, known_latents=known, scheduler=sched,
                               generator=g)
    keep = mask.expand_as(out) == 0
    assert torch.equal(out[keep], known[keep])
    assert not torch.allclose(out[~keep], known[~keep])


@pytest.mark.parametrize("kind", [9, 4])
def test_refine_keeps_more_of_the_input_than_regenerating(kind, engine9, engine4, crop):
    eng = engine9 if kind == 9 else engine4
    image, mask = crop
    with torch.inference_mode():  # what the VAE alone makes of the input (random weights: far from identity)
        recon = eng._to_pil(eng._vae_decode(eng._vae_encode(eng._image_tensor(image, W, H))), W, H)
    inside = np.asarray(mask) > 0

    def dist(strength: float) -> float:
        out = eng.inpaint(image, mask, "a bench", seed=5, strength=strength)
        return float(np.abs(arr(out) - arr(recon))[inside].mean())

    d_refine, d_full = dist(0.25), dist(1.0)
    assert d_refine < 0.85 * d_full
    assert eng.calls[-2]["strength"] == 0.25 and eng.calls[-2]["steps"] == 1  # int(4 * 0.25) steps
    assert eng.calls[-1]["steps"] == STEPS


def test_empty_mask_and_zero_strength_return_the_input(engine9, crop):
    image, mask = crop
    assert engine9.inpaint(image, Image.new("L", image.size, 0), "x", seed=1).tobytes() == image.tobytes()
    assert engine9.inpaint(image, mask, "x", seed=1, strength=0.0).tobytes() == image.tobytes()


def test_bad_inputs_are_input_errors(engine9, crop):
    image, mask = crop
    with pytest.raises(InputError):
        engine9.inpaint(image, mask.resize((10, 10)), "x")
    with pytest.raises(InputError):
        engine9.inpaint(image, mask, "x", strength=1.5)
    with pytest.raises(InputError):
        SD15Engine.from_pipeline(build_tiny_pipeline(9), steps=0)


# --- img2img, txt2img ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [9, 4])
def test_img2img(kind, engine9, engine4, crop):
    eng = engine9 if kind == 9 else engine4
    image, _ = crop
    a = eng.img2img(image, "a painting", strength=0.5, seed=2)
    b = eng.img2img(image, "a painting", strength=0.5, seed=2)
    assert a.size == image.size and a.mode == "RGB" and a.tobytes() == b.tobytes()
    assert eng.calls[-1]["kind"] == "img2img" and eng.calls[-1]["steps"] == STEPS // 2


@pytest.mark.parametrize("kind", [9, 4])
def test_txt2img(kind, engine9, engine4):
    eng = engine9 if kind == 9 else engine4
    a = eng.txt2img("a bench", width=96, height=60, seed=4)
    assert a.size == (96, 60) and a.mode == "RGB"
    assert a.tobytes() == eng.txt2img("a bench", width=96, height=60, seed=4).tobytes()
    assert a.tobytes() != eng.txt2img("the sea", width=96, height=60, seed=4).tobytes()
    assert eng.calls[-1]["kind"] == "txt2img"


# --- schedulers, progress, guidance --------------------------------------------------------------------------


def test_scheduler_choices(tiny_models, crop):
    image, mask = crop
    outs = {}
    for name in SCHEDULERS:
        eng = SD15Engine(str(tiny_models["folder9"]), steps=3, scheduler=name, device="cpu")
        outs[name] = eng.inpaint(image, mask, "a bench", seed=1)
        assert outs[name].size == (W, H)
    assert len({o.tobytes() for o in outs.values()}) == len(SCHEDULERS)
    from diffusers import DPMSolverMultistepScheduler

    s = SD15Engine(str(tiny_models["folder9"]), device="cpu")._make_scheduler()
    assert isinstance(s, DPMSolverMultistepScheduler) and s.config.use_karras_sigmas
    with pytest.raises(InputError, match="dpmpp_2m_karras, ddim, euler_a, unipc"):
        SD15Engine(str(tiny_models["folder9"]), scheduler="plms")


def test_progress_is_called_per_step(tiny_models, crop):
    image, mask = crop
    seen = []
    eng = SD15Engine(str(tiny_models["folder9"]), steps=3, device="cpu", progress=lambda *a: seen.append(a))
    eng.inpaint(image, mask, "a bench", seed=1)
    assert seen == [("denoise", 1, 3), ("denoise", 2, 3), ("denoise", 3, 3)]


def test_guidance_and_negative_prompt_change_the_result(tiny_models, crop):
    image, mask = crop
    folder = str(tiny_models["folder9"])
    base = SD15Engine(folder, steps=2, device="cpu").inpaint(image, mask, "a bench", seed=1)
    neg = SD15Engine(folder, steps=2, negative_prompt="blurry", device="cpu").inpaint(image, mask, "a bench",
                                                                                       seed=1)
    no_cfg = SD15Engine(folder, steps=2, guidance=1.0, device="cpu").inpaint(image, mask, "a bench", seed=1)
    assert base.tobytes() != neg.tobytes() and base.tobytes() != no_cfg.tobytes()


# --- model sources ------------------------------------------------------------------------------------------


def test_folder_load_matches_in_memory_pipeline_and_is_cached(tiny_models, engine9, crop):
    image, mask = crop
    mem = SD15Engine.from_pipeline(build_tiny_pipeline(9), steps=STEPS, device="cpu")
    assert mem.inpaint(image, mask, "a bench", seed=11).tobytes() == \
        engine9.inpaint(image, mask, "a bench", seed=11).tobytes()
    again = SD15Engine(str(tiny_models["folder9"]), steps=2, device="cpu")
    assert again.pipeline is engine9.pipeline  # process-wide cache: loaded once


@pytest.mark.parametrize("kind", [9, 4])
def test_single_file_load(kind, tiny_models, crop, empty_hf_cache):
    """An original-layout .safetensors loads through from_single_file offline, weights bit-identical."""
    image, mask = crop
    eng = SD15Engine(str(tiny_models[f"file{kind}"]), steps=STEPS, device="cpu")
    assert eng._source.kind == "single_file" and eng._source.in_channels == kind
    ref = build_tiny_pipeline(kind)
    for name in ("unet", "vae", "text_encoder"):
        got, want = getattr(eng.pipeline, name).state_dict(), getattr(ref, name).state_dict()
        assert got.keys() == want.keys()
        assert all(torch.equal(got[k], want[k]) for k in want), name
    assert type(eng.pipeline).__name__ == ("StableDiffusionInpaintPipeline" if kind == 9 else "StableDiffusionPipeline")
    folder_eng = SD15Engine(str(tiny_models[f"folder{kind}"]), steps=STEPS, device="cpu")
    assert eng.inpaint(image, mask, "a bench", seed=2).tobytes() == \
        folder_eng.inpaint(image, mask, "a bench", seed=2).tobytes()


def test_single_file_config_sources(tiny_models, empty_hf_cache, tmp_path):
    bare = str(tiny_models["bare9"])
    # no config anywhere (empty cache, nothing next to the file): one line naming the small download
    with pytest.raises(ModelError, match="huggingface-cli download stable-diffusion-v1-5/stable-diffusion-inpainting"):
        SD15Engine(bare)
    # explicit config folder
    eng = SD15Engine(bare, config=str(tiny_models["folder9"]), steps=2, device="cpu")
    assert eng.unet_in_channels == 9
    # a config of the other UNet kind is refused up front
    with pytest.raises(ModelError, match="4-channel"):
        SD15Engine(bare, config=str(tiny_models["folder4"]))
    # the SD1.5 repo diffusers itself would use, found in the (fake) HF cache
    snap = fake_cached_repo(empty_hf_cache, "stable-diffusion-v1-5/stable-diffusion-inpainting",
                            tiny_models["folder9"])
    eng = SD15Engine(bare, steps=2, device="cpu")
    assert Path(eng._source.config) == snap
    assert eng.txt2img("x", width=64, height=64, seed=0).size == (64, 64)


def test_builtin_sd15_config_folder_with_cached_tokenizer(empty_hf_cache, tmp_path):
    """Last resort for a single file: SD1.5's published configs + a tokenizer from any cached CLIP repo."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTokenizer

    tok_src = tmp_path / "clip"
    write_tiny_tokenizer_files(tok_src)
    (tok_src / "tokenizer_config.json").write_text('{"model_max_length": 77}')
    fake_cached_repo(empty_hf_cache, "openai/clip-vit-large-patch14", tok_src)
    found = model_source.find_cached_tokenizer()
    assert found is not None
    for ch in (9, 4):
        folder = model_source.build_config_folder(ch, found, dest=tmp_path / f"cfg{ch}")
        assert model_source.is_config_folder(folder)
        cfg = UNet2DConditionModel.load_config(folder, subfolder="unet")
        assert cfg["in_channels"] == ch and cfg["cross_attention_dim"] == 768
        assert CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer").model_max_length == 77


def test_hub_id_from_local_cache(tiny_models, empty_hf_cache, crop):
    """The default id is read from the HF cache without network (here a fake cache holding the tiny model)."""
    image, mask = crop
    fake_cached_repo(empty_hf_cache, model_source.DEFAULT_MODEL, tiny_models["folder9"])
    eng = SD15Engine(steps=2, device="cpu")
    assert eng._source.kind == "hub" and eng._source.in_channels == 9
    assert eng.inpaint(image, mask, "a bench", seed=0).size == (W, H)


@pytest.mark.parametrize("suffix", [".ckpt", ".bin", ".pt", ".pth"])
def test_pickle_checkpoints_are_refused(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"not even a pickle")
    with pytest.raises(ModelError, match="pickle") as err:
        SD15Engine(str(path))
    assert "--allow-pickle" in str(err.value) and "\n" not in str(err.value)


def test_missing_models_give_one_line_quickly(tmp_path, empty_hf_cache, monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("a missing model must not reach for the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)  # never a hang on the network
    with pytest.raises(ModelError, match="does not exist") as err:
        SD15Engine(str(tmp_path / "nope" / "model.safetensors"))
    assert "\n" not in str(err.value)
    with pytest.raises(ModelError) as err:
        SD15Engine("crispedit-tests/not-a-cached-model")
    msg = str(err.value)
    assert "huggingface-cli download crispedit-tests/not-a-cached-model" in msg and "--model" in msg
    assert "\n" not in msg
    with pytest.raises(ModelError, match="huggingface-cli download stable-diffusion-v1-5/stable-diffusion-inpainting"):
        SD15Engine()  # the default model, not cached
    with pytest.raises(ModelError, match="model_index.json"):
        SD15Engine(str(tmp_path))  # a folder that is not a diffusers model


def test_broken_or_foreign_single_files(tmp_path, empty_hf_cache):
    from safetensors.torch import save_file

    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelError, match="safetensors"):
        SD15Engine(str(junk))
    xl = tmp_path / "xl.safetensors"
    save_file({"conditioner.embedders.0.transformer.text_model.x": torch.zeros(1)}, str(xl))
    with pytest.raises(ModelError, match="SDXL"):
        SD15Engine(str(xl))
