"""DICOM headers for one slice of a synthetic series, module by module.

Everything is deterministic: UIDs are hashes of the spec (pydicom's
``generate_uid(entropy_srcs=...)``), dates and times are fixed.
"""

from __future__ import annotations

import struct

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, MRImageStorage, generate_uid

from .spec import SeriesSpec, image_orientation, orientation_vectors, slice_positions

# Identifying values: tests search output for these to prove medsr never leaks them.
PATIENT_NAME = "FIXTURE^PATIENT"
PATIENT_ID = "FIX-0001"
PATIENT_BIRTH_DATE = "19700101"
ACCESSION_NUMBER = "FIXACC0001"
INSTITUTION_NAME = "FIXTURE HOSPITAL"
REFERRING_PHYSICIAN = "FIXTURE^REFERRER"
#: Strings that identify the (fake) patient and must never appear in medsr output.
PHI_MARKERS: tuple[str, ...] = (
    PATIENT_NAME,
    PATIENT_ID,
    ACCESSION_NUMBER,
    INSTITUTION_NAME,
    REFERRING_PHYSICIAN,
)

#: Value of the (0019,xx10) private element, to check private tags survive.
PRIVATE_MARKER = "MEDSR-FIXTURE-PRIVATE"
SIEMENS_MR_CREATOR = "SIEMENS MR HEADER"
SIEMENS_CSA_CREATOR = "SIEMENS CSA HEADER"

STUDY_DATE = "20240115"
STUDY_TIME = "101500"

#: Sequence parameters per contrast, loosely after a Siemens 3T head protocol.
_MR_PROTOCOLS: dict[str, dict] = {
    "T1": {
        "ScanningSequence": ["GR", "IR"],
        "SequenceVariant": ["SK", "SP", "MP"],
        "ScanOptions": "IR",
        "MRAcquisitionType": "3D",
        "SequenceName": "*tfl3d1_16ns",
        "RepetitionTime": "2000",
        "EchoTime": "2.52",
        "InversionTime": "900",
        "EchoTrainLength": "1",
        "FlipAngle": "9",
        "PixelBandwidth": "180",
    },
    "T2": {
        "ScanningSequence": "SE",
        "SequenceVariant": ["SK", "SP", "OSP"],
        "ScanOptions": "SP",
        "MRAcquisitionType": "2D",
        "SequenceName": "*tse2d1_15",
        "RepetitionTime": "6000",
        "EchoTime": "98",
        "EchoTrainLength": "15",
        "FlipAngle": "150",
        "PixelBandwidth": "220",
    },
}


# -- identifiers ----------------------------------------------------------
def _uid(*parts: object) -> UID:
    return generate_uid(entropy_srcs=["medsr-dicom-fixtures", *map(str, parts)])


def study_uid(spec: SeriesSpec) -> UID:
    return _uid("study", PATIENT_ID, spec.study_key)


def frame_of_reference_uid(spec: SeriesSpec) -> UID:
    return _uid("frame-of-reference", PATIENT_ID, spec.study_key)


def series_uid(spec: SeriesSpec) -> UID:
    return _uid("series", repr(spec))


def instance_uid(spec: SeriesSpec, index: int) -> UID:
    return _uid("instance", repr(spec), index)


def sop_class(spec: SeriesSpec) -> UID:
    return CTImageStorage if spec.modality == "CT" else MRImageStorage


