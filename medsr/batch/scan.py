"""Discovery: every series below a folder from DICOM headers only (``stop_before_pixels``), grouped
into jobs (one per Series Instance UID and folder cluster, one per NIfTI file, one per folder of
unreadable files); the header scan runs on the Dask workers for large trees."""
from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Iterable

from ..errors import InputError
from .cluster import progress_bar
from .jobs import ARCHIVE_SUFFIX, RestoreJob, SeriesJob
from .phi import looks_like_phi, phi_tokens, safe_stem, short_hash

_HEADER_TAGS = ["SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "Modality", "Rows", "Columns",
                "PatientName", "PatientID"]
_SCAN_CHUNK_FILES = 1000  # files per header-scan task
_LOCAL_SCAN_BELOW = 2000  # scan in the client when the tree has fewer files than this


def _rel(path: str, root: str) -> str:
    r = os.path.relpath(path, root)
    return "" if r == "." else r


def walk_files(root: Path, exclude: Iterable[Path] = ()) -> list[str]:
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
    ``("unreadable", path, reason)``. Non-DICOM files and non-image DICOM objects are left out
    (``medsr.api.classify_dicom_file`` decides, from the header only).
    """
    from ..api import classify_dicom_file

    out: list[tuple] = []
    for p in paths:
        if p.endswith(".nii") or p.endswith(".nii.gz"):
            out.append(("nifti", p))
            continue
        try:
            verdict, ds = classify_dicom_file(p, header_only=True, tags=_HEADER_TAGS)
        except OSError as e:
            out.append(("unreadable", p, f"cannot read file ({e.strerror})"))
            continue
        if verdict.is_broken:
            out.append(("unreadable", p, verdict.reason))
        if not verdict.is_image:
            continue
        try:  # values decode here (a damaged header can fail now): the file's job says so, the scan goes on
            entry = ("image", p, str(ds.SeriesInstanceUID), str(ds.get("SOPInstanceUID", "")),
                     str(ds.get("Modality", "")).upper(), tuple(sorted(phi_tokens(ds))))
        except Exception as e:  # noqa: BLE001 - any decoder error; the message may quote values: only its type
            out.append(("unreadable", p, f"cannot decode a header element ({type(e).__name__})"))
            continue
        out.append(entry)
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
            if names == "hash" or looks_like_phi(rel, g["phi"]):
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
            jobs.append(SeriesJob(key=f"{stem}__{short_hash(gkey)}", source=folder, kind=kind, series_uid=g["uid"],
                                  files=files, modality=g["modality"], note="; ".join(notes), error=error))
    for path in nifti:
        rel = _rel(path, root)
        base = re.sub(r"\.nii(\.gz)?$", "", rel)
        stem = "nifti" if names == "hash" else safe_stem(base)
        jobs.append(SeriesJob(key=f"{stem}__{short_hash('nifti:' + rel)}", source=path, kind="nifti", files=(path,)))
    for folder, bad in unreadable.items():
        if folder in used_unreadable:
            continue
        rel = _rel(folder, root)
        stem = "unreadable" if names == "hash" else safe_stem(rel)
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        jobs.append(SeriesJob(key=f"{stem}__{short_hash('unreadable:' + rel)}", source=folder, kind="unreadable",
                              files=tuple(p for p, _ in bad),
                              error=f"{bad[0][0]}: {bad[0][1]}{more}; no series could be read here"))
    # copies of one series under folders whose names sanitise alike: make the keys unique
    seen: dict[str, int] = {}
    for j in jobs:
        seen[j.key] = seen.get(j.key, 0) + 1
    jobs = [replace(j, key=f"{j.key}-{short_hash(j.source, 6)}") if seen[j.key] > 1 else j for j in jobs]
    jobs.sort(key=lambda j: j.key)
    return jobs


def find_series(root: str | Path, *, allow_modalities: tuple[str, ...] = ("MR",), names: str = "path",
                exclude: Iterable[str | Path] = ()) -> list[SeriesJob]:
    """Every series below ``root`` (headers only, in this process). See the module docstring."""
    root_p = Path(root).resolve()
    if not root_p.is_dir():
        raise InputError("not a folder", path=root)
    return _group(str(root_p), scan_files(walk_files(root_p, exclude)), allow_modalities=allow_modalities, names=names)


def discover(root: Path, client, *, exclude, allow_modalities, names, progress: bool) -> list[SeriesJob]:
    files = walk_files(root, exclude)
    if client is None or len(files) < _LOCAL_SCAN_BELOW:
        return _group(str(root), scan_files(files), allow_modalities=allow_modalities, names=names)
    from dask.distributed import as_completed

    chunks = [files[i:i + _SCAN_CHUNK_FILES] for i in range(0, len(files), _SCAN_CHUNK_FILES)]
    futures = client.map(scan_files, chunks, pure=False)
    entries: list[tuple] = []
    with progress_bar(len(futures), "scan headers", "chunk", progress) as bar:
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
    for f in walk_files(p):
        if f.endswith(ARCHIVE_SUFFIX):
            rel = Path(os.path.relpath(f, p)).as_posix()
            jobs.append(RestoreJob(key=rel[: -len(ARCHIVE_SUFFIX)], archive=f))
    return sorted(jobs, key=lambda j: j.key)
