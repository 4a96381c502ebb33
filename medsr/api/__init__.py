"""The public surface: everything a script, the CLI, the batch runner or the Orthanc plugin calls.

``import medsr`` re-exports the names in ``medsr.__all__`` from here (lazily). The work itself is
done in the rooms below (mostly :mod:`medsr.flow`); this room only chooses what is public.
``medsr.cli``, ``medsr.batch`` and ``medsr.pacs`` import nothing of medsr but this room and
``medsr.errors`` (an import-linter contract in pyproject.toml).

Each name is imported from its room on first use (PEP 562 ``__getattr__``), so ``medsr --help``,
``medsr jobs`` and the Orthanc plugin's start do not load torch for names they do not use.
``_EXPORTS`` is what runs; the ``TYPE_CHECKING`` imports below say the same for type checkers
and ``lint-imports`` (tests/test_architecture.py checks that the two agree).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what lint-imports and type checkers read (F401 off for this file: pyproject.toml)
    from ..archive import ARCHIVE_SUFFIX, ArchiveInfo, VerifyResult, read_archive, verify_archive
    from ..archive import read_info as read_archive_info
    from ..audit.beside import allow_processes as allow_audit_processes
    from ..floor import check_floor
    from ..flow.evaluate import __doc__ as EVAL_DESCRIPTION
    from ..flow.evaluate import evaluate
    from ..flow.evaluate import write_outputs as write_eval_outputs
    from ..flow.pipeline import (ArchiveOptions, ArchiveResult, RestoreOptions, RestoreResult, archive_series,
                                 flat_audit, open_archive, restore_archive, restore_pixels)
    from ..flow.rd import DEFAULT_FLOORS as RD_DEFAULT_FLOORS
    from ..flow.rd import DEFAULT_LOSSY as RD_DEFAULT_LOSSY
    from ..flow.rd import DEFAULT_LOSSY_FRACTIONS as RD_DEFAULT_LOSSY_FRACTIONS
    from ..flow.rd import DEFAULT_NEARS as RD_DEFAULT_NEARS
    from ..flow.rd import format_table as format_rd_table
    from ..flow.rd import rate_distortion, write_rd
    from ..flow.rd_ratio import format_ratio_table, ratio_sweep, write_ratio_sweep
    from ..flow.report import report_for_archive
    from ..io import Series, read_series
    from ..io.atomic import atomic_file, clean_stale_temps, preflight_output, temp_prefix
    from ..io.classify import Verdict as DicomVerdict
    from ..io.classify import classify_file as classify_dicom_file
    from ..io.classify import has_part10_magic, is_dicomdir_name, is_part10_file
    from ..io.ledger import STATES as JOB_STATES
    from ..io.ledger import JobLedger
    from ..io.ledger import record_row as record_manifest_row
    from ..io.series import read_dicom_files
    from ..codec.base import BASES as ARCHIVE_BASES
    from ..models import list_models

# public name -> (module, its name there)
_EXPORTS: dict[str, tuple[str, str]] = {
    # archive and restore a series: the names `import medsr` re-exports
    "ArchiveOptions": ("..flow.pipeline", "ArchiveOptions"),
    "ArchiveResult": ("..flow.pipeline", "ArchiveResult"),
    "RestoreOptions": ("..flow.pipeline", "RestoreOptions"),
    "RestoreResult": ("..flow.pipeline", "RestoreResult"),
    "archive_series": ("..flow.pipeline", "archive_series"),
    "allow_audit_processes": ("..audit.beside", "allow_processes"),
    "restore_archive": ("..flow.pipeline", "restore_archive"),
    "restore_pixels": ("..flow.pipeline", "restore_pixels"),
    "open_archive": ("..flow.pipeline", "open_archive"),
    "flat_audit": ("..flow.pipeline", "flat_audit"),
    "report_for_archive": ("..flow.report", "report_for_archive"),
    "verify_archive": ("..archive", "verify_archive"),
    "ARCHIVE_SUFFIX": ("..archive", "ARCHIVE_SUFFIX"),
    "read_archive": ("..archive", "read_archive"),
    "read_archive_info": ("..archive", "read_info"),  # attributes + the stored audit as a dict; no pixels
    "ArchiveInfo": ("..archive", "ArchiveInfo"),
    "VerifyResult": ("..archive", "VerifyResult"),
    "read_series": ("..io", "read_series"),
    "read_dicom_files": ("..io.series", "read_dicom_files"),
    "Series": ("..io", "Series"),
    "list_models": ("..models", "list_models"),
    "ARCHIVE_BASES": ("..codec.base", "BASES"),  # what `--base` offers (one medsr.codec.base.BaseCodec each)
    # measuring: `medsr eval`, `medsr rd` (and `rd --ratios`), the floor's own check
    "evaluate": ("..flow.evaluate", "evaluate"),
    "write_eval_outputs": ("..flow.evaluate", "write_outputs"),
    "EVAL_DESCRIPTION": ("..flow.evaluate", "__doc__"),
    "rate_distortion": ("..flow.rd", "rate_distortion"),
    "write_rd": ("..flow.rd", "write_rd"),
    "format_rd_table": ("..flow.rd", "format_table"),
    "RD_DEFAULT_FLOORS": ("..flow.rd", "DEFAULT_FLOORS"),
    "RD_DEFAULT_LOSSY": ("..flow.rd", "DEFAULT_LOSSY"),
    "RD_DEFAULT_LOSSY_FRACTIONS": ("..flow.rd", "DEFAULT_LOSSY_FRACTIONS"),
    "RD_DEFAULT_NEARS": ("..flow.rd", "DEFAULT_NEARS"),
    "ratio_sweep": ("..flow.rd_ratio", "ratio_sweep"),
    "write_ratio_sweep": ("..flow.rd_ratio", "write_ratio_sweep"),
    "format_ratio_table": ("..flow.rd_ratio", "format_ratio_table"),
    "check_floor": ("..floor", "check_floor"),
    # files and jobs: atomic writes, medsr's temp names, the job ledger (`medsr jobs`)
    "atomic_file": ("..io.atomic", "atomic_file"),
    "preflight_output": ("..io.atomic", "preflight_output"),
    "clean_stale_temps": ("..io.atomic", "clean_stale_temps"),
    "temp_prefix": ("..io.atomic", "temp_prefix"),
    # is it DICOM, and what does it hold (the series reader, the batch scan, the PACS upload and fetch)
    "DicomVerdict": ("..io.classify", "Verdict"),
    "classify_dicom_file": ("..io.classify", "classify_file"),
    "has_part10_magic": ("..io.classify", "has_part10_magic"),
    "is_part10_file": ("..io.classify", "is_part10_file"),
    "is_dicomdir_name": ("..io.classify", "is_dicomdir_name"),
    "JobLedger": ("..io.ledger", "JobLedger"),
    "JOB_STATES": ("..io.ledger", "STATES"),
    "record_manifest_row": ("..io.ledger", "record_row"),
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    try:
        module, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module, __name__), attr)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
