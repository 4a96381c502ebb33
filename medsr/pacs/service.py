"""medsr inside a PACS: the logic behind the Orthanc plugin routes and the REST client.

Nothing here imports ``orthanc``: Orthanc is reached through an :class:`OrthancAccess`
object (four calls: GET JSON, GET bytes, POST an instance, DELETE). The plugin script
(``orthanc_plugin.py``) builds one from ``orthanc.RestApi*``; ``client.py`` builds one
from ``requests``. So the same code archives and restores in both, and the plugin
script stays a thin adapter (the Orthanc Python plugin is AGPL; this module is not
part of it).

Heavy imports (numpy, torch, pydicom) happen only when a job runs, so loading the
plugin does not slow Orthanc's start.
"""
from __future__ import annotations

import json
import math
import os
import queue
import re
import secrets
import shutil
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

from ..errors import (ArchiveError, DicomError, InputError, MedsrError, ModelError, OutputError, QualityGateError,
                      SeriesError)

# --------------------------------------------------------------------------- ids

#: Orthanc resource ids: a SHA-1 written as five groups of 8 lowercase hex digits (44 chars).
ORTHANC_ID_RE = re.compile(r"^[0-9a-f]{8}(?:-[0-9a-f]{8}){4}$")
#: Archive ids made here: UTC creation time + 12 random hex digits, e.g. 20261126T121232Z-3f9a2b1c4d5e.
ARCHIVE_ID_RE = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{12}$")
#: Job ids: 32 lowercase hex digits.
JOB_ID_RE = re.compile(r"^[0-9a-f]{32}$")
#: Model names a remote caller may ask for: registry names only, never a file path.
MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

ARCHIVE_SUFFIX = ".medsr.h5"


def is_orthanc_id(value: str) -> bool:
    return isinstance(value, str) and bool(ORTHANC_ID_RE.match(value))


def is_archive_id(value: str) -> bool:
    return isinstance(value, str) and bool(ARCHIVE_ID_RE.match(value))


def new_archive_id(now: float | None = None) -> str:
    stamp = datetime.fromtimestamp(time.time() if now is None else now, timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(6)}"


# --------------------------------------------------------------------------- errors

class PacsError(MedsrError):
    """A PACS-side problem; ``http_status`` is what the plugin answers with."""

    exit_code = 1
    http_status = 500


class BadRequest(PacsError):
    """A malformed id, query argument or JSON body."""

    http_status = 400


class UnknownResource(PacsError):
    """No such series / instance in Orthanc, or no such archive / job in medsr."""

    exit_code = 2
    http_status = 404


class OrthancCallError(PacsError):
    """Orthanc refused or failed a REST call (or could not be reached)."""

    http_status = 502


class JobConflict(PacsError):
    """The job is not in a state that allows this (e.g. resuming a job that finished)."""

    http_status = 409


class Busy(PacsError):
    """Too many queued jobs."""

    http_status = 503


def http_status_for(exc: BaseException) -> int:
    """HTTP status the plugin answers for an exception raised by a job or a route."""
    if isinstance(exc, PacsError):
        return exc.http_status
    if isinstance(exc, (QualityGateError, SeriesError, InputError)):
        return 422  # the series exists but is not something medsr archives (or misses the gate)
    if isinstance(exc, OutputError):
        return 409
    if isinstance(exc, ModelError):
        return 400
    if isinstance(exc, (ArchiveError, DicomError)):
        return 500
    if isinstance(exc, MedsrError):
        return 400
    return 500


def error_payload(exc: BaseException, *, scrub: Iterable[tuple[str, str]] = ()) -> dict:
    """JSON body for an error: one line, no traceback; ``scrub`` is (regex, replacement) pairs
    that shorten server paths."""
    if isinstance(exc, MedsrError):
        message = str(exc)
    else:
        first = str(exc).splitlines()[0][:300] if str(exc) else ""
        message = f"internal error: {type(exc).__name__}: {first}".rstrip(": ")
    for pattern, new in scrub:
        message = re.sub(pattern, new, message)
    body = {"error": message, "type": type(exc).__name__, "status": http_status_for(exc)}
    if isinstance(exc, MedsrError):
        body["exit_code"] = exc.exit_code
    return body


# --------------------------------------------------------------------------- Orthanc access

