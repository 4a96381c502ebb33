"""medsr's own restored DICOM, read by independent tools: dciodvfy (dicom3tools) finds no error and
dcmdump (dcmtk) reads the derived, lossy labels and the reference to the original.

The synthetic fixtures are dciodvfy-clean (tests/test_fixtures.py), so a restore of them must be
clean too: any error is one medsr added. Runs on every machine with the Debian tools (the real-data
check is in test_real_series.py); skips without them (a failure under MEDSR_STRICT_TESTS=1).
"""
from __future__ import annotations

import shutil
import subprocess

import pydicom
import pytest

import medsr

CASES = [  # fixture case, archive options: pixel formats, a compressed input, the three bases, the floor
    ("basic", dict(method="model", baselines=False)),
    ("signed", dict(method="bicubic", baselines=False)),
    ("rescale", dict(method="bicubic", baselines=False, base="lossless")),
    ("odd_size", dict(method="bicubic", baselines=False)),
    ("j2k", dict(method="bicubic", baselines=False, base="lossy")),
    ("basic", dict(method="bicubic", baselines=False, floor_psnr_fg=45.0, floor_fallback="lossless")),
]


@pytest.fixture(scope="module")
def restores(fixture_path, tmp_path_factory):
    """case index -> (source folder, restored folder)."""
    out = {}
    for i, (case, opts) in enumerate(CASES):
        d = tmp_path_factory.mktemp(f"validated_{case}")
        medsr.archive_series(fixture_path(case), d / "a.medsr.h5", medsr.ArchiveOptions(**opts))
        medsr.restore_archive(d / "a.medsr.h5", d / "restored")
        out[i] = (fixture_path(case), d / "restored")
    return out


@pytest.mark.parametrize("i", range(len(CASES)), ids=[f"{c}-{o.get('base', 'default')}-{o['method']}"
                                                      + ("-floor" if "floor_psnr_fg" in o else "") for c, o in CASES])
def test_restored_synthetic_series_has_no_dciodvfy_error(restores, dciodvfy, i):
    _, restored = restores[i]
    files = sorted(restored.glob("*.dcm"))
    assert files
    for f in (files[0], files[len(files) // 2], files[-1]):
        assert dciodvfy(f) == set(), f


@pytest.fixture(scope="session")
def dcmdump():
    exe = shutil.which("dcmdump")
    if exe is None:
        pytest.skip("dcmdump (Debian package dcmtk) is not installed")

    def run(path) -> str:
        p = subprocess.run([exe, "-q", str(path)], capture_output=True, text=True, errors="replace", timeout=60)
        assert p.returncode == 0 and not p.stderr.strip(), p.stderr
        return p.stdout

    return run


def _value(dump: str, tag: str) -> str:
    line = next(l for l in dump.splitlines() if l.lstrip().startswith(tag))
    return line.split("[", 1)[1].split("]", 1)[0] if "[" in line else line.split()[2]


def test_dcmdump_reads_the_derived_lossy_labels_and_the_source_reference(restores, dcmdump):
    source, restored = restores[0]
    originals = {str(pydicom.dcmread(f).SOPInstanceUID) for f in source.iterdir()}
    for f in sorted(restored.glob("*.dcm"))[:3]:
        dump = dcmdump(f)
        image_type = _value(dump, "(0008,0008)").split("\\")
        assert image_type[:2] == ["DERIVED", "SECONDARY"]  # values 3+ are the original's
        assert _value(dump, "(0028,2110)") == "01"  # Lossy Image Compression
        assert _value(dump, "(0002,0010)") == "=LittleEndianExplicit"  # dcmdump names 1.2.840.10008.1.2.1
        referenced = _value(dump.split("(0008,2112)", 1)[1], "(0008,1155)")  # Source Image Sequence
        assert referenced in originals
        assert _value(dump, "(0008,0018)") not in originals  # a new SOP Instance UID
        assert "(0028,0010) US 64" in dump and "(0028,0011) US 64" in dump
