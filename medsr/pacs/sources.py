"""A SERIES argument that names a PACS: fetch it into a private folder, use it, remove it.

    with resolve_source("https://pacs/dicom-web/studies/1.2/series/1.2.3") as src:
        medsr.archive_series(src.folder, "x.medsr.h5")

``resolve_source`` accepts a local path (yielded unchanged, nothing copied), a DICOMweb
series URL, or a DIMSE address ``dimse://AET@host:port/<StudyUID>/<SeriesUID>``. Remote
series are copied byte for byte into an owner-only temporary folder that is removed when
the ``with`` block ends, whatever happens. :func:`archive_remote` and :func:`restore_to`
are what ``medsr archive URL`` and ``medsr restore --to URL`` call.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

from ..errors import InputError, MedsrError
from .credentials import Connection
from .transport import FetchedInstances, TransportError, private_folder

log = logging.getLogger("medsr")


@dataclass(frozen=True)
class Source:
    """What a SERIES argument resolved to: a local folder, and what was fetched (None if local)."""

    folder: Path
    fetched: FetchedInstances | None = None
    remote: str = ""  # the address as messages show it (no credentials)


def is_remote(arg) -> bool:
    return isinstance(arg, str) and arg.lower().startswith(("http://", "https://", "dimse://"))


@contextlib.contextmanager
def resolve_source(arg, *, connection: Connection | None = None, dimse=None,
                   allow_modalities=("MR",), workdir: Path | None = None) -> Iterator[Source]:
    """Yield a :class:`Source` whose ``folder`` holds the series; a fetched copy is removed afterwards.

    ``connection``: DICOMweb credentials/TLS (default: from the environment); ``dimse``: a
    :class:`medsr.pacs.dimse.DimseOptions` (calling AE title, timeouts).
    """
    if not is_remote(arg):
        yield Source(folder=Path(arg))
        return
    tmp = private_folder(workdir)
    try:
        yield _fetch(arg, tmp / "series", connection=connection, dimse=dimse, allow_modalities=allow_modalities)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fetch(arg: str, folder: Path, *, connection, dimse, allow_modalities) -> Source:
    if arg.lower().startswith("dimse://"):
        from .dimse import DimseOptions, fetch_dimse_series, parse_dimse_series

        ref = parse_dimse_series(arg)
        fetched = fetch_dimse_series(ref, folder, dimse or DimseOptions(), allow_modalities=allow_modalities)
        return Source(folder=folder, fetched=fetched, remote=ref.shown)
    from .dicomweb import DicomwebServer, parse_series_url, shown

    ref = parse_series_url(arg)
    server = DicomwebServer(ref.base, connection)
    fetched = server.fetch_series(ref.study_uid, ref.series_uid, folder, allow_modalities=allow_modalities)
    return Source(folder=folder, fetched=fetched, remote=shown(ref.url))


def check_archived_everything(result, fetched: FetchedInstances) -> None:
    """The verified archive holds every fetched file (sha256 for sha256), or raise."""
    from ..api import read_archive

    try:  # every archive format (2: the compact container keeps them in /meta), checksums verified
        stored = set(read_archive(result.archive).source_sha256)
    except (OSError, MedsrError) as e:
        raise MedsrError(f"cannot re-read the archive's source checksums ({type(e).__name__})",
                         path=result.archive) from None
    missing = [p.name for p, h in zip(fetched.files, fetched.sha256) if h not in stored]
    if missing:
        raise MedsrError(f"{len(missing)} fetched instances are not in the archive (first {missing[0]}): "
                         "the original was NOT deleted", path=result.archive)


def archive_remote(arg: str, output, options=None, *, connection: Connection | None = None, dimse=None,
                   delete_original: bool = False, progress=None):
    """Archive a remote series (DICOMweb URL or DIMSE address) -> :class:`medsr.ArchiveResult`.

    With ``delete_original`` the series is deleted from the PACS only after the archive was
    written, re-read, verified, and found to hold the sha256 of every fetched instance.
    ``result.summary()`` gains ``source``, ``fetched_bytes`` and ``deleted_from_pacs``.
    """
    from ..api import ArchiveOptions, archive_series

    options = options or ArchiveOptions()
    if delete_original and arg.lower().startswith("dimse://"):
        raise InputError("DIMSE has no delete service: --delete-original works for DICOMweb sources only")
    from ..api import preflight_output

    preflight_output(Path(output), force=options.force)  # an output that cannot be written: before any transfer
    with resolve_source(arg, connection=connection, dimse=dimse, allow_modalities=options.allow_modalities,
                        workdir=Path(output).resolve().parent) as src:
        # deleting the temporary copies is what makes archive_series re-read and verify every file
        result = archive_series(src.folder, output, replace(options, delete_original=True), progress=progress)
        deleted = False
        if delete_original:
            check_archived_everything(result, src.fetched)
            if len(result.deleted) != len(src.fetched):
                raise MedsrError("not every fetched file was verified in the archive: the original was NOT deleted",
                                 path=result.archive)
            deleted = _delete_remote(arg, src, connection=connection, dimse=dimse)
    return _with_source(result, src, deleted)


def _delete_remote(arg: str, src: Source, *, connection, dimse) -> bool:
    from .dicomweb import DicomwebServer, parse_series_url

    ref = parse_series_url(arg)
    server = DicomwebServer(ref.base, connection)
    if sorted(server.series_instances(ref.study_uid, ref.series_uid)) != sorted(
            p.name.removesuffix(".dcm") for p in src.fetched.files):
        log.warning("the series gained or lost instances while it was archived; it was NOT deleted")
        return False
    try:
        server.delete_series(ref.study_uid, ref.series_uid)
    except TransportError as e:  # the archive stands; say why the original stays
        log.warning(f"the archive is written and verified, but deleting the original failed: {e}")
        return False
    return True


def _with_source(result, src: Source, deleted: bool):
    cls = _remote_result_class()
    return cls(archive=result.archive, info=result.info, audit=result.audit, deleted=(), seconds=result.seconds,
               source=src.remote, fetched_bytes=src.fetched.bytes if src.fetched else 0,
               fetched_instances=len(src.fetched) if src.fetched else 0, deleted_from_pacs=deleted)


@functools.lru_cache(maxsize=None)
def _remote_result_class():
    """ArchiveResult + where it came from (built lazily: medsr.api imports numpy/torch)."""
    from ..api import ArchiveResult

    @dataclass(frozen=True)
    class RemoteArchiveResult(ArchiveResult):
        """An :class:`medsr.ArchiveResult` that says which PACS series it came from."""

        source: str = ""
        fetched_bytes: int = 0
        fetched_instances: int = 0
        deleted_from_pacs: bool = False

        def summary(self) -> dict:
            d = super().summary()
            d.update(source=self.source, fetched_bytes=self.fetched_bytes, fetched_instances=self.fetched_instances,
                     deleted_from_pacs=self.deleted_from_pacs,
                     freed_bytes=self.fetched_bytes if self.deleted_from_pacs else 0)
            return d

    return RemoteArchiveResult


def restore_to(archive, target: str, options=None, *, connection: Connection | None = None, dimse=None) -> dict:
    """Restore an archive into a private temp folder and send the derived series to ``target``.

    ``target``: a DICOMweb service root (``http(s)://host/dicom-web``; STOW-RS into the
    original study) or ``dimse://AET@host:port`` (C-STORE). Returns a summary dict.
    """
    from ..api import RestoreOptions, restore_archive

    options = options or RestoreOptions()
    if options.format != "dicom":
        raise InputError("only DICOM restores can be sent to a PACS (--format dicom)")
    archive = Path(archive)
    if not archive.is_file():
        raise InputError("no such archive", path=archive)
    if not is_remote(target):
        raise InputError(f"--to must be an http(s):// DICOMweb root or a dimse:// address, not {str(target)[:60]!r}")
    if target.lower().startswith("dimse://"):
        from .dimse import DimseOptions, parse_dimse_node

        node = parse_dimse_node(target)
    else:
        from .dicomweb import DicomwebServer

        server = DicomwebServer(target, connection)  # bad URL / credential files: refused before restoring
    tmp = private_folder(archive.resolve().parent)
    try:
        res = restore_archive(archive, tmp / "restored", options)
        files = list(res.files)
        if target.lower().startswith("dimse://"):
            from .dimse import store_files

            sent = store_files(node, files, dimse or DimseOptions())
        else:
            import pydicom

            study = str(pydicom.dcmread(str(files[0]), stop_before_pixels=True).StudyInstanceUID)
            sent = server.store(files, study_uid=study)
        import pydicom

        series_uid = str(pydicom.dcmread(str(files[0]), stop_before_pixels=True).SeriesInstanceUID)
        return {"target": sent.get("target", "") or _shown_target(target), "stored": sent["stored"],
                "series_instance_uid": series_uid, "study_instance_uid": sent.get("study_uid", ""),
                "slices": res.slices, "method": res.method, "model_id": res.model_id, "device": res.device,
                "warnings": list(res.warnings), "seconds": round(res.seconds, 3)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _shown_target(target: str) -> str:
    from .dicomweb import shown

    return shown(target) if not target.lower().startswith("dimse://") else target


__all__ = ["Source", "archive_remote", "check_archived_everything", "is_remote", "resolve_source", "restore_to"]
