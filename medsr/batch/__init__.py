"""Batch archive / restore of many series as Dask tasks (docs/batch.md); the CLI is :mod:`medsr.cli.batch`.

Rooms: ``jobs`` (what a batch works on), ``scan`` (discovery from headers), ``phi`` (names without
patient data), ``tasks`` (what runs on a worker), ``manifest``, ``lock``, ``cluster`` (Dask), ``run``
(``archive_batch`` / ``restore_batch``). Importable without Dask: Dask is imported when a batch runs.
"""
from .cluster import connect
from .jobs import ARCHIVE_SUFFIX, EXIT_SOME_FAILED, BatchSummary, RestoreJob, SeriesJob
from .lock import LOCK_NAME
from .manifest import ARCHIVE_FIELDS, MANIFEST, RESTORE_FIELDS, RESTORE_MANIFEST, Manifest
from .phi import safe_stem
from .run import archive_batch, restore_batch
from .scan import find_archives, find_series, scan_files
from .tasks import archive_job, restore_job

__all__ = ["SeriesJob", "RestoreJob", "BatchSummary", "Manifest", "find_series", "find_archives", "archive_batch",
           "restore_batch", "archive_job", "restore_job", "scan_files", "connect", "safe_stem",
           "MANIFEST", "RESTORE_MANIFEST", "LOCK_NAME", "ARCHIVE_SUFFIX", "EXIT_SOME_FAILED", "ARCHIVE_FIELDS",
           "RESTORE_FIELDS"]
