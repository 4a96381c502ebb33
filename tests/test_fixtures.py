"""The synthetic DICOM cases decode to what they promise, and builds repeat."""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut
from pydicom.uid import (
    CTImageStorage,
    EnhancedMRImageStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    MRImageStorage,
    RLELossless,
    DeflatedExplicitVRLittleEndian,
)

from dicom_fixtures import (
    BASIC,
    CASES,
    PATIENT_ID,
    PATIENT_NAME,
    PHI_MARKERS,
    PRIVATE_MARKER,
    SeriesSpec,
    build_all,
    nifti_affine_ras,
    orientation_vectors,
    series_uid,
    slice_positions,
    stored_pixels,
)
from dicom_fixtures import phantom
from dicom_fixtures.spec import HEAD_CENTRE_MM

REPO_ROOT = Path(__file__).resolve().parents[1]

# Cases that hold one or more complete classic single-frame series.
SERIES_CASES = [
    "basic", "odd_size", "signed", "rescale", "j2k", "jpegls", "rle", "deflate",
    "implicit", "bigendian", "shuffled", "command_set", "two_series", "ct", "rgb", "large_256",
]
SYNTAX_CASES = {
    "basic": ExplicitVRLittleEndian,
    "j2k": JPEG2000Lossless,
    "jpegls": JPEGLSLossless,
    "rle": RLELossless,
    "deflate": DeflatedExplicitVRLittleEndian,
    "implicit": ImplicitVRLittleEndian,
    "bigendian": ExplicitVRBigEndian,
}
# Cases whose files dciodvfy (dicom3tools) must pass without any error.
# (deflate is left out: Debian's dciodvfy cannot read deflated files at all.)
DCIODVFY_CLEAN = [
    "basic", "odd_size", "signed", "rescale", "j2k", "jpegls", "rle",
    "implicit", "bigendian", "two_series", "ct", "large_256", "enhanced",
]


def read_images(folder: Path) -> list[pydicom.Dataset]:
    """Every DICOM file with Pixel Data under ``folder``, recursively."""
    images = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            with warnings.catch_warnings():  # command_set: group 0000 in explicit VR
                warnings.filterwarnings("ignore", "Expected implicit VR", UserWarning)
                ds = pydicom.dcmread(path)
        except InvalidDicomError:
            continue
        if "PixelData" in ds:
            images.append(ds)
    return images


def by_series(images: list[pydicom.Dataset]) -> dict[str, list[pydicom.Dataset]]:
    """Group by SeriesInstanceUID; each series sorted along its slice normal."""
    groups: dict[str, list[pydicom.Dataset]] = defaultdict(list)
    for ds in images:
        groups[str(ds.SeriesInstanceUID)].append(ds)
    for series in groups.values():
        normal = np.cross(*np.reshape(np.array(series[0].ImageOrientationPatient, float), (2, 3)))
        series.sort(key=lambda ds: float(np.dot(np.array(ds.ImagePositionPatient, float), normal)))
    return dict(groups)


@pytest.fixture(scope="module")
def series_of(fixture_path):
    """case name -> {SeriesInstanceUID: datasets sorted by position} (cached)."""
    cache: dict[str, dict[str, list[pydicom.Dataset]]] = {}

    def get(name: str) -> dict[str, list[pydicom.Dataset]]:
        if name not in cache:
            cache[name] = by_series(read_images(fixture_path(name)))
        return cache[name]

    return get


# -- every case --------------------------------------------------------------------


def test_every_case_has_a_folder(fixtures_root, fixture_path):
    assert sorted(p.name for p in fixtures_root.iterdir()) == sorted(CASES)
    for name in CASES:
        assert fixture_path(name).is_dir()
    with pytest.raises(KeyError):
        fixture_path("no-such-case")


