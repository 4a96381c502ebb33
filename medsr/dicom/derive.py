"""Build a derived MR instance from an original header and restored pixels.

Elements changed (PS3.3; see docs/dicom.md):
- (0008,0018) SOP Instance UID, (0002,0003) Media Storage SOP Instance UID: new.
- (0020,000E) Series Instance UID: new (one per restore); (0020,0011) Series Number + 1000;
  (0008,103E) Series Description gets " [medsr x4 restore]".
- (0008,0008) Image Type: DERIVED\\SECONDARY + the original's later values.
- (0028,2110) Lossy Image Compression "01"; (0028,2112) ratio and (0028,2114) method appended.
- (0008,2111) Derivation Description; (0008,9215) Derivation Code Sequence
  (113085 "Spatial resampling", 113040 "Lossy Compression").
- (0008,2112) Source Image Sequence: the original SOP Class/Instance UID.
- (0018,A001) Contributing Equipment Sequence: medsr as modifying equipment (with the model's name in
  Manufacturer's Model Name and its weights' sha256 in the Contribution Description).
- (0008,0012)/(0008,0013) Instance Creation Date/Time; Pixel Data and the pixel module
  (Rows/Columns unchanged; Smallest/Largest Image Pixel Value recomputed).
Removed: group 0000 command elements, (FFFC,FFFC) padding, Icon Image Sequence.
Kept: Patient, Study, Frame of Reference, geometry (the pixels are on the original grid),
private elements.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from .. import __version__
from ..errors import DicomError

IMPLEMENTATION_VERSION = f"MEDSR_{__version__}"[:16]


def new_series_uid() -> str:
    from pydicom.uid import generate_uid

    return generate_uid()


def _new_uid() -> str:
    from pydicom.uid import generate_uid

    return generate_uid()


@dataclass(frozen=True)
class DerivationInfo:
    series_uid: str
    description: str  # free text, e.g. "medsr area4-v1 x4; model ...; ratio 46.1:1"
    ratio: float  # original pixel bytes / stored pixel bytes
    method_term: str = "MEDSR_SR4"  # Lossy Image Compression Method (no defined term exists)
    series_suffix: str = " [medsr x4 restore]"
    model_name: str = ""  # the super-resolution model that restored the pixels ("" for interpolation)
    model_sha256: str = ""  # its weights' sha256 (Contributing Equipment records both)


def _code(value: str, scheme: str, meaning: str):
    from pydicom.dataset import Dataset

    c = Dataset()
    c.CodeValue = value
    c.CodingSchemeDesignator = scheme
    c.CodeMeaning = meaning
    return c


def _append_multi(ds, keyword: str, value) -> None:
    if keyword in ds and ds[keyword].value not in (None, ""):
        cur = ds[keyword].value
        values = list(cur) if isinstance(cur, (list, tuple)) or hasattr(cur, "__iter__") and not isinstance(cur, str) else [cur]
        values.append(value)
        setattr(ds, keyword, values)
    else:
        setattr(ds, keyword, value)


def _ds_decimal(x: float) -> str:
    s = f"{x:.4f}".rstrip("0").rstrip(".")
    return s[:16]


def derive_instance(original, pixels: np.ndarray, info: DerivationInfo):
    """Return a new pydicom Dataset: ``original``'s header with ``pixels`` as a derived image.

    ``original`` is not modified. ``pixels`` must have the original Rows x Columns and the
    dtype of the stored values.
    """
    ds = _checked_copy(original, pixels)
    sop_class = str(ds.SOPClassUID)
    src_instance = str(ds.SOPInstanceUID)
    now = datetime.now()
    sop_uid = _new_uid()
    ds.SOPInstanceUID = sop_uid
    _mark_derived(ds, info, sop_class, src_instance)
    ds.ContributingEquipmentSequence = _contributing_equipment(ds, info, now)
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S")
    _set_pixels(ds, pixels)
    ds.file_meta = _file_meta(sop_class, sop_uid)
    _check_lengths(ds)
    return ds


def _checked_copy(original, pixels: np.ndarray):
    """A copy of the header, checked to take ``pixels``, without command/padding/icon elements."""
    ds = original.copy()
    missing = [kw for kw in ("SOPClassUID", "SOPInstanceUID", "Rows", "Columns", "BitsAllocated") if kw not in ds]
    if missing:
        raise DicomError(f"the archived header has no {', '.join(missing)}; cannot build a derived instance")
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        if int(ds.BitsAllocated) not in (8, 16):
            raise ValueError("BitsAllocated")
    except (TypeError, ValueError):
        raise DicomError("the archived header's Rows/Columns/Bits Allocated are not usable numbers") from None
    if pixels.shape != (rows, cols):
        raise DicomError(f"restored slice shape {pixels.shape} does not match (0028,0010)/(0028,0011) {rows}x{cols}")
    for tag in [t for t in ds.keys() if t.group in (0x0000, 0x7FE0) or t in (0xFFFCFFFC, 0x00880200)]:
        del ds[tag]
    _drop_wrong_vrs(ds)
    return ds


def _mark_derived(ds, info: DerivationInfo, sop_class: str, src_instance: str) -> None:
    """New series, DERIVED image type, lossy compression, derivation and the source image reference."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds.SeriesInstanceUID = info.series_uid
    try:
        ds.SeriesNumber = int(ds.get("SeriesNumber", 0) or 0) + 1000
    except (TypeError, ValueError):
        ds.SeriesNumber = 1000
    ds.SeriesDescription = (str(ds.get("SeriesDescription", "")) + info.series_suffix)[-64:].strip()
    old_type = list(ds.ImageType) if "ImageType" in ds and ds.ImageType else []
    if isinstance(ds.get("ImageType"), str):
        old_type = [ds.ImageType]
    ds.ImageType = ["DERIVED", "SECONDARY"] + [str(v) for v in old_type[2:]]
    ds.LossyImageCompression = "01"
    _append_multi(ds, "LossyImageCompressionRatio", _ds_decimal(info.ratio))
    _append_multi(ds, "LossyImageCompressionMethod", info.method_term)
    ds.DerivationDescription = info.description[:1024]
    ds.DerivationCodeSequence = Sequence([_code("113085", "DCM", "Spatial resampling"),
                                          _code("113040", "DCM", "Lossy Compression")])
    src = Dataset()
    src.ReferencedSOPClassUID = sop_class
    src.ReferencedSOPInstanceUID = src_instance
    src.PurposeOfReferenceCodeSequence = Sequence([_code("121320", "DCM", "Uncompressed predecessor")])
    ds.SourceImageSequence = Sequence([src])


