"""What a batch works on: one ``SeriesJob`` per series to archive, one ``RestoreJob`` per archive, and
the ``BatchSummary`` of a run (plain frozen data, cheap to ship to Dask workers)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..api import ARCHIVE_SUFFIX  # noqa: F401  (re-exported: medsr.batch.ARCHIVE_SUFFIX)

#: exit status of archive-batch / restore-batch when the batch ran but at least one series failed
EXIT_SOME_FAILED = 9


@dataclass(frozen=True)
class SeriesJob:
    """One series to archive. Paths are absolute strings (plain data, cheap to ship to workers)."""

    key: str  # stable id; the archive is ``key + ".medsr.h5"``
    source: str  # the series folder (DICOM: common folder of its files) or the NIfTI file
    kind: str  # dicom | nifti | unreadable (header not readable) | excluded (modality not allowed)
    series_uid: str = ""
    files: tuple[str, ...] = ()
    modality: str = ""
    note: str = ""
    error: str = ""  # set at discovery: the job fails without running (unreadable files)

    @property
    def archive_name(self) -> str:
        return self.key + ARCHIVE_SUFFIX


@dataclass(frozen=True)
class RestoreJob:
    key: str  # archive path relative to ARCHIVES, without .medsr.h5 (posix)
    archive: str  # absolute


@dataclass(frozen=True)
class BatchSummary:
    ok: int
    failed: int
    skipped: int
    rows: list[dict] = field(repr=False)
    manifest_path: Path
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        """0 when every series succeeded or was skipped as already done, else ``EXIT_SOME_FAILED``."""
        return 0 if self.failed == 0 else EXIT_SOME_FAILED

    def to_dict(self, max_failures: int = 50) -> dict:
        fails = [{"key": r["key"], "source": r.get("source") or r.get("archive"), "error": r.get("error")}
                 for r in self.rows if r.get("status") == "failed"]
        return {"ok": self.ok, "failed": self.failed, "skipped": self.skipped, "total": len(self.rows),
                "manifest": str(self.manifest_path), "seconds": round(self.seconds, 3),
                "failures": fails[:max_failures], "exit_code": self.exit_code}
