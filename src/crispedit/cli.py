"""The `crispedit` command line: a thin typer shell over the library.

User mistakes (``CrispEditError``) print one line on stderr and exit with code 2; progress goes to stderr so
``--json`` output on stdout stays clean.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.console import Console

from crispedit.errors import CrispEditError, InputError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="AI image edits of 4K-and-larger images that survive 100% zoom.")
err = Console(stderr=True, highlight=False)

OUTPUT_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff"}


def check_output(output: Path, inputs: list[Path], overwrite: bool) -> None:
    """Refuse, before any work, an output we could not or should not write."""
    if output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise InputError(f"cannot write '{output.suffix or output.name}' files",
                         f"name the output with one of: {', '.join(sorted(OUTPUT_SUFFIXES))}")
    parent = output.resolve().parent
    if not parent.is_dir():
        raise InputError(f"output folder does not exist: {parent}", "create it first or choose another -o")
    for src in inputs:
        if src is not None and src.exists() and output.exists() and output.resolve() == src.resolve():
            if not overwrite:
                raise InputError(f"output {output} is the input file", "choose another -o, or pass --overwrite")


class StageProgress:
    """Progress on stderr for work that takes more than a second (silent for quick runs and non-terminals)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and (err.is_terminal or os.environ.get("CRISPEDIT_PROGRESS") == "1")
        self.start = time.perf_counter()
        self.last = 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.perf_counter()
        if not self.enabled or now - self.start < 1.0 or (now - self.last < 0.2 and done < total):
            return
        self.last = now
        err.print(f"[dim]{stage} {done}/{total}  {now - self.start:5.1f}s[/dim]")


def _fail(exc: CrispEditError) -> None:
    err.print(f"[bold red]error:[/bold red] {exc}", soft_wrap=True)
    raise typer.Exit(code=exc.exit_code)


def _engine_options(**kw: Any) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if v is not None and v is not False}


