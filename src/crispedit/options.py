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
import inspect
from typing import Any, Callable, Literal, Optional, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from crispedit.errors import InputError

#: The default of every img2img-style strength (whole-image edit, native refinement, hires stage): low enough
#: to keep the composition, high enough to add detail at the pass's scale.
DEFAULT_STRENGTH = 0.35

#: Decompression-bomb limit for inputs (pixels).
DEFAULT_MAX_PIXELS = 300_000_000

#: Default minimum context margin around a masked region (px).
DEFAULT_MIN_MARGIN = 64

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
    "scheduler": "choose one of: dpmpp_2m_karras, ddim, euler_a, unipc",
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


class SD15Options(_Frozen):
    """Constructor options of the SD 1.5 engine, checked without loading a model (or importing torch).

    The device-dependent defaults (tile sizes per CPU/GPU) are filled in by the engine; this checks what was
    given: ``tile`` and ``vae_tile`` are latent px, multiples of 8; ``tile_overlap`` at most half the tile.
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
    untiled_max: Optional[int] = Field(None, ge=0)

    @field_validator("scheduler")
    @classmethod
    def _scheduler(cls, v: Optional[str]) -> Optional[str]:
        if v is None:
            return v
        name = str(v).strip().lower().replace("-", "_").replace(" ", "_").replace("+", "p")
        if name not in ("dpmpp_2m_karras", "ddim", "euler_a", "unipc"):
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


M = TypeVar("M", bound=_Frozen)


def _one_line(exc: ValidationError) -> InputError:
    e = exc.errors()[0]
    name = ".".join(str(p) for p in e.get("loc", ())) or "tile_overlap"
    msg = str(e.get("msg", "is invalid"))
    if msg.startswith("Value error, "):
        problem = msg[len("Value error, "):]
    else:
        problem = f"{name} {e.get('input')!r}: {msg.lower()}"
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
        raise _one_line(exc) from None


def engine_option_names(engine: Any) -> Optional[frozenset[str]]:
    """Keyword names the engine ``engine`` (a registered name) accepts, or None when any is accepted.

    ``sd15`` is answered from :class:`SD15Options` (no import of the engine module); other registered engines
    from their factory's signature. Engine objects take no options (they are already built): None.
    """
    if not isinstance(engine, str):
        return None
    if engine == "sd15":
        return frozenset(SD15Options.model_fields)
    from crispedit.engines import base

    try:
        base._load_builtin(engine)
    except Exception:  # noqa: BLE001 - an unknown engine is reported by get_engine itself
        return None
    factory = base._FACTORIES.get(engine)
    if factory is None:
        return None
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))


def split_options(engine: Any, options: dict[str, Any]) -> tuple[HarnessOptions, dict[str, Any]]:
    """Split ``crispedit.edit``/``generate`` keyword options into validated harness options and engine options.

    Raises
    ------
    InputError
        An option no part knows (with a did-you-mean suggestion), or a value out of range.
    """
    harness = {k: v for k, v in options.items() if k in HARNESS_OPTIONS}
    rest = {k: v for k, v in options.items() if k not in HARNESS_OPTIONS}
    names = engine_option_names(engine)
    if names is None and not isinstance(engine, str):  # engine object: options it could mean, for a suggestion
        names = frozenset(SD15Options.model_fields)
        from crispedit.engines.classical import ClassicalEngine

        names |= {p for p in inspect.signature(ClassicalEngine).parameters}
    if names is not None:
        for k in rest:
            if k not in names:
                raise unknown_option(k, HARNESS_OPTIONS | names)
    if engine == "sd15":
        build(SD15Options, {k: v for k, v in rest.items() if v is not None})
    return build(HarnessOptions, harness), {k: v for k, v in rest.items() if v is not None}


def check_sd15(**values: Any) -> SD15Options:
    """Validate SD 1.5 engine options (``None`` = default) without loading anything; see :class:`SD15Options`."""
    return build(SD15Options, {k: v for k, v in values.items() if v is not None}, "SD 1.5 option")


def spawn_seeds(seed: Optional[int], n: int) -> list[int]:
    """``n`` independent 32-bit seeds: the first word of each child of ``numpy.random.SeedSequence(seed)``.

    Used per candidate (``--candidates``): unlike ``seed + i``, no candidate's seed equals another's or any seed
    derived inside one edit. ``seed=None`` uses 0 (a workflow with candidates stays repeatable).
    """
    root = np.random.SeedSequence(0 if seed is None else int(seed))
    return [int(c.generate_state(1, np.uint32)[0]) for c in root.spawn(int(n))]
