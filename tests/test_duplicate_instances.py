"""One instance stored twice in a series folder (a copy under another name, as PACS exports and
manual copies leave behind): read once with a warning naming both files. The same SOP Instance
UID with different content is a one-line error naming both files, nothing written."""
from __future__ import annotations

import shutil

import pydicom

import medsr
from safety_util import FAST_ARGS, one_error_line, run_medsr, tree_digest


def _with_copy(fixture_copy):
    """The 12-slice ``basic`` series plus a byte-identical copy of its 5th file under another name."""
    src = fixture_copy("basic")
    files = sorted(src.iterdir())
    copy = src / "zz-copy-of-5th.dcm"
    shutil.copyfile(files[4], copy)
    return src, files[4], copy


def test_an_identical_copy_is_read_once_with_a_warning_naming_both_files(fixture_copy, tmp_path):
    src, original, copy = _with_copy(fixture_copy)
    before = tree_digest(src)
    series = medsr.read_series(src)
    assert series.n_slices == 12
    assert len(set(series.source_files)) == 12 and copy not in series.source_files
    (note,) = [w for w in series.warnings if "read once" in w]
    assert str(copy) in note and str(original) in note

    arc, out = tmp_path / "a.medsr.h5", tmp_path / "restored"
    p = run_medsr("archive", src, "-o", arc, *FAST_ARGS)
    assert p.returncode == 0, p.stderr
    assert str(copy) in p.stderr and str(original) in p.stderr and "Traceback" not in p.stderr
    assert medsr.open_archive(arc).n_slices == 12
    p = run_medsr("restore", arc, "-o", out)
    assert p.returncode == 0, p.stderr
    restored = [pydicom.dcmread(f) for f in sorted(out.glob("*.dcm"))]
    sources = [ds.SourceImageSequence[0].ReferencedSOPInstanceUID for ds in restored]
    assert len(restored) == 12 and len(set(sources)) == 12  # one derived instance per source instance
    assert tree_digest(src) == before


def test_the_same_uid_with_different_content_is_one_line_naming_both_files(fixture_copy, tmp_path):
    src, original, copy = _with_copy(fixture_copy)
    ds = pydicom.dcmread(copy)
    arr = ds.pixel_array.copy()
    arr[10, 10] += 1  # one pixel differs; the SOP Instance UID is the same
    ds.PixelData = arr.tobytes()
    ds.save_as(copy)
    before = tree_digest(src)
    arc = tmp_path / "a.medsr.h5"
    p = run_medsr("archive", src, "-o", arc, *FAST_ARGS)
    assert p.returncode == 3, p.stderr
    line = one_error_line(p.stderr)
    assert str(original) in line and str(copy) in line and "same SOP Instance UID" in line
    assert "different content" in line
    assert list(tmp_path.glob("a.medsr.h5*")) == [] and not list(tmp_path.glob(".medsr-tmp-*"))
    assert tree_digest(src) == before
