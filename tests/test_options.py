"""The typed options layer (crispedit.options) and the seed derivation (issue 12: options, seeds)."""

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import photo_like
from PIL import Image
from pydantic import ValidationError

import crispedit
from crispedit import options
from crispedit.errors import InputError
from crispedit.quality.candidates import edit_candidates
from crispedit.workflow.builtin import edit_workflow, generate_workflow

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


class RecordingEngine:
    """Returns its input (a slight brightening inside the mask); records (kind, strength, seed) per call."""

    def __init__(self, working_size=None):
        self.working_size = working_size
        self.calls = []

    def inpaint(self, image, mask, prompt, *, seed=None, strength=1.0, region=None):
        self.calls.append(("inpaint", strength, seed))
        a = np.asarray(image).astype(np.int16)
        m = np.asarray(mask) > 0
        a[m] = np.clip(a[m] + 3, 0, 255)
        return Image.fromarray(a.astype(np.uint8))

    def txt2img(self, prompt, *, width=512, height=512, seed=None):
        self.calls.append(("txt2img", 1.0, seed))
        return Image.fromarray(np.full((height, width, 3), 100, np.uint8))

    def img2img(self, image, prompt, *, strength, seed=None):
        self.calls.append(("img2img", strength, seed))
        return image


@pytest.fixture
def photo():
    return (photo_like(600, 800, seed=4) * 255 + 0.5).astype(np.uint8)


def _big_mask(shape):
    m = np.zeros(shape, bool)
    m[100:500, 150:650] = True
    return m


def test_unknown_option_is_one_line_with_a_suggestion_before_decoding(tmp_path):
    missing = tmp_path / "never-read.png"  # does not exist: the option error must come first
    with pytest.raises(InputError, match="unknown option 'refine_strenght'.*did you mean 'refine_strength'") as e:
        crispedit.edit(missing, np.ones((4, 4), bool), refine_strenght=0.2)
    assert "\n" not in str(e.value)
    with pytest.raises(InputError, match="did you mean 'hires_strength'"):
        crispedit.generate("x", 512, 512, engine=RecordingEngine(512), hires_strenght=0.2)
    with pytest.raises(InputError, match="did you mean 'tile_overlap'"):
        options.split_options("sd15", {"tile_overlapp": 16})
    with pytest.raises(InputError, match=r"refine_strength 1\.5"):
        crispedit.edit(missing, None, engine="sd15", refine_strength=1.5)


def test_explicit_zero_strengths_are_kept(photo):
    eng = RecordingEngine(working_size=256)
    crispedit.edit(photo, _big_mask(photo.shape[:2]), engine=eng, seed=1, detail="native", refine_strength=0.0)
    refine = [c for c in eng.calls if c[1] < 1.0]
    assert refine and all(c[1] == 0.0 for c in refine)  # not 0.35
    gen = RecordingEngine(working_size=256)
    crispedit.generate("x", 1024, 768, engine=gen, seed=1, hires_strength=0.0)
    stages = [c for c in gen.calls if c[0] == "img2img"]
    assert stages and all(c[1] == 0.0 for c in stages)
    assert options.HarnessOptions(strength=0.0).strength_or_default("strength") == 0.0
    assert options.HarnessOptions().strength_or_default("refine_strength") == options.DEFAULT_STRENGTH


def test_sd15_options_checked_without_a_model():
    with pytest.raises(InputError, match="tile 50 is not a multiple of 8"):
        options.check_sd15(tile=50)
    with pytest.raises(InputError, match="more than half the tile"):
        options.check_sd15(tile=64, tile_overlap=40)
    with pytest.raises(InputError, match="unknown scheduler"):
        options.check_sd15(scheduler="nope")
    assert options.check_sd15(tile=96, tile_overlap=32, scheduler="DPM++-2m-karras").scheduler == "dpmpp_2m_karras"
    with pytest.raises(ValidationError):  # frozen
        options.check_sd15(tile=64).tile = 8  # type: ignore[misc]


def test_engine_options_one_model_per_engine():
    from crispedit.engines import classical
    from crispedit.engines.sd15 import SD15Engine

    # range and type errors read as one line naming the option and its bounds
    with pytest.raises(InputError, match=r"steps 0 is outside 1\.\.1000"):
        options.check_sd15(steps=0)
    with pytest.raises(InputError, match="tile must be a whole number, got 'big'"):
        options.check_sd15(tile="big")
    # the sd15 engine takes its defaults from the options module (one name, one default)
    assert "steps" in options.SD15Options.model_fields and options.DEFAULT_STEPS == 25
    assert options.SCHEDULERS[0] == options.DEFAULT_SCHEDULER and SD15Engine.__init__.__kwdefaults__["steps"] is None
    # classical: the constructor validates through ClassicalOptions, with a did-you-mean on a typo
    assert classical.METHODS == options.CLASSICAL_METHODS
    from crispedit.engines.base import option_names

    assert set(options.ClassicalOptions.model_fields) == option_names("classical")
    with pytest.raises(InputError, match="unknown classical option 'patch_sise'.*did you mean 'patch_size'"):
        classical.ClassicalEngine(patch_sise=5)
    with pytest.raises(InputError, match="did you mean 'coarse_pixels'"):
        options.split_options("classical", {"coarse_pixel": 1000})
    with pytest.raises(InputError, match=r"max_masked_fraction 1\.5 is outside"):
        classical.ClassicalEngine(max_masked_fraction=1.5)
    eng = classical.ClassicalEngine(options.ClassicalOptions(radius=7), method="telea")
    assert (eng.radius, eng.method, eng.patch_size) == (7, "telea", 3)
    with pytest.raises(ValidationError):  # frozen
        eng.options.radius = 3  # type: ignore[misc]


