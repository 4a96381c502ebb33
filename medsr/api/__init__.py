"""The public surface: everything a script, the CLI, the batch runner or the Orthanc plugin calls.

``import medsr`` re-exports the names in ``medsr.__all__`` from here (lazily). The work itself is
done in :mod:`medsr.flow`; this room only chooses what is public.
"""
from __future__ import annotations

from ..archive import ArchiveInfo, VerifyResult, read_archive, verify_archive
from ..flow.pipeline import (ArchiveOptions, ArchiveResult, RestoreOptions, RestoreResult, archive_series,
                             flat_audit, open_archive, restore_archive, restore_pixels)
from ..flow.report import report_for_archive
from ..io import Series, read_series
from ..models import list_models

__all__ = ["ArchiveOptions", "ArchiveResult", "RestoreOptions", "RestoreResult", "archive_series", "restore_archive",
           "restore_pixels", "open_archive", "verify_archive", "read_archive", "read_series", "flat_audit",
           "report_for_archive", "list_models", "ArchiveInfo", "VerifyResult", "Series"]
