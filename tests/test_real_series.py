"""Archive -> restore of the real SAG-anon series (../shared/data): the issue's 'done when'."""
import json
import subprocess
import sys

import numpy as np
import pydicom
import pytest

import medsr

# elements a derived image must change (everything else public must survive)
CHANGED = {"SOPInstanceUID", "SeriesInstanceUID", "ImageType", "SeriesNumber", "SeriesDescription",
           "LossyImageCompression", "LossyImageCompressionRatio", "LossyImageCompressionMethod",
           "DerivationDescription", "DerivationCodeSequence", "SourceImageSequence", "InstanceCreationDate",
           "InstanceCreationTime", "ContributingEquipmentSequence", "SmallestImagePixelValue",
           "LargestImagePixelValue", "PixelData"}


@pytest.fixture(scope="module")
def round_trip(sag_anon, tmp_path_factory):
    out = tmp_path_factory.mktemp("sag")
    arc = out / "sag.medsr.h5"
    proc = subprocess.run([sys.executable, "-m", "medsr", "archive", str(sag_anon), "-o", str(arc), "--json"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    restored = out / "restored"
    proc = subprocess.run([sys.executable, "-m", "medsr", "restore", str(arc), "-o", str(restored), "--json"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return summary, json.loads(proc.stdout), arc, restored


def _originals(folder):
    files = [f for f in sorted(folder.rglob("*.dcm"))]
    return {str(ds.SOPInstanceUID): ds for ds in (pydicom.dcmread(f) for f in files)}


def test_restore_rebuilds_every_instance_at_the_original_size_and_geometry(round_trip, sag_anon):
    summary, rsum, _, restored = round_trip
    originals = _originals(sag_anon)
    files = sorted(restored.glob("*.dcm"))
    assert summary["slices"] == rsum["slices"] == len(files) == len(originals) == 192
    for f in files:
        ds = pydicom.dcmread(f)
        src_uid = ds.SourceImageSequence[0].ReferencedSOPInstanceUID
        orig = originals[src_uid]
        assert (ds.Rows, ds.Columns) == (orig.Rows, orig.Columns)
        assert list(ds.PixelSpacing) == list(orig.PixelSpacing)
        assert list(ds.ImagePositionPatient) == list(orig.ImagePositionPatient)
        assert list(ds.ImageOrientationPatient) == list(orig.ImageOrientationPatient)
        assert ds.pixel_array.shape == orig.pixel_array.shape and ds.pixel_array.dtype == orig.pixel_array.dtype
        assert ds.pixel_array.max() < 2 ** int(orig.BitsStored)


def test_restored_files_are_marked_derived_lossy_with_new_uids(round_trip, sag_anon):
    _, _, _, restored = round_trip
    originals = _originals(sag_anon)
    orig_series = {str(o.SeriesInstanceUID) for o in originals.values()}
    series = set()
    for f in sorted(restored.glob("*.dcm"))[::16]:
        ds = pydicom.dcmread(f)
        orig = originals[ds.SourceImageSequence[0].ReferencedSOPInstanceUID]
        assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
        assert list(ds.ImageType)[2:] == list(orig.ImageType)[2:]
        assert ds.LossyImageCompression == "01"
        assert ds.SOPInstanceUID not in originals and ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.StudyInstanceUID == orig.StudyInstanceUID
        codes = {c.CodeValue for c in ds.DerivationCodeSequence}
        assert {"113085", "113040"} <= codes
        assert "area4-v1" in ds.DerivationDescription
        series.add(str(ds.SeriesInstanceUID))
        missing = {e.keyword for e in orig if e.keyword and not e.tag.is_private and e.tag.group not in (0x0000, 0x0002)
                   and e.keyword not in ds and e.keyword not in CHANGED}
        assert not missing, missing
        private_kept = {e.tag for e in orig if e.tag.is_private} - {e.tag for e in ds if e.tag.is_private}
        assert not private_kept
    assert len(series) == 1 and not (series & orig_series)


def test_restored_files_add_no_dciodvfy_error(round_trip, sag_anon, dciodvfy):
    _, _, _, restored = round_trip
    originals = sorted(sag_anon.rglob("*.dcm"))
    before = set().union(*(dciodvfy(f) for f in originals[:1]))
    for f in sorted(restored.glob("*.dcm"))[::64]:
        assert dciodvfy(f) - before == set()


def test_archive_audit_matches_an_independent_measure_of_the_written_files(round_trip, sag_anon):
    from skimage.metrics import structural_similarity

    summary, _, _, restored = round_trip
    originals = _originals(sag_anon)
    pairs = []
    for f in sorted(restored.glob("*.dcm")):
        ds = pydicom.dcmread(f)
        orig = originals[ds.SourceImageSequence[0].ReferencedSOPInstanceUID]
        pairs.append((float(orig.ImagePositionPatient[0]), orig.pixel_array.astype(float), ds.pixel_array.astype(float)))
    o = np.stack([p[1] for p in pairs])
    r = np.stack([p[2] for p in pairs])
    dr = o.max() - o.min()
    thr = 0.05 * np.percentile(o, 99.5)
    psnrs, ssims = [], []
    for oi, ri in zip(o, r):
        if (oi > thr).mean() < 0.05:
            continue
        mse = np.mean((oi - ri) ** 2)
        psnrs.append(10 * np.log10(dr ** 2 / mse))
        ssims.append(structural_similarity(oi, ri, data_range=dr))
    assert abs(np.mean(psnrs) - summary["psnr"]) < 0.05
    assert abs(np.mean(ssims) - summary["ssim"]) < 0.002
    assert summary["psnr"] >= summary["psnr_bicubic"] - 0.05


def test_archive_is_much_smaller_and_owner_only(round_trip):
    summary, _, arc, _ = round_trip
    assert summary["ratio"] > 30
    assert (arc.stat().st_mode & 0o077) == 0
    assert medsr.verify_archive(arc).ok