def test_tile_50_refused_before_the_image_is_opened(tmp_path, monkeypatch):
    missing = tmp_path / "huge-and-never-read.png"
    with pytest.raises(InputError, match="tile 50 is not a multiple of 8"):
        edit_workflow(image=missing, output=tmp_path / "o.png", box="0,0,8,8", engine="sd15", tile=50)
    with pytest.raises(InputError, match="tile 50"):
        generate_workflow(prompt="x", output=tmp_path / "o.png", size="1024x768", tile=50)
    r = subprocess.run([sys.executable, "-m", "crispedit.cli", "edit", str(missing), "--box", "0,0,8,8", "-o",
                        str(tmp_path / "o.png"), "--engine", "sd15", "--tile", "50"],
                       capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 2 and "tile 50 is not a multiple of 8" in r.stderr and "Traceback" not in r.stderr
    assert "not found" not in r.stderr


def test_strength_with_a_mask_is_refused(tmp_path, photo):
    ip = tmp_path / "in.png"
    Image.fromarray(photo).save(ip)
    with pytest.raises(InputError, match="cannot be combined with --box"):
        edit_workflow(image=ip, output=tmp_path / "o.png", box="10,10,90,90", strength=0.5)
    with pytest.raises(InputError, match="cannot be combined with a mask"):
        crispedit.edit(photo, _big_mask(photo.shape[:2]), strength=0.5)
    r = subprocess.run([sys.executable, "-m", "crispedit.cli", "edit", str(ip), "--box", "10,10,90,90", "-o",
                        str(tmp_path / "o.png"), "--strength", "0.5"],
                       capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 2 and "--strength" in r.stderr and not (tmp_path / "o.png").exists()


def test_candidate_seeds_are_distinct_from_refinement_seeds(photo):
    engines = []

    def edit_fn(image, mask, prompt=None, seed=None, **kw):
        engines.append(RecordingEngine(working_size=256))
        return crispedit.edit(image, mask, prompt=prompt, engine=engines[-1], seed=seed, detail="native", **kw)

    _, records = edit_candidates(photo, _big_mask(photo.shape[:2]), 3, edit_fn=edit_fn, seed=7)
    cand = [r["seed"] for r in records]
    assert cand == options.spawn_seeds(7, 3) and len(set(cand)) == 3
    inner = [s for e in engines for (_, _, s) in e.calls]
    assert len(inner) > 3 * 2  # composition + refinement tiles per candidate
    assert not set(cand) & set(inner)  # candidate 2 no longer reuses candidate 1's first tile seed
    assert len(set(inner)) == len(inner)


def test_generate_records_the_seeds_it_used():
    eng = RecordingEngine(working_size=256)
    res = crispedit.generate("x", 1024, 768, engine=eng, seed=None)
    seed = res.info["seed"]
    assert isinstance(seed, int) and 0 <= seed < 2**32
    used = [s for (_, _, s) in eng.calls]
    assert used[0] == seed and used[1:] == res.info["stage_seeds"] and len(used) >= 3
    assert not any(s == seed + i for i, s in enumerate(used[1:], 1))  # SeedSequence children, not seed + stage
    again = RecordingEngine(working_size=256)
    res2 = crispedit.generate("x", 1024, 768, engine=again, seed=seed)
    assert [c[2] for c in again.calls] == used and res2.info["stage_seeds"] == res.info["stage_seeds"]


def test_workflow_nodes_validate_through_the_same_options(tmp_path):
    from crispedit.workflow.schema import load_workflow

    def wf(params):
        return {"version": 1, "nodes": {"gen": {"type": "Txt2Img", "params": {"prompt": "x", **params}}}}

    with pytest.raises(InputError, match="did you mean 'hires_strength'"):
        load_workflow(wf({"options": {"hires_strenght": 0.1}}))
    with pytest.raises(InputError, match="tile 50"):
        load_workflow(wf({"engine_options": {"tile": 50}}))
    load_workflow(wf({"options": {"hires_strength": 0.0}, "engine_options": {"tile": 64}}))
