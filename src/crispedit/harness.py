"""The high-resolution editing harness: crops, engine calls, native detail, tone, seam, grain, blending.

For every cluster of mask components the harness cuts a crop with context and lets the engine compose the
edit: at native scale when the crop is about the engine's working size, else on a copy reduced to that size,
then climbs back to native scale in 2x stages, each refined in overlapping tiles with ``strength < 1`` (the
"native" detail mode). Each pass's softness and grain (a VAE decode's) and its tone drift are measured on a ring
of untouched pixels and undone (per-band equalisation, local tone membrane); the step left along the boundary is
corrected in the gradient domain; the photo's own grain is matched; the finest octaves a soft decode lost
are synthesised at the level the ring predicts; the band outside the user's mask keeps the
photo's own fine structure; and the result is blended across a band with a Laplacian pyramid. Every pixel
farther than the band from the mask is copied from the input, bit for bit."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
from PIL import Image

from crispedit import compositing
from crispedit import options as options_mod
from crispedit.arrays import copy_where
from crispedit.engines.base import Engine, get_engine, option_names
from crispedit.errors import InputError
from crispedit.geometry import Box, mask_bbox, pixel_tiles
from crispedit.io import ImageData, from_float, load_image, to_float, to_pil
from crispedit.mask import check_mask_size, grow, read_mask_weights
from crispedit.membrane import seam_correct
from crispedit.regions import MaskPlan, Region, part_clusters, plan_mask

Progress = Callable[[str, int, int], None]

#: Options the harness itself understands (the fields of :class:`crispedit.options.HarnessOptions`); everything
#: else goes to the engine's constructor.
HARNESS_OPTIONS = options_mod.HARNESS_OPTIONS


@dataclass
class EditResult:
    """What :func:`edit` returns: the edited image (same size and mode as the input) and what happened."""

    image: Image.Image
    array: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)
    source: ImageData | None = None


class _Timer:
    def __init__(self) -> None:
        self.t: dict[str, float] = {}

    def add(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.t[stage] = self.t.get(stage, 0.0) + (now - since)
        return now


def _split_options(engine: Any, options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any],
                                                                  options_mod.HarnessOptions]:
    """Validate the keyword options (before any decode) and split them into harness and engine options."""
    opts, eopts = options_mod.split_options(engine, options, option_names(engine))
    return opts.as_dict(), eopts, opts


def edit(image: Any, mask: Any = None, prompt: str | None = None, engine: str | Engine = "classical",
         seed: int | None = None, **options: Any) -> EditResult:
    """Edit ``image`` where ``mask`` is set and return a full-resolution result.

    Parameters
    ----------
    image : path, PIL image, numpy array or ImageData
    mask : path, PIL image or array; white / nonzero / True = edit. None = whole-image edit.
    prompt : text for engines that use one.
    engine : registered name (``"classical"``, ``"sd15"``) or an object with ``working_size`` and ``inpaint``.
    seed : makes the engine and the grain synthesis repeatable; None draws one, recorded in ``info["seed"]``.
        The seeds of each region's composition, refinement tiles and grain are derived from it with numpy's
        ``SeedSequence`` (keyed by the region's box), so they are independent streams, not ``seed + i``.
    **options : harness options (:class:`crispedit.options.HarnessOptions`); the rest configure the engine (e.g.
        ``model``). Validated before the image is decoded: an unknown name raises ``InputError`` with a
        did-you-mean suggestion. ``strength`` (whole-image edits) is refused together with a mask: a masked
        edit is regenerated at strength 1 and refined at ``refine_strength``.

    Examples
    --------
    >>> import numpy as np, crispedit
    >>> img = np.full((64, 96, 3), 128, np.uint8); m = np.zeros((64, 96), bool); m[20:40, 30:60] = True
    >>> crispedit.edit(img, m, seed=0).image.size
    (96, 64)
    """
    timer = _Timer()
    t0 = time.perf_counter()
    if seed is None:  # draw one and record it: every edit can be repeated
        seed = int(np.random.SeedSequence().generate_state(1, np.uint32)[0])
    hopts, eopts, opts = _split_options(engine, options)
    if mask is not None and opts.strength is not None:
        raise InputError("strength sets a whole-image edit and cannot be combined with a mask",
                         "drop the mask for a whole-image restyle, or drop --strength (a masked edit is "
                         "regenerated and refined at refine_strength)")
    progress: Progress | None = opts.progress
    max_pixels = options_mod.DEFAULT_MAX_PIXELS if opts.max_pixels is None else opts.max_pixels
    data, mask_read = _load_inputs(image, mask, max_pixels)
    t = timer.add("decode", t0) if not isinstance(image, ImageData) else t0
    size = (data.width, data.height)
    m = soft = reading = None
    if mask is not None:
        weights, reading = mask_read if mask_read is not None else read_mask_weights(mask)
        check_mask_size(weights, size)
        m = weights > 0
        soft = weights if reading.kind == "soft" else None
        del weights
    if m is not None and not m.any():
        raise InputError("the mask is empty (no white pixels)", "paint the area to edit in white, or drop --mask for a whole-image edit")
    whole = m is None or bool(m.all())
    eng = get_engine(engine, **eopts)
    t = timer.add("load_engine", t)
    info: dict[str, Any] = {
        "image": {"width": data.width, "height": data.height, "channels": data.channels,
                  "bit_depth": data.bit_depth, "notes": list(data.notes)},
        "engine": getattr(eng, "name", type(eng).__name__),
        "prompt": prompt, "seed": seed,
        "options": {k: v for k, v in {**hopts, **eopts}.items() if k != "progress"},
    }
    if reading is not None:
        info["mask"] = reading.as_dict()
    if whole:
        if m is not None:
            info.setdefault("notes", []).append("the mask covers the whole image: running a whole-image edit")
        out = _whole_image(data, eng, prompt, seed, hopts, info, timer)
        if soft is not None:
            out = _assemble(data.array, _soft_mix(_colour_float(data.array), _colour_float(out), soft), soft <= 0)
    else:
        out = _masked_edit(data, m, soft, eng, prompt, seed, hopts, info, timer, progress)
    info["engine_calls"] = info.get("engine_calls", [])
    info["timings"] = {k: round(v, 4) for k, v in timer.t.items()}
    return EditResult(image=to_pil(data, out), array=out, info=info, source=data)


def _load_inputs(image: Any, mask: Any, max_pixels: int) -> tuple[ImageData, tuple[np.ndarray, Any] | None]:
    """Decode ``image`` and, when ``mask`` is a file, read it at the same time (a second thread: Pillow's decoders
    and NumPy/OpenCV release the GIL, so the two overlap); returns the image and the mask's
    :func:`crispedit.mask.read_mask_weights`, or None when there is no mask file. The results are those of
    reading one after the other, and so is the order of errors: the image's first."""
    if isinstance(image, ImageData):
        return image, None
    if not isinstance(mask, (str, Path)):
        return load_image(image, max_pixels=max_pixels), None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="crispedit-mask") as pool:
        job = pool.submit(read_mask_weights, mask)
        data = load_image(image, max_pixels=max_pixels)  # an error here waits for the job, then propagates
        return data, job.result()


