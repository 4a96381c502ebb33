"""One classifier decides what a file is to medsr (medsr/io/classify.py): an image, a DICOM object without
an image, a broken DICOM file (with a one-line reason), or not DICOM at all. The full read (``read_series``)
and the batch header scan (``scan_files``) both ask it; real files in, the same verdict out of both, except
where a header-only read cannot see what the full read sees (the Pixel Data)."""
from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, generate_uid

from medsr.api import classify_dicom_file, has_part10_magic, is_part10_file
from medsr.batch.scan import scan_files
from medsr.errors import InputError
from medsr.io import read_series
from medsr.io.classify import BROKEN, IMAGE, NON_IMAGE, NOT_DICOM

BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
RAW_DATA = "1.2.840.10008.5.1.4.1.1.66"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"


def write_object(path: Path, sop_class: str, syntax: str = ExplicitVRLittleEndian, **elements) -> Path:
    """A Part 10 file of ``sop_class`` written by pydicom, with a series UID and ``elements``, no pixels."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def meta_end(raw: bytes) -> int:
    """Where the file meta group of Part 10 bytes ends (its group length follows DICM)."""
    return 132 + 12 + struct.unpack("<I", raw[140:144])[0]


@pytest.fixture(scope="module")
def inputs(fixture_path, tmp_path_factory) -> dict[str, Path]:
    """name -> one file, each a kind of input medsr meets in a folder exported from a PACS."""
    d = tmp_path_factory.mktemp("classify")
    series_file = fixture_path("basic") / "IM0006.dcm"
    raw = series_file.read_bytes()
    files = {
        "series file": series_file,
        "DICOMDIR": fixture_path("shuffled") / "sub" / "DICOMDIR",
        "text named .dcm": fixture_path("not_dicom") / "report.dcm",
        "PNG": fixture_path("not_dicom") / "preview.png",
        "Basic Text SR": write_object(d / "report.sr.dcm", BASIC_TEXT_SR, Modality="SR"),
        "Raw Data": write_object(d / "raw.dcm", RAW_DATA, Modality="MR"),
    }
    (d / "cut_after_meta.dcm").write_bytes(raw[:meta_end(raw)])
    (d / "cut_in_header.dcm").write_bytes(raw[:meta_end(raw) + 200])
    (d / "cut_in_preamble.dcm").write_bytes(raw[:100])
    (d / "cut_in_pixels.dcm").write_bytes(raw[:-4096])  # half of the 64x64 uint16 Pixel Data
    (d / "magic_then_junk.dcm").write_bytes(raw[:132] + b"\xff" * 64)
    deflated = write_object(d / "deflated.dcm", MR_IMAGE, DeflatedExplicitVRLittleEndian, Modality="MR").read_bytes()
    not_inflatable = deflated[:meta_end(deflated)] + b"\xff" * 64  # pydicom raises (zlib) reading the data set
    (d / "not_inflatable.dcm").write_bytes(not_inflatable)
    (d / "DICOMDIR").write_bytes(not_inflatable)
    no_pixels = pydicom.dcmread(series_file)
    del no_pixels.PixelData
    no_pixels.save_as(d / "no_pixels.dcm", enforce_file_format=True)
    files.update({
        "cut after file meta": d / "cut_after_meta.dcm",
        "cut inside header": d / "cut_in_header.dcm",
        "cut inside preamble": d / "cut_in_preamble.dcm",
        "cut inside Pixel Data": d / "cut_in_pixels.dcm",
        "DICM then junk": d / "magic_then_junk.dcm",
        "Deflated body that does not inflate": d / "not_inflatable.dcm",
        "DICOMDIR named, body that does not inflate": d / "DICOMDIR",
        "MR image without Pixel Data": d / "no_pixels.dcm",
    })
    return files


# input -> (verdict of the full read, verdict of the header-only scan)
EXPECTED = {
    "series file": (IMAGE, IMAGE),
    "DICOMDIR": (NON_IMAGE, NON_IMAGE),
    "text named .dcm": (NOT_DICOM, NOT_DICOM),
    "PNG": (NOT_DICOM, NOT_DICOM),
    "cut inside preamble": (NOT_DICOM, NOT_DICOM),
    "DICOMDIR named, body that does not inflate": (NOT_DICOM, NOT_DICOM),
    "Basic Text SR": (NON_IMAGE, NON_IMAGE),
    "Raw Data": (NON_IMAGE, NON_IMAGE),
    "cut after file meta": (BROKEN, BROKEN),
    "cut inside header": (BROKEN, BROKEN),
    "DICM then junk": (BROKEN, BROKEN),
    "Deflated body that does not inflate": (BROKEN, BROKEN),
    # what a header-only read cannot see: the Pixel Data. The scan lets these through as images and the
    # full read of the series refuses them (tests below)
    "cut inside Pixel Data": (IMAGE, IMAGE),
    "MR image without Pixel Data": (BROKEN, IMAGE),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_input_gets_one_verdict_from_the_full_read_and_one_from_the_header_scan(inputs, name):
    full, _ = classify_dicom_file(inputs[name], header_only=False)
    header, _ = classify_dicom_file(inputs[name], header_only=True, tags=["SOPClassUID", "SeriesInstanceUID", "Rows"])
    assert (full.kind, header.kind) == EXPECTED[name]
    for verdict in (full, header):
        assert verdict.is_image == (verdict.kind == IMAGE)
        assert verdict.skipped == (verdict.kind in (NON_IMAGE, NOT_DICOM))
        assert (verdict.reason == "") == (verdict.kind == IMAGE)  # every file left out or refused says why
        assert "\n" not in verdict.reason


def test_reasons_name_the_problem_and_the_sop_class_but_no_header_value(inputs):
    def reason(name, header_only):
        return classify_dicom_file(inputs[name], header_only=header_only)[0].reason

    assert reason("Basic Text SR", False) == f"DICOM object without image pixels (SOP class {BASIC_TEXT_SR})"
    assert reason("DICOMDIR", True) == "DICOM object without image pixels (SOP class 1.2.840.10008.1.3.10)"
    assert reason("text named .dcm", False) == "not a DICOM file"
    assert reason("MR image without Pixel Data", False) == "DICOM image without pixel data"
    assert reason("cut after file meta", False) == "DICOM image without pixel data"  # the file meta says MR
    assert reason("cut after file meta", True) == "DICOM header is incomplete (file damaged or truncated)"
    assert reason("DICM then junk", False) == "DICOM object without SOP class or pixel data"
    assert reason("Deflated body that does not inflate", False) == "unreadable DICOM (error)"  # zlib.error
    assert reason("Deflated body that does not inflate", True) == "DICOM header not readable (error)"
    assert reason("cut inside header", False) == "DICOM image without pixel data"
    patient = pydicom.dcmread(inputs["series file"], stop_before_pixels=True)
    for name in inputs:
        for header_only in (False, True):
            text = reason(name, header_only)
            assert str(patient.PatientName) not in text and str(patient.PatientID) not in text


def test_part10_magic_on_bytes_and_on_files(inputs, tmp_path):
    raw = inputs["series file"].read_bytes()
    assert has_part10_magic(raw) and has_part10_magic(raw[:132])
    assert not has_part10_magic(raw[:131]) and not has_part10_magic(b"\0" * 128 + b"DIC")
    assert not has_part10_magic(inputs["PNG"].read_bytes())
    assert is_part10_file(inputs["series file"]) and is_part10_file(inputs["DICM then junk"])
    assert not is_part10_file(inputs["text named .dcm"]) and not is_part10_file(inputs["cut inside preamble"])
    assert not is_part10_file(tmp_path / "missing.dcm")  # unreadable: not a Part 10 file, no exception


def _folder(tmp_path: Path, fixture_path, extra: dict[str, Path] | None = None) -> Path:
    """The basic series plus ``extra`` files (name in the folder -> file) beside it."""
    folder = tmp_path / "export"
    shutil.copytree(fixture_path("basic"), folder)
    for name, f in (extra or {}).items():
        shutil.copy(f, folder / name)
    return folder


def test_the_series_reader_skips_non_image_objects_and_non_dicom_files_with_a_warning(inputs, fixture_path, tmp_path):
    folder = _folder(tmp_path, fixture_path, {"sr.dcm": inputs["Basic Text SR"], "raw.dcm": inputs["Raw Data"],
                                              "preview.png": inputs["PNG"],
                                              "DICOMDIR": inputs["DICOMDIR named, body that does not inflate"]})
    series = read_series(folder)
    assert series.n_slices == 12
    assert sorted(series.warnings) == sorted([
        f"{folder / 'sr.dcm'}: DICOM object without image pixels (SOP class {BASIC_TEXT_SR}), skipped",
        f"{folder / 'raw.dcm'}: DICOM object without image pixels (SOP class {RAW_DATA}), skipped",
        f"{folder / 'preview.png'}: not a DICOM file, skipped",
        f"{folder / 'DICOMDIR'}: not a DICOM file, skipped",
    ])


@pytest.mark.parametrize("name", ["cut after file meta", "cut inside header", "DICM then junk",
                                  "Deflated body that does not inflate",
                                  "MR image without Pixel Data", "cut inside Pixel Data"])
def test_the_series_reader_refuses_a_broken_file_beside_the_series_in_one_line(inputs, fixture_path, tmp_path, name):
    folder = _folder(tmp_path, fixture_path, {"IM0006.dcm": inputs[name]})  # one slice replaced by a broken file
    with pytest.raises(InputError) as e:
        read_series(folder)
    assert str(folder / "IM0006.dcm") in str(e.value) and "\n" not in str(e.value)
    assert "truncated" in str(e.value) or "damaged" in str(e.value)


def test_the_batch_scan_lists_images_and_broken_files_and_leaves_out_the_rest(inputs, tmp_path):
    paths = {name: str(p) for name, p in inputs.items()}
    entries = {e[1]: e for e in scan_files(list(paths.values()))}
    for name, path in paths.items():
        header = EXPECTED[name][1]
        kind = {IMAGE: "image", BROKEN: "unreadable"}.get(header)
        assert (entries[path][0] if path in entries else None) == kind, name
    assert entries[paths["cut after file meta"]][2] == "DICOM header is incomplete (file damaged or truncated)"


def test_the_pacs_upload_sends_part10_files_only_and_a_fetch_stores_part10_bytes_only(inputs, tmp_path):
    from medsr.pacs.client import _is_dicom_file
    from medsr.pacs.transport import TransportError, write_private

    hidden = tmp_path / ".IM0006.dcm"
    shutil.copy(inputs["series file"], hidden)
    uploaded = {name for name, p in inputs.items() if _is_dicom_file(p)}
    assert "series file" in uploaded and "Basic Text SR" in uploaded and "DICM then junk" in uploaded
    assert not uploaded & {"DICOMDIR", "DICOMDIR named, body that does not inflate", "PNG", "text named .dcm",
                           "cut inside preamble"}
    assert not _is_dicom_file(hidden)

    stored, digest = write_private(tmp_path, "a.dcm", inputs["series file"].read_bytes())
    assert stored.read_bytes() == inputs["series file"].read_bytes() and len(digest) == 64
    for name in ("PNG", "cut inside preamble"):
        with pytest.raises(TransportError, match="without a DICOM Part 10 header"):
            write_private(tmp_path, "b.dcm", inputs[name].read_bytes())
    assert not (tmp_path / "b.dcm").exists()
