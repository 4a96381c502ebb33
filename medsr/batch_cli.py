"""Batch archive / restore of many series as Dask tasks: ``medsr archive-batch`` and ``medsr restore-batch``.

Design (see docs/batch.md):

- ``find_series(ROOT)`` finds every series below ROOT by reading DICOM headers only
  (``stop_before_pixels``): one job per Series Instance UID (the files of one series
  may sit in several sub-folders; a folder holding two series gives two jobs), plus one
  job per ``.nii``/``.nii.gz`` file. In ``archive_batch`` the header scan itself runs on
  the workers.
- Every job has a stable key that is also its archive's file name:
  ``<relative folder, sanitised>__<12 hex of sha256(series UID)>.medsr.h5``. The name
  never holds a patient name: when the folder path contains the patient's name or ID
  (read from the headers) the name is the hash alone (``names="hash"`` forces that).
- One Dask task per series, at most a few per worker in flight; the task is a
  module-level function of plain paths and options, so workers only need medsr installed.
  A failing series becomes a ``failed`` manifest row with its one-line error; the others
  go on.
- The client process alone writes ``OUTDIR/manifest.jsonl`` (one JSON object per
  series), rewritten atomically (temp + fsync + rename) as results arrive.
- Resume: a rerun skips a series whose archive exists and verifies (checksums, same
  Series Instance UID, same number of slices): an interrupted batch is simply run again.
  Temp files of a killed run are removed at start; a lock file keeps two batches out of
  one OUTDIR.

This module must stay importable without Dask (it is imported to build the CLI parser);
Dask is imported only when a batch runs.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import re
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from .errors import ArchiveError, InputError, MedsrError, OutputError
from .io.ledger import JobLedger, record_row

if TYPE_CHECKING:  # medsr.api is imported lazily: building the CLI parser must stay cheap
    from .api import ArchiveOptions, RestoreOptions

log = logging.getLogger("medsr")

__all__ = ["SeriesJob", "RestoreJob", "BatchSummary", "Manifest", "find_series", "find_archives", "archive_batch",
           "restore_batch", "archive_job", "restore_job", "scan_files", "connect", "register_cli", "main",
           "MANIFEST", "RESTORE_MANIFEST", "EXIT_SOME_FAILED", "ARCHIVE_FIELDS", "RESTORE_FIELDS"]

ARCHIVE_SUFFIX = ".medsr.h5"
MANIFEST = "manifest.jsonl"
RESTORE_MANIFEST = "restore-manifest.jsonl"
LOCK_NAME = ".medsr-batch.lock"
#: exit status of archive-batch / restore-batch when the batch ran but at least one series failed
EXIT_SOME_FAILED = 9

#: manifest columns, in this order, for every row (None when not applicable)
ARCHIVE_FIELDS = ("key", "source", "kind", "series_uid", "files", "archive", "status", "slices", "original_bytes",
                  "archive_bytes", "ratio", "psnr", "psnr_fg", "psnr_bicubic", "psnr_j2k", "pixel_ratio", "base",
                  "base_near", "floor", "seconds", "error", "note", "finished")
RESTORE_FIELDS = ("key", "archive", "output", "format", "status", "slices", "method", "model_id", "device",
                  "seconds", "error", "note", "finished")

_HEADER_TAGS = ["SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "Modality", "Rows", "Columns",
                "PatientName", "PatientID"]
_NON_IMAGE_SOP = {"1.2.840.10008.1.3.10", "1.2.840.10008.5.1.4.1.1.66"}  # DICOMDIR, Raw Data Storage
_SCAN_CHUNK_FILES = 1000  # files per header-scan task
_LOCAL_SCAN_BELOW = 2000  # scan in the client when the tree has fewer files than this


# --------------------------------------------------------------------------- jobs


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


# --------------------------------------------------------------------------- names


def _h(text: str, n: int = 12) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:n]


def safe_stem(rel: str, max_len: int = 80) -> str:
    """A file-name-safe stem from a relative path: [A-Za-z0-9.-] runs joined by single '_'."""
    parts = [p for p in Path(rel).parts if p not in ("", ".", "..", "/")]
    s = re.sub(r"[^A-Za-z0-9.-]+", "_", "_".join(parts))
    s = re.sub(r"\.{2,}", ".", s).strip("._-")[:max_len].strip("._-")
    return s or "root"


def _looks_like_phi(rel: str, tokens: Iterable[str]) -> bool:
    low = rel.lower()
    return any(t and t in low for t in tokens)


def _phi_tokens(ds) -> set[str]:
    out: set[str] = set()
    for v in (ds.get("PatientName", ""), ds.get("PatientID", "")):
        for t in re.split(r"[^0-9A-Za-z]+", str(v or "")):
            if len(t) >= 3:
                out.add(t.lower())
    return out


def _rel(path: str, root: str) -> str:
    r = os.path.relpath(path, root)
    return "" if r == "." else r


# --------------------------------------------------------------------------- discovery


def _walk(root: Path, exclude: Iterable[Path] = ()) -> list[str]:
    """Every non-hidden file below ``root`` (sorted, absolute), not descending into ``exclude``."""
    skip = {os.path.normcase(str(Path(p).resolve())) for p in exclude}
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and os.path.normcase(os.path.join(dirpath, d)) not in skip)
        out.extend(os.path.join(dirpath, f) for f in sorted(filenames) if not f.startswith("."))
    return out


def scan_files(paths: list[str]) -> list[tuple]:
    """Header scan (no pixel data) of some files; runs on a worker. Returns one tuple per relevant file:

    ``("image", path, series_uid, sop_uid, modality, phi_tokens)``, ``("nifti", path)`` or
    ``("unreadable", path, reason)``. Non-DICOM files and non-image DICOM objects are left out.
    """
    import warnings

    import pydicom
    from pydicom.uid import UID

    out: list[tuple] = []
    for p in paths:
        if p.endswith(".nii") or p.endswith(".nii.gz"):
            out.append(("nifti", p))
            continue
        try:
            with open(p, "rb") as fh:
                head = fh.read(132)
        except OSError as e:
            out.append(("unreadable", p, f"cannot read file ({e.strerror})"))
            continue
        has_magic = head[128:132] == b"DICM"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(p, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
        except Exception as e:  # InvalidDicomError for non-DICOM; anything else: damaged header
            if has_magic:
                out.append(("unreadable", p, f"DICOM header not readable ({type(e).__name__})"))
            continue
        meta = getattr(ds, "file_meta", None)
        sop_class = str(ds.get("SOPClassUID", "") or (meta.get("MediaStorageSOPClassUID", "") if meta else ""))
        if sop_class in _NON_IMAGE_SOP:
            continue
        is_image_class = "Image Storage" in (UID(sop_class).name if sop_class else "")
        if "Rows" not in ds or "SeriesInstanceUID" not in ds:
            if is_image_class or not sop_class:  # an image (or unknown) object whose header stops early
                out.append(("unreadable", p, "DICOM header is incomplete (file damaged or truncated)"))
            continue
        out.append(("image", p, str(ds.SeriesInstanceUID), str(ds.get("SOPInstanceUID", "")),
                    str(ds.get("Modality", "")).upper(), tuple(sorted(_phi_tokens(ds)))))
    return out


def _clusters(folders: dict[str, dict[str, str]]) -> list[dict[str, str]]:
    """Merge the per-folder file sets of one series UID into series instances.

    Folders whose SOP Instance UIDs do not overlap are parts of one series (e.g. half the
    files one level down) and merge; a folder repeating instances of another holds a copy
    and stays a separate job.
    """
    clusters: list[dict[str, str]] = []
    for folder in sorted(folders):
        files = folders[folder]
        for c in clusters:
            if c.keys().isdisjoint(files.keys()):
                c.update(files)
                break
        else:
            clusters.append(dict(files))
    return clusters


def _group(root: str, entries: Iterable[tuple], *, allow_modalities: tuple[str, ...] = ("MR",),
           names: str = "path") -> list[SeriesJob]:
    """Scan results -> jobs: one per series (see ``_clusters``), per NIfTI file, and per folder of
    unreadable DICOM files that holds no readable series."""
    allow = tuple(m.upper() for m in allow_modalities)
    by_uid: dict[str, dict] = {}
    unreadable: dict[str, list[tuple[str, str]]] = {}
    nifti: list[str] = []
    for e in entries:
        if e[0] == "nifti":
            nifti.append(e[1])
        elif e[0] == "unreadable":
            unreadable.setdefault(os.path.dirname(e[1]), []).append((e[1], e[2]))
        else:
            _, path, uid, sop, modality, phi = e
            gkey = uid if uid else "nouid:" + os.path.dirname(path)  # no UID: one series per folder
            g = by_uid.setdefault(gkey, {"uid": uid, "folders": {}, "dups": 0, "modality": modality, "phi": set()})
            files = g["folders"].setdefault(os.path.dirname(path), {})
            ident = sop or path
            if ident in files:  # the same instance twice in one folder
                g["dups"] += 1
                continue
            files[ident] = path
            g["phi"].update(phi)
    jobs: list[SeriesJob] = []
    used_unreadable: set[str] = set()
    for gkey, g in by_uid.items():
        for members in _clusters(g["folders"]):
            files = tuple(sorted(members.values()))
            dirs = sorted({os.path.dirname(f) for f in files})
            folder = os.path.commonpath(dirs)
            rel = _rel(folder, root)
            notes = []
            stem = safe_stem(rel)
            if names == "hash" or _looks_like_phi(rel, g["phi"]):
                if names != "hash":
                    notes.append("folder path holds the patient's name or ID: archive named by hash only")
                stem = "series"
            if g["dups"]:
                notes.append(f"{g['dups']} duplicate file(s) of the same SOP Instance UID ignored")
            kind, error = "dicom", ""
            if g["modality"] not in allow:
                kind = "excluded"
                notes.append(f"modality {g['modality'] or 'missing'} is not archived (allowed: {', '.join(allow)})")
            bad = [b for d in dirs for b in unreadable.get(d, [])]
            if bad and kind == "dicom":
                used_unreadable.update(dirs)
                more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
                error = (f"{bad[0][0]}: {bad[0][1]}{more}: a DICOM file beside this series cannot be read, so the "
                         "series may be incomplete; fix or remove the file and rerun")
            jobs.append(SeriesJob(key=f"{stem}__{_h(gkey)}", source=folder, kind=kind, series_uid=g["uid"],
                                  files=files, modality=g["modality"], note="; ".join(notes), error=error))
    for path in nifti:
        rel = _rel(path, root)
        base = re.sub(r"\.nii(\.gz)?$", "", rel)
        stem = "nifti" if names == "hash" else safe_stem(base)
        jobs.append(SeriesJob(key=f"{stem}__{_h('nifti:' + rel)}", source=path, kind="nifti", files=(path,)))
    for folder, bad in unreadable.items():
        if folder in used_unreadable:
            continue
        rel = _rel(folder, root)
        stem = "unreadable" if names == "hash" else safe_stem(rel)
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        jobs.append(SeriesJob(key=f"{stem}__{_h('unreadable:' + rel)}", source=folder, kind="unreadable",
                              files=tuple(p for p, _ in bad),
                              error=f"{bad[0][0]}: {bad[0][1]}{more}; no series could be read here"))
    # copies of one series under folders whose names sanitise alike: make the keys unique
    seen: dict[str, int] = {}
    for j in jobs:
        seen[j.key] = seen.get(j.key, 0) + 1
    jobs = [replace(j, key=f"{j.key}-{_h(j.source, 6)}") if seen[j.key] > 1 else j for j in jobs]
    jobs.sort(key=lambda j: j.key)
    return jobs


def find_series(root: str | Path, *, allow_modalities: tuple[str, ...] = ("MR",), names: str = "path",
                exclude: Iterable[str | Path] = ()) -> list[SeriesJob]:
    """Every series below ``root`` (headers only, in this process). See the module docstring."""
    root_p = Path(root).resolve()
    if not root_p.is_dir():
        raise InputError("not a folder", path=root)
    return _group(str(root_p), scan_files(_walk(root_p, exclude)), allow_modalities=allow_modalities, names=names)


def _discover(root: Path, client, *, exclude, allow_modalities, names, progress: bool) -> list[SeriesJob]:
    files = _walk(root, exclude)
    if client is None or len(files) < _LOCAL_SCAN_BELOW:
        return _group(str(root), scan_files(files), allow_modalities=allow_modalities, names=names)
    from dask.distributed import as_completed

    chunks = [files[i:i + _SCAN_CHUNK_FILES] for i in range(0, len(files), _SCAN_CHUNK_FILES)]
    futures = client.map(scan_files, chunks, pure=False)
    entries: list[tuple] = []
    with _bar(len(futures), "scan headers", "chunk", progress) as bar:
        for fut in as_completed(futures):
            entries.extend(fut.result())
            fut.release()
            bar.update(1)
    return _group(str(root), entries, allow_modalities=allow_modalities, names=names)


def find_archives(archives: str | Path) -> list[RestoreJob]:
    """Every ``*.medsr.h5`` below ARCHIVES (a folder) or ARCHIVES itself (a file)."""
    p = Path(archives).resolve()
    if p.is_file():
        return [RestoreJob(key=p.name[: -len(ARCHIVE_SUFFIX)] if p.name.endswith(ARCHIVE_SUFFIX) else p.stem,
                           archive=str(p))]
    if not p.is_dir():
        raise InputError("no such file or folder", path=archives)
    jobs = []
    for f in _walk(p):
        if f.endswith(ARCHIVE_SUFFIX):
            rel = Path(os.path.relpath(f, p)).as_posix()
            jobs.append(RestoreJob(key=rel[: -len(ARCHIVE_SUFFIX)], archive=f))
    return sorted(jobs, key=lambda j: j.key)


# --------------------------------------------------------------------------- tasks (run on workers)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _quiet_worker() -> None:
    logging.getLogger("medsr").setLevel(logging.ERROR)


def _err(e: BaseException) -> str:
    if isinstance(e, MedsrError):
        return str(e)
    first = str(e).splitlines()[0][:200] if str(e) else ""
    return f"internal error: {type(e).__name__}: {first}"


def _archive_row(job: SeriesJob) -> dict:
    row = dict.fromkeys(ARCHIVE_FIELDS)
    row.update(key=job.key, source=job.source, kind=job.kind, series_uid=job.series_uid or None,
               files=len(job.files), archive=job.archive_name, note=job.note or None)
    return row


def _floor_column(info) -> dict | None:
    """The manifest's ``floor``: the floor the archive was made with and its slices per representation."""
    fl = getattr(info, "floor", None)
    if not fl:
        return None
    out = {k: v for k, v in fl.items() if k.startswith("floor_") and k not in ("floor_id", "floor_bytes")}
    out["slices"] = {k: v["slices"] for k, v in fl.get("representations", {}).items()}
    out["floor_bytes"] = fl.get("floor_bytes")
    mn = ((info.audit or {}).get("floor") or {}).get("min_psnr_fg")
    out["min_psnr_fg"] = None if mn is None else round(float(mn), 4)
    return out


