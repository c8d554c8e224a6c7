"""``crispedit describe``: a workflow explained in plain words.

What task it performs ("text-guided inpainting of a 5K photo"), the chain input → model → output step by step
with the size each step works at, and a model card for each model node. Nothing is decoded: image sizes come
from the file headers (``PIL.Image.open(...).size`` plus the EXIF orientation), crop sizes from the same region
planner the harness uses, applied to the mask's bounding box when the mask comes from a shape.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Optional, Union

from crispedit.options import DEFAULT_STRENGTH
from crispedit.workflow.cards import cards_for_node, cards_for_workflow
from crispedit.workflow.library import shape_box_px
from crispedit.workflow.schema import Node, Workflow, load_workflow

Size = Optional[tuple[int, int]]
Box = Optional[tuple[int, int, int, int]]

#: Working size (square side, px) of the built-in engines; None = works at any size.
ENGINE_WORKING_SIZE = {"sd15": 512, "classical": None}



def _or_default(strength: Optional[float]) -> float:
    """A strength as the library applies it: :data:`crispedit.options.DEFAULT_STRENGTH` when unset (0 is kept)."""
    return DEFAULT_STRENGTH if strength is None else float(strength)

def _wh(size: Size) -> str:
    return f"{size[0]}x{size[1]}" if size else "unknown size"


def size_class(size: Size) -> str:
    """4K, 5K, 8K... from the long side (3840 = 4K, 5120 = 5K, 7680 = 8K)."""
    if not size:
        return "an image"
    long = max(size)
    for px, label in ((15360, "16K"), (7680, "8K"), (6144, "6K"), (5120, "5K"), (3840, "4K"), (2560, "2.5K"),
                      (1920, "2K")):
        if long >= px:
            return f"a {label}"
    return "a small"


def header_info(path: Union[str, Path]) -> dict[str, Any]:
    """Size (after EXIF orientation), format and mode of an image file, from its header only."""
    from PIL import Image

    p = Path(path)
    if not p.is_file():
        return {"exists": False}
    try:
        with Image.open(p) as im:
            w, h = im.size
            orientation = 1
            try:  # from the header only: getexif() would decode a PNG to reach a trailing eXIf chunk
                raw = im.info.get("exif")
                if raw:
                    exif = Image.Exif()
                    exif.load(raw)
                    orientation = int(exif.get(0x0112, 1) or 1)
                elif hasattr(im, "tag_v2"):
                    orientation = int(im.tag_v2.get(0x0112, 1) or 1)
            except Exception:
                pass
            if orientation in (5, 6, 7, 8):
                w, h = h, w
            return {"exists": True, "size": (w, h), "format": im.format, "mode": im.mode,
                    "rotated": orientation != 1}
    except Exception as exc:  # unreadable: describe says so, run will refuse it
        return {"exists": True, "error": str(exc).splitlines()[0]}


def _grow_box(box: Box, px: float, size: Size) -> Box:
    if box is None:
        return None
    x0, y0, x1, y1 = box
    p = int(math.ceil(px))
    x0, y0, x1, y1 = x0 - p, y0 - p, x1 + p, y1 + p
    if size:
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(size[0], x1), min(size[1], y1)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def _plan(size: Size, box: Box, min_margin: int = 64) -> Optional[Any]:
    """The harness's region plan for a mask whose bounding box is ``box``."""
    if not size or not box:
        return None
    import numpy as np

    from crispedit.regions import plan_regions

    m = np.zeros((size[1], size[0]), bool)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = True
    regions = plan_regions(m, min_margin=min_margin)
    return regions[0] if regions else None


def _rel(path: Any, wf: Workflow) -> str:
    try:
        return str(Path(path).resolve().relative_to(wf.base_dir.resolve()))
    except (ValueError, TypeError):
        return str(path)


# ----------------------------------------------------------------------------------------------------------------
# per node type: (what it does, what size it works at, what it outputs)
# ----------------------------------------------------------------------------------------------------------------

Info = dict[str, Any]  # per output: {"type", "size", "bbox"}


def _link_list(node: Node, port: str) -> list[Any]:
    """The links of a multiple input (``[]`` when unlinked)."""
    links = node.links.get(port)
    return links if isinstance(links, list) else []


Describer = Callable[[Node, dict[str, Any], Workflow], tuple[str, str, dict[str, Info]]]
_DESCRIBERS: dict[str, Describer] = {}