class OrthancAccess(Protocol):
    """The four Orthanc REST calls medsr needs. ``path`` is an Orthanc REST path like ``/series/<id>``."""

    def get_json(self, path: str) -> Any: ...

    def get_bytes(self, path: str) -> bytes: ...

    def post_instance(self, data: bytes) -> dict: ...

    def delete(self, path: str) -> None: ...


class CallableAccess:
    """OrthancAccess over three callables (the plugin passes ``orthanc.RestApiGet/Post/Delete``).

    ``orthanc.OrthancException`` carries the Orthanc error code first; 17 is "Unknown resource".
    """

    UNKNOWN_RESOURCE = "17"

    def __init__(self, get: Callable[[str], bytes], post: Callable[[str, bytes], bytes],
                 delete: Callable[[str], Any]):
        self._get, self._post, self._delete = get, post, delete

    def _call(self, what: str, fn, *args):
        try:
            return fn(*args)
        except MedsrError:
            raise
        except Exception as e:  # orthanc.OrthancException, or a TypeError from a bad call
            code = str(e.args[0]) if e.args else ""
            text = " ".join(str(a) for a in e.args[1:]) or str(e)
            if code == self.UNKNOWN_RESOURCE or "unknown resource" in text.lower():
                raise UnknownResource(f"Orthanc has no {what}") from None
            raise OrthancCallError(f"Orthanc call failed for {what}: {type(e).__name__} {code} {text}".strip()) from None

    def get_json(self, path: str) -> Any:
        raw = self._call(path, self._get, path)
        return json.loads(raw)

    def get_bytes(self, path: str) -> bytes:
        raw = self._call(path, self._get, path)
        return raw.encode() if isinstance(raw, str) else bytes(raw)

    def post_instance(self, data: bytes) -> dict:
        raw = self._call("/instances (upload)", self._post, "/instances", data)
        return json.loads(raw)

    def delete(self, path: str) -> None:
        self._call(path, self._delete, path)


# --------------------------------------------------------------------------- core: fetch, archive, restore

@dataclass(frozen=True)
class FetchedSeries:
    """One Orthanc series copied to a local folder (one file per instance, named by instance id)."""

    series_id: str
    study_id: str
    instances: tuple[str, ...]
    folder: Path
    series_instance_uid: str = ""
    series_description: str = ""
    modality: str = ""


def fetch_series(access: OrthancAccess, series_id: str, folder: Path) -> FetchedSeries:
    """Copy every instance of an Orthanc series, byte for byte, into ``folder`` (created, owner-only)."""
    if not is_orthanc_id(series_id):
        raise BadRequest(f"malformed Orthanc series id {series_id[:60]!r} (expected 5 groups of 8 hex digits)")
    series = access.get_json(f"/series/{series_id}")
    if not isinstance(series, dict) or "Instances" not in series:
        raise OrthancCallError(f"Orthanc answered an unexpected object for series {series_id}")
    instances = tuple(series["Instances"])
    if not instances:
        raise InputError(f"Orthanc series {series_id} has no instances")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    for iid in instances:
        if not is_orthanc_id(iid):
            raise OrthancCallError(f"Orthanc listed a malformed instance id {iid[:60]!r}")
        data = access.get_bytes(f"/instances/{iid}/file")
        path = folder / f"{iid}.dcm"
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            f.write(data)
    tags = series.get("MainDicomTags") or {}
    return FetchedSeries(series_id=series_id, study_id=str(series.get("ParentStudy", "")), instances=instances,
                         folder=folder, series_instance_uid=str(tags.get("SeriesInstanceUID", "")),
                         series_description=str(tags.get("SeriesDescription", "")),
                         modality=str(tags.get("Modality", "")))


def delete_series_if_unchanged(access: OrthancAccess, fetched: FetchedSeries) -> tuple[bool, str]:
    """Delete the series from Orthanc only if it still holds exactly the archived instances.

    Returns (deleted, reason-if-not).
    """
    try:
        now = access.get_json(f"/series/{fetched.series_id}")
    except UnknownResource:
        return False, "the series was already gone from Orthanc"
    if set(now.get("Instances", ())) != set(fetched.instances):
        return False, "the series gained or lost instances while it was archived; it was NOT deleted"
    access.delete(f"/series/{fetched.series_id}")
    return True, ""


