"""DICOMweb transport (``dicomweb-client``): QIDO-RS search, WADO-RS retrieve, STOW-RS store, DELETE.

    from medsr.pacs.dicomweb import DicomwebServer, parse_series_url
    ref = parse_series_url("https://pacs/dicom-web/studies/1.2.3/series/1.2.3.4")
    server = DicomwebServer(ref.base)                       # credentials: medsr.pacs.credentials
    fetched = server.fetch_series(ref.study_uid, ref.series_uid, folder)   # bytes as stored
    server.store(files)                                     # STOW-RS, failures -> TransportRejected

Search, store and delete go through ``dicomweb_client.DICOMwebClient``. Retrieval asks each
instance as stored (``multipart/related; type="application/dicom"; transfer-syntax=*``) and
writes the part's bytes unchanged, so every file's sha256 is the PACS's own (the client's
retrieve methods parse into pydicom datasets, which would re-encode). Requests run on one
``requests.Session`` that carries the credentials and TLS settings; retries are off, so a
refused or broken transfer fails at once with one line.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable
from urllib.parse import urlsplit

from ..errors import InputError, SeriesError
from .credentials import Connection, basic_auth, bearer_token, tls_verify
from .transport import (FetchedInstances, NotASeries, TransportError, TransportRefused, TransportRejected, check_uid,
                        write_private)

log = logging.getLogger("medsr")

SERIES_URL_RE = re.compile(r"^(?P<base>https?://[^/?#]+(?:/[^?#]*?)?)/studies/(?P<study>[^/?#]+)"
                           r"/series/(?P<series>[^/?#]+)/?$")
ACCEPT_AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'


@dataclass(frozen=True)
class SeriesRef:
    """A DICOMweb series URL split into the service root and the two UIDs."""

    base: str
    study_uid: str
    series_uid: str

    @property
    def url(self) -> str:
        return f"{self.base}/studies/{self.study_uid}/series/{self.series_uid}"


def is_url(value) -> bool:
    return isinstance(value, str) and value.lower().startswith(("http://", "https://"))


def _check_base(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"not an http(s) URL: {shown(url)}")
    if parts.username is not None or parts.password is not None:
        raise InputError("credentials in a URL are refused (they would show in logs and process lists); "
                         "use --auth-file, --token-file or $MEDSR_PACS_TOKEN")
    if parts.query or parts.fragment:
        raise NotASeries(f"a DICOMweb URL takes no query or fragment: {shown(url)}")
    return url.rstrip("/")


def shown(url: str) -> str:
    """The URL as messages show it: scheme://host[:port]/path, never user:password@, at most 200 chars."""
    try:
        parts = urlsplit(str(url))
        netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
        return parts._replace(netloc=netloc, query="", fragment="").geturl()[:200]
    except ValueError:
        return "<malformed URL>"


def parse_series_url(url: str) -> SeriesRef:
    """``http(s)://host[/prefix]/studies/<StudyUID>/series/<SeriesUID>`` -> :class:`SeriesRef`."""
    _check_base(url)
    m = SERIES_URL_RE.match(str(url))
    if m is None:
        raise NotASeries(f"not a DICOMweb series URL (expected .../studies/<StudyUID>/series/<SeriesUID>): "
                         f"{shown(url)}")
    return SeriesRef(base=m["base"].rstrip("/"), study_uid=check_uid(m["study"], "study UID"),
                     series_uid=check_uid(m["series"], "series UID"))


def _tag(item: dict, tag: str) -> str:
    values = (item.get(tag) or {}).get("Value") or [""]
    return str(values[0])