def _contributing_equipment(ds, info: DerivationInfo, now: datetime):
    """The original's Contributing Equipment Sequence plus medsr as modifying equipment (with the model's
    name and sha256 when a model restored the pixels)."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    eq = Dataset()
    eq.Manufacturer = "medsr"
    if info.model_name:
        eq.ManufacturerModelName = info.model_name[:64]
    eq.SoftwareVersions = __version__
    eq.ContributionDateTime = now.strftime("%Y%m%d%H%M%S")
    text = "Restored from a x4 low-resolution archive by super-resolution"
    if info.model_name:
        text += f" (model {info.model_name}, weights sha256 {info.model_sha256 or 'unknown'})"
    eq.ContributionDescription = text
    eq.PurposeOfReferenceCodeSequence = Sequence([_code("109103", "DCM", "Modifying Equipment")])
    seq = list(ds.ContributingEquipmentSequence) if "ContributingEquipmentSequence" in ds else []
    return Sequence(seq + [eq])


def _set_pixels(ds, pixels: np.ndarray) -> None:
    """Pixel Data in the header's own Bits Allocated / Pixel Representation; Smallest/Largest recomputed."""
    bits_alloc = int(ds.BitsAllocated)
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    want = np.dtype(("i" if signed else "u") + str(bits_alloc // 8)).newbyteorder("<")
    arr = np.ascontiguousarray(pixels.astype(want, copy=False))
    ds.SamplesPerPixel = 1
    if "PlanarConfiguration" in ds:
        del ds.PlanarConfiguration
    for kw in ("SmallestImagePixelValue", "LargestImagePixelValue"):
        if kw in ds:
            del ds[kw]
    if bits_alloc == 16:
        vr = "SS" if signed else "US"
        ds.add_new(0x00280106, vr, int(arr.min()))
        ds.add_new(0x00280107, vr, int(arr.max()))
    ds.PixelData = arr.tobytes()
    ds["PixelData"].VR = "OW" if bits_alloc > 8 else "OB"


def _file_meta(sop_class: str, sop_uid: str):
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    return meta


#: elements this module sets or extends: an original one with a non-standard VR is dropped first
_SET_HERE = ("SOPInstanceUID", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "ImageType",
             "LossyImageCompression", "LossyImageCompressionRatio", "LossyImageCompressionMethod",
             "DerivationDescription", "DerivationCodeSequence", "SourceImageSequence", "ContributingEquipmentSequence",
             "InstanceCreationDate", "InstanceCreationTime", "SamplesPerPixel", "SmallestImagePixelValue",
             "LargestImagePixelValue")


def _check_lengths(ds) -> None:
    """Every value set here fits its VR (PS3.5 6.2); an original's over-long value elsewhere is kept as it was."""
    from pydicom.dataset import Dataset

    from ..io.conformance import overlong_elements

    mine = Dataset()
    for kw in _SET_HERE:
        if kw in ds and kw != "ContributingEquipmentSequence":  # earlier items are the original's
            mine[kw] = ds[kw]
    bad = overlong_elements(mine) + overlong_elements(ds.ContributingEquipmentSequence[-1]) + overlong_elements(ds.file_meta)
    if bad:
        tag, vr, n, limit = bad[0]
        raise DicomError(f"internal: ({tag >> 16:04X},{tag & 0xFFFF:04X}) would hold {n} characters, more than VR {vr} "
                         f"allows ({limit})")


def _drop_wrong_vrs(ds) -> None:
    from pydicom.datadict import dictionary_VR

    for kw in _SET_HERE:
        if kw in ds and ds[kw].VR not in dictionary_VR(kw).split(" or "):
            del ds[kw]


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(text: str, *, max_len: int = 80) -> str:
    """A file name from a DICOM value: no separators, no control characters, no leading dots."""
    name = _UNSAFE.sub("_", str(text)).strip("._-") or "unnamed"
    return name[:max_len]
