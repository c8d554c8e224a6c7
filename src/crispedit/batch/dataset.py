"""The batch's output folder as a dataset: layout, manifest, ``records.jsonl`` and the dataset card.

Layout of OUTDIR::

    batch.json          the manifest: crispedit version, job table (and its hash), workflow, format, batch seed
    edits/KEY.png       the kept edit of each item, full resolution (KEY: blake2b of inputs and parameters)
    masks/KEY.png       the mask used, 8-bit, 255 = edited
    originals/KEY.EXT   copies of the inputs (only with --copy-originals; else records reference them by path
                        and blake2b)
    records/KEY.json    one record per item, written atomically when the item is done (the source of truth)
    records.jsonl       all records, one line per item, assembled from records/ (sorted by row, one per key)
    README.md           the dataset card: counts, verdict histogram, engines and models, how to cite
    input-hashes.json   blake2b of the input files by (path, size, mtime, inode): a rerun does not read them again
    superseded/         items no job table lists any more (a row was changed, or --seed / --format / the
                        workflow): their record and files, same layout; moved back if a table lists them again

``batch.json`` keeps, per job table (its resolved path), the keys of its items. Rerunning a table after editing
some rows replaces that table's keys: the changed rows' new items are done, the others skipped, and the items of
the rows as they were are moved to ``superseded/`` so that ``records.jsonl``, the card and ``edits/`` describe the
tables as they are now.
"""

from __future__ import annotations

import collections
import json
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any, Optional

from crispedit.errors import InputError

FOLDERS = ("edits", "masks", "records")
SUPERSEDED = "superseded"
HASHES = "input-hashes.json"


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder, fsync, then ``os.replace``."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def prepare_outdir(outdir: Path, manifest: dict[str, Any], resume: bool, keys: Optional[list[str]] = None
                   ) -> dict[str, Any]:
    """Create OUTDIR's folders, check it belongs to this batch, remove temporary files a killed run left, record
    this table's item ``keys`` (and bring back any of them from ``superseded/``); returns the manifest written.

    The same table (same resolved path), edited or not, always reruns into its OUTDIR; another table needs
    ``resume``.

    Raises
    ------
    crispedit.errors.InputError
        OUTDIR is a file, a non-empty folder that is not a crispedit batch, or a batch of another job table
        (without ``resume``).
    """
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise InputError(f"-o {outdir} is a file", "give a folder for the dataset")
    mpath = outdir / "batch.json"
    if outdir.is_dir() and any(p.name != HASHES for p in outdir.iterdir()) and not mpath.is_file():
        raise InputError(f"{outdir} is not empty and holds no crispedit batch", "choose a new or empty -o folder")
    old: Optional[dict[str, Any]] = None
    if mpath.is_file():
        try:
            old = json.loads(mpath.read_text(encoding="utf-8"))
        except ValueError:
            old = None
        same_table = bool(old and manifest.get("jobs") in (old.get("tables") or {old.get("jobs"): None}))
        if old and old.get("jobs_blake2b") != manifest.get("jobs_blake2b") and not same_table and not resume:
            raise InputError(f"{outdir} holds a batch of another job table ({old.get('jobs')})",
                             "pass --resume to add these items to that dataset, or choose another -o")
    try:
        outdir.mkdir(parents=True, exist_ok=True)
        for sub in FOLDERS:
            (outdir / sub).mkdir(exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the dataset folder -o {outdir}: {exc.strerror or exc}",
                         "give a folder you can write to") from None
    remove_temporary(outdir)
    runs = list((old or {}).get("runs", []))
    runs.append({"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "jobs": manifest.get("jobs"),
                 "jobs_blake2b": manifest.get("jobs_blake2b")})
    if old and "tables" not in old:  # a dataset from before tables were tracked: keep everything it holds
        tables = {"": [r["key"] for r in load_records(outdir)]}
    else:
        tables = dict((old or {}).get("tables") or {})
    if keys is not None:
        tables[str(manifest.get("jobs"))] = list(keys)
        for key in keys:
            _restore(outdir, key)
    data = dict(manifest, runs=runs[-50:], tables=tables)
    write_text_atomic(mpath, json.dumps(data, indent=1, sort_keys=True))
    return data