def archive_orthanc_series(access: OrthancAccess, series_id: str, archive_path: Path, options=None, *,
                           delete_original: bool = False, workdir: Path | None = None):
    """Fetch an Orthanc series, archive it to ``archive_path``, optionally delete it from Orthanc.

    Deletion happens only after ``archive_series`` re-read and verified the written
    archive and matched every archived instance's SHA-256 against the fetched bytes,
    and only if Orthanc still holds exactly the archived instances.
    Returns ``(ArchiveResult, FetchedSeries, deleted_from_orthanc, warnings)``.
    """
    from ..api import ArchiveOptions, archive_series

    options = options or ArchiveOptions()
    own_tmp = workdir is None
    work = Path(workdir) if workdir is not None else Path(_mkdtemp(Path(archive_path).parent))
    try:
        fetched = fetch_series(access, series_id, work / "src")
        # delete_original here deletes our temporary copies, after verifying the archive:
        # that verification is the gate for deleting the series from Orthanc below.
        result = archive_series(fetched.folder, Path(archive_path), replace(options, delete_original=delete_original))
        deleted, warnings = False, []
        if delete_original:
            if len(result.deleted) != len(fetched.instances):
                warnings.append("not every archived file was verified; the series was NOT deleted")
            else:
                try:
                    deleted, reason = delete_series_if_unchanged(access, fetched)
                except PacsError as e:  # the archive is written and verified: report, do not fail
                    deleted, reason = False, f"deleting the series from Orthanc failed: {e}"
                if reason:
                    warnings.append(reason)
        return result, fetched, deleted, warnings
    finally:
        if own_tmp:
            shutil.rmtree(work, ignore_errors=True)


def upload_files(access: OrthancAccess, files: Iterable[Path]) -> dict:
    """POST each DICOM file to Orthanc; they must land in exactly one series. -> series_id, study_id, instances."""
    instances, series, studies = [], set(), set()
    for f in files:
        answer = access.post_instance(Path(f).read_bytes())
        status = answer.get("Status", "")
        if status not in ("Success", "AlreadyStored"):
            raise OrthancCallError(f"Orthanc did not store {Path(f).name}: status {status or 'missing'}")
        instances.append(answer["ID"])
        series.add(answer["ParentSeries"])
        studies.add(answer["ParentStudy"])
    if not instances:
        raise InputError("no DICOM files to upload")
    if len(series) != 1:
        raise SeriesError(f"the uploaded files landed in {len(series)} Orthanc series, not one")
    return {"series_id": series.pop(), "study_id": studies.pop(), "instances": instances}


def restore_into_orthanc(access: OrthancAccess, archive_path: Path, options=None, *,
                         workdir: Path | None = None) -> dict:
    """Restore an archive to derived DICOM files and upload them: a new series in the original study."""
    from ..api import RestoreOptions, restore_archive

    options = options or RestoreOptions()
    if options.format != "dicom":
        raise MedsrError("only DICOM restores can be sent to Orthanc")
    own_tmp = workdir is None
    work = Path(workdir) if workdir is not None else Path(_mkdtemp(Path(archive_path).parent))
    try:
        res = restore_archive(Path(archive_path), work / "restored", options)
        uploaded = upload_files(access, res.files)
        series = access.get_json(f"/series/{uploaded['series_id']}")
        tags = series.get("MainDicomTags") or {}
        return {"series_id": uploaded["series_id"], "study_id": uploaded["study_id"],
                "instances": uploaded["instances"], "series_instance_uid": str(tags.get("SeriesInstanceUID", "")),
                "slices": res.slices, "method": res.method, "model_id": res.model_id, "device": res.device,
                "warnings": list(res.warnings), "seconds": round(res.seconds, 3)}
    finally:
        if own_tmp:
            shutil.rmtree(work, ignore_errors=True)


def _mkdtemp(near: Path) -> str:
    import tempfile

    from ..api import temp_prefix

    base = near if near.is_dir() and os.access(near, os.W_OK) else None
    return tempfile.mkdtemp(prefix=temp_prefix("pacs"), dir=base)  # owner-aware: see clean_stale_temps


# --------------------------------------------------------------------------- archive store

