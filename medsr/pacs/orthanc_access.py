"""Orthanc access: the four REST calls medsr needs (:class:`OrthancAccess`), and what is built on them:
copy a series out byte for byte, archive it (deleting it from Orthanc only once verified and unchanged),
upload files, restore an archive into a new series.

Nothing here imports ``orthanc``: the plugin script passes ``orthanc.RestApi*`` to :class:`CallableAccess`,
``client.py`` passes a ``requests`` session (``RestAccess``).
"""
from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

from ..errors import InputError, MedsrError, SeriesError
from .errors import BadRequest, OrthancCallError, PacsError, UnknownResource

#: Orthanc resource ids: a SHA-1 written as five groups of 8 lowercase hex digits (44 chars).
ORTHANC_ID_RE = re.compile(r"^[0-9a-f]{8}(?:-[0-9a-f]{8}){4}$")


def is_orthanc_id(value: str) -> bool:
    return isinstance(value, str) and bool(ORTHANC_ID_RE.match(value))


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


# --------------------------------------------------------------------------- fetch, archive, restore

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


__all__ = ["ORTHANC_ID_RE", "CallableAccess", "FetchedSeries", "OrthancAccess", "archive_orthanc_series",
           "delete_series_if_unchanged", "fetch_series", "is_orthanc_id", "restore_into_orthanc", "upload_files"]
