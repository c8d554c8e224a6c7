"""crispedit batch: validation up front, identical results to `crispedit edit`, failures recorded, exactly once
under killed workers (local pool and Ray) and Ctrl-C + resume.

Small images generated here; one local Ray cluster (`ray.init(num_cpus=2)`) for the whole module.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import photo_like
from PIL import Image
from typer.testing import CliRunner

from crispedit.batch.dataset import read_jsonl
from crispedit.batch.worker import FAULT_ENV
from crispedit.cli import app

SRC = Path(__file__).resolve().parents[1] / "src"


def _write_table(path: Path, rows: list[dict]) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        cols = sorted({k for r in rows for k in r})
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("photos")
    for i in range(4):
        Image.fromarray((photo_like(96, 128, seed=i) * 255 + 0.5).astype(np.uint8)).save(d / f"p{i}.png")
    m = np.zeros((96, 128), np.uint8)
    m[30:60, 40:90] = 255
    Image.fromarray(m).save(d / "mask.png")
    Image.fromarray(m[:80]).save(d / "small_mask.png")
    (d / "corrupt.png").write_bytes((d / "p0.png").read_bytes()[:200])
    return d


def _rows(photos: Path) -> list[dict]:
    return [
        {"image": "p0.png", "mask": "mask.png", "seed": 3},
        {"image": "p1.png", "box": "30,20,80,70", "seed": 5, "candidates": 2},
        {"image": "p2.png", "ellipse": "20,20,100,80"},  # no seed: derived with SeedSequence
        {"image": "p3.png", "box": [10, 10, 60, 50], "seed": 1},
    ]


def _batch(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(app, ["batch", *map(str, args)])
    return res.exit_code, res.output


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def _edits(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "edits").iterdir())}


@pytest.fixture(scope="module")
def local_run(photos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "ds"
    jobs = _write_table(photos / "jobs.jsonl", _rows(photos))
    code, text = _batch(jobs, "-o", out, "--workers", "2")
    assert code == 0, text
    return out


def test_rows_validated_up_front_with_row_numbers(photos, tmp_path):
    rows = [{"image": "p0.png", "box": "1,2,30,40"},
            {"image": "p0.png", "box": "1,2,30,40", "strenght": 0.3},
            {"image": "missing.png", "box": "1,2,30,40"},
            {"image": "p0.png", "box": "1,2,30,40", "mask": "mask.png"},
            {"image": "p0.png", "box": "1,2", "seed": "x"},
            {"image": "p0.png", "box": "1,2,30,40", "strength": 1.5}]
    jobs = _write_table(photos / "bad.csv", rows)
    out = tmp_path / "ds"
    code, text = _batch(jobs, "-o", out)
    assert code == 2
    assert "row 2 (line 3): unknown column 'strenght'" in text and "did you mean 'strength'" in text
    assert "row 3 (line 4): image not found" in text
    assert "row 4 (line 5): give only one of mask, box" in text
    assert "row 5 (line 6): column 'seed'" in text
    assert "row 6 (line 7): column 'strength'" in text
    assert "row 1 " not in text
    assert not out.exists()  # nothing ran, nothing written


def test_local_batch_equals_single_edit_calls(photos, local_run, tmp_path):
    recs = read_jsonl(local_run / "records.jsonl")
    assert len(recs) == 4 and all(r["status"] == "ok" for r in recs)
    assert len(list((local_run / "edits").iterdir())) == 4
    by_row = {r["row"]: r for r in recs}
    derived = by_row[3]
    assert derived["seed_source"] == "derived" and isinstance(derived["seeds"]["edit"], int)
    assert by_row[1]["seed_source"] == "row" and by_row[1]["seeds"]["edit"] == 3
    cands = by_row[2]["candidates"]
    from crispedit.options import spawn_seeds

    assert [c["seed"] for c in cands] == spawn_seeds(5, 2)  # children of SeedSequence(5), not 5 + i
    assert sorted(c["status"] for c in cands).count("kept") == 1
    for rec in recs:
        assert rec["verdict"] in ("pass", "fail") and "seam_score" in rec["quality"]
        assert rec["inputs"]["image"]["blake2b"] and rec["outputs"]["edit"]["blake2b"]
    # the same seeds through `crispedit edit` give the same pixels
    cases = [(1, ["--mask", photos / "mask.png", "--seed", "3"]),
             (2, ["--box", "30,20,80,70", "--seed", "5", "--candidates", "2"]),
             (3, ["--ellipse", "20,20,100,80", "--seed", str(derived["seeds"]["edit"])])]
    for row, opts in cases:
        single = tmp_path / f"single{row}.png"
        res = CliRunner().invoke(app, ["edit", str(photos / f"p{row - 1}.png"), "-o", str(single),
                                       *map(str, opts)])
        assert res.exit_code == 0, res.output
        batch_edit = local_run / by_row[row]["outputs"]["edit"]["path"]
        assert np.array_equal(_pixels(single), _pixels(batch_edit)), f"row {row} differs from crispedit edit"
    # the saved mask is the one the edit used
    m = _pixels(local_run / by_row[1]["outputs"]["mask"]["path"]) > 127
    assert np.array_equal(m, _pixels(photos / "mask.png") > 127)
    card = (local_run / "README.md").read_text()
    assert "items: **4**" in card and "SAGI" in card and "| classical | 4 |" in card


def test_rerun_skips_everything_done(photos, local_run):
    before = {p.name: p.stat().st_mtime_ns for p in (local_run / "records").iterdir()}
    code, text = _batch(photos / "jobs.jsonl", "-o", local_run, "--json")
    assert code == 0
    summary = json.loads(text[text.index("{"):text.rindex("}") + 1])
    assert summary["skipped"] == 4 and summary["ok"] == 0
    assert len(json.loads((local_run / "input-hashes.json").read_text())) >= 5  # 4 images and a mask
    assert before == {p.name: p.stat().st_mtime_ns for p in (local_run / "records").iterdir()}


def test_corrupt_item_recorded_batch_goes_on(photos, tmp_path):
    rows = [{"image": "p0.png", "box": "30,20,80,70", "seed": 1},
            {"image": "corrupt.png", "box": "30,20,80,70", "seed": 1},
            {"image": "p1.png", "mask": "small_mask.png", "seed": 1}]
    out = tmp_path / "ds"
    code, text = _batch(_write_table(photos / "corrupt.jsonl", rows), "-o", out, "--workers", "1",
                        "--copy-originals")
    assert code == 1
    recs = {r["row"]: r for r in read_jsonl(out / "records.jsonl")}
    assert recs[1]["status"] == "ok"
    assert recs[2]["status"] == "failed" and "corrupt.png" in recs[2]["error"]
    assert recs[3]["status"] == "failed" and "mask is 128x80" in recs[3]["error"]
    assert "failed: 2" in (out / "README.md").read_text()
    copy = out / "originals" / f"{recs[1]['key']}.png"
    assert copy.read_bytes() == (photos / "p0.png").read_bytes()
    # another table into the same dataset: refused unless --resume (then the done item is skipped)
    other = _write_table(photos / "other.jsonl", rows[:1])
    code, text = _batch(other, "-o", out)
    assert code == 2 and "--resume" in text
    code, text = _batch(other, "-o", out, "--resume", "--json")
    assert code == 1 and '"skipped": 1' in text  # the dataset still holds the two failed items


def test_local_worker_killed_mid_item_exactly_once(photos, local_run, tmp_path, monkeypatch):
    faults = tmp_path / "faults"
    faults.mkdir()
    (faults / "kill-2").touch()
    monkeypatch.setenv(FAULT_ENV, str(faults))
    out = tmp_path / "ds"
    code, text = _batch(photos / "jobs.jsonl", "-o", out, "--workers", "2")
    assert code == 0, text
    assert list(faults.glob("killed-2-*")), "the fault was not triggered"
    lines = (out / "records.jsonl").read_text().splitlines()
    keys = [json.loads(x)["key"] for x in lines]
    assert len(keys) == 4 == len(set(keys))
    assert _edits(out) == _edits(local_run)
    assert not [p for p in out.rglob(".*.tmp")]


@pytest.mark.slow
def test_sigint_then_resume_redoes_nothing(photos, local_run, tmp_path):
    faults = tmp_path / "faults"
    faults.mkdir()
    (faults / "delay").write_text("3")
    out = tmp_path / "ds"
    env = dict(os.environ, PYTHONPATH=str(SRC), **{FAULT_ENV: str(faults)})
    cmd = [sys.executable, "-m", "crispedit.cli", "batch", str(photos / "jobs.jsonl"), "-o", str(out),
           "--workers", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (out / "records").is_dir() and list((out / "records").glob("*.json")):
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the whole foreground process group
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr.decode()
    first = {p.name: p.stat().st_mtime_ns for p in (out / "records").glob("*.json")}
    assert 1 <= len(first) < 4
    assert not [p for p in out.rglob(".*.tmp")]
    (faults / "delay").unlink()
    res = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, timeout=300)
    assert res.returncode == 0, res.stderr.decode()
    after = {p.name: p.stat().st_mtime_ns for p in (out / "records").glob("*.json")}
    assert len(after) == 4 and all(after[k] == v for k, v in first.items())  # nothing redone
    keys = [json.loads(x)["key"] for x in (out / "records.jsonl").read_text().splitlines()]
    assert len(keys) == 4 == len(set(keys))
    assert _edits(out) == _edits(local_run)


# ---------------------------------------------------------------------------------------------------------------
# Ray: one local cluster for the module
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    ray = pytest.importorskip("ray")
    faults = tmp_path_factory.mktemp("ray_faults")
    path = os.pathsep.join([str(SRC)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 2**20, log_to_driver=False,
             configure_logging=False, runtime_env={"env_vars": {FAULT_ENV: str(faults), "PYTHONPATH": path}})
    yield faults
    ray.shutdown()


def test_ray_results_identical_to_local(photos, local_run, ray_cluster, tmp_path):
    out = tmp_path / "ds"
    code, text = _batch(photos / "jobs.jsonl", "-o", out, "--ray", "auto")
    assert code == 0, text
    assert _edits(out) == _edits(local_run)
    recs = read_jsonl(out / "records.jsonl")
    assert len(recs) == 4 and {r["worker"]["pid"] for r in recs} != {os.getpid()}


@pytest.mark.slow
def test_ray_worker_killed_mid_task_exactly_once(photos, local_run, ray_cluster, tmp_path):
    (ray_cluster / "kill-3").touch()
    out = tmp_path / "ds"
    code, text = _batch(photos / "jobs.jsonl", "-o", out, "--ray", "auto")
    assert code == 0, text
    assert list(ray_cluster.glob("killed-3-*")), "the fault was not triggered"
    keys = [json.loads(x)["key"] for x in (out / "records.jsonl").read_text().splitlines()]
    assert len(keys) == 4 == len(set(keys))
    assert _edits(out) == _edits(local_run)
    assert not [p for p in out.rglob(".*.tmp")]


def test_workflow_table_matches_crispedit_run(photos, tmp_path):
    wf = tmp_path / "remove.yaml"
    wf.write_text("""version: 1
