"""Workflow tables: ``crispedit batch JOBS --workflow FILE``, each row a set of ``--set node.param=value``.

Each row is validated as ``crispedit run FILE --set ...`` would validate it (the workflow loader, up front). The
batch points the workflow's SaveImage nodes (and Report nodes) into OUTDIR under the item's key and gives seeded
nodes with ``seed: null`` a derived seed, then the worker runs it with
:func:`crispedit.workflow.runner.run_workflow` -- the same runner as ``crispedit run``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from crispedit.errors import CrispEditError


def _text(value: Any) -> str:
    """A table cell as ``--set`` text (parsed as YAML by the loader)."""
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _where_nodes(wf: Any, type_name: str) -> list[str]:
    return [n for n in wf.order if wf.nodes[n].type.name == type_name]


def plan_workflow_rows(workflow: Path, rows: list[tuple[int, dict[str, Any]]], base: Path, errors: list[str]
                       ) -> list[tuple[int, int, str, dict[str, Any], dict[str, Any]]]:
    """Validate each row's overrides against ``workflow`` and plan it (content hash, spec, resources)."""
    from crispedit.batch.table import digest, estimate_resources, image_size
    from crispedit.workflow.runner import _version, file_hash, node_key
    from crispedit.workflow.schema import WorkflowError, load_workflow

    workflow = Path(workflow).resolve()
    load_workflow(workflow)  # the file itself must be valid: its problems are reported once, not per row
    planned = []
    for n, (line, raw) in enumerate(rows, 1):
        where = f"row {n} (line {line})"
        bad = [k for k in raw if "." not in k]
        if bad:
            errors.append(f"{where}: column(s) {', '.join(bad)} are not node.param overrides of the workflow")
            continue
        overrides = [f"{k}={_text(v)}" for k, v in raw.items()]
        try:
            wf = load_workflow(workflow, overrides=overrides, cwd=base)
        except WorkflowError as exc:
            errors.extend(f"{where}: {m}" for m in exc.messages)
            continue
        except CrispEditError as exc:
            errors.append(f"{where}: {exc}")
            continue
        missing = [f for f in wf.input_files() if not Path(f).is_file()]
        if missing:
            errors.extend(f"{where}: file not found: {f}" for f in missing)
            continue
        saves = _where_nodes(wf, "SaveImage")
        if not saves:
            errors.append(f"{where}: the workflow has no SaveImage node: nothing would go into the dataset")
            continue
        keys: dict[str, str] = {}
        for name in wf.order:
            keys[name] = node_key(wf, name, keys)
        content = digest({"crispedit": _version(), "mode": "workflow",
                          "keys": {k: v for k, v in keys.items() if not wf.nodes[k].type.side_effect}}, 16)
        seed_nodes = [name for name in wf.order if wf.nodes[name].type.seeded
                      and wf.nodes[name].params.get("seed", 0) is None]
        images = [wf.nodes[name].params["path"] for name in _where_nodes(wf, "LoadImage")]
        engines = [str(wf.nodes[name].params.get("engine")) for name in wf.order
                   if wf.nodes[name].type.name in ("Inpaint", "Img2Img", "Txt2Img")]
        engine = next((e for e in engines if e != "classical"), engines[0] if engines else "classical")
        models = [wf.nodes[name].params.get("model") for name in wf.order if wf.nodes[name].params.get("model")]
        size = image_size(images[0]) if images else None
        inputs = {}
        for i, f in enumerate(wf.input_files()):
            inputs["image" if i == 0 else f"input_{i}"] = {"path": str(Path(f).resolve()), "blake2b": file_hash(f),
                                                          "bytes": Path(f).stat().st_size}
        spec = {"mode": "workflow", "workflow": str(workflow), "overrides": overrides, "cwd": str(base),
                "inputs": inputs, "engine": engine, "model": str(models[0]) if models else None,
                "seed_nodes": seed_nodes, "seed_source": "derived" if seed_nodes else "row",
                "seeds": {name: wf.nodes[name].params.get("seed") for name in wf.order
                          if wf.nodes[name].type.seeded},
                "save_nodes": saves, "report_nodes": _where_nodes(wf, "Report"),
                "size": list(size) if size else None}
        planned.append((n, line, content, spec, estimate_resources(size, engine, None)))
    return planned


def _first(wf: Any, type_name: str) -> Optional[str]:
    names = _where_nodes(wf, type_name)
    return names[0] if names else None


def run_workflow_item(spec: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """Run one workflow row with its outputs pointed into OUTDIR; returns (info for the record, the mask)."""
    from crispedit.batch.worker import _output_ref
    from crispedit.workflow.runner import run_workflow
    from crispedit.workflow.schema import load_workflow

    outdir = Path(spec["outdir"])
    key, fmt = spec["key"], spec["format"]
    outs: dict[str, Path] = {}
    over = list(spec["overrides"])
    for i, node in enumerate(spec["save_nodes"]):
        outs[node] = Path(spec["edit"]) if i == 0 else outdir / "edits" / f"{key}-{node}.{fmt}"
        over += [f"{node}.path={outs[node]}", f"{node}.mkdir=true"]
    for node in spec["report_nodes"]:
        outs[node] = outdir / "reports" / f"{key}-{node}.html"
        over += [f"{node}.path={outs[node]}", f"{node}.mkdir=true"]
    wf = load_workflow(spec["workflow"], overrides=over, cwd=Path(spec["cwd"]))
    res = run_workflow(wf, cache=False, keep=set(wf.nodes))
    info: dict[str, Any] = {"notes": list(res.notes),
                            "timings": {r.node: round(r.seconds, 4) for r in res.records},
                            "workflow": {"nodes": [r.to_dict() for r in res.records]}}
    edit_nodes = [n for n in wf.order if wf.nodes[n].type.name in ("Inpaint", "Img2Img")]
    if edit_nodes:
        result = dict(res.output(edit_nodes[-1], "result"))
        info.update({k: result.get(k) for k in ("engine", "image", "engine_calls", "seed", "prompt")})
    check = _first(wf, "QualityCheck")
    if check:
        info["quality"] = res.output(check, "report")
    select = _first(wf, "SelectBest")
    if select:
        rep = res.output(select, "report")
        info["candidates"] = rep.get("candidates", [])
        info["selection"] = {k: v for k, v in rep.items() if k != "candidates"}
    mask = None
    for n in ([check] if check else []) + edit_nodes:
        link = wf.nodes[n].links.get("mask")
        if link is not None and not isinstance(link, list) and wf.nodes[link.node].output_types.get(link.output) \
                == "mask":
            mask = res.output(link.node, link.output)
            break
    extra = {}
    for node, path in outs.items():
        if node != spec["save_nodes"][0] and path.is_file():
            extra[node] = _output_ref(path, outdir)
    info["_extra_outputs"] = extra
    return info, mask
