"""Typed, frozen options, validated once at entry (before any image is decoded).

The CLI, the built-in workflows, the workflow nodes and the library (:func:`crispedit.edit`,
:func:`crispedit.generate`) all validate through these pydantic models, so a bad or misspelt option is one
:class:`~crispedit.errors.InputError` line (with a did-you-mean suggestion) and never a raw ``TypeError`` from an
engine's constructor or a refusal after a 4K decode.

Three strengths, one per pass, all defaulting to :data:`DEFAULT_STRENGTH`:

- ``strength``: the whole-image edit (img2img over the whole picture; no mask). With a mask it is refused
  (the masked area is always regenerated at strength 1): use ``refine_strength`` for the refinement instead.
- ``refine_strength``: the native-scale refinement tiles of a masked edit (``detail="native"``).
- ``hires_strength``: each upscale stage of :func:`crispedit.generate` (hires fix).

An explicit ``0.0`` is kept (defaults are applied with ``is None``, never with ``or``).
"""

from __future__ import annotations

import difflib
from typing import Any, Callable, Literal, Optional, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from crispedit.errors import InputError

#: The default of every img2img-style strength (whole-image edit, native refinement, hires stage): low enough
#: to keep the composition, high enough to add detail at the pass's scale.
DEFAULT_STRENGTH = 0.35

#: Decompression-bomb limit for inputs (pixels).
DEFAULT_MAX_PIXELS = 300_000_000

#: Default minimum context margin around a masked region (px).
DEFAULT_MIN_MARGIN = 64

#: SD 1.5 samplers (diffusers schedulers): DPM++ 2M Karras (the default), DDIM, Euler ancestral, UniPC.
SCHEDULERS = ("dpmpp_2m_karras", "ddim", "euler_a", "unipc")
#: SD 1.5 sampling defaults: denoising steps, classifier-free guidance scale, scheduler.
DEFAULT_STEPS = 25
DEFAULT_GUIDANCE = 7.5
DEFAULT_SCHEDULER = SCHEDULERS[0]

#: Methods of the classical engine (:mod:`crispedit.engines.classical`): exemplar fills, then diffusion fills.
CLASSICAL_METHODS = ("patchmatch", "shiftmap", "fsr_fast", "fsr_best", "telea", "ns")

Strength = Optional[float]

_FIXES = {
    "strength": "use a value in [0, 1] such as 0.35",
    "refine_strength": "use a value in [0, 1] such as 0.35",
    "hires_strength": "use a value in [0, 1] such as 0.35",
    "detail": "use --detail native or --detail fast",
    "tile": "use e.g. --tile 64 or 96 (latent px, a multiple of 8, x8 = image px)",
    "tile_overlap": "use e.g. --tile-overlap 16 (latent px, at most half the tile)",
    "vae_tile": "use e.g. vae_tile=64 (latent px, a multiple of 8)",
    "steps": "use e.g. --steps 25",
    "guidance": "use e.g. --guidance 7.5",
    "scheduler": f"choose one of: {', '.join(SCHEDULERS)}",
    "tile_batch": "use e.g. tile_batch=4",
    "vae_cache": "use e.g. vae_cache=512 (MiB)",
    "untiled_max": "use e.g. untiled_max=640 (px)",
    "method": f"choose one of: {', '.join(CLASSICAL_METHODS)}",
    "max_masked_fraction": "use e.g. 0.8",
}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    def as_dict(self) -> dict[str, Any]:
        """The options that were set (``None`` left out), as plain keyword arguments."""
        return {k: getattr(self, k) for k in type(self).model_fields if getattr(self, k) is not None}


class HarnessOptions(_Frozen):
    """Options of the editing harness (:func:`crispedit.edit`) and of :func:`crispedit.generate`.

    Every field defaults to ``None`` = the harness's default (see the module docstring for the strengths).
    """

    strength: Strength = Field(None, ge=0.0, le=1.0, description="whole-image edit strength (no mask)")
    refine_strength: Strength = Field(None, ge=0.0, le=1.0, description="native-scale refinement strength")
    hires_strength: Strength = Field(None, ge=0.0, le=1.0, description="generate: strength per upscale stage")
    detail: Optional[Literal["native", "fast"]] = None
    tone: Optional[bool] = None
    grain: Optional[bool] = None
    seam: Optional[bool] = None
    sharpness: Optional[bool] = None
    content_probe: Optional[bool] = Field(None, description=(
        "detail steps read the engine content's own fine-detail level (compositing.detail_content) instead of "
        "predicting it from the ring; off by default: worse on the zoom benchmark's tuning split"))
    engine_grow: Optional[int] = Field(None, ge=0)
    min_margin: Optional[int] = Field(None, ge=0)
    max_pixels: Optional[int] = Field(None, gt=0)
    progress: Optional[Callable[[str, int, int], None]] = None

    def strength_or_default(self, name: str) -> float:
        """``strength``, ``refine_strength`` or ``hires_strength``, with :data:`DEFAULT_STRENGTH` when unset."""
        v = getattr(self, name)
        return DEFAULT_STRENGTH if v is None else float(v)


