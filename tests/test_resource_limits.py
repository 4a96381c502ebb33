"""Resource limits: absurd inputs are refused before memory is allocated, and a restore streams
(it never holds the whole restored volume). The peak-RSS ceiling itself is measured by
``python -m pipelines.memory_bench`` (docs/guarantees.md), not here.

Allocations are watched with ``tracemalloc`` (numpy reports its buffers to it, including
``np.empty`` ones whose pages are never touched).
"""
from __future__ import annotations

import os
import struct
import sys
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pydicom
import pytest

import medsr

REPO = Path(__file__).resolve().parents[1]
FAST = medsr.ArchiveOptions(method="bicubic", baselines=False)
MB = 1 << 20


def _peak(fn):
    """(result or exception, peak traced bytes) of ``fn()``."""
    tracemalloc.start()
    try:
        try:
            out = fn()
        except Exception as e:  # noqa: BLE001 - returned for the caller to check
            out = e
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def small_archive(fixture_path, tmp_path_factory):
    arc = tmp_path_factory.mktemp("limits") / "a.medsr.h5"
    medsr.archive_series(fixture_path("basic"), arc, FAST)
    return arc


@pytest.mark.parametrize("rows,cols", [(60000, 60000), (65535, 65535), (4097, 4096)])
def test_forged_huge_dicom_dimensions_are_refused_before_decoding(fixture_copy, rows, cols):
    src = fixture_copy("basic")
    for f in sorted(src.glob("*.dcm"))[:3]:
        ds = pydicom.dcmread(f)
        ds.Rows, ds.Columns = rows, cols  # the pixel data stays 64x64
        ds.save_as(f)
    out, peak = _peak(lambda: medsr.read_series(src))
    assert isinstance(out, medsr.InputError) and "unsupported image size" in str(out), out
    assert peak < 20 * MB, f"{peak / MB:.0f} MB allocated before refusing"


def test_a_series_over_the_total_pixel_cap_is_refused_before_decoding(fixture_path, monkeypatch):
    import medsr.io.series as series

    decoded = []
    real = pydicom.Dataset.pixel_array
    monkeypatch.setattr(pydicom.Dataset, "pixel_array", property(lambda self: decoded.append(1) or real.fget(self)))
    monkeypatch.setattr(series, "MAX_SERIES_PIXELS", 12 * 64 * 64 - 1)
    with pytest.raises(medsr.InputError, match="larger than"):
        medsr.read_series(fixture_path("basic"))
    assert decoded == []


def test_forged_huge_nifti_dimensions_are_refused_before_reading(tmp_path):
    import nibabel as nib

    p = tmp_path / "v.nii"
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 3), np.int16), np.eye(4)), str(p))
    raw = bytearray(p.read_bytes())
    raw[40:56] = struct.pack("<8h", 3, 30000, 30000, 30000, 1, 1, 1, 1)  # dim[]: 30000^3 voxels
    p.write_bytes(bytes(raw))
    out, peak = _peak(lambda: medsr.read_series(p))
    assert isinstance(out, medsr.InputError) and "larger than supported" in str(out), out
    assert peak < 20 * MB


def _forge(src: Path, dst: Path, edit) -> Path:
    dst.write_bytes(src.read_bytes())
    with h5py.File(dst, "a") as f:
        edit(f)
    return dst


def _declare_huge(f):
    name = "lowres" if "lowres" in f else "lowres_coded"
    attrs = dict(f[name].attrs)
    shape = (3, 60000, 60000) if name == "lowres" else (1 << 34,)
    dt = f[name].dtype
    del f[name]
    d = f.create_dataset(name, shape=shape, dtype=dt, chunks=(1, 64, 64) if len(shape) == 3 else (1 << 16,))
    for k, v in attrs.items():
        d.attrs[k] = v  # nothing is stored: reading would return 21.6 GB of fill values


def _huge_attrs(f):
    from archive_edit import edit_meta

    path = Path(f.filename)
    f.close()
    edit_meta(path, lambda m: m["attrs"].update(rows=60000, cols=60000))


@pytest.mark.parametrize("edit,needle", [(_declare_huge, "declares"), (_huge_attrs, "out of range")])
def test_forged_huge_archives_are_refused_before_reading(small_archive, tmp_path, edit, needle):
    arc = _forge(small_archive, tmp_path / "forged.medsr.h5", edit)
    for what, call in (("verify", lambda: medsr.verify_archive(arc)), ("open", lambda: medsr.open_archive(arc)),
                       ("restore", lambda: medsr.restore_archive(arc, tmp_path / "r"))):
        out, peak = _peak(call)
        if what == "verify":
            assert not out.ok and needle in out.problems[0], out
        else:
            assert isinstance(out, medsr.ArchiveError) and needle in str(out), (what, out)
        assert peak < 50 * MB, f"{what}: {peak / MB:.0f} MB allocated before refusing"
    assert not (tmp_path / "r").exists()


