"""One batch item, run inside a worker (a pool process or a Ray task): the edit, its mask, its record.

The edit is exactly what ``crispedit edit`` runs (:func:`crispedit.workflow.builtin.run_edit`, the same workflow
nodes, ``io.save_image`` and the quality gate), or the batch's workflow through
:func:`crispedit.workflow.runner.run_workflow`. Outputs are written atomically (temporary file, then rename) under
the item's key, and the record is written last: an item is complete exactly when its record says ``ok`` and its
files are there. A worker killed at any point leaves at most complete files of an unfinished item, which the
rerun overwrites with the same bytes (seeds are fixed), and never a record.
"""

from __future__ import annotations

import json
import os
import platform
import time
import traceback
from pathlib import Path
from typing import Any, Optional

#: Set to a folder to inject faults (tests): a file ``kill-<row>`` there makes the worker SIGKILL itself in the
#: middle of that row's item (after the edit is written, before its record), once; ``crash-<row>``: at the start
#: of that row's item, every time; ``delay`` (``delay-<row>``) holds seconds to sleep at the start of every item
#: (of that row).
FAULT_ENV = "CRISPEDIT_BATCH_FAULTS"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` through a temporary file in the same folder and ``os.replace`` (POSIX-atomic)."""
    from crispedit.batch.dataset import write_text_atomic

    write_text_atomic(Path(path), json.dumps(data, indent=1, sort_keys=True, default=str))


def _fault(stage: str, row: int) -> None:
    folder = os.environ.get(FAULT_ENV)
    if not folder:
        return
    d = Path(folder)
    if stage == "start":
        if (d / f"crash-{row}").is_file():
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
        for delay in (d / "delay", d / f"delay-{row}"):
            if delay.is_file():
                time.sleep(float(delay.read_text().strip() or 0))
        return
    marker = d / f"kill-{row}"
    try:
        os.rename(marker, d / f"killed-{row}-{os.getpid()}")  # only one worker wins the rename: kill once
    except OSError:
        return
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def _save_mask(mask: Any, path: Path) -> dict[str, Any]:
    """Write a bool mask as an 8-bit PNG (255 = edit) with the same atomic writer as the edits."""
    import numpy as np

    from crispedit.io import load_image, save_image
    from crispedit.workflow.runner import file_hash

    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.where(np.asarray(mask, dtype=bool), 255, 0).astype(np.uint8)
    save_image(load_image(arr), path)
    return {"blake2b": file_hash(path), "bytes": path.stat().st_size, "pixels": int(np.count_nonzero(arr))}


def _edit_mask(args: dict[str, Any], size: tuple[int, int]) -> Any:
    """The mask ``crispedit edit`` used: the same library functions as its LoadMask / MaskFromShape nodes."""
    from crispedit.mask import load_mask, mask_from_box, mask_from_ellipse, parse_box

    if args.get("mask"):
        return load_mask(args["mask"], size)
    if args.get("box"):
        return mask_from_box(size, parse_box(args["box"], size))
    if args.get("ellipse"):
        return mask_from_ellipse(size, parse_box(args["ellipse"], size))
    return None


def _output_ref(path: Path, outdir: Path) -> dict[str, Any]:
    from crispedit.workflow.runner import file_hash

    return {"path": os.path.relpath(path, outdir), "blake2b": file_hash(path), "bytes": path.stat().st_size}


def _candidates(info: dict[str, Any]) -> list[dict[str, Any]]:
    """Per candidate: seed, prompt, score, verdict, status (kept / passed / rejected), reasons and metrics."""
    cands = info.get("candidates") or []
    if not cands:
        q = info.get("quality") or {}
        return [{"index": 0, "seed": info.get("seed"), "prompt": info.get("prompt"), "engine": info.get("engine"),
                 "passed": None if not q else q.get("verdict") == "pass", "status": "kept", "reasons":
                 list(q.get("reasons") or [])}]
    keep = ("index", "node", "seed", "prompt", "engine", "passed", "score", "status", "why", "reasons", "metrics")
    return [{k: c.get(k) for k in keep if k in c} for c in cands]


def _run_edit(spec: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    from crispedit.workflow import builtin

    args = dict(spec["args"])
    info = builtin.run_edit(cache=False, output=spec["edit"], **args)
    w, h = info["image"]["width"], info["image"]["height"]
    return info, _edit_mask(args, (w, h))


def run_item(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one item and write its record (``records/KEY.json``, atomically, last).

    Parameters
    ----------
    spec : dict
        ``Item.spec`` from :func:`crispedit.batch.table.plan_items`: ``mode`` (``edit`` runs
        :func:`crispedit.workflow.builtin.run_edit` with ``args``, exactly as ``crispedit edit``; ``workflow`` runs
        :func:`crispedit.workflow.runner.run_workflow` with ``overrides``), ``key``, ``row``, ``outdir`` and the
        output paths ``edit``, ``mask_out``, ``record``.

    Returns
    -------
    dict
        The record: ``status`` (``ok`` / ``failed``), ``error``, ``inputs`` (paths, blake2b), ``seeds``,
        ``engine``, ``model``, ``outputs`` (paths, blake2b, bytes), ``verdict``, ``quality`` (every metric of the
        gate), ``candidates`` (kept / passed / rejected with scores), ``timings`` (s), ``seconds`` (s, wall).

    Notes
    -----
    Failures of the item (a corrupt image, a mask of the wrong size, an engine error) are caught and recorded
    with ``status: failed``; only ``KeyboardInterrupt`` / ``SystemExit`` propagate (and leave no record).
    """
    from crispedit.errors import CrispEditError

    t0 = time.time()
    outdir = Path(spec["outdir"])
    rec: dict[str, Any] = {
        "key": spec["key"], "row": spec["row"], "mode": spec["mode"], "status": "failed", "error": None,
        "inputs": spec.get("inputs"), "engine": spec.get("engine"), "model": spec.get("model"),
        "seed_source": spec.get("seed_source"), "seeds": spec.get("seeds"),
        "worker": {"host": platform.node(), "pid": os.getpid()},
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)),
    }
    if spec["mode"] == "edit":
        rec["params"] = {k: v for k, v in spec["args"].items() if k not in ("image", "mask") and v is not None
                         and v is not False}
    else:
        rec["workflow"] = {"path": spec["workflow"], "overrides": spec["overrides"]}
    try:
        _fault("start", spec["row"])
        if spec["mode"] == "edit":
            info, mask = _run_edit(spec)
        else:
            from crispedit.batch.flows import run_workflow_item

            info, mask = run_workflow_item(spec)
        outputs = {"edit": _output_ref(Path(spec["edit"]), outdir)}
        if mask is not None:
            outputs["mask"] = dict(_save_mask(mask, Path(spec["mask_out"])),
                                   path=os.path.relpath(spec["mask_out"], outdir))
        outputs.update(info.pop("_extra_outputs", {}))
        _fault("mid", spec["row"])
        q = info.get("quality") or {}
        rec.update({
            "status": "ok",
            "engine": info.get("engine", rec["engine"]),
            "image": info.get("image"),
            "outputs": outputs,
            "verdict": q.get("verdict", "unchecked") if q else "unchecked",
            "reasons": list(q.get("reasons") or []),
            "quality": q or None,
            "candidates": _candidates(info),
            "selection": info.get("selection"),
            "timings": info.get("timings"),
            "engine_calls": info.get("engine_calls"),
            "notes": info.get("notes", []),
            "workflow_nodes": (info.get("workflow") or {}).get("nodes"),
        })
    except CrispEditError as exc:
        rec["error"] = str(exc).strip()
        rec["error_type"] = type(exc).__name__
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of one item is recorded; the batch goes on
        rec["error"] = f"{type(exc).__name__}: {exc}"
        rec["error_type"] = type(exc).__name__
        rec["traceback"] = traceback.format_exc(limit=8)
    rec["seconds"] = round(time.time() - t0, 4)
    rec["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write_json_atomic(Path(spec["record"]), rec)
    return rec


def failed_record(spec: dict[str, Any], error: str, error_type: str = "WorkerLost") -> dict[str, Any]:
    """The record the driver writes for an item whose worker died on every attempt."""
    rec = {"key": spec["key"], "row": spec["row"], "mode": spec["mode"], "status": "failed", "error": error,
           "error_type": error_type, "inputs": spec.get("inputs"), "engine": spec.get("engine"),
           "model": spec.get("model"), "seeds": spec.get("seeds"), "seed_source": spec.get("seed_source"),
           "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_json_atomic(Path(spec["record"]), rec)
    return rec


def read_record(path: Path) -> Optional[dict[str, Any]]:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_complete(spec: dict[str, Any]) -> bool:
    """True when the item's record says ``ok`` and its edit (and mask) files are there with the recorded size."""
    rec = read_record(Path(spec["record"]))
    if not rec or rec.get("status") != "ok" or rec.get("key") != spec["key"]:
        return False
    outdir = Path(spec["outdir"])
    for ref in (rec.get("outputs") or {}).values():
        p = outdir / ref["path"]
        if not p.is_file() or ("bytes" in ref and p.stat().st_size != ref["bytes"]):
            return False
    return True
