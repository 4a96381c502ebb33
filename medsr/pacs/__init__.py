"""medsr in a PACS: an Orthanc plugin, a launcher, and a REST client for any Orthanc.

    import medsr.pacs
    sid = medsr.pacs.upload_series("http://localhost:8042", "series_dir")
    res = medsr.pacs.archive_from_orthanc("http://localhost:8042", sid, "s.medsr.h5")
    new = medsr.pacs.restore_to_orthanc("http://localhost:8042", "s.medsr.h5")

See docs/orthanc.md. Importing this package is light (no numpy/torch until used).
"""
from __future__ import annotations

_CLIENT = ("archive_from_orthanc", "restore_to_orthanc", "upload_series", "RestAccess")
_SERVICE = ("PacsError", "BadRequest", "UnknownResource", "OrthancCallError", "Busy", "MedsrService",
            "ServiceConfig", "ArchiveStore")


def __getattr__(name):  # lazy: `requests` is only needed by the client
    import importlib

    if name in _CLIENT:
        return getattr(importlib.import_module(".client", __name__), name)
    if name in _SERVICE:
        return getattr(importlib.import_module(".service", __name__), name)
    raise AttributeError(f"module 'medsr.pacs' has no attribute {name!r}")


__all__ = list(_CLIENT + _SERVICE)
