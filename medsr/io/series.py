"""Read one MR series from a DICOM folder (recursive) or a NIfTI file into a ``Series``.

Rules (each failure is a one-line ``InputError``/``SeriesError`` naming the path):
- non-DICOM files (notes, DICOMDIR, non-image objects such as Raw Data Storage) are
  skipped with a warning, damaged DICOM files are an error (``classify.py`` decides which is which);
- exactly one image series, else the error lists the series found and
  ``series_uid`` picks one;
- slices are sorted by position along the slice normal, falling back to Instance Number;
- MR only (``allow_modalities`` widens it), one sample per pixel, no multi-frame.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..errors import InputError, SeriesError
from .classify import classify_file

log = logging.getLogger("medsr")

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
MAX_PIXELS_PER_SLICE = 4096 * 4096
MAX_SLICES = 10000
#: a whole series (slices x rows x cols): 2^31 pixels = 4 GiB at 16 bits; refused before decoding
MAX_SERIES_PIXELS = 1 << 31
#: largest |Rescale Slope| and |Rescale Intercept| (rescaled values and their squares stay finite)
MAX_RESCALE = 1e12
#: smallest slice side: the audit's SSIM window is 7x7 (docs/audit.md)
MIN_SIDE = 8


@dataclass(frozen=True)
class Series:
    """One image series, pixels as stored (before Rescale Slope/Intercept).

    ``pixels`` is (n, rows, cols) in the stored dtype; ``slope``/``intercept`` are per
    slice; ``headers`` are the original datasets without Pixel Data (DICOM input), ``header_prefixes``
    their Part 10 prefixes and ``header_elements`` their elements encoded as the archive stores them
    (``medsr.io.header_elements``; ``header_bytes`` joins the two, as an archive gives a header back).
    """

    pixels: np.ndarray
    slope: np.ndarray
    intercept: np.ndarray
    kind: str  # "dicom" or "nifti"
    source: Path
    source_files: tuple[Path, ...]
    source_sha256: tuple[str, ...]
    source_bytes: tuple[int, ...]
    series_uid: str = ""
    modality: str = "MR"
    bits_stored: int = 16
    pixel_representation: int = 0
    headers: tuple = ()
    header_prefixes: tuple[bytes, ...] = ()
    header_elements: tuple[tuple[bytes, ...], ...] = ()
    positions: np.ndarray | None = None  # (n, 3) Image Position (Patient)
    orientation: tuple[float, ...] | None = None  # 6 direction cosines
    pixel_spacing: tuple[float, float] | None = None
    affine: np.ndarray | None = None  # NIfTI input: the 4x4 affine
    nifti_header: bytes = b""
    warnings: tuple[str, ...] = field(default=())

    @property
    def n_slices(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.pixels.shape[1]), int(self.pixels.shape[2])

    @property
    def header_bytes(self) -> tuple[bytes, ...]:
        """Each header as the Part 10 bytes (no pixel data) an archive of this series gives back: its prefix
        and its element encodings (``medsr.archive.headers.header_part10_bytes``)."""
        return tuple(p + b"".join(e) for p, e in zip(self.header_prefixes, self.header_elements))

    def rescaled(self) -> np.ndarray:
        """Pixels in rescaled units (slope * stored + intercept), float64."""
        return self.pixels.astype(np.float64) * self.slope[:, None, None] + self.intercept[:, None, None]

    @property
    def value_range(self) -> tuple[int, int]:
        """The range the stored integers may take (from Bits Stored and Pixel Representation)."""
        if not np.issubdtype(self.pixels.dtype, np.integer):
            return float(self.pixels.min()), float(self.pixels.max())
        b = self.bits_stored
        if self.pixel_representation == 1:
            return -(1 << (b - 1)), (1 << (b - 1)) - 1
        return 0, (1 << b) - 1

    @property
    def original_file_bytes(self) -> int:
        return int(sum(self.source_bytes))

    @property
    def original_pixel_bytes(self) -> int:
        return int(self.pixels.nbytes)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # (Float / Double Float) Pixel Data


class _FileDigest(NamedTuple):
    """What the read keeps of a file's bytes: its sha256 (provenance, duplicate copies) and size."""
    sha256: str
    size: int