def describer(type_name: str) -> Callable[[Describer], Describer]:
    """Register how ``describe`` explains a node type (other node types get their one-line purpose)."""

    def deco(fn: Describer) -> Describer:
        _DESCRIBERS[type_name] = fn
        return fn

    return deco


def _in(inputs: dict[str, Any], name: str) -> Info:
    v = inputs.get(name)
    if isinstance(v, list):
        return v[0] if v else {}
    return v or {}


@describer("LoadImage")
def _d_load_image(node: Node, inputs: dict[str, Any], wf: Workflow) -> tuple[str, str, dict[str, Info]]:
    path = node.params["path"]
    h = header_info(path)
    rel = _rel(path, wf)
    if not h.get("exists"):
        return f"reads {rel} (not found yet: the run will refuse it)", "unknown", {"image": {"type": "image"}}
    if "error" in h:
        return f"reads {rel} (unreadable: {h['error']})", "unknown", {"image": {"type": "image"}}
    size = h["size"]
    bits = "16-bit" if h["mode"] in ("I;16", "I;16B", "I;16L", "I", "RGB;16", "RGBA;16") else "8-bit"
    rot = ", EXIF-rotated" if h.get("rotated") else ""
    what = f"reads {rel} ({h['format']}, {_wh(size)}, {h['mode']} {bits}{rot}) at full bit depth"
    return what, _wh(size), {"image": {"type": "image", "size": size}}


@describer("LoadMask")
def _d_load_mask(node: Node, inputs: dict[str, Any], wf: Workflow) -> tuple[str, str, dict[str, Info]]:
    size = _in(inputs, "image").get("size")
    what = f"reads the mask {_rel(node.params['path'], wf)} (white = edit), checked to be {_wh(size)}"
    return what, _wh(size), {"mask": {"type": "mask", "size": size}}


@describer("MaskFromShape")
def _d_shape(node: Node, inputs: dict[str, Any], wf: Workflow) -> tuple[str, str, dict[str, Info]]:
    size = _in(inputs, "image").get("size")
    p = node.params
    shape = "an ellipse inscribed in the box" if p["shape"] == "ellipse" else "a rectangle"
    if size:
        x0, y0, x1, y1 = shape_box_px(p["box"], p["units"], size)
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(size[0], x1), min(size[1], y1)
        box: Box = (x0, y0, x1, y1)
        what = f"draws {shape} x {x0}..{x1}, y {y0}..{y1} ({x1 - x0}x{y1 - y0} px)"
    else:
        box = None
        what = f"draws {shape} {list(p['box'])} ({p['units']})"
    return what, _wh(size), {"mask": {"type": "mask", "size": size, "bbox": box}}


@describer("MaskOps")
def _d_maskops(node: Node, inputs: dict[str, Any], wf: Workflow) -> tuple[str, str, dict[str, Info]]:
    m = _in(inputs, "mask")
    size, box = m.get("size"), m.get("bbox")
    op, px = node.params["op"], node.params["px"]
    if op == "grow":
        box, what = _grow_box(box, px, size), f"grows the mask by {px:g} px"
    elif op == "shrink":
        box, what = box, f"shrinks the mask by {px:g} px"
    elif op == "feather":
        box, what = _grow_box(box, px, size), f"feathers the mask over {px:g} px (soft weight)"
    elif op == "invert":
        box, what = ((0, 0, *size) if size else None), "inverts the mask (edit everything else)"
    else:
        other = _in(inputs, "other").get("bbox")
        box = None if box is None or other is None else (
            min(box[0], other[0]), min(box[1], other[1]), max(box[2], other[2]), max(box[3], other[3]))
        what = "unites the two masks"
    otype = node.output_types.get("mask", "mask")
    return what, _wh(size), {"mask": {"type": otype, "size": size, "bbox": box}}


def _tiles(w: int, h: int, tile: int, overlap: int) -> int:
    from crispedit.geometry import pixel_tiles

    return len(pixel_tiles(h, w, tile, overlap))


