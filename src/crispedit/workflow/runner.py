"""Run a workflow: dependency order, progress per node, timings, and a content-addressed cache.

Cache keys are computed for every node before anything runs, from the node type (and its version), its
parameters, and the keys of the nodes linked into it (a Merkle chain); an input file enters the key through a
blake2b hash of its bytes (no image decode). A node whose key has a stored entry is not run; a node that nobody
needs (everything downstream is cached) is not even loaded. So re-running after changing only the output node
does no model work, and changing a parameter re-runs exactly the nodes downstream of it.

The cache lives in ``$CRISPEDIT_CACHE/workflow`` (default ``~/.cache/crispedit/workflow``): one folder per key
with ``entry.json`` and one ``.npz`` per array output (images, masks); dicts, text and numbers are stored in the
JSON. Nodes with ``seed: null`` are random: they and everything downstream run every time and are not stored.
Nodes that write files (SaveImage, Report) count as cached only when their files are still there, unchanged.
Entries are written atomically (a temporary folder renamed into place); the least recently used ones are removed
when the cache grows beyond ``$CRISPEDIT_CACHE_MAX_GB`` (default 20).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

from crispedit.errors import CrispEditError, InputError
from crispedit.workflow.schema import Link, Workflow, WorkflowError, load_workflow
from crispedit.workflow.types import NodeContext

logger = logging.getLogger(__name__)

JSON_TYPES = {"result", "report", "text", "number", "path"}
ARRAY_TYPES = {"mask", "weight"}


# ----------------------------------------------------------------------------------------------------------------
# hashing
# ----------------------------------------------------------------------------------------------------------------

_FILE_HASHES: dict[tuple[str, int, int, int], str] = {}


def file_hash(path: Union[str, Path]) -> str:
    """blake2b of a file's bytes (memoised per process on path, size, mtime and inode)."""
    p = Path(path)
    st = p.stat()
    memo = (str(p.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if memo in _FILE_HASHES:
        return _FILE_HASHES[memo]
    h = hashlib.blake2b(digest_size=20)
    with open(p, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    digest = h.hexdigest()
    _FILE_HASHES[memo] = digest
    return digest


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


_CODE_VERSION: str | None = None


def _version() -> str:
    """The code's identity for cache keys: the package version plus a digest of its source files.

    A version string alone is not enough: results cached by one checkout must not be served after the code
    changed without a version bump.
    """
    global _CODE_VERSION
    if _CODE_VERSION is None:
        import crispedit

        h = hashlib.blake2b(digest_size=8)
        root = Path(crispedit.__file__).parent
        for f in sorted(root.rglob("*.py")):
            h.update(str(f.relative_to(root)).encode())
            h.update(f.read_bytes())
        _CODE_VERSION = f"{crispedit.__version__}+{h.hexdigest()}"
    return _CODE_VERSION


def node_key(wf: Workflow, name: str, keys: dict[str, str]) -> str:
    """The cache key of a node: type, version, params (input files by content) and upstream keys."""
    node = wf.nodes[name]
    params = dict(node.params)
    for p in node.type.params:
        if p.kind == "input_file" and params.get(p.name):
            params[p.name] = {"blake2b": file_hash(params[p.name])}

    def ref(link: Optional[Link]) -> Optional[str]:
        return None if link is None else f"{keys[link.node]}:{link.output}"

    inputs = {k: ([ref(x) for x in v] if isinstance(v, list) else ref(v)) for k, v in node.links.items()}
    payload = _canon({"crispedit": _version(), "type": node.type.name, "v": node.type.version, "params": params,
                      "inputs": inputs})
    return hashlib.blake2b(payload.encode(), digest_size=20).hexdigest()


# ----------------------------------------------------------------------------------------------------------------
# values <-> cache files
# ----------------------------------------------------------------------------------------------------------------


def _json_default(v: Any) -> Any:
    import numpy as np

    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (bytes, bytearray)):
        return base64.b64encode(bytes(v)).decode()
    if isinstance(v, (set, frozenset)):
        return sorted(v, key=str)
    if hasattr(v, "to_dict"):
        return v.to_dict()
    return str(v)


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data (what it becomes after a trip through the cache)."""
    return json.loads(json.dumps(value, default=_json_default))


def _b64(v: Any) -> Optional[str]:
    if v is None:
        return None
    if not isinstance(v, (bytes, bytearray)):
        try:
            v = bytes(v)
        except Exception:
            return None
    return base64.b64encode(bytes(v)).decode()


def _image_meta(data: Any) -> dict[str, Any]:
    notes = getattr(data, "notes", None)
    source = getattr(data, "source", None)
    dpi = getattr(data, "dpi", None)
    return {"icc_profile": _b64(getattr(data, "icc_profile", None)), "exif": _b64(getattr(data, "exif", None)),
            "format": getattr(data, "format", None), "notes": list(notes) if notes else [],
            "source": str(source) if source else None, "dpi": list(dpi) if dpi else None,
            "xmp": _b64(getattr(data, "xmp", None)),
            "text_chunks": [[t, _b64(p)] for t, p in (getattr(data, "text_chunks", None) or [])]}


class CacheStore:
    """The content-addressed store: ``root/ab/abcdef.../entry.json`` + ``<output>.npz``."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def folder(self, key: str) -> Path:
        return self.root / key[:2] / key

    def lookup(self, key: str) -> Optional[dict[str, Any]]:
        entry_file = self.folder(key) / "entry.json"
        try:
            entry = json.loads(entry_file.read_text())
        except (OSError, ValueError):
            return None
        for path, meta in (entry.get("files") or {}).items():
            if not _file_intact(path, meta):
                logger.info("cache entry %s not used: the file it wrote changed or is gone: %s", key[:12], path)
                return None
        try:
            os.utime(entry_file)  # least-recently-used bookkeeping
        except OSError:
            pass
        return entry

    def load(self, key: str, entry: dict[str, Any], output: str) -> Any:
        spec = entry["outputs"][output]
        kind = spec["type"]
        if "value" in spec:
            return spec["value"]
        import numpy as np

        with np.load(self.folder(key) / spec["file"], allow_pickle=False) as z:
            array = z["array"]
        if kind == "image":
            from crispedit.workflow.types import image_from_array

            meta = spec.get("meta") or {}
            return image_from_array(
                array, icc_profile=_unb64(meta.get("icc_profile")), exif=_unb64(meta.get("exif")),
                format=meta.get("format"), notes=list(meta.get("notes") or []), source=meta.get("source"),
                dpi=meta.get("dpi"), xmp=_unb64(meta.get("xmp")),
                text_chunks=[(t, _unb64(p)) for t, p in meta.get("text_chunks") or []])
        return array

    def save(self, key: str, node_type: str, outputs: dict[str, Any], types: dict[str, str],
             files: dict[str, dict[str, Any]]) -> int:
        """Write an entry atomically; returns the bytes written (0 if it already existed)."""
        import numpy as np

        final = self.folder(key)
        if (final / "entry.json").exists():
            shutil.rmtree(final, ignore_errors=True)  # a stale side-effect entry is replaced
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key[:8]}-", dir=final.parent))
        size = 0
        spec: dict[str, Any] = {}
        try:
            for name, value in outputs.items():
                kind = types.get(name, "text")
                if kind == "image":
                    np.savez(tmp / f"{name}.npz", array=value.array)
                    spec[name] = {"type": kind, "file": f"{name}.npz", "meta": _image_meta(value)}
                elif kind in ARRAY_TYPES or isinstance(value, np.ndarray):
                    np.savez_compressed(tmp / f"{name}.npz", array=np.asarray(value))
                    spec[name] = {"type": kind, "file": f"{name}.npz"}
                else:
                    spec[name] = {"type": kind, "value": jsonable(value)}
            entry = {"node_type": node_type, "created": time.time(), "outputs": spec, "files": files}
            (tmp / "entry.json").write_text(json.dumps(entry))
            size = sum(f.stat().st_size for f in tmp.iterdir())
            try:
                os.rename(tmp, final)
            except OSError:  # another run stored it meanwhile
                shutil.rmtree(tmp, ignore_errors=True)
                return 0
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return size

    def prune(self, max_bytes: int) -> int:
        """Remove least recently used entries until the store holds at most ``max_bytes``; returns bytes freed."""
        entries = []
        total = 0
        if not self.root.is_dir():
            return 0
        for sub in os.scandir(self.root):
            if not sub.is_dir():
                continue
            for ent in os.scandir(sub.path):
                if not ent.is_dir() or ent.name.startswith("."):
                    continue
                size = sum(f.stat().st_size for f in os.scandir(ent.path) if f.is_file())
                try:
                    used = os.stat(os.path.join(ent.path, "entry.json")).st_mtime
                except OSError:
                    used = 0.0
                entries.append((used, size, ent.path))
                total += size
        freed = 0
        for _used, size, path in sorted(entries):
            if total - freed <= max_bytes:
                break
            shutil.rmtree(path, ignore_errors=True)
            freed += size
        if freed:
            logger.info("workflow cache pruned: %.1f MB of least recently used entries removed", freed / 1e6)
        return freed


def _unb64(v: Optional[str]) -> Optional[bytes]:
    return None if v is None else base64.b64decode(v)


def _file_meta(path: str) -> dict[str, Any]:
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "blake2b": file_hash(path)}