def _fmt(value: float) -> str:
    """A DS string (at most 16 characters)."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _time(seconds_after_study: float) -> str:
    base = 10 * 3600 + 15 * 60 + seconds_after_study
    h, rem = divmod(base, 3600)
    m, s = divmod(rem, 60)
    return f"{int(h):02d}{int(m):02d}{s:09.6f}"


# -- modules ----------------------------------------------------------------
def file_meta(spec: SeriesSpec, index: int) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class(spec)
    meta.MediaStorageSOPInstanceUID = instance_uid(spec, index)
    meta.TransferSyntaxUID = spec.transfer_syntax_uid
    meta.SourceApplicationEntityTitle = "MEDSR_FIXTURES"
    return meta


def _sop_common(ds: Dataset, spec: SeriesSpec, index: int) -> None:
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.InstanceCreationDate = STUDY_DATE
    ds.InstanceCreationTime = _time(600 + spec.series_number * 300 + index)
    ds.SOPClassUID = sop_class(spec)
    ds.SOPInstanceUID = instance_uid(spec, index)


def _patient(ds: Dataset) -> None:
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = PATIENT_BIRTH_DATE
    ds.PatientSex = "O"
    ds.PatientAge = "054Y"
    ds.PatientWeight = "70"


def _study(ds: Dataset, spec: SeriesSpec) -> None:
    ds.StudyInstanceUID = study_uid(spec)
    ds.StudyDate = STUDY_DATE
    ds.StudyTime = STUDY_TIME
    ds.ReferringPhysicianName = REFERRING_PHYSICIAN
    ds.StudyID = "1"
    ds.AccessionNumber = ACCESSION_NUMBER
    ds.StudyDescription = "HEAD^FIXTURE"


def _series(ds: Dataset, spec: SeriesSpec) -> None:
    ds.Modality = spec.modality
    ds.SeriesInstanceUID = series_uid(spec)
    ds.SeriesNumber = spec.series_number
    ds.SeriesDate = STUDY_DATE
    ds.SeriesTime = _time(spec.series_number * 300)
    ds.SeriesDescription = spec.series_description
    ds.ProtocolName = spec.series_description
    ds.BodyPartExamined = "HEAD"
    ds.PatientPosition = "HFS"


def _equipment(ds: Dataset, spec: SeriesSpec) -> None:
    ds.Manufacturer = "SIEMENS"
    ds.InstitutionName = INSTITUTION_NAME
    ds.StationName = "FIXSTATION"
    ds.ManufacturerModelName = "Skyra" if spec.modality == "MR" else "SOMATOM Force"
    ds.DeviceSerialNumber = "00000"
    ds.SoftwareVersions = "syngo MR E11" if spec.modality == "MR" else "syngo CT VB20"


def _frame_of_reference(ds: Dataset, spec: SeriesSpec) -> None:
    ds.FrameOfReferenceUID = frame_of_reference_uid(spec)
    ds.PositionReferenceIndicator = ""


def _general_image(ds: Dataset, spec: SeriesSpec, index: int, instance_number: int) -> None:
    ds.InstanceNumber = instance_number
    ds.AcquisitionNumber = 1
    ds.ContentDate = STUDY_DATE
    ds.ContentTime = _time(spec.series_number * 300 + 120)
    ds.AcquisitionDate = STUDY_DATE
    ds.AcquisitionTime = _time(spec.series_number * 300 + 2.5 * index)
    if spec.modality == "CT":
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    else:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.BurnedInAnnotation = "NO"


def _image_plane(ds: Dataset, spec: SeriesSpec, index: int) -> None:
    position = slice_positions(spec)[index]
    _, _, normal = orientation_vectors(spec.orientation)
    ds.PixelSpacing = [_fmt(v) for v in spec.pixel_spacing_mm]
    ds.ImageOrientationPatient = [_fmt(v) for v in image_orientation(spec)]
    ds.ImagePositionPatient = [_fmt(v) for v in position]
    ds.SliceThickness = _fmt(spec.slice_thickness_mm)
    ds.SpacingBetweenSlices = _fmt(spec.spacing_between_slices_mm)
    ds.SliceLocation = _fmt(float(position @ normal))


def _image_pixel(ds: Dataset, spec: SeriesSpec) -> None:
    ds.SamplesPerPixel = spec.samples_per_pixel
    if spec.samples_per_pixel == 3:
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
    else:
        ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = spec.rows
    ds.Columns = spec.cols
    ds.BitsAllocated = spec.bits_allocated
    ds.BitsStored = spec.bits_stored
    ds.HighBit = spec.bits_stored - 1
    ds.PixelRepresentation = 1 if spec.signed else 0


def _rescale_and_window(ds: Dataset, spec: SeriesSpec) -> None:
    if spec.slope is not None or spec.intercept is not None:
        ds.RescaleIntercept = _fmt(spec.intercept or 0.0)
        ds.RescaleSlope = _fmt(1.0 if spec.slope is None else spec.slope)
        if spec.modality == "CT":
            ds.RescaleType = "HU"
    if spec.samples_per_pixel == 1:
        slope = 1.0 if spec.slope is None else spec.slope
        intercept = spec.intercept or 0.0
        if spec.modality == "CT":
            centre, width = 40.0, 80.0
        else:  # centre on brain tissue, in rescaled units
            centre = (0.6 * spec.intensity_scale + spec.stored_offset) * slope + intercept
            width = 1.2 * spec.intensity_scale * abs(slope)
        ds.WindowCenter = _fmt(centre)
        ds.WindowWidth = _fmt(width)


def _mr_image(ds: Dataset, spec: SeriesSpec) -> None:
    protocol = _MR_PROTOCOLS[spec.contrast]
    for keyword, value in protocol.items():
        setattr(ds, keyword, value)
    ds.AngioFlag = "N"
    ds.NumberOfAverages = "1"
    ds.ImagingFrequency = "123.2"
    ds.ImagedNucleus = "1H"
    ds.EchoNumbers = "1"
    ds.MagneticFieldStrength = "3"
    ds.NumberOfPhaseEncodingSteps = str(spec.rows)
    ds.PercentSampling = "100"
    ds.PercentPhaseFieldOfView = "100"
    ds.ReceiveCoilName = "Head_32"
    ds.TransmitCoilName = "Body"
    ds.AcquisitionMatrix = [0, spec.cols, spec.rows, 0]
    ds.InPlanePhaseEncodingDirection = "COL"
    ds.VariableFlipAngleFlag = "N"
    ds.SAR = "0.08"
    ds.dBdt = "0"


def _ct_image(ds: Dataset) -> None:
    ds.KVP = "120"
    ds.DataCollectionDiameter = "500"
    ds.ReconstructionDiameter = "220"
    ds.ConvolutionKernel = "Hr38"
    ds.ExposureTime = "1000"
    ds.XRayTubeCurrent = "250"


def csa_header(entries: dict[str, tuple[str, list[str]]]) -> bytes:
    """Encode a Siemens CSA2 ("SV10") header: name -> (VR, values)."""
    out = bytearray(b"SV10\x04\x03\x02\x01" + struct.pack("<2I", len(entries), 77))
    for name, (vr, values) in entries.items():
        out += struct.pack("<64si4s3i", name.encode(), len(values), vr.encode(), 0, len(values), 77)
        for value in values:
            raw = value.encode() + b"\x00"
            out += struct.pack("<4i", len(raw), len(raw), 77, len(raw))
            out += raw + b"\x00" * (-len(raw) % 4)
    return bytes(out)


def _private_siemens(ds: Dataset, spec: SeriesSpec, index: int) -> None:
    """A (0019) "SIEMENS MR HEADER" and a (0029) "SIEMENS CSA HEADER" block."""
    _, _, normal = orientation_vectors(spec.orientation)
    position = slice_positions(spec)[index]
    mr = ds.private_block(0x0019, SIEMENS_MR_CREATOR, create=True)
    mr.add_new(0x08, "CS", "IMAGE NUM 4")
    mr.add_new(0x09, "LO", "1.0")
    mr.add_new(0x0B, "DS", "2500")
    mr.add_new(0x10, "LO", PRIVATE_MARKER)
    mr.add_new(0x15, "FD", [float(v) for v in position])
    csa = ds.private_block(0x0029, SIEMENS_CSA_CREATOR, create=True)
    csa.add_new(0x08, "CS", "IMAGE NUM 4")
    csa.add_new(0x09, "LO", STUDY_DATE)
    entries = {
        "EchoLinePosition": ("IS", [str(spec.rows // 2)]),
        "SliceNormalVector": ("FD", [f"{v:.8f}" for v in normal]),
        "ImaCoilString": ("LO", ["HE1-4"]),
        "BandwidthPerPixelPhaseEncode": ("FD", ["20.1600000"]),
        "PhaseEncodingDirectionPositive": ("IS", ["1"]),
    }
    csa.add_new(0x10, "OB", csa_header(entries))


def common_modules(ds: Dataset, spec: SeriesSpec) -> None:
    """Patient, General Study, General Series, Equipment and Frame of Reference."""
    _patient(ds)
    _study(ds, spec)
    _series(ds, spec)
    _equipment(ds, spec)
    _frame_of_reference(ds, spec)


def slice_dataset(spec: SeriesSpec, index: int, instance_number: int | None = None) -> Dataset:
    """The full header (no Pixel Data) of slice ``index`` (spatial order)."""
    ds = Dataset()
    ds.file_meta = file_meta(spec, index)
    _sop_common(ds, spec, index)
    common_modules(ds, spec)
    _general_image(ds, spec, index, index + 1 if instance_number is None else instance_number)
    _image_plane(ds, spec, index)
    _image_pixel(ds, spec)
    _rescale_and_window(ds, spec)
    if spec.modality == "MR":
        _mr_image(ds, spec)
        _private_siemens(ds, spec, index)
    else:
        _ct_image(ds)
    return ds
