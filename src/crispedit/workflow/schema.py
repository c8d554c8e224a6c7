"""Workflow files: the schema, loading, ``--set`` overrides and validation.

A workflow is a YAML (or JSON) file::

    version: 1                      # schema version
    name: 4k-object-removal
    description: Remove two dandelion heads from a 5K photo, no weights needed.
    nodes:
      photo:
        type: LoadImage
        params: {path: photos/seeding-by-clemens-engelhardt.jpg}
      area:
        type: MaskFromShape
        inputs: {image: photo}                 # link: "node" or "node.output"
        params: {shape: ellipse, box: [0.74, 0.66, 0.89, 0.87], units: fraction}
      remove:
        type: Inpaint
        inputs: {image: photo.image, mask: area.mask}
        params: {engine: classical, seed: 1}
      save:
        type: SaveImage
        inputs: {image: remove}
        params: {path: out/removed.png}

Everything is checked before anything runs. Each problem gets one message naming the node and the field, with a
"did you mean" for close names: unknown node types, unknown or misspelled parameters, parameter values of the
wrong type, missing required parameters or inputs, links to nodes or outputs that do not exist (dangling), links
whose types do not match, cycles, and an unsupported schema version.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from crispedit.errors import InputError, ProblemsError
from crispedit.workflow.library import NODE_TYPES
from crispedit.workflow.types import NodeType, Param, Port, did_you_mean

#: The schema version this crispedit reads and writes.
SCHEMA_VERSION = 1
SUPPORTED_VERSIONS = (1,)

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


class WorkflowError(ProblemsError):
    """A workflow file that cannot run; ``messages`` holds one line per problem (node and field named)."""

    fix_text = "fix them (`crispedit nodes TYPE` lists a node's inputs and params)"

    def __init__(self, messages: list[str], origin: str = "workflow"):
        super().__init__(messages, origin)


# ----------------------------------------------------------------------------------------------------------------
# the file's structure (pydantic)
# ----------------------------------------------------------------------------------------------------------------


class NodeSpec(BaseModel):
    """One node as written in the file."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(description="node type (see `crispedit nodes`)")
    params: dict[str, Any] = Field(default_factory=dict, description="parameter values")
    inputs: dict[str, Union[str, list[str]]] = Field(
        default_factory=dict, description="links: input name -> 'node' or 'node.output' (a list for multi inputs)")
    note: Optional[str] = Field(default=None, description="a remark shown by describe")


class WorkflowSpec(BaseModel):
    """A workflow file."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(description="schema version (1)")
    name: Optional[str] = None
    description: Optional[str] = None
    nodes: dict[str, NodeSpec]


_TOP_KEYS = list(WorkflowSpec.model_fields)
_NODE_KEYS = list(NodeSpec.model_fields)


# ----------------------------------------------------------------------------------------------------------------
# the validated workflow
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Link:
    """A link from ``node``'s output ``output`` (``text`` as written)."""

    node: str
    output: str
    text: str

    def __str__(self) -> str:
        return f"{self.node}.{self.output}"


@dataclass
class Node:
    """A validated node: its type, complete coerced parameters (paths resolved) and its links."""

    name: str
    type: NodeType
    params: dict[str, Any]
    links: dict[str, Union[Link, list[Link], None]]
    raw_params: dict[str, Any] = field(default_factory=dict)
    note: Optional[str] = None
    output_types: dict[str, str] = field(default_factory=dict)

    def upstream(self) -> list[str]:
        names: list[str] = []
        for link in self.links.values():
            for lk in (link if isinstance(link, list) else [link] if link is not None else []):
                if lk.node not in names:
                    names.append(lk.node)
        return names


@dataclass
class Workflow:
    """A validated workflow: nodes in dependency order (``order``) and where it came from."""

    nodes: dict[str, Node]
    order: list[str]
    raw: dict[str, Any]
    base_dir: Path
    path: Optional[Path] = None
    name: Optional[str] = None
    description: Optional[str] = None

    def consumers(self, name: str) -> list[str]:
        return [n for n in self.order if name in self.nodes[n].upstream()]

    def sinks(self) -> list[str]:
        return [n for n in self.order if not self.consumers(n)]

    def input_files(self) -> list[str]:
        files = []
        for n in self.order:
            node = self.nodes[n]
            for p in node.type.params:
                if p.kind == "input_file" and node.params.get(p.name):
                    files.append(str(node.params[p.name]))
        return files

    def to_dict(self) -> dict[str, Any]:
        """The workflow as a file would hold it (with ``--set`` overrides applied)."""
        return json.loads(json.dumps(self.raw, default=str))