nodes:
  photo: {type: LoadImage, params: {path: p0.png}}
  area: {type: MaskFromShape, inputs: {image: photo}, params: {shape: ellipse, box: [0.2, 0.2, 0.6, 0.7],
         units: fraction}}
  remove: {type: Inpaint, inputs: {image: photo, mask: area}, params: {engine: classical, seed: null}}
  check: {type: QualityCheck, inputs: {original: photo, edited: remove.image, mask: area}}
  save: {type: SaveImage, inputs: {image: remove.image}, params: {path: out.png}}
""")
    rows = [{"photo.path": "p1.png", "remove.seed": 7}, {"photo.path": "p2.png", "area.shape": "box"}]
    out = tmp_path / "ds"
    code, text = _batch(_write_table(photos / "wf.jsonl", rows), "--workflow", wf, "-o", out, "--workers", "1")
    assert code == 0, text
    recs = {r["row"]: r for r in read_jsonl(out / "records.jsonl")}
    assert recs[1]["seeds"] == {"remove": 7} and recs[1]["seed_source"] == "row"
    assert recs[2]["seed_source"] == "derived" and isinstance(recs[2]["seeds"]["remove"], int)
    for row, sets in ((1, ["photo.path=p1.png", "remove.seed=7"]),
                      (2, ["photo.path=p2.png", "area.shape=box", f"remove.seed={recs[2]['seeds']['remove']}"])):
        single = tmp_path / f"run{row}.png"
        args = ["run", str(wf), "--no-cache", "--set", f"save.path={single}"]
        for s in sets:
            args += ["--set", s.replace("=p", f"={photos}/p")]
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 0, res.output
        assert np.array_equal(_pixels(single), _pixels(out / recs[row]["outputs"]["edit"]["path"]))
        assert recs[row]["verdict"] in ("pass", "fail") and recs[row]["outputs"]["mask"]["pixels"] > 0
    bad = _write_table(photos / "wfbad.csv", [{"photo.path": "p1.png", "remove.sed": "3"}])
    code, text = _batch(bad, "--workflow", wf, "-o", tmp_path / "ds2")
    assert code == 2 and "row 1 (line 2)" in text and "did you mean 'seed'" in text


def test_tables_in_three_formats_plan_the_same_items(photos, tmp_path):
    from crispedit.batch.table import plan_items

    rows = [{"image": "p0.png", "box": "30,20,80,70", "seed": 2, "prompt": '["a", "b"]'},
            {"image": "p1.png", "ellipse": "20,20,100,80"}]
    (photos / "t.yaml").write_text("- {image: p0.png, box: [30, 20, 80, 70], seed: 2, prompt: [a, b]}\n"
                                   "- {image: p1.png, ellipse: '20,20,100,80'}\n")
    plans = [plan_items(_write_table(photos / "t.csv", rows), tmp_path),
             plan_items(photos / "t.yaml", tmp_path),
             plan_items(_write_table(photos / "t.jsonl", [dict(rows[0], prompt=["a", "b"]), rows[1]]), tmp_path)]
    assert [[it.key for it in p] for p in plans[1:]] == [[it.key for it in plans[0]]] * 2
    first = plans[0][0].spec["args"]
    assert first["prompt_variants"] == ["a", "b"] and first["candidates"] == 2
    assert plans[0][1].spec["seed_source"] == "derived"
    assert plan_items(photos / "t.yaml", tmp_path, batch_seed=1)[1].key != plans[0][1].key  # seed root matters
    assert plans[0][0].resources["memory"] > 0 and plans[0][0].resources["num_gpus"] == 0


def test_ray_flag_address_is_optional():
    from crispedit.batch.cli import expand_ray_flag

    assert expand_ray_flag(["batch", "j.csv", "-o", "d", "--ray"]) == ["batch", "j.csv", "-o", "d", "--ray", "local"]
    assert expand_ray_flag(["batch", "--ray", "j.csv", "-o", "d"])[:3] == ["batch", "--ray", "local"]
    assert expand_ray_flag(["batch", "j.csv", "--ray", "ray://head:10001"])[-1] == "ray://head:10001"
    assert expand_ray_flag(["batch", "j.csv", "--ray", "10.0.0.5:6379"])[-1] == "10.0.0.5:6379"
    assert expand_ray_flag(["edit", "--ray"]) == ["edit", "--ray"]
