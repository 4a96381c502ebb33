"""The Dask tasks: archive one series, restore one archive, probe a worker. Module-level functions of
plain paths and options that never raise: each returns its manifest row."""
from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ArchiveError, MedsrError, OutputError
from .jobs import RestoreJob, SeriesJob
from .manifest import ARCHIVE_FIELDS, RESTORE_FIELDS

if TYPE_CHECKING:  # medsr.api is imported lazily: building the CLI parser must stay cheap
    from ..api import ArchiveOptions, RestoreOptions


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _quiet_worker() -> None:
    logging.getLogger("medsr").setLevel(logging.ERROR)


def _err(e: BaseException) -> str:
    if isinstance(e, MedsrError):
        return str(e)
    first = str(e).splitlines()[0][:200] if str(e) else ""
    return f"internal error: {type(e).__name__}: {first}"


def archive_row(job: SeriesJob) -> dict:
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
    from ..api import flat_audit

    a = flat_audit(info.audit or {})
    return dict(slices=info.n_slices, original_bytes=info.original_file_bytes, archive_bytes=info.archive_bytes,
                ratio=round(info.ratio, 3), psnr=a.get("psnr"), psnr_fg=a.get("psnr_fg"),
                psnr_bicubic=a.get("psnr_bicubic"), psnr_j2k=a.get("psnr_j2k"), pixel_ratio=round(info.pixel_ratio, 3),
                base=info.base, base_near=info.base_near, floor=_floor_column(info))


def check_existing_archive(path: Path, job: SeriesJob):
    """-> (True, info) when ``path`` verifies and holds this job's series, else (False, problem)."""
    from ..api import read_archive_info, verify_archive

    try:
        res = verify_archive(path)
    except Exception as e:  # verify_archive should not raise, but a damaged HDF5 file can make h5py do so
        return False, (f"{path}: existing archive is unreadable ({type(e).__name__}: "
                       f"{str(e).splitlines()[0][:120] if str(e) else ''}); move it away or rerun with --force")
    if not res.ok:
        return False, (f"existing archive fails verification ({'; '.join(res.problems)}); "
                       "move it away or rerun with --force")
    info = read_archive_info(path)
    if job.series_uid and info.series_uid != job.series_uid:
        return False, f"{path}: existing archive holds series {info.series_uid}, not {job.series_uid}"
    if job.kind == "dicom" and info.n_slices != len(job.files):
        return False, (f"{path}: existing archive has {info.n_slices} slices but the series now has "
                       f"{len(job.files)} files; rerun with --force to archive it again")
    return True, info


def _read_job_series(job: SeriesJob, options: ArchiveOptions):
    if job.kind == "nifti":
        from ..api import read_series

        return read_series(job.source)
    # exactly this series' files (read_series(folder) would also read other series' files below it)
    from ..api import read_dicom_files

    return read_dicom_files(Path(job.source), [Path(f) for f in job.files], None,
                             tuple(m.upper() for m in options.allow_modalities))


def archive_job(job: SeriesJob, outdir: str, options: ArchiveOptions) -> dict:
    """Archive one series into ``outdir/job.archive_name``; never raises: returns its manifest row."""
    import warnings

    from ..api import archive_series

    _quiet_worker()
    t0 = time.perf_counter()
    row = archive_row(job)
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
        row["finished"] = now()
    return row


def restore_output(outdir: str, key: str, fmt: str) -> Path:
    return Path(outdir) / (key + (".nii.gz" if fmt == "nifti" else ""))


def restore_job(job: RestoreJob, outdir: str, options: RestoreOptions) -> dict:
    """Restore one archive under ``outdir``; never raises: returns its manifest row."""
    import warnings

    from ..api import read_archive_info, restore_archive

    _quiet_worker()
    t0 = time.perf_counter()
    row = dict.fromkeys(RESTORE_FIELDS)
    row.update(key=job.key, archive=job.archive)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                info = read_archive_info(Path(job.archive))
            except MedsrError:
                raise
            except Exception as e:  # h5py may raise on a damaged file
                raise ArchiveError(f"not a readable medsr archive ({type(e).__name__}: "
                                   f"{str(e).splitlines()[0][:120] if str(e) else ''})", path=job.archive) from None
            fmt = options.format
            if fmt == "auto":
                fmt = "nifti" if info.kind == "nifti" else "dicom"
            out = restore_output(outdir, job.key, fmt)
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
        row["finished"] = now()
    return row


def probe_worker(paths: list[str]) -> dict:
    """Run on every worker before a batch: medsr version and whether the shared paths are visible."""
    _quiet_worker()
    from .. import __version__

    return {"medsr": __version__,
            "paths": {p: (os.path.isdir(p), os.access(p, os.R_OK | os.X_OK), os.access(p, os.W_OK)) for p in paths}}


def fail_archive_row(job: SeriesJob, error: str) -> dict:
    return {**archive_row(job), "status": "failed", "error": error, "finished": now(),
            "archive": None if job.error else job.archive_name}


def fail_restore_row(job: RestoreJob, error: str) -> dict:
    row = dict.fromkeys(RESTORE_FIELDS)
    row.update(key=job.key, archive=job.archive, status="failed", error=error, finished=now())
    return row
