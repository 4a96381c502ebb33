"""What every PACS transport (DICOMweb, DIMSE) shares: its errors and the fetched-series record.

A transport copies one series, byte for byte, into a private folder (0700, files 0600) and
says what it fetched (:class:`FetchedInstances`, with the sha256 of every file), so an
archive can be checked against exactly what the PACS sent before anything is deleted there.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, MedsrError

#: A DICOM UID: digits and dots, at most 64 characters.
UID_RE = re.compile(r"^[0-9]+(?:\.[0-9]+)*$")


class TransportError(MedsrError):
    """The PACS could not be reached, refused the request, or broke off a transfer."""

    exit_code = 1


class TransportRefused(TransportError):
    """The PACS refused us: HTTP 401/403, or a DICOM association rejected (AE title)."""


class TransportRejected(TransportError):
    """The PACS refused to store what we sent (STOW-RS failure list, C-STORE failure status)."""


class NotASeries(InputError):
    """A PACS address that does not name one series (or names one the PACS does not hold)."""


def check_uid(value: str, what: str) -> str:
    if not isinstance(value, str) or len(value) > 64 or not UID_RE.match(value):
        raise NotASeries(f"{what} {str(value)[:70]!r} is not a DICOM UID (digits and dots, at most 64)")
    return value


@dataclass(frozen=True)
class FetchedInstances:
    """One series copied from a PACS: the folder, one file per instance, and each file's sha256."""

    folder: Path
    study_uid: str
    series_uid: str
    files: tuple[Path, ...]
    sha256: tuple[str, ...]
    bytes: int
    modality: str = ""

    def __len__(self) -> int:
        return len(self.files)


def write_private(folder: Path, name: str, data: bytes) -> tuple[Path, str]:
    """Write one fetched instance (0600, never over an existing file) -> (path, sha256)."""
    from ..api import has_part10_magic

    if not has_part10_magic(data):
        raise TransportError(f"the PACS sent {name} without a DICOM Part 10 header (DICM): not stored as-is")
    path = Path(folder) / name
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
        f.write(data)
    return path, hashlib.sha256(data).hexdigest()


def private_folder(parent: Path | None = None) -> Path:
    """A new owner-only temporary folder (under ``parent`` if given, else the system temp folder)."""
    import tempfile

    from ..api import temp_prefix

    base = str(parent) if parent is not None and Path(parent).is_dir() and os.access(parent, os.W_OK) else None
    path = Path(tempfile.mkdtemp(prefix=temp_prefix("pacs"), dir=base))
    os.chmod(path, 0o700)
    return path


__all__ = ["FetchedInstances", "NotASeries", "TransportError", "TransportRefused", "TransportRejected", "UID_RE",
           "check_uid", "private_folder", "write_private"]