def _malformed(f: Path, e: BaseException) -> InputError:
    """A one-line InputError for a header element pydicom could not decode.

    pydicom's messages may quote element values (a patient's name): only the exception
    type and the tag, when the message names one, are kept.
    """
    m = re.search(r"\(([0-9A-Fa-f]{4}),\s*([0-9A-Fa-f]{4})\)", str(e))
    where = f" in {_tag_name(int(m.group(1) + m.group(2), 16))}" if m else ""
    return InputError(f"malformed DICOM header: an element cannot be decoded ({type(e).__name__}{where}); "
                      "the file is damaged or not standard", path=f)


@contextlib.contextmanager
def _header_guard(f: Path):
    """Turn any error from reading header elements of ``f`` (not a MedsrError) into one InputError line."""
    from ..errors import MedsrError

    try:
        yield
    except MedsrError:
        raise
    except Exception as e:  # pydicom: NotImplementedError (unknown VR), BytesLengthException, ValueError, ...
        raise _malformed(f, e) from None


def _decode_all(ds) -> None:
    """Decode every element (recursively) so a malformed one fails here, naming the file."""
    ds.walk(lambda _ds, _elem: None)


def _pixel_layout(ds) -> tuple[int, int, int]:
    alloc = int(ds.BitsAllocated)
    stored = ds.get("BitsStored", alloc)
    return alloc, int(stored if stored not in (None, "") else alloc), int(ds.get("PixelRepresentation", 0) or 0)


def _instance_number(ds) -> int:
    try:
        return int(ds.get("InstanceNumber", 0) or 0)
    except (TypeError, ValueError, OverflowError):
        return 0


def _rescale(ds, f: Path) -> tuple[float, float]:
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    if not (np.isfinite(slope) and np.isfinite(intercept)) or max(abs(slope), abs(intercept)) > MAX_RESCALE:
        raise InputError(f"{_tag_name(0x00281053)} / {_tag_name(0x00281052)} are not finite numbers of at most "
                         f"{MAX_RESCALE:g}", path=f)
    return slope, intercept


_UID_RE = re.compile(r"^\(no Series Instance UID\)$|^[0-9.]{1,64}$")
_CS_RE = re.compile(r"^[A-Z0-9 _\\]{0,64}$")
_TEXT_RE = re.compile(r"^[\x20-\x7e]{0,64}$")


def _shown(value, pattern) -> str:
    """A header value for an error message, or a placeholder when it is not what it should be
    (a damaged header can run into the next elements, e.g. the patient's name)."""
    text = str(value)
    return text if pattern.match(text) else "(malformed value)"


def _tag_name(tag: int) -> str:
    from pydicom.datadict import keyword_for_tag

    g, e = tag >> 16, tag & 0xFFFF
    return f"({g:04X},{e:04X}) '{keyword_for_tag(tag) or 'private'}'"


def read_series(path: str | Path, *, series_uid: str | None = None,
                allow_modalities: tuple[str, ...] = ("MR",)) -> Series:
    """Read a DICOM folder (recursively) or a ``.nii``/``.nii.gz`` file into a Series."""
    p = Path(path)
    if not p.exists():
        raise InputError("no such file or folder", path=p)
    if p.is_file() and (p.name.endswith(".nii") or p.name.endswith(".nii.gz")):
        return _read_nifti(p)
    if p.is_file():
        files = [p]
    else:
        files = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
    if not files:
        raise InputError("folder is empty: no DICOM files to read", path=p)
    from .conformance import quiet_values

    with quiet_values():  # over-long values are reported once per series by tag (conformance.py), not by pydicom
        return read_dicom_files(p, files, series_uid, tuple(m.upper() for m in allow_modalities))


