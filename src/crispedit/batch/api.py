"""``run_batch``: plan, prepare OUTDIR, run what is not done, assemble the dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Union

from crispedit.batch.dataset import assemble, copy_originals, load_hashes, prepare_outdir, remove_temporary, save_hashes
from crispedit.batch.runner import BatchResult, run_items
from crispedit.batch.table import BatchTableError, Item, plan_items

PathLike = Union[str, Path]


def run_batch(jobs: PathLike, outdir: PathLike, *, workflow: Optional[PathLike] = None,
              workers: Optional[int] = None, use_ray: bool = False, ray_address: Optional[str] = None,
              resume: bool = False, batch_seed: int = 0, edit_format: str = "png", copy_inputs: bool = False,
              on_plan: Optional[Callable[[list[Item], int], None]] = None,
              on_record: Optional[Callable[[dict[str, Any]], None]] = None) -> tuple[BatchResult, dict[str, Any]]:
    """Run a job table into a dataset folder; items already complete there are skipped.

    Parameters
    ----------
    jobs : JSONL / CSV / YAML table, one row per item (see :mod:`crispedit.batch.table`).
    outdir : the dataset folder (created; see :mod:`crispedit.batch.dataset` for its layout).
    workflow : run this workflow per row, the columns being its ``node.param`` overrides.
    workers : local processes (default: cores, capped by memory) or, with Ray, the CPUs of a new local cluster.
    use_ray, ray_address : run items as Ray tasks; address ``None``/``"local"`` starts a local cluster, else
        ``auto``, ``ray://host:port`` or ``host:port`` joins an existing one (paths must be visible to its nodes).
    resume : allow adding to an OUTDIR made from another job table (a rerun of the same table always resumes).
    batch_seed : root of the SeedSequence seeds of rows without a seed.
    edit_format : png (default), tif, webp or jpg.
    copy_inputs : copy (hard-link) the input images into ``originals/``.
    on_plan : ``callback(items, n_to_skip)`` once the table is validated, before work starts.
    on_record : ``callback(record)`` per finished item.

    Returns
    -------
    (BatchResult, dict)
        This run's counts and records, and the whole dataset's summary (counts, verdict histogram, engines).

    Raises
    ------
    crispedit.batch.table.BatchTableError
        Problems in the rows (all listed, with row numbers); nothing is run or written.
    crispedit.errors.InputError
        An unreadable table or workflow, or an OUTDIR that is not this batch's.
    """
    from crispedit.workflow.runner import _version, file_hash

    outdir = Path(outdir)
    if (outdir / "batch.json").is_file():
        load_hashes(outdir)  # a rerun stats its inputs instead of reading them all again
    items = plan_items(jobs, outdir, workflow=workflow, batch_seed=batch_seed, edit_format=edit_format)
    if not use_ray or ray_address in (None, "", "local"):  # on a remote cluster the models live on its nodes
        check_models(items, str(jobs))
    manifest = {"crispedit": _version(), "jobs": str(Path(jobs).resolve()), "jobs_blake2b": file_hash(jobs),
                "workflow": str(Path(workflow).resolve()) if workflow else None, "format": edit_format,
                "batch_seed": batch_seed, "items": len(items)}
    manifest = prepare_outdir(outdir, manifest, resume, [it.key for it in items])
    save_hashes(outdir)
    if copy_inputs:
        copy_originals(items, outdir.resolve())
    if on_plan is not None:
        from crispedit.batch.worker import is_complete

        on_plan(items, sum(1 for it in items if is_complete(it.spec)))
    result = run_items(items, workers=workers, ray_address=ray_address, use_ray=use_ray, on_record=on_record)
    remove_temporary(outdir)  # the workers are gone: what a killed one was writing is garbage
    summary = assemble(outdir, manifest)
    return result, summary


def check_models(items: list[Item], origin: str) -> None:
    """Resolve the SD model of the edit items still to run, once per distinct model, before any work starts.

    :func:`crispedit.engines.model_source.resolve_model` is cheap (no weights read, no network unless downloads
    are allowed); a missing model would otherwise fail every one of its items, one by one.

    Raises
    ------
    crispedit.batch.table.BatchTableError
        One line per unusable model, naming the rows that use it.
    """
    from crispedit.batch.worker import is_complete
    from crispedit.engines.model_source import resolve_model
    from crispedit.errors import CrispEditError

    groups: dict[tuple[Any, bool, bool], list[int]] = {}
    for it in items:
        if it.spec.get("mode") != "edit" or it.spec.get("engine") != "sd15" or is_complete(it.spec):
            continue
        a = it.spec["args"]
        groups.setdefault((a.get("model"), bool(a.get("allow_pickle")), bool(a.get("allow_download"))),
                          []).append(it.row)
    problems = []
    for (model, pickle, download), rows in groups.items():
        try:
            resolve_model(model, allow_pickle=pickle, allow_download=download)
        except CrispEditError as exc:
            more = f" (+{len(rows) - 10} more)" if len(rows) > 10 else ""
            problems.append(f"row{'s' if len(rows) > 1 else ''} {', '.join(map(str, rows[:10]))}{more}: {exc}")
    if problems:
        raise BatchTableError(problems, origin)
