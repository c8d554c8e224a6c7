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
    card = (out / "README.md").read_text()
    assert "corrupt.jsonl`" in card and "other.jsonl`" in card  # the card names every table of the dataset


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
    assert f": {len(first)} ok, 0 failed" in stderr.decode()  # items finished during the shutdown are counted
    assert f"{len(first)}/4 item(s) done" in " ".join(stderr.decode().split())
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
    for table in ("/data/local/jobs.csv", "auto_jobs.csv"):  # a table path is not an address
        assert expand_ray_flag(["batch", "--ray", table, "-o", "d"])[:4] == ["batch", "--ray", "local", table]
    assert expand_ray_flag(["batch", "j.csv", "--ray", "auto"])[-1] == "auto"


# ---------------------------------------------------------------------------------------------------------------
# a demanding user's tables and reruns
# ---------------------------------------------------------------------------------------------------------------


def test_csv_with_bom_any_case_headers_and_quoted_commas(photos, tmp_path):
    from crispedit.batch.table import plan_items

    jobs = photos / "excel.csv"  # as Excel writes it: BOM, capitalised headers, commas inside quoted cells
    jobs.write_bytes('\ufeffImage,Box,Prompt,Negative Prompt,Seed\r\n'
                     'p0.png,"30,20,80,70","a cat, sitting","blurry, dark",4\r\n'.encode("utf-8"))
    [item] = plan_items(jobs, tmp_path)
    args = item.spec["args"]
    assert args["prompt"] == "a cat, sitting" and args["negative_prompt"] == "blurry, dark"
    assert args["box"] == "30,20,80,70" and args["seed"] == 4


def test_yaml_mapping_instead_of_list_says_how_to_fix(photos, tmp_path):
    from crispedit.batch.table import plan_items
    from crispedit.errors import InputError

    jobs = photos / "one.yaml"
    jobs.write_text("image: p0.png\nbox: 30,20,80,70\n")
    with pytest.raises(InputError) as exc:
        plan_items(jobs, tmp_path)
    assert "mapping (image, box)" in exc.value.problem and "`- `" in exc.value.fix


def test_repeated_rows_reported_and_json_stdout_only(photos, tmp_path):
    row = {"image": "p0.png", "box": "30,20,80,70", "seed": 9}
    jobs = _write_table(photos / "dups.jsonl", [row, dict(row, image="./p0.png"), dict(row, seed=8), row])
    res = CliRunner().invoke(app, ["batch", str(jobs), "-o", str(tmp_path / "ds"), "--workers", "1", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)  # stdout is the JSON document and nothing else
    assert summary["total"] == 2 and summary["ok"] == 2 and summary["duplicate_rows"] == {"1": [2, 4]}
    assert "rows 2, 4 = row 1" in res.stderr
    assert len((tmp_path / "ds" / "records.jsonl").read_text().splitlines()) == 2


def test_ctrl_c_while_planning_exits_130(photos, tmp_path, monkeypatch):
    from crispedit.batch import api

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "plan_items", interrupted)
    code, text = _batch(photos / "jobs.jsonl", "-o", tmp_path / "ds")
    assert code == 130 and "interrupted" in text and "Aborted" not in text


def test_edited_row_redoes_only_that_item_and_reverting_restores_it(photos, tmp_path):
    rows = [{"image": "p0.png", "box": "30,20,80,70", "seed": 1}, {"image": "p1.png", "box": "30,20,80,70", "seed": 1}]
    jobs = _write_table(photos / "edited.jsonl", rows)
    out = tmp_path / "ds"

    def run() -> dict:
        res = CliRunner().invoke(app, ["batch", str(jobs), "-o", str(out), "--workers", "1", "--json"])
        assert res.exit_code == 0, res.output  # the same table, edited: a rerun, no --resume needed
        return json.loads(res.stdout)

    run()
    first = read_jsonl(out / "records.jsonl")
    _write_table(jobs, [rows[0], dict(rows[1], seed=2)])
    summary = run()
    assert summary["ok"] == 1 and summary["skipped"] == 1  # only the changed row redone
    recs = read_jsonl(out / "records.jsonl")
    assert sorted(r["seeds"]["edit"] for r in recs) == [1, 2] and summary["dataset"]["items"] == 2
    assert len(list((out / "edits").iterdir())) == 2 == len(list((out / "masks").iterdir()))
    old = next(r for r in first if r["row"] == 2)
    assert (out / "superseded" / old["outputs"]["edit"]["path"]).is_file()
    assert "`superseded/`: 1 item(s)" in (out / "README.md").read_text()
    _write_table(jobs, rows)  # reverting the row brings the earlier item back instead of redoing it
    summary = run()
    assert summary["ok"] == 0 and summary["skipped"] == 2
    assert sorted(r["key"] for r in read_jsonl(out / "records.jsonl")) == sorted(r["key"] for r in first)


