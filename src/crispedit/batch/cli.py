"""``crispedit batch``: a job table to a dataset, with a live progress bar; registered by ``crispedit.cli``.

Exit codes: 0 every item done, 1 some item failed (each recorded, the batch went on), 2 a problem in the table or
options (all rows listed, nothing run), 130 interrupted by Ctrl-C or SIGTERM (what finished is kept; rerun to
resume).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from crispedit.errors import CrispEditError

err = Console(stderr=True, highlight=False)


def expand_ray_flag(argv: list[str]) -> list[str]:
    """Let ``--ray`` go without a value: ``batch ... --ray`` -> ``--ray local``.

    A following token counts as the address only if it looks like one (``auto``, ``local``, ``ray://...``,
    ``host:port``), so ``crispedit batch --ray jobs.csv -o out`` works too.
    """
    if not argv or argv[0] != "batch":
        return argv
    out: list[str] = []
    for i, tok in enumerate(argv):
        out.append(tok)
        if tok == "--ray":
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            looks = nxt is not None and (nxt in ("auto", "local") or "://" in nxt or
                                          (":" in nxt and nxt.rsplit(":", 1)[-1].isdigit()))
            if not looks:
                out.append("local")
    return out


class ThroughputColumn(ProgressColumn):
    """Items per minute over this run (skipped items not counted)."""

    def __init__(self, start_done: int = 0) -> None:
        super().__init__()
        self.start_done = start_done

    def render(self, task: Any) -> Text:
        elapsed = task.elapsed or 0.0
        done = task.completed - self.start_done
        if elapsed <= 0 or done <= 0:
            return Text("– items/min", style="progress.data.speed")
        return Text(f"{60.0 * done / elapsed:.1f} items/min", style="progress.data.speed")


def batch_cmd(
    jobs: Path = typer.Argument(..., help="Job table: .jsonl, .csv or .yaml, one row per item."),
    outdir: Path = typer.Option(..., "-o", "--output", help="Dataset folder (created; a rerun resumes it)."),
    workflow: Optional[Path] = typer.Option(None, "--workflow", help="Run this workflow per row; the columns are "
                                            "its node.param overrides."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Local processes (default: cores, "
                                          "capped by memory); with --ray, CPUs of a new local cluster."),
    ray: Optional[str] = typer.Option(None, "--ray", metavar="[ADDRESS]", help="Run each item as a Ray task: "
                                      "a new local cluster, or ADDRESS (auto, ray://host:port, host:port)."),
    resume: bool = typer.Option(False, "--resume", help="Add to an OUTDIR made from another table (a rerun of "
                                "the same table always skips what is complete)."),
    seed: int = typer.Option(0, "--seed", help="Batch seed: rows without a seed get one derived from it."),
    format_: str = typer.Option("png", "--format", help="Edits as png (default), tif, webp or jpg."),
    copy_originals: bool = typer.Option(False, "--copy-originals", help="Copy the inputs into OUTDIR/originals."),
    json_out: bool = typer.Option(False, "--json", help="Print the run summary as JSON on stdout."),
) -> None:
    """Edit every row of JOBS into the dataset OUTDIR: each item once, in parallel, resumable.

    Rows hold `crispedit edit` options under their CLI names (image, mask|box|ellipse, prompt, engine, model,
    seed, candidates, strength, steps, ...), paths relative to the table. OUTDIR gets edits/, masks/,
    records.jsonl (seeds, hashes, timings, quality metrics, verdicts) and a dataset card README.md.
    """
    from crispedit.batch.api import run_batch

    live = err.is_terminal or os.environ.get("CRISPEDIT_PROGRESS") == "1"
    progress: Optional[Progress] = None
    task_id: Any = None
    failures: list[str] = []
    duplicates: dict[int, list[int]] = {}

    def on_plan(items: list, skip: int) -> None:
        nonlocal progress, task_id
        mode = f"Ray ({ray})" if ray else "local"
        err.print(f"batch: {len(items)} item(s), {skip} already complete, running {len(items) - skip} ({mode})")
        duplicates.update({it.row: it.duplicate_rows for it in items if it.duplicate_rows})
        if duplicates:
            same = "; ".join(f"row{'s' if len(d) > 1 else ''} {', '.join(map(str, d))} = row {r}" for r, d in list(duplicates.items())[:10])
            more = f" (+{len(duplicates) - 10} more)" if len(duplicates) > 10 else ""
            err.print(f"note: {sum(map(len, duplicates.values()))} row(s) repeat an earlier row (same image, "
                      f"parameters and seed) and are done once: {same}{more}", soft_wrap=True)
        if live and len(items) - skip > 0:
            progress = Progress(TextColumn("[bold]batch[/bold]"), BarColumn(), MofNCompleteColumn(),
                                ThroughputColumn(skip), TextColumn("{task.fields[failed]} failed"),
                                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                console=err, transient=False)
            progress.start()
            task_id = progress.add_task("batch", total=len(items), completed=skip, failed=0)

    def on_record(rec: dict) -> None:
        if rec.get("status") != "ok":
            failures.append(f"row {rec.get('row')}: {rec.get('error')}")
            if progress is None:
                err.print(f"[red]failed[/red] row {rec.get('row')}: {rec.get('error')}", soft_wrap=True)
            else:
                progress.console.print(f"[red]failed[/red] row {rec.get('row')}: {rec.get('error')}",
                                       soft_wrap=True)
        if progress is not None:
            progress.update(task_id, advance=1, failed=len(failures))

    t0 = time.perf_counter()
    try:
        result, summary = run_batch(jobs, outdir, workflow=workflow, workers=workers, use_ray=ray is not None,
                                    ray_address=ray, resume=resume, batch_seed=seed, edit_format=format_,
                                    copy_inputs=copy_originals, on_plan=on_plan, on_record=on_record)
    except CrispEditError as exc:
        if progress is not None:
            progress.stop()
        err.print(f"[bold red]error:[/bold red] {exc}", soft_wrap=True)
        raise typer.Exit(code=exc.exit_code) from None
    except KeyboardInterrupt:  # while planning or assembling (the run itself returns `interrupted`)
        if progress is not None:
            progress.stop()
        err.print("interrupted: finished items are kept; run the same command again to resume")
        raise typer.Exit(code=130) from None
    finally:
        if progress is not None:
            progress.stop()
    dt = time.perf_counter() - t0
    ran = result.ok + result.failed
    rate = f", {60.0 * ran / result.seconds:.1f} items/min" if ran and result.seconds > 0 else ""
    verdicts = ", ".join(f"{k} {v}" for k, v in sorted(summary["verdicts"].items())) or "none"
    err.print(f"{'interrupted' if result.interrupted else 'done'} in {dt:.1f}s: {result.ok} ok, {result.failed} "
              f"failed, {result.skipped} skipped{rate} ({result.runner}, {result.workers} worker(s)); dataset: "
              f"{summary['ok']}/{summary['items']} item(s) done, verdicts: {verdicts} -> {outdir}")
    if json_out:
        typer.echo(json.dumps({**result.to_dict(), "duplicate_rows": {str(r): d for r, d in duplicates.items()},
                               "dataset": summary, "outdir": str(outdir)}, indent=2, default=str))
    if result.interrupted:
        err.print("interrupted: finished items are kept; run the same command again to resume")
        raise typer.Exit(code=130)
    if summary["failed"]:
        raise typer.Exit(code=1)
