"""Bad input: one clear line naming the file, a non-zero exit, no traceback, nothing written."""
import json
import subprocess
import sys

import pytest


def medsr(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "medsr", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


def assert_clean_failure(proc, *, code, mentions, out_dir):
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    lines = [l for l in proc.stderr.strip().splitlines() if l.startswith("medsr: error")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for m in mentions:
        assert str(m) in lines[0], (m, lines[0])
    leftovers = [p.name for p in out_dir.iterdir()]
    assert leftovers == [], leftovers


@pytest.fixture
def out_dir(tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    return d


@pytest.mark.parametrize("case,code,needle", [
    ("empty", 2, "empty"),
    ("not_dicom", 2, "no DICOM image"),
    ("truncated", 2, "truncated"),
    ("two_series", 3, "--series-uid"),
    ("ct", 3, "modality CT"),
    ("rgb", 3, "colour"),
])
def test_archive_refuses_bad_series(fixture_path, out_dir, case, code, needle):
    src = fixture_path(case)
    proc = medsr("archive", src, "-o", out_dir / "a.medsr.h5")
    assert_clean_failure(proc, code=code, mentions=[needle], out_dir=out_dir)
    assert str(src) in proc.stderr


def test_missing_path(tmp_path, out_dir):
    proc = medsr("archive", tmp_path / "nope", "-o", out_dir / "a.medsr.h5")
    assert_clean_failure(proc, code=2, mentions=["nope", "no such file"], out_dir=out_dir)


def test_two_series_can_be_picked_by_uid(fixture_path, out_dir):
    import pydicom

    src = fixture_path("two_series")
    uids = sorted({str(pydicom.dcmread(f, stop_before_pixels=True).SeriesInstanceUID) for f in src.rglob("*.dcm")})
    proc = medsr("archive", src, "-o", out_dir / "a.medsr.h5", "--series-uid", uids[0], "--method", "bicubic", "--no-j2k", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["slices"] > 0


def test_existing_output_is_not_overwritten(fixture_path, out_dir):
    target = out_dir / "a.medsr.h5"
    target.write_bytes(b"precious")
    proc = medsr("archive", fixture_path("basic"), "-o", target)
    assert proc.returncode == 5 and "already exists" in proc.stderr and "Traceback" not in proc.stderr
    assert target.read_bytes() == b"precious"


def test_unwritable_output_folder(fixture_path, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    proc = medsr("archive", fixture_path("basic"), "-o", blocker / "a.medsr.h5")
    assert proc.returncode == 5 and str(blocker) in proc.stderr and "Traceback" not in proc.stderr


@pytest.fixture
def good_archive(fixture_path, tmp_path):
    arc = tmp_path / "good.medsr.h5"
    proc = medsr("archive", fixture_path("basic"), "-o", arc, "--method", "bicubic", "--no-j2k")
    assert proc.returncode == 0, proc.stderr
    return arc


def test_flipped_byte_is_refused_by_verify_and_restore(good_archive, out_dir):
    data = bytearray(good_archive.read_bytes())
    import h5py

    with h5py.File(good_archive, "r") as f:
        lr = f["lowres"] if "lowres" in f else f["lowres_coded"]  # lossless or near-lossless base
        offset = lr.id.get_offset() if lr.chunks is None else lr.id.get_chunk_info(0).byte_offset
    data[offset + 5] ^= 0xFF
    bad = good_archive.with_name("bad.medsr.h5")
    bad.write_bytes(bytes(data))
    v = medsr("verify", bad)
    assert v.returncode == 4 and "Traceback" not in v.stderr
    r = medsr("restore", bad, "-o", out_dir / "restored")
    assert_clean_failure(r, code=4, mentions=[bad.name], out_dir=out_dir)


def _content(archive):
    """Everything a restore reads from an archive, as comparable values."""
    from medsr.archive import read_archive

    d = read_archive(archive)
    headers = [d.header(i).to_json() for i in range(d.info.n_slices)]
    return (d.lowres.tobytes(), d.slope.tobytes(), d.intercept.tobytes(), d.source_sha256, d.source_names,
            headers, d.info.n_slices, d.info.rows, d.info.cols, d.info.operator, d.info.method)


def test_every_single_byte_region_is_covered_by_a_checksum(good_archive, tmp_path):
    """Flip bytes across the whole file: verify never crashes, and whenever it passes the flip hit
    bytes no restore reads (HDF5 free space or padding): the content read back is the original's."""
    from medsr.archive import verify_archive

    raw = good_archive.read_bytes()
    want = _content(good_archive)
    passed, refused = [], 0
    for pos in range(0, len(raw), max(1, len(raw) // 60)):
        data = bytearray(raw)
        data[pos] ^= 0x5A
        p = tmp_path / f"flip{pos}.h5"
        p.write_bytes(bytes(data))
        res = verify_archive(p)  # must not raise
        if res.ok:
            assert _content(p) == want, f"a flip at byte {pos} changed what a restore reads, yet verify passed"
            passed.append(pos)
        else:
            refused += 1
        p.unlink()
    assert refused > 0 and refused + len(passed) >= 60


def test_not_an_archive(tmp_path, out_dir):
    junk = tmp_path / "junk.medsr.h5"
    junk.write_bytes(b"hello")
    r = medsr("restore", junk, "-o", out_dir / "r")
    assert_clean_failure(r, code=4, mentions=["junk.medsr.h5"], out_dir=out_dir)


def test_debug_shows_a_traceback(tmp_path, out_dir):
    r = medsr("restore", tmp_path / "missing.h5", "-o", out_dir / "r", "--debug")
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_eval_takes_debug_like_every_command(tmp_path, out_dir):
    """`medsr eval` has its own parser: a missing series is one line, and --debug shows the traceback."""
    missing = tmp_path / "missing-series"
    plain = medsr("eval", missing, "-o", out_dir / "ev", "--no-j2k")
    assert_clean_failure(plain, code=2, mentions=["missing-series"], out_dir=out_dir)
    r = medsr("eval", missing, "-o", out_dir / "ev", "--no-j2k", "--debug")
    assert r.returncode != 0 and "Traceback" in r.stderr and "unrecognized arguments" not in r.stderr, r.stderr
