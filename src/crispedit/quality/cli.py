"""Typer command functions of the quality gate; ``crispedit.cli`` registers them as ``quality`` and ``report``.

Exit codes: ``quality`` 0 = pass, 1 = fail, 2 = bad input, 3 = unmeasured (something could not be measured, and
nothing failed: never a pass); ``report`` 0 = written, 2 = bad input.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from crispedit.errors import CrispEditError, InputError

__all__ = ["quality_cmd", "report_cmd"]


MAX_PIXELS_HELP = "Refuse larger images (decompression bombs)."


def _load_pair(original: Path, edited: Path, mask: Optional[Path], max_pixels: int = 300_000_000
               ) -> tuple[Any, Any, Any]:
    from crispedit.io import load_image  # lazy: written by the I/O module's owner

    a = load_image(original, max_pixels=max_pixels).array
    b = load_image(edited, max_pixels=max_pixels).array
    if a.shape[:2] != b.shape[:2]:
        raise InputError(
            f"{original} is {a.shape[1]}x{a.shape[0]} but {edited} is {b.shape[1]}x{b.shape[0]}",
            "compare the edit with the image it was made from",
        )
    m = None
    if mask is not None:
        from crispedit.mask import load_mask

        m = load_mask(mask, size=(a.shape[1], a.shape[0]))
    return a, b, m


def _fail_input(err: CrispEditError) -> typer.Exit:
    typer.echo(f"error: {err}", err=True)
    return typer.Exit(code=getattr(err, "exit_code", 2))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "n/a" if not math.isfinite(v) else f"{v:.3g}"
    return "n/a" if v is None else str(v)


def quality_cmd(
    original: Path = typer.Argument(..., help="The image before the edit."),
    edited: Path = typer.Argument(..., help="The edited image (same size)."),
    mask: Optional[Path] = typer.Option(
        None, "--mask", "-m", help="The edit's mask (white = edited). Default: found from the difference."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the full report as JSON."),
    band: Optional[int] = typer.Option(None, "--band", help="Blend band in px (default: max(32, 4% of mask size))."),
    max_pixels: int = typer.Option(300_000_000, "--max-pixels", help=MAX_PIXELS_HELP),
) -> None:
    """Check an edit at 100% zoom, region by region: seam, ghost, blocks, grid, sharpness, grain, colour, untouched
    pixels. Exit 0 pass, 1 fail, 2 bad input, 3 unmeasured (what could not be checked is said; never a pass)."""
    from crispedit.quality.verdict import assess

    try:
        a, b, m = _load_pair(original, edited, mask, max_pixels)
        if band is not None and band < 0:
            raise InputError(f"--band must be >= 0, got {band}", "pass a width in pixels")
        rep = assess(a, b, m, band=band)
    except CrispEditError as err:
        raise _fail_input(err) from None
    if json_out:
        typer.echo(json.dumps(rep.to_dict(), indent=2, allow_nan=False, default=str))
    else:
        typer.echo(rep.summary())
        d = rep.to_dict()
        for key, check in rep.checks.items():
            v = d.get(key)
            if isinstance(v, dict) or key.startswith("seam_z"):
                continue
            alt = d.get(key + "_original")
            extra = f" (vs original: {_fmt(alt)})" if alt is not None else ""
            typer.echo(f"  {check:5s} {key:24s} {_fmt(v)}{extra}")
        for dft in rep.defects:
            where = f" at x={dft.x}, y={dft.y}" if dft.x is not None else ""
            typer.echo(f"  defect {dft.kind}{where}: {dft.message}")
        for x, y, s in rep.worst_places[:3]:
            typer.echo(f"  worst place x={x} y={y} local seam score {s:.1f}")
        for u in rep.unmeasured:
            typer.echo(f"  not measured: {u}")
        for n in rep.notes:
            typer.echo(f"  note: {n}")
    raise typer.Exit(code=rep.exit_code)


def report_cmd(
    original: Path = typer.Argument(..., help="The image before the edit."),
    edited: Path = typer.Argument(..., help="The edited image (same size)."),
    mask: Optional[Path] = typer.Option(
        None, "--mask", "-m", help="The edit's mask (white = edited). Default: found from the difference."
    ),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the HTML report."),
    info: Optional[Path] = typer.Option(
        None, "--info", help="A JSON file with the edit's info (model_card, timings, engine_calls, candidates)."
    ),
    max_pixels: int = typer.Option(300_000_000, "--max-pixels", help=MAX_PIXELS_HELP),
) -> None:
    """Write one self-contained HTML report: before/after slider, heatmap, 1:1 crops along the seam, metrics."""
    from crispedit.quality.report import write_report

    try:
        a, b, m = _load_pair(original, edited, mask, max_pixels)
        info_d = None
        if info is not None:
            try:
                info_d = json.loads(Path(info).read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise InputError(f"cannot read --info {info}: {exc}", "give a JSON file") from None
            if not isinstance(info_d, dict):
                raise InputError(f"--info {info} is not a JSON object", "give a JSON object")
        path = write_report(a, b, m, output, info=info_d)
    except CrispEditError as err:
        raise _fail_input(err) from None
    except OSError as exc:
        typer.echo(f"error: cannot write {output}: {exc} — choose a writable path", err=True)
        raise typer.Exit(code=2) from None
    typer.echo(str(path))
    sys.stdout.flush()
