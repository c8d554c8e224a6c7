"""The FastAPI app behind ``crispedit serve``: documents, deep-zoom tiles, the server-side mask, edit jobs.

Every edit goes through :func:`crispedit.workflow.builtin.run_edit` (the code path of ``crispedit edit``): it
loads with :func:`crispedit.io.load_image`, edits with :func:`crispedit.harness.edit`, checks with the
quality gate, writes with :func:`crispedit.io.save_image` (input format and bit depth, metadata kept) and
writes the HTML report. The server only adds documents, tiles, the mask canvas, a job queue and guards.

Endpoints (JSON unless noted; errors are ``{"error": "<one line>"}`` with 400/401/403/404/413):

=======  ===========================================================  ================================================
GET      ``/``                                                        the editor page (``/?token=T`` sets the cookie)
GET      ``/api/config``                                              limits, engines, open documents
GET      ``/api/files?dir=REL``                                       folders and images under ``--root``
POST     ``/api/open`` ``{"path": REL}``                              open a photo under ``--root``
POST     ``/api/upload?name=FILE`` (raw body)                         open an uploaded photo
GET      ``/api/docs/{d}``                                            a document: size, versions, mask state
DELETE   ``/api/docs/{d}``                                            close it and delete its work files
GET      ``/api/docs/{d}/v/{n}/image.dzi`` and ``image_files/L/C_R.jpeg``  DZI pyramid of version n (lazy)
GET      ``/api/docs/{d}/mask/{rev}/L/C_R.png``                        mask overlay tiles
GET      ``/api/docs/{d}/mask.png``                                   the full-resolution mask (PNG, grey)
POST     ``/api/docs/{d}/mask`` ``{"op": ...}``                        stroke, rect, ellipse, invert, clear, undo, redo
POST     ``/api/docs/{d}/jobs`` ``{prompt, engine, ...}``              queue an edit of the current version
GET      ``/api/jobs/{j}``, ``/api/jobs/{j}/events`` (SSE)             job state; live progress stream
POST     ``/api/jobs/{j}/cancel``                                     cancel
POST     ``/api/docs/{d}/current`` ``{"version": n}``                 step back/forward in the history
GET      ``/api/docs/{d}/v/{n}/download``, ``report``, ``workflow.yaml``  result file, HTML report, workflow
=======  ===========================================================  ================================================
"""

from __future__ import annotations

import asyncio
import atexit
import json
import secrets
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from fastapi import APIRouter, Body, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from crispedit.errors import CrispEditError, InputError
from crispedit.server import tiles
from crispedit.server.jobs import Job, JobCancelled, JobQueue
from crispedit.server.maskcanvas import MaskCanvas
from crispedit.server.security import Guard, PathRefused, allowed_hostnames, resolve_under, token_cookie

STATIC = Path(__file__).parent / "static"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff"}
ENGINES = ("classical", "sd15")


@dataclass
class ServerConfig:
    """Settings of one ``crispedit serve`` run.

    Attributes
    ----------
    root : Path
        Only files under this folder can be opened (symlinks resolved).
    host : str
        Bind address; anything but loopback requires ``token``.
    token : str or None
        Required on every request when set.
    max_pixels : int
        Pixel limit of opened images (same default and message as ``crispedit edit --max-pixels``).
    max_upload_bytes : int
        Upload size limit in bytes (HTTP 413 above).
    work_dir : Path or None
        Where the per-run work folder is made (system temp folder by default); it is deleted at shutdown.
    allow_hosts : tuple of str
        Extra names accepted in the ``Host`` header.
    photos : tuple of Path
        Photos (under ``root``) opened at start.
    model : str or None
        The SD model the page's sd15 runs use when the form leaves the model empty (``crispedit serve --model``).
    """

    root: Path
    host: str = "127.0.0.1"
    port: int = 8765
    token: Optional[str] = None
    max_pixels: int = 300_000_000
    max_upload_bytes: int = 512 * 1024 * 1024
    work_dir: Optional[Path] = None
    allow_hosts: tuple[str, ...] = ()
    photos: tuple[Path, ...] = ()
    model: Optional[str] = None