def _file_intact(path: str, meta: dict[str, Any]) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    if st.st_size != meta.get("size"):
        return False
    if st.st_mtime_ns == meta.get("mtime_ns"):
        return True
    return file_hash(path) == meta.get("blake2b")


def cache_dir() -> Path:
    """``$CRISPEDIT_CACHE/workflow``, else ``~/.cache/crispedit/workflow``."""
    root = os.environ.get("CRISPEDIT_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "crispedit"
    return base / "workflow"


# ----------------------------------------------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class NodeEvent:
    """A progress event: ``status`` is start, step (inside a node), done, cached or skipped."""

    node: str
    type: str
    index: int
    total: int
    status: str
    seconds: float = 0.0
    stage: Optional[str] = None
    done: int = 0
    steps: int = 0


@dataclass
class NodeRecord:
    """What happened to one node: ``ran``, ``cached`` (stored result reused) or ``skipped`` (not needed)."""

    node: str
    type: str
    status: str
    seconds: float = 0.0
    key: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "type": self.type, "status": self.status, "seconds": round(self.seconds, 4),
                "key": self.key[:16] if self.key else None}


def summarize(value: Any, kind: str) -> Any:
    """A JSON summary of a value: sizes for images and masks, the data for dicts, text, numbers and paths."""
    if kind == "image" and hasattr(value, "array"):
        a = value.array
        return {"width": int(a.shape[1]), "height": int(a.shape[0]), "channels": int(a.shape[2]) if a.ndim > 2
                else 1, "dtype": str(a.dtype)}
    if kind in ARRAY_TYPES and hasattr(value, "shape"):
        import numpy as np

        return {"width": int(value.shape[1]), "height": int(value.shape[0]), "dtype": str(value.dtype),
                "edit_pixels": int(np.count_nonzero(value >= 0.5 if value.dtype != bool else value))}
    if kind == "image" and isinstance(value, list):
        return [summarize(v, kind) for v in value]
    return jsonable(value)