def _whole_image(data: ImageData, eng: Engine, prompt: str | None, seed: int | None, hopts: dict, info: dict,
                 timer: _Timer) -> np.ndarray:
    """A mask covering everything (or none given): a whole-image img2img edit, tiled by the engine."""
    if not hasattr(eng, "img2img"):
        raise InputError(f"the mask covers the whole image, and engine '{info['engine']}' has no whole-image edit",
                         "paint only the area to change, or use --engine sd15 with --strength for a restyle")
    strength = options_mod.DEFAULT_STRENGTH if hopts.get("strength") is None else float(hopts["strength"])
    info["mode"] = "whole-image"
    t = time.perf_counter()
    rgb = _engine_rgb(data.array)
    res = eng.img2img(Image.fromarray(rgb), prompt, strength=strength, seed=seed)
    t = timer.add("engine", t)
    info["engine_calls"] = [{"kind": "img2img", "size": [data.width, data.height], "strength": strength,
                             "seed": seed}]
    f = _to_layout(to_float(np.asarray(res.convert("RGB"))), data)
    out = _assemble(data.array, f, None)
    timer.add("composite", t)
    return out


def _engine_rgb(pixels: np.ndarray) -> np.ndarray:
    """Any layout (gray, gray+alpha, RGB, RGBA; 8/16-bit) to the RGB 8-bit an engine takes."""
    c = pixels.shape[2]
    colour = pixels[..., :3] if c >= 3 else np.repeat(pixels[..., :1], 3, axis=2)
    if colour.dtype == np.uint16:
        colour = ((colour.astype(np.uint32) + 128) // 257).astype(np.uint8)
    return np.ascontiguousarray(colour)


def _colour_float(pixels: np.ndarray) -> np.ndarray:
    """Colour channels as float32 in [0, 1] (alpha left out)."""
    c = pixels.shape[2]
    return to_float(pixels[..., :3] if c >= 3 else pixels[..., :1])


def _to_layout(rgb: np.ndarray, data: ImageData) -> np.ndarray:
    """Float RGB from an engine to the colour channels of the input (gray inputs get luma)."""
    if data.channels >= 3:
        return rgb
    luma = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    return luma[..., None]


def _assemble(original: np.ndarray, colour: np.ndarray, keep: np.ndarray | None) -> np.ndarray:
    """Put float colour back into the input's dtype; alpha and ``keep`` pixels come from ``original``."""
    out = original.copy()
    nc = colour.shape[2]
    new = from_float(colour, original.dtype)
    if keep is None:
        out[..., :nc] = new
    else:
        copy_where(out[..., :nc], new, ~keep)
    return out


def _masked_edit(data: ImageData, m: np.ndarray, soft: np.ndarray | None, eng: Engine, prompt: str | None,
                 seed: int | None, hopts: dict, info: dict, timer: _Timer, progress: Progress | None) -> np.ndarray:
    """Edit region after region, each on the result so far (crops may overlap; each mask pixel is edited by
    exactly one region). ``soft``: the user's weights for a soft mask (their own blend), else None."""
    t = time.perf_counter()
    # nearby parts share a crop (one engine call) up to about the engine's working size; an engine without one
    # (classical) costs the same per pixel in one call or many, so its crops stay close to each part's own
    ws = getattr(eng, "working_size", None)
    plan = plan_mask(m, min_margin=int(hopts.get("min_margin", options_mod.DEFAULT_MIN_MARGIN)), max_crop=int(1.25 * ws) if ws else 0)
    regions = plan.regions
    t = timer.add("plan", t)
    info["mode"] = "masked"
    info["regions"] = [r.as_dict() for r in regions]
    info["engine_calls"] = []
    detail = hopts.get("detail") or getattr(eng, "default_detail", "native")
    if detail not in ("native", "fast"):
        raise InputError(f"unknown detail mode '{detail}'", "use --detail native or --detail fast")
    info["detail"] = detail
    out = data.array.copy()
    for i, region in enumerate(regions):
        if progress:
            progress("region", i, len(regions))
        _edit_region(data, out, plan, soft, region, eng, prompt, seed, detail, hopts, info, timer, progress)
    if progress:
        progress("region", len(regions), len(regions))
    return out


def _call(eng: Engine, rgb: np.ndarray, mask: np.ndarray, prompt: str | None, seed: int | None, strength: float,
          region: tuple[int, int, int, int], info: dict, timer: _Timer) -> np.ndarray:
    """One engine call on an RGB uint8 crop; returns float32 RGB of the same size."""
    t = time.perf_counter()
    res = eng.inpaint(Image.fromarray(rgb), Image.fromarray(mask.astype(np.uint8) * 255), prompt,
                      seed=seed, strength=strength, region=region)
    if res.mode != "RGB":  # (convert copies even when the mode is already RGB)
        res = res.convert("RGB")
    if res.size != (rgb.shape[1], rgb.shape[0]):
        raise RuntimeError(f"engine returned {res.size}, expected {(rgb.shape[1], rgb.shape[0])}")
    dt = time.perf_counter() - t
    timer.t["engine"] = timer.t.get("engine", 0.0) + dt
    info["engine_calls"].append({"kind": "inpaint", "size": [rgb.shape[1], rgb.shape[0]], "strength": strength,
                                 "seed": seed, "region": list(region), "seconds": round(dt, 3)})
    return to_float(np.asarray(res))


def _seed_int(ss: np.random.SeedSequence) -> int:
    """A 32-bit int seed (what engines take) from a SeedSequence."""
    return int(ss.generate_state(1, np.uint32)[0])


def _region_seeds(seed: int | None, box: tuple[int, int, int, int]) -> tuple[int, np.random.SeedSequence, int]:
    """Composition seed, refinement SeedSequence (one child per stage, one grandchild per tile) and grain seed of
    one region: children of ``SeedSequence(seed)`` keyed by the region's box (independent of the region order)."""
    comp, refine, grain = np.random.SeedSequence(seed, spawn_key=tuple(int(v) for v in box)).spawn(3)
    return _seed_int(comp), refine, _seed_int(grain)


def _tile_window(h: int, w: int, ramp: int) -> np.ndarray:
    """Tile weight: 1 in the middle, a raised-cosine (Gaussian-like) ramp over ``ramp`` px at each edge."""
    def ramp1(n: int) -> np.ndarray:
        x = np.ones(n, np.float32)
        r = min(ramp, n // 2)
        if r > 0:
            edge = 0.5 - 0.5 * np.cos(np.pi * (np.arange(r, dtype=np.float32) + 0.5) / r)
            x[:r] = edge
            x[n - r:] = edge[::-1]
        return x
    return np.outer(ramp1(h), ramp1(w)) + 1e-4


def _edit_region(data: ImageData, out: np.ndarray, plan: MaskPlan, user_w: np.ndarray | None, region: Region,
                 eng: Engine, prompt: str | None, seed: int | None, detail: str, hopts: dict, info: dict,
                 timer: _Timer, progress: Progress | None) -> None:
    x0, y0, x1, y1 = region.box
    band = region.band
    crop = out[y0:y1, x0:x1].copy()  # crops may overlap: edit the result so far
    cm = plan.own_mask(region)
    h, w = cm.shape
    t = time.perf_counter()
    comp_seed, refine_ss, grain_seed = _region_seeds(seed, region.box)
    rgb8 = _engine_rgb(crop)
    eg = hopts.get("engine_grow")
    eg = int(eg if eg is not None else max(2, band // 8))
    em = grow(cm, eg)
    ws = eng.working_size
    t = timer.add("composite", t)

    # the content's own fine detail, measured on the last full-scale engine output (see _sharpen_pass); off by
    # default (HarnessOptions.content_probe)
    probe: dict[str, Any] | None = {} if hopts.get("content_probe") else None
    if ws is None:
        gen = _call(eng, rgb8, em, prompt, comp_seed, 1.0, region.box, info, timer)
        gen = _sharpen_pass(gen, rgb8, em, None, band, hopts, info)
    else:
        if max(h, w) <= 1.25 * ws:
            # Small enough to compose at native scale; "native" detail still refines once, at low strength,
            # to restore what the engine's own decoder softened.
            gen = _call(eng, rgb8, em, prompt, comp_seed, 1.0, region.box, info, timer)
            gen = _sharpen_pass(gen, rgb8, em, None, band, hopts, info, probe)
            gen = _undrift(gen, rgb8, em, band, hopts)
            scales = [1.0] if detail == "native" else []
        else:
            # Compose at the working size (a diffusion model composes badly far above it), then climb back to
            # native scale in 2x stages, refining each in tiles: every stage restores the octave of detail that
            # its upscale could not carry, so no band of frequencies is left blurred.
            s = ws / max(h, w)
            sw, sh = max(8, int(round(w * s / 8)) * 8), max(8, int(round(h * s / 8)) * 8)
            small = cv2.resize(rgb8, (sw, sh), interpolation=cv2.INTER_AREA)
            small_m = cv2.resize(em.astype(np.uint8), (sw, sh), interpolation=cv2.INTER_AREA) > 0
            gen = _call(eng, small, small_m, prompt, comp_seed, 1.0, region.box, info, timer)
            gen = _sharpen_pass(gen, small, small_m, None, band * s, hopts, info)
            gen = _undrift(gen, small, small_m, band * s, hopts)
            scales = _stage_scales(max(h, w) / ws) if detail == "native" else [1.0]
        for f in scales:
            t = time.perf_counter()
            fw, fh = (w, h) if f == 1.0 else (int(round(w * f / 8)) * 8, int(round(h * f / 8)) * 8)
            base = rgb8 if f == 1.0 else cv2.resize(rgb8, (fw, fh), interpolation=cv2.INTER_AREA)
            em_f = em if f == 1.0 else cv2.resize(em.astype(np.uint8), (fw, fh), interpolation=cv2.INTER_AREA) > 0
            up = gen if gen.shape[:2] == (fh, fw) else np.clip(
                cv2.resize(gen, (fw, fh), interpolation=cv2.INTER_CUBIC), 0.0, 1.0)
            soft = compositing.blend_weight(em_f, max(4, int(band * f) // 4))[..., None]
            gen = base.astype(np.float32) / 255.0 * (1 - soft) + up * soft
            timer.add("composite", t)
            if detail == "native":
                gen, covered = _refine_tiles(eng, gen, em_f, prompt, refine_ss.spawn(1)[0], region, f, hopts,
                                             info, timer, progress)
                gen = _sharpen_pass(gen, base, em_f, covered, band * f, hopts, info, probe if f == 1.0 else None)
                if f < 1.0:
                    gen = _undrift(gen, base, em_f, band * f, hopts)
    # one pass per cluster of parts: the crop's parts whose boxes (with ring and band) overlap, not their union
    for cbox in part_clusters(region, eg + 2 * band + 8):
        em_c, cm_c = _restrict(em, cbox), _restrict(cm, cbox)
        if em_c.any():
            _finish_region(data, out, plan, user_w, region, crop, gen, em_c, cm_c, band, grain_seed, hopts, timer,
                           *((probe.get("content"), probe.get("deep")) if probe else (None, None)))


def _restrict(mask: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    out = np.zeros_like(mask)
    out[box[1]:box[3], box[0]:box[2]] = mask[box[1]:box[3], box[0]:box[2]]
    return out


def _finish_region(data: ImageData, out: np.ndarray, plan: MaskPlan, user_w: np.ndarray | None, region: Region,
                   crop: np.ndarray, gen: np.ndarray, em: np.ndarray, cm: np.ndarray, band: int, seed: int | None,
                   hopts: dict, timer: _Timer, content: np.ndarray | None = None,
                   deep: np.ndarray | None = None) -> None:
    """Tone, seam, grain and blend of one cluster of a region's parts (``em``/``cm``: its engine / own mask;
    ``seed``: the region's grain seed; ``content``: the content's fine detail relative to the photo's, per band
    of :data:`compositing.CONTENT_SIGMAS`, from the last full-scale engine output, or None; ``deep``: bands
    the engine's grain drowned, which the synthesis may take far down). The ratios, not the absolute levels
    :func:`compositing.detail_content` also predicts: those are read on whole 32 px squares of the ring and
    the mask, a second sample that missed the painting photo's level by 1.3-1.7x in bench/zoom.py."""
    x0, y0 = region.box[:2]
    t = time.perf_counter()
    # Everything after the engine works on the box that holds the engine mask, its ring and the blend band.
    px0, py0, px1, py1 = _pad_box(em, 2 * band + 8)
    sub = (slice(py0, py1), slice(px0, px1))
    gen = _to_layout(gen[sub], data)
    orig = _colour_float(crop[sub])
    em_p, cm_p = em[sub], cm[sub]
    dist = cv2.distanceTransform((~em_p).astype(np.uint8), cv2.DIST_L2, 5)
    ring = (dist > 2) & (dist <= 2 * band)
    target = dist <= band
    if hopts.get("tone", True) and ring.any():
        gen = compositing.tone_match(gen, orig, ring, target, scale=float(band))
    if hopts.get("seam", True):
        gen = seam_correct(gen, orig, em_p, rim=max(4, band // 4), sigma=max(4.0, band / 4))
    # with the content's measured level, the detail steps read the photo on the ring it was measured against
    dring = ring if content is None else ring & (dist > max(8, band // 4 + 4))
    if hopts.get("sharpness", True) and dring.any():
        # never much noisier than the photo around, given the content's own level (cap bands 0.7 / 1.4 px lie
        # between the content bands 0.5 / 1 / 2 px); the content's level only ever raises the cap (a detailed
        # part of the photo keeps its detail), taking a band down below the ring's is the synthesis' call
        cap = None if content is None else np.fmax(1.0, np.sqrt(content[:2] * content[1:3]))
        gen = compositing.cap_detail(gen, orig, em_p, dring, limit=1.15, content=cap)
    if hopts.get("grain", True) and ring.any():
        gen = compositing.match_grain(gen, orig, em_p, ring, seed=seed)
    if hopts.get("sharpness", True) and dring.any():
        # the finest octaves a soft decode lost below the quantisation: made anew at the photo's level
        quantum = 1.0 / float(np.iinfo(crop.dtype).max) if crop.dtype.kind == "u" else 0.0
        gen = compositing.synthesise_detail(gen, orig, em_p, dring, quantum=quantum, content=content, deep=deep)
    if hopts.get("sharpness", True):
        # the blend band keeps the photo's own fine structure: an edge crossing the contour stays as sharp as it was
        gen = compositing.transfer_detail(gen, orig, cm_p, width=1.0, sigma=6.0)
    box_p = (x0 + px0, y0 + py0, x0 + px1, y0 + py1)
    blended, keep = _blend(orig, gen, plan, region, box_p,
                           None if user_w is None else user_w[y0 + py0:y0 + py1, x0 + px0:x0 + px1])
    out[y0 + py0:y0 + py1, x0 + px0:x0 + px1] = _assemble(crop[sub], blended, keep)
    timer.add("composite", t)


def _soft_mix(orig: np.ndarray, gen: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """The user's own blend of a soft mask: ``orig + w (gen - orig)`` per pixel."""
    return orig + weight[..., None] * (gen - orig)


def _blend(orig: np.ndarray, gen: np.ndarray, plan: MaskPlan, region: Region, box: tuple[int, int, int, int],
           soft: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Blend ``gen`` into ``orig`` over ``box`` (image px); returns the blend and the pixels to keep.

    A soft mask is the user's blend (:func:`_soft_mix`; nothing changes where it is 0). A binary mask is blended
    per band class: each class of parts with :func:`compositing.multiband_blend` over its own band, widest
    first, so every changed pixel lies within the band of its own component.
    """
    if soft is not None:
        own = plan.own_mask(region, box)
        w = np.where(own, soft, np.float32(0.0))
        return _soft_mix(orig, gen, w), w <= 0.0
    blended = orig
    keep = np.ones(orig.shape[:2], bool)
    for b, cls in plan.band_masks(region, box):
        if not cls.any():
            continue
        d = compositing.distance_from(cls)
        weight = compositing.blend_weight(cls, b, distance=d)
        blended = compositing.multiband_blend(blended, gen, weight, band=b, distance=d)
        keep &= weight <= 0.0
    return blended, keep


def _pad_box(mask: np.ndarray, pad: int) -> Box:
    """:func:`crispedit.geometry.mask_bbox` of a mask known to be non-empty."""
    box = mask_bbox(mask, pad)
    assert box is not None, "empty engine mask"
    return box


def _sharpen_pass(gen: np.ndarray, base8: np.ndarray, em: np.ndarray, valid: np.ndarray | None, band: float,
                  hopts: dict, info: dict, probe: dict | None = None) -> np.ndarray:
    """Undo one engine pass's softness (and grain) before the next pass or the blend builds on it.

    The engine's transfer per band is measured on the ring around ``em`` where ``gen`` is the engine's rendering
    of ``base8`` (``valid``: pixels of this pass's output; None = all), clear of its mask's soft edge, and
    undone inside (:func:`crispedit.compositing.match_sharpness`). The fit goes to ``info["sharpness"]``.
    ``gen`` is corrected in place (and returned). With ``probe`` (a full-scale pass), the content's fine detail
    relative to the photo's is measured on the engine's output as it came (one linear decode on both sides of
    the mask: :func:`crispedit.compositing.detail_content`), on the ring beyond the stage blend's soft edge
    (band / 4), and stored in ``probe`` (``content``; ``deep``: the bands its own grain drowned).
    """
    if not hopts.get("sharpness", True) or not em.any():
        return gen
    b = max(4, int(band))
    # everything happens within 2 b of the mask (plus the band filters' reach): work on that box, not the crop;
    # the chamfer distance and the filters see the same pixels there, so the result is the same
    x0, y0, x1, y1 = _pad_box(em, 2 * b + compositing._filter_pad(compositing.SHARPNESS_SIGMAS) + 2)
    sub = (slice(y0, y1), slice(x0, x1))
    em_s, gen_s = em[sub], gen[sub]
    dist = cv2.distanceTransform((~em_s).astype(np.uint8), cv2.DIST_L2, 5)
    near = dist <= 2 * b  # what later passes and the blend use of this pass
    ring = near & (dist > 8)
    if valid is not None:
        ring &= valid[sub]
    orig = to_float(base8[sub])
    if probe is not None:
        measured = compositing.detail_content(gen_s, orig, em_s, ring & (dist > b // 4 + 4))
        probe["content"] = measured["content"]
        probe["deep"] = measured["noise"] > measured["signal"]  # bands the engine's own grain drowned
    fit = compositing.sharpness_gains(gen_s, orig, ring)
    info.setdefault("sharpness", []).append(
        {"size": [int(gen.shape[1]), int(gen.shape[0])], "transfer": [round(float(v), 3) for v in fit["transfer"]],
         "noise": [float(f"{v:.3g}") for v in fit["noise"]], "ring_px": int(np.count_nonzero(ring))})
    weight = (near if valid is None else near & valid[sub]).astype(np.float32)
    new = compositing.match_sharpness(gen_s, orig, ring, weight, transfer=fit["transfer"], noise=fit["noise"],
                                      grain=fit["grain"])
    gen[sub] = new  # in place: callers hand over their own array
    return gen


def _undrift(gen: np.ndarray, base8: np.ndarray, em: np.ndarray, band: float, hopts: dict) -> np.ndarray:
    """Take one engine pass's tone drift out (measured on the ring around ``em``) before the next pass builds on it."""
    if not hopts.get("tone", True):
        return gen
    b = max(4, int(band))
    ring = grow(em, 2 * b) & ~grow(em, 2)
    if not ring.any():
        return gen
    return compositing.tone_match(gen, to_float(base8), ring, grow(em, b), scale=float(b))


#: Gaussian sigma (px at the stage's scale) below which a refinement tile's output is trusted.
LOCK_SIGMA = 4.0


def _lowpass(img: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(img, (0, 0), sigma, borderType=cv2.BORDER_REFLECT).reshape(img.shape)


def _stage_scales(ratio: float) -> list[float]:
    """Scales (fractions of native) of the refinement stages for a crop ``ratio`` x the working size.

    Stages double in size up to native, the first one at least 1.25x the working size (a stage barely larger
    than the composition adds cost and no detail): ratio 2 -> [1.0]; ratio 3 -> [0.5, 1.0]; 6 -> [0.25, 0.5, 1.0].
    """
    n = max(1, int(np.ceil(np.log2(ratio / 1.25))))
    return [1.0 / 2 ** (n - j) for j in range(1, n + 1)]


def _refine_tiles(eng: Engine, coarse: np.ndarray, em: np.ndarray, prompt: str | None, seeds: np.random.SeedSequence,
                  region: Region, scale: float, hopts: dict, info: dict, timer: _Timer,
                  progress: Progress | None) -> tuple[np.ndarray, np.ndarray]:
    """Refine a composed crop (at ``scale`` x native) in overlapping tiles of the working size.

    Low-strength calls keep the composition and add detail; tiles are blended with raised-cosine weights and
    only tiles that touch the mask are run; tile ``i`` gets the seed of child ``i`` of ``seeds``. Returns the
    refined crop and the bool map of pixels the tiles covered.
    """
    ws = int(eng.working_size)
    h, w = em.shape
    overlap = max(16, ws // 8)
    rs = hopts.get("refine_strength")
    strength = options_mod.DEFAULT_STRENGTH if rs is None else float(rs)
    acc = np.zeros_like(coarse)
    wsum = np.zeros((h, w, 1), np.float32)
    tiles = [tb for tb in pixel_tiles(h, w, ws, overlap) if em[tb.slices].any()]
    coarse8 = from_float(coarse, np.uint8)
    tile_seeds = [_seed_int(ss) for ss in seeds.spawn(len(tiles))]
    x0, y0 = region.box[:2]
    for i, (tx0, ty0, tx1, ty1) in enumerate(tiles):
        if progress:
            progress(f"refine x{scale:g}", i, len(tiles))
        tile_seed = tile_seeds[i]
        rw, rh = region.size
        sx, sy = w / rw, h / rh  # exact per-axis scale of this stage (its size is rounded to multiples of 8)
        full_res = (x0 + int(round(tx0 / sx)), y0 + int(round(ty0 / sy)), x0 + int(round(tx1 / sx)),
                    y0 + int(round(ty1 / sy)))
        res = _call(eng, np.ascontiguousarray(coarse8[ty0:ty1, tx0:tx1]), em[ty0:ty1, tx0:tx1], prompt, tile_seed,
                    strength, full_res, info, timer)
        # a refinement adds detail; its low frequencies must stay those it was handed (this removes each
        # tile's own tone drift, which no ring could measure for tiles deep inside a large mask)
        tile_in = coarse[ty0:ty1, tx0:tx1]
        res = res - _lowpass(res, LOCK_SIGMA) + _lowpass(tile_in, LOCK_SIGMA)
        win = _tile_window(ty1 - ty0, tx1 - tx0, overlap)[..., None]
        acc[ty0:ty1, tx0:tx1] += res * win
        wsum[ty0:ty1, tx0:tx1] += win
    covered = wsum[..., 0] > 0
    gen = coarse.copy()
    gen[covered] = acc[covered] / wsum[covered]
    return gen, covered


#: Largest side `generate` accepts; beyond this even tiled sampling takes hours.
MAX_GENERATE_SIDE = 16384


def snap_size(width: int, height: int, multiple: int = 8) -> tuple[tuple[int, int], str | None]:
    """Round a requested size to multiples of ``multiple``; return the size and a note if it changed."""
    if width <= 0 or height <= 0:
        raise InputError(f"size {width}x{height} is not positive", "use e.g. --size 3840x2160")
    if max(width, height) > MAX_GENERATE_SIDE or width * height > 300_000_000:
        raise InputError(f"size {width}x{height} is too large", f"keep each side <= {MAX_GENERATE_SIDE} px")
    w = max(multiple, int(round(width / multiple)) * multiple)
    h = max(multiple, int(round(height / multiple)) * multiple)
    note = None if (w, h) == (width, height) else f"size {width}x{height} snapped to {w}x{h} (multiples of {multiple})"
    return (w, h), note


def base_size(width: int, height: int, working_size: int) -> tuple[int, int]:
    """The model's native composition size with the target's aspect: about working_size² pixels, multiples of 64."""
    scale = min(1.0, working_size / np.sqrt(width * height))
    return max(64, int(round(width * scale / 64)) * 64), max(64, int(round(height * scale / 64)) * 64)


def generate(prompt: str, width: int, height: int, engine: str | Engine = "sd15", seed: int | None = None,
             **options: Any) -> EditResult:
    """Text-to-image at any size: compose at the model's size, then upscale and refine in ≤2x stages.

    Each stage upscales (Lanczos) and runs a low-strength img2img over the whole image, which the engine tiles
    (``hires_strength``, default :data:`crispedit.options.DEFAULT_STRENGTH`), so 4K and 8K outputs carry detail
    made at native scale.

    ``seed`` (None: one is drawn) seeds the composition; stage ``i``'s seed is child ``i`` of
    ``numpy.random.SeedSequence(seed)`` (independent streams, not ``seed + i``). Both are recorded:
    ``info["seed"]`` and ``info["stage_seeds"]`` (and each engine call's ``seed``).
    Options are validated before any work (unknown names: ``InputError`` with a did-you-mean suggestion).
    """
    timer = _Timer()
    hopts, eopts, opts = _split_options(engine, options)
    hires = opts.strength_or_default("hires_strength")
    if seed is None:  # draw one and record it: every generation can be repeated
        seed = int(np.random.SeedSequence().generate_state(1, np.uint32)[0])
    stage_ss = np.random.SeedSequence(int(seed))
    (w, h), note = snap_size(int(width), int(height))
    eng = get_engine(engine, **eopts)
    if not hasattr(eng, "txt2img") or not hasattr(eng, "img2img"):
        raise InputError(f"engine '{getattr(eng, 'name', engine)}' cannot generate images", "use --engine sd15")
    ws = int(eng.working_size or 512)
    bw, bh = base_size(w, h, ws)
    info: dict[str, Any] = {"mode": "generate", "prompt": prompt, "seed": seed, "stage_seeds": [], "size": [w, h],
                            "notes": [note] if note else [], "engine": getattr(eng, "name", type(eng).__name__),
                            "engine_calls": [], "options": {k: v for k, v in {**hopts, **eopts}.items()
                                                            if k != "progress"}}
    t = time.perf_counter()
    img = eng.txt2img(prompt, width=bw, height=bh, seed=seed)
    info["engine_calls"].append({"kind": "txt2img", "size": [bw, bh], "strength": 1.0, "seed": seed})
    cur_w, cur_h = bw, bh
    while (cur_w, cur_h) != (w, h):
        f = min(2.0, max(w / cur_w, h / cur_h))
        nw, nh = (w, h) if f < 2.0 else (int(round(cur_w * f / 8)) * 8, int(round(cur_h * f / 8)) * 8)
        if f <= 1.0:
            nw, nh = w, h
        img = img.resize((nw, nh), Image.LANCZOS)
        stage_seed = _seed_int(stage_ss.spawn(1)[0])  # child i of SeedSequence(seed): spawn counts its children
        img = eng.img2img(img, prompt, strength=hires, seed=stage_seed)
        info["stage_seeds"].append(stage_seed)
        info["engine_calls"].append({"kind": "img2img", "size": [nw, nh], "strength": hires, "seed": stage_seed})
        cur_w, cur_h = nw, nh
    timer.add("engine", t)
    arr = np.asarray(img.convert("RGB")).copy()
    info["timings"] = {k: round(v, 4) for k, v in timer.t.items()}
    data = ImageData(array=arr, icc_profile=None, exif=None, format=None, source=None, notes=[], dpi=None)
    return EditResult(image=img.convert("RGB"), array=arr, info=info, source=data)
