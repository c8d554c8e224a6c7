"""Edit jobs: one worker thread per engine (one job per engine at a time, the rest queued), live progress, cancel.

A job runs a callable ``work(progress)`` in its engine's worker thread; ``progress(stage, done, total)`` updates
what the page streams (stage, i/n, ETA) and raises :class:`JobCancelled` once cancel was asked, which unwinds the
library call at its next progress report. The HTTP server's own threads never run engine work, so it stays
responsive while an edit runs.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from crispedit.errors import CrispEditError

_ids = itertools.count(1)


class JobCancelled(Exception):
    """Raised inside a running job's progress callback after the user pressed cancel."""


@dataclass
class Job:
    """One queued or running edit, as the page sees it (:meth:`to_dict`)."""

    engine: str
    doc_id: str
    work: Callable[[Callable[[str, int, int], None]], Any]
    id: str = field(default_factory=lambda: f"j{next(_ids)}")
    state: str = "queued"  # queued, running, done, failed, cancelled
    stage: str = "queued"
    done: int = 0
    total: int = 0
    eta_s: Optional[float] = None
    error: Optional[str] = None
    result: Any = None
    created: float = field(default_factory=time.time)
    started: Optional[float] = None
    finished: Optional[float] = None
    seq: int = 0  # bumped on every change, for the event stream
    _cancel: threading.Event = field(default_factory=threading.Event)
    _stage_t0: float = 0.0
    _t0: float = 0.0

    @property
    def finished_state(self) -> bool:
        return self.state in ("done", "failed", "cancelled")

    def cancel(self) -> None:
        self._cancel.set()

    def progress(self, stage: str, done: int, total: int) -> None:
        """The library's ``progress(stage, done, total)`` callback: record, estimate the ETA, honour cancel."""
        if self._cancel.is_set():
            raise JobCancelled()
        now = time.perf_counter()
        if ": " not in stage:  # a workflow node finished: done/total nodes, ETA from the whole run so far
            self.eta_s = round((now - self._t0) / done * (total - done), 1) if 0 < done <= total else None
        elif stage != self.stage or done < self.done:  # a new stage inside a node (e.g. tiles, denoise)
            self._stage_t0 = now
            self.eta_s = None
        elif done > 0 and total >= done:
            self.eta_s = round((now - self._stage_t0) / done * (total - done), 1)
        self.stage, self.done, self.total = stage, int(done), int(total)
        self.seq += 1

    def to_dict(self) -> dict[str, Any]:
        d = {"id": self.id, "doc": self.doc_id, "engine": self.engine, "state": self.state, "stage": self.stage,
             "done": self.done, "total": self.total, "eta_s": self.eta_s, "error": self.error, "seq": self.seq}
        if self.started:
            d["elapsed_s"] = round((self.finished or time.time()) - self.started, 1)
        if isinstance(self.result, dict):
            d["result"] = self.result
        return d


class JobQueue:
    """Per-engine FIFO queues, each served by one daemon worker thread."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self._queues: dict[str, queue.Queue] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, job: Job) -> Job:
        with self._lock:
            self.jobs[job.id] = job
            q = self._queues.get(job.engine)
            if q is None:
                q = self._queues[job.engine] = queue.Queue()
                t = threading.Thread(target=self._worker, args=(q,), name=f"crispedit-{job.engine}", daemon=True)
                self._threads[job.engine] = t
                t.start()
            q.put(job)
        return job

    def position(self, job: Job) -> int:
        """How many jobs for the same engine run or wait before this one (0 = running or next)."""
        ahead = [j for j in self.jobs.values() if j.engine == job.engine and not j.finished_state
                 and j.created < job.created]
        return len(ahead)

    def _worker(self, q: queue.Queue) -> None:
        while True:
            job = q.get()
            if job is None:
                return
            if job._cancel.is_set():
                job.state, job.stage, job.finished = "cancelled", "cancelled", time.time()
                job.seq += 1
                continue
            job.state, job.stage, job.started = "running", "starting", time.time()
            job._stage_t0 = job._t0 = time.perf_counter()
            job.seq += 1
            try:
                job.result = job.work(job.progress)
                job.state, job.stage = "done", "done"
            except JobCancelled:
                job.state, job.stage = "cancelled", "cancelled"
            except CrispEditError as exc:
                job.state, job.error = "failed", str(exc)
            except Exception as exc:  # noqa: BLE001 - shown in the page; the server keeps running
                if _cancelled_inside(exc):
                    job.state, job.stage = "cancelled", "cancelled"
                else:
                    traceback.print_exc()
                    job.state, job.error = "failed", f"internal error: {type(exc).__name__}: {exc}"
            job.finished = time.time()
            job.seq += 1

    def shutdown(self) -> None:
        with self._lock:
            for j in self.jobs.values():
                j.cancel()
            for q in self._queues.values():
                q.put(None)


def _cancelled_inside(exc: BaseException) -> bool:
    seen = set()
    e: Optional[BaseException] = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, JobCancelled):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False
