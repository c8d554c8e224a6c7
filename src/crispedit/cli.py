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
    mask: Optional[Path] = typer.Option(None, "--mask", "-m", help="Mask image, white = edit."),
    box: Optional[str] = typer.Option(None, "--box", help="Rectangle to edit: X0,Y0,X1,Y1 (px)."),
    ellipse: Optional[str] = typer.Option(None, "--ellipse", help="Ellipse inscribed in X0,Y0,X1,Y1 (px)."),
    prompt: Optional[str] = typer.Option(None, "--prompt", "-p", help="What to paint (SD engines)."),
    engine: str = typer.Option("classical", "--engine", "-e", help="Engine: classical (default) or sd15."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed for repeatable results."),
    json_out: bool = typer.Option(False, "--json", help="Print the result info as JSON on stdout."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Allow writing over the input file."),
    max_pixels: int = typer.Option(300_000_000, "--max-pixels", help="Refuse larger images (decompression bombs)."),
    model: Optional[str] = typer.Option(None, "--model", help="SD model: HF id, diffusers folder or .safetensors."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Denoising steps (SD)."),
    guidance: Optional[float] = typer.Option(None, "--guidance", help="Classifier-free guidance scale (SD)."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="dpmpp_2m_karras, ddim, euler_a, unipc."),
    negative_prompt: Optional[str] = typer.Option(None, "--negative-prompt", help="What to avoid (SD)."),
    strength: Optional[float] = typer.Option(None, "--strength", help="Whole-image edit strength in [0, 1]."),
    detail: Optional[str] = typer.Option(None, "--detail", help="native: refine large edits at native scale; fast: skip."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda or mps (SD)."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="fp16, bf16 or fp32 (SD)."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Allow .ckpt/.bin pickle weights (runs code!)."),
    allow_download: bool = typer.Option(False, "--allow-download", help="Allow downloading weights from the Hub."),
    no_check: bool = typer.Option(False, "--no-check", help="Skip the quality gate after the edit."),
) -> None:
    """Edit IMAGE where MASK is white and write a full-resolution result."""
    try:
        _edit(**locals())
    except CrispEditError as exc:
        _fail(exc)


def _edit(image: Path, output: Path, mask: Optional[Path], box: Optional[str], ellipse: Optional[str],
          prompt: Optional[str], engine: str, seed: Optional[int], json_out: bool, overwrite: bool, max_pixels: int,
          model: Optional[str], steps: Optional[int], guidance: Optional[float], scheduler: Optional[str],
          negative_prompt: Optional[str], strength: Optional[float], detail: Optional[str], device: Optional[str],
          dtype: Optional[str], allow_pickle: bool, allow_download: bool, no_check: bool) -> None:
    from crispedit import harness
    from crispedit.engines.base import get_engine
    from crispedit.imageio import load_image, save_image
    from crispedit.mask import load_mask, mask_from_box, mask_from_ellipse, parse_box

    if sum(x is not None for x in (mask, box, ellipse)) > 1:
        raise InputError("give only one of --mask, --box, --ellipse", "pick the one that describes the edit")
    if strength is not None and not 0.0 <= strength <= 1.0:
        raise InputError(f"--strength {strength} is outside [0, 1]", "use a value such as 0.35")
    check_output(output, [image] + ([mask] if mask else []), overwrite)
    progress = StageProgress()
    t_decode = time.perf_counter()
    data = load_image(image, max_pixels=max_pixels)
    t_decode = time.perf_counter() - t_decode
    for note in data.notes:
        err.print(f"note: {note}")
    size = (data.width, data.height)
    m: Any = None
    if mask is not None:
        m = load_mask(mask, size)
    elif box is not None:
        m = mask_from_box(size, parse_box(box, size))
    elif ellipse is not None:
        m = mask_from_ellipse(size, parse_box(ellipse, size))
    if m is None and engine == "classical":
        raise InputError("no mask given: the classical engine only edits masked areas",
                         "pass --mask FILE, --box or --ellipse (whole-image edits need --engine sd15 --strength)")
    eng = get_engine(engine, **_engine_options(
        model=model, steps=steps, guidance=guidance, scheduler=scheduler, negative_prompt=negative_prompt,
        device=device, dtype=dtype, allow_pickle=allow_pickle, allow_download=allow_download, progress=progress)
        if engine != "classical" else {})
    result = harness.edit(data, m, prompt=prompt, engine=eng, seed=seed, detail=detail, strength=strength,
                          progress=progress)
    if m is None and strength is None:
        err.print("note: whole-image edit with the default strength 0.35 (set --strength to change)")
    t = time.perf_counter()
    inputs = [image] + ([mask] if mask is not None else [])
    written = save_image(data, output, result.array, overwrite=overwrite, inputs=inputs)
    result.info["timings"]["decode"] = round(t_decode, 4)
    result.info["timings"]["encode"] = round(time.perf_counter() - t, 4)
    result.info["output"] = str(written)
    if not no_check and m is not None:
        _quality_summary(data.array, result, m)
    if json_out:
        typer.echo(json.dumps(result.info, indent=2, default=str))
    else:
        total = sum(result.info["timings"].values())
        err.print(f"wrote {written} ({data.width}x{data.height}, {len(result.info.get('engine_calls', []))} "
                  f"engine call(s), {total:.1f}s)")


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
    device: Optional[str] = typer.Option(None, "--device"),
    dtype: Optional[str] = typer.Option(None, "--dtype"),
    allow_pickle: bool = typer.Option(False, "--allow-pickle"),
    allow_download: bool = typer.Option(False, "--allow-download"),
) -> None:
    """Generate an image at any size: compose at the model's size, then upscale and refine in tiles."""
    try:
        from crispedit import harness
        from crispedit.engines.base import get_engine
        from crispedit.imageio import save_image

        try:
            w, h = (int(v) for v in size.lower().split("x"))
        except ValueError:
            raise InputError(f"bad size '{size}'", "write it as WIDTHxHEIGHT, e.g. 3840x2160") from None
        if hires_strength is not None and not 0.0 <= hires_strength <= 1.0:
            raise InputError(f"--hires-strength {hires_strength} is outside [0, 1]", "use e.g. 0.35")
        (w, h), note = harness.snap_size(w, h)
        if note:
            err.print(f"note: {note}")
        check_output(output, [], False)
        progress = StageProgress()
        eng = get_engine(engine, **_engine_options(
            model=model, steps=steps, guidance=guidance, scheduler=scheduler, negative_prompt=negative_prompt,
            device=device, dtype=dtype, allow_pickle=allow_pickle, allow_download=allow_download,
            progress=progress))
        result = harness.generate(prompt, w, h, engine=eng, seed=seed, hires_strength=hires_strength)
        written = save_image(result.source, output, result.array)
        result.info["output"] = str(written)
        if json_out:
            typer.echo(json.dumps(result.info, indent=2, default=str))
        else:
            err.print(f"wrote {written} ({w}x{h})")
    except CrispEditError as exc:
        _fail(exc)


def _quality_summary(original: Any, result: Any, mask: Any) -> None:
    """Run the quality gate after an edit when the quality module is there; one summary line."""
    try:
        from crispedit.quality.verdict import assess
    except ImportError:
        return
    report = assess(original, result.array, mask)
    result.info["quality"] = report.to_dict()
    reasons = "; ".join(report.reasons) if report.reasons else "no defect found"
    err.print(f"quality: {report.verdict} ({reasons})")


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


def main() -> None:
    try:
        app()
    except CrispEditError as exc:  # raised by registered commands that do not catch it themselves
        err.print(f"[bold red]error:[/bold red] {exc}", soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
