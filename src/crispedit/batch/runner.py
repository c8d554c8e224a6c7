"""Run planned batch items: a local process pool (default) or Ray tasks; skip what is complete; assemble the dataset.

Local: :class:`concurrent.futures.ProcessPoolExecutor` (spawned processes) sized to the cores and to the memory
the items need. A worker that dies (killed, out of memory) breaks the pool; the pool is restarted and the items
without a record are submitted again; an item that breaks a pool on its own three times is recorded as failed.

Ray: each item is one task (``ray.remote``) with its resources declared (``num_cpus``, ``memory`` estimated from
the image size, ``num_gpus`` for SD engines when the cluster has GPUs), so large items do not overcommit a node;
Ray retries a task whose worker or node died (``max_retries``). Outputs are keyed and atomic, so a retried or
repeated item writes the same files and one record: every item is done exactly once in the dataset.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from crispedit.batch.table import Item
from crispedit.batch.worker import failed_record, is_complete, read_record, run_item
from crispedit.errors import InputError

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 3

OnRecord = Callable[[dict[str, Any]], None]


@dataclass
class BatchResult:
    """What a batch run did: counts and the records of this run (skipped items are counted, not repeated)."""

    total: int
    skipped: int = 0
    ok: int = 0
    failed: int = 0
    interrupted: bool = False
    runner: str = "local"
    workers: int = 1
    seconds: float = 0.0
    records: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "skipped": self.skipped, "ok": self.ok, "failed": self.failed,
                "interrupted": self.interrupted, "runner": self.runner, "workers": self.workers,
                "seconds": round(self.seconds, 3),
                "failed_items": [{"row": r["row"], "key": r["key"], "error": r.get("error")}
                                 for r in self.records if r.get("status") != "ok"]}


def auto_workers(items: list[Item]) -> int:
    """Local workers: the cores, capped by available memory over the largest item's estimated need (>= 1) and,
    when items need a GPU and CUDA is here, by the number of GPUs."""
    import psutil

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    need = max((it.resources.get("memory", 0) for it in items), default=0) or 1
    by_mem = int(psutil.virtual_memory().available * 0.8 // need)
    n = max(1, min(cores, by_mem, len(items) or 1))
    if any(it.resources.get("num_gpus") for it in items):
        gpus = _local_gpus()
        if gpus:  # one SD pipeline per GPU: more workers would each load the model onto the same card
            n = min(n, gpus)
    return n


def _local_gpus() -> int:
    """CUDA devices visible here (0 without torch or CUDA)."""
    try:
        import torch

        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - no usable torch/CUDA means no GPU
        return 0


def _die_with_parent() -> None:
    """Linux: have the kernel SIGKILL this worker when the batch process dies (``prctl(PR_SET_PDEATHSIG)``), so a
    driver killed outright (SIGKILL, out of memory) leaves no worker waiting forever; elsewhere a no-op."""
    if not os.uname().sysname == "Linux":
        return
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - no prctl: keep the default
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def _init_worker(threads: int) -> None:
    """Per worker: die with the batch process; share the cores between the workers (OpenCV and torch pools)."""
    _die_with_parent()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))
    try:
        import cv2

        cv2.setNumThreads(threads)
    except ImportError:  # pragma: no cover
        pass


def run_local(items: list[Item], workers: int, on_record: OnRecord) -> None:
    """Run ``items`` in a process pool of ``workers`` spawned processes; call ``on_record`` per finished item.

    Parameters
    ----------
    items : the items to run (none of them complete).
    workers : pool size; each worker gets ``cores // workers`` OpenCV / BLAS threads.
    on_record : called in this process with each item's record (also for items recorded as failed here).

    Notes
    -----
    Library: :class:`concurrent.futures.ProcessPoolExecutor` (``spawn`` context). A dead worker breaks the
    pool; the pool is restarted and the items without a complete record run again (exactly once in the
    dataset because outputs are keyed and atomic). After a round that finishes nothing, the items run one at a
    time, in order, until the culprit is known: the first unfinished item then counts an attempt (the items
    that were merely running beside it do not), and after :data:`MAX_ATTEMPTS` it is recorded as failed.
    """
    cores = os.cpu_count() or 1
    threads = max(1, cores // max(1, workers))
    pending = {it.key: it for it in items}
    attempts = {k: 0 for k in pending}
    ctx = mp.get_context("spawn")
    isolate = False  # one worker: items run in submission order, so the first unfinished one killed the pool
    while pending:
        finished_this_round = 0
        pool = ProcessPoolExecutor(max_workers=1 if isolate else min(workers, len(pending)), mp_context=ctx,
                                   initializer=_init_worker, initargs=(threads,))
        broken = False
        try:
            futures = {pool.submit(run_item, it.spec): it for it in pending.values()}
            not_done = set(futures)
            while not_done:
                done, not_done = wait(not_done, timeout=0.5, return_when=FIRST_COMPLETED)
                for fut in done:
                    it = futures[fut]
                    try:
                        rec = fut.result()
                    except BrokenProcessPool:
                        broken = True
                        continue
                    except Exception as exc:  # noqa: BLE001 - e.g. a result that cannot travel back
                        rec = failed_record(it.spec, f"{type(exc).__name__}: {exc}", type(exc).__name__)
                    pending.pop(it.key, None)
                    finished_this_round += 1
                    on_record(rec)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            for it in list(pending.values()):  # items that finished while the pool shut down count as done
                done_rec = read_record(Path(it.spec["record"])) if is_complete(it.spec) else None
                if done_rec is not None:
                    on_record(done_rec)
            raise
        pool.shutdown(wait=True, cancel_futures=True)
        if not broken:
            break
        # A worker died: items whose record is complete were finished before the break (their result was lost
        # with the pool); the others run again. A round that finished nothing counts as an attempt for each.
        logger.warning("a batch worker process died; %d item(s) not yet recorded run again%s", len(pending),
                       "" if isolate else " (one at a time if this repeats)")
        for key in list(pending):
            spec = pending[key].spec
            if is_complete(spec):
                pending.pop(key)
                rec = json.loads(Path(spec["record"]).read_text(encoding="utf-8"))
                on_record(rec)
                finished_this_round += 1
        if finished_this_round == 0 and pending:
            if not isolate and len(pending) > 1:
                isolate = True  # several items were running: find which one kills the worker
                continue
            key = next(iter(pending))
            attempts[key] += 1
            if attempts[key] >= MAX_ATTEMPTS:
                it = pending.pop(key)
                logger.warning("item %s failed: the worker died %d times on it", key, MAX_ATTEMPTS)
                on_record(failed_record(it.spec, f"the worker died {MAX_ATTEMPTS} times on this item "
                                                 "(out of memory? a crash in a library?)"))
                isolate = False


def _ray_init(address: Optional[str], workers: Optional[int]) -> bool:
    """Connect to Ray: an existing session, ``address`` (``auto``, ``ray://host:port``, ``host:port``) or a new
    local cluster; returns True when this call started it (and so should shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    env = {"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"]}} if os.environ.get("PYTHONPATH") else None
    if address in (None, "", "local"):
        ray.init(num_cpus=workers, object_store_memory=200 * 2**20, **kw)
        return True
    check_reachable(address)
    try:
        ray.init(address=address, runtime_env=env, **kw)
    except (ConnectionError, TimeoutError, ValueError) as exc:  # e.g. `auto` with no cluster running here
        raise InputError(f"cannot connect to the Ray cluster at {address}: {str(exc).strip().splitlines()[0]}",
                         "start one (`ray start --head`) or check the address; `--ray` alone starts a local "
                         "cluster") from None
    return True


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a ``host:port`` / ``ray://host:port`` nobody listens on (:func:`ray.init` retries for minutes).

    Raises
    ------
    crispedit.errors.InputError
        The TCP connection to the address is refused or times out (``timeout`` seconds).
    """
    import socket

    host, _, port = address.split("://", 1)[-1].rstrip("/").rpartition(":")
    if not host or not port.isdigit():
        return  # `auto` and other forms: left to Ray
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise InputError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc})",
                         "start it (`ray start --head`) or check the address; `--ray` alone starts a local "
                         "cluster") from None


def run_ray(items: list[Item], address: Optional[str], workers: Optional[int], on_record: OnRecord) -> int:
    """Run each item as a Ray task with declared resources; returns the cluster's CPU count.

    Parameters
    ----------
    items : the items to run.
    address : ``None`` / ``"local"``: start a local cluster (``workers`` CPUs); else ``auto``,
        ``ray://host:port`` or ``host:port`` (see :func:`ray.init`). An already initialised Ray is used as is.
    workers : CPUs of a new local cluster (default: all).
    on_record : called with each item's record.

    Notes
    -----
    Library: Ray tasks (``ray.remote(max_retries=3)``: a task whose worker or node died runs again), with
    ``num_cpus``, ``memory`` (bytes, from the image size, capped at the largest node) and ``num_gpus`` (SD
    engines, when the cluster has GPUs); at most ``max(16, 4 x CPUs)`` tasks in flight, collected with
    ``ray.wait``. Input and output paths must be visible to every node (a shared file system).
    """
    import ray

    started = _ray_init(address, workers)
    refs: dict[Any, Item] = {}
    try:
        cluster = ray.cluster_resources()
        has_gpu = cluster.get("GPU", 0) > 0
        # a request larger than every node would wait forever ("infeasible"): ask for the largest node instead
        node_mem = max((n.get("Resources", {}).get("memory", 0) for n in ray.nodes() if n.get("Alive")), default=0)
        task = ray.remote(max_retries=MAX_ATTEMPTS, retry_exceptions=False)(run_item)
        # Ray's "limit pending tasks" pattern: keep a few tasks per CPU in flight, not the whole table.
        cap = max(16, 4 * int(cluster.get("CPU", 1)))
        queue = list(reversed(items))
        while queue or refs:
            while queue and len(refs) < cap:
                it = queue.pop()
                r = it.resources
                mem = int(min(r.get("memory", 0), node_mem or r.get("memory", 0)))
                opts = {"num_cpus": r.get("num_cpus", 1), "memory": mem or None,
                        "num_gpus": r.get("num_gpus", 0) if has_gpu else 0}
                refs[task.options(**{k: v for k, v in opts.items() if v is not None}).remote(it.spec)] = it
            done, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0.5)
            for ref in done:
                it = refs.pop(ref)
                try:
                    rec = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    logger.warning("ray task for item %s failed: %s", it.key, type(exc).__name__)
                    rec = failed_record(it.spec, f"ray task failed: {type(exc).__name__}: {str(exc)[:500]}",
                                        type(exc).__name__)
                on_record(rec)
        return int(cluster.get("CPU", 0))
    finally:
        for ref in refs:
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass
        if started:
            ray.shutdown()


def _sigterm_interrupts() -> Any:
    """While a batch runs in the main thread, SIGTERM (a job scheduler stopping it, ``kill PID``) stops it as
    Ctrl-C does: tasks cancelled, the pool shut down, finished items kept. Returns the handler to restore (None
    when not the main thread)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)