# ----------------------------------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------------------------------


def read_workflow_file(path: Union[str, Path]) -> dict[str, Any]:
    """Parse a workflow file (YAML, or JSON by its suffix) into a dict; one clear error when unreadable."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"workflow file not found: {p}", "check the path (examples/ has ready-made workflows)")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            data = _yaml_load(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{p}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})",
                         "fix the JSON syntax") from None
    except Exception as exc:  # yaml.YAMLError
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"{p}: not valid YAML{where}: {problem}", "fix the YAML syntax") from None
    if not isinstance(data, dict):
        raise WorkflowError(["the file must hold a mapping with 'version' and 'nodes'"], str(p))
    return data


def dump_workflow(workflow: Union[dict[str, Any], Workflow], path: Union[str, Path]) -> Path:
    """Write a workflow dict as YAML (or JSON for a ``.json`` path), atomically."""
    data = workflow.to_dict() if isinstance(workflow, Workflow) else workflow
    p = Path(path)
    if p.suffix.lower() == ".json":
        text = json.dumps(data, indent=2) + "\n"
    else:
        import yaml

        text = yaml.dump(data, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False,
                         allow_unicode=True, width=110)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, p)
    return p


def parse_set(item: str) -> tuple[str, str, str]:
    """Split ``node.param=value``."""
    key, eq, value = item.partition("=")
    node, dot, param = key.strip().partition(".")
    if not eq or not dot or not node or not param:
        raise WorkflowError([f"--set '{item}': write it as node.param=value (e.g. --set edit.seed=3)"], "--set")
    return node, param.strip(), value


def coerce_value(param: Param, text: str) -> Any:
    """A ``--set`` value for ``param``: parsed as YAML (numbers, true/false, null, [lists]), else the raw text."""
    try:
        parsed = _yaml_load(text) if text.strip() else ""
    except Exception:
        parsed = text
    try:
        return param.validate(parsed)
    except ValueError as exc:
        try:
            return param.validate(text)
        except ValueError:
            raise exc from None


def _yaml_load(text: str) -> Any:
    import yaml

    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def apply_overrides(raw: dict[str, Any], overrides: list[str], cwd: Optional[Path] = None) -> dict[str, Any]:
    """Apply ``--set node.param=value`` items to a raw workflow dict (values coerced to the param's type)."""
    if not overrides:
        return raw
    raw = json.loads(json.dumps(raw, default=str))
    nodes: dict[str, Any] = raw["nodes"] if isinstance(raw.get("nodes"), dict) else {}
    errors = []
    cwd = cwd or Path.cwd()
    for item in overrides:
        try:
            name, pname, text = parse_set(item)
        except WorkflowError as exc:
            errors.extend(exc.messages)
            continue
        spec = nodes.get(name)
        if not isinstance(spec, dict):
            errors.append(f"--set {item}: no node '{name}' in the workflow{did_you_mean(name, nodes)}")
            continue
        nt = NODE_TYPES.get(str(spec.get("type")))
        if nt is None:
            errors.append(f"--set {item}: node '{name}' has unknown type '{spec.get('type')}'")
            continue
        param = nt.param(pname)
        if param is None:
            hint = did_you_mean(pname, [p.name for p in nt.params])
            errors.append(f"--set {item}: node '{name}' ({nt.name}) has no parameter '{pname}'{hint}")
            continue
        try:
            value = coerce_value(param, text)
        except ValueError as exc:
            errors.append(f"--set {item}: node '{name}', param '{pname}': {exc}")
            continue
        if param.kind in ("input_file", "output_file") and isinstance(value, str) and value:
            value = str((cwd / Path(value).expanduser()).resolve()) if not Path(value).expanduser().is_absolute() \
                else str(Path(value).expanduser())
        elif param.kind == "model" and isinstance(value, str) and _looks_like_path(value, cwd):
            value = str((cwd / Path(value).expanduser()).resolve())
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(spec.get("params"), dict):
            spec["params"] = {}
        spec["params"][pname] = value
    if errors:
        raise WorkflowError(errors, "--set")
    return raw


def _looks_like_path(value: str, base: Path) -> bool:
    if value.startswith(("/", "./", "../", "~")) or value.endswith((".safetensors", ".ckpt", ".bin", ".pt")):
        return True
    return (base / value).exists()


def load_workflow(src: Union[str, Path, dict[str, Any], Workflow], *, overrides: list[str] = (),  # type: ignore
                  base_dir: Optional[Path] = None, cwd: Optional[Path] = None) -> Workflow:
    """Read, override and validate a workflow (a path, a dict or a Workflow); raise WorkflowError on problems.

    Relative paths in the file are resolved against the file's folder (``base_dir`` for a dict; default the
    current folder); ``--set`` paths against ``cwd`` (default the current folder).
    """
    if isinstance(src, Workflow):
        if not overrides:
            return src
        return load_workflow(src.raw, overrides=overrides, base_dir=src.base_dir, cwd=cwd)
    path: Optional[Path] = None
    if isinstance(src, dict):
        raw = src
        origin = "workflow"
    else:
        path = Path(src)
        raw = read_workflow_file(path)
        origin = str(path)
        base_dir = base_dir or path.resolve().parent
    raw = apply_overrides(raw, list(overrides), cwd)
    return validate_workflow(raw, base_dir=base_dir or Path.cwd(), path=path, origin=origin)


# ----------------------------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------------------------


def _where(node: Optional[str], kind: str, name: Optional[str]) -> str:
    if node is None:
        return f"field '{name}'" if name else "workflow"
    return f"node '{node}', {kind} '{name}'" if name else f"node '{node}'"


def _structure_errors(raw: dict[str, Any]) -> list[str]:
    """Keys and shapes, before pydantic, with did-you-mean for misspelled keys."""
    errs = []
    for key in raw:
        if key not in _TOP_KEYS:
            errs.append(f"field '{key}': unknown top-level field{did_you_mean(key, _TOP_KEYS)}"
                        f" (allowed: {', '.join(_TOP_KEYS)})")
    if "version" not in raw:
        errs.append(f"field 'version': missing — add 'version: {SCHEMA_VERSION}' at the top of the file")
    elif raw["version"] not in SUPPORTED_VERSIONS or isinstance(raw["version"], bool):
        errs.append(f"field 'version': schema version {raw['version']!r} is not supported "
                    f"(this crispedit reads version {', '.join(map(str, SUPPORTED_VERSIONS))})")
    nodes = raw.get("nodes")
    if "nodes" not in raw:
        errs.append("field 'nodes': missing — a workflow needs a mapping of named nodes")
    elif not isinstance(nodes, dict) or not nodes:
        errs.append("field 'nodes': must be a non-empty mapping of node name -> {type, params, inputs}")
    else:
        for name, spec in nodes.items():
            if not isinstance(name, str) or not _NAME.match(name):
                errs.append(f"node '{name}': bad name (letters, digits, _ and -, not starting with a digit; no dots)")
            if not isinstance(spec, dict):
                errs.append(f"node '{name}': must be a mapping with 'type' (and 'params', 'inputs')")
                continue
            for key in spec:
                if key not in _NODE_KEYS:
                    errs.append(f"node '{name}', field '{key}': unknown field{did_you_mean(key, _NODE_KEYS)} "
                                f"(allowed: {', '.join(_NODE_KEYS)})")
            if "type" not in spec:
                errs.append(f"node '{name}', field 'type': missing (see `crispedit nodes`)")
    return errs


def _pydantic_errors(exc: ValidationError) -> list[str]:
    out = []
    for e in exc.errors():
        loc = [str(x) for x in e.get("loc", ())]
        if len(loc) >= 2 and loc[0] == "nodes":
            rest = loc[2:]
            field_ = rest[0] if rest else None
            extra = f" '{'.'.join(rest[1:])}'" if len(rest) > 1 else ""
            out.append(f"{_where(loc[1], 'field', field_)}{extra}: {e.get('msg')} (got {e.get('input')!r})")
        else:
            out.append(f"field '{'.'.join(loc)}': {e.get('msg')}")
    return out


def _resolve_path(value: Any, param: Param, base_dir: Path) -> Any:
    if not isinstance(value, str) or not value:
        return value
    p = Path(value).expanduser()
    if param.kind in ("input_file", "output_file"):
        return str(p if p.is_absolute() else (base_dir / p).resolve())
    if param.kind == "model" and _looks_like_path(value, base_dir):
        return str(p if p.is_absolute() else (base_dir / p).resolve())
    return value


def _parse_link(text: Any) -> Optional[tuple[str, Optional[str]]]:
    if not isinstance(text, str) or not text.strip():
        return None
    node, _, out = text.strip().partition(".")
    return node, (out or None)


def validate_workflow(raw: dict[str, Any], *, base_dir: Path, path: Optional[Path] = None,
                      origin: str = "workflow") -> Workflow:
    """Check everything that can be checked before running; return the Workflow or raise WorkflowError."""
    errors = _structure_errors(raw)
    if errors:
        raise WorkflowError(errors, origin)
    try:
        spec = WorkflowSpec.model_validate(raw)
    except ValidationError as exc:
        raise WorkflowError(_pydantic_errors(exc), origin) from None

    # 1. types and params
    nodes: dict[str, Node] = {}
    for name, ns in spec.nodes.items():
        built = _build_node(name, ns, base_dir, errors)
        if built is not None:
            nodes[name] = built
    # 2. links
    all_names = list(spec.nodes)
    for name, ns in spec.nodes.items():
        if name in nodes:
            _link_node(nodes[name], ns, nodes, all_names, errors)
    # 3. cycles
    order, cycle = _toposort(nodes)
    if cycle:
        errors.append(f"node '{cycle[0]}', field 'inputs': cycle {' → '.join(cycle)} "
                      "(a workflow flows one way: input → model → output)")
    if errors:
        raise WorkflowError(errors, origin)
    return Workflow(nodes={n: nodes[n] for n in order}, order=order, raw=raw, base_dir=Path(base_dir),
                    path=path, name=spec.name or (path.stem if path else None), description=spec.description)


def _build_node(name: str, ns: NodeSpec, base_dir: Path, errors: list[str]) -> Optional[Node]:
    """The node ``name`` with its type and validated parameters (errors appended), or None for an unknown type."""
    nt = NODE_TYPES.get(ns.type)
    if nt is None:
        errors.append(f"node '{name}': unknown node type '{ns.type}'{did_you_mean(ns.type, NODE_TYPES)} "
                      f"(`crispedit nodes` lists them)")
        return None
    params, bad = _node_params(name, ns, nt, base_dir, errors)
    if not bad and nt.check is not None:
        for field_, msg in nt.check(params):
            errors.append(f"node '{name}', param '{field_}': {msg}")
    node = Node(name, nt, params, {}, raw_params=dict(ns.params), note=ns.note)
    node.output_types = nt.resolved_output_types(params)
    return node


def _node_params(name: str, ns: NodeSpec, nt: NodeType, base_dir: Path,
                 errors: list[str]) -> tuple[dict[str, Any], bool]:
    """(validated parameters with defaults filled in, whether any was refused); errors appended."""
    params: dict[str, Any] = {}
    bad = False
    for pname, value in ns.params.items():
        param = nt.param(pname)
        if param is None:
            if nt.input(pname) is not None:
                hint = f" — '{pname}' is an input: link it under inputs ({pname}: node.output)"
            else:
                hint = did_you_mean(pname, [p.name for p in nt.params])
            errors.append(f"node '{name}', param '{pname}': {nt.name} has no such parameter{hint}")
            bad = True
            continue
        try:
            v = param.validate(value)
        except ValueError as exc:
            errors.append(f"node '{name}', param '{pname}': {exc}")
            bad = True
            continue
        params[pname] = _resolve_path(v, param, base_dir)
    for param in nt.params:
        if param.name in params or param.name in ns.params:
            continue
        if param.required:
            errors.append(f"node '{name}', param '{param.name}': required parameter is missing "
                          f"({param.type_label}: {param.doc})")
            bad = True
        else:
            params[param.name] = json.loads(json.dumps(param.default)) if isinstance(
                param.default, (dict, list)) else param.default
    return params, bad


def _link_node(node: Node, ns: NodeSpec, nodes: dict[str, Node], all_names: list[str], errors: list[str]) -> None:
    """Resolve the inputs of ``node`` into ``node.links`` (errors appended); unlinked optional inputs get None/[]."""
    name, nt = node.name, node.type
    for iname, target in ns.inputs.items():
        port = nt.input(iname)
        if port is None:
            if nt.param(iname) is not None:
                hint = f" — '{iname}' is a parameter: set it under params"
            else:
                hint = did_you_mean(iname, [p.name for p in nt.inputs])
            names = ", ".join(p.name for p in nt.inputs) or "none"
            errors.append(f"node '{name}', input '{iname}': {nt.name} has no such input{hint} (inputs: {names})")
            continue
        if isinstance(target, list) and not port.multiple:
            errors.append(f"node '{name}', input '{iname}': takes one link, got a list of {len(target)}")
            continue
        texts = target if isinstance(target, list) else [target]
        where = f"node '{name}', input '{iname}'"
        links = [link for link in (_resolve_link(where, name, port, text, nodes, all_names, errors)
                                   for text in texts) if link is not None]
        if port.multiple:
            node.links[iname] = links
        elif links:
            node.links[iname] = links[0]
    for port in nt.inputs:
        if port.name not in ns.inputs:
            if port.optional:
                node.links[port.name] = [] if port.multiple else None
            else:
                errors.append(f"node '{name}', input '{port.name}': required input is not linked "
                              f"(needs {port.type_label}; write inputs: {{{port.name}: node.output}})")
        elif port.name not in node.links:
            node.links[port.name] = [] if port.multiple else None


def _resolve_link(where: str, name: str, port: Port, text: Any, nodes: dict[str, Node], all_names: list[str],
                  errors: list[str]) -> Optional[Link]:
    """One link text (``node`` or ``node.output``) of input ``where`` checked against the upstream node's
    outputs and the port's types; None (with an error appended, unless already reported) when it does not fit."""
    parsed = _parse_link(text)
    if parsed is None:
        errors.append(f"{where}: bad link {text!r} (write 'node' or 'node.output')")
        return None
    src, out = parsed
    if src not in all_names:
        errors.append(f"{where}: dangling link to '{text}' — there is no node "
                      f"'{src}'{did_you_mean(src, [n for n in all_names if n != name])}")
        return None
    up = nodes.get(src)
    if up is None:  # unknown type upstream: already reported
        return None
    out_types = up.output_types
    if out is None:
        fits = [o for o, t in out_types.items() if t in port.type_set]
        out = fits[0] if fits else (next(iter(out_types), None))
        if out is None:
            errors.append(f"{where}: node '{src}' ({up.type.name}) has no outputs")
            return None
    elif out not in out_types:
        errors.append(f"{where}: dangling link '{text}' — node '{src}' "
                      f"({up.type.name}) has no output '{out}'{did_you_mean(out, out_types)} "
                      f"(outputs: {', '.join(out_types)})")
        return None
    otype = out_types[out]
    if otype not in port.type_set:
        errors.append(f"{where}: type mismatch — expects "
                      f"{'|'.join(port.type_set)} but '{src}.{out}' ({up.type.name}) gives {otype}")
        return None
    return Link(src, out, str(text))


def _toposort(nodes: dict[str, Node]) -> tuple[list[str], list[str]]:
    """Kahn's algorithm, ties broken by file order; returns (order, a cycle or [])."""
    deps = {n: [u for u in nodes[n].upstream() if u in nodes] for n in nodes}
    indeg = {n: len(d) for n, d in deps.items()}
    users: dict[str, list[str]] = {n: [] for n in nodes}
    for n, d in deps.items():
        for u in d:
            users[u].append(n)
    position = {n: i for i, n in enumerate(nodes)}
    ready = sorted((n for n in nodes if indeg[n] == 0), key=position.__getitem__)
    order: list[str] = []
    while ready:
        n = ready.pop(0)
        order.append(n)
        for v in users[n]:
            indeg[v] -= 1
            if indeg[v] == 0:
                ready.append(v)
                ready.sort(key=position.__getitem__)
    if len(order) == len(nodes):
        return order, []
    left = [n for n in nodes if n not in order]
    # walk upstream inside the leftover set until a node repeats: that is a cycle
    start = left[0]
    seen: list[str] = []
    cur = start
    while cur not in seen:
        seen.append(cur)
        cur = next(u for u in deps[cur] if u in left and indeg[u] > 0) if any(
            u in left and indeg[u] > 0 for u in deps[cur]) else next(u for u in deps[cur] if u in left)
    cyc = seen[seen.index(cur):]
    cyc = list(reversed(cyc))  # upstream -> downstream
    return order, cyc + [cyc[0]]
