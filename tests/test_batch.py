"""Batch archive/restore on Dask (medsr.batch, its CLI medsr.cli.batch): isolation of broken series, manifest, resume, restore.

One 2-worker LocalCluster (processes) is shared by the module; one test starts the CLI
in a subprocess with its own local cluster and SIGKILLs it mid-batch. Fast settings:
bicubic restore, no JPEG 2000 baseline, small synthetic series.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest

pytest.importorskip("distributed")

import medsr  # noqa: E402
from dicom_fixtures.build import build_series  # noqa: E402
from dicom_fixtures.spec import SeriesSpec  # noqa: E402
from medsr.cli import batch as batch_cli  # noqa: E402
from medsr.cli import main as cli_main  # noqa: E402  (`medsr archive-batch|restore-batch ...`)
from medsr.api import verify_archive  # noqa: E402
from medsr.batch import (ARCHIVE_FIELDS, EXIT_SOME_FAILED, LOCK_NAME, MANIFEST, RESTORE_MANIFEST,  # noqa: E402
                             archive_batch, find_series, restore_batch)

REPO = Path(__file__).resolve().parents[1]
FAST = medsr.ArchiveOptions(method="bicubic", baselines=False)
FAST_ARGS = ["--no-j2k", "--method", "bicubic"]
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*__[0-9a-f]{12}(-[0-9a-f]{6})?\.medsr\.h5$")


def _spec(k: int, **kw) -> SeriesSpec:
    return SeriesSpec(seed=k, series_number=k + 1, series_description=f"T1 AX {k}", **kw)


def _truncated_series(folder: Path, spec: SeriesSpec) -> Path:
    """A series whose middle file is cut in the middle of its Pixel Data (header intact)."""
    files = build_series(folder, spec)
    bad = files[len(files) // 2]
    raw = bad.read_bytes()
    bad.write_bytes(raw[: len(raw) - spec.rows * spec.cols])
    return bad


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _snapshot(out: Path) -> dict[str, tuple[str, int]]:
    return {p.name: (_sha(p), p.stat().st_mtime_ns) for p in sorted(out.glob("*.medsr.h5"))}


def _manifest(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    assert len({r["key"] for r in rows}) == len(rows), "duplicate manifest rows"
    return rows


@pytest.fixture(scope="module")
def cluster():
    from dask.distributed import LocalCluster

    c = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                     dashboard_address=None, scheduler_kwargs={"dashboard": False})
    yield c.scheduler_address
    c.close()


@pytest.fixture(scope="module")
def batch_root(tmp_path_factory):
    """Two plain series, a folder with two series, a split series, a broken series, noise."""
    root = tmp_path_factory.mktemp("batch_root")
    build_series(root / "pat1" / "s1", _spec(1))
    build_series(root / "pat1" / "odd", _spec(2, rows=70, cols=61, orientation="sagittal"))
    build_series(root / "pat2" / "both", _spec(3), names=[f"A{k:03d}.dcm" for k in range(12)])
    build_series(root / "pat2" / "both", _spec(4, contrast="T2"), names=[f"B{k:03d}.dcm" for k in range(12)])
    # one series split over a folder and a sub-folder (one job)
    build_series(root / "pat3", _spec(5), names=[f"{'sub/' if k % 2 else ''}IM{k:03d}.dcm" for k in range(12)])
    bad = _truncated_series(root / "pat4" / "broken", _spec(6))
    (root / "pat1" / "notes.txt").write_text("not DICOM\n")
    return root, bad


@pytest.fixture(scope="module")
def first_run(batch_root, cluster, tmp_path_factory):
    root, bad = batch_root
    out = tmp_path_factory.mktemp("batch_out") / "archives"
    summary = archive_batch(root, out, scheduler=cluster, options=FAST, progress=False)
    return root, bad, out, summary


# --------------------------------------------------------------------------- discovery (no cluster)


def test_find_series_groups_by_series_uid_not_file(batch_root):
    root, _ = batch_root
    jobs = find_series(root)
    by_folder = {}
    for j in jobs:
        by_folder.setdefault(os.path.relpath(j.source, root), []).append(j)
    assert sorted(by_folder) == ["pat1/odd", "pat1/s1", "pat2/both", "pat3", "pat4/broken"]
    assert len(by_folder["pat2/both"]) == 2  # two series in one folder: two jobs
    assert len({j.series_uid for j in by_folder["pat2/both"]}) == 2
    assert len(by_folder["pat3"][0].files) == 12  # split over a sub-folder: one job
    assert all(j.kind == "dicom" for j in jobs)
    assert len({j.key for j in jobs}) == len(jobs)
    assert find_series(root) == jobs  # stable
    for j in jobs:
        assert SAFE_NAME.match(j.archive_name), j.archive_name
        assert hashlib.sha256(j.series_uid.encode()).hexdigest()[:12] in j.key


def test_names_are_safe_and_never_hold_the_patient_name(tmp_path):
    root = tmp_path / "root"
    # folder named after the patient (PatientName FIXTURE^PATIENT, PatientID FIX-0001)
    build_series(root / "FIXTURE PATIENT" / "t1", _spec(1))
    build_series(root / "weird ..name;rm -rf $(x)" / "ünï", _spec(2))
    build_series(root / "copy_a", _spec(3))
    build_series(root / "copy_b", _spec(3))  # a copy of the same series (same SOP Instance UIDs)
    (root / "broken_header").mkdir()
    (root / "broken_header" / "x.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10")
    jobs = {os.path.relpath(j.source, root): j for j in find_series(root)}
    phi = jobs["FIXTURE PATIENT/t1"]
    assert "fixture" not in phi.archive_name.lower() and "patient" not in phi.archive_name.lower()
    assert phi.archive_name.startswith("series__") and "patient's name" in phi.note
    weird = jobs["weird ..name;rm -rf $(x)/ünï"].archive_name
    assert SAFE_NAME.match(weird) and "/" not in weird and not weird.startswith("."), weird
    assert jobs["copy_a"].key != jobs["copy_b"].key  # copies stay separate, keys unique
    assert jobs["broken_header"].kind == "unreadable" and "x.dcm" in jobs["broken_header"].error
    hashed = find_series(root, names="hash")
    assert all(re.match(r"^(series|unreadable)__[0-9a-f]{12}", j.key) for j in hashed)


def test_outdir_lock_refuses_a_second_batch(tmp_path, batch_root):
    out = tmp_path / "out"
    out.mkdir()
    fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(medsr.OutputError, match="another medsr batch"):
            archive_batch(batch_root[0], out, options=FAST, progress=False)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- archive-batch


def test_a_broken_series_fails_alone_and_is_reported(first_run):
    root, bad, out, s = first_run
    assert (s.ok, s.failed, s.skipped) == (5, 1, 0)
    assert s.exit_code == EXIT_SOME_FAILED
    rows = _manifest(out / MANIFEST)
    assert len(rows) == 6 and all(list(r) == list(ARCHIVE_FIELDS) for r in rows)
    (failed,) = [r for r in rows if r["status"] == "failed"]
    assert failed["source"] == str(bad.parent)
    assert str(bad) in failed["error"] and "cannot decode pixel data" in failed["error"]
    assert "\n" not in failed["error"]
    assert not (out / failed["archive"]).exists()
    for r in rows:
        if r["status"] == "ok":
            arc = out / r["archive"]
            assert verify_archive(arc).ok
            assert medsr.open_archive(arc).series_uid == r["series_uid"]
            assert r["ratio"] > 1 and r["psnr"] > 10 and r["psnr_fg"] is not None and r["psnr_bicubic"] is not None
            assert r["seconds"] > 0 and r["slices"] == r["files"] == 12
    assert sorted(p.name for p in out.glob("*.medsr.h5")) == sorted(r["archive"] for r in rows if r["status"] == "ok")
    assert not [p for p in out.iterdir() if p.name.startswith(".medsr-tmp-")]


def test_rerun_skips_what_is_done_and_touches_nothing(first_run, cluster):
    root, bad, out, _ = first_run
    before = _snapshot(out)
    (out / ".medsr-tmp-left-by-a-killed-run.h5").write_bytes(b"partial")
    s = archive_batch(root, out, scheduler=cluster, options=FAST, progress=False)
    assert (s.ok, s.failed, s.skipped) == (0, 1, 5)
    assert _snapshot(out) == before
    assert not (out / ".medsr-tmp-left-by-a-killed-run.h5").exists()
    rows = _manifest(out / MANIFEST)
    assert len(rows) == 6
    skipped = [r for r in rows if r["status"] == "skipped"]
    assert len(skipped) == 5 and all(r["ratio"] > 1 and r["psnr"] is not None for r in skipped)


def test_cli_exit_code_and_json(first_run, cluster, capsys):
    root, bad, out, _ = first_run
    rc = cli_main(["archive-batch", str(root), "-o", str(out), "--scheduler", cluster, "--json", *FAST_ARGS])
    d = json.loads(capsys.readouterr().out)
    assert rc == EXIT_SOME_FAILED
    assert (d["ok"], d["failed"], d["skipped"]) == (0, 1, 5) and d["manifest"] == str(out / MANIFEST)
    assert d["failures"][0]["source"] == str(bad.parent)
    # once the broken file is gone, the same command succeeds (skipped counts as success)
    ok_root = out.parent / "ok_root"
    build_series(ok_root / "a", _spec(1))
    rc = cli_main(["archive-batch", str(ok_root), "-o", str(out.parent / "ok_out"), "--scheduler", cluster,
                         "--json", *FAST_ARGS])
    d = json.loads(capsys.readouterr().out)
    assert rc == 0 and (d["ok"], d["failed"]) == (1, 0)


def test_archive_batch_passes_the_floor_and_base_to_every_series(cluster, tmp_path, capsys):
    root = tmp_path / "root"
    build_series(root / "a", _spec(1))
    build_series(root / "b", _spec(2, rows=70, cols=61))
    out = tmp_path / "out"
    rc = cli_main(["archive-batch", str(root), "-o", str(out), "--scheduler", cluster, "--json", *FAST_ARGS,
                         "--floor-psnr-fg", "30", "--floor-fallback", "lossless", "--base", "lossless"])
    d = json.loads(capsys.readouterr().out)
    assert rc == 0 and (d["ok"], d["failed"]) == (2, 0)
    rows = _manifest(out / MANIFEST)
    assert len(rows) == 2 and all(list(r) == list(ARCHIVE_FIELDS) for r in rows)
    for r in rows:
        info = medsr.open_archive(out / r["archive"])
        assert info.base == "lossless" and info.floor["floor_psnr_fg"] == 30.0
        assert info.floor["floor_fallback"] == "lossless" and info.audit["floor"]["min_psnr_fg"] >= 30.0
        # the manifest records what each archive was made with
        assert r["base"] == "lossless" and r["pixel_ratio"] == pytest.approx(info.pixel_ratio, rel=1e-3)
        assert r["floor"]["floor_psnr_fg"] == 30.0 and r["floor"]["slices"] == {
            k: v["slices"] for k, v in info.floor["representations"].items()}
    # a bad floor is one error before any work (no folder, no manifest)
    rc = cli_main(["archive-batch", str(root), "-o", str(tmp_path / "bad"), "--scheduler", cluster,
                         *FAST_ARGS, "--floor-psnr-fg", "0"])
    assert rc != 0 and not (tmp_path / "bad").exists()


def test_archive_batch_passes_the_ratio_to_every_series(cluster, tmp_path, capsys):
    """``--ratio`` (issue #19): every archive of the batch keeps the byte budget and records its choice."""
    root = tmp_path / "root"
    build_series(root / "a", _spec(1))
    build_series(root / "b", _spec(2, rows=70, cols=61))
    out = tmp_path / "out"
    rc = cli_main(["archive-batch", str(root), "-o", str(out), "--scheduler", cluster, "--json", *FAST_ARGS,
                   "--ratio", "30", "--ratio-search", "full"])
    d = json.loads(capsys.readouterr().out)
    assert rc == 0 and (d["ok"], d["failed"]) == (2, 0)
    for r in _manifest(out / MANIFEST):
        info = medsr.open_archive(out / r["archive"])
        assert info.audit["budget"]["target_ratio"] == 30 and info.pixel_ratio >= 30
        assert info.audit["budget"]["chosen"] in {c["candidate"] for c in info.audit["budget"]["candidates"]}
        assert info.audit["budget"]["search"] == "full"  # --ratio-search reached every series' archive
    # --ratio-search without --ratio: one error before any work
    rc = cli_main(["archive-batch", str(root), "-o", str(tmp_path / "bad"), "--scheduler", cluster, *FAST_ARGS,
                   "--ratio-search", "full"])
    assert rc != 0 and not (tmp_path / "bad").exists()
    assert "--ratio-search needs --ratio" in capsys.readouterr().err


def test_resume_after_sigkill(tmp_path, cluster):
    root = tmp_path / "root"
    for k in range(10):
        build_series(root / f"s{k:02d}", _spec(k, rows=128, cols=128, slices=16))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "medsr", "archive-batch", str(root), "-o", str(out), "--workers", "2",
           "--quiet", *FAST_ARGS]
    proc = subprocess.Popen(cmd, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        # no timing: wait (up to the test's timeout) for the first finished archive, however slow the machine
        while not list(out.glob("*.medsr.h5")):
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)  # the client (scheduler + manifest writer) dies mid-batch
        proc.wait(10)
        # its worker processes notice the dead parent and exit on their own
        deadline = time.monotonic() + 20
        while True:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                break
            assert time.monotonic() < deadline, "worker processes outlived the killed batch"
            time.sleep(0.1)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.stderr.close()
    done_at_kill = _snapshot(out)
    assert 1 <= len(done_at_kill) < 10, "the batch was not interrupted mid-way"
    if (out / MANIFEST).exists():  # never half-written
        _manifest(out / MANIFEST)
    s = archive_batch(root, out, scheduler=cluster, options=FAST, progress=False)
    assert s.failed == 0 and s.ok + s.skipped == 10 and s.skipped >= len(done_at_kill)
    rows = _manifest(out / MANIFEST)
    assert len(rows) == 10 and {r["status"] for r in rows} <= {"ok", "skipped"}
    after = _snapshot(out)
    assert sorted(after) == sorted(r["archive"] for r in rows)  # each series archived exactly once
    assert all(after[name] == v for name, v in done_at_kill.items())  # finished archives untouched
    assert not [p for p in out.iterdir() if p.name.startswith(".medsr-tmp-")]


