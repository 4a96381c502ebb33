"""Archive from and restore to any Orthanc over its REST API (``requests``; no medsr plugin needed).

    import medsr.pacs
    res = medsr.pacs.archive_from_orthanc("http://pacs:8042", series_id, "s.medsr.h5", auth=("u", "pw"))
    new = medsr.pacs.restore_to_orthanc("http://pacs:8042", "s.medsr.h5", auth=("u", "pw"))
    print(res.summary()["psnr"], new["series_id"])

The series is copied byte for byte from ``/instances/{id}/file`` into a private temp
folder, archived with :func:`medsr.archive_series`, and (only with
``delete_original=True``) deleted from Orthanc after the archive was re-read, verified
and matched against every fetched file, and only if Orthanc still holds exactly the
archived instances.
"""
from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import InputError, MedsrError
from .errors import OrthancCallError, UnknownResource
from .orthanc_access import archive_orthanc_series, is_orthanc_id, restore_into_orthanc, upload_files


class RestAccess:
    """:class:`medsr.pacs.orthanc_access.OrthancAccess` over Orthanc's REST API with ``requests``."""

    def __init__(self, url: str, *, auth: Any = None, session=None, timeout: float = 120.0):
        import requests

        if not str(url).startswith(("http://", "https://")):
            raise InputError(f"Orthanc URL must start with http:// or https://, not {str(url)[:60]!r}")
        self.url = str(url).rstrip("/")
        parts = urlsplit(self.url)
        self.shown = parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")).geturl() \
            if parts.hostname else self.url  # messages never show user:password@
        self.session = session or requests.Session()
        self.auth = auth  # per request: a caller's session is not modified
        self.timeout = timeout

    def _request(self, method: str, path: str, **kw):
        import requests

        try:
            if self.auth is not None:
                kw["auth"] = self.auth
            r = self.session.request(method, self.url + path, timeout=self.timeout, **kw)
        except requests.RequestException as e:
            raise OrthancCallError(f"cannot reach Orthanc at {self.shown} ({type(e).__name__})") from None
        if r.status_code == 404:
            raise UnknownResource(f"Orthanc at {self.shown} has no {path}")
        if r.status_code in (401, 403):
            raise OrthancCallError(f"Orthanc at {self.shown} refused {method} {path}: HTTP {r.status_code} "
                                   "(check the user and password)")
        if r.status_code >= 400:
            detail = ""
            try:
                j = r.json()
                detail = str(j.get("Message") or j.get("error") or "")[:200] if isinstance(j, dict) else ""
            except ValueError:
                pass
            raise OrthancCallError(f"Orthanc at {self.shown}: {method} {path}: HTTP {r.status_code}"
                                   + (f" ({detail})" if detail else ""))
        return r

    def get_json(self, path: str) -> Any:
        try:
            return self._request("GET", path).json()
        except ValueError:
            raise OrthancCallError(f"Orthanc at {self.shown} answered non-JSON for {path}") from None

    def get_bytes(self, path: str) -> bytes:
        return self._request("GET", path).content

    def post_instance(self, data: bytes) -> dict:
        return self._request("POST", "/instances", data=data, headers={"Content-Type": "application/dicom"}).json()

    def delete(self, path: str) -> None:
        self._request("DELETE", path)


def _is_dicom_file(path: Path) -> bool:
    """A Part 10 file to upload: the DICM magic, not hidden, not a DICOMDIR (medsr.api decides what is DICOM)."""
    from ..api import is_dicomdir_name, is_part10_file

    return not path.name.startswith(".") and not is_dicomdir_name(path.name) and is_part10_file(path)


def upload_series(url: str, folder: str | Path, *, auth: Any = None, session=None) -> str:
    """Upload every DICOM file (Part 10, ``DICM`` magic) under ``folder``; they must form one series.

    Returns the Orthanc series id.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("no such folder", path=folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and _is_dicom_file(p))
    if not files:
        raise InputError("no DICOM Part 10 files in this folder", path=folder)
    return upload_files(RestAccess(url, auth=auth, session=session), files)["series_id"]


def archive_from_orthanc(url: str, series_id: str, archive_path: str | Path, *, auth: Any = None, options=None,
                         delete_original: bool = False, session=None):
    """Archive one Orthanc series into ``archive_path``; returns :class:`medsr.ArchiveResult`.

    ``options`` is a :class:`medsr.ArchiveOptions` (default: ``ArchiveOptions()``). The series
    is deleted from Orthanc only when ``delete_original=True`` is passed here (and only after
    verification, see the module docstring); ``options.delete_original`` alone is refused so
    that deleting from a PACS is always an explicit keyword. ``result.summary()`` gains
    ``orthanc_series_id`` and ``deleted_from_orthanc``.
    """
    from ..api import ArchiveOptions

    options = options or ArchiveOptions()
    if options.delete_original and not delete_original:
        raise MedsrError("options.delete_original is set: pass delete_original=True to archive_from_orthanc "
                         "to delete the series from Orthanc")
    if not is_orthanc_id(series_id):
        raise InputError(f"malformed Orthanc series id {str(series_id)[:60]!r}")
    access = RestAccess(url, auth=auth, session=session)
    result, fetched, deleted, warnings = archive_orthanc_series(access, series_id, Path(archive_path), options,
                                                                delete_original=delete_original)
    for w in warnings:
        logging.getLogger("medsr").warning(w)
    return _result_class()(archive=result.archive, info=result.info, audit=result.audit, deleted=result.deleted,
                           seconds=result.seconds, orthanc_series_id=series_id, deleted_from_orthanc=deleted,
                           warnings=tuple(warnings))


def restore_to_orthanc(url: str, archive_path: str | Path, *, auth: Any = None, options=None, session=None) -> dict:
    """Restore an archive and upload it as a new derived series (same study) -> dict with ``series_id``.

    Keys: series_id, study_id, instances (Orthanc ids), series_instance_uid, slices,
    method, model_id, device, warnings, seconds.
    """
    archive_path = Path(archive_path)
    if not archive_path.is_file():
        raise InputError("no such archive", path=archive_path)
    return restore_into_orthanc(RestAccess(url, auth=auth, session=session), archive_path, options)


@functools.lru_cache(maxsize=None)
def _result_class():
    """ArchiveResult + Orthanc fields (built lazily: medsr.api imports numpy/torch)."""
    from dataclasses import dataclass

    from ..api import ArchiveResult

    @dataclass(frozen=True)
    class OrthancArchiveResult(ArchiveResult):
        """An :class:`medsr.ArchiveResult` that also says which Orthanc series it came from."""

        orthanc_series_id: str = ""
        deleted_from_orthanc: bool = False
        warnings: tuple[str, ...] = ()

        def summary(self) -> dict:
            d = super().summary()
            d.update(orthanc_series_id=self.orthanc_series_id, deleted_from_orthanc=self.deleted_from_orthanc,
                     warnings=list(self.warnings))
            return d

    return OrthancArchiveResult


__all__ = ["RestAccess", "archive_from_orthanc", "restore_to_orthanc", "upload_series"]