def read_dicom_files(root: Path, files: list[Path], series_uid: str | None,
                     allow: tuple[str, ...]) -> Series:
    """Read exactly ``files`` (DICOM, found under ``root``) into a Series: one series, modality in ``allow``.

    ``read_series`` on a folder reads every file below it; the batch runner reads one series' files with this.
    """
    skipped: list[str] = []
    broken: list[tuple[Path, str]] = []
    groups: dict[str, list[tuple[Path, _FileDigest, object]]] = {}
    descriptions: dict[str, str] = {}
    for f in files:
        try:
            raw = f.read_bytes()
        except OSError as e:
            raise InputError(f"cannot read file: {e.strerror}", path=f) from None
        try:
            verdict, ds = classify_file(f, header_only=False, data=raw)
            if verdict.skipped:
                skipped.append(f"{f}: {verdict.reason}, skipped")
                continue
            if verdict.is_broken:
                broken.append((f, verdict.reason))
                continue
            uid = str(ds.get("SeriesInstanceUID", "")) or "(no Series Instance UID)"
            description = str(ds.get("SeriesDescription", ""))
        except Exception as e:  # an element pydicom cannot decode
            broken.append((f, str(_malformed(f, e)).split(": ", 1)[-1]))
            continue
        groups.setdefault(uid, []).append((f, _FileDigest(_sha256(raw), len(raw)), ds))  # not the bytes: 1x volume
        descriptions.setdefault(uid, description)
    for s in skipped:
        log.warning(s)
    if not groups:
        if broken:
            f, why = broken[0]
            more = f" (and {len(broken) - 1} more)" if len(broken) > 1 else ""
            raise InputError(f"{why}{more}; no readable DICOM image found", path=f)
        raise InputError("no DICOM image files found (only non-DICOM or non-image files)", path=root)
    if broken:
        f, why = broken[0]
        raise InputError(f"{why}: file is damaged or truncated; remove it or fix it and retry"
                         if "malformed" not in why else why, path=f)
    members, duplicates = _drop_duplicate_instances(_pick_series(root, groups, descriptions, series_uid))
    for d in duplicates:
        log.warning(d)
    series = _assemble(root, members, allow, tuple(skipped + duplicates))
    del members, groups
    _release_free_heap()
    return series