# --------------------------------------------------------------------------- restore-batch


def test_restore_batch_round_trip_and_rerun(first_run, cluster, tmp_path):
    _, _, out, _ = first_run
    rdir = tmp_path / "restored"
    s = restore_batch(out, rdir, scheduler=cluster, progress=False)
    assert (s.ok, s.failed, s.skipped) == (5, 0, 0) and s.exit_code == 0
    rows = _manifest(rdir / RESTORE_MANIFEST)
    assert len(rows) == 5
    for r in rows:
        folder = rdir / r["output"]
        files = sorted(folder.glob("*.dcm"))
        assert r["status"] == "ok" and len(files) == r["slices"] == 12
        info = medsr.open_archive(r["archive"])
        ds = pydicom.dcmread(files[0])
        assert "DERIVED" in ds.ImageType and (ds.Rows, ds.Columns) == (info.rows, info.cols)
        assert ds.SeriesInstanceUID != info.series_uid
    before = {p: p.stat().st_mtime_ns for p in rdir.rglob("*.dcm")}
    s = restore_batch(out, rdir, scheduler=cluster, progress=False)
    assert (s.ok, s.failed, s.skipped) == (0, 0, 5)
    assert {p: p.stat().st_mtime_ns for p in rdir.rglob("*.dcm")} == before
    assert len(_manifest(rdir / RESTORE_MANIFEST)) == 5


