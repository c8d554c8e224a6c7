"""The quality gate: planted defects are caught and ranked, clean edits pass, candidates are chosen by the rule."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from PIL import Image

from crispedit.errors import InputError, ModelError
from crispedit.quality import defects as D
from crispedit.quality.candidates import (
    MetricJudge,
    VLMJudge,
    deviation,
    edit_candidates,
    load_prompt_variants,
    select_best,
)
from crispedit.quality.metrics import ciede2000, changed_mask, noise_sigma
from crispedit.quality.verdict import QualityReport, Thresholds, assess

H, W = 512, 640


@pytest.fixture(scope="module")
def scene():
    img, clean, _ = D.photo_like(H, W, seed=7, return_parts=True)
    mask = D.ellipse_mask(H, W, 330, 250, 105, 85, 25)
    return img, clean, mask


# ---------------------------------------------------------------------------------------------------- CIEDE2000
@pytest.mark.parametrize(
    "lab1, lab2, expected",
    [  # Sharma, Wu & Dalal (2005), table 1
        ((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485), 2.0425),
        ((50.0, -1.3802, -84.2814), (50.0, 0.0, -82.7485), 1.0000),
        ((50.0, 2.5, 0.0), (56.0, -27.0, -3.0), 31.9030),
        ((50.0, 2.5, 0.0), (50.0, 0.0, -2.5), 4.3065),
        ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
        ((22.7233, 20.0904, -46.6940), (23.0331, 14.9730, -42.5619), 2.0373),
        ((2.0776, 0.0795, -1.1350), (0.9033, -0.0636, -0.5514), 0.9082),
    ],
)
def test_ciede2000_matches_reference(lab1, lab2, expected):
    assert float(ciede2000(np.array(lab1), np.array(lab2))) == pytest.approx(expected, abs=1e-4)
    # symmetric and vectorised
    both = ciede2000(np.array([lab1, lab2]), np.array([lab2, lab1]))
    assert both.shape == (2,) and np.allclose(both, expected, atol=1e-4)


def test_noise_sigma_estimates_white_noise():
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.normal(size=(256, 256)).astype(np.float32), (0, 0), 8) * 0.5 + 0.5
    for s in (0.005, 0.01, 0.03):
        est = noise_sigma((base + rng.normal(size=base.shape) * s).astype(np.float32))
        assert est == pytest.approx(s, rel=0.15)


# ---------------------------------------------------------------------------------------------- clean cases pass
def test_unedited_passes_with_seam_about_zero(scene):
    img, _, mask = scene
    rep = assess(img, img, mask)
    assert rep.verdict == "pass", rep.reasons
    assert abs(rep.seam_score) < 2.0
    assert rep.outside_changed_pixels == 0
    assert rep.detail_ratio_original == pytest.approx(1.0) and rep.noise_ratio_original == pytest.approx(1.0)
    assert rep.colour_delta_e_original == pytest.approx(0.0, abs=1e-6)


def test_clean_edit_passes(scene):
    img, _, mask = scene
    rep = assess(img, D.clean_edit(img, mask, seed=3), mask)
    assert rep.verdict == "pass", rep.reasons
    assert rep.seam_score < 2.0
    assert 0.9 < rep.noise_ratio_original < 1.2


def test_clean_edit_found_from_difference_passes(scene):
    img, _, mask = scene
    rep = assess(img, D.clean_edit(img, mask, seed=4), None)
    assert rep.mask_source == "difference"
    assert rep.verdict == "pass", rep.reasons


def test_no_change_without_mask_passes(scene):
    img, _, _ = scene
    rep = assess(img, img.copy())
    assert rep.verdict == "pass" and rep.metrics["mask_pixels"] == 0
    assert "no edited area found" in rep.notes


# ------------------------------------------------------------------------------------- planted defects, ranked
def _strength_metric(rep: QualityReport, kind: str) -> float:
    if kind == "seam_score":
        return rep.seam_score
    if kind == "detail_deficit":
        return 1.0 / rep.detail_ratio
    if kind == "noise_deficit":
        return 1.0 / rep.noise_ratio
    raise AssertionError(kind)


@pytest.mark.parametrize("name", list(D.DEFECTS))
def test_planted_defects_are_caught_and_ranked(scene, name):
    img, clean, mask = scene
    fn, strengths, kind = D.DEFECTS[name]
    values, verdicts = [], []
    for s in strengths:
        kw = {"clean": clean} if name == "noise_free_patch" else {}
        rep = assess(img, fn(img, mask, s, **kw), mask)
        values.append(_strength_metric(rep, kind))
        verdicts.append(rep.verdict)
    assert all(b > a for a, b in zip(values, values[1:])), (name, values)
    # the two strongest are always caught; nothing stronger than a caught defect passes
    assert verdicts[-2:] == ["fail", "fail"], (name, values, verdicts)
    first_fail = verdicts.index("fail")
    assert all(v == "fail" for v in verdicts[first_fail:])


def test_feathered_tone_step_is_ranked_by_colour(scene):
    img, _, mask = scene
    vals, verdicts = [], []
    for s in (3.0, 6.0, 12.0, 24.0):
        rep = assess(img, D.tone_step(img, mask, s, feather=32), mask)
        vals.append(rep.colour_delta_e_original)
        verdicts.append(rep.verdict)
    assert all(b > a for a, b in zip(vals, vals[1:])), vals
    assert verdicts[-1] == "fail" and any(r for r in ["colour"] if r)
    assert verdicts[0] == "pass"


def test_seam_score_ranks_across_defect_types(scene):
    img, _, mask = scene
    clean = assess(img, D.clean_edit(img, mask), mask).seam_score
    faint = assess(img, D.tone_step(img, mask, 6), mask).seam_score
    hard = assess(img, D.paste_seam(img, mask, 1.0), mask).seam_score
    assert clean < faint < hard


def test_worst_places_point_at_the_defect(scene):
    img, _, mask = scene
    half = mask.copy()
    half[:, :330] = False  # the step only on the right half of the ellipse
    edited = D.tone_step(img, half, 16)
    rep = assess(img, edited, mask)
    assert rep.verdict == "fail"
    assert rep.worst_places, rep.notes
    x, y, s = rep.worst_places[0]
    assert x > 330 and s > 3
    # the places lie on the mask contour
    dist = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 3)
    inner = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 3)
    for px, py, _ in rep.worst_places:
        assert dist[py, px] < 12 and inner[py, px] < 12


def test_outside_identity(scene):
    img, _, mask = scene
    edited = img.copy()
    edited[10, 10] = edited[10, 10] ^ 1  # one bit, far from the mask
    rep = assess(img, edited, mask)
    assert rep.outside_changed_pixels == 1 and rep.outside_max_diff == 1
    assert rep.verdict == "fail" and "beyond" in rep.reasons[0]
    # a change inside the band is allowed
    near = img.copy()
    ys, xs = np.nonzero(mask)
    near[ys.min() - 5, xs[np.argmin(ys)]] ^= 1
    assert assess(img, near, mask).outside_changed_pixels == 0


def test_changed_mask_finds_the_edit(scene):
    img, _, mask = scene
    edited = D.tone_step(img, mask, 12)
    found = changed_mask(img, edited)
    inter = np.count_nonzero(found & mask)
    union = np.count_nonzero(found | mask)
    assert inter / union > 0.95
    rep = assess(img, edited)
    assert rep.mask_source == "difference" and rep.verdict == "fail"


def test_sixteen_bit_grey_and_alpha(scene):
    img, _, mask = scene
    img16 = img.astype(np.uint16) * 257
    rep = assess(img16, img16, mask)
    assert rep.verdict == "pass"
    ed16 = D.tone_step(img16, mask, 16)
    assert ed16.dtype == np.uint16 and assess(img16, ed16, mask).verdict == "fail"
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    assert assess(grey, grey, mask).verdict == "pass"
    assert assess(grey, D.blurred_patch(grey, mask, 3.0), mask).verdict == "fail"
    rgba = np.dstack([img, np.full(img.shape[:2], 255, np.uint8)])
    changed_alpha = rgba.copy()
    changed_alpha[5, 5, 3] = 0
    rep = assess(rgba, changed_alpha, mask)
    assert rep.outside_changed_pixels == 1


def test_bad_inputs_raise_input_error(scene):
    img, _, mask = scene
    with pytest.raises(InputError):
        assess(img, img[:-1], mask)
    with pytest.raises(InputError):
        assess(img, img.astype(np.uint16), mask)
    with pytest.raises(InputError):
        assess(img, img, mask[:-1])


def test_report_dict_is_json_with_required_keys(scene):
    img, _, mask = scene
    rep = assess(img, D.tone_step(img, mask, 12), mask)
    d = json.loads(json.dumps(rep.to_dict(), allow_nan=False))
    for key in ("verdict", "reasons", "seam_score", "detail_ratio", "noise_ratio", "colour_delta_e",
                "outside_changed_pixels", "outside_max_diff", "worst_places", "checks", "thresholds"):
        assert key in d
    assert d["verdict"] == "fail" and d["reasons"]
    assert all(set(p) == {"x", "y", "score"} for p in d["worst_places"])
    assert "quality fail" in rep.summary()


def test_thresholds_are_configurable(scene):
    img, _, mask = scene
    edited = D.blurred_patch(img, mask, 1.5)
    assert assess(img, edited, mask).verdict == "fail"
    lax = Thresholds(detail_min=0.0, noise_min=0.0)
    assert assess(img, edited, mask, thresholds=lax).verdict == "pass"


def test_whole_image_edit_has_no_seam(scene):
    img, _, _ = scene
    full = np.ones(img.shape[:2], bool)
    rep = assess(img, D.tone_step(img, full, 10), full)
    assert not math.isfinite(rep.seam_score) and rep.checks["seam_score"] == "n/a"


def test_assess_is_fast_on_4k():
    small = D.photo_like(540, 960, seed=2)
    big = cv2.resize(small, (3840, 2160), interpolation=cv2.INTER_LINEAR)
    big = np.clip(big + np.random.default_rng(0).normal(0, 2, big.shape), 0, 255).astype(np.uint8)
    mask = D.ellipse_mask(2160, 3840, 2000, 1000, 420, 330)
    edited = D.tone_step(big, mask, 10, feather=40)
    assess(big, edited, mask)  # warm-up (BRISQUE model load, OpenCV)
    t = time.perf_counter()
    rep = assess(big, edited, mask)
    dt = time.perf_counter() - t
    assert rep.verdict == "fail"
    assert dt < 8.0, dt  # about 1 s on an idle 2-core machine; generous for a busy CI


# ---------------------------------------------------------------------------------------------------- candidates
def test_select_best_picks_the_clean_candidate_and_records_rejections(scene):
    img, clean, mask = scene
    cands = [
        (D.tone_step(img, mask, 24), {"seed": 0}),
        (D.blurred_patch(img, mask, 3.0), {"seed": 1}),
        (D.clean_edit(img, mask, seed=2), {"seed": 2}),
        (D.paste_seam(img, mask, 1.0), {"seed": 3}),
        (D.noise_free_patch(img, mask, 1.0, clean=clean), {"seed": 4}),
    ]
    best, records = select_best(img, cands, mask, MetricJudge())
    assert best == 2
    assert [r["status"] for r in records] == ["rejected", "rejected", "kept", "rejected", "rejected"]
    for r in records:
        assert r["seed"] == r["index"]
        if r["status"] == "rejected":
            assert r["reasons"] and r["why"].startswith("rejected:")
    assert "seam" in records[0]["why"] or "colour" in records[0]["why"]
    assert "blurrier" in records[1]["why"]
    assert records[2]["score"] == max(r["score"] for r in records)


def test_select_best_prefers_the_smaller_defect_when_all_fail(scene):
    img, _, mask = scene
    cands = [(D.tone_step(img, mask, s), {}) for s in (24, 12, 48)]
    best, records = select_best(img, cands, mask, MetricJudge())
    assert best == 1
    assert records[1]["passed"] is False and "no candidate passed" in records[1]["why"]


def test_metric_judge_score_orders_defect_strength(scene):
    img, _, mask = scene
    judge = MetricJudge()
    scores = [judge.score(img, D.paste_seam(img, mask, s), mask)[1] for s in (0.15, 0.3, 0.6, 1.0)]
    assert all(b < a for a, b in zip(scores, scores[1:])), scores
    ok, s, reasons = judge.score(img, img, mask)
    assert ok and reasons == [] and s > scores[0]
    assert deviation(judge.last_report) >= 0


def test_edit_candidates_calls_edit_fn_and_keeps_best(scene):
    img, _, mask = scene
    calls = []

    def fake_edit(image, m, *, prompt=None, seed=None, strength=None):
        calls.append((prompt, seed, strength))
        arr = D.clean_edit(img, mask, seed=seed) if seed == 12 else D.tone_step(img, mask, 10 + 4 * seed % 7)
        return SimpleNamespace(image=Image.fromarray(arr), array=arr, info={"seed": seed})

    best, records = edit_candidates(img, mask, 4, prompt_variants=["a", "b"], edit_fn=fake_edit, seed=10,
                                    strength=0.9)
    assert calls == [("a", 10, 0.9), ("b", 11, 0.9), ("a", 12, 0.9), ("b", 13, 0.9)]
    assert best.info["seed"] == 12 and best.info["candidate_index"] == 2
    assert best.info["candidates"] is records
    assert [r["prompt"] for r in records] == ["a", "b", "a", "b"]
    assert sum(r["status"] == "kept" for r in records) == 1


def test_edit_candidates_uses_pil_image_when_no_array(scene):
    img, _, mask = scene

    def fake_edit(image, m, *, prompt=None, seed=None):
        arr = img if seed == 1 else D.blurred_patch(img, mask, 4.0)
        return SimpleNamespace(image=Image.fromarray(arr), info={})

    best, records = edit_candidates(img, mask, 3, prompt="p", edit_fn=fake_edit)
    assert best.info["candidate_index"] == 1
    with pytest.raises(InputError):
        edit_candidates(img, mask, 0, edit_fn=fake_edit)


def test_prompt_variants_file(tmp_path):
    p = tmp_path / "v.txt"
    p.write_text("# variants\na red car\n\n a blue car \n")
    assert load_prompt_variants(p) == ["a red car", "a blue car"]
    with pytest.raises(InputError):
        load_prompt_variants(tmp_path / "missing.txt")


def test_vlm_judge_without_weights_raises_model_error(tmp_path):
    with pytest.raises(ModelError) as exc:
        VLMJudge(tmp_path / "no-such-model")
    assert "no transformers model" in str(exc.value) or "transformers" in str(exc.value)
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "config.json").write_text("{}")
    with pytest.raises(ModelError):
        VLMJudge(tmp_path / "cfg")


# ------------------------------------------------------------------------------------------------------ the CLI
def _app():
    import typer

    from crispedit.quality.cli import quality_cmd, report_cmd

    app = typer.Typer()
    app.command("quality")(quality_cmd)
    app.command("report")(report_cmd)
    return app


def test_quality_cli_exit_codes(scene, tmp_path):
    from typer.testing import CliRunner

    img, _, mask = scene
    Image.fromarray(img).save(tmp_path / "a.png")
    Image.fromarray(D.clean_edit(img, mask)).save(tmp_path / "ok.png")
    Image.fromarray(D.tone_step(img, mask, 24)).save(tmp_path / "bad.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "m.png")
    Image.fromarray(img[:100]).save(tmp_path / "small.png")
    runner = CliRunner()
    app = _app()
    r = runner.invoke(app, ["quality", str(tmp_path / "a.png"), str(tmp_path / "ok.png"), "--mask", str(tmp_path / "m.png")])
    assert r.exit_code == 0, r.output
    assert "quality pass" in r.output
    r = runner.invoke(app, ["quality", str(tmp_path / "a.png"), str(tmp_path / "bad.png"), "--json"])
    assert r.exit_code == 1, r.output
    d = json.loads(r.output)
    assert d["verdict"] == "fail" and d["mask_source"] == "difference" and d["seam_score"] > 4
    r = runner.invoke(app, ["quality", str(tmp_path / "a.png"), str(tmp_path / "small.png")])
    assert r.exit_code == 2
    r = runner.invoke(app, ["quality", str(tmp_path / "a.png"), str(tmp_path / "missing.png")])
    assert r.exit_code == 2
