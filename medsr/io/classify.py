"""Is this a DICOM file, and what does it hold: the one place medsr decides.

Every reader asks here: the series reader (``read_dicom_files``, a full read), the batch header scan
(``medsr.batch.scan.scan_files``, ``stop_before_pixels``), the PACS upload and fetch (the Part 10 magic
of a file or of received bytes) and the archive's header store (splitting off the Part 10 prefix).

A file is a DICOM Part 10 file when its 128-byte preamble is followed by ``DICM``. What medsr does
with a file is one of four verdicts (``Verdict.kind``):

- ``image``: an image object, to be read;
- ``non-image``: a DICOM object without an image (DICOMDIR, Raw Data, a report): skipped with a warning;
- ``broken``: a DICOM file that cannot be read or is cut short; ``reason`` is the one-line problem
  (never a header value, so never a patient's name);
- ``not-dicom``: no Part 10 magic (notes, PNGs, a text file named ``.dcm``): skipped.

The header-only scan and the full read ask with ``header_only`` and differ where they must:

- the scan never sees Pixel Data, so "holds an image" means Rows and Series Instance UID are in the
  header (an image, or an object of unknown class, without them was cut short); the full read asks
  whether Pixel Data (or Float Pixel Data) is there, and an image class without it was cut short;
- the scan reads only a few tags, so it takes the SOP class from the file meta when the data set has none;
- their one-line reasons are worded for what each read ("DICOM header not readable" from the scan,
  "unreadable DICOM" from the full read) and a file named ``DICOMDIR`` that pydicom refuses is
  skipped by the full read.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

#: the Part 10 file magic: 128 bytes of preamble, then these 4 bytes
PART10_MAGIC = b"DICM"
PART10_PREFIX_BYTES = 132
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage
RAW_DATA_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66"  # Raw Data Storage
#: SOP classes that never hold an image, whatever elements they carry
NON_IMAGE_SOP_CLASSES = frozenset({DICOMDIR_SOP_CLASS, RAW_DATA_SOP_CLASS})

IMAGE, NON_IMAGE, BROKEN, NOT_DICOM = "image", "non-image", "broken", "not-dicom"

_UID_RE = re.compile(r"^[0-9.]{1,64}$")


@dataclass(frozen=True)
class Verdict:
    """What a file is to medsr: ``kind`` (image, non-image, broken, not-dicom), ``reason`` (one line, for
    broken, non-image and not-dicom files; no header values but the SOP class UID) and ``sop_class``."""

    kind: str
    reason: str = ""
    sop_class: str = ""

    @property
    def is_image(self) -> bool:
        return self.kind == IMAGE

    @property
    def is_broken(self) -> bool:
        return self.kind == BROKEN

    @property
    def skipped(self) -> bool:
        """Not DICOM, or a DICOM object without an image: left out of a series with a warning, not an error."""
        return self.kind in (NON_IMAGE, NOT_DICOM)


_NOT_DICOM = Verdict(NOT_DICOM, "not a DICOM file")


def has_part10_magic(data: bytes) -> bool:
    """True when ``data`` (a file's first bytes or all of it) starts like a Part 10 file (preamble + DICM)."""
    return len(data) >= PART10_PREFIX_BYTES and data[128:PART10_PREFIX_BYTES] == PART10_MAGIC


def read_part10_head(path: str | Path) -> bytes:
    """The first 132 bytes of ``path`` (fewer for a shorter file), enough for ``has_part10_magic``.
    Raises OSError when the file cannot be read."""
    with open(path, "rb") as fh:
        return fh.read(PART10_PREFIX_BYTES)


def is_part10_file(path: str | Path) -> bool:
    """True when the file at ``path`` starts with the Part 10 preamble + DICM; False when it does not or
    cannot be read."""
    try:
        return has_part10_magic(read_part10_head(path))
    except OSError:
        return False


def is_dicomdir_name(name: str) -> bool:
    """A file named DICOMDIR (any case): a media directory, never an image."""
    return name.upper() == "DICOMDIR"


def is_image_sop_class(sop_class: str) -> bool:
    """An SOP class pydicom knows as an image storage class (MR, CT, Enhanced MR, Secondary Capture, ...)."""
    from pydicom.uid import UID

    if not sop_class:
        return False
    try:
        return "Image Storage" in UID(sop_class).name
    except Exception:  # noqa: BLE001 - a malformed UID is not a known image class
        return False


def _shown_class(sop_class: str) -> str:
    if not sop_class:
        return "unknown"
    return sop_class if _UID_RE.match(sop_class) else "(malformed value)"


def classify_read_error(name: str, head: bytes, error: BaseException, *, header_only: bool) -> Verdict:
    """The verdict on a file pydicom could not read (``error``), from its name and first bytes ``head``.

    Without the Part 10 magic it is not DICOM (pydicom refuses such files before reading anything);
    with it, the file is broken, except a file named DICOMDIR that the full read skips.
    """
    from pydicom.errors import InvalidDicomError

    if not has_part10_magic(head):
        return _NOT_DICOM
    if header_only:
        return Verdict(BROKEN, f"DICOM header not readable ({type(error).__name__})")
    if isinstance(error, InvalidDicomError):
        return _NOT_DICOM if is_dicomdir_name(name) else Verdict(BROKEN, "not a readable DICOM file")
    return Verdict(BROKEN, f"unreadable DICOM ({type(error).__name__})")


def _sop_class(ds, header_only: bool) -> str:
    sop_class = str(ds.get("SOPClassUID", "") or "")
    if not sop_class and header_only:
        meta = getattr(ds, "file_meta", None)
        sop_class = str(meta.get("MediaStorageSOPClassUID", "") or "") if meta else ""
    return sop_class


def classify_dataset(ds, *, header_only: bool) -> Verdict:
    """The verdict on a data set pydicom read: an image, an object without one, or an image cut short.

    ``header_only``: ``ds`` was read with ``stop_before_pixels`` (and maybe ``specific_tags`` that
    include SOPClassUID, Rows and SeriesInstanceUID). Reading an element may raise for a damaged
    header; the caller turns that into its own one-line error.
    """
    sop_class = _sop_class(ds, header_only)
    if sop_class in NON_IMAGE_SOP_CLASSES:
        return Verdict(NON_IMAGE, f"DICOM object without image pixels (SOP class {_shown_class(sop_class)})",
                       sop_class)
    if header_only:
        has_image = "Rows" in ds and "SeriesInstanceUID" in ds
        cut_short = is_image_sop_class(sop_class) or not sop_class
        why = "DICOM header is incomplete (file damaged or truncated)"
    else:
        has_image = "PixelData" in ds or "FloatPixelData" in ds
        cut_short = is_image_sop_class(sop_class)
        why = "DICOM image without pixel data"
    if has_image:
        return Verdict(IMAGE, "", sop_class)
    if cut_short:
        return Verdict(BROKEN, why, sop_class)
    return Verdict(NON_IMAGE, f"DICOM object without image pixels (SOP class {_shown_class(sop_class)})", sop_class)