def _metrics_from_info(info) -> dict:
    from .api import _flat_audit

    a = _flat_audit(info.audit or {})
    return dict(slices=info.n_slices, original_bytes=info.original_file_bytes, archive_bytes=info.archive_bytes,
                ratio=round(info.ratio, 3), psnr=a.get("psnr"), psnr_fg=a.get("psnr_fg"),
                psnr_bicubic=a.get("psnr_bicubic"), psnr_j2k=a.get("psnr_j2k"), pixel_ratio=round(info.pixel_ratio, 3),
                base=info.base, base_near=info.base_near, floor=_floor_column(info))


def check_existing_archive(path: Path, job: SeriesJob):
    """-> (True, info) when ``path`` verifies and holds this job's series, else (False, problem)."""
    from .archive import read_info, verify_archive

    try:
        res = verify_archive(path)
    except Exception as e:  # verify_archive should not raise, but a damaged HDF5 file can make h5py do so
        return False, (f"{path}: existing archive is unreadable ({type(e).__name__}: "
                       f"{str(e).splitlines()[0][:120] if str(e) else ''}); move it away or rerun with --force")
    if not res.ok:
        return False, (f"existing archive fails verification ({'; '.join(res.problems)}); "
                       "move it away or rerun with --force")
    info = read_info(path)
    if job.series_uid and info.series_uid != job.series_uid:
        return False, f"{path}: existing archive holds series {info.series_uid}, not {job.series_uid}"
    if job.kind == "dicom" and info.n_slices != len(job.files):
        return False, (f"{path}: existing archive has {info.n_slices} slices but the series now has "
                       f"{len(job.files)} files; rerun with --force to archive it again")
    return True, info