def _release_free_heap() -> None:
    """Give the pages of freed memory back to the OS (glibc's ``malloc_trim``; elsewhere nothing): the files' pixel
    data were freed slice by slice, but as ~0.5 MiB blocks between the headers' small objects, so without this
    the process keeps ~1x the series in freed heap for the rest of an archive (docs/guarantees.md). Dask's
    workers do the same for their unmanaged memory."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl): freed memory stays with the process, nothing breaks
        pass


def _pick_series(root: Path, groups: dict, descriptions: dict[str, str], series_uid: str | None) -> list:
    """The files of the one series asked for (``series_uid``), or of the only series found."""
    if series_uid is not None:
        if series_uid not in groups:
            raise SeriesError(f"series {_shown(series_uid, _UID_RE)} not found; series present: "
                              f"{', '.join(_shown(u, _UID_RE) for u in sorted(groups))}", path=root)
        return groups[series_uid]
    if len(groups) > 1:
        listing = "; ".join(f"{_shown(u, _UID_RE)} ({len(v)} files"
                            f"{', ' + _shown(descriptions[u], _TEXT_RE) if descriptions[u] else ''})"
                            for u, v in sorted(groups.items()))
        raise SeriesError(f"{len(groups)} series found, pick one with --series-uid: {listing}", path=root)
    return next(iter(groups.values()))


def _drop_duplicate_instances(members):
    """One instance stored twice (same SOP Instance UID) -> (members read once, warnings).

    Identical bytes under two file names (a copy) are read once, with a warning naming both
    files; the same SOP Instance UID with different bytes is a one-line ``SeriesError`` naming
    both, since medsr cannot tell which one is the instance.
    """
    first: dict[str, tuple[Path, _FileDigest]] = {}
    kept, notes = [], []
    for f, digest, ds in members:
        _check_vrs(f, ds)  # a non-standard VR is a one-line error before the UID is compared
        try:
            uid = str(ds.get("SOPInstanceUID", "") or "")
        except Exception as e:  # a value pydicom cannot convert (e.g. an odd length for its VR)
            raise InputError(f"{_tag_name(0x00080018)} cannot be read ({type(e).__name__}): the file is not "
                             "standard", path=f) from None
        if uid and uid in first:
            other, other_digest = first[uid]
            shown = _shown(uid, _UID_RE)
            if digest != other_digest:
                raise SeriesError(f"{other} and {f} have the same SOP Instance UID {shown} but different content; "
                                  "keep the right one and retry")
            notes.append(f"{f}: a copy of {other} (same SOP Instance UID {shown}, identical bytes), read once")
            continue
        if uid:
            first[uid] = (f, digest)
        kept.append((f, digest, ds))
    return kept, notes


def _check_image(f: Path, ds, allow: tuple[str, ...]) -> None:
    modality = str(ds.get("Modality", "")).upper()
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class == ENHANCED_MR_STORAGE or int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise SeriesError("multi-frame (Enhanced MR) objects are not supported; convert to classic MR "
                          "single-frame images first (e.g. dcmtk/emf2sf or dcm2niix to NIfTI)", path=f)
    if modality not in allow:
        shown = _shown(modality, _CS_RE) if modality else "missing"
        raise SeriesError(f"modality {shown} is not supported (medsr archives MR; "
                          f"--allow-modality {modality if shown == modality else 'XX'} overrides this at your "
                          "own risk)", path=f)
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if spp != 1 or not photometric.startswith("MONOCHROME"):
        raise SeriesError(f"colour images are not supported ({_tag_name(0x00280002)} = {spp}, "
                          f"{_tag_name(0x00280004)} = {_shown(photometric, _CS_RE)})", path=f)
    for tag, kw in ((0x00280010, "Rows"), (0x00280011, "Columns"), (0x00280100, "BitsAllocated"),
                    (0x00080016, "SOPClassUID"), (0x00080018, "SOPInstanceUID")):
        if kw not in ds or ds[kw].value in (None, ""):
            raise InputError(f"missing {_tag_name(tag)}", path=f)
    _check_vrs(f, ds)
    try:
        rows, cols, alloc = int(ds.Rows), int(ds.Columns), int(ds.BitsAllocated)
    except (TypeError, ValueError):
        raise InputError(f"{_tag_name(0x00280010)}/{_tag_name(0x00280011)}/{_tag_name(0x00280100)} are not "
                         "single numbers", path=f) from None
    if rows < MIN_SIDE or cols < MIN_SIDE or rows * cols > MAX_PIXELS_PER_SLICE:
        raise InputError(f"unsupported image size {rows}x{cols} (must be {MIN_SIDE}x{MIN_SIDE} .. "
                         f"{MAX_PIXELS_PER_SLICE} pixels)", path=f)
    if alloc not in (8, 16):
        raise InputError(f"{_tag_name(0x00280100)} = {alloc} is not supported (8 or 16)", path=f)
    bits_stored = ds.get("BitsStored", alloc)
    try:
        bits_stored = int(bits_stored if bits_stored not in (None, "") else alloc)
    except (TypeError, ValueError):
        raise InputError(f"{_tag_name(0x00280101)} is not a number", path=f) from None
    if not 1 <= bits_stored <= alloc:
        raise InputError(f"{_tag_name(0x00280101)} = {bits_stored} does not fit {_tag_name(0x00280100)} = {alloc}",
                         path=f)
    if int(ds.get("PixelRepresentation", 0) or 0) not in (0, 1):
        raise InputError(f"{_tag_name(0x00280103)} must be 0 or 1", path=f)


#: elements medsr reads or rewrites: each must have its standard VR (else the file is refused, naming it)
_CHECKED_VRS = ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "Rows", "Columns",
                "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "SamplesPerPixel",
                "PhotometricInterpretation", "RescaleSlope", "RescaleIntercept", "ImagePositionPatient",
                "ImageOrientationPatient", "PixelSpacing", "InstanceNumber", "SeriesNumber", "NumberOfFrames",
                "Modality", "ImageType", "SeriesDescription")


def _check_vrs(f: Path, ds) -> None:
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    for kw in _CHECKED_VRS:
        if kw in ds:
            vr = ds.get_item(tag_for_keyword(kw)).VR  # read without converting the value (an 'XX' VR cannot be)
            if vr is None:  # implicit VR: pydicom takes the dictionary's VR when it converts
                vr = ds[kw].VR
            if vr not in dictionary_VR(kw).split(" or "):
                raise InputError(f"{_tag_name(tag_for_keyword(kw))} has VR {vr!s:.4}, not "
                                 f"{dictionary_VR(kw)}: the file is not standard", path=f)


def _position_key(ds) -> float | None:
    try:
        ori = np.asarray([float(v) for v in ds.ImageOrientationPatient], dtype=np.float64)
        pos = np.asarray([float(v) for v in ds.ImagePositionPatient], dtype=np.float64)
    except (AttributeError, TypeError, ValueError):
        return None
    if ori.shape != (6,) or pos.shape != (3,):
        return None
    normal = np.cross(ori[:3], ori[3:])
    if not np.isfinite(normal).all() or np.linalg.norm(normal) < 1e-6:
        return None
    return float(pos @ normal)


def _check_members(root: Path, members, allow: tuple[str, ...]) -> tuple[int, int]:
    """Every file is an allowed image of one size and one pixel format, within the limits -> (rows, cols)."""
    if len(members) > MAX_SLICES:
        raise InputError(f"series has {len(members)} files; more than {MAX_SLICES} is not supported", path=root)
    for f, _, ds in members:
        with _header_guard(f):
            _check_image(f, ds, allow)
    first_f, _, first = members[0]
    rows, cols = int(first.Rows), int(first.Columns)
    layout = _pixel_layout(first)
    for f, _, ds in members:
        if (int(ds.Rows), int(ds.Columns)) != (rows, cols):
            raise SeriesError(f"slice size {ds.Rows}x{ds.Columns} differs from {rows}x{cols} in {first_f.name}; "
                              "a series must have one image size", path=f)
        with _header_guard(f):
            if _pixel_layout(ds) != layout:
                raise SeriesError(f"pixel format (Bits Allocated/Stored, Pixel Representation) differs from "
                                  f"{first_f.name}; a series must have one pixel format", path=f)
    if len(members) * rows * cols > MAX_SERIES_PIXELS:  # before any pixel is decoded
        raise InputError(f"series of {len(members)} x {rows}x{cols} pixels is larger than {MAX_SERIES_PIXELS:,} "
                         "pixels; not supported", path=root)
    return rows, cols


def _ordered(root: Path, members) -> list:
    """Slices in space order (distinct positions along the normal), else by Instance Number and file name."""
    with _header_guard(root):
        keys = [_position_key(ds) for _, _, ds in members]
    if all(k is not None for k in keys) and len(set(round(k, 4) for k in keys)) == len(keys):
        order = sorted(range(len(members)), key=lambda i: keys[i])
    else:
        order = sorted(range(len(members)), key=lambda i: (_instance_number(members[i][2]), str(members[i][0])))
    return [members[i] for i in order]


def _pixel_array(ds, f: Path) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ds.pixel_array
    except (KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except BaseException as e:  # decoders written in Rust raise PanicException (a BaseException)
        msg = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise InputError(f"cannot decode pixel data ({type(e).__name__}: {msg}); the file may be truncated "
                         f"or use a transfer syntax without an installed decoder", path=f) from None


def _encoded(encoder, header, keys: dict, f: Path) -> tuple[bytes, tuple[bytes, ...]]:
    """(Part 10 prefix, element encodings) of a header as the archive stores it (``header_elements.py``)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return encoder.prefix(header), encoder.elements(header, keys)
    except Exception as e:  # the message may quote element values (PHI): keep only the type and tag
        raise _malformed(f, e) from None