#: The harness's option names (everything else given to :func:`crispedit.edit` configures the engine).
HARNESS_OPTIONS = frozenset(HarnessOptions.model_fields)


class EngineOptions(_Frozen):
    """Base of every engine's constructor options: frozen, unknown names refused (build them with :func:`build`
    for one-line errors with a did-you-mean suggestion)."""


class SD15Options(EngineOptions):
    """Constructor options of the SD 1.5 engine (:class:`crispedit.engines.sd15.SD15Engine`), checked without
    loading a model (or importing torch). The engine validates its keywords through this model only.

    ``None`` = the default: :data:`DEFAULT_STEPS`, :data:`DEFAULT_GUIDANCE`, :data:`DEFAULT_SCHEDULER`; the
    device-dependent tile defaults (``sd15.TILE_DEFAULTS`` per CPU/GPU) are filled in by the engine, which
    checks ``tile_overlap`` against the tile in effect again. ``tile`` and ``vae_tile`` are latent px,
    multiples of 8; ``tile_overlap`` at most half the tile.
    """

    model: Optional[Any] = None  # HF id, folder or file (str or path)
    steps: Optional[int] = Field(None, ge=1, le=1000)
    guidance: Optional[float] = Field(None, ge=0.0, le=50.0)
    scheduler: Optional[str] = None
    negative_prompt: Optional[str] = None
    device: Optional[Any] = None
    dtype: Optional[Any] = None
    allow_pickle: Optional[bool] = None
    allow_download: Optional[bool] = None
    progress: Optional[Callable[[str, int, int], None]] = None
    config: Optional[str] = None
    tile: Optional[int] = Field(None, ge=16, le=512)
    tile_overlap: Optional[int] = Field(None, ge=0)
    tile_batch: Optional[int] = Field(None, ge=1, le=256)
    vae_tile: Optional[int] = Field(None, ge=16, le=1024)
    vae_cache: Optional[float] = Field(None, ge=0.0)
    untiled_max: Optional[int] = Field(None, ge=0, le=1 << 20)

    @field_validator("scheduler")
    @classmethod
    def _scheduler(cls, v: Optional[str]) -> Optional[str]:
        if v is None:
            return v
        name = str(v).strip().lower().replace("-", "_").replace(" ", "_").replace("+", "p")
        if name not in SCHEDULERS:
            raise ValueError(f"unknown scheduler '{v}'")
        return name

    @field_validator("tile", "vae_tile")
    @classmethod
    def _multiple_of_8(cls, v: Optional[int], info: Any) -> Optional[int]:
        if v is not None and v % 8:
            raise ValueError(f"{info.field_name.replace('_', ' ')} {v} is not a multiple of 8 (latent px)")
        return v

    @model_validator(mode="after")
    def _overlap(self) -> SD15Options:
        if self.tile is not None and self.tile_overlap is not None and self.tile_overlap > self.tile // 2:
            raise ValueError(f"tile overlap {self.tile_overlap} is more than half the tile ({self.tile})")
        return self


class ClassicalOptions(EngineOptions):
    """Constructor options of the classical engine (:class:`crispedit.engines.classical.ClassicalEngine`).

    The defaults live here (one per option); the engine's docstring says what each does. Validated once, with
    a did-you-mean error for a misspelt name (:func:`build`).
    """

    method: str = CLASSICAL_METHODS[0]
    patch_size: int = Field(3, ge=1)
    native_pixels: int = Field(2_000_000, ge=1)
    context: float = Field(0.25, ge=0.0)
    min_context: int = Field(48, ge=0)
    thin_width: float = Field(6.0, ge=0.0)
    radius: int = Field(5, ge=1)
    max_masked_fraction: float = Field(0.8, gt=0.0, le=1.0)
    max_hole_pixels: int = Field(16_000_000, ge=1)
    coarse_pixels: int = Field(600_000, ge=1)
    texture: Literal["grain", "patch"] = "grain"
    texture_sigma: float = Field(0.6, ge=0.0)
    native_above: float = Field(0.7, ge=0.0)
    tone_lock: float = Field(0.05, ge=0.0)
    band_gain: float = Field(3.0, ge=1.0)
    mid_gain: float = Field(1.0, ge=1.0)
    tone_tolerance: float = Field(8.0, ge=0.0)
    direction_guide: float = Field(0.3, ge=0.0)
    direction_consensus: float = Field(0.55, gt=0.0, le=1.0)
    direction_layering: float = Field(4.0, gt=0.0)

    @field_validator("method", mode="before")
    @classmethod
    def _method(cls, v: Any) -> Any:  # a validator, not a Literal: the error names the method and the choices
        if v not in CLASSICAL_METHODS:
            raise ValueError(f"unknown classical method '{v}'")
        return v


#: Options model per built-in engine name: :func:`split_options` and the engines validate through these.
ENGINE_OPTIONS: dict[str, type[EngineOptions]] = {"sd15": SD15Options, "classical": ClassicalOptions}

M = TypeVar("M", bound=_Frozen)