@dataclass
class Version:
    """One image in a document's history: the opened photo (n = 0) or an edit result."""

    n: int
    path: Path
    parent: Optional[int]
    label: str
    width: int
    height: int
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, doc_id: str) -> dict[str, Any]:
        d: dict[str, Any] = {"n": self.n, "parent": self.parent, "label": self.label,
                             "width": self.width, "height": self.height}
        base = f"/api/docs/{doc_id}/v/{self.n}"
        d["dzi"] = f"{base}/image.dzi"
        d["download"] = f"{base}/download"
        for k in ("quality", "params", "seed", "seconds", "notes", "engine_calls"):
            if k in self.info:
                d[k] = self.info[k]
        if self.info.get("report"):
            d["report"] = f"{base}/report"
        if self.info.get("workflow_file"):
            d["workflow"] = f"{base}/workflow.yaml"
        if self.info.get("mask_file"):
            d["mask"] = f"{base}/mask.png"
        return d


@dataclass
class Document:
    id: str
    name: str
    suffix: str
    folder: Path
    source: str
    fmt: Optional[str]
    bit_depth: int
    channels: int
    versions: list[Version]
    mask: MaskCanvas
    current: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock)

    def to_dict(self) -> dict[str, Any]:
        cur = self.versions[self.current]
        return {"id": self.id, "name": self.name, "source": self.source, "format": self.fmt,
                "bit_depth": self.bit_depth, "channels": self.channels, "width": cur.width, "height": cur.height,
                "current": self.current, "versions": [v.to_dict(self.id) for v in self.versions],
                "mask": self.mask.state(), "tile_size": tiles.TILE, "tile_overlap": tiles.OVERLAP}


def display_rgb8(a: np.ndarray) -> np.ndarray:
    """The 8-bit RGB copy the viewer shows: 16-bit rounded (``round(x / 257)``), gray repeated, alpha dropped."""
    if a.dtype == np.uint16:
        a = ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[2] in (1, 2):
        return np.ascontiguousarray(np.repeat(a[..., :1], 3, axis=2))
    return np.ascontiguousarray(a[..., :3])


