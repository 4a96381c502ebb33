"""Archive from a DICOMweb PACS vs archive from local files, one worker, in the same run.

    python -m pipelines.bench_pacs [--series DIR] [--repeats 3] [--method bicubic|model] [--json OUT]

Starts Debian's Orthanc with its DICOMweb plugin on loopback (in a private network namespace
when the kernel allows it; HTTP basic authentication on, DICOM off), uploads the series
(default: SAG-anon from ../shared/data, 192 files 256x256), then times, alternating, each
``--repeats`` times on one process:

1. ``medsr.archive_series(<local folder>)``                          (the baseline)
2. ``medsr.pacs.archive_remote(<DICOMweb series URL>)``   (WADO-RS fetch as stored + the same archive)
3. the WADO-RS fetch alone (``DicomwebServer.fetch_series``)

and prints the medians as MB/s of original file bytes, with the ratio remote / local.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from pipelines.local_orthanc import (enter_private_netns, find_dicomweb_plugin, free_port, start_orthanc, stop,
                                     wait_for_http)

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
USER, PASSWORD = "bench", "bench-only-password"


def _default_series(work: Path) -> Path:
    archive = SHARED / "sag-anon-t1-mprage.tar.gz"
    if not archive.is_file():
        sys.exit(f"no --series given and {archive} is missing")
    with tarfile.open(archive) as t:
        t.extractall(work / "sag", filter="data")
    folders = {p.parent for p in (work / "sag").rglob("*") if p.is_file() and p.suffix.lower() in (".dcm", "")}
    return max(folders, key=lambda f: sum(1 for _ in f.iterdir()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.bench_pacs", description=__doc__.splitlines()[0])
    ap.add_argument("--series", help="folder of one MR series (default: SAG-anon from ../shared/data)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--method", default="bicubic", choices=["bicubic", "model"])
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)

    import logging

    import pydicom
    import requests

    logging.basicConfig(level=logging.ERROR)  # the series folder's README/LICENSE: "not a DICOM file, skipped"

    import medsr
    from medsr.pacs import Connection, archive_remote
    from medsr.pacs.dicomweb import DicomwebServer

    if find_dicomweb_plugin() is None:
        sys.exit("needs Debian's orthanc, orthanc-python and orthanc-dicomweb (make system-deps)")
    work = Path(tempfile.mkdtemp(prefix="medsr-bench-pacs-"))
    undo = enter_private_netns()
    proc = None
    try:
        series = Path(args.series) if args.series else _default_series(work)
        files = sorted(p for p in series.rglob("*") if p.is_file() and p.read_bytes()[128:132] == b"DICM")
        total = sum(f.stat().st_size for f in files)
        http_port = free_port()
        (work / "orthanc").mkdir()
        proc, log = start_orthanc(work / "orthanc", http_port=http_port, dicom_port=0, extra={
            "AuthenticationEnabled": True, "RegisteredUsers": {USER: PASSWORD},
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False}},
            plugins=[find_dicomweb_plugin()])
        url = f"http://127.0.0.1:{http_port}"
        http = requests.Session()
        http.trust_env, http.auth = False, (USER, PASSWORD)
        wait_for_http(proc, http, url + "/dicom-web/studies", log)
        for f in files:
            http.post(url + "/instances", data=f.read_bytes(), timeout=120).raise_for_status()
        ds = pydicom.dcmread(files[0], stop_before_pixels=True)
        study, series_uid = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
        series_url = f"{url}/dicom-web/studies/{study}/series/{series_uid}"
        auth = work / "auth"
        auth.write_text(f"{USER}:{PASSWORD}\n")
        conn = Connection(auth_file=auth)
        opts = medsr.ArchiveOptions(method=args.method, baselines=False, device="cpu")

        def local(k):
            medsr.archive_series(series, work / f"local{k}.medsr.h5", opts)

        def remote(k):
            archive_remote(series_url, work / f"remote{k}.medsr.h5", opts, connection=conn)

        def fetch(k):
            DicomwebServer(f"{url}/dicom-web", conn).fetch_series(study, series_uid, work / f"fetch{k}")
            shutil.rmtree(work / f"fetch{k}")

        local(-1)  # warm-up: imports, model load, caches (not timed)
        times = {"local": [], "dicomweb": [], "fetch_only": []}
        for k in range(args.repeats):
            for name, fn in (("local", local), ("dicomweb", remote), ("fetch_only", fetch)):
                t0 = time.perf_counter()
                fn(k)
                times[name].append(time.perf_counter() - t0)
        mb = total / 1e6
        med = {k: statistics.median(v) for k, v in times.items()}
        out = {"series_files": len(files), "series_mb": round(mb, 2), "method": args.method, "baselines": False,
               "repeats": args.repeats, "workers": 1,
               **{f"{k}_seconds": round(v, 3) for k, v in med.items()},
               **{f"{k}_mb_per_s": round(mb / v, 2) for k, v in med.items()},
               "dicomweb_vs_local": round(med["local"] / med["dicomweb"], 3)}
        print(f"archive {len(files)} files, {mb:.1f} MB ({args.method}, no JPEG 2000 baseline), one worker, "
              f"median of {args.repeats}:")
        print(f"  from local files:      {out['local_mb_per_s']:8.2f} MB/s ({med['local']:.2f} s)")
        print(f"  from DICOMweb (WADO-RS): {out['dicomweb_mb_per_s']:6.2f} MB/s ({med['dicomweb']:.2f} s)")
        print(f"  WADO-RS fetch alone:   {out['fetch_only_mb_per_s']:8.2f} MB/s ({med['fetch_only']:.2f} s)")
        print(f"  ratio DICOMweb / local: {out['dicomweb_vs_local']:.3f}")
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=1))
        return 0
    finally:
        if proc is not None:
            stop(proc)
        if undo:
            undo()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