def _read_job_series(job: SeriesJob, options: ArchiveOptions):
    if job.kind == "nifti":
        from .io import read_series

        return read_series(job.source)
    # exactly this series' files (read_series(folder) would also read other series' files below it)
    from .io.series import _read_dicom_files

    return _read_dicom_files(Path(job.source), [Path(f) for f in job.files], None,
                             tuple(m.upper() for m in options.allow_modalities))


def archive_job(job: SeriesJob, outdir: str, options: ArchiveOptions) -> dict:
    """Archive one series into ``outdir/job.archive_name``; never raises: returns its manifest row."""
    import warnings

    from .api import archive_series

    _quiet_worker()
    t0 = time.perf_counter()
    row = _archive_row(job)
    out = Path(outdir) / job.archive_name
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if out.exists() and not options.force:
                ok, what = check_existing_archive(out, job)
                if ok:
                    row.update(status="skipped", **_metrics_from_info(what))
                    row["note"] = "; ".join(filter(None, [job.note, "archive exists and verifies"]))
                else:
                    row.update(status="failed", error=what)
            else:
                series = _read_job_series(job, options)
                opts = replace(options, series_uid=job.series_uid or None)
                try:
                    res = archive_series(series, out, opts)
                except OutputError:
                    # a worker of an earlier, killed run may have finished this very archive meanwhile
                    if out.exists() and not options.force:
                        ok, what = check_existing_archive(out, job)
                        if ok:
                            row.update(status="skipped", **_metrics_from_info(what))
                            row["note"] = "archive was completed concurrently by an earlier run"
                            return row
                    raise
                s = res.summary()
                row.update(status="ok", slices=s["slices"], original_bytes=s["original_bytes"],
                           archive_bytes=s["archive_bytes"], ratio=s["ratio"], psnr=s["psnr"],
                           psnr_fg=s["psnr_fg"], psnr_bicubic=s["psnr_bicubic"], psnr_j2k=s["psnr_j2k"],
                           pixel_ratio=s["pixel_ratio"], base=s["base"], base_near=s["base_near"],
                           floor=_floor_column(res.info))
                if s.get("below_threshold"):
                    row["note"] = "; ".join(filter(None, [job.note, "below the quality gate (kept)"]))
    except Exception as e:
        row.update(status="failed", error=_err(e))
    finally:
        row["seconds"] = round(time.perf_counter() - t0, 3)
        row["finished"] = _now()
    return row