class DicomwebServer:
    """One DICOMweb service root (``http(s)://host/dicom-web``) with credentials and TLS settings."""

    def __init__(self, base_url: str, connection: Connection | None = None, *, session=None):
        import requests
        from dicomweb_client.api import DICOMwebClient

        self.base = _check_base(str(base_url))
        self.connection = connection or Connection.from_env()
        self.session = session or requests.Session()
        # explicit settings only: with trust_env, requests lets $REQUESTS_CA_BUNDLE override --ca-bundle and
        # ~/.netrc add credentials; proxies from the environment (and NO_PROXY) are still honoured
        self.session.trust_env = False
        self.session.proxies = requests.utils.get_environ_proxies(self.base)
        self.session.verify = tls_verify(self.connection)
        user_pw = basic_auth(self.connection)
        token = bearer_token(self.connection)
        if user_pw:
            self.session.auth = user_pw
        elif token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.client = DICOMwebClient(self.base, session=self.session, timeout=self.connection.timeout)
        self.client.set_http_retry_params(retry=False)
        # their warnings carry tracebacks and repeat what our one-line errors say; shown with --debug only
        for name in ("retrying", "dicomweb_client"):
            logging.getLogger(name).setLevel(logging.DEBUG if log.isEnabledFor(logging.DEBUG) else logging.CRITICAL)

    # ---- error translation: one line, no credentials, no traceback

    def _fail(self, what: str, e: BaseException) -> TransportError:
        import requests

        if isinstance(e, requests.HTTPError) and e.response is not None:
            return self._http_error(what, e.response)
        if isinstance(e, requests.exceptions.SSLError):
            return TransportError(f"{what}: TLS verification of {shown(self.base)} failed "
                                  "(give the server's CA with --ca-bundle)")
        if isinstance(e, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError)):
            return TransportError(f"{what}: the transfer from {shown(self.base)} was cut ({type(e).__name__})")
        if isinstance(e, requests.Timeout):
            return TransportError(f"{what}: {shown(self.base)} did not answer within {self.connection.timeout:g} s")
        if isinstance(e, requests.RequestException):
            return TransportError(f"{what}: cannot reach {shown(self.base)} ({type(e).__name__})")
        return TransportError(f"{what}: {shown(self.base)} answered something unexpected ({type(e).__name__})")

    def _http_error(self, what: str, r) -> TransportError:
        code = r.status_code
        if code in (401, 403):
            return TransportRefused(f"{what}: {shown(self.base)} refused access: HTTP {code} "
                                    "(check the auth/token file)")
        if code == 404:
            return NotASeries(f"{what}: {shown(self.base)} has no such resource (HTTP 404)")
        return TransportError(f"{what}: {shown(self.base)} answered HTTP {code}")

    # ---- QIDO-RS

    def search_series(self, filters: dict[str, str] | None = None, *, study_uid: str | None = None) -> list[dict]:
        """QIDO-RS series search -> [{"study_uid", "series_uid", "modality", "instances"}]."""
        try:
            found = self.client.search_for_series(study_instance_uid=study_uid, search_filters=dict(filters or {}),
                                                  get_remaining=True)
        except Exception as e:  # noqa: BLE001 - translated to one line
            raise self._fail("QIDO-RS series search", e) from None
        out = []
        for item in found:
            out.append({"study_uid": _tag(item, "0020000D"), "series_uid": _tag(item, "0020000E"),
                        "modality": _tag(item, "00080060"), "instances": _tag(item, "00201209")})
        return out

    def series_instances(self, study_uid: str, series_uid: str) -> list[str]:
        """The SOP Instance UIDs of one series (QIDO-RS)."""
        try:
            found = self.client.search_for_instances(study_instance_uid=study_uid, series_instance_uid=series_uid,
                                                     get_remaining=True)
        except Exception as e:  # noqa: BLE001
            raise self._fail(f"QIDO-RS instances of series {series_uid}", e) from None
        return [check_uid(_tag(i, "00080018"), "SOP instance UID") for i in found]

    def series_modality(self, study_uid: str, series_uid: str) -> str:
        hits = [s for s in self.search_series({"SeriesInstanceUID": series_uid}, study_uid=study_uid)
                if s["series_uid"] == series_uid]
        if not hits:
            raise NotASeries(f"{shown(self.base)} holds no series {series_uid} in study {study_uid}")
        return hits[0]["modality"]

    # ---- WADO-RS, bytes as stored

    def retrieve_instance(self, study_uid: str, series_uid: str, sop_uid: str) -> bytes:
        """One instance's Part 10 bytes exactly as the server stores them."""
        import requests

        url = f"{self.base}/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"
        what = f"WADO-RS retrieve of instance {sop_uid}"
        try:
            # identity: gzip of DICOM costs more CPU than it saves (3.5x slower fetch on loopback, docs/pacs.md)
            r = self.session.get(url, headers={"Accept": ACCEPT_AS_STORED, "Accept-Encoding": "identity"},
                                 timeout=self.connection.timeout)
            if r.status_code >= 400:
                raise self._http_error(what, r)
            body = r.content
        except TransportError:
            raise
        except requests.RequestException as e:
            raise self._fail(what, e) from None
        # a body shorter than its Content-Length raises in requests (ChunkedEncodingError: "cut"), and a
        # multipart body must end with its closing boundary (split_multipart)
        parts = split_multipart(r.headers.get("Content-Type", ""), body)
        if len(parts) != 1:
            raise TransportError(f"{what}: expected one DICOM part, got {len(parts)} (the transfer may have been cut)")
        return parts[0]

    def fetch_series(self, study_uid: str, series_uid: str, folder: Path, *,
                     allow_modalities: Iterable[str] | None = ("MR",)) -> FetchedInstances:
        """Copy every instance of one series into ``folder`` (created 0700; files 0600, named by SOP UID)."""
        check_uid(study_uid, "study UID"), check_uid(series_uid, "series UID")
        modality = self.series_modality(study_uid, series_uid)
        if allow_modalities is not None and modality.upper() not in {m.upper() for m in allow_modalities}:
            raise SeriesError(f"series {series_uid} at {shown(self.base)} is {modality or 'of unknown modality'}, "
                              "not MR: not fetched")
        sops = self.series_instances(study_uid, series_uid)
        if not sops:
            raise NotASeries(f"{shown(self.base)} lists no instances in series {series_uid}")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        files, sums, total = [], [], 0
        for sop in sops:
            data = self.retrieve_instance(study_uid, series_uid, sop)
            path, digest = write_private(folder, f"{sop}.dcm", data)
            files.append(path), sums.append(digest)
            total += len(data)
        return FetchedInstances(folder=folder, study_uid=study_uid, series_uid=series_uid, files=tuple(files),
                                sha256=tuple(sums), bytes=total, modality=modality)

    # ---- STOW-RS

    def store(self, files: Iterable[Path], study_uid: str | None = None) -> dict:
        """STOW-RS every file (one request); any failed instance -> :class:`TransportRejected`.

        Returns {"stored": n, "study_uid", "series_uids"}.
        """
        import pydicom

        datasets = [pydicom.dcmread(str(f)) for f in files]
        if not datasets:
            raise InputError("nothing to store")
        what = f"STOW-RS of {len(datasets)} instances"
        try:
            answer = self.client.store_instances(datasets, study_instance_uid=study_uid)
        except Exception as e:  # noqa: BLE001
            import requests

            if isinstance(e, requests.HTTPError) and e.response is not None and e.response.status_code not in (
                    401, 403, 404):
                reason = _stow_failure_reason(e.response)
                raise TransportRejected(f"{what}: {shown(self.base)} rejected it: HTTP {e.response.status_code}"
                                        + (f" ({reason})" if reason else "")) from None
            raise self._fail(what, e) from None
        failed = list(getattr(answer, "FailedSOPSequence", None) or [])
        stored = list(getattr(answer, "ReferencedSOPSequence", None) or [])
        if failed:
            reasons = sorted({str(getattr(f, "FailureReason", "?")) for f in failed})
            raise TransportRejected(f"{what}: {shown(self.base)} rejected {len(failed)} of {len(datasets)} "
                                    f"(failure reason {', '.join(reasons)[:80]})")
        if stored and len(stored) != len(datasets):
            raise TransportRejected(f"{what}: {shown(self.base)} confirmed only {len(stored)} of {len(datasets)}")
        return {"stored": len(datasets), "study_uid": str(datasets[0].StudyInstanceUID),
                "series_uids": sorted({str(d.SeriesInstanceUID) for d in datasets})}

    # ---- DELETE (not in every server)

    def delete_series(self, study_uid: str, series_uid: str) -> None:
        try:
            self.client.delete_series(study_uid, series_uid)
        except Exception as e:  # noqa: BLE001
            raise self._fail(f"DELETE of series {series_uid}", e) from None