def _assemble(root: Path, members, allow: tuple[str, ...], skipped: tuple[str, ...]) -> Series:
    rows, cols = _check_members(root, members, allow)
    first = members[0][2]
    members = _ordered(root, members)

    from .conformance import overlong_elements, summarise
    from .header_elements import HeaderEncoder

    encoder = HeaderEncoder()
    slopes, intercepts, hdrs, prefixes, elements = [], [], [], [], []
    stack = None
    overlong = {}
    for i, (f, _, ds) in enumerate(members):
        with _header_guard(f):
            keys = encoder.raw_keys(ds)  # before decoding: an element read before is not encoded again
            _decode_all(ds)  # every element decodes now, not later while packing the header
            slope, intercept = _rescale(ds, f)
            overlong[f] = overlong_elements(ds)
        arr = _pixel_array(ds, f)
        if arr.shape != (rows, cols):
            raise InputError(f"decoded pixel array has shape {arr.shape}, expected {(rows, cols)}", path=f)
        if stack is None:  # one array for the series (one pixel format: _check_members), filled slice by slice
            stack = np.empty((len(members), rows, cols), dtype=arr.dtype)
        stack[i] = arr
        del arr
        for tag in _PIXEL_TAGS:  # the file's pixel bytes and pydicom's decoded copy go now, not at the end of the read
            if tag in ds:
                del ds[tag]
        slopes.append(slope)
        intercepts.append(intercept)
        header = ds.copy()
        for tag in [t for t in header.keys() if t.group == 0x7FE0 or t == 0xFFFCFFFC]:
            del header[tag]
        hdrs.append(header)
        prefix, encoded = _encoded(encoder, header, keys, f)
        prefixes.append(prefix)
        elements.append(encoded)
    nonconformant = summarise(overlong)
    for line in nonconformant:
        log.warning(line)
    if stack.dtype.byteorder == ">" or (stack.dtype.byteorder == "=" and not np.little_endian):
        stack = stack.astype(stack.dtype.newbyteorder("<"))
    stack = np.ascontiguousarray(stack)
    positions = None
    try:
        positions = np.asarray([[float(v) for v in ds.ImagePositionPatient] for _, _, ds in members])
        orientation = tuple(float(v) for v in first.ImageOrientationPatient)
        if positions.shape != (len(members), 3) or len(orientation) != 6:
            raise ValueError("geometry")
    except (AttributeError, TypeError, ValueError):
        positions, orientation = None, None
    try:
        spacing = tuple(float(v) for v in first.PixelSpacing)
        if len(spacing) != 2:
            spacing = None
    except (AttributeError, TypeError, ValueError):
        spacing = None
    return Series(
        pixels=stack,
        slope=np.asarray(slopes, dtype=np.float64),
        intercept=np.asarray(intercepts, dtype=np.float64),
        kind="dicom",
        source=root,
        source_files=tuple(f for f, _, _ in members),
        source_sha256=tuple(d.sha256 for _, d, _ in members),
        source_bytes=tuple(d.size for _, d, _ in members),
        series_uid=str(first.get("SeriesInstanceUID", "")),
        modality=str(first.get("Modality", "")),
        bits_stored=int(first.get("BitsStored", first.BitsAllocated)),
        pixel_representation=int(first.get("PixelRepresentation", 0)),
        headers=tuple(hdrs),
        header_prefixes=tuple(prefixes),
        header_elements=tuple(elements),
        positions=positions,
        orientation=orientation,
        pixel_spacing=spacing,
        warnings=skipped + tuple(nonconformant),
    )