class ArchiveStore:
    """A folder of ``<archive_id>.medsr.h5`` files, each with a ``<archive_id>.json`` sidecar.

    Ids are validated against :data:`ARCHIVE_ID_RE` before any path is built, so a
    request can never name a file outside the store.
    """

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.work = self.root / ".work"
        shutil.rmtree(self.work, ignore_errors=True)  # left by a killed Orthanc
        self.work.mkdir(mode=0o700, exist_ok=True)

    def _checked(self, archive_id: str, suffix: str) -> Path:
        if not is_archive_id(archive_id):
            raise BadRequest(f"malformed archive id {str(archive_id)[:60]!r} (expected like 20260101T120000Z-0123456789ab)")
        path = self.root / f"{archive_id}{suffix}"
        if path.parent != self.root:  # cannot happen with a valid id; belt and braces
            raise BadRequest("archive id escapes the store")
        return path

    def archive_path(self, archive_id: str) -> Path:
        return self._checked(archive_id, ARCHIVE_SUFFIX)

    def existing(self, archive_id: str) -> Path:
        path = self.archive_path(archive_id)
        if not path.is_file():
            raise UnknownResource(f"no archive {archive_id}")
        return path

    def sidecar_path(self, archive_id: str) -> Path:
        return self._checked(archive_id, ".json")

    def report_path(self, archive_id: str) -> Path:
        return self._checked(archive_id, ".report.html")

    def new_id(self) -> str:
        while True:
            aid = new_archive_id()
            if not self.archive_path(aid).exists():
                return aid

    def workdir(self, name: str) -> Path:
        path = self.work / name
        path.mkdir(mode=0o700)
        return path

    def write_sidecar(self, archive_id: str, record: dict) -> None:
        _write_atomic(self.sidecar_path(archive_id), json.dumps(_json_safe(record), indent=1, default=str).encode())

    def read_sidecar(self, archive_id: str) -> dict | None:
        try:
            return json.loads(self.sidecar_path(archive_id).read_text())
        except (OSError, ValueError):
            return None

    def ids(self) -> list[str]:
        return sorted(p.name[:-len(ARCHIVE_SUFFIX)] for p in self.root.glob("*" + ARCHIVE_SUFFIX)
                      if is_archive_id(p.name[:-len(ARCHIVE_SUFFIX)]))


def _write_atomic(path: Path, data: bytes) -> None:
    from ..api import temp_prefix

    tmp = path.with_name(f"{temp_prefix()}{uuid.uuid4().hex}")
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# --------------------------------------------------------------------------- jobs

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


# --------------------------------------------------------------------------- HTTP-ish service

@dataclass(frozen=True)
class Request:
    """What a route sees. Orthanc gives plugins query arguments for GET only, so POST routes
    also read ``wait``/``timeout`` from the JSON body and the ``Prefer`` header (RFC 7240)."""

    query: dict
    body: bytes
    headers: dict


@dataclass(frozen=True)
class Response:
    status: int
    body: str
    content_type: str = "application/json"
    allow: str = ""  # for 405: the allowed methods


def _seconds(value, limit: float) -> float:
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise BadRequest("timeout must be a number of seconds") from None
    if not (0 <= t <= limit):
        raise BadRequest(f"timeout must be between 0 and {limit:g} seconds")
    return t


