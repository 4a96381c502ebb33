"""The archive store: a folder of ``<archive_id>.medsr.h5`` files with a JSON sidecar (and a cached HTML
report) each; archive ids made and checked here, so a request can never name a file outside the store;
files written atomically (owner-only temp file, fsync, rename)."""
from __future__ import annotations

import json
import re
import secrets
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

from ..api import ARCHIVE_SUFFIX  # one definition: medsr.archive.format
from .errors import BadRequest, UnknownResource
from .http_messages import json_safe

#: Archive ids made here: UTC creation time + 12 random hex digits, e.g. 20261126T121232Z-3f9a2b1c4d5e.
ARCHIVE_ID_RE = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{12}$")


def is_archive_id(value: str) -> bool:
    return isinstance(value, str) and bool(ARCHIVE_ID_RE.match(value))


def new_archive_id(now: float | None = None) -> str:
    stamp = datetime.fromtimestamp(time.time() if now is None else now, timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(6)}"


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
        _write_atomic(self.sidecar_path(archive_id), json.dumps(json_safe(record), indent=1, default=str).encode())

    def write_report(self, archive_id: str, html: bytes) -> None:
        _write_atomic(self.report_path(archive_id), html)

    def read_sidecar(self, archive_id: str) -> dict | None:
        try:
            return json.loads(self.sidecar_path(archive_id).read_text())
        except (OSError, ValueError):
            return None

    def ids(self) -> list[str]:
        return sorted(p.name[:-len(ARCHIVE_SUFFIX)] for p in self.root.glob("*" + ARCHIVE_SUFFIX)
                      if is_archive_id(p.name[:-len(ARCHIVE_SUFFIX)]))


def _write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically, owner-only (medsr's one atomic writer)."""
    from ..api import atomic_file

    with atomic_file(path, force=True) as tmp:
        tmp.write_bytes(data)


__all__ = ["ARCHIVE_ID_RE", "ARCHIVE_SUFFIX", "ArchiveStore", "is_archive_id", "new_archive_id"]
