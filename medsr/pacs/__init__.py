"""medsr in a PACS: an Orthanc plugin, a launcher, and a REST client for any Orthanc.

    import medsr.pacs
    sid = medsr.pacs.upload_series("http://localhost:8042", "series_dir")
    res = medsr.pacs.archive_from_orthanc("http://localhost:8042", sid, "s.medsr.h5")
    new = medsr.pacs.restore_to_orthanc("http://localhost:8042", "s.medsr.h5")

Any PACS over the standard protocols (docs/pacs.md): a DICOMweb series URL or a DIMSE
address is archived and restored like a folder:

    res = medsr.pacs.archive_remote("https://pacs/dicom-web/studies/1.2/series/1.2.3", "s.medsr.h5")
    out = medsr.pacs.restore_to("s.medsr.h5", "https://pacs/dicom-web")          # STOW-RS
    with medsr.pacs.resolve_source("dimse://PACS@host:104/1.2/1.2.3") as src:  # C-GET
        medsr.archive_series(src.folder, "t.medsr.h5")

See docs/orthanc.md. Importing this package is light (no numpy/torch until used).
"""
from __future__ import annotations

_CLIENT = ("archive_from_orthanc", "restore_to_orthanc", "upload_series", "RestAccess")
_SOURCES = ("archive_remote", "restore_to", "resolve_source", "is_remote")
_SERVICE = {"PacsError": ".errors", "BadRequest": ".errors", "UnknownResource": ".errors",
            "OrthancCallError": ".errors", "Busy": ".errors", "MedsrService": ".service",
            "ServiceConfig": ".service", "ArchiveStore": ".archive_store"}


def __getattr__(name):  # lazy: `requests` is only needed by the client
    import importlib

    if name in _CLIENT:
        return getattr(importlib.import_module(".client", __name__), name)
    if name in _SOURCES:
        return getattr(importlib.import_module(".sources", __name__), name)
    if name == "Connection":
        return importlib.import_module(".credentials", __name__).Connection
    if name in _SERVICE:
        return getattr(importlib.import_module(_SERVICE[name], __name__), name)
    raise AttributeError(f"module 'medsr.pacs' has no attribute {name!r}")


__all__ = list(_CLIENT + _SOURCES + tuple(_SERVICE)) + ["Connection"]