def _restore_output(outdir: str, key: str, fmt: str) -> Path:
    return Path(outdir) / (key + (".nii.gz" if fmt == "nifti" else ""))


def restore_job(job: RestoreJob, outdir: str, options: RestoreOptions) -> dict:
    """Restore one archive under ``outdir``; never raises: returns its manifest row."""
    import warnings

    from .api import restore_archive
    from .archive import read_info

    _quiet_worker()
    t0 = time.perf_counter()
    row = dict.fromkeys(RESTORE_FIELDS)
    row.update(key=job.key, archive=job.archive)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                info = read_info(Path(job.archive))
            except MedsrError:
                raise
            except Exception as e:  # h5py may raise on a damaged file
                raise ArchiveError(f"not a readable medsr archive ({type(e).__name__}: "
                                   f"{str(e).splitlines()[0][:120] if str(e) else ''})", path=job.archive) from None
            fmt = options.format
            if fmt == "auto":
                fmt = "nifti" if info.kind == "nifti" else "dicom"
            out = _restore_output(outdir, job.key, fmt)
            row.update(format=fmt, output=Path(os.path.relpath(out, outdir)).as_posix(), slices=info.n_slices)
            out.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if out.exists() and not options.force:
                n = len(list(out.glob("*.dcm"))) if out.is_dir() else None
                if out.is_file() or n == info.n_slices:
                    row.update(status="skipped", note="output exists and is complete")
                else:
                    row.update(status="failed", error=f"{out}: output exists but is incomplete ({n} of "
                               f"{info.n_slices} files); remove it or rerun with --force")
            else:
                res = restore_archive(job.archive, out, replace(options, format=fmt))
                row.update(status="ok", method=res.method, model_id=res.model_id, device=res.device,
                           note="; ".join(res.warnings) or None)
    except Exception as e:
        row.update(status="failed", error=_err(e))
    finally:
        row["seconds"] = round(time.perf_counter() - t0, 3)
        row["finished"] = _now()
    return row