@dataclass
class RunResult:
    """The outcome of :func:`run_workflow`: per-node records, notes, timings and access to outputs."""

    workflow: Workflow
    records: list[NodeRecord]
    notes: list[str]
    seconds: float
    keys: dict[str, str]
    cache: Optional[CacheStore]
    _values: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    _entries: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    @property
    def node_seconds(self) -> float:
        return sum(r.seconds for r in self.records if r.status == "ran")

    @property
    def overhead_seconds(self) -> float:
        """Wall time of the run minus the time spent inside node run functions."""
        return max(0.0, self.seconds - self.node_seconds)

    def status(self, node: str) -> str:
        return next(r.status for r in self.records if r.node == node)

    def ran(self) -> list[str]:
        return [r.node for r in self.records if r.status == "ran"]

    def output(self, node: str, name: Optional[str] = None) -> Any:
        """An output value (the node's first output by default); loaded from the cache when not in memory."""
        wnode = self.workflow.nodes[node]
        name = name or next(iter(wnode.output_types))
        if node in self._values and name in self._values[node]:
            return self._values[node][name]
        if self.cache is not None:
            entry = self._entries.get(node) or self.cache.lookup(self.keys[node])
            if entry is not None and name in entry.get("outputs", {}):
                return self.cache.load(self.keys[node], entry, name)
        raise KeyError(f"output {node}.{name} was not kept (run with keep={{'{node}'}})")

    def to_dict(self) -> dict[str, Any]:
        outputs: dict[str, Any] = {}
        for n in self.workflow.order:
            types = self.workflow.nodes[n].output_types
            vals = self._values.get(n)
            if vals is None and n in self._entries:
                vals = {k: v["value"] for k, v in self._entries[n]["outputs"].items() if "value" in v}
            if vals:
                outputs[n] = {k: summarize(v, types.get(k, "text")) for k, v in vals.items()}
        return {
            "workflow": self.workflow.name, "file": str(self.workflow.path) if self.workflow.path else None,
            "seconds": round(self.seconds, 4), "node_seconds": round(self.node_seconds, 4),
            "overhead_seconds": round(self.overhead_seconds, 4),
            "cache": str(self.cache.root) if self.cache else None,
            "nodes": [r.to_dict() for r in self.records], "outputs": outputs, "notes": list(self.notes),
        }


