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

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError, MedsrError, OutputError
from .cluster import check_workers, connect, run_tasks
from .jobs import ARCHIVE_SUFFIX, BatchSummary
from .lock import outdir_lock
from .manifest import ARCHIVE_FIELDS, MANIFEST, RESTORE_FIELDS, RESTORE_MANIFEST, Manifest
from .scan import discover, find_archives
from .tasks import archive_job, archive_row, fail_archive_row, fail_restore_row, now, restore_job, restore_output

if TYPE_CHECKING:  # medsr.api is imported lazily: building the CLI parser must stay cheap
    from ..api import ArchiveOptions, RestoreOptions


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
    from ..api import ArchiveOptions, JobLedger, clean_stale_temps

    t0 = time.perf_counter()
    options = options or ArchiveOptions()  # options check themselves when made: one error before any work
    root_p = Path(root).resolve()
    if not root_p.is_dir():
        raise InputError("not a folder (give the folder holding the series)", path=root)
    if names not in ("path", "hash"):
        raise MedsrError(f"names must be 'path' or 'hash', not {names!r}")
    out = _prepare_outdir(outdir)
    with outdir_lock(out):
        clean_stale_temps(out)
        manifest = Manifest(out / MANIFEST, ARCHIVE_FIELDS)
        ledger = JobLedger(out)  # OUTDIR/jobs.sqlite: `medsr jobs OUTDIR`; a killed run's jobs -> interrupted
        ledger.mark_interrupted()
        try:
            with connect(scheduler, workers) as client:
                check_workers(client, [root_p, out])
                jobs = discover(root_p, client, exclude=[out], allow_modalities=options.allow_modalities,
                                 names=names, progress=progress)
                if not jobs:
                    raise InputError("no DICOM image series or NIfTI files found below this folder", path=root)
                rows = []
                for job in jobs:  # decided without a task
                    if job.error:
                        rows.append(fail_archive_row(job, job.error))
                    elif job.kind == "excluded":
                        rows.append({**archive_row(job), "status": "skipped", "archive": None, "finished": now()})
                for r in rows:
                    manifest.put(r)
                todo = [j for j in jobs if j.kind in ("dicom", "nifti") and not j.error]
                for j in todo:
                    ledger.add(j.key, "archive", j.series_uid or j.source)
                rows += run_tasks(client, todo, archive_job, (str(out), options), manifest, fail_archive_row,
                                   desc="archive", progress=progress, ledger=ledger)
        finally:
            manifest.flush()
    return _summary(rows, manifest, t0)


def restore_batch(archives: str | Path, outdir: str | Path, *, scheduler=None, workers: int | None = None,
                  options: RestoreOptions | None = None, progress: bool = True) -> BatchSummary:
    """Restore every ``*.medsr.h5`` below ``archives`` under ``outdir`` (one Dask task per archive).

    Output of ``A/B.medsr.h5``: ``outdir/A/B/`` (DICOM) or ``outdir/A/B.nii.gz``; ``options.format``
    "auto" (the default here) picks NIfTI for archives made from NIfTI and DICOM otherwise.
    Existing complete outputs are skipped; ``outdir/restore-manifest.jsonl`` holds every row.
    """
    from ..api import RestoreOptions, clean_stale_temps

    t0 = time.perf_counter()
    options = options or RestoreOptions(format="auto")  # options check themselves (medsr.flow.options)
    jobs = find_archives(archives)
    if not jobs:
        raise InputError(f"no *{ARCHIVE_SUFFIX} archives found", path=archives)
    out = _prepare_outdir(outdir)
    with outdir_lock(out):
        for d in {out} | {restore_output(str(out), j.key, "dicom").parent for j in jobs}:
            clean_stale_temps(d)
        manifest = Manifest(out / RESTORE_MANIFEST, RESTORE_FIELDS)
        try:
            with connect(scheduler, workers) as client:
                src = Path(archives).resolve()
                check_workers(client, [src if src.is_dir() else src.parent, out])
                rows = run_tasks(client, jobs, restore_job, (str(out), options), manifest, fail_restore_row,
                                  desc="restore", progress=progress)
        finally:
            manifest.flush()
    return _summary(rows, manifest, t0)
