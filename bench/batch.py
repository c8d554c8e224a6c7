"""Batch throughput benchmark (issue 15): 4K classical-engine edits through ``crispedit batch``.

Items: 3840x2160 JPEG crops of real photos (``bench/photos.py``), one ellipse each (~600x500 px), PNG out. Runs:

1. ``crispedit edit`` once per item, one process per item, in a row (what a shell loop does): seconds per item.
2. The edit itself, in process (``crispedit.workflow.builtin.run_edit``, warm): the work an item cannot avoid.
3. ``crispedit batch`` with ``--workers 1`` and ``--workers 2`` (local process pool) and ``--ray`` (a new local
   Ray cluster with 2 CPUs, its start included): wall time of the command, items per minute.

Overhead per item = batch wall (1 worker) / items - in-process edit time. Scaling efficiency = throughput with 2
workers / (2 x throughput with 1). Every batch run writes a fresh dataset folder.

Usage::

    .venv/bin/python bench/batch.py                 # prints markdown
    .venv/bin/python bench/batch.py --write         # also updates docs/benchmarks.md (section bench:batch)
    .venv/bin/python bench/batch.py --items 4 --no-ray
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from photos import get_photo_info  # noqa: E402
from zoom import ROOT, machine_line, source_state, update_doc  # noqa: E402

PHOTOS = ["seeding", "dragonfly", "painting", "fossa", "sunset", "bridge", "kleiber", "umang"]


def load_line() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def prepare(tmp: Path, n: int) -> Path:
    """Write ``n`` 4K JPEG crops and a JSONL job table with one ellipse per item; returns the table."""
    rows = []
    infos = get_photo_info(PHOTOS)
    for i in range(n):
        _, path = infos[i % len(infos)]
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            x0, y0 = max(0, (w - 3840) // 2), max(0, (h - 2160) // 2)
            crop = im.crop((x0, y0, x0 + 3840, y0 + 2160))
        name = f"item{i:02d}.jpg"
        crop.save(tmp / name, quality=95)
        cx, cy = 1200 + 300 * (i % 5), 700 + 150 * (i % 4)
        rows.append({"image": name, "ellipse": f"{cx},{cy},{cx + 600},{cy + 500}", "seed": i})
    table = tmp / "jobs.jsonl"
    table.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return table


def _child_cpu() -> float:
    """CPU seconds (user + sys) of the finished children this process waited for (and theirs)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "crispedit.cli", *args]


def _env() -> dict[str, str]:
    src = str(ROOT / "src")
    path = os.environ.get("PYTHONPATH")
    return dict(os.environ, PYTHONPATH=src + (os.pathsep + path if path else ""))


def time_single_cli(tmp: Path, table: Path, n: int) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of one `crispedit edit` process per item."""
    wall, cpu = [], []
    rows = [json.loads(x) for x in table.read_text().splitlines()][:n]
    for i, r in enumerate(rows):
        t, c = time.perf_counter(), _child_cpu()
        subprocess.run(_cli("edit", str(tmp / r["image"]), "-o", str(tmp / f"single{i}.png"), "--ellipse",
                            r["ellipse"], "--seed", str(r["seed"])), env=_env(), check=True, capture_output=True)
        wall.append(time.perf_counter() - t)
        cpu.append(_child_cpu() - c)
    return wall, cpu


def time_in_process(tmp: Path, table: Path, n: int) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of the edit in this process (warm)."""
    sys.path.insert(0, str(ROOT / "src"))
    from crispedit.workflow import builtin

    rows = [json.loads(x) for x in table.read_text().splitlines()][:n]
    wall, cpu = [], []
    for i, r in enumerate([rows[0]] + rows):  # the first call warms imports and is not counted
        t, c = time.perf_counter(), time.process_time()
        builtin.run_edit(cache=False, image=str(tmp / r["image"]), output=str(tmp / f"inproc{i}.png"),
                         ellipse=r["ellipse"], seed=r["seed"])
        if i:
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
    return wall, cpu