def _preflight(wf: Workflow) -> None:
    errors = []
    for n in wf.order:
        node = wf.nodes[n]
        for p in node.type.params:
            v = node.params.get(p.name)
            if p.kind == "input_file" and v and not Path(v).is_file():
                errors.append(f"node '{n}', param '{p.name}': file not found: {v} (relative paths are read from "
                              "the workflow file's folder; --set paths from the current folder)")
            if p.kind == "output_file" and v and not node.params.get("mkdir", True) and not Path(v).parent.is_dir():
                errors.append(f"node '{n}', param '{p.name}': output folder does not exist: {Path(v).parent}")
    if errors:
        raise WorkflowError(errors, str(wf.path) if wf.path else "workflow")


def _with_node(exc: CrispEditError, name: str, type_: str) -> CrispEditError:
    if isinstance(exc, WorkflowError):
        return exc
    try:
        new = type(exc)(f"node '{name}' ({type_}): {exc.problem}", exc.fix)
    except TypeError:
        new = InputError(f"node '{name}' ({type_}): {exc.problem}", exc.fix)
    new.exit_code = exc.exit_code
    return new


def run_workflow(src: Union[str, Path, dict, Workflow], *, overrides: list[str] = (),  # type: ignore[assignment]
                 cache: bool = True, cache_root: Optional[Path] = None,
                 progress: Optional[Callable[[NodeEvent], None]] = None,
                 keep: Optional[set[str]] = None, base_dir: Optional[Path] = None) -> RunResult:
    """Validate and run a workflow; returns a :class:`RunResult`.

    Parameters
    ----------
    src : a workflow file, a dict (paths relative to ``base_dir``) or a loaded Workflow.
    overrides : ``node.param=value`` items (the CLI's ``--set``).
    cache : read and write the cache (``--no-cache`` sets False: everything runs, nothing is stored).
    cache_root : cache folder (default :func:`cache_dir`).
    progress : ``callback(NodeEvent)`` for each node start/done/cached/skipped and steps inside nodes.
    keep : nodes whose output values stay in memory (default: the sinks); others are freed after last use.

    Examples
    --------
    >>> res = run_workflow("examples/4k-object-removal.yaml", overrides=["photo.path=small.jpg"])  # doctest: +SKIP
    >>> [r.status for r in res.records]                                                            # doctest: +SKIP
    ['ran', 'ran', 'ran', 'ran', 'ran', 'ran']
    """
    t0 = time.perf_counter()
    wf = load_workflow(src, overrides=list(overrides), base_dir=base_dir)
    _preflight(wf)
    store = CacheStore(cache_root or cache_dir()) if cache else None
    # 1. keys (cheap: params + file hashes), volatility, cache hits
    keys, volatile = _node_keys(wf)
    hits = _cache_hits(wf, store, keys, volatile)
    # 2. what must run: wanted nodes (sinks, file writers) not cached, and what they need that is not cached
    sinks = set(wf.sinks())
    to_run = _nodes_to_run(wf, sinks, hits)
    # 3. run them in order
    run = _Run(wf, store, keys, volatile, hits, progress, set(sinks if keep is None else keep))
    run.remaining = {n: sum(1 for c in wf.consumers(n) if c in to_run) for n in wf.order}
    for i, n in enumerate(wf.order):
        if n in to_run:
            run.run_node(i, n)
        else:
            run.pass_node(i, n)
    if store is not None and run.written > (1 << 20):
        max_gb = float(os.environ.get("CRISPEDIT_CACHE_MAX_GB", "20"))
        store.prune(int(max_gb * (1 << 30)))
    kept = {n: v for n, v in run.values.items() if n in run.keep}
    return RunResult(wf, run.records, run.notes, time.perf_counter() - t0, keys, store, kept,
                     {n: e for n, e in hits.items()})


