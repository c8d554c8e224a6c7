"""The quality gate: planted defects are caught and ranked, clean edits pass, candidates are chosen by the rule."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from PIL import Image

from crispedit.errors import InputError, ModelError
from crispedit.options import spawn_seeds
from crispedit.quality import defects as D
from crispedit.quality.candidates import (
    MetricJudge,
    VLMJudge,
    deviation,
    edit_candidates,
    load_prompt_variants,
    select_best,
)
from crispedit.quality.metrics import changed_mask, ciede2000, noise_sigma
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
    assert verdicts[-1] == "fail"
    last = assess(img, D.tone_step(img, mask, 24.0, feather=32), mask)
    assert {"ghost", "colour_cast"} & {d.kind for d in last.defects}, last.reasons
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
    lax = Thresholds(detail_min=0.0, noise_min=0.0, kept_detail_min=0.0, kept_noise_min=0.0,
                     kept_coarse_detail_min=0.0)
    assert assess(img, edited, mask, thresholds=lax).verdict == "pass"


def test_whole_image_edit_has_no_seam(scene):
    img, _, _ = scene
    full = np.ones(img.shape[:2], bool)
    rep = assess(img, D.tone_step(img, full, 10), full)
    assert not math.isfinite(rep.seam_score) and rep.checks["seam_score"] == "n/a"


@pytest.mark.slow
def test_assess_on_4k_finds_the_step():
    # speed is measured by bench/quality_speed.py (docs/benchmarks.md), not asserted here
    small = D.photo_like(540, 960, seed=2)
    big = cv2.resize(small, (3840, 2160), interpolation=cv2.INTER_LINEAR)
    big = np.clip(big + np.random.default_rng(0).normal(0, 2, big.shape), 0, 255).astype(np.uint8)
    mask = D.ellipse_mask(2160, 3840, 2000, 1000, 420, 330)
    rep = assess(big, D.tone_step(big, mask, 10, feather=40), mask)
    assert rep.verdict == "fail" and "ghost" in {d.kind for d in rep.defects}


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

    seeds = spawn_seeds(10, 4)  # candidate seeds: children of SeedSequence(10), not 10 + i
    assert len(set(seeds)) == 4

    def fake_edit(image, m, *, prompt=None, seed=None, strength=None):
        calls.append((prompt, seed, strength))
        arr = D.clean_edit(img, mask, seed=0) if seed == seeds[2] else D.tone_step(img, mask, 10 + 4 * (seed % 7))
        return SimpleNamespace(image=Image.fromarray(arr), array=arr, info={"seed": seed})

    best, records = edit_candidates(img, mask, 4, prompt_variants=["a", "b"], edit_fn=fake_edit, seed=10,
                                    strength=0.9)
    assert calls == [("a", seeds[0], 0.9), ("b", seeds[1], 0.9), ("a", seeds[2], 0.9), ("b", seeds[3], 0.9)]
    assert best.info["seed"] == seeds[2] and best.info["candidate_index"] == 2
    assert best.info["candidates"] is records
    assert [r["prompt"] for r in records] == ["a", "b", "a", "b"]
    assert sum(r["status"] == "kept" for r in records) == 1


def test_edit_candidates_uses_pil_image_when_no_array(scene):
    img, _, mask = scene

    second = spawn_seeds(0, 3)[1]  # the default root seed is 0

    def fake_edit(image, m, *, prompt=None, seed=None):
        arr = img if seed == second else D.blurred_patch(img, mask, 4.0)
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


def test_quality_cli_max_pixels_and_unmeasured_exit_code(tmp_path):
    from typer.testing import CliRunner

    tiny = np.zeros((8, 8, 3), np.uint8)
    tiny[2:6, 2:6] = (255, 0, 0)
    sq = np.zeros((8, 8), np.uint8)
    sq[2:6, 2:6] = 255
    Image.fromarray(tiny).save(tmp_path / "t.png")
    Image.fromarray(sq).save(tmp_path / "sq.png")
    runner = CliRunner()
    app = _app()
    r = runner.invoke(app, ["quality", str(tmp_path / "t.png"), str(tmp_path / "t.png"), "--mask", str(tmp_path / "sq.png")])
    assert r.exit_code == 3, r.output  # unmeasured: never a pass
    assert "quality unmeasured" in r.output and "too small" in r.output
    r = runner.invoke(app, ["quality", str(tmp_path / "t.png"), str(tmp_path / "t.png"), "--max-pixels", "10"])
    assert r.exit_code == 2 and "--max-pixels" in r.output
    r = runner.invoke(app, ["report", str(tmp_path / "t.png"), str(tmp_path / "t.png"), "-o", str(tmp_path / "r.html"),
                            "--max-pixels", "10"])
    assert r.exit_code == 2 and "--max-pixels" in r.output and not (tmp_path / "r.html").exists()


# ---------------------------------------------------------------------------------------- issue 11: the cases
def test_unedited_tiny_square_is_not_a_pass():
    tiny = np.zeros((8, 8, 3), np.uint8)
    tiny[2:6, 2:6] = (255, 0, 0)
    sq = np.zeros((8, 8), bool)
    sq[2:6, 2:6] = True
    rep = assess(tiny, tiny.copy(), sq)
    assert rep.verdict == "unmeasured" and rep.exit_code == 3
    assert any("too small" in u for u in rep.unmeasured)
    assert rep.to_dict()["unmeasured"] == rep.unmeasured


def test_whole_image_tint_without_mask_is_not_a_pass(scene):
    img, _, _ = scene
    tinted = np.clip(img.astype(int) + [2, 1, -2], 0, 255).astype(np.uint8)
    rep = assess(img, tinted)
    assert rep.verdict in ("fail", "unmeasured")
    assert "whole image changed" in rep.unmeasured[0]  # said even when a measured check fails
    assert rep.global_delta_e > 0.3 and abs(rep.global_tone_levels) >= 0.5  # still measured
    assert rep.verdict == "unmeasured" or {d.kind for d in rep.defects} == {"global_shift"}
    # a clearly visible global shift fails with its own key and value
    warm = np.clip(img.astype(int) + [8, 4, -8], 0, 255).astype(np.uint8)
    rep = assess(img, warm)
    assert rep.verdict == "fail"
    d = rep.defects[0]
    assert d.kind == "global_shift" and f"{d.key} " in d.message and f"{rep.metrics[d.key]:.2f}" in d.message


def test_a_clean_region_does_not_dilute_a_bad_one():
    img = D.photo_like(480, 720, seed=5)
    good = D.ellipse_mask(480, 720, 190, 240, 110, 95)
    bad = D.ellipse_mask(480, 720, 540, 240, 80, 70)
    edited = D.clean_edit(D.tone_step(img, bad, 6.0, feather=24), good, seed=1)
    rep = assess(img, edited, good | bad)
    assert rep.verdict == "fail", rep.to_dict()["regions"]
    assert [r["verdict"] for r in rep.regions] == ["pass", "fail"]  # region 1 is the larger (good) one
    ghost = [d for d in rep.defects if d.region == 2]
    assert ghost and all(d.region == 2 for d in rep.defects)
    assert {d.kind for d in ghost} & {"ghost", "colour_cast", "seam"}
    d = ghost[0]
    assert d.x is not None and abs(d.x - 540) < 130 and abs(d.y - 240) < 110  # its place: the bad region


@pytest.mark.parametrize("kind, strength, expected", [
    ("hard_block", 64.0, {"block", "grid", "ghost", "colour_cast", "seam"}),
    ("colour_cast", 3.0, {"colour_cast"}),
    ("tone_step", 4.0, {"ghost", "seam"}),
])
def test_named_defects_inside_the_fill(kind, strength, expected):
    img = D.photo_like(512, 640, seed=9)
    mask = D.ellipse_mask(512, 640, 320, 256, 200, 170)
    fn, _, _, kw = D.PLANTED[kind]
    rep = assess(img, fn(img, mask, strength, **kw), mask)
    assert rep.verdict == "fail"
    kinds = {d.kind for d in rep.defects}
    assert kinds & expected, rep.reasons
    for d in rep.defects:  # every message names its own key and value
        assert f"{d.key} " in d.message and d.limit is not None


def test_hard_block_is_found_where_it_is():
    img = D.photo_like(512, 640, seed=9)
    mask = D.ellipse_mask(512, 640, 320, 256, 200, 170)
    edited = D.hard_block(img, mask, 64.0)
    rep = assess(img, edited, mask)
    blocks = [d for d in rep.defects if d.kind in ("block", "grid")]
    assert blocks, rep.reasons
    cx, cy, _ = D.deepest_point(mask)
    assert abs(blocks[0].x - cx) <= 48 and abs(blocks[0].y - cy) <= 48


def test_grid_of_three_levels_fails():
    rng = np.random.default_rng(0)
    # a smooth photo-like scene without hard shapes, as behind a tiled fill
    base = cv2.GaussianBlur(rng.normal(size=(640, 800, 3)).astype(np.float32), (0, 0), 12) * 40 + 120
    img = np.clip(base + rng.normal(0, 2.0, base.shape), 0, 255).astype(np.uint8)
    mask = D.ellipse_mask(640, 800, 400, 320, 300, 250)
    assert assess(img, img, mask).verdict == "pass"
    rep = assess(img, D.grid_lines(img, mask, 3.0), mask)
    assert rep.verdict == "fail" and "grid" in {d.kind for d in rep.defects}, rep.reasons
    assert rep.metrics["grid_lines"] >= 3


def test_messages_name_the_failing_key_with_its_own_value(scene):
    img, _, mask = scene
    rep = assess(img, D.colour_cast(img, mask, 4.0), mask)
    cast = [d for d in rep.defects if d.kind == "colour_cast"]
    assert cast
    d = cast[0]
    assert f"{d.key} {d.value:.1f}" in d.message
    assert d.value == pytest.approx(rep.metrics[d.key])


def test_many_dust_spots_complete_and_are_measured():
    rng = np.random.default_rng(3)
    h, w = 1080, 1920
    img = cv2.resize(D.photo_like(270, 480, seed=4), (w, h), interpolation=cv2.INTER_LINEAR)
    img = np.clip(img + rng.normal(0, 2, img.shape), 0, 255).astype(np.uint8)
    mask = np.zeros((h, w), np.uint8)
    for x, y in zip(rng.integers(20, w - 20, 400), rng.integers(20, h - 20, 400)):
        cv2.circle(mask, (int(x), int(y)), int(rng.integers(3, 7)), 1, -1)
    mask = mask.astype(bool)
    rep = assess(img, img, mask)  # crashed before: remap over > 32767 contour points
    assert rep.verdict in ("pass", "unmeasured")
    assert rep.metrics["regions"] <= 17 and any("small regions" in r["name"] for r in rep.regions)
    bad = D.tone_step(img, mask, 40.0)
    assert assess(img, bad, mask).verdict == "fail"


def test_sampling_has_no_point_limit():
    from crispedit.quality.metrics import _sample

    rng = np.random.default_rng(0)
    img = rng.random((60, 70, 3)).astype(np.float32)
    xy = np.stack([rng.integers(0, 70, 70_000), rng.integers(0, 60, 70_000)], 1).astype(np.float32)
    got = _sample(img, xy, 1.0)
    assert got.shape == (70_000, 3)
    assert np.allclose(got, img[xy[:, 1].astype(int), xy[:, 0].astype(int)])


def test_brisque_model_is_plain_data_without_pickle():
    import inspect

    from crispedit.quality import brisque as B
    from crispedit.quality import metrics as M

    for mod in (M, B):
        src = inspect.getsource(mod)
        assert "import pickle" not in src and "pickle.load" not in src
    assert M.BRISQUE_MODEL_PATH.suffix == ".npz"
    with np.load(M.BRISQUE_MODEL_PATH, allow_pickle=False) as z:
        assert z["sv"].shape == (770, 36) and z["min"].shape == (36,)
    assert M.brisque_available()
    s = M.brisque_score(D.photo_like(256, 256, seed=1))
    assert s is not None and 0 < s < 100


def test_edit_gate_checks_the_written_jpeg(tmp_path):
    from crispedit.workflow import builtin

    img = D.photo_like(360, 480, seed=6)
    Image.fromarray(img).save(tmp_path / "in.png")
    m = np.zeros((360, 480), np.uint8)
    m[150:210, 200:280] = 255
    Image.fromarray(m).save(tmp_path / "m.png")
    info = builtin.run_edit(cache=False, image=tmp_path / "in.png", mask=tmp_path / "m.png",
                            output=tmp_path / "out.jpg", seed=0)
    q = info["quality"]
    assert q["checked_file"] == str(tmp_path / "out.jpg")
    assert q["outside_changed_pixels"] > 1000 and q["verdict"] == "fail"
    assert any(d["kind"] == "outside_changed" for d in q["defects"])
    info = builtin.run_edit(cache=False, image=tmp_path / "in.png", mask=tmp_path / "m.png",
                            output=tmp_path / "out.png", seed=0)
    assert info["quality"]["outside_changed_pixels"] == 0


def _resample_reference(contours, step, per_seg):
    """The per-contour loop that ``_resample_contours`` replaces (float32 arc lengths, np.interp)."""
    pts_all, seg_all, seg_id = [], [], 0
    for c in contours:
        c = c.astype(np.float32)
        closed = np.vstack([c, c[:1]])
        dl = np.hypot(*np.diff(closed, axis=0).T)
        s = np.concatenate([[0.0], np.cumsum(dl)])
        n = max(4, int(s[-1] // step))
        t = np.linspace(0.0, s[-1], n, endpoint=False)
        pts_all.append(np.stack([np.interp(t, s, closed[:, 0]), np.interp(t, s, closed[:, 1])], axis=1))
        nseg = max(1, int(round(n / per_seg)))
        seg_all.append(seg_id + np.minimum((np.arange(n) * nseg) // n, nseg - 1))
        seg_id += nseg
    return np.concatenate(pts_all).astype(np.float32), np.concatenate(seg_all)


def test_contour_resampling_vectorised_matches_per_contour_loop():
    import cv2

    from crispedit.quality.metrics import _mask_gradient_at, _resample_contours

    rng = np.random.default_rng(3)
    m = np.zeros((300, 400), np.uint8)
    for x, y, r in zip(rng.integers(10, 390, 60), rng.integers(10, 290, 60), rng.integers(3, 30, 60)):
        cv2.circle(m, (int(x), int(y)), int(r), 1, -1)
    contours, _ = cv2.findContours(m, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    cs = [c[:, 0, :] for c in contours if len(c) >= 8]
    assert len(cs) > 10
    for step in (2.0, 3.3):
        p, seg = _resample_contours(cs, step, 16)
        p0, seg0 = _resample_reference(cs, step, 16)
        assert p.shape == p0.shape and np.array_equal(seg, seg0)
        assert np.abs(p - p0).max() < 1e-3
    # the tiled gradient equals the whole-crop gradient at the points
    xi = np.clip(np.round(p[:, 0]).astype(int), 0, 399)
    yi = np.clip(np.round(p[:, 1]).astype(int), 0, 299)
    blur = cv2.GaussianBlur(m.astype(np.float32), (0, 0), 3.0)
    gx, gy = _mask_gradient_at(m, xi, yi)
    assert np.allclose(gx, cv2.Sobel(blur, cv2.CV_32F, 1, 0, ksize=3)[yi, xi], atol=1e-6)
    assert np.allclose(gy, cv2.Sobel(blur, cv2.CV_32F, 0, 1, ksize=3)[yi, xi], atol=1e-6)
    sparse = np.zeros((600, 800), np.uint8)
    sparse[100:110, 100:112] = 1
    sparse[500:512, 700:709] = 1
    c2, _ = cv2.findContours(sparse, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    q, _ = _resample_contours([c[:, 0, :] for c in c2], 1.0, 8)
    qx, qy = np.round(q[:, 0]).astype(int), np.round(q[:, 1]).astype(int)
    b2 = cv2.GaussianBlur(sparse.astype(np.float32), (0, 0), 3.0)
    sx, sy = _mask_gradient_at(sparse, qx, qy)  # the tiled path (two spots on a large crop)
    assert np.allclose(sx, cv2.Sobel(b2, cv2.CV_32F, 1, 0, ksize=3)[qy, qx], atol=1e-6)
    assert np.allclose(sy, cv2.Sobel(b2, cv2.CV_32F, 0, 1, ksize=3)[qy, qx], atol=1e-6)


def test_good_removal_puts_the_truth_back_over_the_whole_mask():
    from crispedit.quality import defects as D

    truth = D.photo_like(160, 160, seed=5)
    m = D.ellipse_mask(160, 160, 80, 80, 40, 30)
    pasted = D.paste_seam(truth, m, 1.0)
    pasted_err = np.abs(pasted[m].astype(int) - truth[m]).mean()
    assert pasted_err > 5
    for how in ("jpeg95", "blur0.5"):
        out = D.good_removal(pasted, truth, m, how, feather=12)
        err = np.abs(out[m].astype(int) - truth[m]).mean()  # the truth, lightly processed (grain softened)
        assert err < 4.0 and err < 0.3 * pasted_err
        far = ~D.ellipse_mask(160, 160, 80, 80, 40 + 14, 30 + 14)
        assert np.array_equal(out[far], truth[far])  # untouched beyond the soft edge
    with pytest.raises(ValueError):
        D.good_removal(pasted, truth, m, "sharpen")


# ---------------------------------------------------------------------------------------------------------------
# speed helpers: the same results as the whole-crop computations they replace
# ---------------------------------------------------------------------------------------------------------------
def _dust_mask(h: int, w: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = np.zeros((h, w), np.uint8)
    for _ in range(n):
        cv2.circle(m, (int(rng.integers(-4, w + 4)), int(rng.integers(-4, h + 4))), int(rng.integers(1, 20)), 1, -1)
    return m.astype(bool)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tiled_depth_and_shared_distance_give_the_same_thresholded_sets(seed: int) -> None:
    from crispedit.quality import metrics as M

    m = _dust_mask(700, 1100, 60, seed)
    m[:, :2] = True  # spots on the image's edge: the edge counts as outside
    whole = cv2.distanceTransform(np.pad(m, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
    tiled = M._depth_inside(m)
    assert tiled.shape == m.shape and tiled.max() > 3
    for k in range(0, 40):
        assert np.array_equal(whole > k, tiled > k), k
    inner = np.zeros_like(m)
    inner[200:500, 300:800] = m[200:500, 300:800]  # spots away from the image's edges: the crops differ
    cache: dict = {}
    wide, box = M.dist_outside_cached(inner, 90, cache)
    narrow, nbox = M.dist_outside_cached(inner, 30, cache)  # sliced from the cached wide map
    assert nbox != box and narrow.base is not None
    own = M._dist_outside(inner[nbox[1] : nbox[3], nbox[0] : nbox[2]])
    for k in range(0, 30):
        assert np.array_equal(own > k, narrow > k), k


def test_run3_median_and_nonzero_match_numpy() -> None:
    from crispedit.quality import metrics as M

    rng = np.random.default_rng(3)
    for n in (3, 4, 11):
        x = rng.normal(size=n)
        x[1] = np.nan if n == 11 else x[1]
        ref = np.array([np.median(x[max(0, i - 1) : i + 2]) for i in range(n)])
        assert np.array_equal(M._run3_median(x), ref, equal_nan=True)
    b = rng.random((400, 500)) < 0.003
    for got, want in zip(M._nonzero(b), np.nonzero(b)):
        assert np.array_equal(got, want) and got.dtype == want.dtype


def test_units_label_past_the_sixteen_bit_limit() -> None:
    from crispedit.quality.verdict import _units

    m = np.zeros((600, 600), bool)
    m[::2, ::2] = True  # 90 000 single-pixel regions: more than 16-bit labels hold
    m[98:182, 98:182] = False
    m[100:180, 100:180] = True  # and one large region (apart from the grid), judged alone
    units = _units(m)
    assert [u[0] for u in units][0] == "region 1" and units[0][2].sum() == 80 * 80
    pool = units[-1][2]
    assert units[-1][0].endswith("small regions") and np.array_equal(pool | units[0][2], m)
    assert not (pool & units[0][2]).any()


@pytest.mark.parametrize("seed", [0, 1])
def test_inner_from_depth_patches_matches_the_whole_map(seed: int) -> None:
    from crispedit.quality import metrics as M

    m = _dust_mask(600, 1200, 8, seed)
    whole = cv2.distanceTransform(np.pad(m, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
    patches = M._depth_patches(m)
    assert len(patches) > 1  # scattered spots: tiles, not the whole map
    covered = np.zeros_like(m)
    for y0, x0, d in patches:
        covered[y0 : y0 + d.shape[0], x0 : x0 + d.shape[1]] = True
    assert not (m & ~covered).any()
    dist = M._dist_outside(m)
    for band in (4, 8, 32):
        inner, ring = M.inner_and_ring(m, band, band, 24, dist=dist)
        area = np.count_nonzero(m)
        ref = m
        for e in (band, band // 2, band // 4, 2):
            if np.count_nonzero(whole > e) >= max(400, 0.05 * area):
                ref = whole > e
                break
        assert np.array_equal(inner, ref) and np.array_equal(ring, (dist > band) & (dist <= band + 24))


def test_thinned_indices_and_deep_region_match_the_full_size_versions() -> None:
    from crispedit.quality import metrics as M

    m = _dust_mask(400, 700, 80, 4)
    m[100:300, 200:500] = True  # one large block: a deep part
    for max_px in (500, 30_000, 10**6):
        thin = M._subsample(m, max_px)
        for got, want in zip(M._thinned_nonzero(m, max_px), np.nonzero(thin)):
            assert np.array_equal(got, want) and got.dtype == want.dtype
    ys, xs = M._deep_region(m, 12.0)
    small = cv2.resize(m.astype(np.uint8) * 255, (700 // 4, 400 // 4), interpolation=cv2.INTER_AREA) >= 255
    deep_s = cv2.distanceTransform(np.pad(small.astype(np.uint8), 1), cv2.DIST_L2, 3)[1:-1, 1:-1] * 4 > 12.0
    deep = np.repeat(np.repeat(deep_s, 4, 0), 4, 1) & m
    assert deep.sum() > 400 and np.array_equal(np.stack([ys, xs]), np.stack(np.nonzero(M._subsample(deep, 30_000))))


@pytest.mark.parametrize("q", [1, 2])
def test_low_pass_on_point_boxes_matches_the_whole_image(q: int) -> None:
    from crispedit.quality import metrics as M

    rng = np.random.default_rng(6)
    img = cv2.GaussianBlur(rng.integers(0, 256, (500, 1600, 3)).astype(np.uint8), (0, 0), 1.5)
    spots = rng.uniform([0, 0], [1600, 500], (12, 2))
    xy = np.concatenate([c + rng.normal(size=(40, 2)) * 6 for c in spots])
    xy = np.clip(xy, 0, [1598.9, 498.9]).astype(np.float32)
    boxes = M._point_boxes(xy, 1600, 500, 26, 48, q)
    seen = np.concatenate([idx for idx, _ in boxes])
    assert np.array_equal(np.sort(seen), np.arange(len(xy)))  # every point in one box
    assert 1 < len(boxes) <= len(np.unique((xy // 48).astype(int), axis=0))  # per spot, no more than the tiles
    for idx, (x0, y0, x1, y1) in boxes:
        assert x0 % q == 0 and y0 % q == 0
        p = xy[idx]
        assert ((p[:, 0] - x0 >= 26) | (x0 == 0)).all() and ((x1 - p[:, 0] >= 26) | (x1 == 1600)).all()
        assert ((p[:, 1] - y0 >= 26) | (y0 == 0)).all() and ((y1 - p[:, 1] >= 26) | (y1 == 500)).all()
    lp = M._lab_lowpass(6.0, q)
    whole = lp(img)
    ref = M._sample(whole, xy, float(q))
    got = M._filtered_at(img, lp, M._halo(6.0), xy, q=q)
    assert np.allclose(got, ref, rtol=0, atol=1e-4)  # the same values up to float rounding
