"""The engine protocol and the engine registry.

An engine regenerates the masked part of an RGB crop. The harness (``crispedit.harness``) decides where and at
what size it is called; engines never see the full-resolution image unless it is small.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Protocol, runtime_checkable

from PIL import Image

from crispedit.errors import InputError
from crispedit.options import ENGINE_OPTIONS

Region = tuple[int, int, int, int]


@runtime_checkable
class Engine(Protocol):
    """What the harness needs from an engine.

    ``working_size``: square side in px at which the engine composes (None: any size works).
    ``inpaint``: ``image`` RGB, ``mask`` L (255 = regenerate), returns RGB of the same size. ``strength=1``
    regenerates the masked area from scratch; ``strength<1`` refines the content already there (img2img
    restricted to the mask). ``region=(x0, y0, x1, y1)`` is where the crop lies in the full-resolution input.
    """

    working_size: int | None

    def inpaint(
        self,
        image: Image.Image,
        mask: Image.Image,
        prompt: str | None,
        *,
        seed: int | None = None,
        strength: float = 1.0,
        region: Region | None = None,
    ) -> Image.Image: ...


_FACTORIES: dict[str, Callable[..., Engine]] = {}


def register_engine(name: str, factory: Callable[..., Engine]) -> None:
    """Make ``factory(**options)`` available as ``engine=name``."""
    _FACTORIES[name] = factory


def engine_names() -> list[str]:
    """Names accepted by :func:`get_engine` (built-in and registered)."""
    return sorted(set(_FACTORIES) | set(BUILTIN_ENGINES))


#: Built-in engines and the module that registers each. Imported on first use so that `import crispedit` stays
#: fast (sd15 pulls in torch); an import error is raised, never swallowed: a broken engine module must not turn
#: into "unknown engine".
BUILTIN_ENGINES = {"classical": "crispedit.engines.classical", "sd15": "crispedit.engines.sd15"}


def _load_builtin(name: str | None = None) -> None:
    import importlib

    for engine, module in BUILTIN_ENGINES.items():
        if (name is None or name == engine) and engine not in _FACTORIES:
            importlib.import_module(module)


def get_engine(engine: str | Engine, **options: Any) -> Engine:
    """Return an engine instance from a registered name, or pass an engine object through."""
    if not isinstance(engine, str):
        if not (hasattr(engine, "inpaint") and hasattr(engine, "working_size")):
            raise InputError(
                f"engine object {type(engine).__name__} lacks 'inpaint' or 'working_size'",
                "pass a registered engine name or an object implementing the Engine protocol",
            )
        return engine
    _load_builtin(engine)
    if engine not in _FACTORIES:
        raise InputError(f"unknown engine '{engine}'", f"choose one of: {', '.join(engine_names())}")
    return _FACTORIES[engine](**options)


def option_names(engine: Any) -> frozenset[str] | None:
    """Keyword names the engine ``engine`` (a registered name) accepts, or None when any is accepted.

    Built-in engines are answered from their options model (:data:`crispedit.options.ENGINE_OPTIONS`, no import
    of the engine module: sd15 would pull in torch); other registered engines from their factory's signature.
    Engine objects take no options (they are already built): None.
    """
    if not isinstance(engine, str):
        return None
    if engine in ENGINE_OPTIONS:
        return frozenset(ENGINE_OPTIONS[engine].model_fields)
    factory = _FACTORIES.get(engine)
    if factory is None:
        return None
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))
