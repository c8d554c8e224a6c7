"""The workflow type system: link types, ports, parameters, node types, value validation, the run context, and
conversions of image values.

A node type declares typed **inputs** (links from other nodes' outputs), typed **outputs**, **parameters** with
defaults, and a one-line **purpose** (:class:`NodeType`); the node library itself is
:mod:`crispedit.workflow.library`.

Link types (the values that travel along links):

``image``   an image at full bit depth with its metadata (``crispedit.io.ImageData``)
``mask``    bool array H x W, True = edit
``weight``  float32 array H x W in [0, 1] (a soft mask, e.g. a feathered one)
``result``  dict: what an edit did (regions, engine calls, timings, options) -- ``EditResult.info``
``report``  dict: a quality report (verdict, reasons, metrics) -- ``QualityReport.to_dict()``
``path``    a file the workflow wrote
``text``    a string; ``number`` an int or float

Parameter values are validated by :func:`validate_value`: the simple types (bool, int, float, str, dict,
Literal, Optional) by a small lax check here (fast, no pydantic import), every other annotation by a pydantic
``TypeAdapter``.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional, Union, get_args, get_origin

#: The link types and what travels on them (shown by ``crispedit nodes``).
LINK_TYPES: dict[str, str] = {
    "image": "an image at full bit depth with its ICC profile and EXIF (crispedit.io.ImageData)",
    "mask": "bool array HxW, True = edit",
    "weight": "float32 array HxW in [0, 1]: a soft mask (1 = edit)",
    "result": "dict: what an edit did (regions, engine calls, timings, options)",
    "report": "dict: a quality report (verdict, reasons, metrics)",
    "path": "a file the workflow wrote",
    "text": "a string",
    "number": "an int or a float",
}


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


@dataclass(frozen=True)
class Port:
    """An input or output of a node type.

    ``types``: the link types accepted (inputs) or produced (outputs). ``optional``: an input that may stay
    unlinked (the run function then gets None). ``multiple``: an input that takes a list of links.
    """

    name: str
    types: Union[str, tuple[str, ...]]
    doc: str = ""
    optional: bool = False
    multiple: bool = False

    @property
    def type_set(self) -> tuple[str, ...]:
        return (self.types,) if isinstance(self.types, str) else tuple(self.types)

    @property
    def type_label(self) -> str:
        label = "|".join(self.type_set)
        return f"list of {label}" if self.multiple else label

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type_label, "optional": self.optional, "multiple": self.multiple,
                "doc": self.doc}


@dataclass(frozen=True)
class Param:
    """A parameter: a value written in the workflow file (or given with ``--set node.param=value``).

    ``annotation`` is a Python type (validated and coerced with pydantic). ``kind``: ``"input_file"`` and
    ``"output_file"`` are paths resolved against the workflow file's folder (``--set`` values against the
    current folder); input files are hashed by content for the cache. ``"model"`` is a Hugging Face id or a
    local path (resolved like a path when it looks like one).
    """

    name: str
    annotation: Any
    default: Any = REQUIRED
    doc: str = ""
    kind: Optional[str] = None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def type_label(self) -> str:
        return type_label(self.annotation)

    def adapter(self) -> Any:
        return _adapter(self.annotation)

    def validate(self, value: Any) -> Any:
        """The value coerced to the parameter's type; ValueError with a plain message when it does not fit."""
        return validate_value(self.annotation, value)

    def to_dict(self) -> dict[str, Any]:
        d = {"name": self.name, "type": self.type_label, "required": self.required, "doc": self.doc}
        if not self.required:
            d["default"] = self.default
        if self.kind:
            d["kind"] = self.kind
        return d


RunFn = Callable[..., dict[str, Any]]


@dataclass
class NodeType:
    """A node type: its ports, parameters and the run function ``run(ctx, **inputs, **params) -> outputs``.

    ``library``: the library function it wraps (documentation). ``store``: cache its outputs (False for nodes
    cheaper to recompute than to load, e.g. LoadImage: its cache key is the file's content hash anyway).
    ``side_effect``: writes files; its outputs are ``path`` values whose content is checked on a cache hit.
    ``seeded``: has a ``seed`` parameter; with ``seed: null`` the node is random, so it and everything
    downstream run every time. ``output_types(params)``: output types that depend on a parameter.
    ``check(params) -> [(field, message)]``: extra validation. ``version``: bump to invalidate cached results.
    """

    name: str
    purpose: str
    run: RunFn
    inputs: tuple[Port, ...] = ()
    outputs: tuple[Port, ...] = ()
    params: tuple[Param, ...] = ()
    category: str = "other"
    library: str = ""
    store: bool = True
    side_effect: bool = False
    seeded: bool = False
    version: int = 1
    output_types: Optional[Callable[[dict[str, Any]], dict[str, str]]] = None
    check: Optional[Callable[[dict[str, Any]], list[tuple[str, str]]]] = None

    def __post_init__(self) -> None:
        names = [p.name for p in self.inputs] + [p.name for p in self.params]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"node type {self.name}: names used twice as input/param: {sorted(dup)}")

    def input(self, name: str) -> Optional[Port]:
        return next((p for p in self.inputs if p.name == name), None)

    def output(self, name: str) -> Optional[Port]:
        return next((p for p in self.outputs if p.name == name), None)

    def param(self, name: str) -> Optional[Param]:
        return next((p for p in self.params if p.name == name), None)

    def resolved_output_types(self, params: dict[str, Any]) -> dict[str, str]:
        types = {p.name: p.type_set[0] for p in self.outputs}
        if self.output_types is not None:
            types.update(self.output_types(params))
        return types

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.name, "purpose": self.purpose, "category": self.category, "library": self.library,
            "inputs": [p.to_dict() for p in self.inputs], "outputs": [p.to_dict() for p in self.outputs],
            "params": [p.to_dict() for p in self.params], "cached": self.store, "writes_files": self.side_effect,
        }


