"""``archive-batch --dicomweb URL --query KEY=VALUE ...``: the series a QIDO-RS search selects.

Every selected series is fetched as stored into one owner-only temporary folder
(``<StudyUID>/<SeriesUID>/``, beside OUTDIR); the CLI archives it with the ordinary batch
(one Dask task per series, the manifest, resume) and the copies are removed at the end,
whatever happens. Series of another modality than the allowed ones are not fetched.
"""
from __future__ import annotations

import contextlib
import logging
import re
import shutil
from pathlib import Path
from typing import Iterator

from ..errors import InputError
from .credentials import Connection
from .transport import private_folder

log = logging.getLogger("medsr")

QUERY_KEY_RE = re.compile(r"^(?:[A-Za-z][A-Za-z0-9]{1,63}|[0-9A-Fa-f]{8})$")


def parse_queries(items: list[str] | None) -> dict[str, str]:
    """``["Modality=MR", "StudyDate=20190101-20201231"]`` -> QIDO-RS search filters."""
    out: dict[str, str] = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        if not sep or not QUERY_KEY_RE.match(key.strip()) or not value.strip():
            raise InputError(f"--query {str(item)[:60]!r} must be KEYWORD=VALUE (e.g. Modality=MR)")
        out[key.strip()] = value.strip()
    return out


def select_series(server, filters: dict[str, str], allow_modalities=("MR",)) -> list[dict]:
    """QIDO-RS search; the allowed modalities only (a Modality filter narrows them further)."""
    allowed = {m.upper() for m in allow_modalities}
    found = server.search_series(filters)
    keep = [s for s in found if s["modality"].upper() in allowed and s["study_uid"] and s["series_uid"]]
    if len(keep) != len(found):
        log.warning(f"QIDO-RS found {len(found)} series; {len(found) - len(keep)} of another modality are skipped")
    return keep


@contextlib.contextmanager
def fetch_query(url: str, queries: list[str] | None, outdir, *, connection: Connection | None = None,
                allow_modalities=("MR",)) -> Iterator[Path]:
    """Fetch every series a QIDO-RS search of ``url`` selects into a private folder beside ``outdir``
    (``<StudyUID>/<SeriesUID>/``); yield the folder, remove it afterwards whatever happens."""
    from .dicomweb import DicomwebServer

    filters = parse_queries(queries)
    if not filters:
        raise InputError("--dicomweb needs at least one --query (e.g. --query Modality=MR): refusing to fetch "
                         "every series of the PACS")
    server = DicomwebServer(url, connection)
    series = select_series(server, filters, allow_modalities)
    if not series:
        raise InputError(f"the QIDO-RS search ({', '.join(f'{k}={v}' for k, v in filters.items())}) selected no "
                         "series")
    parent = Path(outdir).resolve().parent
    tmp = private_folder(parent if parent.is_dir() else None)
    try:
        for s in series:
            server.fetch_series(s["study_uid"], s["series_uid"], tmp / s["study_uid"] / s["series_uid"],
                                allow_modalities=allow_modalities)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


__all__ = ["fetch_query", "parse_queries", "select_series"]