_STREAM_PROBE = """
import json, sys, tracemalloc
from pathlib import Path
import pydicom
import medsr
import medsr.dicom.write as writers
small, arc, out = map(Path, sys.argv[1:4])
medsr.restore_archive(small, out / "warm-up")  # imports (torch...) are not the restore's memory
seen = []

class Derived:
    def __init__(self, i):
        self.SOPInstanceUID = f"1.2.3.{i}"

writers.derive_instance = lambda header, px, d: seen.append(px.shape) or Derived(len(seen))
pydicom.dcmwrite = lambda path, ds, **kw: Path(path).write_bytes(b"x")
tracemalloc.start()
res = medsr.restore_archive(arc, out / "r", medsr.RestoreOptions(device="cpu"))
peak = tracemalloc.get_traced_memory()[1]
print(json.dumps({"peak": peak, "slices": res.slices, "seen": len(seen), "shapes": sorted({str(s) for s in seen})}))
"""


def test_dicom_restore_streams_instead_of_holding_the_volume(small_archive, tmp_path):
    """2000 slices of 64x64: the restored volume is 16 MB; a streaming restore holds a few batches.

    Building and writing each derived instance is stubbed (it is per slice, not per volume):
    what is measured is the engine, the writer pool and restore_archive around them, in a fresh
    process (tracemalloc counts every thread's allocations: threads other tests leave behind in this
    one would be counted too).
    """
    import json
    import subprocess

    sys.path.insert(0, str(REPO))
    from pipelines.memory_bench import write_bench_archive

    arc = tmp_path / "long.medsr.h5"
    write_bench_archive(arc, 2000, 64, "bicubic")
    volume = 2000 * 64 * 64 * 2
    proc = subprocess.run([sys.executable, "-c", _STREAM_PROBE, str(small_archive), str(arc), str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    d = json.loads(proc.stdout.strip().splitlines()[-1])
    assert d["slices"] == 2000 and d["seen"] == 2000 and d["shapes"] == ["(64, 64)"]
    peak = d["peak"]
    assert peak < volume / 2, f"peak {peak / MB:.1f} MB for a {volume / MB:.1f} MB volume"


def test_reading_a_series_keeps_its_pixels_once(tmp_path):
    """``read_series`` holds the stored pixels once, not the files' bytes beside them: pydicom's data sets kept
    each file's bytes (``FileDataset.buffer``) through every header copy, and the list of decoded slices was
    stacked into a second array; at the end of a read of 20 x 512^2 the traced memory was 2.2x the pixels,
    with a peak of 3.1x."""
    from dicom_fixtures.build import build_series
    from dicom_fixtures.spec import SeriesSpec
    from medsr.io import read_series

    build_series(tmp_path / "s", SeriesSpec(rows=512, cols=512, slices=20, seed=3))
    read_series(tmp_path / "s")  # imports and caches outside the measurement
    tracemalloc.start()
    try:
        series = read_series(tmp_path / "s")
        now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    volume = series.pixels.nbytes
    assert now < 1.5 * volume, (now / volume, peak / volume)
    assert peak < 2.5 * volume, (now / volume, peak / volume)


def test_the_memory_bench_measures_the_command_a_user_runs_on_dicom_files(tmp_path):
    """``pipelines.memory_bench --runs archive-cli`` times and polls ``medsr archive`` on DICOM files (the read
    included, the JPEG 2000 child counted), where ``archive`` builds the series in memory: both archive the same
    phantom size, and the command's archive verifies."""
    import json

    from pipelines import memory_bench

    out = tmp_path / "m.json"
    assert memory_bench.main(["--slices", "3", "--size", "64", "--method", "bicubic", "--runs", "archive-cli",
                              "--workdir", str(tmp_path / "w"), "--json", str(out)]) == 0
    run = json.loads(out.read_text())["runs"]["archive-cli"]
    assert run["peak_rss_bytes"] > 20 * 2**20  # an interpreter with NumPy and pydicom at least
    assert medsr.verify_archive(tmp_path / "w" / "out-archive-cli.medsr.h5").ok
    assert len(list((tmp_path / "w" / "dicom-3x64").iterdir())) == 3


def test_the_memory_bench_counts_children_that_run_a_program_not_forks_before_their_exec():
    """A fork (or vfork) not yet exec'd shares the parent's pages: adding its RSS would count the parent twice."""
    import signal
    import subprocess
    import sys

    from pipelines import memory_bench

    code = ("import os, subprocess, time\n"
            "f = os.fork()\n"
            "if f == 0:\n    time.sleep(30); os._exit(0)\n"
            "p = subprocess.Popen(['sleep', '30'])\n"
            "print(f, p.pid, flush=True)\n"
            "time.sleep(30)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    fork_pid, sleep_pid = (int(x) for x in proc.stdout.readline().split())
    try:
        assert memory_bench._children(proc.pid) == [sleep_pid]
    finally:
        for pid in (fork_pid, sleep_pid, proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()


def test_the_memory_bench_restores_with_the_model_when_asked(tmp_path):
    """``--method model`` restores the bench archive with the shipped default model (the archive, built without
    an audit, records no weights; its restore names the method), in a child whose peak RSS is reported."""
    import json

    from pipelines import memory_bench

    out = tmp_path / "m.json"
    assert memory_bench.main(["--slices", "3", "--size", "64", "--method", "model", "--runs", "restore-dicom",
                              "--workdir", str(tmp_path / "w"), "--json", str(out)]) == 0
    run = json.loads(out.read_text())["runs"]["restore-dicom"]
    assert run["peak_rss_bytes"] > 100 * 2**20  # torch and the model are in it
