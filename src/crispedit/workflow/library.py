"""The node library: the registry of node types a workflow file may use, and every built-in node type.

Each run function is a thin wrapper over the library function that the CLI also calls (``crispedit.edit``,
``crispedit.generate``, ``crispedit.mask.*``, ``crispedit.compositing.*``, ``crispedit.quality.*``,
``crispedit.io.*``): the workflow adds wiring, caching and explanations, never a second implementation. Library
modules are imported inside the run functions, so ``import crispedit.workflow`` stays cheap (no OpenCV, no
torch). Ports, parameters and link types: :mod:`crispedit.workflow.types`.

Register a node type of your own with :func:`register_node` (or the :func:`node` decorator)::

    @node("Invert", "Swap edit and keep areas of a mask.", inputs=[Port("mask", "mask")],
          outputs=[Port("mask", "mask")])
    def _invert(ctx, mask):
        return {"mask": ~mask}
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Literal, Optional

from crispedit.errors import CrispEditError, InputError
from crispedit.options import DEFAULT_MAX_PIXELS, DEFAULT_STRENGTH
from crispedit.workflow.types import (
    REQUIRED,
    NodeContext,
    NodeType,
    Param,
    Port,
    RunFn,
    colour_float,
    did_you_mean,
    from_float_like,
    image_from_array,
    image_size,
    with_array,
    with_meta,
)

# ----------------------------------------------------------------------------------------------------------------
# the registry
# ----------------------------------------------------------------------------------------------------------------

NODE_TYPES: dict[str, NodeType] = {}


def register_node(nt: NodeType, *, replace: bool = False) -> NodeType:
    """Add a node type to the registry (``replace=True`` to override one)."""
    if nt.name in NODE_TYPES and not replace:
        raise ValueError(f"node type {nt.name} is already registered")
    NODE_TYPES[nt.name] = nt
    return nt


def unregister_node(name: str) -> None:
    """Remove a node type from the registry (no error when it is not there)."""
    NODE_TYPES.pop(name, None)


def node(name: str, purpose: str, *, inputs: Any = (), outputs: Any = (), params: Any = (), replace: bool = False,
         **kw: Any) -> Callable[[RunFn], RunFn]:
    """Decorator: register the decorated function as node type ``name`` (keywords as in :class:`NodeType`)."""

    def deco(fn: RunFn) -> RunFn:
        register_node(NodeType(name, purpose, fn, tuple(inputs), tuple(outputs), tuple(params), **kw),
                      replace=replace)
        return fn

    return deco


def get_node_type(name: str) -> NodeType:
    """The registered node type ``name``; InputError with a did-you-mean suggestion when there is none."""
    if name not in NODE_TYPES:
        raise InputError(f"unknown node type '{name}'{did_you_mean(name, NODE_TYPES)}",
                         "run `crispedit nodes` to list the node types")
    return NODE_TYPES[name]



def _check_same_size(node: str, **images: Any) -> None:
    sizes = {k: image_size(v) if hasattr(v, "array") else (v.shape[1], v.shape[0]) for k, v in images.items()
             if v is not None}
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{k} {w}x{h}" for k, (w, h) in sizes.items())
        raise InputError(f"{node}: inputs differ in size ({listed})", "link images and masks of the same size")


def _default_band(mask: Any) -> int:
    """The harness's blend band for a mask: max(32 px, 4% of the mask's bounding-box diagonal)."""
    from crispedit.quality.metrics import default_band

    return default_band(mask)


# ----------------------------------------------------------------------------------------------------------------
# the node library
# ----------------------------------------------------------------------------------------------------------------

IMG = "image"

_SD_PARAMS: tuple[Param, ...] = (
    Param("model", Optional[str], None, "SD model: Hugging Face id, diffusers folder or .safetensors "
          "(null: the engine's default)", kind="model"),
    Param("steps", Optional[int], None, "denoising steps (null: engine default)"),
    Param("guidance", Optional[float], None, "classifier-free guidance scale (null: engine default)"),
    Param("scheduler", Optional[str], None, "dpmpp_2m_karras, ddim, euler_a or unipc (null: engine default)"),
    Param("negative_prompt", Optional[str], None, "what to avoid"),
    Param("device", Optional[str], None, "cpu, cuda or mps (null: automatic)"),
    Param("dtype", Optional[str], None, "fp16, bf16 or fp32 (null: automatic)"),
    Param("allow_pickle", bool, False, "allow .ckpt/.bin pickle weights (loading a pickle runs code)"),
    Param("allow_download", bool, False, "allow downloading weights from the Hugging Face Hub"),
    Param("engine_options", dict, {}, "more options for the engine's constructor"),
)
_SD_NAMES = ("model", "steps", "guidance", "scheduler", "negative_prompt", "device", "dtype", "allow_pickle",
             "allow_download")


def _make_engine(ctx: NodeContext, engine: str, opts: dict[str, Any]) -> Any:
    """The engine instance, built like the CLI does: SD options only for engines other than classical."""
    sd = {k: opts[k] for k in _SD_NAMES if opts.get(k) not in (None, False)}
    extra = dict(opts.get("engine_options") or {})
    if engine == "classical":
        if sd:
            ctx.note(f"ignored {', '.join(sorted(sd))}: the classical engine has no such options")
        return ctx.engine(engine, **extra)
    return ctx.engine(engine, **sd, **extra)


def _result_outputs(ctx: NodeContext, template: Any, result: Any) -> dict[str, Any]:
    array = getattr(result, "array", None)
    if array is None:
        import numpy as np

        array = np.asarray(result.image)
    if array.ndim == 2:
        array = array[..., None]
    image = with_array(template, array) if template is not None else image_from_array(array)
    return {"image": image, "result": dict(result.info)}


# --- inputs ------------------------------------------------------------------------------------------------------


@node("LoadImage", "Read an image file (JPEG, PNG, WebP, TIFF) at full bit depth, EXIF-rotated, with ICC/EXIF.",
      outputs=[Port("image", IMG, "the decoded image")],
      params=[Param("path", str, REQUIRED, "image file (relative to the workflow file)", kind="input_file"),
              Param("max_pixels", int, DEFAULT_MAX_PIXELS, "refuse larger images (decompression bombs)")],
      category="input", library="crispedit.io.load_image", store=False)
def _load_image(ctx: NodeContext, path: str, max_pixels: int) -> dict[str, Any]:
    from crispedit.io import load_image

    data = load_image(path, max_pixels=max_pixels)
    for note in getattr(data, "notes", ()) or ():
        ctx.note(str(note))
    return {"image": data}


@node("LoadMask", "Read a mask file (white = edit; alpha and soft masks as painted, README 'Inputs') and check "
      "it matches the image's size.",
      inputs=[Port("image", IMG, "the image the mask belongs to (for its size)")],
      outputs=[Port("mask", "mask", "bool mask, True = edit (a soft mask: its float32 weights in [0, 1])")],
      params=[Param("path", str, REQUIRED, "mask file (relative to the workflow file)", kind="input_file")],
      category="mask", library="crispedit.mask.load_mask_weights", store=False)
def _load_mask(ctx: NodeContext, image: Any, path: str) -> dict[str, Any]:
    from crispedit.mask import load_mask_weights

    weights, reading = load_mask_weights(path, image_size(image))
    # a soft mask travels as its weights, so Inpaint (crispedit.edit) blends as the user painted
    return {"mask": weights if reading.kind == "soft" else weights > 0}


def _check_shape(params: dict[str, Any]) -> list[tuple[str, str]]:
    box = params.get("box")
    errs = []
    if box is not None:
        x0, y0, x1, y1 = box
        if x1 <= x0 or y1 <= y0:
            errs.append(("box", f"box {list(box)} is empty: give x0 < x1 and y0 < y1"))
        if params.get("units") == "fraction" and not all(-1e-9 <= v <= 1 + 1e-9 for v in box):
            errs.append(("box", f"box {list(box)} has fractions outside [0, 1] (units: fraction)"))
    return errs


def shape_box_px(box: Any, units: str, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """A box in pixels from a box in ``units`` (``px`` or ``fraction`` of the image's width and height)."""
    w, h = size
    if units == "fraction":
        return (int(round(box[0] * w)), int(round(box[1] * h)), int(round(box[2] * w)), int(round(box[3] * h)))
    return tuple(int(round(v)) for v in box)  # type: ignore[return-value]


@node("MaskFromShape", "Make a box or ellipse mask the size of the image (pixels or fractions of the size).",
      inputs=[Port("image", IMG, "the image the mask is for (its size)")],
      outputs=[Port("mask", "mask", "bool mask, True = edit")],
      params=[Param("shape", Literal["box", "ellipse"], "box", "rectangle, or the ellipse inscribed in it"),
              Param("box", tuple[float, float, float, float], REQUIRED, "x0, y0, x1, y1 (end-exclusive)"),
              Param("units", Literal["px", "fraction"], "px",
                    "px, or fraction of the image's width/height (works at any image size)")],
      category="mask", library="crispedit.mask.mask_from_box / mask_from_ellipse", check=_check_shape)
def _mask_from_shape(ctx: NodeContext, image: Any, shape: str, box: Any, units: str) -> dict[str, Any]:
    from crispedit.mask import mask_from_box, mask_from_ellipse, parse_box

    size = image_size(image)
    px = parse_box(",".join(str(v) for v in shape_box_px(box, units, size)), size)
    return {"mask": (mask_from_ellipse if shape == "ellipse" else mask_from_box)(size, px)}


def _maskops_types(params: dict[str, Any]) -> dict[str, str]:
    return {"mask": "weight" if params.get("op") == "feather" else "mask"}


def _check_maskops(params: dict[str, Any]) -> list[tuple[str, str]]:
    if params.get("op") in ("grow", "shrink", "feather") and (params.get("px") or 0) <= 0:
        return [("px", f"op '{params['op']}' needs px > 0")]
    return []


@node("MaskOps", "Grow, shrink, feather, invert a mask, or unite it with another one.",
      inputs=[Port("mask", "mask", "the mask"),
              Port("other", "mask", "second mask (for op: union)", optional=True)],
      outputs=[Port("mask", "mask", "the result (a weight, float in [0, 1], for op: feather)")],
      params=[Param("op", Literal["grow", "shrink", "feather", "invert", "union"], REQUIRED, "the operation"),
              Param("px", float, 0.0, "distance in pixels (grow, shrink, feather)")],
      category="mask", library="crispedit.mask.grow / shrink / feather / invert / union",
      output_types=_maskops_types, check=_check_maskops)
def _mask_ops(ctx: NodeContext, mask: Any, other: Any, op: str, px: float) -> dict[str, Any]:
    from crispedit import mask as M

    # a soft mask (float weights from LoadMask) is shaped by its painted support
    mask = mask if mask.dtype == bool else mask > 0
    other = other if other is None or other.dtype == bool else other > 0

    if op == "union":
        if other is None:
            raise InputError("MaskOps op 'union' needs a second mask", "link the 'other' input")
        return {"mask": M.union(mask, other)}
    if op == "invert":
        return {"mask": M.invert(mask)}
    if op == "feather":
        return {"mask": M.feather(mask, px)}
    return {"mask": (M.grow if op == "grow" else M.shrink)(mask, int(round(px)))}


# --- models ------------------------------------------------------------------------------------------------------


def _check_model_options(params: dict[str, Any]) -> list[tuple[str, str]]:
    """Validate a model node's options with the library's own option models (crispedit.options), before any
    node runs: strengths in [0, 1], option names (did-you-mean), SD 1.5 options such as the tile size."""
    from crispedit import options as opts_mod

    harness = {k: params[k] for k in ("strength", "refine_strength", "detail") if params.get(k) is not None}
    more = dict(params.get("options") or {})
    try:
        opts_mod.split_options(None, {**harness, **more})  # names: the harness's and any engine's
        if params.get("engine") == "sd15":
            sd = {k: params.get(k) for k in _SD_NAMES}
            sd.update({k: v for k, v in more.items() if k in opts_mod.SD15Options.model_fields})
            opts_mod.check_sd15(**sd, **dict(params.get("engine_options") or {}))
    except InputError as exc:
        return [("options", str(exc))]
    return []


@node("Inpaint", "Regenerate the masked area at full resolution (crops, engine at its working size, native "
      "detail, tone, grain, multi-band blend) with any engine.",
      inputs=[Port("image", IMG, "the photo"), Port("mask", "mask", "where to edit (True = edit)")],
      outputs=[Port("image", IMG, "the edited image, same size and bit depth; outside the blend band "
                    "bit-identical"),
               Port("result", "result", "what the edit did (regions, engine calls, timings)")],
      params=[Param("prompt", Optional[str], None, "what to paint (SD engines; ignored by classical)"),
              Param("engine", str, "classical", "classical (no weights), sd15, or any registered engine"),
              Param("seed", Optional[int], None, "seed for repeatable results (null: random, never cached)"),
              *_SD_PARAMS,
              Param("detail", Optional[Literal["native", "fast"]], None,
                    "native: refine large edits at native scale; fast: skip (null: engine default)"),
              Param("refine_strength", Optional[float], None, "strength of the native-scale refinement"),
              Param("tone", bool, True, "local tone matching from a ring around the mask"),
              Param("grain", bool, True, "grain matching from a ring around the mask"),
              Param("options", dict, {}, "more options for crispedit.edit")],
      category="model", library="crispedit.edit", seeded=True, check=_check_model_options)
def _inpaint(ctx: NodeContext, image: Any, mask: Any, prompt: Optional[str], engine: str, seed: Optional[int],
             detail: Optional[str], refine_strength: Optional[float], tone: bool, grain: bool,
             options: dict, **sd: Any) -> dict[str, Any]:
    import crispedit

    eng = _make_engine(ctx, engine, sd)
    hopts = {k: v for k, v in dict(detail=detail, refine_strength=refine_strength).items() if v is not None}
    result = crispedit.edit(image, mask, prompt=prompt, engine=eng, seed=seed, tone=tone, grain=grain,
                            progress=ctx.progress, **hopts, **options)
    return _result_outputs(ctx, image, result)


@node("Img2Img", "Whole-image edit (restyle) at full resolution: img2img over the latent in overlapping tiles "
      "with a tiled VAE.",
      inputs=[Port("image", IMG, "the photo")],
      outputs=[Port("image", IMG, "the restyled image, same size and bit depth"),
               Port("result", "result", "what the edit did")],
      params=[Param("prompt", Optional[str], None, "the style or change to apply"),
              Param("strength", float, DEFAULT_STRENGTH, "0 = unchanged, 1 = repainted; 0.3-0.45 keeps the composition"),
              Param("engine", str, "sd15", "an engine with a whole-image edit (sd15)"),
              Param("seed", Optional[int], None, "seed (null: random, never cached)"),
              *_SD_PARAMS,
              Param("options", dict, {}, "more options for crispedit.edit (e.g. tile size and overlap)")],
      category="model", library="crispedit.edit (mask=None)", seeded=True, check=_check_model_options)
def _img2img(ctx: NodeContext, image: Any, prompt: Optional[str], strength: float, engine: str, seed: Optional[int],
             options: dict, **sd: Any) -> dict[str, Any]:
    import crispedit

    eng = _make_engine(ctx, engine, sd)
    result = crispedit.edit(image, None, prompt=prompt, engine=eng, seed=seed, strength=strength,
                            progress=ctx.progress, **options)
    return _result_outputs(ctx, image, result)


def _check_size(params: dict[str, Any]) -> list[tuple[str, str]]:
    errs = []
    for k in ("width", "height"):
        v = params.get(k)
        if v is not None and not 64 <= v <= 16384:
            errs.append((k, f"{k} {v} is outside 64..16384 px"))
    return errs + _check_model_options(params)


@node("Txt2Img", "Generate an image from text at the model's native size, then upscale and refine it in tiles "
      "to the target size (hires fix to 4K and 8K).",
      outputs=[Port("image", IMG, "the generated image at width x height"),
               Port("result", "result", "what the generation did")],
      params=[Param("prompt", str, REQUIRED, "what to generate"),
              Param("width", int, 3840, "target width in px (snapped to a multiple of 8)"),
              Param("height", int, 2160, "target height in px (snapped to a multiple of 8)"),
              Param("engine", str, "sd15", "an engine with txt2img (sd15)"),
              Param("seed", Optional[int], None, "seed (null: random, never cached)"),
              *_SD_PARAMS,
              Param("options", dict, {}, "more options for crispedit.generate (e.g. tile size, refine strength)")],
      category="model", library="crispedit.generate", seeded=True, check=_check_size)
def _txt2img(ctx: NodeContext, prompt: str, width: int, height: int, engine: str, seed: Optional[int],
             options: dict, **sd: Any) -> dict[str, Any]:
    import crispedit

    try:
        generate = crispedit.generate
    except AttributeError:
        raise CrispEditError("text-to-image is not available in this crispedit build (crispedit.generate missing)",
                             "update crispedit; Txt2Img needs the tiled-diffusion feature") from None
    eng = _make_engine(ctx, engine, sd)
    result = generate(prompt, width, height, engine=eng, seed=seed, progress=ctx.progress, **options)
    return _result_outputs(ctx, None, result)


# --- compositing -------------------------------------------------------------------------------------------------


@node("Composite", "Blend an edited image into the original across a band with a Laplacian pyramid; pixels "
      "farther than the band stay bit-identical.",
      inputs=[Port("original", IMG), Port("edited", IMG, "same size as original"),
              Port("mask", ("mask", "weight"), "where the edit is (a weight of 1 = fully edited)")],
      outputs=[Port("image", IMG, "the composite")],
      params=[Param("band", Optional[int], None, "blend band in px (null: max(32, 4% of the mask's diagonal))")],
      category="compositing", library="crispedit.compositing.multiband_blend + blend_weight")
def _composite(ctx: NodeContext, original: Any, edited: Any, mask: Any, band: Optional[int]) -> dict[str, Any]:
    import numpy as np

    from crispedit.compositing import blend_weight, multiband_blend
    from crispedit.mask import grow

    _check_same_size("Composite", original=original, edited=edited, mask=mask)
    core = mask >= 1.0 if mask.dtype != bool else mask
    band = int(band if band is not None else _default_band(core))
    weight = blend_weight(core, band) if mask.dtype == bool else np.maximum(mask.astype(np.float32),
                                                                            blend_weight(core, band))
    f = multiband_blend(colour_float(original), colour_float(edited), weight, band=band)
    return {"image": from_float_like(original, f, grow(core, band))}


def _ring(mask: Any, width: int) -> tuple[Any, Any]:
    from crispedit.mask import grow

    return grow(mask, 2 * width) & ~grow(mask, 2), grow(mask, width)


@node("ToneMatch", "Correct the edit's local tone/colour drift from a ring of untouched pixels around the mask "
      "(smooth, spatially varying; not one global histogram).",
      inputs=[Port("edited", IMG), Port("original", IMG), Port("mask", "mask")],
      outputs=[Port("image", IMG, "the edit with the drift removed (only mask + band change)")],
      params=[Param("ring", Optional[int], None, "band/ring width in px (null: the blend band)"),
              Param("scale", Optional[float], None, "spatial scale of the drift in px (null: the ring width)")],
      category="compositing", library="crispedit.compositing.tone_match")
def _tone_match(ctx: NodeContext, edited: Any, original: Any, mask: Any, ring: Optional[int],
                scale: Optional[float]) -> dict[str, Any]:
    from crispedit.compositing import tone_match

    _check_same_size("ToneMatch", original=original, edited=edited, mask=mask)
    width = int(ring if ring is not None else _default_band(mask))
    known, target = _ring(mask, width)
    f = tone_match(colour_float(edited), colour_float(original), known, target,
                   scale=float(scale if scale is not None else width))
    return {"image": from_float_like(edited, f, target)}


@node("GrainMatch", "Give a too-smooth edit the grain and fine detail of its surroundings (the photo's own "
      "residual, measured on a ring outside the mask).",
      inputs=[Port("edited", IMG), Port("original", IMG), Port("mask", "mask")],
      outputs=[Port("image", IMG, "the edit with matched grain (only the mask changes)")],
      params=[Param("ring", Optional[int], None, "ring width in px (null: the blend band)"),
              Param("seed", Optional[int], None, "seed of the grain layout (null: random, never cached)")],
      category="compositing", library="crispedit.compositing.match_grain", seeded=True)
def _grain_match(ctx: NodeContext, edited: Any, original: Any, mask: Any, ring: Optional[int],
                 seed: Optional[int]) -> dict[str, Any]:
    from crispedit.compositing import match_grain

    _check_same_size("GrainMatch", original=original, edited=edited, mask=mask)
    width = int(ring if ring is not None else _default_band(mask))
    known, _ = _ring(mask, width)
    f = match_grain(colour_float(edited), colour_float(original), mask, known, seed=seed)
    return {"image": from_float_like(edited, f, mask)}


# --- quality -----------------------------------------------------------------------------------------------------


class QualityGateError(CrispEditError):
    """QualityCheck with ``on_fail: stop`` found a defect."""

    exit_code = 1


def _report_dict(report: Any) -> dict[str, Any]:
    return report.to_dict() if hasattr(report, "to_dict") else dict(report)


@node("QualityCheck", "Zoom-level quality gate: outside identity, seam visibility, detail/noise and colour "
      "consistency; a pass/fail verdict with reasons.",
      inputs=[Port("original", IMG), Port("edited", IMG),
              Port("mask", "mask", "the edit's mask (unlinked: found from the difference)", optional=True),
              Port("written", "path", "the file SaveImage wrote: when linked, that file is decoded and checked "
                   "instead of `edited` (a lossy format's changes count)", optional=True)],
      outputs=[Port("report", "report", "metrics, verdict and reasons"),
               Port("verdict", "text", "pass, fail or unmeasured")],
      params=[Param("on_fail", Literal["warn", "stop"], "warn",
                    "warn: note the failure and go on; stop: end the run with exit code 1"),
              Param("band", Optional[int], None, "blend band in px (null: max(32, 4% of the mask's diagonal))"),
              Param("thresholds", dict, {}, "acceptance thresholds to change, e.g. {seam_max: 3.0} "
                    "(names and defaults: docs/quality.md)"),
              Param("seed", int, 0, "seed of the seam metric's null placements")],
      category="quality", library="crispedit.quality.verdict.assess")
def _quality_check(ctx: NodeContext, original: Any, edited: Any, mask: Any, written: Any, on_fail: str,
                   band: Optional[int], thresholds: dict, seed: int) -> dict[str, Any]:
    from crispedit.quality.verdict import Thresholds, assess

    if written is not None:  # check the bytes the user got, not the in-memory result
        from crispedit.io import load_image

        edited = load_image(written, max_pixels=max(300_000_000, int(original.array.shape[0] * original.array.shape[1])))

    kw: dict[str, Any] = {"band": band, "seed": seed}
    if thresholds:
        names = [f.name for f in dataclasses.fields(Thresholds)]
        for k in thresholds:
            if k not in names:
                raise InputError(f"unknown quality threshold '{k}'{did_you_mean(k, names)}",
                                 f"use one of: {', '.join(names)}")
        kw["thresholds"] = Thresholds(**thresholds)
    a, b = original.array, edited.array
    if a.shape != b.shape or a.dtype != b.dtype:  # e.g. alpha dropped or 16 -> 8 bit by the output format
        import numpy as np

        if a.dtype == np.uint16 and b.dtype == np.uint8:
            a = (a // 257).astype(np.uint8)
        ca = 1 if a.ndim == 2 else a.shape[2]
        cb = 1 if b.ndim == 2 else b.shape[2]
        if ca != cb and a.ndim == 3 and b.ndim == 3:
            a, b = a[:, :, : min(ca, cb)], b[:, :, : min(ca, cb)]
    report = _report_dict(assess(a, b, mask, **kw))
    if written is not None:
        report["checked_file"] = str(written)
    verdict = str(report.get("verdict", "unknown"))
    if verdict != "pass":
        reasons = "; ".join(map(str, report.get("reasons") or [])) or "; ".join(
            "not measured: " + str(u) for u in report.get("unmeasured") or []) or "no reason given"
        if on_fail == "stop":
            what = "failed" if verdict == "fail" else f"gave no pass ({verdict})"
            raise QualityGateError(f"quality check '{ctx.node}' {what}: {reasons}",
                                   "look at the report, change the mask/prompt/seed, or set on_fail: warn")
        ctx.note(f"quality {verdict}: {reasons}")
    return {"report": report, "verdict": verdict}


def _candidate_meta(ctx: NodeContext, i: int) -> dict[str, Any]:
    """Where candidate ``i`` came from: its node and that node's seed, prompt and engine."""
    meta: dict[str, Any] = {}
    wf = ctx.workflow
    try:
        link = wf.nodes[ctx.node].links["candidates"][i]
        up = wf.nodes[link.node]
        meta["node"] = link.node
        for k in ("seed", "prompt", "engine"):
            if k in up.params:
                meta[k] = up.params[k]
    except (AttributeError, KeyError, IndexError, TypeError):
        pass
    return meta


@node("SelectBest", "SAGI-style candidate selection: judge each candidate edit, reject those the judge fails, "
      "keep the highest score (ties: the earlier), and say why.",
      inputs=[Port("original", IMG), Port("candidates", IMG, "candidate edits of the original", multiple=True),
              Port("mask", "mask", "the edit's mask (unlinked: found from the difference)", optional=True)],
      outputs=[Port("image", IMG, "the kept candidate"),
               Port("report", "report", "per candidate: score, passed, status (kept/passed/rejected) and why"),
               Port("index", "number", "position of the kept candidate in the list")],
      params=[Param("judge", Literal["metric", "vlm"], "metric",
                    "metric: the quality gate; vlm: a vision-language model asked SAGI's question"),
              Param("judge_model", Optional[str], None, "local transformers model folder for judge: vlm",
                    kind="model"),
              Param("thresholds", dict, {}, "acceptance thresholds for the metric judge (docs/quality.md)"),
              Param("on_all_fail", Literal["best", "stop"], "best",
                    "best: keep the highest score when every candidate fails; stop: end the run (exit 1)")],
      category="quality", library="crispedit.quality.candidates.select_best",
      check=lambda p: [("judge_model", "judge: vlm needs judge_model (a local model folder)")]
      if p.get("judge") == "vlm" and not p.get("judge_model") else [])
def _select_best(ctx: NodeContext, original: Any, candidates: list, mask: Any, judge: str,
                 judge_model: Optional[str], thresholds: dict, on_all_fail: str) -> dict[str, Any]:
    from crispedit.quality import candidates as C
    from crispedit.quality.verdict import Thresholds

    if not candidates:
        raise InputError("SelectBest got no candidates", "link at least one image to 'candidates'")
    _check_same_size("SelectBest", original=original, mask=mask,
                     **{f"candidate {i}": c for i, c in enumerate(candidates)})
    if judge == "vlm":
        assert judge_model is not None  # the node's check refuses judge: vlm without judge_model
        j: Any = C.VLMJudge(judge_model)
    else:
        names = [f.name for f in dataclasses.fields(Thresholds)]
        for k in thresholds:
            if k not in names:
                raise InputError(f"unknown quality threshold '{k}'{did_you_mean(k, names)}",
                                 f"use one of: {', '.join(names)}")
        j = C.MetricJudge(Thresholds(**thresholds) if thresholds else None)
    pairs = [(c.array, _candidate_meta(ctx, i)) for i, c in enumerate(candidates)]
    best, records = C.select_best(original.array, pairs, mask, j)
    passed = [r for r in records if r.get("passed")]
    if not passed:
        if on_all_fail == "stop":
            raise QualityGateError(f"SelectBest '{ctx.node}': every candidate failed the judge",
                                   "add candidates (seeds, prompt variants), or set on_all_fail: best")
        ctx.note("every candidate failed the judge; kept the highest score")
    report = {"index": int(best), "judge": judge, "passed": len(passed), "candidates": records}
    return {"image": candidates[int(best)], "report": report, "index": int(best)}


# --- outputs -----------------------------------------------------------------------------------------------------


@node("SaveImage", "Write the image (lossless by default for lossless inputs; ICC, EXIF, bit depth kept; "
      "atomic write).",
      inputs=[Port("image", IMG)],
      outputs=[Port("path", "path", "the file written"),
               Port("info", "result", "what the write did (JPEG: MCUs re-encoded, read-back check)")],
      params=[Param("path", str, REQUIRED, "output file (relative to the workflow file); .png .jpg .webp .tif",
                    kind="output_file"),
              Param("overwrite", bool, False, "allow writing over one of the workflow's input files"),
              Param("mkdir", bool, True, "create the output folder when missing"),
              Param("reencode", bool, False, "JPEG to JPEG: re-encode the whole picture instead of keeping "
                    "every unedited block's coefficients")],
      category="output", library="crispedit.io.save_image", side_effect=True)
def _save_image(ctx: NodeContext, image: Any, path: str, overwrite: bool, mkdir: bool,
                reencode: bool = False) -> dict[str, Any]:
    from pathlib import Path

    from crispedit.io import save_image

    out = Path(path)
    if mkdir:
        out.parent.mkdir(parents=True, exist_ok=True)
    elif not out.parent.is_dir():
        raise InputError(f"output folder does not exist: {out.parent}", "create it first or set mkdir: true")
    image = with_meta(image, notes=[])  # collect this write's notes only
    info: dict[str, Any] = {}
    written = save_image(image, out, overwrite=overwrite, inputs=tuple(Path(p) for p in ctx.input_files),
                         reencode=reencode, info=info)
    for note in image.notes:
        ctx.note(note)
    info["notes"] = list(image.notes)
    return {"path": str(written), "info": info}


@node("Report", "Write a self-contained HTML report: before/after, change heatmap, 1:1 crops at the worst "
      "places of the seam, metrics, and this workflow's model cards and timings.",
      inputs=[Port("original", IMG), Port("edited", IMG), Port("mask", "mask", optional=True),
              Port("result", "result", "the edit's info (engine calls, timings)", optional=True),
              Port("selection", "report", "a SelectBest report: the candidates table", optional=True)],
      outputs=[Port("path", "path", "the report written")],
      params=[Param("path", str, REQUIRED, "output .html file (relative to the workflow file)", kind="output_file"),
              Param("title", str, "crispedit quality report", "the report's title"),
              Param("mkdir", bool, True, "create the output folder when missing")],
      category="output", library="crispedit.quality.report.write_report", side_effect=True)
def _report(ctx: NodeContext, original: Any, edited: Any, mask: Any, result: Any, selection: Any, path: str,
            title: str, mkdir: bool) -> dict[str, Any]:
    from pathlib import Path

    from crispedit.quality.report import write_report

    out = Path(path)
    if mkdir:
        out.parent.mkdir(parents=True, exist_ok=True)
    elif not out.parent.is_dir():
        raise InputError(f"output folder does not exist: {out.parent}", "create it first or set mkdir: true")
    info = dict(result or {})
    if selection and selection.get("candidates"):
        info["candidates"] = selection["candidates"]
    if ctx.workflow is not None:
        from crispedit.workflow.cards import cards_for_workflow

        info["model_cards"] = [c.to_dict() for c in cards_for_workflow(ctx.workflow)]
        timings = dict(info.get("timings") or {})
        timings.update({f"node {r.node} ({r.status})": round(r.seconds, 4) for r in ctx.records})
        info["timings"] = timings
        info["workflow"] = getattr(ctx.workflow, "name", None)
    written = write_report(original.array, edited.array, mask, out, info=info, title=title)
    return {"path": str(written if written is not None else out)}