@describer("Inpaint")
def _d_inpaint(node: Node, inputs: dict[str, Any], wf: Workflow) -> tuple[str, str, dict[str, Info]]:
    img, m = _in(inputs, "image"), _in(inputs, "mask")
    size, box = img.get("size"), m.get("bbox")
    p = node.params
    engine = p["engine"]
    prompt = f" with the prompt \"{p['prompt']}\"" if p.get("prompt") and engine != "classical" else ""
    ws = ENGINE_WORKING_SIZE.get(engine, "unknown")
    min_margin = int((p.get("options") or {}).get("min_margin") or 64)
    region = _plan(size, box, min_margin)
    out: dict[str, Info] = {"image": {"type": "image", "size": size}, "result": {"type": "result"}}
    if region is None:
        where = "on a crop around each cluster of the mask (context margin grows with the region)"
        works = "crop around the mask"
    else:
        cw, ch = region.size
        where = (f"on a {cw}x{ch} px crop around the mask (context margin, snapped to multiples of 8), "
                 f"blend band {region.band} px")
        works = f"{cw}x{ch} crop"
    if engine == "classical":
        what = (f"removes what the mask covers: OpenCV Telea fill from the border {where}, at native resolution "
                "(holes over 192 px are filled on a small copy first), then local tone and grain matching from a "
                "ring around the mask and a multi-band blend; pixels beyond the band stay bit-identical")
    elif isinstance(ws, int):
        detail = p.get("detail") or "native"
        if region is not None and max(region.size) > 1.25 * ws:
            cw, ch = region.size
            s = ws / max(cw, ch)
            sw, sh = max(8, int(round(cw * s / 8)) * 8), max(8, int(round(ch * s / 8)) * 8)
            works = f"{sw}x{sh} (compose), {cw}x{ch} (native refine)"
            refine = (f", upscales it and refines at native {cw}x{ch} in {_tiles(cw, ch, ws, max(16, ws // 8))} "
                      f"overlapping {ws}x{ws} tiles at low strength ({_or_default(p.get('refine_strength'))})"
                      if detail == "native" else ", upscales it (detail: fast, no native refinement)")
            what = (f"regenerates the masked area{prompt} with {engine} {where}: composes the crop at {sw}x{sh} "
                    f"px (the model's working size {ws}){refine}; then tone and grain matching and a multi-band "
                    "blend; pixels beyond the band stay bit-identical")
        else:
            what = (f"regenerates the masked area{prompt} with {engine} {where}, at about the model's working "
                    f"size {ws}; then tone and grain matching and a multi-band blend; pixels beyond the band stay "
                    "bit-identical")
    else:
        what = f"regenerates the masked area{prompt} with the registered engine '{engine}' {where}"
    return what, works, out


@describer("Img2Img")
def _d_img2img(node: Node, inputs: dict[str, Any], wf: Workflow) -> tuple[str, str, dict[str, Info]]:
    size = _in(inputs, "image").get("size")
    p = node.params
    out: dict[str, Info] = {"image": {"type": "image", "size": size}, "result": {"type": "result"}}
    if size:
        lw, lh = math.ceil(size[0] / 8), math.ceil(size[1] / 8)
        n = _tiles(size[0], size[1], 512, 128)
        what = (f"repaints the whole {_wh(size)} image with {p['engine']} at strength {p['strength']} "
                f"(\"{p['prompt']}\"): the {lw}x{lh} latent is denoised in about {n} overlapping 512x512 px tiles "
                "with Gaussian tile weights, encoded and decoded by a tiled VAE with shared GroupNorm statistics")
        works = f"{_wh(size)} in 512x512 tiles"
    else:
        what, works = f"repaints the whole image with {p['engine']} at strength {p['strength']}", "512x512 tiles"
    return what, works, out


def generate_stages(width: int, height: int, working_size: int = 512) -> list[tuple[int, int]]:
    """Sizes ``crispedit.generate`` works at: the base composition, then upscale stages of at most 2x."""
    try:
        from crispedit.harness import base_size
    except ImportError:  # the same rule: about working_size² pixels, the target's aspect, multiples of 64
        def base_size(width: int, height: int, working_size: int) -> tuple[int, int]:
            scale = min(1.0, working_size / math.sqrt(width * height))
            return max(64, int(round(width * scale / 64)) * 64), max(64, int(round(height * scale / 64)) * 64)

    w, h = max(8, int(round(width / 8)) * 8), max(8, int(round(height / 8)) * 8)
    cur = base_size(w, h, working_size)
    stages = [cur]
    while cur != (w, h):
        f = min(2.0, max(w / cur[0], h / cur[1]))
        nxt = (w, h) if f < 2.0 else (int(round(cur[0] * f / 8)) * 8, int(round(cur[1] * f / 8)) * 8)
        if f <= 1.0 or len(stages) > 16:
            nxt = (w, h)
        stages.append(nxt)
        cur = nxt
    return stages


