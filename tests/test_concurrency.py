"""Concurrent runs: two writers of one output (one wins, the other gets a clear error and
nothing is replaced), parallel restores of one archive, two batches on one OUTDIR (lock).

``MEDSR_TEST_PAUSE_AT=<stage>:until=<go>`` (medsr.io.atomic._test_hook) holds each process with
a complete temp just before its final rename until the test creates ``<go>``: both are inside the
race window together, whatever their start-up times (a barrier, not a timer).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

import medsr
import medsr.io.atomic as atomic
from safety_util import FAST_ARGS, env_with, kill_group, one_error_line, start_medsr, temps, wait_for

FAST = medsr.ArchiveOptions(method="bicubic", baselines=False)


@pytest.fixture(scope="module")
def made_archive(fixture_path, tmp_path_factory):
    arc = tmp_path_factory.mktemp("conc") / "a.medsr.h5"
    medsr.archive_series(fixture_path("basic"), arc, FAST)
    return arc


def _finish(*procs, timeout=300):
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=timeout)
        out.append((p.returncode, stdout, stderr))
    return out


def _barrier(tmp_path: Path, stage: str) -> tuple[dict, Path]:
    """-> (environment holding each process at ``stage``, the go file that releases them)."""
    go = tmp_path / "go"
    return env_with(MEDSR_TEST_PAUSE_AT=f"{stage}:until={go}"), go


def _release_when_all_wait(go: Path, procs) -> None:
    wait_for(lambda: len(list(go.parent.glob(go.name + ".*.here"))) == len(procs), 300,
             f"{len(procs)} processes at the barrier", procs[0] if len(procs) == 1 else None)
    for p in procs:
        assert p.poll() is None, p.stderr.read()
    go.touch()


def _one_wins(results, target):
    codes = sorted(r[0] for r in results)
    assert codes == [0, 5], results
    loser = next(r for r in results if r[0] == 5)
    line = one_error_line(loser[2])
    assert str(target) in line and "already exists" in line, line


def test_two_archives_of_one_series_to_one_output(fixture_path, tmp_path):
    target = tmp_path / "s.medsr.h5"
    env, go = _barrier(tmp_path, "file-before-rename")
    a = start_medsr("archive", fixture_path("basic"), "-o", target, *FAST_ARGS, env=env)
    b = start_medsr("archive", fixture_path("basic"), "-o", target, *FAST_ARGS, env=env)
    try:
        _release_when_all_wait(go, [a, b])  # both hold a complete temp archive: now both rename
        results = _finish(a, b)
    finally:
        kill_group(a), kill_group(b)
    _one_wins(results, target)
    assert medsr.verify_archive(target).ok
    assert temps(tmp_path) == []


def test_two_restores_to_one_output(made_archive, tmp_path):
    target = tmp_path / "r"
    env, go = _barrier(tmp_path, "dir-before-rename")
    a = start_medsr("restore", made_archive, "-o", target, env=env)
    b = start_medsr("restore", made_archive, "-o", target, env=env)
    try:
        _release_when_all_wait(go, [a, b])
        results = _finish(a, b)
    finally:
        kill_group(a), kill_group(b)
    _one_wins(results, target)
    files = sorted(target.glob("*.dcm"))
    assert len(files) == 12
    assert len({pydicom.dcmread(f).SeriesInstanceUID for f in files}) == 1  # one run's output, never a mix
    assert temps(tmp_path) == []


def test_parallel_restores_of_one_archive_are_both_correct(made_archive, tmp_path):
    ref = medsr.restore_archive(made_archive, tmp_path / "ref")
    procs = [start_medsr("restore", made_archive, "-o", tmp_path / f"r{k}", "--json") for k in range(2)]
    try:
        results = _finish(*procs)
    finally:
        for p in procs:
            kill_group(p)
    assert [r[0] for r in results] == [0, 0], results
    want = [pydicom.dcmread(f).pixel_array for f in ref.files]
    uids = set()
    for k, (_, stdout, _) in enumerate(results):
        assert json.loads(stdout)["slices"] == 12
        files = sorted((tmp_path / f"r{k}").glob("*.dcm"))
        got = [pydicom.dcmread(f) for f in files]
        assert all(np.array_equal(g.pixel_array, w) for g, w in zip(got, want))
        uids |= {g.SeriesInstanceUID for g in got}
    assert len(uids) == 2  # each restore is its own derived series


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_no_clobber_even_when_the_output_appears_after_the_check(tmp_path, monkeypatch, kind):
    """The race itself, made deterministic: another process creates the output after this one
    checked for it (``Path.exists`` is made to miss it) and before the rename."""
    final = tmp_path / ("x.h5" if kind == "file" else "x")
    real_exists = Path.exists
    monkeypatch.setattr(Path, "exists", lambda self: False if self == final else real_exists(self))

    def other_process_writes(stage):
        if stage.endswith("before-rename"):
            if kind == "file":
                final.write_bytes(b"theirs")
            else:
                final.mkdir()
                (final / "f").write_bytes(b"theirs")

    monkeypatch.setattr(atomic, "_test_hook", other_process_writes)
    ctx = atomic.atomic_file(final) if kind == "file" else atomic.atomic_dir(final)
    with pytest.raises(medsr.OutputError, match="written concurrently"):
        with ctx as tmp:
            (tmp if kind == "file" else tmp / "f").write_bytes(b"ours")
    assert (final if kind == "file" else final / "f").read_bytes() == b"theirs"
    assert temps(tmp_path) == []


@pytest.mark.parametrize("renameat2", [True, False])
@pytest.mark.parametrize("kind", ["file", "dir", "empty-dir"])
def test_rename_noreplace_never_replaces(tmp_path, monkeypatch, renameat2, kind):
    if not renameat2:  # the portable fallbacks (link for files, rename onto a non-empty folder)
        monkeypatch.setattr(atomic, "_renameat2", lambda *a: False)
    src, dst = tmp_path / "src", tmp_path / "dst"
    if kind == "file":
        src.write_bytes(b"new")
        dst.write_bytes(b"old")
    else:
        src.mkdir()
        (src / "n").write_bytes(b"new")
        dst.mkdir()
        if kind == "dir":
            (dst / "o").write_bytes(b"old")
    with pytest.raises(FileExistsError):
        atomic.rename_noreplace(src, dst)
    if kind == "file":
        assert dst.read_bytes() == b"old" and src.read_bytes() == b"new"
    else:
        assert sorted(p.name for p in dst.iterdir()) == ([] if kind == "empty-dir" else ["o"])
    free = tmp_path / "free"
    atomic.rename_noreplace(src, free)
    assert free.exists() and not src.exists()


def test_second_archive_batch_on_the_same_outdir_is_refused(fixture_copy, tmp_path):
    pytest.importorskip("distributed")
    root = tmp_path / "root"
    root.mkdir()
    fixture_copy("basic").rename(root / "basic")
    out = tmp_path / "batch"
    env, go = _barrier(tmp_path, "file-before-rename")
    first = start_medsr("archive-batch", root, "-o", out, "--workers", "1", "--quiet", *FAST_ARGS, env=env)
    try:
        # the first batch holds the OUTDIR lock while its worker waits on a temp archive, until released
        wait_for(lambda: list(tmp_path.glob("go.*.here")), 300, "the first batch's worker at the barrier", first)
        second = start_medsr("archive-batch", root, "-o", out, "--workers", "1", *FAST_ARGS)
        (rc2, _, err2), = _finish(second)
        go.touch()
        (rc1, _, err1), = _finish(first)
    finally:
        kill_group(first)
    assert rc2 == 5, err2
    assert "another medsr batch" in one_error_line(err2)
    assert rc1 == 0, err1
    assert len(list(out.glob("*.medsr.h5"))) == 1 and temps(out) == []
