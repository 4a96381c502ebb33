"""Jobs: one worker thread running the plugin's archive/restore/report jobs in order, a bounded queue,
and each job's state (recorded in the job ledger, when there is one, so it survives a restart)."""
from __future__ import annotations

import queue
import re
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from ..errors import MedsrError
from .errors import BadRequest, Busy, UnknownResource, error_payload, http_status_for

#: Job ids: 32 lowercase hex digits.
JOB_ID_RE = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class Job:
    id: str
    kind: str
    target: str
    created: float = field(default_factory=time.time)
    state: str = "queued"  # queued | running | done | failed
    started: float | None = None
    finished: float | None = None
    result: dict | None = None
    error: dict | None = None
    http_status: int = 200
    done: threading.Event = field(default_factory=threading.Event, repr=False)

    def to_dict(self) -> dict:
        def iso(t):
            return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")

        d = {"job_id": self.id, "kind": self.kind, "target": self.target, "state": self.state,
             "created": iso(self.created), "started": iso(self.started), "finished": iso(self.finished)}
        if self.result is not None:
            d["result"] = self.result
        if self.error is not None:
            d["error"] = self.error
            d["http_status"] = self.http_status
        return d


class JobRunner:
    """One worker thread running archive/restore/report jobs in order (they are CPU/GPU heavy).

    At most ``max_queued`` jobs wait; more are refused (503). The last ``keep`` finished
    jobs stay queryable.
    """

    def __init__(self, *, max_queued: int = 16, keep: int = 200, log: Callable[[str], None] | None = None,
                 scrub: Callable[[], list[tuple[str, str]]] | None = None, ledger=None):
        self.max_queued, self.keep = max_queued, keep
        self.ledger = ledger  # medsr.io.ledger.JobLedger: states that survive a restart (None: memory only)
        self._log = log or (lambda msg: None)
        self._scrub = scrub or (lambda: [])
        self._jobs: dict[str, Job] = {}
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, kind: str, target: str, fn: Callable[[Job], dict], params: dict | None = None) -> Job:
        with self._lock:
            waiting = sum(1 for j in self._jobs.values() if j.state == "queued")
            if waiting >= self.max_queued:
                raise Busy(f"{waiting} medsr jobs are already queued; try again later")
            job = Job(id=uuid.uuid4().hex, kind=kind, target=target)
            self._record("add", job.id, kind, target, params, created=job.created)
            self._jobs[job.id] = job
            self._forget_old()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="medsr-jobs", daemon=True)
                self._thread.start()
        self._queue.put((job, fn))
        return job

    def get(self, job_id: str) -> Job:
        if not isinstance(job_id, str) or not JOB_ID_RE.match(job_id):
            raise BadRequest(f"malformed job id {str(job_id)[:60]!r} (expected 32 hex digits)")
        job = self._jobs.get(job_id)
        if job is None:
            raise UnknownResource(f"no job {job_id}")
        return job

    def describe(self, job_id: str) -> dict:
        """A job of this run, else one the ledger remembers from an earlier run."""
        try:
            return self.get(job_id).to_dict()
        except UnknownResource:
            row = self.ledger.get(job_id) if self.ledger is not None else None
            if row is None:
                raise
            return row

    def describe_all(self) -> list[dict]:
        here = {j.id: j.to_dict() for j in self.jobs()}
        earlier = [r for r in (self.ledger.list() if self.ledger is not None else []) if r["job_id"] not in here]
        return earlier + list(here.values())

    def _record(self, what: str, *args, **kw) -> None:
        if self.ledger is None:
            return
        try:
            getattr(self.ledger, what)(*args, **kw)
        except Exception as e:  # noqa: BLE001 - a ledger problem must not stop the jobs themselves
            self._log(f"medsr: could not record job state in {self.ledger.path}: {type(e).__name__}: {e}")

    def jobs(self) -> list[Job]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.created)

    def _forget_old(self) -> None:
        done = sorted((j for j in self._jobs.values() if j.state in ("done", "failed")), key=lambda j: j.created)
        for j in done[:max(0, len(done) - self.keep)]:
            self._jobs.pop(j.id, None)

    def _work(self) -> None:
        while True:
            job, fn = self._queue.get()
            job.state, job.started = "running", time.time()
            self._record("running", job.id, job.started)
            try:
                job.result = fn(job)
                job.state = "done"
                self._record("done", job.id, job.result)
            except BaseException as e:  # noqa: BLE001 - a job must never kill the worker
                job.http_status = http_status_for(e)
                job.error = error_payload(e, scrub=self._scrub())
                job.state = "failed"
                self._record("failed", job.id, job.error, job.http_status)
                if not isinstance(e, MedsrError):
                    self._log(f"medsr job {job.id} ({job.kind} {job.target}) crashed:\n{traceback.format_exc()}")
                else:
                    self._log(f"medsr job {job.id} ({job.kind} {job.target}) failed: {job.error['error']}")
            finally:
                job.finished = time.time()
                job.done.set()


__all__ = ["JOB_ID_RE", "Job", "JobRunner"]