@describer("Txt2Img")
def _d_txt2img(node: Node, inputs: dict[str, Any], wf: Workflow) -> tuple[str, str, dict[str, Info]]:
    p = node.params
    stages = generate_stages(p["width"], p["height"], ENGINE_WORKING_SIZE.get(p["engine"]) or 512)
    (bw, bh), (w, h) = stages[0], stages[-1]
    hires = _or_default((p.get("options") or {}).get("hires_strength"))
    ups = ", ".join(f"{a}x{b}" for a, b in stages[1:])
    what = (f"generates \"{p['prompt']}\" with {p['engine']}: composes at {bw}x{bh} px (about the model's native "
            f"512x512 area, same aspect), then upscales in steps of at most 2x ({ups}), each refined by img2img "
            f"at strength {hires} in overlapping 512x512 tiles (hires fix; about {_tiles(w, h, 512, 128)} tiles "
            "at the last step)")
    return what, f"{bw}x{bh} → {w}x{h}", {"image": {"type": "image", "size": (w, h)}, "result": {"type": "result"}}


def _region_text(m: Info, size: Size) -> str:
    box = m.get("bbox")
    if box and size:
        return f"the mask's {box[2] - box[0]}x{box[3] - box[1]} px box plus the blend band (rest copied)"
    return "the mask's bounding box plus the blend band (rest copied)"


@describer("Composite")
def _d_composite(node: Node, inputs: dict[str, Any], wf: Workflow) -> tuple[str, str, dict[str, Info]]:
    size = _in(inputs, "original").get("size")
    band = node.params.get("band")
    what = (f"blends the edit into the original with a Laplacian pyramid over a {band or 'max(32, 4% diagonal)'}"
            " px band; beyond it the original's pixels are kept bit for bit")
    return what, _region_text(_in(inputs, "mask"), size), {"image": {"type": "image", "size": size}}


@describer("ToneMatch")
def _d_tone(node: Node, inputs: dict[str, Any], wf: Workflow) -> tuple[str, str, dict[str, Info]]:
    size = _in(inputs, "original").get("size")
    what = "removes the edit's local tone/colour drift measured on a ring of untouched pixels (smooth membrane fit)"
    return what, _region_text(_in(inputs, "mask"), size), {"image": {"type": "image", "size": size}}


@describer("GrainMatch")
def _d_grain(node: Node, inputs: dict[str, Any], wf: Workflow) -> tuple[str, str, dict[str, Info]]:
    size = _in(inputs, "original").get("size")
    what = "adds the photo's own grain inside the mask where the edit is smoother than the ring around it"
    return what, _region_text(_in(inputs, "mask"), size), {"image": {"type": "image", "size": size}}


@describer("QualityCheck")
def _d_quality(node: Node, inputs: dict[str, Any], wf: Workflow) -> tuple[str, str, dict[str, Info]]:
    size = _in(inputs, "original").get("size")
    stop = "stops the run" if node.params["on_fail"] == "stop" else "warns"
    th = node.params.get("thresholds") or {}
    spec = f" with thresholds {th}" if th else " with the default thresholds"
    what = (f"checks the edit at 1:1 — outside identity, seam visibility, detail/noise and colour consistency"
            f"{spec}; {stop} on fail")
    return what, _region_text(_in(inputs, "mask"), size), {"report": {"type": "report"}, "verdict": {"type": "text"}}


@describer("SelectBest")
def _d_select(node: Node, inputs: dict[str, Any], wf: Workflow) -> tuple[str, str, dict[str, Info]]:
    size = _in(inputs, "original").get("size")
    n = len(_link_list(node, "candidates"))
    what = (f"scores {n} candidate edits with the quality gate, rejects those that fail and keeps the best "
            "(SAGI-style); records why each was kept or rejected")
    return what, _region_text(_in(inputs, "mask"), size), {
        "image": {"type": "image", "size": size}, "report": {"type": "report"}, "index": {"type": "number"}}


@describer("SaveImage")
def _d_save(node: Node, inputs: dict[str, Any], wf: Workflow) -> tuple[str, str, dict[str, Info]]:
    size = _in(inputs, "image").get("size")
    path = node.params["path"]
    what = f"writes {_rel(path, wf)} ({Path(path).suffix.lstrip('.').upper() or '?'}, bit depth, ICC and EXIF kept)"
    return what, _wh(size), {"path": {"type": "path", "file": _rel(path, wf)}}