def _bounds(model: type[BaseModel], name: str) -> tuple[Any, Any, bool]:
    """``(lower, upper, lower_open)`` bounds of a numeric field (None where unbounded)."""
    lo = hi = None
    lo_open = False
    info = model.model_fields.get(name)
    for m in () if info is None else info.metadata:
        if getattr(m, "ge", None) is not None:
            lo = m.ge
        if getattr(m, "gt", None) is not None:
            lo, lo_open = m.gt, True
        if getattr(m, "le", None) is not None:
            hi = m.le
    return lo, hi, lo_open


def _one_line(exc: ValidationError, model: type[BaseModel] | None = None) -> InputError:
    e = exc.errors()[0]
    name = ".".join(str(p) for p in e.get("loc", ())) or "tile_overlap"
    msg = str(e.get("msg", "is invalid"))
    kind = str(e.get("type", ""))
    value = e.get("input")
    lo, hi, lo_open = (None, None, False) if model is None else _bounds(model, name)
    if msg.startswith("Value error, "):
        problem = msg[len("Value error, "):]
    elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal") and None not in (lo, hi):
        problem = f"{name} {value!r} is outside {'(' if lo_open else ''}{lo}..{hi}{']' if lo_open else ''}"
    elif kind.startswith("int_"):
        problem = f"{name} must be a whole number, got {value!r}"
    elif kind.startswith("float_"):
        problem = f"{name} must be a number, got {value!r}"
    else:
        problem = f"{name} {value!r}: {msg.lower()}"
    return InputError(problem, _FIXES.get(name, "see `crispedit edit --help`"))


def unknown_option(name: str, known: Any, what: str = "option") -> InputError:
    """The one-line error for an unknown option name, with a did-you-mean suggestion (difflib)."""
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    fix = f"did you mean '{close[0]}'?" if close else f"known {what}s: {', '.join(sorted(known))}"
    return InputError(f"unknown {what} '{name}'", fix)


def build(model: type[M], values: dict[str, Any], what: str = "option") -> M:
    """Validate ``values`` into ``model``; unknown names and bad values raise a one-line ``InputError``."""
    for k in values:
        if k not in model.model_fields:
            raise unknown_option(k, model.model_fields, what)
    try:
        return model(**values)
    except ValidationError as exc:
        raise _one_line(exc, model) from None


def split_options(engine: Any, options: dict[str, Any],
                  names: Optional[frozenset[str]] = None) -> tuple[HarnessOptions, dict[str, Any]]:
    """Split ``crispedit.edit``/``generate`` keyword options into validated harness options and engine options.

    ``names``: the option names the engine accepts (:func:`crispedit.engines.base.option_names`, which also
    answers for engines registered by others); by default the fields of the built-in engine's model
    (:data:`ENGINE_OPTIONS`). For an engine object (already built, it takes no options) or ``None``, a name no
    engine model knows is refused, with a suggestion from all of them. This module imports no engine.

    Raises
    ------
    InputError
        An option no part knows (with a did-you-mean suggestion), or a value out of range.
    """
    harness = {k: v for k, v in options.items() if k in HARNESS_OPTIONS}
    rest = {k: v for k, v in options.items() if k not in HARNESS_OPTIONS}
    if names is None and isinstance(engine, str) and engine in ENGINE_OPTIONS:
        names = frozenset(ENGINE_OPTIONS[engine].model_fields)
    if names is None and not isinstance(engine, str):  # engine object: options it could mean, for a suggestion
        names = frozenset().union(*(m.model_fields for m in ENGINE_OPTIONS.values()))
    if names is not None:
        for k in rest:
            if k not in names:
                raise unknown_option(k, HARNESS_OPTIONS | names)
    if isinstance(engine, str) and engine in ENGINE_OPTIONS:
        build(ENGINE_OPTIONS[engine], {k: v for k, v in rest.items() if v is not None})
    return build(HarnessOptions, harness), {k: v for k, v in rest.items() if v is not None}


def check_sd15(**values: Any) -> SD15Options:
    """Validate SD 1.5 engine options (``None`` = default) without loading anything; see :class:`SD15Options`."""
    return build(SD15Options, {k: v for k, v in values.items() if v is not None}, "SD 1.5 option")


def check_classical(**values: Any) -> ClassicalOptions:
    """Validate classical engine options (``None`` = default); see :class:`ClassicalOptions`."""
    return build(ClassicalOptions, {k: v for k, v in values.items() if v is not None}, "classical option")


def spawn_seeds(seed: Optional[int], n: int) -> list[int]:
    """``n`` independent 32-bit seeds: the first word of each child of ``numpy.random.SeedSequence(seed)``.

    Used per candidate (``--candidates``): unlike ``seed + i``, no candidate's seed equals another's or any seed
    derived inside one edit. ``seed=None`` uses 0 (a workflow with candidates stays repeatable).
    """
    import numpy as np  # here, not at import: the options layer loads in every CLI call and workflow (cheap start)

    root = np.random.SeedSequence(0 if seed is None else int(seed))
    return [int(c.generate_state(1, np.uint32)[0]) for c in root.spawn(int(n))]
