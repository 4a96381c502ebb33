"""medsr: store DICOM MR series at x4 lower resolution, restore them with super-resolution.

Public API (what PACS scripts import)::

    import medsr
    result = medsr.archive_series("series_dir", "series.medsr.h5")
    print(result.ratio, result.audit["methods"]["restored"]["psnr"])
    restored = medsr.restore_archive("series.medsr.h5", "restored_dir")
"""
__version__ = "0.1.0"

from .errors import (ArchiveError, BudgetError, InputError, MedsrError, ModelError, OutputError,  # noqa: E402
                     QualityGateError, SeriesError)


def __getattr__(name):  # lazy: keep `import medsr` light (no torch/pydicom until used)
    if name.startswith("__") or name == "api":
        raise AttributeError(name)
    import importlib

    api = importlib.import_module("medsr.api")
    if hasattr(api, name):
        return getattr(api, name)
    raise AttributeError(f"module 'medsr' has no attribute {name!r}")


__all__ = ["__version__", "MedsrError", "InputError", "SeriesError", "ArchiveError", "OutputError", "ModelError",
           "QualityGateError", "BudgetError", "archive_series", "restore_archive", "open_archive", "verify_archive", "read_series",
           "ArchiveResult", "RestoreResult", "ArchiveOptions", "RestoreOptions"]
