"""Verify before delete: ``--delete-original`` (CLI, API, Orthanc plugin path) deletes only files
whose sha256 is recorded in an archive that was re-read and verified after the write; any
failure deletes nothing. medsr/flow/originals.py holds the checks; docs/guarantees.md lists them.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path

import pytest

import medsr
import medsr.flow.pipeline as api  # archive_series' own module: the tests patch its write_archive
from safety_util import FAST_ARGS, one_error_line, run_medsr, tree_digest

FAST = medsr.ArchiveOptions(method="bicubic", baselines=False, delete_original=True)


def _dicoms(folder):
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix == ".dcm")


def test_cli_deletes_exactly_the_archived_files(fixture_copy, tmp_path):
    src = fixture_copy("shuffled")  # DICOM in sub-folders, notes.txt and a DICOMDIR beside them
    before = tree_digest(src)
    series = medsr.read_series(src)
    archived = {f.relative_to(src).as_posix() for f in series.source_files}
    arc = tmp_path / "s.medsr.h5"
    p = run_medsr("archive", src, "-o", arc, "--delete-original", "--json", *FAST_ARGS)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["deleted_originals"] == len(archived) == 12
    after = tree_digest(src)
    assert set(after) == set(before) - archived  # notes and DICOMDIR stay
    assert all(after[k] == before[k] for k in after)
    data = medsr.api.read_archive(arc)
    assert sorted(data.source_sha256) == sorted(before[k] for k in archived)
    out = medsr.restore_archive(arc, tmp_path / "r")
    assert out.slices == 12


def _corrupt_flip(arc: Path):
    """Flip one byte inside the stored pixel data (whichever dataset holds it)."""
    import h5py

    with h5py.File(arc, "r") as f:
        name = "lowres" if "lowres" in f else "lowres_coded"
        ds = f[name]
        off = ds.id.get_offset() if ds.chunks is None else ds.id.get_chunk_info(0).byte_offset
    raw = bytearray(arc.read_bytes())
    raw[off + 5] ^= 0xFF
    arc.write_bytes(bytes(raw))


def _corrupt_truncate(arc: Path):
    raw = arc.read_bytes()
    arc.write_bytes(raw[: len(raw) // 2])


def _corrupt_drop_dataset(arc: Path):
    from archive_edit import edit_meta

    edit_meta(arc, lambda m: m["arrays"].pop("sources/sha256"))  # /sources/sha256 gone (format 2 keeps it in /meta)


@pytest.mark.parametrize("corrupt", [_corrupt_flip, _corrupt_truncate, _corrupt_drop_dataset])
def test_an_archive_damaged_between_write_and_delete_deletes_nothing(fixture_copy, tmp_path, monkeypatch, corrupt):
    src = fixture_copy("basic")
    before = tree_digest(src)
    real = api.write_archive

    def write_then_damage(path, **kw):
        info = real(path, **kw)
        corrupt(Path(path))
        return info

    monkeypatch.setattr(api, "write_archive", write_then_damage)
    with pytest.raises(medsr.ArchiveError, match="NOT deleted"):
        medsr.archive_series(src, tmp_path / "s.medsr.h5", FAST)
    assert tree_digest(src) == before


def test_an_archive_swapped_for_another_series_deletes_nothing(fixture_copy, fixture_path, tmp_path, monkeypatch):
    src = fixture_copy("basic")
    before = tree_digest(src)
    other = tmp_path / "other.medsr.h5"
    medsr.archive_series(fixture_path("odd_size"), other, medsr.ArchiveOptions(method="bicubic", baselines=False))
    real = api.write_archive

    def write_then_swap(path, **kw):
        info = real(path, **kw)
        Path(path).write_bytes(other.read_bytes())  # a valid, verifying archive, of another series
        return info

    monkeypatch.setattr(api, "write_archive", write_then_swap)
    with pytest.raises(medsr.ArchiveError, match="does not hold exactly this series"):
        medsr.archive_series(src, tmp_path / "s.medsr.h5", FAST)
    assert tree_digest(src) == before


@pytest.mark.parametrize("how", ["modified", "removed", "unreadable"])
def test_an_original_changed_after_reading_deletes_nothing(fixture_copy, tmp_path, monkeypatch, how):
    src = fixture_copy("basic")
    victim = _dicoms(src)[7]
    real = api.write_archive

    def write_then_touch(path, **kw):
        info = real(path, **kw)
        if how == "modified":
            victim.write_bytes(victim.read_bytes() + b"\0\0")
        elif how == "removed":
            victim.unlink()
        return info

    monkeypatch.setattr(api, "write_archive", write_then_touch)
    if how == "unreadable":
        import medsr.flow.originals as originals

        real_sha = originals._sha256

        def sha(p):
            if p == victim:
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            return real_sha(p)

        monkeypatch.setattr(originals, "_sha256", sha)
    before = tree_digest(src)
    with pytest.raises((medsr.ArchiveError, medsr.InputError), match="nothing was deleted"):
        medsr.archive_series(src, tmp_path / "s.medsr.h5", FAST)
    after = tree_digest(src)
    assert {k: v for k, v in after.items() if k != victim.name} == {k: v for k, v in before.items()
                                                                    if k != victim.name}
    assert (victim.name in after) == (how != "removed")
    assert medsr.verify_archive(tmp_path / "s.medsr.h5").ok  # the archive itself is fine and kept


def test_a_failing_unlink_stops_and_says_what_was_deleted(fixture_copy, tmp_path, monkeypatch):
    src = fixture_copy("basic")
    before = tree_digest(src)
    real, calls = Path.unlink, []

    def unlink(self, *a, **kw):
        if self.parent == src:
            calls.append(self)
            if len(calls) == 3:
                raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real(self, *a, **kw)

    monkeypatch.setattr(Path, "unlink", unlink)
    arc = tmp_path / "s.medsr.h5"
    with pytest.raises(medsr.OutputError, match="stopped after 2 of 12"):
        medsr.archive_series(src, arc, FAST)
    gone = set(before) - set(tree_digest(src))
    assert len(gone) == 2
    recorded = set(api.read_archive(arc).source_sha256)
    assert {before[g] for g in gone} <= recorded  # everything deleted is in the verified archive


def test_cli_error_is_one_line_and_deletes_nothing(fixture_copy, tmp_path, monkeypatch, capsys):
    from medsr.cli import main

    src = fixture_copy("basic")
    before = tree_digest(src)
    real = api.write_archive
    monkeypatch.setattr(api, "write_archive", lambda path, **kw: (real(path, **kw), _corrupt_truncate(Path(path)))[0])
    rc = main(["archive", str(src), "-o", str(tmp_path / "s.medsr.h5"), "--delete-original", *FAST_ARGS])
    assert rc == 4
    assert "NOT deleted" in one_error_line(capsys.readouterr().err)
    assert tree_digest(src) == before


# --------------------------------------------------------------------------- the Orthanc plugin path


class _FakeOrthanc:
    """OrthancAccess over a folder of files (one series)."""

    def __init__(self, folder: Path):
        self.files = {}
        for k, f in enumerate(_dicoms(folder)):
            iid = "-".join(f"{k:08x}" for _ in range(5))
            self.files[iid] = f.read_bytes()
        self.sid = "-".join(["abcdef01"] * 5)
        self.deleted = []

    def get_json(self, path):
        assert path == f"/series/{self.sid}", path
        return {"Instances": list(self.files), "ParentStudy": "s", "MainDicomTags": {}}

    def get_bytes(self, path):
        return self.files[path.split("/")[2]]

    def post_instance(self, data):
        raise AssertionError("no upload expected")

    def delete(self, path):
        self.deleted.append(path)


@pytest.mark.parametrize("damage", [False, True])
def test_orthanc_series_deleted_only_after_verification(fixture_path, tmp_path, monkeypatch, damage):
    from medsr.pacs.orthanc_access import archive_orthanc_series

    pacs = _FakeOrthanc(fixture_path("basic"))
    if damage:
        real = api.write_archive
        monkeypatch.setattr(api, "write_archive",
                            lambda path, **kw: (real(path, **kw), _corrupt_flip(Path(path)))[0])
    opts = medsr.ArchiveOptions(method="bicubic", baselines=False)
    arc = tmp_path / "x.medsr.h5"
    if damage:
        with pytest.raises(medsr.ArchiveError, match="NOT deleted"):
            archive_orthanc_series(pacs, pacs.sid, arc, opts, delete_original=True)
        assert pacs.deleted == []
    else:
        _, _, deleted, warnings = archive_orthanc_series(pacs, pacs.sid, arc, opts, delete_original=True)
        assert deleted and pacs.deleted == [f"/series/{pacs.sid}"] and not warnings
        recorded = set(api.read_archive(arc).source_sha256)
        assert recorded == {hashlib.sha256(b).hexdigest() for b in pacs.files.values()}