@pytest.mark.parametrize("name", SERIES_CASES)
def test_series_decode_to_the_intended_pixels(name, series_of):
    specs = CASES[name].specs
    groups = series_of(name)
    assert set(groups) == {str(series_uid(spec)) for spec in specs}
    for spec in specs:
        series = groups[str(series_uid(spec))]
        assert len(series) == spec.slices
        decoded = np.stack([ds.pixel_array for ds in series])
        expected = stored_pixels(spec)
        assert decoded.dtype == expected.dtype
        np.testing.assert_array_equal(decoded, expected)
        for ds in series:
            assert ds.Rows == spec.rows and ds.Columns == spec.cols
            assert ds.SamplesPerPixel == spec.samples_per_pixel
            assert ds.BitsAllocated == spec.bits_allocated
            assert ds.BitsStored == spec.bits_stored
            assert ds.HighBit == spec.bits_stored - 1
            assert ds.PixelRepresentation == int(spec.signed)
            assert ds.Modality == spec.modality
            assert ds.SOPClassUID == (CTImageStorage if spec.modality == "CT" else MRImageStorage)
            assert ds.file_meta.TransferSyntaxUID == spec.transfer_syntax
            assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
            assert ds.PatientName == PATIENT_NAME and ds.PatientID == PATIENT_ID
            assert ds.SeriesDescription == spec.series_description


@pytest.mark.parametrize("name", SERIES_CASES)
def test_geometry_is_consistent_when_sorted_by_position(name, series_of):
    for spec in CASES[name].specs:
        series = series_of(name)[str(series_uid(spec))]
        row, col, normal = orientation_vectors(spec.orientation)
        positions = np.array([ds.ImagePositionPatient for ds in series], float)
        np.testing.assert_allclose(positions, slice_positions(spec), atol=1e-3)
        for ds in series:
            iop = np.array(ds.ImageOrientationPatient, float)
            np.testing.assert_allclose(iop, [*row, *col])
            assert [float(v) for v in ds.PixelSpacing] == pytest.approx(spec.pixel_spacing_mm)
            assert float(ds.SliceThickness) == pytest.approx(spec.slice_thickness_mm)
            assert float(ds.SpacingBetweenSlices) == pytest.approx(spec.spacing_between_slices_mm)
            position = np.array(ds.ImagePositionPatient, float)
            assert float(ds.SliceLocation) == pytest.approx(position @ normal, abs=1e-3)
        # all slices share one plane through the stack axis, evenly spaced along the normal
        steps = np.diff(positions @ normal)
        np.testing.assert_allclose(steps, spec.spacing_between_slices_mm, atol=1e-3)
        in_plane = positions - np.outer(positions @ normal, normal)
        np.testing.assert_allclose(in_plane, in_plane[0][None].repeat(len(in_plane), 0), atol=1e-3)
        # the stack is centred on the phantom's head
        half_width = row * spec.pixel_spacing_mm[1] * (spec.cols - 1) / 2
        half_height = col * spec.pixel_spacing_mm[0] * (spec.rows - 1) / 2
        centre = positions.mean(0) + half_width + half_height
        np.testing.assert_allclose(centre, HEAD_CENTRE_MM, atol=1e-3)


# -- individual cases ------------------------------------------------------------


@pytest.mark.parametrize("name, syntax", SYNTAX_CASES.items())
def test_transfer_syntax_cases_hold_basics_pixels(name, syntax, series_of):
    (series,) = series_of(name).values()
    assert {ds.file_meta.TransferSyntaxUID for ds in series} == {syntax}
    decoded = np.stack([ds.pixel_array for ds in series])
    np.testing.assert_array_equal(decoded, stored_pixels(BASIC))
    if syntax.is_encapsulated:
        assert all(ds["PixelData"].is_undefined_length for ds in series)
    if name != "basic":  # same pixels, but distinct instances
        (basic,) = series_of("basic").values()
        assert not {ds.SOPInstanceUID for ds in series} & {ds.SOPInstanceUID for ds in basic}


