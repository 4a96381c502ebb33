"""Peak memory (RSS) of restoring a large series: the ceiling written in docs/guarantees.md.

    python -m pipelines.memory_bench [--slices 1000] [--size 512] [--method bicubic] [--json out.json]

Builds a synthetic series of ``--slices`` x ``--size``^2 uint16 slices as a ``Series`` (no
DICOM files on disk: a phantom volume and minimal MR headers), writes its archive directly
with ``medsr.archive.write_archive`` (lossless base, no audit: the archive-time audit is not
what is measured), then runs in fresh child processes and reports each one's peak RSS
(its own ``VmHWM``):

- ``floor``: import medsr and torch, read and verify the archive (what any restore holds);
- ``restore-dicom``: ``medsr.restore_archive`` to a DICOM folder (the default);
- ``restore-nifti``: the same to ``.nii.gz`` (NIfTI needs the whole volume in memory);
- ``archive`` (``--runs archive``): ``medsr.archive_series`` of the same synthetic series with
  ``--method`` (``model``: the default model) and its full audit, the series built in the child;
- ``archive-cli`` (``--runs archive-cli``): what a user runs, ``medsr archive DIR -o OUT --method M`` on
  a ``dicom_fixtures`` phantom of that size written as DICOM files (once per work folder): reading the
  files is part of it. Peak of the process's RSS and of its JPEG 2000 child's, polled from ``/proc``
  every 20 ms (the reported figure is the peak of their sum; ``parent_peak_rss_bytes`` beside it).

Not part of the test suite (minutes and ~1 GB of disk). Every figure is printed next to the
volume's own size (slices x rows x cols x 2 bytes).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_series(n: int, size: int):
    """A Series of n slices size x size (uint16, 12 bits) with minimal valid MR headers."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    from medsr.io import Series
    from medsr.io.header_elements import HeaderEncoder

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
    head = ((xx ** 2 + yy ** 2) < 0.16).astype(np.float64)
    pixels = np.empty((n, size, size), dtype=np.uint16)
    for k in range(n):
        z = (k / max(n - 1, 1)) - 0.5
        blob = head * (1.0 - z * z) * (800 + 200 * np.cos(12 * xx + 7 * yy + k * 0.05))
        pixels[k] = np.clip(blob + rng.normal(0, 20, (size, size)), 0, 4095).astype(np.uint16)
    series_uid, study_uid, frame_uid = str(generate_uid()), str(generate_uid()), str(generate_uid())
    headers, prefixes, elements, encoder = [], [], [], HeaderEncoder()
    for k in range(n):
        ds = Dataset()
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "MR", 1, k + 1
        ds.SeriesDescription = "memory bench"
        ds.Rows = ds.Columns = size
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.PixelSpacing = [0.5, 0.5]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0, 0, float(k)]
        ds.SliceThickness = 1.0
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        headers.append(ds)
        prefixes.append(encoder.prefix(ds))
        elements.append(encoder.elements(ds))
    files = tuple(Path(f"/nonexistent/IM{k:05d}.dcm") for k in range(n))
    return Series(pixels=pixels, slope=np.ones(n), intercept=np.zeros(n), kind="dicom", source=Path("/nonexistent"),
                  source_files=files, source_sha256=tuple("0" * 64 for _ in files),
                  source_bytes=tuple(size * size * 2 + 1000 for _ in files), series_uid=series_uid, modality="MR",
                  bits_stored=12, pixel_representation=0, headers=tuple(headers), header_prefixes=tuple(prefixes),
                  header_elements=tuple(elements),
                  positions=np.asarray([[0, 0, float(k)] for k in range(n)]), orientation=(1, 0, 0, 0, 1, 0),
                  pixel_spacing=(0.5, 0.5))


def write_bench_archive(path: Path, n: int, size: int, method: str) -> None:
    from medsr.archive import write_archive
    from medsr.codec import downsample, intensity_window, pad_to_multiple

    series = make_series(n, size)
    padded, pad = pad_to_multiple(series.pixels, 4)
    lowres = downsample(padded, "area4-v1")
    # an archive records a model by its weights (name, sha256), which this audit-less one has none of: it says
    # bicubic, and the restore children name the method (``--method model``: the shipped default model)
    write_archive(path, series=series, lowres=lowres, window=intensity_window(lowres), operator="area4-v1", scale=4,
                  pad=pad, method="bicubic" if method == "model" else method, audit=None)


_CHILD = {
    "floor": "import torch, medsr, medsr.api as a\nd = a.read_archive({arc!r})\nassert a.verify_archive({arc!r}).ok",
    "restore-dicom": "import medsr\nmedsr.restore_archive({arc!r}, {out!r}, medsr.RestoreOptions(method={method!r}, "
                     "device='cpu'))",
    "restore-nifti": "import medsr\nmedsr.restore_archive({arc!r}, {out!r} + '.nii.gz', medsr.RestoreOptions("
                     "method={method!r}, device='cpu', format='nifti'))",
    # archive with its full audit (JPEG 2000 baseline too), the series built in the child as reading it would
    "archive": "import medsr\nfrom pipelines.memory_bench import make_series\n"
               "medsr.archive_series(make_series({n}, {size}), {out!r} + '.medsr.h5', medsr.ArchiveOptions("
               "method={method!r}, device='cpu'))",
}