def test_restore_batch_reports_a_corrupt_archive(first_run, cluster, tmp_path, capsys):
    _, _, out, _ = first_run
    src = tmp_path / "arcs"
    (src / "nested").mkdir(parents=True)
    good, other = sorted(out.glob("*.medsr.h5"))[:2]
    (src / "nested" / good.name).write_bytes(good.read_bytes())
    raw = other.read_bytes()
    (src / "bad.medsr.h5").write_bytes(raw[: len(raw) // 2])  # a half-copied archive
    rc = cli_main(["restore-batch", str(src), "-o", str(tmp_path / "r"), "--scheduler", cluster, "--json"])
    d = json.loads(capsys.readouterr().out)
    assert rc == EXIT_SOME_FAILED and (d["ok"], d["failed"]) == (1, 1)
    assert d["failures"][0]["source"].endswith("bad.medsr.h5")
    assert (tmp_path / "r" / "nested" / good.name.removesuffix(".medsr.h5")).is_dir()


def test_medsr_cli_has_the_batch_commands():
    """`medsr archive-batch` / `medsr restore-batch` (medsr/cli/main.py calls medsr.cli.batch.register_cli)."""
    from medsr.cli import build_parser

    p = build_parser()
    a = p.parse_args(["archive-batch", "ROOT", "-o", "OUT", "--workers", "3", "--no-j2k", "--json"])
    assert a.func is batch_cli.cmd_archive_batch and a.workers == 3 and a.no_j2k and a.json
    r = p.parse_args(["restore-batch", "ARCS", "-o", "OUT", "--scheduler", "tcp://h:8786"])
    assert r.func is batch_cli.cmd_restore_batch and r.scheduler == "tcp://h:8786" and r.format == "auto"


def test_batch_options_hashed_names_force_and_restore_format_method(batch_root, first_run, cluster, tmp_path, capsys):
    """archive-batch --hashed-names / --force; restore-batch --format nifti --method nearest / --force."""
    import nibabel as nib

    root, _, _, _ = first_run
    out = tmp_path / "hashed"
    args = ["archive-batch", str(root), "-o", str(out), "--scheduler", cluster, "--json", "--hashed-names", *FAST_ARGS]
    cli_main(args)
    first = json.loads(capsys.readouterr().out)
    names = sorted(p.name for p in out.glob("*.medsr.h5"))
    assert first["ok"] == 5 and len(names) == 5
    folders = {p.name for p in root.rglob("*") if p.is_dir()}
    assert all(re.match(r"^series__[0-9a-f]{12}", n) for n in names)  # no folder name leaks into a name
    assert not any(f in n for f in folders for n in names)
    cli_main(args)  # a rerun skips what verifies ...
    assert json.loads(capsys.readouterr().out)["skipped"] == 5
    cli_main([*args, "--force"])  # ... --force archives again
    assert json.loads(capsys.readouterr().out)["ok"] == 5
    rdir = tmp_path / "restored"
    rargs = ["restore-batch", str(out), "-o", str(rdir), "--scheduler", cluster, "--json", "--format", "nifti",
             "--method", "nearest"]
    cli_main(rargs)
    assert json.loads(capsys.readouterr().out)["ok"] == 5
    niftis = sorted(rdir.rglob("*.nii.gz"))
    assert len(niftis) == 5
    for f in niftis:
        v = np.asarray(nib.load(str(f)).dataobj)
        blocks = v[: v.shape[0] // 4 * 4, : v.shape[1] // 4 * 4].reshape(v.shape[0] // 4, 4, v.shape[1] // 4, 4, -1)
        assert (blocks == blocks[:, :1, :, :1]).all()  # nearest: every 4x4 block one value
    cli_main(rargs)
    assert json.loads(capsys.readouterr().out)["skipped"] == 5
    cli_main([*rargs, "--force"])
    assert json.loads(capsys.readouterr().out)["ok"] == 5


def test_a_header_value_that_fails_to_decode_makes_its_file_unreadable_not_the_scan(tmp_path, monkeypatch):
    """The header scan decodes UIDs, modality and the PHI tokens it keeps out of job names; a value that fails
    to decode (a damaged header) marks that file unreadable, says which error without quoting the value, and
    the rest of the folder still scans."""
    from medsr.batch import scan

    build_series(tmp_path / "s", _spec(3, slices=3))
    files = sorted(str(p) for p in (tmp_path / "s").rglob("*") if p.is_file())
    real = scan.phi_tokens

    def damaged(ds):
        if str(ds.SOPInstanceUID) == str(pydicom.dcmread(files[1], stop_before_pixels=True).SOPInstanceUID):
            raise UnicodeDecodeError("iso8859", b"\xff", 0, 1, "Jane Doe")  # the value must not be shown
        return real(ds)

    monkeypatch.setattr(scan, "phi_tokens", damaged)
    out = scan.scan_files(files)
    assert [e[0] for e in out] == ["image", "unreadable", "image"]
    assert out[1][1] == files[1] and out[1][2] == "cannot decode a header element (UnicodeDecodeError)"