def _stow_failure_reason(response) -> str:
    try:
        import pydicom

        ds = pydicom.Dataset.from_json(response.json())
        failed = list(getattr(ds, "FailedSOPSequence", None) or [])
        return f"{len(failed)} failed, reason {sorted({str(getattr(f, 'FailureReason', '?')) for f in failed})}" \
            if failed else ""
    except Exception:  # noqa: BLE001 - the status alone is the message then
        return ""


def split_multipart(content_type: str, body: bytes) -> list[bytes]:
    """The parts of a ``multipart/related`` body (or the body itself for a bare ``application/dicom``).

    Only the part bytes between the headers' blank line and the next boundary are kept;
    nothing is decoded, so a part is the server's file byte for byte.
    """
    media, *params = [p.strip() for p in content_type.split(";")]
    if media.lower() == "application/dicom":
        return [body]
    if media.lower() != "multipart/related":
        raise TransportError(f"unexpected media type {media[:60]!r} (expected multipart/related)")
    boundary = None
    for p in params:
        key, _, value = p.partition("=")
        if key.strip().lower() == "boundary":
            boundary = value.strip().strip('"').encode("latin-1")
    if not boundary:
        raise TransportError("multipart answer without a boundary")
    delimiter = b"--" + boundary
    if not body.startswith(delimiter) and (b"\r\n" + delimiter) not in body:
        raise TransportError("multipart answer without its first boundary")
    chunks = (b"\r\n" + body).split(b"\r\n" + delimiter)
    parts, closed = [], False
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            closed = True
            break
        head, sep, content = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise TransportError("multipart part without headers")
        parts.append(content)
    if not closed:
        raise TransportError("the multipart answer ended before its closing boundary (transfer cut)")
    return parts


__all__ = ["ACCEPT_AS_STORED", "DicomwebServer", "SeriesRef", "is_url", "parse_series_url", "shown",
           "split_multipart"]
