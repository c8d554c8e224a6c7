"""The workflow commands: ``crispedit run``, ``crispedit nodes``, ``crispedit describe``.

Plain typer-annotated functions; ``crispedit.cli`` registers them on the main app. Progress and summaries go to
stderr, so ``--json`` output on stdout stays clean. A user mistake prints one message and exits with 2 (a
QualityCheck with ``on_fail: stop`` that fails exits with 1).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.console import Console

from crispedit.errors import CrispEditError

err = Console(stderr=True, highlight=False)


def _fail(exc: CrispEditError) -> None:
    err.print(f"[bold red]error:[/bold red] {exc}", soft_wrap=True, markup=True)
    raise typer.Exit(code=exc.exit_code)


class RunProgress:
    """One line per node on stderr; steps inside long nodes when stderr is a terminal (or CRISPEDIT_PROGRESS=1)."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.live = err.is_terminal or os.environ.get("CRISPEDIT_PROGRESS") == "1"
        self.last = 0.0
        self.started = 0.0

    def __call__(self, ev: Any) -> None:
        if self.quiet:
            return
        tag = f"[{ev.index + 1}/{ev.total}] {ev.node} ({ev.type})"
        if ev.status == "start":
            self.started = time.perf_counter()
        elif ev.status == "step":
            now = time.perf_counter()
            if self.live and now - self.started > 1.0 and (now - self.last > 0.5 or ev.done >= ev.steps):
                self.last = now
                err.print(f"[dim]{tag} {ev.stage} {ev.done}/{ev.steps}  {now - self.started:5.1f}s[/dim]")
        elif ev.status == "done":
            err.print(f"{tag} ran in {ev.seconds:.2f}s")
        elif ev.status == "cached":
            err.print(f"[dim]{tag} cached[/dim]")
        elif ev.status == "skipped":
            err.print(f"[dim]{tag} not needed (everything downstream is cached)[/dim]")


def run_cmd(
    workflow: Path = typer.Argument(..., help="Workflow file (YAML or JSON)."),
    set_: List[str] = typer.Option([], "--set", help="Override a parameter: node.param=value (repeatable)."),
    json_out: bool = typer.Option(False, "--json", help="Print the run record (nodes, timings, outputs) as JSON."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Run every node; neither read nor write the cache."),
) -> None:
    """Run a workflow: nodes in dependency order, with a cache so unchanged work is not redone."""
    from crispedit.workflow.runner import run_workflow

    try:
        result = run_workflow(workflow, overrides=list(set_), cache=not no_cache, progress=RunProgress())
    except CrispEditError as exc:
        _fail(exc)
        return
    for note in result.notes:
        err.print(f"note: {note}")
    ran = result.ran()
    cached = sum(1 for r in result.records if r.status != "ran")
    record = result.to_dict()
    written = [str(v) for n in result.workflow.order for k, v in (record["outputs"].get(n) or {}).items()
               if result.workflow.nodes[n].output_types.get(k) == "path"]
    err.print(f"done in {result.seconds:.2f}s: {len(ran)} node(s) ran, {cached} cached or not needed "
              f"(runner {result.overhead_seconds * 1000:.0f} ms, first-use imports included)")
    fresh = {str(v) for n in ran for k, v in (record["outputs"].get(n) or {}).items()
             if result.workflow.nodes[n].output_types.get(k) == "path"}
    for path in written:
        err.print(f"{'wrote' if path in fresh else 'up to date'}: {path}")
    if json_out:
        typer.echo(json.dumps(record, indent=2, default=str))


def nodes_cmd(
    type_: Optional[str] = typer.Argument(None, help="A node type to show in detail (e.g. Inpaint)."),
    json_out: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """List the node types: inputs, outputs, parameters with defaults, and what each one does."""
    from crispedit.workflow.library import NODE_TYPES, get_node_type
    from crispedit.workflow.types import LINK_TYPES

    try:
        types = [get_node_type(type_)] if type_ else [NODE_TYPES[k] for k in NODE_TYPES]
    except CrispEditError as exc:
        _fail(exc)
        return
    if json_out:
        data: Any = types[0].to_dict() if type_ else {"node_types": [t.to_dict() for t in types],
                                                       "link_types": LINK_TYPES}
        typer.echo(json.dumps(data, indent=2, default=str))
        return
    out = Console(highlight=False, soft_wrap=True)
    if not type_:
        from rich.table import Table

        table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        for col in ("type", "inputs → outputs", "purpose"):
            table.add_column(col, overflow="fold")
        for t in types:
            ins = ", ".join(p.name + ("?" if p.optional else "") for p in t.inputs) or "-"
            outs = ", ".join(p.name for p in t.outputs)
            table.add_row(t.name, f"{ins} → {outs}", t.purpose)
        out.print(table)
        out.print("\n`crispedit nodes TYPE` shows a type's parameters; link types: " + ", ".join(LINK_TYPES))
        return
    t = types[0]
    out.print(f"[bold]{t.name}[/bold] ({t.category}) — {t.purpose}", markup=True)
    if t.library:
        out.print(f"wraps: {t.library}")
    out.print("inputs:" if t.inputs else "inputs: none")
    for p in t.inputs:
        flags = " (optional)" if p.optional else ""
        out.print(f"  {p.name}: {p.type_label}{flags}" + (f" — {p.doc}" if p.doc else ""), markup=False)
    out.print("outputs:")
    for p in t.outputs:
        out.print(f"  {p.name}: {p.type_label}" + (f" — {p.doc}" if p.doc else ""), markup=False)
    out.print("params:" if t.params else "params: none")
    for prm in t.params:
        default = "required" if prm.required else f"default {json.dumps(prm.default, default=str)}"
        out.print(f"  {prm.name}: {prm.type_label}, {default} — {prm.doc}", markup=False)
    notes = []
    if t.store:
        notes.append("results are cached")
    if t.seeded:
        notes.append("seed null = random (not cached)")
    if t.side_effect:
        notes.append("writes files")
    if notes:
        out.print("; ".join(notes))


def describe_cmd(
    workflow: Path = typer.Argument(..., help="Workflow file (YAML or JSON)."),
    format_: str = typer.Option("markdown", "--format", help="markdown or json."),
    set_: List[str] = typer.Option([], "--set", help="Describe with overrides: node.param=value (repeatable)."),
) -> None:
    """Explain a workflow in plain words: the task, each step with its sizes, and the model cards."""
    from crispedit.workflow.describe import describe

    try:
        text = describe(workflow, format_, overrides=list(set_))
    except CrispEditError as exc:
        _fail(exc)
        return
    sys.stdout.write(text)