def _json_safe(obj: Any) -> Any:
    """NaN/inf -> null (strict JSON), tuples -> lists, recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def json_response(obj: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(_json_safe(obj), default=str, allow_nan=False))


@dataclass(frozen=True)
class ServiceConfig:
    archive_store: Path
    wait_timeout: float = 120.0  # seconds a POST waits for its job by default
    max_wait: float = 600.0  # the most a caller may ask for with ?timeout=
    max_queued: int = 16
    device: str = "auto"
    method: str = "auto"
    model: str | None = None

    @classmethod
    def from_orthanc(cls, config: dict, cwd: Path | None = None) -> "ServiceConfig":
        """Read the ``"Medsr"`` section of Orthanc's configuration.

        ``ArchiveStore`` defaults to ``medsr-archives`` beside Orthanc's ``StorageDirectory``.
        """
        section = config.get("Medsr") or {}
        if not isinstance(section, dict):
            raise MedsrError('configuration "Medsr" must be a JSON object')
        base = Path(cwd or os.getcwd())
        store = section.get("ArchiveStore")
        if not store:
            storage = Path(config.get("StorageDirectory") or "OrthancStorage")
            storage = storage if storage.is_absolute() else base / storage
            store = storage.resolve().parent / "medsr-archives"
        store = Path(store)
        model = section.get("Model")
        if model is not None and not MODEL_NAME_RE.match(str(model)):
            raise MedsrError(f'configuration "Medsr.Model" {model!r} is not a model name')
        return cls(archive_store=store if store.is_absolute() else base / store,
                   wait_timeout=float(section.get("WaitTimeout", cls.wait_timeout)),
                   max_wait=float(section.get("MaxWaitTimeout", cls.max_wait)),
                   max_queued=int(section.get("MaxQueuedJobs", cls.max_queued)),
                   device=str(section.get("Device", cls.device)), method=str(section.get("Method", cls.method)),
                   model=model)


_ARCHIVE_BODY = {"delete_original": bool, "min_psnr": float, "min_ssim": float, "min_psnr_fg": float,
                 "keep_below_threshold": bool, "method": str, "model": str, "baselines": bool,
                 "base": str, "base_near": float, "floor_psnr_fg": float, "floor_ssim": float, "floor_fallback": str,
                 "ensemble": float, "ratio": float,
                 "wait": bool, "timeout": float}
_RESTORE_BODY = {"method": str, "model": str, "wait": bool, "timeout": float}
_AUDIT_KEYS = ("slices", "original_bytes", "archive_bytes", "ratio", "pixel_ratio", "method", "model_id", "ensemble", "operator",
               "psnr", "ssim", "psnr_fg", "ssim_fg", "psnr_bicubic", "ssim_bicubic", "psnr_fg_bicubic",
               "ssim_fg_bicubic", "psnr_j2k", "ssim_j2k", "psnr_fg_j2k", "ssim_fg_j2k", "below_threshold", "seconds")


class MedsrService:
    """Routes under ``/medsr``; ``handle`` turns one request into a :class:`Response` and never raises."""

    def __init__(self, access: OrthancAccess, config: ServiceConfig, *, log: Callable[[str], None] | None = None):
        self.access = access
        self.config = config
        self.store = ArchiveStore(config.archive_store)
        self._log = log or (lambda msg: None)
        from ..api import JobLedger

        ledger = JobLedger(self.store.root)  # <store>/jobs.sqlite: job states survive a restart
        interrupted = ledger.mark_interrupted()
        if interrupted:
            self._log(f"medsr: {len(interrupted)} jobs were interrupted by the last stop: {', '.join(interrupted)} "
                      "(POST /medsr/jobs/<id>/resume runs one again)")
        self.jobs = JobRunner(max_queued=config.max_queued, log=self._log, scrub=self._scrub_pairs, ledger=ledger)
        self._routes: list[tuple[re.Pattern, dict[str, Callable]]] = [
            (re.compile(r"^/medsr/?$"), {"GET": self._status}),
            (re.compile(r"^/medsr/series/([^/]*)/archive$"), {"POST": self._archive}),
            (re.compile(r"^/medsr/archives/?$"), {"GET": self._list}),
            (re.compile(r"^/medsr/archives/([^/]*)$"), {"GET": self._info}),
            (re.compile(r"^/medsr/archives/([^/]*)/report$"), {"GET": self._report}),
            (re.compile(r"^/medsr/archives/([^/]*)/restore$"), {"POST": self._restore}),
            (re.compile(r"^/medsr/jobs/?$"), {"GET": self._jobs}),
            (re.compile(r"^/medsr/jobs/([^/]*)$"), {"GET": self._job}),
            (re.compile(r"^/medsr/jobs/([^/]*)/resume$"), {"POST": self._resume}),
        ]

    # ---- entry point

    def handle(self, method: str, uri: str, query: dict | None = None, body: bytes | str | None = None,
               headers: dict | None = None) -> Response:
        try:
            for pattern, methods in self._routes:
                m = pattern.match(uri)
                if m is None:
                    continue
                fn = methods.get(method.upper())
                if fn is None:
                    allowed = ",".join(sorted(methods))
                    return Response(405, json.dumps({"error": f"{method} not allowed here (use {allowed})",
                                                     "status": 405}), allow=allowed)
                raw = body.encode() if isinstance(body, str) else bytes(body or b"")
                req = Request(query={str(k): str(v) for k, v in (query or {}).items()}, body=raw,
                              headers={str(k).lower(): str(v) for k, v in (headers or {}).items()})
                return fn(*m.groups(), req=req)
            raise UnknownResource(f"no medsr route {uri[:100]}")
        except BaseException as e:  # noqa: BLE001 - answer, never crash Orthanc's callback
            if not isinstance(e, MedsrError):
                self._log(f"medsr route {method} {uri[:100]} crashed:\n{traceback.format_exc()}")
            return json_response(error_payload(e, scrub=self._scrub_pairs()), http_status_for(e))

    def _scrub_pairs(self) -> list[tuple[str, str]]:
        work, root = re.escape(str(self.store.work)), re.escape(str(self.store.root))
        return [(work + r"/[0-9a-f]{32}/src/", "instance "), (work + r"/[0-9a-f]{32}/src", "the fetched series"),
                (work + r"/[0-9a-f]{32}/?", ""), (root + "/", ""), (root, "<archive store>")]

    # ---- helpers

    @staticmethod
    def _body(raw: bytes, allowed: dict[str, type]) -> dict:
        try:
            body = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("the request body is not UTF-8 JSON") from None
        if not body.strip():
            return {}
        try:
            obj = json.loads(body)
        except ValueError:
            raise BadRequest("the request body is not valid JSON") from None
        if not isinstance(obj, dict):
            raise BadRequest("the request body must be a JSON object")
        unknown = sorted(set(obj) - set(allowed))
        if unknown:
            raise BadRequest(f"unknown option(s) {', '.join(unknown)[:200]} (allowed: {', '.join(allowed)})")
        out = {}
        for key, value in obj.items():
            kind = allowed[key]
            if value is None:
                continue
            if kind is bool and not isinstance(value, bool):
                raise BadRequest(f"option {key} must be true or false")
            if kind is float:
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise BadRequest(f"option {key} must be a number")
                value = float(value)
            if kind is str and not isinstance(value, str):
                raise BadRequest(f"option {key} must be a string")
            out[key] = value
        if "model" in out and not MODEL_NAME_RE.match(out["model"]):
            raise BadRequest("option model must be a model name (see `medsr models`), not a path")
        return out

    def _wait_args(self, req: Request, opts: dict | None = None) -> tuple[bool, float]:
        """(wait, timeout): JSON body ``wait``/``timeout``, else ``?wait=``/``?timeout=`` (GET only in
        Orthanc), else ``Prefer: respond-async`` / ``Prefer: wait=N``; default wait up to WaitTimeout."""
        opts = opts or {}
        prefer = [p.strip().lower() for p in req.headers.get("prefer", "").split(",") if p.strip()]
        wait, timeout = True, self.config.wait_timeout
        if "respond-async" in prefer:
            wait = False
        for p in prefer:
            if p.startswith("wait="):
                timeout = _seconds(p[5:], self.config.max_wait)
        if "wait" in req.query:
            raw = req.query["wait"].lower()
            if raw not in ("true", "1", "yes", "false", "0", "no"):
                raise BadRequest("wait must be true or false")
            wait = raw in ("true", "1", "yes")
        if "timeout" in req.query:
            timeout = _seconds(req.query["timeout"], self.config.max_wait)
        if "wait" in opts:
            wait = bool(opts["wait"])
        if "timeout" in opts:
            timeout = _seconds(opts["timeout"], self.config.max_wait)
        return wait, timeout

    def _run(self, kind: str, target: str, fn: Callable[[Job], dict], wait_args: tuple[bool, float],
             on_done: Callable[[dict], Response] | None = None, params: dict | None = None,
             on_submit: Callable[[Job], None] | None = None) -> Response:
        wait, timeout = wait_args
        job = self.jobs.submit(kind, target, fn, params)
        if on_submit is not None:
            on_submit(job)
        if wait and job.done.wait(timeout):
            if job.state == "done":
                result = dict(job.result or {})
                return on_done(result) if on_done else json_response({**result, "job_id": job.id})
            return json_response({**(job.error or {}), "job_id": job.id}, job.http_status)
        return json_response({"job_id": job.id, "state": job.state, "status_url": f"/medsr/jobs/{job.id}"}, 202)

    # ---- routes

    def _status(self, *, req: Request) -> Response:
        from .. import __version__

        jobs = self.jobs.jobs()
        return json_response({"medsr": __version__, "archives": len(self.store.ids()),
                              "jobs": {s: sum(1 for j in jobs if j.state == s)
                                       for s in ("queued", "running", "done", "failed")},
                              "routes": ["POST /medsr/series/{id}/archive", "GET /medsr/archives",
                                         "GET /medsr/archives/{id}", "GET /medsr/archives/{id}/report",
                                         "POST /medsr/archives/{id}/restore", "GET /medsr/jobs",
                                         "GET /medsr/jobs/{id}", "POST /medsr/jobs/{id}/resume"]})

    def _archive(self, series_id: str, *, req: Request) -> Response:
        if not is_orthanc_id(series_id):
            raise BadRequest(f"malformed Orthanc series id {series_id[:60]!r} (expected 5 groups of 8 hex digits)")
        opts = self._body(req.body, _ARCHIVE_BODY)
        wait_args = self._wait_args(req, opts)  # 400 now, not after queuing
        opts.pop("wait", None), opts.pop("timeout", None)
        if opts.get("method") not in (None, "auto", "model", "bicubic"):
            raise BadRequest("option method must be auto, model or bicubic")
        self._check_storage_options(opts)
        self.access.get_json(f"/series/{series_id}")  # 404 now, not in the job
        return self._run("archive", series_id, lambda job: self._do_archive(job, series_id, opts), wait_args,
                         params={"series_id": series_id, "opts": dict(opts)})  # what a resume needs

    def _check_storage_options(self, opts: dict) -> None:
        """400 now, not in the job: the request's options checked by ``ArchiveOptions`` itself (the same checks
        as the CLI and the batch runner: base, base_near, ensemble, floor_*; docs/base-codec.md, docs/floor.md)."""
        from ..api import ArchiveOptions

        for key in ("base_near", "ensemble"):  # JSON numbers: whole numbers only
            if key in opts:
                if opts[key] != int(opts[key]):
                    raise BadRequest(f"option {key} must be a whole number")
                opts[key] = int(opts[key])
        if "base_near" in opts and opts.get("base") in (None, "lossless"):
            raise BadRequest("option base_near needs base near-lossless or lossy")
        fields = {k: v for k, v in opts.items() if k != "delete_original"}
        try:
            ArchiveOptions(device=self.config.device, **{"method": self.config.method, "model": self.config.model,
                                                         **fields})
        except MedsrError as e:
            raise BadRequest(str(e)) from None

    def _do_archive(self, job: Job, series_id: str, opts: dict) -> dict:
        from ..api import ArchiveOptions

        delete = bool(opts.pop("delete_original", False))
        options = ArchiveOptions(device=self.config.device, method=opts.pop("method", self.config.method),
                                 model=opts.pop("model", self.config.model), **opts)
        aid = self.store.new_id()
        work = self.store.workdir(job.id)
        try:
            result, fetched, deleted, warnings = archive_orthanc_series(
                self.access, series_id, self.store.archive_path(aid), options, delete_original=delete, workdir=work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        summary = result.summary()
        record = {"archive_id": aid, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "archive_file": result.archive.name, "series_id": series_id, "study_id": fetched.study_id,
                  "series_instance_uid": fetched.series_instance_uid,
                  "series_description": fetched.series_description, "modality": fetched.modality,
                  "instances": len(fetched.instances), "deleted_from_orthanc": deleted,
                  "freed_bytes": int(summary.get("original_bytes") or 0) if deleted else 0, "warnings": warnings}
        record.update({k: summary.get(k) for k in _AUDIT_KEYS})
        self.store.write_sidecar(aid, record)
        self._log(f"medsr archived Orthanc series {series_id} as {aid} (ratio {summary.get('ratio')}, "
                  f"PSNR {summary.get('psnr')} dB){'; deleted from Orthanc' if deleted else ''}")
        return record

    def _list(self, *, req: Request) -> Response:
        items = []
        for aid in self.store.ids():
            rec = self.store.read_sidecar(aid)
            if rec is None:  # an archive copied in by hand: describe it from its own metadata
                try:
                    from ..api import open_archive

                    info = open_archive(self.store.archive_path(aid))
                    rec = {"archive_id": aid, "created": info.created, "archive_file": info.path.name,
                           "series_instance_uid": info.series_uid, "slices": info.n_slices,
                           "ratio": round(info.ratio, 3), "method": info.method, "model_id": info.model_id}
                except MedsrError as e:
                    rec = {"archive_id": aid, "error": error_payload(e, scrub=self._scrub_pairs())["error"]}
            items.append(rec)
        freed = [r for r in items if r.get("deleted_from_orthanc")]
        return json_response({"archives": items, "count": len(items),
                              "freed": {"originals": len(freed), "bytes": sum(int(r.get("freed_bytes") or 0)
                                                                              for r in freed)}})

    def _info(self, archive_id: str, *, req: Request) -> Response:
        from ..api import flat_audit, open_archive

        path = self.store.existing(archive_id)
        info = open_archive(path)
        d = info.to_dict()
        d["path"] = path.name
        d = {"archive_id": archive_id, **d}
        d["audit"] = flat_audit(info.audit or {})
        side = self.store.read_sidecar(archive_id) or {}
        d["orthanc"] = {k: side.get(k) for k in ("series_id", "study_id", "deleted_from_orthanc", "instances")
                        if k in side}
        if req.query.get("verify", "false").lower() in ("true", "1", "yes"):
            from ..api import verify_archive

            v = verify_archive(path)
            d["verify"] = {"ok": v.ok, "problems": list(v.problems)}
        return json_response(d)

    def _report(self, archive_id: str, *, req: Request) -> Response:
        path = self.store.existing(archive_id)
        cached = self.store.report_path(archive_id)

        def serve(_result=None) -> Response:
            return Response(200, cached.read_text(encoding="utf-8"), "text/html; charset=utf-8")

        if cached.is_file() and req.query.get("refresh", "false").lower() not in ("true", "1", "yes"):
            return serve()
        wait_args = self._wait_args(req)

        def make(job: Job) -> dict:
            from ..api import report_for_archive

            work = self.store.workdir(job.id)
            try:
                _, html = report_for_archive(path, work / "report", force=True)
                _write_atomic(cached, Path(html).read_bytes())
            finally:
                shutil.rmtree(work, ignore_errors=True)
            return {"archive_id": archive_id, "report_url": f"/medsr/archives/{archive_id}/report"}

        return self._run("report", archive_id, make, wait_args, on_done=serve)

    def _restore(self, archive_id: str, *, req: Request) -> Response:
        path = self.store.existing(archive_id)
        opts = self._body(req.body, _RESTORE_BODY)
        wait_args = self._wait_args(req, opts)
        if opts.get("method") not in (None, "model", "bicubic", "nearest"):
            raise BadRequest("option method must be model, bicubic or nearest")

        def do(job: Job) -> dict:
            from ..api import RestoreOptions

            options = RestoreOptions(method=opts.get("method"), model=opts.get("model"), device=self.config.device)
            work = self.store.workdir(job.id)
            try:
                out = restore_into_orthanc(self.access, path, options, workdir=work)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            side = self.store.read_sidecar(archive_id) or {}
            out = {"archive_id": archive_id, **out}
            if side.get("study_id"):
                out["same_study"] = out["study_id"] == side["study_id"]
            self._log(f"medsr restored archive {archive_id} into Orthanc series {out['series_id']}")
            return out

        return self._run("restore", archive_id, do, wait_args)

    def _jobs(self, *, req: Request) -> Response:
        return json_response({"jobs": self.jobs.describe_all()})

    def _job(self, job_id: str, *, req: Request) -> Response:
        return json_response(self.jobs.describe(job_id))

    def _resume(self, job_id: str, *, req: Request) -> Response:
        """Run an archive job a restart interrupted again, with its recorded parameters."""
        row = self.jobs.describe(job_id)  # 400 malformed, 404 unknown
        if row["state"] != "interrupted":
            raise JobConflict(f"job {job_id} is {row['state']}: only interrupted jobs can be resumed")
        params = self.jobs.ledger.params(job_id) or {}
        if row["kind"] != "archive" or not is_orthanc_id(params.get("series_id", "")):
            raise JobConflict(f"job {job_id} ({row['kind']}) recorded nothing to resume it with; submit it again")
        wait_args = self._wait_args(req, self._body(req.body, {"wait": bool, "timeout": float}))
        series_id, opts = params["series_id"], dict(params.get("opts") or {})
        self.access.get_json(f"/series/{series_id}")  # 404 if the series is gone meanwhile
        return self._run("archive", series_id, lambda job: self._do_archive(job, series_id, dict(opts)), wait_args,
                         params=params, on_submit=lambda job: self.jobs.ledger.mark_resumed(job_id, job.id))


def service_from_orthanc(config_json: str | dict, access: OrthancAccess, *,
                         log: Callable[[str], None] | None = None) -> MedsrService:
    """Build the service from Orthanc's configuration (``orthanc.GetConfiguration()``)."""
    config = json.loads(config_json) if isinstance(config_json, str) else dict(config_json)
    return MedsrService(access, ServiceConfig.from_orthanc(config), log=log)


__all__ = ["ARCHIVE_ID_RE", "ORTHANC_ID_RE", "ArchiveStore", "BadRequest", "Busy", "CallableAccess", "FetchedSeries",
           "JobRunner", "MedsrService", "OrthancAccess", "OrthancCallError", "PacsError", "Response",
           "ServiceConfig", "UnknownResource", "archive_orthanc_series", "delete_series_if_unchanged",
           "fetch_series", "http_status_for", "is_archive_id", "is_orthanc_id", "new_archive_id",
           "restore_into_orthanc", "service_from_orthanc", "upload_files"]