@describer("Report")
def _d_report(node: Node, inputs: dict[str, Any], wf: Workflow) -> tuple[str, str, dict[str, Info]]:
    size = _in(inputs, "original").get("size")
    what = (f"writes the HTML report {_rel(node.params['path'], wf)}: before/after, change heatmap, 1:1 crops at "
            "the worst seam places, metrics, model cards and timings")
    return what, _wh(size), {"path": {"type": "path", "file": _rel(node.params["path"], wf)}}


def _generic(node: Node, inputs: dict[str, Any], wf: Workflow) -> tuple[str, str, dict[str, Info]]:
    size = next((v.get("size") for v in inputs.values() if isinstance(v, dict) and v.get("size")), None)
    outs = {k: {"type": t, "size": size if t in ("image", "mask", "weight") else None}
            for k, t in node.output_types.items()}
    return node.type.purpose.rstrip("."), _wh(size) if size else "-", outs


# ----------------------------------------------------------------------------------------------------------------
# the whole workflow
# ----------------------------------------------------------------------------------------------------------------


def _task(wf: Workflow, infos: dict[str, dict[str, Info]]) -> str:
    types = [wf.nodes[n].type.name for n in wf.order]
    models = [wf.nodes[n] for n in wf.order if wf.nodes[n].type.category == "model"]
    source = next((infos[n]["image"].get("size") for n in wf.order if wf.nodes[n].type.name == "LoadImage"), None)
    parts: list[str] = []
    inpaints = [m for m in models if m.type.name == "Inpaint"]
    if any(m.type.name == "Txt2Img" for m in models):
        t = next(m for m in models if m.type.name == "Txt2Img")
        size = (t.params["width"], t.params["height"])
        parts.append(f"text-to-image generation at {size_class(size)[2:]} ({_wh(size)})")
    if any(m.type.name == "Img2Img" for m in models):
        parts.append(f"text-guided whole-image restyle of {size_class(source)} photo ({_wh(source)})")
    if inpaints:
        guided = any(m.params.get("prompt") and m.params["engine"] != "classical" for m in inpaints)
        removal = all(m.params["engine"] == "classical" or not m.params.get("prompt") for m in inpaints)
        kind = "text-guided inpainting" if guided else ("object removal" if removal else "inpainting")
        parts.append(f"{kind} of {size_class(source)} photo ({_wh(source)})")
    if not parts:
        parts.append("image processing" + (f" of {size_class(source)} photo ({_wh(source)})" if source else ""))
    task = " and ".join(parts)
    extras = []
    if "SelectBest" in types:
        n = max((len(_link_list(wf.nodes[x], "candidates")) for x in wf.order
                 if wf.nodes[x].type.name == "SelectBest"), default=0)
        extras.append(f"{n} candidates and automatic selection of the best (SAGI-style)")
    if "QualityCheck" in types:
        extras.append("a quality check")
    if "Report" in types:
        extras.append("an HTML report")
    return task + (", with " + ", ".join(extras[:-1]) + (" and " if len(extras) > 1 else "") + extras[-1]
                   if extras else "")


def describe_workflow(src: Union[str, Path, dict, Workflow], *, overrides: list[str] = ()) -> dict[str, Any]:  # type: ignore
    """The plain-words description of a workflow as a dict (the JSON form of ``crispedit describe``)."""
    wf = load_workflow(src, overrides=list(overrides))
    infos: dict[str, dict[str, Info]] = {}
    steps = []
    for i, name in enumerate(wf.order, 1):
        node = wf.nodes[name]
        inputs: dict[str, Any] = {}
        for iname, link in node.links.items():
            if isinstance(link, list):
                inputs[iname] = [infos.get(lk.node, {}).get(lk.output, {}) for lk in link]
            elif link is not None:
                inputs[iname] = infos.get(link.node, {}).get(link.output, {})
        fn = _DESCRIBERS.get(node.type.name, _generic)
        try:
            what, works, outs = fn(node, inputs, wf)
        except Exception as exc:  # a description must never break on a corner case
            what, works, outs = node.type.purpose, "-", {k: {"type": t} for k, t in node.output_types.items()}
            what += f" (size unknown: {type(exc).__name__})"
        infos[name] = outs
        links = {k: ([str(x) for x in v] if isinstance(v, list) else str(v)) for k, v in node.links.items()
                 if v not in (None, [])}
        outputs = {k: (_wh(v["size"]) if v.get("size") else v.get("file") or v.get("type")) for k, v in outs.items()}
        cards = [c.id for c in cards_for_node(node.type.name, node.params)]
        steps.append({"step": i, "node": name, "type": node.type.name, "role": node.type.category,
                      "what": what, "works_at": works, "inputs": links, "outputs": outputs, "model_cards": cards,
                      "note": node.note})
    chain = _chain(wf, steps)
    return {
        "workflow": wf.name, "file": str(wf.path) if wf.path else None, "description": wf.description,
        "task": _task(wf, infos), "chain": chain, "steps": steps,
        "model_cards": [c.to_dict() for c in cards_for_workflow(wf)],
    }


