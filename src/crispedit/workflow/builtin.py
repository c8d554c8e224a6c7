"""``crispedit edit`` and ``crispedit generate`` as built-in workflows.

One code path: the CLI builds the workflow a call stands for and runs it through the runner, and
``--save-workflow F`` writes the same workflow to a file, so a command line becomes a shareable workflow::

    wf = edit_workflow(image="photo.jpg", output="out.png", ellipse="100,200,900,800", seed=3)
    dump_workflow(wf, "edit.yaml")          # crispedit run edit.yaml reproduces the call
    info = run_edit(image="photo.jpg", output="out.png", ellipse="100,200,900,800", seed=3)

The keyword arguments are those of the CLI commands (unknown ones are ignored, so the CLI can pass
``**locals()``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Optional, Union, cast

from crispedit import options as options_mod
from crispedit.errors import InputError
from crispedit.workflow.schema import SCHEMA_VERSION, dump_workflow

PathLike = Union[str, os.PathLike, None]

_SD_KEYS = ("model", "steps", "guidance", "scheduler", "negative_prompt", "device", "dtype")
_TILE_KEYS = ("tile", "tile_overlap")  # engine constructor options, passed as the node's engine_options


def _path(p: PathLike, relative_to: PathLike) -> Optional[str]:
    if p is None:
        return None
    full = Path(p).expanduser().resolve()
    if relative_to is not None:
        return os.path.relpath(full, Path(relative_to).expanduser().resolve())
    return str(full)


def _model(model: Optional[str], relative_to: PathLike) -> Optional[str]:
    if model and (Path(model).expanduser().exists() or model.startswith((".", "/", "~"))):
        return _path(model, relative_to)
    return model


def _box(text: Union[str, list, tuple], flag: str) -> list[float]:
    if isinstance(text, (list, tuple)):
        vals = list(text)
    else:
        vals = str(text).split(",")
    try:
        out = [float(v) for v in vals]
    except ValueError:
        out = []
    if len(out) != 4:
        raise InputError(f"bad {flag} '{text}'", f"write it as X0,Y0,X1,Y1 in pixels, e.g. {flag} 100,200,900,800")
    return [int(v) if float(v).is_integer() else v for v in out]


def _sd_params(engine: str, relative_to: PathLike, opts: dict[str, Any]) -> dict[str, Any]:
    if engine == "classical":
        return {}
    if engine == "sd15":  # before any decode: --tile 50 is refused here, not after the 4K image was read
        options_mod.check_sd15(**{k: opts.get(k) for k in (*_SD_KEYS, *_TILE_KEYS)})
    params = {k: opts[k] for k in _SD_KEYS if opts.get(k) is not None}
    if "model" in params:
        params["model"] = _model(params["model"], relative_to)
    for flag in ("allow_pickle", "allow_download"):
        if opts.get(flag):
            params[flag] = True
    tiles = {k: int(opts[k]) for k in _TILE_KEYS if opts.get(k) is not None}
    if tiles:
        params["engine_options"] = tiles
    return params


def candidate_seeds(seed: Optional[int], n: int) -> list[int]:
    """``n`` candidate seeds (:func:`crispedit.options.spawn_seeds`: children of ``SeedSequence(seed)``; None: 0)."""
    return options_mod.spawn_seeds(seed, n)


def _prompt_variants(variants: Any) -> list[str]:
    if variants is None:
        return []
    if isinstance(variants, (list, tuple)):
        return [str(v) for v in variants if str(v).strip()]
    p = Path(variants)
    if not p.is_file():
        raise InputError(f"prompt variants file not found: {p}", "give a text file with one prompt per line")
    return [line.strip() for line in p.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def edit_workflow(image: PathLike = None, output: PathLike = None, *, mask: PathLike = None,
                  box: Optional[str] = None, ellipse: Optional[str] = None, prompt: Optional[str] = None,
                  engine: str = "classical", seed: Optional[int] = None, overwrite: bool = False,
                  max_pixels: int = options_mod.DEFAULT_MAX_PIXELS, strength: Optional[float] = None, detail: Optional[str] = None,
                  no_check: bool = False, report: PathLike = None, candidates: Optional[int] = None,
                  prompt_variants: Any = None, relative_to: PathLike = None, reencode: bool = False,
                  **options: Any) -> dict[str, Any]:
    """The workflow (a dict, schema version 1) equivalent to ``crispedit edit`` with these arguments.

    Nodes: ``image`` (LoadImage) → ``mask`` (LoadMask or MaskFromShape, absent for a whole-image edit) →
    ``edit`` (Inpaint, or Img2Img without a mask; with ``candidates=N``: ``candidate_1..N`` and ``edit``
    = SelectBest) → ``check`` (QualityCheck unless ``no_check``) → ``save`` (SaveImage) [→ ``report``].
    Paths are absolute, or relative to ``relative_to`` (the folder a saved workflow file will live in).
    ``options``: model, steps, guidance, scheduler, negative_prompt, device, dtype, allow_pickle,
    allow_download, tile, tile_overlap (the last two go to the engine as ``engine_options``); anything else (e.g.
    the CLI's json_out) is ignored.
    """
    if image is None or output is None:
        raise InputError("an edit needs an image and an output path", "give IMAGE and -o OUTPUT")
    given = [n for n, v in (("--mask", mask), ("--box", box), ("--ellipse", ellipse)) if v is not None]
    if len(given) > 1:
        raise InputError(f"give only one of {', '.join(given)}", "pick the one that describes the edit")
    if not given and engine == "classical":
        raise InputError("no mask given: the classical engine only edits masked areas",
                         "pass --mask FILE, --box or --ellipse (whole-image edits need --engine sd15 --strength)")
    options_mod.build(options_mod.HarnessOptions, {"strength": strength, "detail": detail})
    if strength is not None and given:
        raise InputError(f"--strength sets a whole-image edit and cannot be combined with {given[0]}",
                         "drop --strength (a masked edit is regenerated, then refined at refine_strength), "
                         "or drop the mask for a whole-image restyle")
    nodes: dict[str, Any] = {}
    load: dict[str, Any] = {"path": _path(image, relative_to)}
    if max_pixels != options_mod.DEFAULT_MAX_PIXELS:
        load["max_pixels"] = int(max_pixels)
    nodes["image"] = {"type": "LoadImage", "params": load}
    if mask is not None:
        nodes["mask"] = {"type": "LoadMask", "inputs": {"image": "image"}, "params": {"path": _path(mask, relative_to)}}
    elif box is not None or ellipse is not None:
        shape, text, flag = ("box", box, "--box") if box is not None else ("ellipse", ellipse, "--ellipse")
        nodes["mask"] = {"type": "MaskFromShape", "inputs": {"image": "image"},
                         "params": {"shape": shape, "box": _box(cast(str, text), flag), "units": "px"}}
    sd = _sd_params(engine, relative_to, options)
    masked = "mask" in nodes
    if masked:
        base = {"engine": engine, **({"prompt": prompt} if prompt is not None else {}),
                **({"detail": detail} if detail is not None else {}), **sd}
        n = int(candidates or 1)
        if n > 1:
            variants: list[Optional[str]] = [*_prompt_variants(prompt_variants)] or [prompt]
            names = []
            # per-candidate seeds: children of SeedSequence(seed) (None: 0, so the workflow stays repeatable),
            # independent of each other and of every seed the harness derives inside one edit (not seed + i)
            seeds = candidate_seeds(seed, n)
            for i in range(n):
                p = dict(base)
                if variants[i % len(variants)] is not None:
                    p["prompt"] = variants[i % len(variants)]
                p["seed"] = seeds[i]
                names.append(f"candidate_{i + 1}")
                nodes[names[-1]] = {"type": "Inpaint", "inputs": {"image": "image", "mask": "mask"}, "params": p}
            nodes["edit"] = {"type": "SelectBest", "inputs": {"original": "image", "mask": "mask",
                                                              "candidates": [f"{c}.image" for c in names]}}
        else:
            nodes["edit"] = {"type": "Inpaint", "inputs": {"image": "image", "mask": "mask"},
                             "params": {**base, "seed": seed}}
    else:
        params = {"engine": engine, "strength": options_mod.DEFAULT_STRENGTH if strength is None else float(strength),
                  "seed": seed, **sd}
        if prompt is not None:
            params["prompt"] = prompt
        nodes["edit"] = {"type": "Img2Img", "inputs": {"image": "image"}, "params": params}
    if masked and not no_check:
        nodes["check"] = {"type": "QualityCheck", "inputs": {"original": "image", "edited": "edit.image",
                                                            "mask": "mask", "written": "save.path"}}
    save: dict[str, Any] = {"path": _path(output, relative_to), "mkdir": False}
    if overwrite:
        save["overwrite"] = True
    if reencode:
        save["reencode"] = True
    nodes["save"] = {"type": "SaveImage", "inputs": {"image": "edit.image"}, "params": save}
    if report is not None:
        rep: dict[str, Any] = {"type": "Report", "inputs": {"original": "image", "edited": "edit.image"},
                               "params": {"path": _path(report, relative_to), "mkdir": False}}
        if masked:
            rep["inputs"]["mask"] = "mask"
        if nodes["edit"]["type"] == "SelectBest":
            rep["inputs"]["selection"] = "edit.report"
        else:
            rep["inputs"]["result"] = "edit.result"
        nodes["report"] = rep
    what = "whole-image edit" if not masked else ("object removal" if engine == "classical" else "inpainting")
    return {"version": SCHEMA_VERSION, "name": f"edit-{Path(str(image)).stem}",
            "description": f"crispedit edit ({what}) as a workflow", "nodes": nodes}


def _size(size: Optional[str], width: Optional[int], height: Optional[int]) -> tuple[int, int]:
    if size:
        try:
            w, h = (int(v) for v in str(size).lower().replace("×", "x").split("x"))
            return w, h
        except ValueError:
            raise InputError(f"bad size '{size}'", "write it as WIDTHxHEIGHT, e.g. --size 3840x2160") from None
    return int(width or 3840), int(height or 2160)


def generate_workflow(prompt: Optional[str] = None, output: PathLike = None, *, size: Optional[str] = None,
                      width: Optional[int] = None, height: Optional[int] = None, engine: str = "sd15",
                      seed: Optional[int] = None, overwrite: bool = False, hires_strength: Optional[float] = None,
                      relative_to: PathLike = None, **options: Any) -> dict[str, Any]:
    """The workflow equivalent to ``crispedit generate --prompt P --size WxH -o OUT``: Txt2Img → SaveImage."""
    if not prompt:
        raise InputError("generate needs a prompt", "pass --prompt \"what to generate\"")
    if output is None:
        raise InputError("generate needs an output path", "pass -o OUTPUT")
    w, h = _size(size, width, height)
    options_mod.build(options_mod.HarnessOptions, {"hires_strength": hires_strength})
    params: dict[str, Any] = {"prompt": prompt, "width": w, "height": h, "engine": engine, "seed": seed,
                              **_sd_params(engine, relative_to, options)}
    if hires_strength is not None:
        params["options"] = {"hires_strength": float(hires_strength)}
    save: dict[str, Any] = {"path": _path(output, relative_to), "mkdir": False}
    if overwrite:
        save["overwrite"] = True
    return {"version": SCHEMA_VERSION, "name": "generate", "description": "crispedit generate as a workflow",
            "nodes": {"generate": {"type": "Txt2Img", "params": params},
                      "save": {"type": "SaveImage", "inputs": {"image": "generate.image"}, "params": save}}}


def save_edit_workflow(path: Union[str, os.PathLike], **cli_args: Any) -> Path:
    """``crispedit edit ... --save-workflow PATH``: write the equivalent workflow (paths relative to its folder)."""
    p = Path(path)
    return dump_workflow(edit_workflow(**cli_args, relative_to=p.resolve().parent), p)


def save_generate_workflow(path: Union[str, os.PathLike], **cli_args: Any) -> Path:
    """``crispedit generate ... --save-workflow PATH``."""
    p = Path(path)
    return dump_workflow(generate_workflow(**cli_args, relative_to=p.resolve().parent), p)


def _stage_progress(progress: Optional[Callable[[str, int, int], None]]) -> Optional[Callable[[Any], None]]:
    if progress is None:
        return None

    def on_event(ev: Any) -> None:
        if ev.status == "step":
            progress(f"{ev.node}: {ev.stage}", ev.done, ev.steps)
        elif ev.status in ("done", "cached"):
            progress(ev.node, ev.index + 1, ev.total)

    return on_event


def _run_builtin(wf: dict[str, Any], *, cache: bool, progress: Optional[Callable[[str, int, int], None]]
                 ) -> dict[str, Any]:
    from crispedit.workflow.runner import run_workflow

    res = run_workflow(wf, cache=cache, progress=_stage_progress(progress), keep=set(wf["nodes"]) - {"image"})
    edit_node = "edit" if "edit" in res.workflow.nodes else "generate"
    types = res.workflow.nodes[edit_node].output_types
    if "result" in types:
        info = dict(res.output(edit_node, "result"))
    else:  # SelectBest: the kept candidate's info and the selection
        index = int(res.output(edit_node, "index"))
        cand = res.workflow.nodes[edit_node].links["candidates"][index].node  # type: ignore[index]
        info = dict(res.output(cand, "result"))
        sel = res.output(edit_node, "report")
        info["candidates"] = sel.get("candidates", [])
        info["selection"] = {k: v for k, v in sel.items() if k != "candidates"}
    info["output"] = res.output("save", "path")
    if "info" in res.workflow.nodes["save"].output_types:
        info["save"] = res.output("save", "info")
    if "check" in res.workflow.nodes:
        info["quality"] = res.output("check", "report")
    if "report" in res.workflow.nodes:
        info["report"] = res.output("report", "path")
    info.setdefault("notes", [])
    info["notes"] = list(info["notes"]) + [n for n in res.notes if n not in info["notes"]]
    info["workflow"] = {"nodes": [r.to_dict() for r in res.records], "seconds": round(res.seconds, 4),
                        "overhead_seconds": round(res.overhead_seconds, 4)}
    return info


def run_edit(*, cache: bool = True, progress: Optional[Callable[[str, int, int], None]] = None,
             **cli_args: Any) -> dict[str, Any]:
    """Run ``crispedit edit`` through the runner; returns the edit's info dict (``EditResult.info``) plus
    ``output`` (the file written), ``quality`` (the QualityCheck report, unless no_check), ``report`` (when
    asked), ``workflow`` (per-node records and timings) and ``notes``.
    """
    return _run_builtin(edit_workflow(**cli_args), cache=cache, progress=progress)


def run_generate(*, cache: bool = True, progress: Optional[Callable[[str, int, int], None]] = None,
                 **cli_args: Any) -> dict[str, Any]:
    """Run ``crispedit generate`` through the runner; returns the generation's info plus ``output``."""
    return _run_builtin(generate_workflow(**cli_args), cache=cache, progress=progress)