def _node_keys(wf: Workflow) -> tuple[dict[str, str], dict[str, bool]]:
    """(cache key, volatile) per node: a node is volatile when it is seeded with ``seed: null`` or anything
    upstream is; a volatile node gets a random key (it runs every time)."""
    keys: dict[str, str] = {}
    volatile: dict[str, bool] = {}
    for n in wf.order:
        node = wf.nodes[n]
        vol = any(volatile[u] for u in node.upstream()) or (
            node.type.seeded and "seed" in node.params and node.params["seed"] is None)
        volatile[n] = vol
        keys[n] = os.urandom(20).hex() if vol else node_key(wf, n, keys)
    return keys, volatile


def _cache_hits(wf: Workflow, store: Optional[CacheStore], keys: dict[str, str],
                volatile: dict[str, bool]) -> dict[str, dict[str, Any]]:
    """The cache entries of the stored, non-volatile nodes found in ``store``."""
    hits: dict[str, dict[str, Any]] = {}
    if store is not None:
        for n in wf.order:
            if wf.nodes[n].type.store and not volatile[n]:
                entry = store.lookup(keys[n])
                if entry is not None:
                    hits[n] = entry
    return hits


def _nodes_to_run(wf: Workflow, sinks: set[str], hits: dict[str, dict[str, Any]]) -> set[str]:
    """The wanted nodes (sinks, file writers) that are not cached, and everything uncached they need."""
    wanted = [n for n in wf.order if n in sinks or wf.nodes[n].type.side_effect]
    to_run: set[str] = set()
    stack = [n for n in wanted if n not in hits]
    while stack:
        n = stack.pop()
        if n in to_run:
            continue
        to_run.add(n)
        stack.extend(u for u in wf.nodes[n].upstream() if u not in hits)
    return to_run


