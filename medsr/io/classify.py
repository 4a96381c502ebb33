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
- ``not-dicom``: no Part 10 magic (notes, PNGs, a text file named ``.dcm``), or a file named DICOMDIR
  that pydicom cannot read: skipped.

The header-only scan and the full read ask with ``header_only`` and differ where they must:

- the scan never sees Pixel Data, so "holds an image" means Rows and Series Instance UID are in the
  header; the full read asks whether Pixel Data (or Float Pixel Data) is there. In both, an object
  that should hold an image and does not (an image SOP class, or none at all: a file cut off after
  its file meta) is broken, not skipped; a file cut inside its Pixel Data passes both (the series
  reader checks the pixel bytes it decodes);
- their one-line reasons are worded for what each read ("DICOM header not readable" / "DICOM header
  is incomplete" from the scan, "unreadable DICOM" / "DICOM image without pixel data" from the full read).

The SOP class is the data set's SOP Class UID, else the file meta's Media Storage SOP Class UID.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

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

    kind: Literal["image", "non-image", "broken", "not-dicom"]
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

    Without the Part 10 magic it is not DICOM (pydicom refuses such files before reading anything), and
    a file named DICOMDIR holds no image either way; any other file is broken.
    """
    from pydicom.errors import InvalidDicomError

    if not has_part10_magic(head) or is_dicomdir_name(name):
        return _NOT_DICOM
    if header_only:
        return Verdict(BROKEN, f"DICOM header not readable ({type(error).__name__})")
    if isinstance(error, InvalidDicomError):
        return Verdict(BROKEN, "not a readable DICOM file")
    return Verdict(BROKEN, f"unreadable DICOM ({type(error).__name__})")


def _sop_class(ds: Dataset) -> str:
    """The SOP Class UID of the data set, else the Media Storage SOP Class UID of its file meta."""
    sop_class = str(ds.get("SOPClassUID", "") or "")
    if not sop_class:
        meta = getattr(ds, "file_meta", None)
        sop_class = str(meta.get("MediaStorageSOPClassUID", "") or "") if meta else ""
    return sop_class


def _non_image(sop_class: str) -> Verdict:
    return Verdict(NON_IMAGE, f"DICOM object without image pixels (SOP class {_shown_class(sop_class)})", sop_class)


def classify_dataset(ds: Dataset, *, header_only: bool) -> Verdict:
    """The verdict on a data set pydicom read: an image, an object without one, or an image cut short.

    ``header_only``: ``ds`` was read with ``stop_before_pixels`` (and maybe ``specific_tags`` that
    include SOPClassUID, Rows and SeriesInstanceUID). An object that should hold an image (an image
    SOP class, or no SOP class at all: a file cut off after its file meta) but does not is broken.
    Reading an element may raise for a damaged header; the caller words that as its own one-line error.
    """
    sop_class = _sop_class(ds)
    if sop_class in NON_IMAGE_SOP_CLASSES:
        return _non_image(sop_class)
    if header_only:
        has_image = "Rows" in ds and "SeriesInstanceUID" in ds
    else:
        has_image = "PixelData" in ds or "FloatPixelData" in ds
    if has_image:
        return Verdict(IMAGE, "", sop_class)
    if header_only and (is_image_sop_class(sop_class) or not sop_class):
        return Verdict(BROKEN, "DICOM header is incomplete (file damaged or truncated)", sop_class)
    if is_image_sop_class(sop_class):
        return Verdict(BROKEN, "DICOM image without pixel data", sop_class)
    if not sop_class:
        return Verdict(BROKEN, "DICOM object without SOP class or pixel data", sop_class)
    return _non_image(sop_class)


def classify_file(path: str | Path, *, header_only: bool, data: bytes | None = None,
                  tags: list[str] | None = None) -> tuple[Verdict, Dataset | None]:
    """Read one file with pydicom and judge it -> ``(Verdict, data set or None)``.

    The full read (``header_only=False``) reads ``data`` (the file's bytes, when the caller already
    has them) or ``path``; the header scan (``header_only=True``) reads ``path`` up to the pixels, only
    ``tags`` when given. A file pydicom cannot read is judged by ``classify_read_error``; reading the
    first bytes of ``path`` may raise OSError, and judging a damaged element may raise what pydicom
    raises (the caller words both).
    """
    import pydicom

    head = data[:PART10_PREFIX_BYTES] if data is not None else read_part10_head(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(BytesIO(data) if data is not None else path, force=False,
                                 stop_before_pixels=header_only, specific_tags=tags)
    except Exception as e:  # InvalidDicomError (no DICM), truncated or malformed
        return classify_read_error(Path(path).name, head, e, header_only=header_only), None
    if data is not None:  # read whole (no deferred elements): pydicom's FileDataset.buffer would keep every
        ds.buffer = None  # file's bytes alive beside its elements, through every copy of the header (1x the series)
    return classify_dataset(ds, header_only=header_only), ds