class State:
    """Everything one server run holds: config, work folder, documents, pyramids (LRU), jobs."""

    def __init__(self, cfg: ServerConfig) -> None:
        self.cfg = cfg
        self.root = cfg.root.resolve()
        base = cfg.work_dir
        if base is not None:
            base.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix="crispedit-serve-", dir=base)).resolve()
        atexit.register(shutil.rmtree, self.work, True)  # also when the lifespan shutdown never ran
        self.docs: dict[str, Document] = {}
        self.pyramids: OrderedDict[tuple[str, int], tiles.Pyramid] = OrderedDict()
        self.pyr_lock = threading.Lock()
        self.pyr_building: dict[tuple[str, int], threading.Lock] = {}
        self.jobs = JobQueue()
        self.lock = threading.Lock()

    # -- documents ---------------------------------------------------------------------------------------------
    def doc(self, doc_id: str) -> Document:
        d = self.docs.get(doc_id)
        if d is None:
            raise _NotFound(f"no open document '{doc_id}'", "open the photo again")
        return d

    def open_file(self, path: Path, name: str, source: str, folder: Optional[Path] = None) -> Document:
        """Load ``path`` with the library's loader (same checks and messages as the CLI) and make a document."""
        from crispedit.io import load_image

        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise InputError(f"cannot open '{path.suffix or path.name}' files",
                             f"open one of: {', '.join(sorted(IMAGE_SUFFIXES))}")
        if not path.is_file():
            raise InputError(f"file not found: {source}", "check the path")
        try:
            data = load_image(path, max_pixels=self.cfg.max_pixels)
        except CrispEditError as exc:  # the library's message, naming the file as the user knows it
            problem = exc.problem.replace(str(path.resolve()), name).replace(str(path), name)
            if folder is not None:  # an upload: the library names the work copy, the user knows their file name
                problem = problem.replace(path.name, Path(name).name)
            raise type(exc)(problem, exc.fix) from None
        doc_id = secrets.token_hex(4)
        if folder is None:
            folder = self.work / doc_id
            folder.mkdir()
        v0 = Version(0, path, None, "original", data.width, data.height)
        doc = Document(doc_id, Path(name).name, path.suffix.lower(), folder, source, data.format, data.bit_depth,
                       data.channels, [v0], MaskCanvas(data.width, data.height))
        self._store_pyramid(doc_id, 0, display_rgb8(data.array))
        with self.lock:
            self.docs[doc_id] = doc
        return doc

    def close(self, doc_id: str) -> None:
        """Forget a document: cancel its jobs and delete its work folder (never the photo under root)."""
        doc = self.doc(doc_id)
        for job in list(self.jobs.jobs.values()):
            if job.doc_id == doc_id:
                job.cancel()
        with self.lock:
            self.docs.pop(doc_id, None)
        with self.pyr_lock:
            for k in [k for k in self.pyramids if k[0] == doc_id]:
                del self.pyramids[k]
        shutil.rmtree(doc.folder, ignore_errors=True)

    # -- pyramids ----------------------------------------------------------------------------------------------
    def _store_pyramid(self, doc_id: str, n: int, rgb8: np.ndarray) -> tiles.Pyramid:
        pyr = tiles.Pyramid(rgb8)
        with self.pyr_lock:
            self.pyramids[(doc_id, n)] = pyr
            self.pyramids.move_to_end((doc_id, n))
            while len(self.pyramids) > 4:  # each holds a full-resolution 8-bit copy
                self.pyramids.popitem(last=False)
        return pyr

    def pyramid(self, doc: Document, n: int) -> tiles.Pyramid:
        from crispedit.io import load_image

        key = (doc.id, n)
        with self.pyr_lock:
            pyr = self.pyramids.get(key)
            if pyr is not None:
                self.pyramids.move_to_end(key)
                return pyr
            build = self.pyr_building.setdefault(key, threading.Lock())
        with build:  # one decode per version, however many tile requests wait for it
            with self.pyr_lock:
                pyr = self.pyramids.get(key)
            if pyr is None:
                v = self.version(doc, n)
                pyr = self._store_pyramid(doc.id, n,
                                          display_rgb8(load_image(v.path, max_pixels=self.cfg.max_pixels).array))
        with self.pyr_lock:
            self.pyr_building.pop(key, None)
        return pyr

    @staticmethod
    def version(doc: Document, n: int) -> Version:
        if not 0 <= n < len(doc.versions):
            raise _NotFound(f"document has no version {n}", "pick one from the history")
        return doc.versions[n]

    def shutdown(self) -> None:
        self.jobs.shutdown()
        shutil.rmtree(self.work, ignore_errors=True)


class _NotFound(CrispEditError):
    pass


def _existing(path: Any, what: str) -> Path:
    """``path`` if the file is still there, else a 404 one-liner (a photo under root deleted or moved after
    opening, or a work file removed by hand)."""
    p = Path(path)
    if not p.is_file():
        raise _NotFound(f"the {what} is gone: {p.name} was deleted or moved after it was opened",
                        "open the photo again")
    return p


def _error(exc: CrispEditError, status: Optional[int] = None) -> JSONResponse:
    status = status or (404 if isinstance(exc, _NotFound) else 403 if isinstance(exc, PathRefused) else 400)
    return JSONResponse({"error": str(exc), "problem": exc.problem, "fix": exc.fix}, status_code=status)


# -- the edit job ----------------------------------------------------------------------------------------------
_RUN_KEYS = ("prompt", "negative_prompt", "engine", "model", "seed", "steps", "strength", "candidates", "guidance",
             "scheduler", "device", "dtype", "no_check")