def _read_nifti(p: Path) -> Series:
    import nibabel as nib

    try:
        img = nib.load(str(p))
        shape = tuple(int(d) for d in img.shape)
    except Exception as e:
        raise InputError(f"cannot read NIfTI ({type(e).__name__})", path=p) from None
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise SeriesError(f"NIfTI must be a 3D volume, got shape {shape}", path=p)
    if (shape[2] > MAX_SLICES or shape[0] * shape[1] > MAX_PIXELS_PER_SLICE
            or shape[0] * shape[1] * shape[2] > MAX_SERIES_PIXELS):  # before the voxels are read
        raise InputError(f"NIfTI volume {shape} is larger than supported ({MAX_SLICES} slices, "
                         f"{MAX_PIXELS_PER_SLICE} pixels per slice, {MAX_SERIES_PIXELS:,} in all)", path=p)
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as e:
        raise InputError(f"cannot read NIfTI ({type(e).__name__})", path=p) from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise SeriesError(f"NIfTI must be a 3D volume, got shape {data.shape}", path=p)
    # slices along the third voxel axis; each slice (rows=j, cols=i) so it displays like DICOM
    stack = np.ascontiguousarray(np.transpose(data, (2, 1, 0)))
    if stack.shape[1] < MIN_SIDE or stack.shape[2] < MIN_SIDE:
        raise InputError(f"NIfTI slices {stack.shape[1:]} are too small (at least {MIN_SIDE}x{MIN_SIDE})", path=p)
    if not (np.issubdtype(stack.dtype, np.integer) or np.issubdtype(stack.dtype, np.floating)):
        raise InputError(f"unsupported NIfTI data type {stack.dtype}", path=p)
    if np.issubdtype(stack.dtype, np.floating) and not np.isfinite(stack).all():
        raise InputError("NIfTI volume holds NaN or infinite values", path=p)
    if stack.dtype == np.float16:
        stack = stack.astype(np.float32)
    if stack.dtype == np.float64:
        stack = stack.astype(np.float32)
    raw = p.read_bytes()
    slope = float(img.dataobj.slope) if hasattr(img.dataobj, "slope") and np.isfinite(img.dataobj.slope) else 1.0
    inter = float(img.dataobj.inter) if hasattr(img.dataobj, "inter") and np.isfinite(img.dataobj.inter) else 0.0
    n = stack.shape[0]
    bits = stack.dtype.itemsize * 8
    return Series(
        pixels=stack,
        slope=np.full(n, slope), intercept=np.full(n, inter),
        kind="nifti", source=p, source_files=(p,), source_sha256=(_sha256(raw),), source_bytes=(len(raw),),
        series_uid="", modality="MR", bits_stored=bits,
        pixel_representation=1 if np.issubdtype(stack.dtype, np.signedinteger) else 0,
        affine=np.asarray(img.affine, dtype=np.float64), nifti_header=img.header.binaryblock,
    )
