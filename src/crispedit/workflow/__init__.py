"""Workflows as files: input → model → output graphs of typed nodes, run with a cache, explained by describe.

>>> from crispedit.workflow import load_workflow, run_workflow, describe_workflow   # doctest: +SKIP
>>> res = run_workflow("examples/4k-object-removal.yaml", overrides=["photo.path=my.jpg"])  # doctest: +SKIP
>>> describe_workflow("examples/4k-text-inpaint.yaml")["task"]                # doctest: +SKIP

See docs/workflows.md. Submodules: ``types`` (link types, ports, parameters, node types),
``library`` (the node registry and the built-in node types), ``schema`` (file format, validation, --set),
``runner`` (execution and cache), ``cards`` (model cards), ``describe``, ``builtin`` (edit/generate as
workflows), ``cli`` (the run/nodes/describe commands).
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "load_workflow": "schema", "dump_workflow": "schema", "Workflow": "schema", "WorkflowError": "schema",
    "SCHEMA_VERSION": "schema", "run_workflow": "runner", "RunResult": "runner",
    "describe_workflow": "describe", "register_node": "library", "NodeType": "types", "Port": "types",
    "Param": "types", "NODE_TYPES": "library", "edit_workflow": "builtin", "generate_workflow": "builtin",
    "run_edit": "builtin", "run_generate": "builtin",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    # Lazy, so `import crispedit.workflow.cli` stays cheap until a command runs.
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"crispedit.workflow.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'crispedit.workflow' has no attribute {name!r}")