def _run_params(body: dict[str, Any]) -> dict[str, Any]:
    """Validate the page's run form into ``run_edit`` keyword arguments (the CLI's names and checks)."""
    unknown = sorted(set(body) - set(_RUN_KEYS))
    if unknown:
        raise InputError(f"unknown run option(s): {', '.join(unknown)}", f"use: {', '.join(_RUN_KEYS)}")
    p: dict[str, Any] = {}
    for k, v in body.items():
        if v is None or v == "":
            continue
        p[k] = v
    engine = p.get("engine", "classical")
    if engine not in ENGINES:
        raise InputError(f"unknown engine '{engine}'", f"use one of: {', '.join(ENGINES)}")
    p["engine"] = engine
    for k in ("prompt", "negative_prompt", "model", "scheduler", "device", "dtype"):
        if k in p and not isinstance(p[k], str):
            raise InputError(f"{k} must be text, got {type(p[k]).__name__}", f"send {k} as a string")
    for k, typ in (("seed", int), ("steps", int), ("candidates", int), ("strength", float), ("guidance", float)):
        if k in p:
            try:
                p[k] = typ(p[k])
            except (TypeError, ValueError, OverflowError):
                raise InputError(f"--{k} must be a number, got {p[k]!r}", f"give a number for {k}") from None
    if not 0 <= p.get("seed", 0) < 2 ** 63:
        raise InputError(f"--seed {p['seed']} is out of range", "use a seed from 0 to 2**63 - 1")
    if not isinstance(p.get("no_check", False), bool):
        raise InputError(f"no_check must be true or false, got {p['no_check']!r}", "send a JSON boolean")
    if p.get("candidates") is not None and p["candidates"] < 1:
        raise InputError(f"--candidates {p['candidates']} must be at least 1", "use e.g. --candidates 4")
    if p.get("candidates") is not None and p["candidates"] > 16:
        raise InputError(f"--candidates {p['candidates']} is more than this server runs (16)", "use at most 16")
    from crispedit import options as options_mod  # the library's own option checks (range, did-you-mean)

    options_mod.build(options_mod.HarnessOptions, {"strength": p.get("strength")})
    options_mod.check_sd15(steps=p.get("steps"), guidance=p.get("guidance"), scheduler=p.get("scheduler"))
    if "seed" not in p:  # record the seed actually used
        p["seed"] = int(np.random.SeedSequence().generate_state(1)[0] & 0x7FFFFFFF)
    p["no_check"] = bool(p.get("no_check", False))
    return p


def _make_job(state: State, doc: Document, params: dict[str, Any]) -> Job:
    from crispedit.workflow import builtin
    from crispedit.workflow.schema import dump_workflow

    with doc.lock:
        parent = doc.current
        src = _existing(doc.versions[parent].path, f"file of version {parent}")
        mask = doc.mask.snapshot()
    tag = secrets.token_hex(3)
    mask_path = doc.folder / f"mask-{tag}.png" if mask.any() else None
    out = doc.folder / f"edit-{tag}{doc.suffix}"
    report = doc.folder / f"edit-{tag}-report.html"
    args = dict(params, image=src, output=out, mask=mask_path, max_pixels=state.cfg.max_pixels,
                report=None if params.get("no_check") else report)
    builtin.edit_workflow(**args)  # refuse bad combinations (e.g. classical without a mask) before queueing
    if mask_path is not None:
        import cv2

        if not cv2.imwrite(str(mask_path), mask):
            raise InputError(f"could not write the mask to the work folder {doc.folder}", "check free disk space")

    def work(progress) -> dict[str, Any]:
        t0 = time.perf_counter()
        info = builtin.run_edit(cache=False, progress=progress, **args)
        if doc.id not in state.docs:  # closed while the edit ran (no progress call came after the cancel)
            raise JobCancelled()
        wf_path = doc.folder / f"edit-{tag}-workflow.yaml"
        dump_workflow(_portable_workflow(doc, args, parent, len(doc.versions)), wf_path)
        keep = {"params": {k: v for k, v in params.items()}, "mask_file": str(mask_path) if mask_path else None, "seed": info.get("seed", params.get("seed")),
                "seconds": round(time.perf_counter() - t0, 2), "notes": info.get("notes", []),
                "report": info.get("report"), "workflow_file": str(wf_path),
                "engine_calls": len(info.get("engine_calls", []))}
        q = info.get("quality")
        if isinstance(q, dict):
            keep["quality"] = {"verdict": q.get("verdict"), "reasons": q.get("reasons") or [],
                               "worst_places": [_place(p) for p in (q.get("worst_places") or [])][:8]}
        progress("preparing the view", 0, 1)
        with doc.lock:
            v = Version(len(doc.versions), Path(info["output"]), parent,
                        f"{params['engine']}{': ' + params['prompt'] if params.get('prompt') else ''}",
                        doc.versions[parent].width, doc.versions[parent].height, keep)
            doc.versions.append(v)
        state.pyramid(doc, v.n)  # decode the result for its tiles here, in the worker, not in a tile request
        with doc.lock:
            doc.current = v.n
        return {"version": v.n, "doc": doc.to_dict()}

    return Job(params["engine"], doc.id, work)