def test_basic_is_12_axial_64x64_uint16_12_bit(series_of):
    (series,) = series_of("basic").values()
    volume = np.stack([ds.pixel_array for ds in series])
    assert volume.shape == (12, 64, 64) and volume.dtype == np.uint16
    assert 700 <= volume.max() <= 3000 and volume.max() < 4096
    assert [float(v) for v in series[0].ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    assert "RescaleSlope" not in series[0]
    assert list(series[0].ImageType) == ["ORIGINAL", "PRIMARY", "M", "ND"]
    for keyword in ("ScanningSequence", "SequenceVariant", "ScanOptions", "MRAcquisitionType",
                    "EchoTime", "RepetitionTime", "EchoTrainLength", "InversionTime"):
        assert keyword in series[0], keyword


def test_odd_size_is_sagittal_and_not_divisible_by_4(series_of):
    (series,) = series_of("odd_size").values()
    ds = series[0]
    assert ds.Rows % 4 and ds.Columns % 4
    _, _, normal = orientation_vectors("sagittal")
    assert abs(normal[0]) == 1  # slices are stacked left-right


def test_signed_has_negative_values_and_rescale(series_of):
    (series,) = series_of("signed").values()
    ds = series[0]
    assert ds.PixelRepresentation == 1
    assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (2.0, -1024.0)
    volume = np.stack([s.pixel_array for s in series])
    assert volume.dtype == np.int16 and volume.min() < 0 < volume.max()
    np.testing.assert_array_equal(apply_modality_lut(ds.pixel_array, ds), ds.pixel_array * 2.0 - 1024.0)


def test_rescale_values_are_honoured_by_pydicom(series_of):
    (series,) = series_of("rescale").values()
    ds = series[len(series) // 2]
    assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (0.5, 10.0)
    assert ds.pixel_array.dtype == np.uint16
    np.testing.assert_allclose(apply_modality_lut(ds.pixel_array, ds), ds.pixel_array * 0.5 + 10.0)


def test_shuffled_needs_sorting_by_position_and_recursion(fixture_path, series_of):
    folder = fixture_path("shuffled")
    (series,) = series_of("shuffled").values()
    numbers = [int(ds.InstanceNumber) for ds in series]  # in spatial order
    assert sorted(numbers) == list(range(1, len(numbers) + 1))
    assert numbers != sorted(numbers) and numbers != sorted(numbers, reverse=True)
    top = [p for p in folder.iterdir() if p.is_file() and p.name != "notes.txt"]
    nested = list((folder / "sub" / "deeper").iterdir())
    assert top and nested and len(top) + len(nested) == len(series)
    assert not any(p.name.startswith("IM") for p in top + nested)
    assert (folder / "notes.txt").is_file()
    dicomdir = pydicom.dcmread(folder / "sub" / "DICOMDIR")
    assert "PixelData" not in dicomdir
    assert dicomdir.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.1.3.10"


def test_command_set_has_group_0000_and_trailing_padding(fixture_path):
    files = sorted(fixture_path("command_set").iterdir())
    assert files
    for path in files:
        with warnings.catch_warnings():  # pydicom expects group 0000 in implicit VR
            warnings.simplefilter("ignore", UserWarning)
            ds = pydicom.dcmread(path)
        assert ds[0x00000100].value == 1  # C-STORE-RQ
        assert ds.AffectedSOPInstanceUID == ds.SOPInstanceUID
        command = [e for e in ds if e.tag.group == 0 and e.tag.element != 0]
        encoded = sum(8 + (2 if e.VR == "US" else len(e.value) + len(e.value) % 2) for e in command)
        assert ds[0x00000000].value == encoded
        assert ds[0xFFFCFFFC].VR == "OB"
        tags = list(ds.keys())
        assert tags.index(0xFFFCFFFC) > tags.index(0x7FE00010)
        assert ds.pixel_array.shape == (BASIC.rows, BASIC.cols)


def test_two_series_share_a_folder_and_study(series_of):
    groups = series_of("two_series")
    assert len(groups) == 2
    first = [series[0] for series in groups.values()]
    assert {ds.SeriesDescription for ds in first} == {"T1 MPRAGE AX", "T2 TSE AX"}
    assert len({ds.StudyInstanceUID for ds in first}) == 1
    assert len({ds.SeriesNumber for ds in first}) == 2


def test_ct_and_rgb_are_what_must_be_refused(series_of):
    (ct,) = series_of("ct").values()
    assert ct[0].Modality == "CT" and ct[0].SOPClassUID == CTImageStorage
    hu = apply_modality_lut(np.stack([ds.pixel_array for ds in ct]), ct[0])
    assert hu.min() < -900 and hu.max() > 800  # air and bone in Hounsfield units
    (rgb,) = series_of("rgb").values()
    assert rgb[0].SamplesPerPixel == 3 and rgb[0].PhotometricInterpretation == "RGB"
    assert rgb[0].SOPClassUID == MRImageStorage
    assert rgb[0].pixel_array.shape == (BASIC.rows, BASIC.cols, 3)


def test_truncated_file_is_cut_inside_pixel_data(fixture_path):
    (path,) = list(fixture_path("truncated").iterdir())
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == MRImageStorage
    assert len(ds.PixelData) < ds.Rows * ds.Columns * 2
    with pytest.raises(ValueError):
        ds.pixel_array


def test_empty_and_not_dicom(fixture_path):
    assert list(fixture_path("empty").iterdir()) == []
    files = list(fixture_path("not_dicom").iterdir())
    assert {p.suffix for p in files} >= {".txt", ".png", ".dcm"}
    for path in files:
        with pytest.raises(InvalidDicomError):
            pydicom.dcmread(path)
    assert (fixture_path("not_dicom") / "preview.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_large_256(series_of):
    (series,) = series_of("large_256").values()
    assert len(series) == 24 and (series[0].Rows, series[0].Columns) == (256, 256)


def test_enhanced_multiframe_matches_the_phantom(fixture_path):
    (path,) = list(fixture_path("enhanced").iterdir())
    ds = pydicom.dcmread(path)
    (spec,) = CASES["enhanced"].specs
    assert ds.SOPClassUID == EnhancedMRImageStorage
    assert int(ds.NumberOfFrames) == spec.slices
    np.testing.assert_array_equal(ds.pixel_array, stored_pixels(spec))
    positions = [f.PlanePositionSequence[0].ImagePositionPatient for f in ds.PerFrameFunctionalGroupsSequence]
    np.testing.assert_allclose(np.array(positions, float), slice_positions(spec), atol=1e-3)
    shared = ds.SharedFunctionalGroupsSequence[0]
    assert [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing] == pytest.approx(spec.pixel_spacing_mm)


def test_nifti_volume_and_affine(fixture_path):
    nib = pytest.importorskip("nibabel")
    (path,) = list(fixture_path("nifti").iterdir())
    assert path.name.endswith(".nii.gz")
    image = nib.load(path)
    np.testing.assert_array_equal(np.asarray(image.dataobj), stored_pixels(BASIC).transpose(2, 1, 0))
    np.testing.assert_allclose(image.affine, nifti_affine_ras(BASIC), atol=1e-4)
    zooms = (*BASIC.pixel_spacing_mm[::-1], BASIC.spacing_between_slices_mm)
    assert image.header.get_zooms() == pytest.approx(zooms)


# -- headers --------------------------------------------------------------------


def test_identifying_markers_and_private_tags_are_in_the_files(fixture_path):
    path = fixture_path("basic") / "IM0001.dcm"
    raw = path.read_bytes()
    for marker in (*PHI_MARKERS, PRIVATE_MARKER):
        assert marker.encode() in raw, marker
    ds = pydicom.dcmread(path)
    mr = ds.private_block(0x0019, "SIEMENS MR HEADER")
    assert mr[0x10].value == PRIVATE_MARKER
    csa = ds.private_block(0x0029, "SIEMENS CSA HEADER")
    assert csa[0x10].VR == "OB" and csa[0x10].value.startswith(b"SV10")


def test_csa_header_parses_with_nibabel(fixture_path):
    csareader = pytest.importorskip("nibabel.nicom.csareader")
    ds = pydicom.dcmread(fixture_path("basic") / "IM0001.dcm")
    header = csareader.get_csa_header(ds)
    assert header is not None and header["type"] == 2
    assert csareader.get_slice_normal(header) == pytest.approx([0.0, 0.0, 1.0])


def test_implicit_vr_keeps_private_tags_readable(series_of):
    (series,) = series_of("implicit").values()
    mr = series[0].private_block(0x0019, "SIEMENS MR HEADER")
    value = mr[0x10].value  # not in pydicom's private dictionary: read as UN bytes
    assert (value if isinstance(value, str) else value.decode().strip()) == PRIVATE_MARKER


@pytest.mark.parametrize("name", DCIODVFY_CLEAN)
def test_dciodvfy_reports_no_errors(name, fixture_path, dciodvfy):
    files = sorted(p for p in fixture_path(name).rglob("*") if p.is_file())
    for path in (files[0], files[-1]):
        assert dciodvfy(path) == set(), path


def test_dciodvfy_helper_sees_errors(fixture_path, dciodvfy):
    (path,) = list(fixture_path("truncated").iterdir())
    assert dciodvfy(path)


# -- the phantom ------------------------------------------------------------------


def test_phantom_looks_like_a_head_not_noise():
    spec = SeriesSpec(rows=128, cols=128, slices=4)
    volume = stored_pixels(spec).astype(float)
    middle = volume[2]
    # dark background in the corners, with low (Rician) noise
    corner = middle[:12, :12]
    assert corner.mean() < 0.05 * middle.max() and corner.std() > 0
    # a large head in the middle
    head = middle > 0.15 * middle.max()
    assert 0.3 < head.mean() < 0.8 and head[64, 64]
    # smooth structures: neighbouring pixels correlate strongly
    a, b = middle[:, :-1].ravel(), middle[:, 1:].ravel()
    assert np.corrcoef(a, b)[0, 1] > 0.9
    # several tissue classes (CSF, grey, white matter, fat...), not one blob
    histogram, _ = np.histogram(middle[head], bins=16)
    assert (histogram > 0.02 * head.sum()).sum() >= 4


def test_spec_validation():
    with pytest.raises(ValueError):
        SeriesSpec(orientation="oblique")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SeriesSpec(dtype="uint16", samples_per_pixel=3)
    with pytest.raises(ValueError):
        SeriesSpec(modality="CT")  # CT goes with contrast "CT"
    with pytest.raises(ValueError):
        SeriesSpec(bits_stored=17)


# -- determinism and the CLI --------------------------------------------------------


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_builds_are_deterministic(fixtures_root, tmp_path):
    phantom._cached_phantom.cache_clear()  # recompute the phantoms from scratch
    build_all(tmp_path)
    first, second = _tree(fixtures_root), _tree(tmp_path)
    assert sorted(first) == sorted(second)
    different = [name for name in first if first[name] != second[name]]
    assert different == []


def test_cli_builds_selected_cases(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "dicom_fixtures.build", str(tmp_path), "--case", "basic", "--case", "empty"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=False, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "RuntimeWarning" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["basic", "empty"]
    assert len(list((tmp_path / "basic").iterdir())) == BASIC.slices


# -- real data fixtures (skip without ../shared/data) --------------------------------


def _headers(folder: Path, pattern: str = "*.dcm") -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.glob(pattern))]


def test_real_sag_anon(sag_anon):
    headers = _headers(sag_anon)
    assert len(headers) == 192
    assert {(ds.Rows, ds.Columns, ds.BitsStored) for ds in headers} == {(256, 256, 12)}
    assert len({ds.SeriesInstanceUID for ds in headers}) == 1


def test_real_siemens_xa30(siemens_xa30):
    headers = _headers(siemens_xa30)
    assert len(headers) == 96
    assert {(ds.Rows, ds.Columns, ds.BitsStored) for ds in headers} == {(128, 128, 12)}


def test_real_philips_ffe(philips_ffe):
    headers = _headers(philips_ffe)
    assert len(headers) == 24
    assert {ds.SOPClassUID for ds in headers} == {MRImageStorage}


def test_real_philips_enhanced(philips_enhanced):
    classes = {ds.SOPClassUID.name: ds for ds in _headers(philips_enhanced)}
    assert int(classes["Enhanced MR Image Storage"].NumberOfFrames) == 24
    assert "Raw Data Storage" in classes