def probe_worker(paths: list[str]) -> dict:
    """Run on every worker before a batch: medsr version and whether the shared paths are visible."""
    _quiet_worker()
    from . import __version__

    return {"medsr": __version__,
            "paths": {p: (os.path.isdir(p), os.access(p, os.R_OK | os.X_OK), os.access(p, os.W_OK)) for p in paths}}


# --------------------------------------------------------------------------- manifest (client only)


class Manifest:
    """``manifest.jsonl``: one JSON object per line, keyed by ``key``, rewritten atomically on each update.

    Rows of earlier runs that this run does not touch (e.g. series whose originals were
    deleted after archiving) are kept. Rewrites are throttled only when the file is so
    large that a rewrite takes more than 50 ms (then at most ~10% of the time is spent writing).
    """

    def __init__(self, path: Path, fields: tuple[str, ...]):
        self.path = Path(path)
        self.fields = fields
        self.rows: dict[str, dict] = {}
        self._cost = 0.0
        self._last = 0.0
        self._dirty = False
        if self.path.exists():
            for n, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    self.rows[row["key"]] = row
                except (ValueError, KeyError, TypeError):
                    log.warning("%s line %d is not a manifest row; dropped", self.path, n)

    def put(self, row: dict) -> None:
        self.rows[row["key"]] = {k: row.get(k) for k in self.fields}
        self._dirty = True
        if self._cost < 0.05 or time.monotonic() - self._last >= 10 * self._cost:
            self.write()

    def write(self) -> None:
        from .io.atomic import atomic_file

        t0 = time.monotonic()
        with atomic_file(self.path, force=True, mode=0o600) as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                for key in sorted(self.rows):
                    f.write(json.dumps(self.rows[key], default=str, allow_nan=False) + "\n")
        self._last = time.monotonic()
        self._cost = self._last - t0
        self._dirty = False

    def flush(self) -> None:
        if self._dirty or not self.path.exists():
            self.write()


# --------------------------------------------------------------------------- running


