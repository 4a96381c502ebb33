"""Crash safety: ``medsr archive``/``restore``/``archive-batch`` SIGKILLed at staged moments.

Stages are reached with the fault-injection hook in ``medsr.io.atomic._test_hook``
(``MEDSR_TEST_KILL_AT=<stage>``: the process SIGKILLs itself there): the atomic write's
stages, and the restore's own (archive read, a batch restored, a derived file written), so
every kill lands where it is meant to, never on a timer. After every kill: nothing partial
under a final name (a final name either does not exist or holds a complete, verifying
output), the originals are
byte-identical (sha256), the temp left behind is recognised as stale, and the next
run removes it and succeeds. See docs/guarantees.md.
"""
from __future__ import annotations

import json
import os
import signal
import time

import pydicom
import pytest

import medsr
from medsr.io.atomic import is_stale_temp
from safety_util import (FAST_ARGS, env_with, kill_group, one_error_line, run_medsr, start_medsr, temps,
                         tree_digest, wait_for)


@pytest.fixture
def src(fixture_copy):
    return fixture_copy("basic")


@pytest.fixture
def out(tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    return d


@pytest.fixture(scope="module")
def made_archive(fixture_path, tmp_path_factory):
    d = tmp_path_factory.mktemp("crash_archive")
    arc = d / "a.medsr.h5"
    medsr.archive_series(fixture_path("basic"), arc, medsr.ArchiveOptions(method="bicubic", baselines=False))
    return arc


def _restored_ok(folder, n=12):
    files = sorted(folder.glob("*.dcm"))
    assert len(files) == n
    for f in files:
        ds = pydicom.dcmread(f)
        assert ds.pixel_array.shape == (64, 64)
    return files


def _assert_stale_leftovers(out, expect: bool):
    left = temps(out)
    if expect:
        assert left, "the killed run left no temp (the stage was not reached?)"
    for p in left:
        assert is_stale_temp(p), f"{p.name} is not recognised as a stale temp"


@pytest.mark.parametrize("stage", ["file-temp-created", "file-before-rename", "file-after-rename"])
def test_archive_killed_at_stage(src, out, stage):
    before = tree_digest(src)
    target = out / "s.medsr.h5"
    p = run_medsr("archive", src, "-o", target, *FAST_ARGS, env=env_with(MEDSR_TEST_KILL_AT=stage))
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert tree_digest(src) == before
    if stage == "file-after-rename":  # renamed before the kill: complete and verifying
        assert medsr.verify_archive(target).ok
        target.unlink()
    else:
        assert not target.exists()
        _assert_stale_leftovers(out, expect=True)
    p = run_medsr("archive", src, "-o", target, *FAST_ARGS)
    assert p.returncode == 0, p.stderr
    assert medsr.verify_archive(target).ok
    assert temps(out) == []
    assert tree_digest(src) == before


@pytest.mark.parametrize("stage", ["dir-temp-created", "dir-before-rename", "dir-after-rename"])
def test_restore_killed_at_stage(made_archive, out, stage):
    before = tree_digest(made_archive.parent)
    target = out / "restored"
    p = run_medsr("restore", made_archive, "-o", target, env=env_with(MEDSR_TEST_KILL_AT=stage))
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert tree_digest(made_archive.parent) == before  # the archive is read-only to a restore
    if stage == "dir-after-rename":
        _restored_ok(target)
        _assert_stale_leftovers(out, expect=False)
        args = ("--force",)
    else:
        assert not target.exists()
        _assert_stale_leftovers(out, expect=True)
        args = ()
    p = run_medsr("restore", made_archive, "-o", target, *args)
    assert p.returncode == 0, p.stderr
    _restored_ok(target)
    assert temps(out) == []


@pytest.mark.parametrize("stage", ["restore-archive-read", "restore-batch-done", "dicom-file-written"])
def test_restore_killed_mid_run(made_archive, out, stage):
    """Killed after reading the archive, after the first batch of 4 slices (of 12: mid-inference),
    or after the first derived file (mid-write): the final name never appears, and a rerun cleans up."""
    target = out / "restored"
    p = run_medsr("restore", made_archive, "-o", target, "-q", "--batch-size", "4",
                  env=env_with(MEDSR_TEST_KILL_AT=stage))
    assert p.returncode == -signal.SIGKILL, p.stderr  # the stage was reached
    assert not target.exists()
    _assert_stale_leftovers(out, expect=stage != "restore-archive-read")  # the temp folder exists from then on
    if stage == "dicom-file-written":  # the temp held part of the series: 1 file, not 12
        (left,) = temps(out)
        assert 1 <= len(list(left.glob("*.dcm"))) < 12
    p = run_medsr("restore", made_archive, "-o", target)
    assert p.returncode == 0, p.stderr
    _restored_ok(target)
    assert temps(out) == []


def test_forced_archive_killed_before_rename_keeps_the_old_archive(src, out, made_archive):
    target = out / "s.medsr.h5"
    target.write_bytes(made_archive.read_bytes())
    old = tree_digest(out)
    p = run_medsr("archive", src, "-o", target, "--force", *FAST_ARGS,
                  env=env_with(MEDSR_TEST_KILL_AT="file-before-rename"))
    assert p.returncode == -signal.SIGKILL
    assert {k: v for k, v in tree_digest(out).items() if not k.startswith(".medsr-tmp-")} == old
    assert medsr.verify_archive(target).ok


@pytest.mark.parametrize("stage", ["dir-before-rename", "dir-after-rename"])
def test_forced_restore_killed_keeps_a_complete_output(made_archive, out, stage):
    target = out / "restored"
    medsr.restore_archive(made_archive, target)
    old = tree_digest(target)
    p = run_medsr("restore", made_archive, "-o", target, "--force", env=env_with(MEDSR_TEST_KILL_AT=stage))
    assert p.returncode == -signal.SIGKILL
    files = _restored_ok(target)  # old or new, never a mix or a gap
    if stage == "dir-before-rename":
        assert tree_digest(target) == old
    else:
        assert tree_digest(target) != old  # new series UIDs: the swap happened
        assert len({pydicom.dcmread(f).SeriesInstanceUID for f in files}) == 1
    for p in temps(out):
        assert is_stale_temp(p)
    medsr.restore_archive(made_archive, out / "again")  # the next run cleans the leftovers
    assert temps(out) == []


def test_stale_temps_of_live_processes_are_kept(out, made_archive):
    """Cleaning is safe beside concurrent runs: a live owner's temp (even an old one) is left alone."""
    proc = start_medsr("restore", made_archive, "-o", out / "slow", "-q",
                       env=env_with(MEDSR_TEST_PAUSE_AT=f"dir-before-rename:until={out.parent / 'never'}"))
    try:
        # at the barrier its complete temp folder is the only temp (no transient write probe)
        wait_for(lambda: list(out.parent.glob("never.*.here")), 300, "the restore at dir-before-rename", proc)
        (live,) = temps(out)
        old = time.time() - 10 * 3600
        os.utime(live, (old, old))  # older than STALE_AFTER_S, but its owner is alive
        assert not is_stale_temp(live)
        medsr.restore_archive(made_archive, out / "other")  # runs clean_stale_temps on out/
        assert live.exists()
    finally:
        kill_group(proc)
    assert is_stale_temp(live)  # owner dead now
    medsr.restore_archive(made_archive, out / "third")
    assert not live.exists()


def test_archive_batch_killed_mid_archive_then_resumes(fixture_copy, tmp_path):
    pytest.importorskip("distributed")
    root = tmp_path / "root"
    root.mkdir()
    for name in ("basic", "odd_size"):
        fixture_copy(name).rename(root / name)
    before = tree_digest(root)
    out = tmp_path / "batch"
    # workers pause with a complete temp archive just before its rename; then the whole batch dies
    proc = start_medsr("archive-batch", root, "-o", out, "--workers", "1", "--quiet", *FAST_ARGS,
                       env=env_with(MEDSR_TEST_PAUSE_AT=f"file-before-rename:until={tmp_path / 'never'}"))
    try:
        wait_for(lambda: list(tmp_path.glob("never.*.here")), 300, "a worker with a temp archive in OUTDIR", proc)
    finally:
        kill_group(proc)
    assert not list(out.glob("*.medsr.h5")), "an archive appeared under its final name before its rename"
    if (out / "manifest.jsonl").exists():  # never half-written
        for line in (out / "manifest.jsonl").read_text().splitlines():
            json.loads(line)
    assert tree_digest(root) == before
    p = run_medsr("archive-batch", root, "-o", out, "--workers", "1", "--json", *FAST_ARGS)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert (d["ok"], d["failed"]) == (2, 0)
    arcs = sorted(out.glob("*.medsr.h5"))
    assert len(arcs) == 2 and all(medsr.verify_archive(a).ok for a in arcs)
    assert temps(out) == []
    assert tree_digest(root) == before


def test_archive_into_a_missing_folder_fails_cleanly(src, tmp_path):
    p = run_medsr("archive", src, "-o", tmp_path / "nope" / "s.medsr.h5", *FAST_ARGS)
    assert p.returncode == 5
    assert "does not exist" in one_error_line(p.stderr)