def did_you_mean(name: str, choices: Any) -> str:
    """`` — did you mean 'x'?`` for a close match, else ``""``."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    if not close:
        close = [c for c in choices if str(c).lower() == str(name).lower()][:1]
    return f" — did you mean '{close[0]}'?" if close else ""



# ----------------------------------------------------------------------------------------------------------------
# parameter types: labels and pydantic adapters
# ----------------------------------------------------------------------------------------------------------------

_ADAPTERS: dict[str, Any] = {}


def _adapter(annotation: Any) -> Any:
    key = repr(annotation)
    if key not in _ADAPTERS:
        from pydantic import TypeAdapter

        _ADAPTERS[key] = TypeAdapter(annotation)
    return _ADAPTERS[key]


_MISSING = object()
_TRUE = {"true", "yes", "on", "1", "t", "y"}
_FALSE = {"false", "no", "off", "0", "f", "n"}


def _fast_bool(v: Any) -> Any:
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    if isinstance(v, str) and v.strip().lower() in _TRUE | _FALSE:
        return v.strip().lower() in _TRUE
    return _MISSING


def _fast_int(v: Any) -> Any:
    if isinstance(v, bool):
        return _MISSING
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str):
        try:
            return int(v.strip())
        except ValueError:
            return _MISSING
    return _MISSING


def _fast_float(v: Any) -> Any:
    if isinstance(v, bool):
        return _MISSING
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v.strip())
        except ValueError:
            return _MISSING
    return _MISSING


def _fast_instance(kind: type) -> Callable[[Any], Any]:
    return lambda v: v if isinstance(v, kind) else _MISSING


#: The simple types checked without pydantic, matched by identity (``ann is t``).
_SIMPLE: tuple[tuple[Any, Callable[[Any], Any]], ...] = (
    (bool, _fast_bool), (int, _fast_int), (float, _fast_float), (str, _fast_instance(str)),
    (dict, _fast_instance(dict)),
)


def _fast_optional(args: tuple[Any, ...], v: Any) -> Any:
    """``Optional[X]`` / ``Union[X, Y, None]``: None, or the first member type ``v`` fits."""
    if v is None:
        return None
    for a in (a for a in args if a is not type(None)):
        r = _fast(a, v)
        if r is NotImplemented or r is not _MISSING:
            return r
    return _MISSING


def _fast(ann: Any, v: Any) -> Any:
    """Lax validation of the simple types without pydantic (fast on first use); _MISSING = does not fit;
    NotImplemented = not a simple type."""
    if ann is Any:
        return v
    simple = next((fn for kind, fn in _SIMPLE if ann is kind), None)
    if simple is not None:
        return simple(v)
    origin, args = get_origin(ann), get_args(ann)
    if origin is Literal:
        return v if any(v == a and type(v) is type(a) for a in args) else _MISSING
    if origin is Union and type(None) in args:
        return _fast_optional(args, v)
    return NotImplemented


def validate_value(ann: Any, value: Any) -> Any:
    """``value`` coerced to ``ann`` (lax: "3" -> 3 for an integer); ValueError naming what was expected."""
    r = _fast(ann, value)
    if r is NotImplemented:
        from pydantic import ValidationError

        try:
            return _adapter(ann).validate_python(value)
        except ValidationError as exc:
            errs = exc.errors()
            msg = errs[0].get("msg", "invalid") if errs else "invalid"
            raise ValueError(f"expected {type_label(ann)}, got {value!r} ({msg})") from None
    if r is _MISSING:
        raise ValueError(f"expected {type_label(ann)}, got {value!r}")
    return r


def type_label(ann: Any) -> str:
    """A plain-words label of a parameter type: ``integer``, ``number``, ``box | ellipse``, ..."""
    if ann is Any:
        return "any"
    base = {int: "integer", float: "number", str: "text", bool: "true/false", dict: "mapping", list: "list"}
    if ann in base:
        return base[ann]
    origin, args = get_origin(ann), get_args(ann)
    if origin is Literal:
        return " | ".join(str(a) for a in args)
    if origin is Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        rest = [a for a in args if a is not type(None)]
        label = " or ".join(type_label(a) for a in rest)
        return f"{label} (or null)" if len(rest) < len(args) else label
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {type_label(args[0])}"
        return "[" + ", ".join(type_label(a) for a in args) + "]"
    if origin is list:
        return f"list of {type_label(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    return getattr(ann, "__name__", str(ann))


# ----------------------------------------------------------------------------------------------------------------
# the run context
# ----------------------------------------------------------------------------------------------------------------


class NodeContext:
    """What a run function may use besides its inputs and parameters (given by the runner).

    ``progress(stage, done, total)``: report progress inside the node. ``engine(name, **options)``: an engine
    instance shared by every node of the run (a model loads once). ``note(text)``: a remark shown after the run.
    ``input_files``: every file the workflow reads (SaveImage refuses to overwrite them). ``workflow``: the
    workflow being run (for reports). ``records``: timings of the nodes run so far.
    """

    def __init__(self, node: str = "", *, progress: Optional[Callable[[str, int, int], None]] = None,
                 engines: Optional[dict] = None, notes: Optional[list] = None, input_files: tuple = (),
                 workflow: Any = None, records: Optional[list] = None) -> None:
        self.node = node
        self._progress = progress
        self._engines = engines if engines is not None else {}
        self.notes: list[str] = notes if notes is not None else []
        self.input_files = tuple(input_files)
        self.workflow = workflow
        self.records = records if records is not None else []

    def progress(self, stage: str, done: int, total: int) -> None:
        if self._progress is not None:
            self._progress(stage, done, total)

    def note(self, text: str) -> None:
        self.notes.append(f"{self.node}: {text}" if self.node else text)

    def engine(self, name: Any, **options: Any) -> Any:
        if not isinstance(name, str):
            return name
        import json

        key = (name, json.dumps(options, sort_keys=True, default=str))
        if key not in self._engines:
            from crispedit.engines.base import get_engine

            extra = {"progress": self.progress} if name == "sd15" else {}
            self._engines[key] = get_engine(name, **options, **extra)
        return self._engines[key]


# ----------------------------------------------------------------------------------------------------------------
# image values: ImageData with other pixels, arrays <-> floats
# ----------------------------------------------------------------------------------------------------------------


def with_array(data: Any, array: Any) -> Any:
    """A copy of the image ``data`` (ImageData) carrying ``array`` as its pixels; metadata kept."""
    h, w = array.shape[:2]
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        names = {f.name for f in dataclasses.fields(data) if f.init}
        changes: dict[str, Any] = {"array": array} if "array" in names else {}
        for k, v in (("width", w), ("height", h)):
            if k in names:
                changes[k] = v
        if "array" in names:
            return dataclasses.replace(data, **changes)
    new = copy.copy(data)
    new.array = array
    for k, v in (("width", w), ("height", h)):
        if k in getattr(new, "__dict__", {}):
            setattr(new, k, v)
    return new


def image_from_array(array: Any, **meta: Any) -> Any:
    """An ImageData holding ``array`` (HxWxC uint8/uint16), with metadata ``meta`` (icc_profile, exif, ...)."""
    import numpy as np

    from crispedit.io import ImageData

    a = np.ascontiguousarray(array)
    if a.ndim == 2:
        a = a[..., None]
    names = {f.name for f in dataclasses.fields(ImageData) if f.init}
    kw = {k: v for k, v in meta.items() if k in names and k != "array" and v is not None}
    if "source" in kw and isinstance(kw["source"], str):
        from pathlib import Path

        kw["source"] = Path(kw["source"])
    if "dpi" in kw and isinstance(kw["dpi"], list):
        kw["dpi"] = tuple(kw["dpi"])
    return ImageData(array=a, **kw)


def with_meta(data: Any, **meta: Any) -> Any:
    """A copy of ``data`` with metadata fields (icc_profile, exif, format, notes, ...) replaced."""
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        names = {f.name for f in dataclasses.fields(data) if f.init}
        return dataclasses.replace(data, **{k: v for k, v in meta.items() if k in names})
    new = copy.copy(data)
    for k, v in meta.items():
        setattr(new, k, v)
    return new


def image_size(data: Any) -> tuple[int, int]:
    """(width, height) of an image value."""
    return int(data.array.shape[1]), int(data.array.shape[0])


def colour_float(data: Any) -> Any:
    """The colour channels (gray or RGB; alpha left out) as float32 in [0, 1]."""
    from crispedit.io import to_float

    a = data.array
    return to_float(a[..., :3] if a.shape[2] >= 3 else a[..., :1])


def from_float_like(data: Any, f: Any, region: Any = None) -> Any:
    """Float colour back into a copy of ``data`` (its dtype; alpha kept); only ``region`` (bool) changes."""
    from crispedit.io import from_float

    new = from_float(f, data.array.dtype)
    if new.ndim == 2:
        new = new[..., None]
    nc = new.shape[2]
    out = data.array.copy()
    if region is None:
        out[..., :nc] = new
    else:
        out[..., :nc][region] = new[region]
    return with_array(data, out)