def _item_files(outdir: Path, rec: dict[str, Any]) -> list[str]:
    """Paths (relative to OUTDIR) of an item's files: its outputs and its copy in ``originals/``."""
    rel = [str(ref["path"]) for ref in (rec.get("outputs") or {}).values()
           if isinstance(ref, dict) and ref.get("path")]
    rel += [f"originals/{p.name}" for p in (outdir / "originals").glob(f"{rec['key']}.*")]
    return [r for r in rel if not Path(r).is_absolute() and ".." not in Path(r).parts]


def _move(src: Path, dst: Path) -> None:
    if src.is_file():
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)


def _restore(outdir: Path, key: str) -> None:
    """Move an item back from ``superseded/`` (files first, record last: it is complete only when all are back)."""
    old = outdir / SUPERSEDED / "records" / f"{key}.json"
    if not old.is_file() or (outdir / "records" / f"{key}.json").is_file():
        return
    try:
        rec = json.loads(old.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    for rel in _item_files(outdir / SUPERSEDED, rec):
        _move(outdir / SUPERSEDED / rel, outdir / rel)
    _move(old, outdir / "records" / f"{key}.json")


def supersede(outdir: Path, live: set[str]) -> int:
    """Move the items whose key no table lists (``live``) to ``superseded/`` (record first: no longer complete);
    returns how many. Call only while no worker writes into ``outdir``."""
    n = 0
    for rec in load_records(outdir):
        if rec["key"] in live:
            continue
        _move(outdir / "records" / f"{rec['key']}.json", outdir / SUPERSEDED / "records" / f"{rec['key']}.json")
        for rel in _item_files(outdir, rec):
            _move(outdir / rel, outdir / SUPERSEDED / rel)
        n += 1
    return n


def load_hashes(outdir: Path) -> int:
    """Seed the per-process file-hash memo of :func:`crispedit.workflow.runner.file_hash` from ``OUTDIR``.

    Entries are keyed by (path, size, mtime, inode), so a changed file is hashed again; a rerun over a large
    dataset then stats its inputs instead of reading them all. Returns the number of entries loaded.
    """
    from crispedit.workflow import runner

    try:
        rows = json.loads((Path(outdir) / HASHES).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0
    n = 0
    for row in rows if isinstance(rows, list) else []:
        if isinstance(row, list) and len(row) == 5:
            runner._FILE_HASHES[(str(row[0]), int(row[1]), int(row[2]), int(row[3]))] = str(row[4])
            n += 1
    return n


def save_hashes(outdir: Path) -> None:
    """Write this process's file-hash memo to ``OUTDIR/input-hashes.json`` (atomically)."""
    from crispedit.workflow import runner

    rows = [[*k, v] for k, v in runner._FILE_HASHES.items()]
    write_text_atomic(Path(outdir) / HASHES, json.dumps(rows))


def remove_temporary(outdir: Path) -> int:
    """Remove the temporary files (``.NAME.RANDOM.tmp``) of atomic writes a killed worker left; returns how many.

    Call only while no worker writes into ``outdir`` (before a run, or after its workers are gone).
    """
    removed = 0
    for sub in (outdir, *(outdir / s for s in (*FOLDERS, "originals", "reports"))):
        if sub.is_dir():
            for p in sub.glob(".*.tmp"):
                p.unlink(missing_ok=True)
                removed += 1
    return removed


def copy_originals(items: list[Any], outdir: Path) -> None:
    """Copy (hard-link when possible) each item's input image into ``originals/KEY.EXT``, atomically."""
    folder = outdir / "originals"
    folder.mkdir(exist_ok=True)
    for it in items:
        src = Path(it.spec["inputs"]["image"]["path"]) if it.spec.get("inputs", {}).get("image") else None
        if src is None:
            continue
        dst = folder / f"{it.key}{src.suffix.lower()}"
        if dst.is_file() and dst.stat().st_size == src.stat().st_size:
            continue
        tmp = dst.with_name(f".{dst.name}.{secrets.token_hex(6)}.tmp")
        try:
            try:
                os.link(src, tmp)
            except OSError:
                shutil.copy2(src, tmp)
            os.replace(tmp, dst)
        finally:
            tmp.unlink(missing_ok=True)


def load_records(outdir: Path) -> list[dict[str, Any]]:
    """Every item record under ``records/`` (one per key), sorted by row then key."""
    recs = {}
    for p in sorted((Path(outdir) / "records").glob("*.json")):
        try:
            rec = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(rec, dict) and rec.get("key"):
            recs[rec["key"]] = rec
    return sorted(recs.values(), key=lambda r: (int(r.get("row") or 0), str(r["key"])))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a ``records.jsonl``, deduplicated by key (the last line of a key wins)."""
    out: dict[str, dict[str, Any]] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            rec = json.loads(line)
            out[rec["key"]] = rec
    return list(out.values())


def assemble(outdir: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Move items no table lists to ``superseded/``, write ``records.jsonl`` and ``README.md`` from ``records/``
    (atomically); return the dataset's summary."""
    outdir = Path(outdir)
    try:  # the tables on disk: another batch may have added its table to this OUTDIR (--resume) meanwhile
        tables = json.loads((outdir / "batch.json").read_text(encoding="utf-8")).get("tables")
    except (OSError, ValueError, AttributeError):
        tables = None
    tables = tables if isinstance(tables, dict) else manifest.get("tables")
    live: Optional[set[str]] = None
    if isinstance(tables, dict):
        live = {k for keys in tables.values() for k in keys}
        supersede(outdir, live)
        manifest = dict(manifest, tables=tables)
    recs = load_records(outdir)
    write_text_atomic(outdir / "records.jsonl", "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in recs))
    summary = summarize(recs)
    # items the tables list but no record yet (an interrupted run): counted, so "done" reads against the whole
    summary["pending"] = len(live - {r["key"] for r in recs}) if live is not None else 0
    summary["items"] += summary["pending"]
    summary["superseded"] = len(list((outdir / SUPERSEDED / "records").glob("*.json")))
    write_text_atomic(outdir / "README.md", dataset_card(summary, manifest))
    return summary


def summarize(recs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in recs if r.get("status") == "ok"]
    cands = [c for r in ok for c in (r.get("candidates") or [])]
    sizes: list[tuple[int, int]] = [(int(r["image"]["width"]), int(r["image"]["height"])) for r in ok
                                    if isinstance(r.get("image"), dict)]
    by_area = sorted(sizes, key=lambda wh: wh[0] * wh[1])
    return {
        "items": len(recs), "ok": len(ok), "failed": len(recs) - len(ok),
        "verdicts": dict(collections.Counter(r.get("verdict", "unchecked") for r in ok)),
        "engines": dict(collections.Counter(str(r.get("engine")) for r in ok)),
        "models": dict(collections.Counter(str(r.get("model")) for r in ok if r.get("model"))),
        "candidates": len(cands),
        "candidate_status": dict(collections.Counter(str(c.get("status")) for c in cands)),
        "errors": dict(collections.Counter(str(r.get("error_type")) for r in recs if r.get("status") != "ok")),
        "min_size": list(by_area[0]) if by_area else None,
        "max_size": list(by_area[-1]) if by_area else None,
        "megapixels": round(sum(w * h for w, h in sizes) / 1e6, 2),
    }


def _table(counter: dict[str, int], head: str) -> str:
    if not counter:
        return "_none_\n"
    rows = "".join(f"| {k} | {v} |\n" for k, v in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))
    return f"| {head} | count |\n|---|---|\n{rows}"


def dataset_card(s: dict[str, Any], manifest: dict[str, Any]) -> str:
    """The dataset card (Markdown): what is in the folder, how it was made, and whom to cite."""
    size = (f"{s['min_size'][0]}x{s['min_size'][1]} to {s['max_size'][0]}x{s['max_size'][1]} px"
            if s.get("min_size") else "n/a")
    wf = f"with the workflow `{manifest.get('workflow')}` " if manifest.get("workflow") else ""
    pending = (f", not run yet: {s['pending']} (interrupted: run the same command again to finish)"
               if s.get("pending") else "")
    superseded = (f"\n- `superseded/`: {s['superseded']} item(s) of earlier versions of the rows (a changed row, "
                  "seed, format or workflow), same layout, not counted above." if s.get("superseded") else "")
    jobs = ", ".join(f"`{t}`" for t in (manifest.get("tables") or {}) if t) or f"`{manifest.get('jobs')}`"
    models = f"### Models\n\n{_table(s['models'], 'model')}" if s["models"] else ""
    failures = (f"### Failures\n\n{_table(s['errors'], 'error')}\nFailed items have a record with `status: failed` "
                "and the error; rerun the same command to retry them.\n") if s["failed"] else ""
    return f"""# crispedit batch dataset

Made with `crispedit batch` (crispedit {manifest.get('crispedit')}) from {jobs}
{wf}on {time.strftime('%Y-%m-%d', time.gmtime())}.
Every edit is full resolution ({size}, {s['megapixels']} Mpx in all), pasted back into the original: for masked
edits the pixels outside the edit and its blend band are bit-identical to it.

## Counts

- items: **{s['items']}** — done: {s['ok']}, failed: {s['failed']}{pending}
- candidates judged: {s['candidates']}

### Quality verdict of the kept edits (crispedit's zoom-level gate)

{_table(s['verdicts'], 'verdict')}
### Candidates (SAGI-style selection: only the kept candidate is saved)

{_table(s['candidate_status'], 'status')}
### Engines

{_table(s['engines'], 'engine')}
{models}
{failures}
## Layout

- `edits/KEY.{manifest.get('format', 'png')}`: the kept edit; `masks/KEY.png`: the mask (255 = edited);
  `originals/`: copies of the inputs when made with `--copy-originals`, else each record names its input by
  path and blake2b.
- `records.jsonl`: one JSON object per item: `key` (blake2b of the inputs and parameters), `row`, `status`,
  `error`, `inputs` (paths, hashes), `params`, `seeds` (the seeds actually used; `seed_source` says whether the
  row gave it or it was derived with numpy `SeedSequence`), `engine`, `model`, `image` (size, bit depth),
  `outputs` (paths and hashes), `verdict`, `reasons`, `quality` (every metric of the gate), `candidates`
  (per candidate: seed, prompt, score, passed, status kept/passed/rejected, metrics), `timings`, `worker`.
- `batch.json`: the manifest (job table and its hash, format, batch seed, runs, the item keys of each table).{superseded}

## How to cite

If you use this dataset, cite the works it builds on:

- **Stable Diffusion 1.5** (for `sd15` edits): Rombach et al., "High-Resolution Image Synthesis with Latent
  Diffusion Models", CVPR 2022; weights under the CreativeML OpenRAIL-M licence
  (https://github.com/Kameronski/stable-diffusion-1.5, a copy of runwayml/stable-diffusion).
- **SAGI** (the dataset recipe: several models, candidates, a realism judge keeping only accepted edits):
  "A Large-scale AI-generated Image Inpainting Benchmark", http://arxiv.org/pdf/2502.06593v1.pdf,
  https://github.com/mever-team/SAGI.
- **AIGI-VC** (pairwise quality judgement): http://arxiv.org/pdf/2412.15677v1.pdf.
- **Quality Assured** (precise specs up front): http://arxiv.org/pdf/2407.17596v2.pdf.
- crispedit (Apache-2.0) for the full-resolution editing, compositing and quality gate.

The original photos keep their own licences; check them before you publish edits of them.
"""