def _place(p: Any) -> list:
    """A worst place as ``[x, y, score]`` (the quality report gives dicts; older ones tuples)."""
    if isinstance(p, dict):
        return [p.get("x"), p.get("y"), p.get("score")]
    return list(p)


def download_name(doc: Document, n: int) -> str:
    """The file name a version downloads as: the input's name for v0, ``<stem>-edit<n><suffix>`` after."""
    return doc.name if n == 0 else f"{Path(doc.name).stem}-edit{n}{doc.suffix}"


def _portable_workflow(doc: Document, args: dict[str, Any], parent: int, n: int) -> dict[str, Any]:
    """The run as a workflow whose paths are the names the page downloads (input, mask, result), relative to
    the workflow file, so ``crispedit run`` reproduces the edit in a folder holding those downloads."""
    from crispedit.workflow import builtin

    here = doc.folder / "export"
    portable = dict(args, image=here / download_name(doc, parent), output=here / download_name(doc, n))
    if args.get("mask") is not None:
        portable["mask"] = here / f"{Path(doc.name).stem}-edit{n}-mask.png"
    if args.get("report") is not None:
        portable["report"] = here / f"{Path(doc.name).stem}-edit{n}-report.html"
    return builtin.edit_workflow(**portable, relative_to=here)


# -- the app ---------------------------------------------------------------------------------------------------
def create_app(cfg: ServerConfig) -> FastAPI:
    """Build the ASGI app for ``cfg`` (tests drive it with ``fastapi.testclient.TestClient``).

    The routes come from one router per concern (page and config, files under the root, documents and the
    mask, jobs, per-version files), each built around the run's :class:`State`; the app is wrapped in
    :class:`~crispedit.server.security.Guard`.

    Raises
    ------
    crispedit.errors.InputError
        A non-loopback bind without a token, a missing root folder, or a photo outside the root.
    """
    from crispedit.server.security import is_loopback

    if not cfg.root.is_dir():
        raise InputError(f"--root folder not found: {cfg.root}", "give an existing folder")
    if not is_loopback(cfg.host) and not cfg.token:
        raise InputError(f"binding {cfg.host} exposes your files to the network without a token",
                         "pass --token SECRET (or --token auto) or keep the default --host 127.0.0.1")
    state = State(cfg)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        try:
            yield
        finally:
            state.shutdown()

    app = FastAPI(title="crispedit", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.crispedit = state
    _install_error_handlers(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for router in (_page_routes(state), _file_routes(state), _document_routes(state), _job_routes(state),
                   _version_file_routes(state)):
        app.include_router(router)
    _open_start_photos(state)
    return Guard(app, allowed_hostnames(cfg.host, cfg.allow_hosts), cfg.token)  # type: ignore[return-value]


def _install_error_handlers(app: FastAPI) -> None:
    """Every error as ``{"error": "<one line>", "problem", "fix"}``: library errors, bad bodies, HTTP errors."""

    @app.exception_handler(CrispEditError)
    async def _on_error(_req: Request, exc: CrispEditError) -> JSONResponse:
        return _error(exc)

    @app.exception_handler(RequestValidationError)
    async def _on_bad_body(_req: Request, exc: RequestValidationError) -> JSONResponse:
        first = (exc.errors() or [{}])[0]
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body" and not isinstance(x, int))
        problem = f"bad request: {first.get('msg', 'invalid input')}" + (f" at {where}" if where else "")
        return _error(InputError(problem, "send a JSON object as the editor page does"), 422)

    @app.exception_handler(StarletteHTTPException)
    async def _on_http_error(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        text = str(exc.detail)
        problem, _, fix = text.partition(" (")
        return JSONResponse({"error": text, "problem": problem, "fix": fix.rstrip(")")},
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))


def _open_start_photos(state: State) -> None:
    """Open the PHOTO arguments of ``crispedit serve`` (under the root) at start."""
    for photo in state.cfg.photos:
        p = resolve_under(state.root, str(Path(photo).resolve().relative_to(state.root))
                          if Path(photo).resolve().is_relative_to(state.root) else str(photo))
        state.open_file(p, p.name, p.relative_to(state.root).as_posix())


def _page_routes(state: State) -> APIRouter:
    """``/`` (the editor page; ``?token=T`` sets the cookie) and ``/api/config``."""
    cfg = state.cfg
    router = APIRouter()

    @router.get("/", include_in_schema=False)
    def index(request: Request) -> Response:
        tok = request.query_params.get("token")
        if cfg.token and tok:
            r = RedirectResponse("/", status_code=303)
            r.set_cookie(token_cookie(request.headers.get("host", "")), cfg.token, httponly=True, samesite="strict")
            return r
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    @router.get("/api/config")
    def config() -> dict[str, Any]:
        return {"max_pixels": cfg.max_pixels, "max_upload_bytes": cfg.max_upload_bytes, "engines": list(ENGINES),
                "model": cfg.model,
                "jobs": [j.to_dict() for j in state.jobs.jobs.values() if not j.finished_state],
                "formats": sorted(IMAGE_SUFFIXES), "docs": [d.to_dict() for d in state.docs.values()]}

    return router


def _under_root(state: State, rel: str) -> Path:
    """``resolve_under(root, rel)``, also refusing this run's work folder (uploads and results of every
    document) when ``--work-dir`` or the temp folder lies under ``--root``."""
    full = resolve_under(state.root, rel)
    if full == state.work or full.is_relative_to(state.work):
        raise PathRefused(f"path '{rel}' is in the editor's work folder", "open photos from --root")
    return full


def _list_folder(state: State, folder: Path, shown: str) -> list[dict[str, Any]]:
    """Sub-folders and images of ``folder`` (no hidden files, no links out of the root, not the work folder)."""
    entries = []
    try:
        listing = sorted(folder.iterdir(), key=lambda q: q.name.lower())
    except OSError as exc:
        raise InputError(f"cannot list folder '{shown or '.'}': {exc.strerror or exc}",
                         "pick another folder") from None
    for p in listing:
        if p.name.startswith("."):
            continue
        try:
            real = p.resolve()
        except OSError:
            continue
        if real != state.root and not real.is_relative_to(state.root):
            continue  # a symlink out of the root is not listed
        if real == state.work or real.is_relative_to(state.work):
            continue  # nor the work folder (when it lies under the root)
        rel = real.relative_to(state.root).as_posix() if p.is_symlink() else p.relative_to(state.root).as_posix()
        if real.is_dir():
            entries.append({"name": p.name, "path": rel, "type": "dir"})
        elif real.suffix.lower() in IMAGE_SUFFIXES and real.is_file():  # not a dangling link or a pipe
            entries.append({"name": p.name, "path": rel, "type": "image", "bytes": real.stat().st_size})
    return entries


async def _receive_upload(state: State, request: Request, fname: str, suffix: str) -> JSONResponse:
    """Stream the body into a new work folder (413 above the limit) and open it as a document."""
    limit = state.cfg.max_upload_bytes
    too_big = InputError(f"upload is larger than the limit of {limit // (1024 * 1024)} MiB",
                         "restart crispedit serve with a larger --max-upload-mb, or open the file from --root")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        return JSONResponse({"error": str(too_big)}, status_code=413)
    folder = state.work / secrets.token_hex(4)
    folder.mkdir()
    dest = folder / f"upload{suffix}"
    size = 0
    try:
        with open(dest, "wb") as f:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise too_big
                f.write(chunk)
        if size == 0:
            raise InputError("the upload is empty", "choose a photo file")
        doc = await asyncio.to_thread(state.open_file, dest, fname, f"upload: {fname}", folder)
    except CrispEditError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        if exc is too_big:
            return JSONResponse({"error": str(exc)}, status_code=413)
        raise
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return JSONResponse(doc.to_dict())


def _file_routes(state: State) -> APIRouter:
    """``/api/files`` (browse the root), ``/api/open`` (a photo under the root), ``/api/upload``."""
    router = APIRouter()

    @router.get("/api/files")
    def files(dir: str = "") -> dict[str, Any]:  # noqa: A002 - the query parameter's name
        folder = _under_root(state, dir)
        if not folder.is_dir():
            raise _NotFound(f"folder not found: {dir}", "pick a folder from the list")
        entries = _list_folder(state, folder, dir)
        rel_dir = folder.relative_to(state.root).as_posix()
        return {"dir": "" if rel_dir == "." else rel_dir, "entries": entries}

    @router.post("/api/open")
    def open_photo(body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        rel = body.get("path")
        if not isinstance(rel, str) or not rel:
            raise InputError("no path given", "send {\"path\": \"photo.jpg\"} relative to --root")
        path = _under_root(state, rel)
        return state.open_file(path, rel, rel).to_dict()

    @router.post("/api/upload")
    async def upload(request: Request, name: str = "") -> JSONResponse:
        fname = Path(name.replace("\\", "/")).name
        suffix = Path(fname).suffix.lower()
        if suffix not in IMAGE_SUFFIXES:
            raise InputError(f"cannot open '{suffix or fname or 'unnamed'}' files",
                             f"upload one of: {', '.join(sorted(IMAGE_SUFFIXES))}")
        return await _receive_upload(state, request, fname, suffix)

    return router


def _tile_response(data: Optional[bytes], media_type: str) -> Response:
    if data is None:
        raise _NotFound("no such tile", "ask for a tile inside the image")
    return Response(data, media_type=media_type, headers={"Cache-Control": "private, max-age=3600"})


def _document_routes(state: State) -> APIRouter:
    """A document: its state, closing it, its DZI pyramids, the mask (tiles, PNG, edits) and its history."""
    router = APIRouter(prefix="/api/docs/{doc_id}")

    @router.get("")
    def get_doc(doc_id: str) -> dict[str, Any]:
        return state.doc(doc_id).to_dict()

    @router.delete("")
    def close_doc(doc_id: str) -> dict[str, Any]:
        state.close(doc_id)
        return {"closed": doc_id}

    @router.get("/v/{n}/image.dzi")
    def dzi(doc_id: str, n: int) -> Response:
        v = state.version(state.doc(doc_id), n)
        return Response(tiles.dzi_xml(v.width, v.height, "jpeg"), media_type="application/xml")

    @router.get("/v/{n}/image_files/{level}/{tile}.jpeg")
    def image_tile(doc_id: str, n: int, level: int, tile: str) -> Response:
        doc = state.doc(doc_id)
        col, row = _tile_xy(tile)
        return _tile_response(state.pyramid(doc, n).tile(level, col, row), "image/jpeg")

    @router.get("/mask/{rev}/{level}/{tile}.png")
    def mask_tile(doc_id: str, rev: int, level: int, tile: str) -> Response:
        doc = state.doc(doc_id)
        col, row = _tile_xy(tile)
        return _tile_response(tiles.mask_tile(doc.mask, level, col, row), "image/png")

    @router.get("/mask.png")
    def mask_png(doc_id: str) -> Response:
        import cv2

        doc = state.doc(doc_id)
        return Response(cv2.imencode(".png", doc.mask.snapshot())[1].tobytes(), media_type="image/png")

    @router.post("/mask")
    def mask_op(doc_id: str, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        doc = state.doc(doc_id)
        box = doc.mask.apply(body)
        return {**doc.mask.state(), "box": list(box) if box else None}

    @router.post("/current")
    def set_current(doc_id: str, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        doc = state.doc(doc_id)
        try:
            n = int(body.get("version"))  # type: ignore[arg-type]
        except (TypeError, ValueError, OverflowError):
            raise InputError("no version given", "send {\"version\": N}") from None
        state.version(doc, n)
        with doc.lock:
            doc.current = n
        return doc.to_dict()

    return router


def _job_routes(state: State) -> APIRouter:
    """Queue an edit of a document's current version; a job's state, cancel, and its live progress (SSE)."""
    router = APIRouter()

    @router.post("/api/docs/{doc_id}/jobs")
    def submit(doc_id: str, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        doc = state.doc(doc_id)
        params = _run_params(body)
        if params["engine"] == "sd15" and state.cfg.model and not params.get("model"):
            params["model"] = state.cfg.model
        job = state.jobs.submit(_make_job(state, doc, params))
        return {**job.to_dict(), "queue_position": state.jobs.position(job)}

    def _job(job_id: str) -> Job:
        job = state.jobs.jobs.get(job_id)
        if job is None:
            raise _NotFound(f"no job '{job_id}'", "start a run first")
        return job

    @router.get("/api/jobs/{job_id}")
    def job_state(job_id: str) -> dict[str, Any]:
        job = _job(job_id)
        return {**job.to_dict(), "queue_position": state.jobs.position(job)}

    @router.post("/api/jobs/{job_id}/cancel")
    def cancel(job_id: str) -> dict[str, Any]:
        job = _job(job_id)
        job.cancel()
        return job.to_dict()

    @router.get("/api/jobs/{job_id}/events")
    async def events(job_id: str, request: Request) -> StreamingResponse:
        job = _job(job_id)

        async def stream():
            last = None
            while True:
                d = {**job.to_dict(), "queue_position": state.jobs.position(job)}
                if d != last:
                    last = d
                    yield f"data: {json.dumps(d, default=str)}\n\n"
                if d["state"] in ("done", "failed", "cancelled") or await request.is_disconnected():
                    return
                await asyncio.sleep(0.15)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    return router


@dataclass(frozen=True)
class _VersionFile:
    """One per-version file endpoint: which file of the version it serves and how."""

    info_key: Optional[str]  # the Version.info key holding the path; None = the version's image itself
    what: str  # names the file in the 404 when it was deleted ({n}: the version)
    missing: tuple[str, str]  # (problem, fix) when the version has no such file
    media_type: Optional[str]  # None: guessed from the file name
    filename: Optional[str]  # download name ({stem}, {n}; "" = download_name); None: shown inline
    no_store: bool


#: ``/api/docs/{d}/v/{n}/<name>``: the result file, the mask it was made with, its report, its workflow.
VERSION_FILES: dict[str, _VersionFile] = {
    "download": _VersionFile(None, "file of version {n}", ("", ""), None, "", True),
    "mask.png": _VersionFile("mask_file", "mask", ("this version was not made with a mask",
                                                   "pick an edit made with a mask"),
                             "image/png", "{stem}-edit{n}-mask.png", False),
    "report": _VersionFile("report", "report", ("this version has no report",
                                                "run an edit with the quality check on"),
                           "text/html", None, True),
    "workflow.yaml": _VersionFile("workflow_file", "workflow", ("this version was not made by a run",
                                                                "export the workflow of an edit result"),
                                  "application/x-yaml", "{stem}-edit{n}.yaml", False),
}


def version_file(state: State, doc_id: str, n: int, spec: _VersionFile) -> FileResponse:
    """The ``FileResponse`` of one per-version file (404 one-liners when the version lacks it or it is gone)."""
    doc = state.doc(doc_id)
    v = state.version(doc, n)
    if spec.info_key is None:
        path: Any = v.path
    else:
        path = v.info.get(spec.info_key)
        if not path:
            raise _NotFound(*spec.missing)
    name = None if spec.filename is None else (
        download_name(doc, n) if spec.filename == "" else spec.filename.format(stem=Path(doc.name).stem, n=n))
    return FileResponse(_existing(path, spec.what.format(n=n)), media_type=spec.media_type, filename=name,
                        headers={"Cache-Control": "no-store"} if spec.no_store else None)


def _version_file_routes(state: State) -> APIRouter:
    """``GET /api/docs/{d}/v/{n}/download | mask.png | report | workflow.yaml`` through :func:`version_file`."""
    def endpoint(spec: _VersionFile) -> Callable[[str, int], FileResponse]:
        def serve(doc_id: str, n: int) -> FileResponse:
            return version_file(state, doc_id, n, spec)

        return serve

    router = APIRouter()
    for name, spec in VERSION_FILES.items():
        router.add_api_route(f"/api/docs/{{doc_id}}/v/{{n}}/{name}", endpoint(spec), methods=["GET"],
                             name=name.partition(".")[0], response_class=FileResponse)
    return router


def _tile_xy(name: str) -> tuple[int, int]:
    try:
        c, r = name.split("_")
        return int(c), int(r)
    except ValueError:
        raise _NotFound(f"bad tile name '{name}'", "tiles are named COL_ROW") from None