def test_rows_the_edit_workflow_would_reject_are_caught_up_front(photos, tmp_path):
    from crispedit.batch.table import BatchTableError, plan_items

    rows = [{"image": "p0.png", "box": "30,20,80,70"},
            {"image": "p0.png", "box": "80,70,30,20"},  # reversed corners: the MaskFromShape node refuses it
            {"image": "p0.png", "box": "30,20,80,70", "engine": "classicl"}]
    with pytest.raises(BatchTableError) as exc:
        plan_items(_write_table(photos / "late.jsonl", rows), tmp_path)
    msgs = exc.value.messages
    assert len(msgs) == 2 and msgs[0].startswith("row 2 (line 2): ") and "x0 < x1" in msgs[0]
    assert msgs[1].startswith("row 3 (line 3): unknown engine 'classicl'") and "did you mean 'classical'" in msgs[1]


def test_assemble_keeps_items_of_a_table_added_by_a_concurrent_run(tmp_path):
    from crispedit.batch.dataset import assemble, prepare_outdir
    from crispedit.batch.worker import write_json_atomic

    out = tmp_path / "ds"
    run_a = prepare_outdir(out, {"jobs": "/a.jsonl", "jobs_blake2b": "a"}, False, ["ka"])
    prepare_outdir(out, {"jobs": "/b.jsonl", "jobs_blake2b": "b"}, True, ["kb"])  # started while A runs
    for key, row in (("ka", 1), ("kb", 1), ("old", 2)):
        write_json_atomic(out / "records" / f"{key}.json", {"key": key, "row": row, "status": "ok", "outputs": {}})
    summary = assemble(out, run_a)  # A finishes with its own (older) manifest in memory
    assert summary["items"] == 2 and summary["superseded"] == 1
    assert sorted(r["key"] for r in read_jsonl(out / "records.jsonl")) == ["ka", "kb"]
    assert (out / "superseded" / "records" / "old.json").is_file()


def test_box_checked_against_the_exif_rotated_size(photos, tmp_path):
    from crispedit.batch.table import plan_items

    im = Image.fromarray((photo_like(64, 80, seed=7) * 255 + 0.5).astype(np.uint8))
    exif = im.getexif()
    exif[0x0112] = 6  # stored 80x64, shown (and edited by `crispedit edit`) as 64x80
    im.save(photos / "portrait.jpg", exif=exif.tobytes())
    jobs = _write_table(photos / "rot.jsonl", [{"image": "portrait.jpg", "box": "10,70,60,78", "seed": 1}])
    [item] = plan_items(jobs, tmp_path)  # y 70..78 lies inside the 80 px tall image as shown
    assert item.spec["size"] == [64, 80]


def test_table_encodings_utf16_read_cp1252_refused_clearly(photos, tmp_path):
    from crispedit.batch.table import plan_items
    from crispedit.errors import InputError

    text = 'image\tbox\tprompt\np0.png\t30,20,80,70\tcafé au lait\n'
    (photos / "unicode.tsv").write_bytes(text.encode("utf-16"))  # Excel's "Unicode text": UTF-16 with a BOM
    [item] = plan_items(photos / "unicode.tsv", tmp_path)
    assert item.spec["args"]["prompt"] == "café au lait"
    (photos / "ansi.tsv").write_bytes(text.encode("cp1252"))
    with pytest.raises(InputError) as exc:  # not a UnicodeDecodeError traceback
        plan_items(photos / "ansi.tsv", tmp_path)
    assert "line 2 is not UTF-8" in exc.value.problem and "0xe9" in exc.value.problem


def test_csv_repeated_column_and_oversized_cell_are_input_errors(photos, tmp_path):
    from crispedit.batch.table import plan_items
    from crispedit.errors import InputError

    (photos / "twice.csv").write_text('image,box,Image\np0.png,"30,20,80,70",p1.png\n')
    with pytest.raises(InputError, match="image appear more than once"):
        plan_items(photos / "twice.csv", tmp_path)  # not silently the last 'image' column
    (photos / "huge.csv").write_text('image,box,prompt\np0.png,"30,20,80,70",' + "a" * 200_000 + "\n")
    with pytest.raises(InputError, match="line 2 is not valid CSV"):
        plan_items(photos / "huge.csv", tmp_path)


def test_card_counts_items_not_run_yet_after_an_interruption(tmp_path):
    from crispedit.batch.dataset import assemble, prepare_outdir
    from crispedit.batch.worker import write_json_atomic

    out = tmp_path / "ds"
    manifest = prepare_outdir(out, {"jobs": "/t.jsonl", "jobs_blake2b": "t"}, False, ["k1", "k2", "k3"])
    write_json_atomic(out / "records" / "k1.json", {"key": "k1", "row": 1, "status": "ok", "outputs": {}})
    summary = assemble(out, manifest)  # what an interrupted run assembles
    assert (summary["items"], summary["ok"], summary["failed"], summary["pending"]) == (3, 1, 0, 2)
    assert "items: **3** — done: 1, failed: 0, not run yet: 2" in (out / "README.md").read_text()
    assert len((out / "records.jsonl").read_text().splitlines()) == 1