class _Run:
    """The state of one run: output values in memory, values loaded from the cache, records, notes, engines."""

    def __init__(self, wf: Workflow, store: Optional[CacheStore], keys: dict[str, str], volatile: dict[str, bool],
                 hits: dict[str, dict[str, Any]], progress: Optional[Callable[[NodeEvent], None]],
                 keep: set[str]) -> None:
        self.wf, self.store, self.keys, self.volatile, self.hits = wf, store, keys, volatile, hits
        self.progress, self.keep = progress, keep
        self.total = len(wf.order)
        self.values: dict[str, dict[str, Any]] = {}
        self.loaded: dict[tuple[str, str], Any] = {}
        self.records: list[NodeRecord] = []
        self.notes: list[str] = []
        self.engines: dict = {}
        self.input_files = tuple(wf.input_files())
        self.remaining: dict[str, int] = {}
        self.written = 0

    def emit(self, ev: NodeEvent) -> None:
        if self.progress is not None:
            self.progress(ev)

    def value_of(self, link: Link) -> Any:
        if link.node in self.values:
            return self.values[link.node][link.output]
        k = (link.node, link.output)
        if k not in self.loaded:
            self.loaded[k] = self.store.load(  # type: ignore[union-attr]
                self.keys[link.node], self.hits[link.node], link.output)
        return self.loaded[k]

    def pass_node(self, i: int, n: str) -> None:
        """A node that does not run: cached, or not needed."""
        tname = self.wf.nodes[n].type.name
        status = "cached" if n in self.hits else "skipped"
        self.records.append(NodeRecord(n, tname, status, 0.0, self.keys[n]))
        self.emit(NodeEvent(n, tname, i, self.total, status))

    def run_node(self, i: int, n: str) -> None:
        node = self.wf.nodes[n]
        tname = node.type.name
        kwargs: dict[str, Any] = {}
        for iname, link in node.links.items():
            if isinstance(link, list):
                kwargs[iname] = [self.value_of(lk) for lk in link]
            else:
                kwargs[iname] = None if link is None else self.value_of(link)
        kwargs.update(node.params)

        def step(stage: str, done: int, steps: int) -> None:
            self.emit(NodeEvent(n, tname, i, self.total, "step", stage=stage, done=done, steps=steps))

        ctx = NodeContext(n, progress=step, engines=self.engines, notes=self.notes, input_files=self.input_files,
                          workflow=self.wf, records=self.records)
        self.emit(NodeEvent(n, tname, i, self.total, "start"))
        t = time.perf_counter()
        try:
            out = node.type.run(ctx, **kwargs)
        except CrispEditError as exc:
            raise _with_node(exc, n, tname) from exc
        except Exception as exc:
            exc.add_note(f"in workflow node '{n}' ({tname})")
            raise
        dt = time.perf_counter() - t
        if not isinstance(out, dict) or set(out) != set(node.output_types):
            raise TypeError(f"node type {tname} returned {sorted(out) if isinstance(out, dict) else type(out)}, "
                            f"declared outputs {sorted(node.output_types)}")
        out = {k: (jsonable(v) if node.output_types[k] in JSON_TYPES else v) for k, v in out.items()}
        self.values[n] = out
        self.records.append(NodeRecord(n, tname, "ran", dt, self.keys[n]))
        self.emit(NodeEvent(n, tname, i, self.total, "done", seconds=dt))
        self._store(n, out)
        self._release_upstream(n)

    def _store(self, n: str, out: dict[str, Any]) -> None:
        node = self.wf.nodes[n]
        if self.store is None or not node.type.store or self.volatile[n]:
            return
        files = {}
        if node.type.side_effect:
            files = {str(v): _file_meta(str(v)) for k, v in out.items()
                     if node.output_types[k] == "path" and v and Path(str(v)).is_file()}
        self.written += self.store.save(self.keys[n], node.type.name, out, node.output_types, files)

    def _release_upstream(self, n: str) -> None:
        """Free the values of upstream nodes that no later node needs (unless kept)."""
        for u in self.wf.nodes[n].upstream():
            self.remaining[u] -= 1
            if self.remaining[u] <= 0 and u not in self.keep:
                self.values.pop(u, None)
                for k in [k for k in self.loaded if k[0] == u]:
                    self.loaded.pop(k, None)
