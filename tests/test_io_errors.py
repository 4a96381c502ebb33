"""Full disk (ENOSPC) and I/O errors (EIO) while writing: one clear line (OutputError, exit 5),
no partial output, originals intact.

Two ways: a real, tiny tmpfs (needs root and ``mount``; skipped otherwise) driving the CLI,
and failures injected into the write path in-process (always run).
"""
from __future__ import annotations

import builtins
import errno
import os
import shutil
import subprocess

import pytest

import medsr
from medsr.cli import main as cli_main
from safety_util import FAST_ARGS, one_error_line, run_medsr, temps, tree_digest

FAST = medsr.ArchiveOptions(method="bicubic", baselines=False)


@pytest.fixture
def small_fs(tmp_path):
    mounted = []

    def make(size: str):
        if os.geteuid() != 0 or not shutil.which("mount"):
            pytest.skip("mounting a small tmpfs needs root and mount(8)")
        d = tmp_path / f"fs-{size}"
        d.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(d)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        mounted.append(d)
        return d

    yield make
    for d in mounted:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


@pytest.fixture
def src(fixture_copy):
    return fixture_copy("basic")


@pytest.fixture(scope="module")
def made_archive(fixture_path, tmp_path_factory):
    arc = tmp_path_factory.mktemp("ioerr") / "a.medsr.h5"
    medsr.archive_series(fixture_path("basic"), arc, FAST)
    return arc


def _nothing_left(folder):
    assert sorted(p.name for p in folder.iterdir()) == [], list(folder.iterdir())


# --------------------------------------------------------------------------- a real full disk


def test_archive_on_a_full_disk(src, small_fs):
    fs = small_fs("8k")  # the basic archive (format 2) is ~11 kB
    before = tree_digest(src)
    p = run_medsr("archive", src, "-o", fs / "s.medsr.h5", *FAST_ARGS)
    assert p.returncode == 5, p.stderr
    line = one_error_line(p.stderr)
    assert "No space left on device" in line and "s.medsr.h5" in line
    assert "Exception ignored" not in p.stderr  # h5py never writes to disk itself (archive/memfile.py)
    _nothing_left(fs)
    assert tree_digest(src) == before


def test_restore_on_a_full_disk(made_archive, small_fs):
    fs = small_fs("48k")  # a few of the 12 files fit, then the disk is full
    before = tree_digest(made_archive.parent)
    for args in (("-o", fs / "r"), ("-o", fs / "r.nii.gz", "--format", "nifti")):
        p = run_medsr("restore", made_archive, *args) if args[-1] != "nifti" else None
        if p is None:  # the NIfTI restore of basic is ~100 kB: shrink the room first
            (fs / "filler").write_bytes(b"\0" * 40_000)
            p = run_medsr("restore", made_archive, *args)
            (fs / "filler").unlink()
        assert p.returncode == 5, p.stderr
        assert "No space left on device" in one_error_line(p.stderr)
        _nothing_left(fs)
    assert tree_digest(made_archive.parent) == before


def test_enough_room_succeeds(src, small_fs):
    """The same commands on the same kind of file system work when there is room (the tests above
    fail because of space, nothing else)."""
    fs = small_fs("4m")
    assert run_medsr("archive", src, "-o", fs / "s.medsr.h5", *FAST_ARGS).returncode == 0
    assert run_medsr("restore", fs / "s.medsr.h5", "-o", fs / "r").returncode == 0
    assert temps(fs) == []


# --------------------------------------------------------------------------- injected failures


def _oserror(code):
    return OSError(code, os.strerror(code))


def test_eio_on_fsync_of_the_archive(src, tmp_path, monkeypatch, capsys):
    before = tree_digest(src)
    out = tmp_path / "out"
    out.mkdir()
    real = os.fsync

    def fsync(fd):
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).endswith(".h5"):
            raise _oserror(errno.EIO)
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    rc = cli_main(["archive", str(src), "-o", str(out / "s.medsr.h5"), *FAST_ARGS])
    assert rc == 5
    assert "Input/output error" in one_error_line(capsys.readouterr().err)
    _nothing_left(out)
    assert tree_digest(src) == before


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO])
def test_write_error_half_way_through_the_archive_bytes(src, tmp_path, monkeypatch, code):
    import medsr.archive.memfile as memfile

    out = tmp_path / "out"
    out.mkdir()

    class Half:
        def __init__(self, path, mode):
            self.f = builtins.open(path, mode)

        def write(self, data):
            self.f.write(bytes(data)[: len(data) // 2])
            raise _oserror(code)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(memfile, "open", Half, raising=False)
    with pytest.raises(medsr.OutputError, match=os.strerror(code)):
        medsr.archive_series(src, out / "s.medsr.h5", FAST)
    _nothing_left(out)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO])