@app.command()
def edit(
    image: Path = typer.Argument(..., help="Image to edit (JPEG, PNG, WebP, TIFF)."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the result."),
    mask: Optional[Path] = typer.Option(None, "--mask", "-m", help="Mask image, white = edit; alpha and soft (grey) masks honoured (README, Inputs)."),
    box: Optional[str] = typer.Option(None, "--box", help="Rectangle to edit: X0,Y0,X1,Y1 (px)."),
    ellipse: Optional[str] = typer.Option(None, "--ellipse", help="Ellipse inscribed in X0,Y0,X1,Y1 (px)."),
    prompt: Optional[str] = typer.Option(None, "--prompt", "-p", help="What to paint (SD engines)."),
    engine: str = typer.Option("classical", "--engine", "-e", help="Engine: classical (default) or sd15."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed for repeatable results."),
    json_out: bool = typer.Option(False, "--json", help="Print the result info as JSON on stdout."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Allow writing over the input file."),
    reencode: bool = typer.Option(False, "--reencode", help="JPEG to JPEG: re-encode the whole picture instead of "
                                  "keeping every unedited 8x8 block bit for bit."),
    max_pixels: int = typer.Option(300_000_000, "--max-pixels", help="Refuse larger images (decompression bombs)."),
    model: Optional[str] = typer.Option(None, "--model", help="SD model: HF id, diffusers folder or .safetensors."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Denoising steps (SD)."),
    guidance: Optional[float] = typer.Option(None, "--guidance", help="Classifier-free guidance scale (SD)."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="dpmpp_2m_karras, ddim, euler_a, unipc."),
    negative_prompt: Optional[str] = typer.Option(None, "--negative-prompt", help="What to avoid (SD)."),
    strength: Optional[float] = typer.Option(None, "--strength", help="Whole-image edit strength in [0, 1] (default 0.35); refused with a mask (masked edits are regenerated, then refined)."),
    detail: Optional[str] = typer.Option(None, "--detail", help="native: refine large edits at native scale; fast: skip."),
    tile: Optional[int] = typer.Option(None, "--tile", help="UNet tile for images over 640 px, in latent px (x8 = image px; default 64 on CPU, 96 on GPU)."),
    tile_overlap: Optional[int] = typer.Option(None, "--tile-overlap", help="Minimum tile overlap in latent px (default 24 on CPU, 32 on GPU; at most half the tile)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda or mps (SD)."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="fp16, bf16 or fp32 (SD)."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Allow .ckpt/.bin pickle weights (runs code!)."),
    allow_download: bool = typer.Option(False, "--allow-download", help="Allow downloading weights from the Hub."),
    no_check: bool = typer.Option(False, "--no-check", help="Skip the quality gate after the edit."),
    candidates: Optional[int] = typer.Option(None, "--candidates", help="Make N edits, keep the best the gate passes."),
    prompt_variants: Optional[Path] = typer.Option(None, "--prompt-variants", help="Text file, one prompt per line."),
    report: Optional[Path] = typer.Option(None, "--report", help="Also write a zoomable HTML report here."),
    save_workflow: Optional[Path] = typer.Option(None, "--save-workflow", help="Write the equivalent workflow file."),
) -> None:
    """Edit IMAGE where MASK is white and write a full-resolution result.

    Runs as the built-in edit workflow (the same nodes `crispedit run` executes); --save-workflow writes it.
    """
    try:
        _edit(**locals())
    except CrispEditError as exc:
        _fail(exc)


def _edit(json_out: bool, save_workflow: Optional[Path], candidates: Optional[int],
          prompt_variants: Optional[Path], **args: Any) -> None:
    from crispedit.workflow import builtin

    if candidates is not None and candidates < 1:
        raise InputError(f"--candidates {candidates} must be at least 1", "use e.g. --candidates 4")
    if prompt_variants is not None and not prompt_variants.is_file():
        raise InputError(f"prompt variants file not found: {prompt_variants}", "give a text file, one prompt per line")
    inputs = [args["image"]] + ([args["mask"]] if args["mask"] else [])
    check_output(args["output"], inputs, args["overwrite"])
    if args["report"] is not None:
        check_output(args["report"].with_suffix(".png"), inputs, False)
    wf_args = dict(args, candidates=candidates, prompt_variants=prompt_variants)
    if save_workflow is not None:
        path = builtin.save_edit_workflow(save_workflow, **wf_args)
        err.print(f"workflow written to {path}")
    info = builtin.run_edit(cache=False, progress=StageProgress(), **wf_args)
    _finish(info, json_out)


def _finish(info: dict, json_out: bool) -> None:
    """Print notes, the quality summary and either the JSON info or one closing line."""
    for note in info.get("notes", []):
        err.print(f"note: {note}")
    q = info.get("quality")
    if q:
        reasons = "; ".join(q.get("reasons") or []) or "; ".join(
            "not measured: " + u for u in q.get("unmeasured") or []) or "no defect found"
        err.print(f"quality: {q.get('verdict')} ({reasons})")
    if json_out:
        typer.echo(json.dumps(info, indent=2, default=str))
    else:
        total = sum(v for v in info.get("timings", {}).values() if isinstance(v, (int, float)))
        err.print(f"wrote {info.get('output')} ({len(info.get('engine_calls', []))} engine call(s), "
                  f"{total:.1f}s)")


@app.command()
def generate(
    prompt: str = typer.Option(..., "--prompt", "-p", help="What to generate."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the image."),
    size: str = typer.Option("3840x2160", "--size", help="WIDTHxHEIGHT in px (snapped to multiples of 8)."),
    engine: str = typer.Option("sd15", "--engine", "-e", help="Engine with txt2img (sd15)."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    json_out: bool = typer.Option(False, "--json", help="Print the result info as JSON on stdout."),
    model: Optional[str] = typer.Option(None, "--model", help="SD model: HF id, diffusers folder or .safetensors."),
    steps: Optional[int] = typer.Option(None, "--steps"),
    guidance: Optional[float] = typer.Option(None, "--guidance"),
    scheduler: Optional[str] = typer.Option(None, "--scheduler"),
    negative_prompt: Optional[str] = typer.Option(None, "--negative-prompt"),
    hires_strength: Optional[float] = typer.Option(None, "--hires-strength", help="Refinement strength per upscale stage."),
    tile: Optional[int] = typer.Option(None, "--tile", help="UNet tile for images over 640 px, in latent px (x8 = image px; default 64 on CPU, 96 on GPU)."),
    tile_overlap: Optional[int] = typer.Option(None, "--tile-overlap", help="Minimum tile overlap in latent px (default 24 on CPU, 32 on GPU; at most half the tile)."),
    device: Optional[str] = typer.Option(None, "--device"),
    dtype: Optional[str] = typer.Option(None, "--dtype"),
    allow_pickle: bool = typer.Option(False, "--allow-pickle"),
    allow_download: bool = typer.Option(False, "--allow-download"),
    save_workflow: Optional[Path] = typer.Option(None, "--save-workflow", help="Write the equivalent workflow file."),
) -> None:
    """Generate an image at any size: compose at the model's size, then upscale and refine in tiles."""
    try:
        from crispedit import harness
        from crispedit.workflow import builtin

        try:
            w, h = (int(v) for v in size.lower().replace("×", "x").split("x"))
        except ValueError:
            raise InputError(f"bad size '{size}'", "write it as WIDTHxHEIGHT, e.g. 3840x2160") from None
        (w, h), note = harness.snap_size(w, h)
        if note:
            err.print(f"note: {note}")
        check_output(output, [], False)
        args = dict(prompt=prompt, output=output, size=f"{w}x{h}", engine=engine, seed=seed, model=model,
                    steps=steps, guidance=guidance, scheduler=scheduler, negative_prompt=negative_prompt,
                    hires_strength=hires_strength, device=device, dtype=dtype, allow_pickle=allow_pickle,
                    allow_download=allow_download, tile=tile, tile_overlap=tile_overlap)
        if save_workflow is not None:
            err.print(f"workflow written to {builtin.save_generate_workflow(save_workflow, **args)}")
        info = builtin.run_generate(cache=False, progress=StageProgress(), **args)
        _finish(info, json_out)
    except CrispEditError as exc:
        _fail(exc)


def _register_optional(name: str, module: str, attr: str, **kw: Any) -> None:
    try:
        mod = __import__(module, fromlist=[attr])
        fn: Callable = getattr(mod, attr)
    except (ImportError, AttributeError):
        return
    app.command(name, **kw)(fn)


_register_optional("quality", "crispedit.quality.cli", "quality_cmd")
_register_optional("report", "crispedit.quality.cli", "report_cmd")
_register_optional("run", "crispedit.workflow.cli", "run_cmd")
_register_optional("nodes", "crispedit.workflow.cli", "nodes_cmd")
_register_optional("describe", "crispedit.workflow.cli", "describe_cmd")
_register_optional("serve", "crispedit.server.cli", "serve_cmd")

_register_optional("batch", "crispedit.batch.cli", "batch_cmd")


def main() -> None:
    try:
        from crispedit.batch.cli import expand_ray_flag  # `batch --ray` with its address optional

        app(args=expand_ray_flag(sys.argv[1:]))
    except CrispEditError as exc:  # raised by registered commands that do not catch it themselves
        err.print(f"[bold red]error:[/bold red] {exc}", soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