@contextlib.contextmanager
def _outdir_lock(outdir: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    fd = os.open(outdir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise OutputError("another medsr batch is writing into this folder (its lock is held); "
                              "wait for it to finish or stop it", path=outdir) from None
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def _bar(total: int, desc: str, unit: str, enabled: bool):
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not enabled, dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()


@contextlib.contextmanager
def connect(scheduler=None, workers: int | None = None):
    """A Dask client: ``scheduler`` an address (tcp://host:8786), an existing ``Client`` (not
    closed here), or None for a LocalCluster of ``workers`` (default 2) single-threaded processes."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise MedsrError("batch commands need Dask: pip install 'medsr[batch]' (dask[distributed])") from None
    if not log.isEnabledFor(logging.DEBUG):  # Dask logs every worker start/stop at INFO
        logging.getLogger("distributed").setLevel(logging.WARNING)
    if scheduler is not None and not isinstance(scheduler, str):
        yield scheduler
        return
    if scheduler:
        try:
            client = Client(scheduler, timeout="30s")
        except (OSError, TimeoutError) as e:
            raise MedsrError(f"cannot connect to the Dask scheduler at {scheduler}: {str(e).splitlines()[0][:160]}") from None
        try:
            yield client
        finally:
            client.close()
        return
    n = workers or 2
    if n < 1:
        raise MedsrError(f"--workers must be at least 1 (got {n})")
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address=None, scheduler_kwargs={"dashboard": False},
                           silence_logs=logging.ERROR)
    try:
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


def _check_workers(client, paths: list[Path]) -> None:
    from . import __version__

    try:
        client.wait_for_workers(1, timeout=120)
    except Exception:
        raise MedsrError("no Dask worker joined the scheduler within 120 s (start dask-worker processes)") from None
    try:
        probes = client.run(probe_worker, [str(p) for p in paths])
    except Exception as e:
        raise MedsrError("a Dask worker cannot run medsr (install the same medsr on every worker): "
                         f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}") from None
    for addr, info in probes.items():
        if info["medsr"] != __version__:
            raise MedsrError(f"worker {addr} runs medsr {info['medsr']}, this client {__version__}; "
                             "install the same medsr everywhere")
        for p, (is_dir, readable, writable) in info["paths"].items():
            if not (is_dir and readable):
                raise MedsrError(f"worker {addr} cannot see {p}: the input and output folders must be on "
                                 "storage shared by every worker, at the same path")
        out = str(paths[-1])
        if not info["paths"][out][2]:
            raise MedsrError(f"worker {addr} cannot write into {out} (shared storage mounted read-only?)")


def _window(client) -> int:
    try:
        return max(2, 2 * sum(client.nthreads().values()))
    except Exception:
        return 4


def _run_tasks(client, jobs: list, fn: Callable, args: tuple, manifest: Manifest, fail_row: Callable,
               *, desc: str, progress: bool, ledger=None) -> list[dict]:
    """Submit ``fn(job, *args)`` per job, a bounded number in flight; record rows as they complete."""
    import uuid

    from dask.distributed import as_completed

    token = uuid.uuid4().hex[:8]
    todo = iter(jobs)
    inflight: dict = {}
    ac = as_completed()
    rows: list[dict] = []
    window = _window(client)

    def submit_next() -> bool:
        job = next(todo, None)
        if job is None:
            return False
        fut = client.submit(fn, job, *args, key=f"{desc}-{job.key}-{token}", pure=False, retries=0)
        if ledger is not None:
            ledger.running(job.key)
        inflight[fut] = job
        ac.add(fut)
        return True

    for _ in range(window):
        if not submit_next():
            break
    failed = 0
    with _bar(len(jobs), desc, "series", progress) as bar:
        for n, fut in enumerate(ac, 1):
            job = inflight.pop(fut)
            try:
                row = fut.result()
            except Exception as e:  # the worker died, the task could not be unpickled, ...
                row = fail_row(job, f"task failed on the cluster: {type(e).__name__}: "
                                    f"{str(e).splitlines()[0][:200] if str(e) else ''}")
            fut.release()
            rows.append(row)
            manifest.put(row)
            if ledger is not None:
                record_row(ledger, row)
            failed += row.get("status") == "failed"
            bar.update(1)
            if failed:
                bar.set_postfix(failed=failed)
            if n % 50 == 0:
                window = _window(client)
            while len(inflight) < window and submit_next():
                pass
    return rows


def _summary(rows: list[dict], manifest: Manifest, t0: float) -> BatchSummary:
    count = {s: sum(r.get("status") == s for r in rows) for s in ("ok", "failed", "skipped")}
    return BatchSummary(ok=count["ok"], failed=count["failed"], skipped=count["skipped"], rows=rows,
                        manifest_path=manifest.path, seconds=time.perf_counter() - t0)


def _prepare_outdir(outdir: str | Path) -> Path:
    out = Path(outdir).resolve()
    if out.exists() and not out.is_dir():
        raise OutputError("is a file; give an output folder", path=outdir)
    if not out.parent.is_dir():
        raise OutputError("parent folder does not exist", path=out.parent)
    out.mkdir(mode=0o700, exist_ok=True)  # owner-only, like every output
    if not os.access(out, os.W_OK | os.X_OK):
        raise OutputError("output folder is not writable", path=out)
    return out


def archive_batch(root: str | Path, outdir: str | Path, *, scheduler=None, workers: int | None = None,
                  options: ArchiveOptions | None = None, progress: bool = True,
                  names: str = "path") -> BatchSummary:
    """Archive every series below ``root`` into ``outdir`` (one Dask task per series).

    ``scheduler``: None (a LocalCluster of ``workers`` processes), an address, or a Client.
    ``names``: "path" (relative folder + UID hash) or "hash" (UID hash only).
    Returns the counts of this run; ``outdir/manifest.jsonl`` holds every row.
    """
    from .api import ArchiveOptions
    from .io.atomic import clean_stale_temps

    t0 = time.perf_counter()
    options = options or ArchiveOptions()
    root_p = Path(root).resolve()
    if not root_p.is_dir():
        raise InputError("not a folder (give the folder holding the series)", path=root)
    if names not in ("path", "hash"):
        raise MedsrError(f"names must be 'path' or 'hash', not {names!r}")
    _check_archive_options(options)  # one error before any work, not one failed row per series
    out = _prepare_outdir(outdir)
    with _outdir_lock(out):
        clean_stale_temps(out)
        manifest = Manifest(out / MANIFEST, ARCHIVE_FIELDS)
        ledger = JobLedger(out)  # OUTDIR/jobs.sqlite: `medsr jobs OUTDIR`; a killed run's jobs -> interrupted
        ledger.mark_interrupted()
        try:
            with connect(scheduler, workers) as client:
                _check_workers(client, [root_p, out])
                jobs = _discover(root_p, client, exclude=[out], allow_modalities=options.allow_modalities,
                                 names=names, progress=progress)
                if not jobs:
                    raise InputError("no DICOM image series or NIfTI files found below this folder", path=root)
                rows = []
                for job in jobs:  # decided without a task
                    if job.error:
                        rows.append(_fail_archive_row(job, job.error))
                    elif job.kind == "excluded":
                        rows.append({**_archive_row(job), "status": "skipped", "archive": None, "finished": _now()})
                for r in rows:
                    manifest.put(r)
                todo = [j for j in jobs if j.kind in ("dicom", "nifti") and not j.error]
                for j in todo:
                    ledger.add(j.key, "archive", j.series_uid or j.source)
                rows += _run_tasks(client, todo, archive_job, (str(out), options), manifest, _fail_archive_row,
                                   desc="archive", progress=progress, ledger=ledger)
        finally:
            manifest.flush()
    return _summary(rows, manifest, t0)


def _check_archive_options(options: ArchiveOptions) -> None:
    """The per-series options every task would refuse: the floor and the base (one-line MedsrError)."""
    from .codec.base import check_base
    from .floor import check_floor

    check_floor(options.floor_psnr_fg, options.floor_ssim, options.floor_fallback)
    if options.base is not None and (options.base != "lossy" or options.base_near is not None):
        check_base(options.base, options.base_near)


def _fail_archive_row(job: SeriesJob, error: str) -> dict:
    return {**_archive_row(job), "status": "failed", "error": error, "finished": _now(),
            "archive": None if job.error else job.archive_name}


def _fail_restore_row(job: RestoreJob, error: str) -> dict:
    row = dict.fromkeys(RESTORE_FIELDS)
    row.update(key=job.key, archive=job.archive, status="failed", error=error, finished=_now())
    return row


def restore_batch(archives: str | Path, outdir: str | Path, *, scheduler=None, workers: int | None = None,
                  options: RestoreOptions | None = None, progress: bool = True) -> BatchSummary:
    """Restore every ``*.medsr.h5`` below ``archives`` under ``outdir`` (one Dask task per archive).

    Output of ``A/B.medsr.h5``: ``outdir/A/B/`` (DICOM) or ``outdir/A/B.nii.gz``; ``options.format``
    "auto" (the default here) picks NIfTI for archives made from NIfTI and DICOM otherwise.
    Existing complete outputs are skipped; ``outdir/restore-manifest.jsonl`` holds every row.
    """
    from .api import RestoreOptions
    from .io.atomic import clean_stale_temps

    t0 = time.perf_counter()
    options = options or RestoreOptions(format="auto")
    if options.format not in ("auto", "dicom", "nifti"):
        raise MedsrError(f"unknown output format {options.format!r} (auto, dicom or nifti)")
    jobs = find_archives(archives)
    if not jobs:
        raise InputError(f"no *{ARCHIVE_SUFFIX} archives found", path=archives)
    out = _prepare_outdir(outdir)
    with _outdir_lock(out):
        for d in {out} | {_restore_output(str(out), j.key, "dicom").parent for j in jobs}:
            clean_stale_temps(d)
        manifest = Manifest(out / RESTORE_MANIFEST, RESTORE_FIELDS)
        try:
            with connect(scheduler, workers) as client:
                src = Path(archives).resolve()
                _check_workers(client, [src if src.is_dir() else src.parent, out])
                rows = _run_tasks(client, jobs, restore_job, (str(out), options), manifest, _fail_restore_row,
                                  desc="restore", progress=progress)
        finally:
            manifest.flush()
    return _summary(rows, manifest, t0)


# --------------------------------------------------------------------------- CLI

BATCH_EPILOG = f"""exit codes: 0 every series archived/restored or skipped as already done;
{EXIT_SOME_FAILED} the batch ran but at least one series failed (see the manifest); other codes as for
`medsr archive` (e.g. 2 bad input folder, 5 output folder problem, 1 cluster problem)."""


def _add_cluster_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="Dask scheduler address (tcp://host:8786); default: a local cluster on this machine")
    p.add_argument("--workers", type=int, metavar="N", help="local cluster worker processes (default 2)")


def register_cli(subparsers) -> None:
    """Add ``archive-batch`` and ``restore-batch`` to medsr's argparse subparsers."""
    from .cli import _common, add_ensemble_arg

    a = subparsers.add_parser(
        "archive-batch", help="archive every series below a folder, in parallel on a Dask cluster",
        description="Find every MR series below ROOT (DICOM headers only; NIfTI files too), archive each "
        "into OUTDIR as one Dask task, and keep OUTDIR/manifest.jsonl up to date. Rerunning resumes: "
        "series whose archive exists and verifies are skipped.",
        epilog=BATCH_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    a.add_argument("root", metavar="ROOT", nargs="?", help="folder searched recursively for series")
    a.add_argument("--dicomweb", metavar="URL", help="instead of ROOT: the series a QIDO-RS search of this DICOMweb "
                   "root selects (with --query), fetched as stored into a private temp folder (docs/pacs.md)")
    a.add_argument("--query", action="append", metavar="KEY=VALUE",
                   help="QIDO-RS filter for --dicomweb, repeatable: Modality=MR, StudyDate=20190101-20201231")
    a.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="folder for the archives and manifest")
    _add_cluster_args(a)
    a.add_argument("--method", default="auto", choices=["auto", "model", "bicubic"],
                   help="restore method recorded in each archive (as for `medsr archive`)")
    a.add_argument("--model", help="model name or .safetensors path")
    add_ensemble_arg(a, help="model self-ensemble size (as for `medsr archive`; default: the model's own)")
    a.add_argument("--operator", default="area4-v1", help="down-sampling operator id")
    a.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="device on each worker")
    a.add_argument("--no-consistency", action="store_true", help="do not project the restore onto the stored data")
    a.add_argument("--no-j2k", action="store_true", help="skip the JPEG 2000 baseline (faster)")
    a.add_argument("--allow-modality", action="append", default=[], metavar="MOD",
                   help="also archive this modality (others are listed as skipped)")
    a.add_argument("--min-psnr", type=float, metavar="DB", help="quality gate: a series below it fails")
    a.add_argument("--min-ssim", type=float, metavar="X", help="quality gate on SSIM")
    a.add_argument("--min-psnr-fg", type=float, metavar="DB", help="quality gate on foreground PSNR")
    a.add_argument("--keep-below-threshold", action="store_true", help="write archives below a gate, marked")
    a.add_argument("--base", choices=["lossless", "near-lossless", "lossy"],
                   help="how each series' low-res slices are stored (as for `medsr archive`; default near-lossless)")
    a.add_argument("--base-near", type=int, metavar="K",
                   help="JPEG-LS NEAR of --base near-lossless (default 2) or lossy (default 2%% of the window)")
    a.add_argument("--floor-psnr-fg", type=float, metavar="DB",
                   help="per-slice quality floor on the foreground PSNR, for every series (as for `medsr archive`; "
                   "docs/floor.md). A series whose floor cannot be met fails with its error in the manifest")
    a.add_argument("--floor-ssim", type=float, metavar="S", help="per-slice quality floor on the whole-slice SSIM")
    a.add_argument("--floor-fallback", default="error", choices=["error", "lossless"],
                   help="a slice no lossy representation meets: error (that series fails) or lossless")
    a.add_argument("--hashed-names", action="store_true", help="name archives by series-UID hash only (no folder names)")
    a.add_argument("--force", action="store_true", help="archive again even where a verified archive exists")
    from .pacs.cli_args import add_connection_args

    add_connection_args(a, dimse=False)
    _common(a)
    a.set_defaults(func=cmd_archive_batch)

    r = subparsers.add_parser(
        "restore-batch", help="restore every archive below a folder, in parallel on a Dask cluster",
        description="Restore every *.medsr.h5 below ARCHIVES into OUTDIR (A/B.medsr.h5 -> OUTDIR/A/B/), one "
        "Dask task per archive, keeping OUTDIR/restore-manifest.jsonl up to date. Outputs that already "
        "exist complete are skipped.", epilog=BATCH_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("archives", metavar="ARCHIVES", help="folder searched recursively for *.medsr.h5 (or one archive)")
    r.add_argument("-o", "--output", required=True, metavar="OUTDIR")
    _add_cluster_args(r)
    r.add_argument("--format", default="auto", choices=["auto", "dicom", "nifti"],
                   help="auto: NIfTI for archives made from NIfTI, DICOM otherwise")
    r.add_argument("--method", choices=["model", "bicubic", "nearest"], help="override each archive's method")
    r.add_argument("--model", help="override each archive's model (the stored audit will not apply)")
    add_ensemble_arg(r, help="self-ensemble size (default: what each archive recorded)")
    r.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="device on each worker")
    r.add_argument("--batch-size", type=int, default=0, help="slices per batch (0: automatic)")
    r.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    r.add_argument("--no-consistency", action="store_true", help="do not project onto the stored low-res data")
    r.add_argument("--force", action="store_true", help="replace existing outputs")
    _common(r)
    r.set_defaults(func=cmd_restore_batch)


def _report(args, summary: BatchSummary, verb: str) -> int:
    d = summary.to_dict()
    if args.json:
        print(json.dumps(d, default=str))
    else:
        lines = [f"{verb} {summary.ok}, skipped {summary.skipped} (already done or excluded), failed {summary.failed}"
                 f" of {len(summary.rows)} in {summary.seconds:.1f} s; manifest: {summary.manifest_path}"]
        lines += [f"  FAILED {f['source']}: {f['error']}" for f in d["failures"][:20]]
        if summary.failed > 20:
            lines.append(f"  ... and {summary.failed - 20} more (see the manifest)")
        print("\n".join(lines))
    return summary.exit_code


def _check_workers_arg(args) -> None:
    if args.scheduler and args.workers:
        log.warning("--workers is ignored with --scheduler (the cluster has its own workers)")


def cmd_archive_batch(args) -> int:
    from .api import ArchiveOptions

    _check_workers_arg(args)
    opts = ArchiveOptions(
        operator=args.operator, method=args.method, model=args.model, device=args.device,
        consistency=not args.no_consistency, allow_modalities=("MR",) + tuple(m.upper() for m in args.allow_modality),
        force=args.force, min_psnr=args.min_psnr, min_ssim=args.min_ssim, min_psnr_fg=args.min_psnr_fg,
        keep_below_threshold=args.keep_below_threshold, baselines=not args.no_j2k, base=args.base,
        base_near=args.base_near, floor_psnr_fg=args.floor_psnr_fg, floor_ssim=args.floor_ssim,
        floor_fallback=args.floor_fallback, ensemble=args.ensemble)
    kw = dict(scheduler=args.scheduler, workers=args.workers, options=opts,
              progress=not args.quiet and sys.stderr.isatty(), names="hash" if args.hashed_names else "path")
    if (args.root is None) == (args.dicomweb is None):
        raise InputError("give ROOT or --dicomweb URL (with --query), not both or neither")
    if args.dicomweb is None:
        s = archive_batch(args.root, args.output, **kw)
    else:  # a QIDO-RS selection, fetched into a private temp folder (medsr/pacs/batch.py)
        from .pacs.batch import archive_batch_dicomweb
        from .pacs.cli_args import connection_from_args

        s = archive_batch_dicomweb(args.dicomweb, args.query, args.output, connection=connection_from_args(args), **kw)
    return _report(args, s, "archived")


def cmd_restore_batch(args) -> int:
    from .api import RestoreOptions

    _check_workers_arg(args)
    opts = RestoreOptions(method=args.method, model=args.model, device=args.device, consistency=not args.no_consistency,
                          format=args.format, force=args.force, batch_size=args.batch_size, precision=args.precision,
                          ensemble=args.ensemble)
    s = restore_batch(args.archives, args.output, scheduler=args.scheduler, workers=args.workers, options=opts,
                      progress=not args.quiet and sys.stderr.isatty())
    return _report(args, s, "restored")


def main(argv: list[str] | None = None) -> int:
    """``python -m medsr.batch_cli archive-batch|restore-batch ...`` (the same as ``medsr archive-batch``)."""
    from .cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    # run through the importable module so tasks pickle as medsr.batch_cli.*, not __main__.*
    from medsr.batch_cli import main as _main

    sys.exit(_main())