def test_write_error_midway_through_a_dicom_restore(made_archive, tmp_path, monkeypatch, code):
    import pydicom

    out = tmp_path / "out"
    out.mkdir()
    real, calls = pydicom.dcmwrite, []

    def dcmwrite(path, *a, **kw):
        calls.append(path)
        if len(calls) == 5:
            with open(path, "wb") as f:
                f.write(b"\0" * 100)  # a partial file in the temp folder
            raise _oserror(code)
        return real(path, *a, **kw)

    monkeypatch.setattr(pydicom, "dcmwrite", dcmwrite)
    with pytest.raises(medsr.OutputError, match=os.strerror(code)):
        medsr.restore_archive(made_archive, out / "r")
    assert len(calls) >= 5
    _nothing_left(out)


def test_disk_full_while_pydicom_writes_a_number(made_archive, tmp_path, monkeypatch):
    """pydicom re-raises any error hit while it writes a data element as a new exception of the same type
    with only a message (``tag_in_exception``): an ``OSError`` with no errno. A full disk met at that moment
    (rather than in the preamble or at close) is still "No space left on device" (the CI of stop 25 met
    this on a real 48 kB tmpfs)."""
    import sys

    import pydicom

    out = tmp_path / "out"
    out.mkdir()
    real, hits = pydicom.dcmwrite, []

    class FullInNumbers:  # a file that fills up while pydicom writes a data element
        def __init__(self, path):
            self.f = builtins.open(path, "wb")

        def write(self, b):
            frame, names = sys._getframe(1), set()
            while frame is not None:
                names.add(frame.f_code.co_name)
                frame = frame.f_back
            if "write_data_element" in names:
                hits.append(len(b))
                raise _oserror(errno.ENOSPC)
            return self.f.write(b)

        def __getattr__(self, name):
            return getattr(self.f, name)

    def dcmwrite(path, ds, **kw):
        f = FullInNumbers(path)
        try:
            return real(f, ds, **kw)
        finally:
            f.f.close()

    monkeypatch.setattr(pydicom, "dcmwrite", dcmwrite)
    with pytest.raises(medsr.OutputError, match="No space left on device"):
        medsr.restore_archive(made_archive, out / "r")
    assert hits  # the failure came through pydicom's wrapper, not around it
    _nothing_left(out)


def test_an_element_pydicom_cannot_encode_is_a_dicom_error_not_a_disk_error(made_archive, tmp_path, monkeypatch):
    """The same wrapper around a value error (no errno anywhere in the chain) is a DicomError naming the
    slice, with no value quoted."""
    import medsr.dicom.write as write

    out = tmp_path / "out"
    out.mkdir()
    real = write.derive_instance

    def derive(*a, **kw):
        ds = real(*a, **kw)
        ds.Rows = 70000  # too big for US: struct.error, wrapped in OSError twice by pydicom
        return ds

    monkeypatch.setattr(write, "derive_instance", derive)
    from medsr.errors import DicomError

    with pytest.raises(DicomError, match=r"slice \d+: the derived instance cannot be written \(error\)") as e:
        medsr.restore_archive(made_archive, out / "r")
    assert "70000" not in str(e.value)
    _nothing_left(out)


def test_write_error_during_a_nifti_restore(made_archive, tmp_path, monkeypatch):
    import nibabel

    out = tmp_path / "out"
    out.mkdir()

    def save(img, path):
        with open(path, "wb") as f:
            f.write(b"\0" * 100)
        raise _oserror(errno.ENOSPC)

    monkeypatch.setattr(nibabel, "save", save)
    with pytest.raises(medsr.OutputError, match="No space left"):
        medsr.restore_archive(made_archive, out / "r.nii.gz", medsr.RestoreOptions(format="nifti"))
    _nothing_left(out)


@pytest.mark.parametrize("what", ["archive", "restore"])
def test_eio_on_the_final_rename(src, made_archive, tmp_path, monkeypatch, what):
    import medsr.io.atomic as atomic

    out = tmp_path / "out"
    out.mkdir()

    def rename(a, b):
        raise _oserror(errno.EIO)

    monkeypatch.setattr(atomic, "rename_noreplace", rename)
    with pytest.raises(medsr.OutputError, match="Input/output error"):
        if what == "archive":
            medsr.archive_series(src, out / "s.medsr.h5", FAST)
        else:
            medsr.restore_archive(made_archive, out / "r")
    _nothing_left(out)


def test_report_on_a_failing_disk_is_one_line(made_archive, tmp_path, monkeypatch, capsys):
    real = os.fsync

    def fsync(fd):
        raise _oserror(errno.ENOSPC)

    monkeypatch.setattr(os, "fsync", fsync)
    rc = cli_main(["audit", str(made_archive), "-o", str(tmp_path / "rep")])
    monkeypatch.setattr(os, "fsync", real)
    assert rc == 5
    assert "No space left" in one_error_line(capsys.readouterr().err)
    assert [p.name for p in (tmp_path / "rep").iterdir()] == []


def test_unreadable_original_is_an_input_error(src, tmp_path, monkeypatch):
    from pathlib import Path

    real = Path.read_bytes
    victim = sorted(src.glob("*.dcm"))[3]

    def read_bytes(self):
        if self == victim:
            raise _oserror(errno.EIO)
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    with pytest.raises(medsr.InputError, match="cannot read file"):
        medsr.archive_series(src, tmp_path / "s.medsr.h5", FAST)
    assert not (tmp_path / "s.medsr.h5").exists()