_REPORT = "\nimport re\nprint('VmHWM', re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1))"


def peak_rss(code: str) -> tuple[int, float]:
    """Run ``python -c code`` in a fresh process; -> (its peak RSS in bytes, seconds).

    The child reports its own VmHWM (high-water RSS of its address space, which starts
    fresh at exec; ``wait4``'s ru_maxrss would count the parent's pages copied at fork).
    """
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code + _REPORT], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({proc.returncode}): {code}\n{proc.stderr[-2000:]}")
    kb = int(proc.stdout.split("VmHWM")[-1].split()[0])
    return kb * 1024, time.perf_counter() - t0


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            m = re.search(r"VmRSS:\s+(\d+) kB", f.read())
        return int(m.group(1)) * 1024 if m else 0
    except OSError:  # gone between the listing and the read
        return 0


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _children(pid: int) -> list[int]:
    """The children of ``pid`` that run a program of their own. A child still running the parent's command line
    is a fork or vfork before its exec (h5py's import runs ``uname -p`` through ``subprocess``): it shares the
    parent's pages, and counting its RSS would count the parent twice (a 1.1 GiB phantom once, at 1000 x 512^2)."""
    out: list[int] = []
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    own = _cmdline(pid)
    return [c for c in out if _cmdline(c) != own]


def peak_rss_tree(cmd: list[str]) -> tuple[int, int, float]:
    """Run ``cmd``; -> (peak RSS of it plus its children, its own peak RSS, seconds), polled every 20 ms."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as err:  # a file, not a pipe: nobody reads a pipe while this polls
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=err)
        own = total = 0
        while proc.poll() is None:
            a = _rss(proc.pid)
            own, total = max(own, a), max(total, a + sum(_rss(c) for c in _children(proc.pid)))
            time.sleep(0.02)
        if proc.returncode != 0:
            err.seek(0)
            raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{err.read().decode()[-2000:]}")
    return total, own, time.perf_counter() - t0


def dicom_phantom(work: Path, n: int, size: int) -> Path:
    """The ``dicom_fixtures`` phantom of ``pipelines.bench_ratios`` at this size, as DICOM files (kept)."""
    from pipelines.bench_ratios import phantom

    folder = work / f"dicom-{n}x{size}"
    if not folder.exists():
        phantom(folder.with_suffix(".tmp"), size, n).rename(folder)
    return folder


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.memory_bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--slices", type=int, default=1000)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--method", default="bicubic", choices=["bicubic", "nearest", "model"])
    ap.add_argument("--runs", default="floor,restore-dicom,restore-nifti")
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--workdir", metavar="DIR", help="where to write the archive and restores (default: a temp folder)")
    args = ap.parse_args(argv)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="medsr-membench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        arc = work / "bench.medsr.h5"
        t0 = time.perf_counter()
        if not arc.exists():
            write_bench_archive(arc, args.slices, args.size, args.method)
        built = time.perf_counter() - t0
        volume = args.slices * args.size * args.size * 2
        result = {"slices": args.slices, "size": args.size, "method": args.method, "volume_bytes": volume,
                  "archive_bytes": arc.stat().st_size, "build_seconds": round(built, 1),
                  "python": sys.version.split()[0],
                  "cpus": os.cpu_count(), "runs": {}}
        print(f"series {args.slices} x {args.size}^2 uint16: volume {volume / 2**20:.0f} MiB, archive "
              f"{arc.stat().st_size / 2**20:.1f} MiB (built in {built:.0f} s)")
        for run in args.runs.split(","):
            out = work / f"out-{run}"
            shutil.rmtree(out, ignore_errors=True)
            for p in [*work.glob(f"out-{run}*.nii.gz"), *work.glob(f"out-{run}*.medsr.h5")]:
                p.unlink()
            if run == "archive-cli":
                src = dicom_phantom(work, args.slices, args.size)
                rss, own, secs = peak_rss_tree([sys.executable, "-m", "medsr", "archive", str(src), "-o",
                                                str(out) + ".medsr.h5", "--method", args.method, "--device", "cpu"])
            else:
                rss, secs = peak_rss(_CHILD[run].format(arc=str(arc), out=str(out), method=args.method,
                                                        n=args.slices, size=args.size))
                own = None  # one process: its peak is the figure
            result["runs"][run] = {"peak_rss_bytes": rss, "peak_rss_over_volume": round(rss / volume, 2),
                                   "seconds": round(secs, 1), **({"parent_peak_rss_bytes": own} if own else {})}
            print(f"  {run:<14} peak RSS {rss / 2**20:7.0f} MiB  = {rss / volume:4.2f} x the volume  ({secs:.0f} s)")
            shutil.rmtree(out, ignore_errors=True)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1))
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