def _chain(wf: Workflow, steps: list[dict[str, Any]]) -> dict[str, Any]:
    by_role: dict[str, list[str]] = {"input": [], "model": [], "output": []}
    for s in steps:
        node = wf.nodes[s["node"]]
        if s["role"] == "input":
            by_role["input"].append(f"{s['node']} ({s['works_at']})")
        elif s["role"] == "model":
            if node.type.name == "Txt2Img":
                by_role["input"].append(f"prompt \"{node.params.get('prompt')}\"")
            engine = node.params.get("engine")
            by_role["model"].append(f"{s['node']}: {node.type.name}/{engine} at {s['works_at']}")
        elif s["role"] == "output":
            by_role["output"].append(f"{s['node']}: {s['outputs'].get('path')}")
    text = " → ".join(" + ".join(v) if v else "-" for v in by_role.values())
    return {**by_role, "text": text}


def to_markdown(d: dict[str, Any]) -> str:
    """The markdown form of :func:`describe_workflow`'s dict."""
    lines = [f"# Workflow: {d.get('workflow') or 'unnamed'}", ""]
    if d.get("file"):
        lines += [f"File: `{d['file']}`", ""]
    lines += [f"**Task:** {d['task']}.", ""]
    if d.get("description"):
        lines += [f"> {d['description']}", ""]
    lines += [f"**Chain (input → model → output):** {d['chain']['text']}", "", "## Steps", ""]
    for s in d["steps"]:
        ins = ", ".join(f"{k} ← {v if isinstance(v, str) else ' + '.join(v)}" for k, v in s["inputs"].items())
        outs = ", ".join(f"{k}: {v}" for k, v in s["outputs"].items())
        lines.append(f"{s['step']}. **{s['node']}** ({s['type']}) — {s['what']}.")
        lines.append(f"   - works at: {s['works_at']}" + (f"; inputs: {ins}" if ins else "") + f"; outputs: {outs}")
        if s.get("note"):
            lines.append(f"   - note: {s['note']}")
    lines += ["", "## Model cards", ""]
    if not d["model_cards"]:
        lines += ["(no model in this workflow)", ""]
    for c in d["model_cards"]:
        lines += [f"### {c['name']}", "", f"- **What it does:** {c['what']}", f"- **Kind:** {c['kind']}"]
        if c.get("model"):
            lines.append(f"- **Model:** {c['model']}" + (" (weights needed)" if c.get("weights_needed") else ""))
        lines.append(f"- **Licence:** {c['licence']}")
        for f in c.get("facts", []):
            lines.append(f"- {f}")
        for lim in c.get("limits", []):
            lines.append(f"- limit: {lim}")
        if c.get("references"):
            lines.append("- **References:**")
            for r in c["references"]:
                lines.append(f"  - [{r['title']}]({r['url']})" + (f" — {r['note']}" if r.get("note") else ""))
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def describe(src: Union[str, Path, dict, Workflow], format: str = "markdown", *,
             overrides: list[str] = ()) -> str:  # type: ignore[assignment]
    """``crispedit describe`` as a string: ``format`` is ``markdown`` or ``json``."""
    import json

    d = describe_workflow(src, overrides=overrides)
    if format == "json":
        return json.dumps(d, indent=2, ensure_ascii=False) + "\n"
    if format in ("markdown", "md"):
        return to_markdown(d)
    from crispedit.errors import InputError

    raise InputError(f"unknown format '{format}'", "use --format markdown or --format json")
