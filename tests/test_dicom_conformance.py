"""No element medsr writes breaks its VR's length; an original's over-long value is reported once, kept as it was."""
import subprocess
import sys

import pydicom
import pytest

import medsr
from medsr import ArchiveOptions, RestoreOptions
from medsr.archive import read_archive
from medsr.dicom import DerivationInfo, derive_instance
from medsr.io.conformance import overlong_elements

FAST = ArchiveOptions(method="bicubic", baselines=False)
LONG = "X" * 65  # one character over VR LO's 64


def _set_all(folder, **values):
    from pydicom import config

    with config.disable_value_validation():  # the fixture writes a non-conformant original on purpose
        for f in sorted(folder.iterdir()):
            ds = pydicom.dcmread(f)
            for tag, (vr, value) in values.items():
                ds.add_new(tag, vr, value)
            ds.save_as(f)


def test_restored_series_elements_fit_their_vrs(fixture_copy, tmp_path, strict_dicom):
    src = fixture_copy("basic")
    _set_all(src, **{"0x0008103E": ("LO", "S" * 64)})  # Series Description at its limit: medsr appends to it
    arc = tmp_path / "a.medsr.h5"
    medsr.archive_series(src, arc, FAST)
    rr = medsr.restore_archive(arc, tmp_path / "restored", RestoreOptions())
    assert len(rr.files) == 12
    for f in rr.files:
        ds = pydicom.dcmread(f)
        assert overlong_elements(ds) == [] and overlong_elements(ds.file_meta) == []
        assert ds.SeriesDescription.endswith("[medsr x4 restore]") and len(ds.SeriesDescription) <= 64


@pytest.mark.parametrize("description", ["", "T2W_TSE " * 9, "a" * 64])
def test_derive_instance_sets_values_within_their_vrs(fixture_copy, tmp_path, strict_dicom, description):
    src = fixture_copy("basic")
    _set_all(src, **{"0x0008103E": ("LO", description)})
    arc = tmp_path / "a.medsr.h5"
    medsr.archive_series(src, arc, FAST)
    data = read_archive(arc)
    long_model = "medsr-srresnet-x4-lossy@" + "f" * 64 + " averaged over 8 mirrored/rotated passes"
    info = DerivationInfo(series_uid=pydicom.uid.generate_uid(), description=f"restored by {long_model} " * 40,
                          ratio=123456.789)
    ds = derive_instance(data.header(0), data.lowres[0].repeat(4, 0).repeat(4, 1).astype("uint16"), info)
    assert overlong_elements(ds) == [] and overlong_elements(ds.file_meta) == []
    ds.save_as(tmp_path / "x.dcm", enforce_file_format=True)  # writing_validation_mode RAISE
    assert len(pydicom.dcmread(tmp_path / "x.dcm").DerivationDescription) <= 1024


def test_overlong_original_value_is_reported_once_and_kept(fixture_copy, tmp_path):
    src = fixture_copy("basic")
    _set_all(src, **{"0x00081090": ("LO", LONG)})  # (0008,1090) Manufacturer's Model Name, 65 characters
    arc, out = tmp_path / "a.medsr.h5", tmp_path / "restored"
    run = [sys.executable, "-m", "medsr"]
    a = subprocess.run(run + ["archive", str(src), "-o", str(arc), "--method", "bicubic", "--no-j2k"],
                       capture_output=True, text=True, timeout=600)
    assert a.returncode == 0, a.stderr
    lines = [ln for ln in a.stderr.splitlines() if ln.strip()]
    assert len([ln for ln in lines if "(0008,1090)" in ln]) == 1, a.stderr
    assert "exceeds the maximum length" not in a.stderr and LONG not in a.stderr
    assert "IM0001.dcm (and 11 more files)" in a.stderr and "longer than VR LO allows (64)" in a.stderr
    r = subprocess.run(run + ["restore", str(arc), "-o", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "exceeds the maximum length" not in r.stderr
    restored = sorted(out.iterdir())
    assert len(restored) == 12
    for f in restored:
        with pydicom.config.disable_value_validation():
            assert pydicom.dcmread(f).ManufacturerModelName == LONG  # the original's value, unchanged