def run_items(items: list[Item], *, workers: Optional[int] = None, ray_address: Optional[str] = None,
              use_ray: bool = False, on_record: Optional[OnRecord] = None) -> BatchResult:
    """Run the items not yet complete (locally or on Ray) and return counts; records go to ``on_record`` too.

    ``KeyboardInterrupt`` (Ctrl-C, or SIGTERM while running in the main thread) stops the run (pending tasks
    cancelled, pool shut down) and sets ``interrupted``.
    """
    t0 = time.perf_counter()
    todo = [it for it in items if not is_complete(it.spec)]
    res = BatchResult(total=len(items), skipped=len(items) - len(todo), runner="ray" if use_ray else "local")

    def record(rec: dict[str, Any]) -> None:
        res.records.append(rec)
        if rec.get("status") == "ok":
            res.ok += 1
        else:
            res.failed += 1
        if on_record is not None:
            on_record(rec)

    previous = _sigterm_interrupts()
    try:
        if todo and use_ray:
            res.workers = run_ray(todo, ray_address, workers, record)
        elif todo:
            res.workers = workers or auto_workers(todo)
            run_local(todo, res.workers, record)
    except KeyboardInterrupt:
        res.interrupted = True
    finally:
        if previous is not None:
            import signal

            signal.signal(signal.SIGTERM, previous)
    res.seconds = time.perf_counter() - t0
    return res
