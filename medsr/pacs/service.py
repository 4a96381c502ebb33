"""medsr inside a PACS: the /medsr routes behind the Orthanc plugin (:class:`MedsrService`, configured by
the ``"Medsr"`` section of Orthanc's configuration, :class:`ServiceConfig`).

A route checks its request (a bad one is answered 400 before anything is queued), submits a job and
answers with its result or a job id. What it routes to lives beside it, one job per module:
``errors.py`` (PacsError family, HTTP statuses), ``http_messages.py`` (Request/Response, strict JSON),
``orthanc_access.py`` (fetch, archive, upload, restore through an :class:`OrthancAccess`),
``archive_store.py`` (the store folder and its ids), ``jobs.py`` (the worker thread).

Nothing here imports ``orthanc``: the plugin script (``orthanc_plugin.py``) passes
``orthanc.RestApi*`` in a ``CallableAccess``, so it stays a thin adapter (the Orthanc Python plugin
is AGPL; this module is not part of it). Heavy imports (numpy, torch, pydicom) happen only when a
job runs, so loading the plugin does not slow Orthanc's start.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from ..errors import MedsrError
from .archive_store import ArchiveStore
from .errors import BadRequest, JobConflict, UnknownResource, error_payload, http_status_for
from .http_messages import Request, Response, json_response, seconds_arg
from .jobs import Job, JobRunner
from .orthanc_access import OrthancAccess, archive_orthanc_series, is_orthanc_id, restore_into_orthanc

#: Model names a remote caller may ask for: registry names only, never a file path.
MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


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
                 "ensemble": float, "ratio": float, "ratio_search": str,
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
                timeout = seconds_arg(p[5:], self.config.max_wait)
        if "wait" in req.query:
            raw = req.query["wait"].lower()
            if raw not in ("true", "1", "yes", "false", "0", "no"):
                raise BadRequest("wait must be true or false")
            wait = raw in ("true", "1", "yes")
        if "timeout" in req.query:
            timeout = seconds_arg(req.query["timeout"], self.config.max_wait)
        if "wait" in opts:
            wait = bool(opts["wait"])
        if "timeout" in opts:
            timeout = seconds_arg(opts["timeout"], self.config.max_wait)
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
                self.store.write_report(archive_id, Path(html).read_bytes())
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


__all__ = ["MODEL_NAME_RE", "MedsrService", "ServiceConfig", "service_from_orthanc"]