def time_batch(tmp: Path, table: Path, name: str, *opts: str) -> dict:
    outdir = tmp / f"ds-{name}"
    t, c = time.perf_counter(), _child_cpu()
    res = subprocess.run(_cli("batch", str(table), "-o", str(outdir), "--json", *opts), env=_env(),
                         capture_output=True, text=True)
    wall = time.perf_counter() - t
    cpu = _child_cpu() - c
    if res.returncode != 0:
        raise RuntimeError(f"batch {name} failed ({res.returncode}): {res.stderr[-2000:]}")
    summary = json.loads(res.stdout)
    return {"name": name, "wall": wall, "cpu": cpu, "items": summary["ok"], "workers": summary["workers"],
            "edits": sorted(hashlib.blake2b(p.read_bytes()).hexdigest() for p in (outdir / "edits").iterdir())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=6)
    ap.add_argument("--single", type=int, default=3, help="items timed as one `crispedit edit` process each")
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = ap.parse_args()
    commit = source_state()
    t_all = time.perf_counter()
    load_before = load_line()
    with tempfile.TemporaryDirectory(prefix="crispedit-bench-batch-") as d:
        tmp = Path(d)
        table = prepare(tmp, args.items)
        single, single_cpu = time_single_cli(tmp, table, args.single)
        inproc, inproc_cpu = time_in_process(tmp, table, args.single)
        runs = [time_batch(tmp, table, "local-1", "--workers", "1"),
                time_batch(tmp, table, "local-2", "--workers", "2")]
        if not args.no_ray:
            runs.append(time_batch(tmp, table, "ray-2", "--ray", "local", "--workers", "2"))
    load_after = load_line()
    same = all(r["edits"] == runs[0]["edits"] for r in runs)
    n = args.items
    per_single = statistics.mean(single)
    per_inproc = statistics.mean(inproc)
    thr = {r["name"]: 60.0 * r["items"] / r["wall"] for r in runs}
    one = runs[0]["wall"] / n
    rows = "\n".join(f"| {r['name']} | {r['workers']} | {r['items']} | {r['wall']:.1f} | {thr[r['name']]:.2f} | "
                     f"{r['wall'] / n:.2f} | {'n/a' if r['name'].startswith('ray') else format(r['cpu'] / n, '.2f')} |"
                     for r in runs)
    cpu_one = runs[0]["cpu"] / n
    eff2 = thr["local-2"] / (2 * thr["local-1"])
    ray_line = ""
    if "ray-2" in thr:
        ray_line = (f"- Ray (new local cluster, 2 CPUs, start included) vs local pool with 2 workers: "
                    f"{thr['ray-2'] / thr['local-2']:.2f}x the throughput.\n")
    cores = os.cpu_count() or 1
    busy = max(float(load_before.split(",")[0]), float(load_after.split(",")[0])) > cores
    caveat = (f"  The load average was above the {cores} cores: the workers competed with other jobs for CPU, so "
              "this ratio says little about scaling on a free machine.\n" if busy else "")
    cmd = "python bench/batch.py " + " ".join(sys.argv[1:])
    body = f"""## Batch throughput (crispedit batch, 4K classical edits)

`{cmd.strip()}` ({time.perf_counter() - t_all:.0f} s). {machine_line(commit)}
Load average (1, 5, 15 min) before: {load_before}; after: {load_after} (other jobs shared the 2 cores: the
numbers are lower bounds for a quiet machine).

{n} items: 3840x2160 JPEG crops of real photos, an ellipse of ~600x500 px each, classical engine, quality gate on,
PNG out. Wall time of the whole command (process start, planning, pool or cluster start, dataset assembly).

| run | workers | items | wall s | items/min | wall s per item | CPU s per item |
|---|---|---|---|---|---|---|
{rows}

- One `crispedit edit` process per item: {per_single:.2f} s wall, {statistics.mean(single_cpu):.2f} s CPU per item
  ({60 / per_single:.2f} items/min, mean of {len(single)}); the edit in process (warm, `run_edit`):
  {per_inproc:.2f} s wall, {statistics.mean(inproc_cpu):.2f} s CPU.
- Batch overhead per item with 1 worker, wall: {one - per_inproc:+.2f} s over the in-process edit,
  {one - per_single:+.2f} s against one `crispedit edit` process per item; CPU (load-independent):
  {cpu_one - statistics.mean(inproc_cpu):+.2f} s over the in-process edit,
  {cpu_one - statistics.mean(single_cpu):+.2f} s against `crispedit edit`. (Ray's workers are not children of the
  command: their CPU is not counted, n/a.)
- Scaling efficiency, 2 local workers vs 1: {eff2:.2f} (throughput ratio {thr['local-2'] / thr['local-1']:.2f} of an
  ideal 2).
{caveat}{ray_line}- Edits byte-identical across runs: {'yes' if same else 'NO'}.
"""
    print(body)
    if args.write:
        update_doc("batch", body)


if __name__ == "__main__":
    main()