def test_unreachable_ray_address_is_an_input_error_fast(monkeypatch):
    import socket

    from crispedit.batch.runner import _ray_init
    from crispedit.errors import InputError

    ray = pytest.importorskip("ray")

    def no_cluster(*a, **k):
        raise ConnectionError("Could not find any running Ray instance.")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as in a fresh `crispedit batch` process
    monkeypatch.setattr(ray, "init", no_cluster)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(InputError, match="cannot reach the Ray cluster"):
        _ray_init(f"ray://127.0.0.1:{port}", None)  # instead of Ray retrying for minutes
    with pytest.raises(InputError, match="cannot connect to the Ray cluster at auto"):
        _ray_init("auto", None)  # not a ConnectionError traceback with exit 1


def test_csv_prompt_list_written_as_in_yaml(photos, tmp_path):
    from crispedit.batch.table import BatchTableError, plan_items

    jobs = photos / "yamlish.csv"
    jobs.write_text('image,box,prompt\np0.png,"30,20,80,70","[a red car, a blue car]"\n')
    [item] = plan_items(jobs, tmp_path)  # two prompt variants, not the literal text "[a red car, a blue car]"
    assert item.spec["args"]["prompt_variants"] == ["a red car", "a blue car"]
    jobs.write_text('image,box,prompt\np0.png,"30,20,80,70","[a red car, [oops]"\n')
    with pytest.raises(BatchTableError) as exc:
        plan_items(jobs, tmp_path)
    assert exc.value.messages[0].startswith("row 1 (line 2): column 'prompt': prompt looks like a list")


def test_outdir_that_cannot_be_created_is_an_input_error(photos, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    jobs = _write_table(photos / "one.jsonl", [{"image": "p0.png", "box": "30,20,80,70"}])
    code, text = _batch(jobs, "-o", blocker / "ds")  # a file where a parent folder should be
    assert code == 2 and "cannot create the dataset folder" in text and "Traceback" not in text


@pytest.mark.slow
def test_item_that_always_kills_its_worker_is_failed_alone(photos, tmp_path, monkeypatch):
    faults = tmp_path / "faults"
    faults.mkdir()
    (faults / "crash-1").touch()  # row 1 kills its worker at every attempt
    (faults / "delay-2").write_text("4")  # row 2 is still running each time row 1 breaks the pool
    monkeypatch.setenv(FAULT_ENV, str(faults))
    rows = [{"image": "p0.png", "box": "30,20,80,70", "seed": 1}, {"image": "p1.png", "box": "30,20,80,70", "seed": 1}]
    out = tmp_path / "ds"
    code, text = _batch(_write_table(photos / "crash.jsonl", rows), "-o", out, "--workers", "2")
    assert code == 1, text
    recs = {r["row"]: r for r in read_jsonl(out / "records.jsonl")}
    assert recs[1]["status"] == "failed" and "worker died 3 times" in recs[1]["error"]
    assert recs[2]["status"] == "ok"  # not blamed for the crashes of the item beside it


def test_missing_sd_model_refused_up_front_once_per_model(photos, tmp_path):
    rows = [{"image": f"p{i}.png", "box": "30,20,80,70", "engine": "sd15", "model": str(tmp_path / "nope.safetensors")}
            for i in range(3)]
    out = tmp_path / "ds"
    code, text = _batch(_write_table(photos / "sd.jsonl", rows), "-o", out, "--workers", "1")
    assert code == 2 and "rows 1, 2, 3: model path" in text and "does not exist" in text
    assert not out.exists()  # not three items failing one by one after the batch started


def _live(procs: list) -> list:
    import psutil

    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_batch_process_stopped_or_killed_leaves_no_workers(photos, tmp_path, sig):
    import psutil

    faults = tmp_path / "faults"
    faults.mkdir()
    (faults / "delay").write_text("4")
    rows = [{"image": f"p{i}.png", "box": "30,20,80,70", "seed": 1} for i in range(3)]
    jobs = _write_table(photos / f"stop{int(sig)}.jsonl", rows)
    out = tmp_path / "ds"
    env = dict(os.environ, PYTHONPATH=str(SRC), **{FAULT_ENV: str(faults)})
    err = open(tmp_path / "stderr.txt", "wb")  # a file, not a pipe: orphaned workers would hold a pipe open
    proc = subprocess.Popen([sys.executable, "-m", "crispedit.cli", "batch", str(jobs), "-o", str(out), "--workers",
                             "2"], env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    err.close()
    deadline = time.time() + 120
    workers: list = []
    while time.time() < deadline and len(workers) < 2 and proc.poll() is None:
        workers = [c for c in psutil.Process(proc.pid).children(recursive=True) if "spawn_main" in " ".join(c.cmdline())]
        time.sleep(0.1)
    assert len(workers) == 2, "the pool did not start"
    os.kill(proc.pid, sig)  # the batch process only, as a job scheduler or the OOM killer would
    try:
        proc.wait(timeout=120)
        if sig == signal.SIGTERM:  # stopped like Ctrl-C: finished items kept
            assert proc.returncode == 130, (tmp_path / "stderr.txt").read_text()
        deadline = time.time() + 60
        while time.time() < deadline and _live(workers):
            time.sleep(0.2)
        assert not _live(workers), "worker processes outlived the batch"
    finally:
        for p in _live(workers):
            p.kill()
