"""Seeded fuzzer for medsr's inputs: DICOM series (headers and pixel data) and archive files.

    python -m pipelines.fuzz --cases 10000 [--seed 0] [--workers 2] [--timeout 60] [--json out.json]
    python -m pipelines.fuzz --seed 0 --case 1234            # rerun one case in this process, verbose

Each case takes one small, valid input (a 2-4 slice series of 16-32 pixels, or an archive
of one) from a corpus built at start, applies 1-3 mutations chosen by a PRNG seeded with
(seed, case), and runs the public API on it in a worker process:

- DICOM cases: ``archive_series`` (no JPEG 2000 baseline), in turn (case index modulo 4) with
  bicubic, the lossy base, a per-slice floor (45 dB, lossless fallback) and the default model
  (``MODES``); when it succeeds, ``verify_archive`` and ``restore_archive`` of the result;
- archive cases: ``verify_archive``, ``open_archive`` and ``restore_archive``, on archives of
  every kind (bicubic with each base, lossy, floor, model-restored, NIfTI).

Each case is classified:

- ``ok``: everything succeeded;
- ``error``: a clean ``MedsrError`` (the expected answer to a bad input);
- ``crash``: any other exception, a ``MedsrError`` that hides a ``MemoryError`` (something
  was allocated before the input was checked), or the worker process died: a bug;
- ``hang``: the case ran past ``--timeout`` (the worker is killed and replaced): a bug;
- ``partial``: a failed operation left something in the output folder (a temp, a final
  name): a bug;
- ``inconsistent``: ``verify_archive`` said OK but a restore/open of the same archive failed,
  or an archive just written does not verify/restore: a bug;
- ``leak``: an error message holds a patient marker (``dicom_fixtures.PHI_MARKERS``): a bug.

Workers run with an address-space limit (``--mem-gb``, default 6 GiB), so an absurd
allocation fails fast as a ``MemoryError`` instead of swapping the machine.
Prints the counts and exits 1 if any case is a crash, hang, partial, inconsistent or leak.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import struct
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

BAD = ("crash", "hang", "partial", "inconsistent", "leak")
OUTCOMES = ("ok", "error") + BAD
LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}

# --------------------------------------------------------------------------- corpus


@dataclass
class DicomBase:
    name: str
    files: list[tuple[str, bytes]]  # (relative name, Part 10 bytes)
    meta: list[bytes] = field(default_factory=list)  # preamble + DICM + file meta, per file
    elements: list[list[tuple[int, bytes]]] = field(default_factory=list)  # per file: (tag, encoding)
    editable: bool = True  # explicit VR little endian body: element-level mutations apply


def _split(raw: bytes) -> tuple[bytes, list[tuple[int, bytes]]]:
    """Part 10 bytes -> (meta prefix, [(tag, explicit-LE encoding)]) via pydicom + medsr's encoder."""
    from io import BytesIO

    import pydicom

    from medsr.archive.headers import _split_part10
    from medsr.io.header_elements import encode_element

    meta, _ = _split_part10(raw)
    ds = pydicom.dcmread(BytesIO(raw), force=True)
    return meta, [(int(e.tag), encode_element(e)) for e in ds]


#: how a DICOM case is archived (case index modulo 4), and which archives the corpus holds besides the
#: bicubic ones: the lossy JPEG-LS base, the per-slice floor (JPEG 2000 / residual / lossless slices) and
#: the default model's restore, so that every storage mode and the network path meet mutated input
MODES = ("bicubic", "lossy", "floor", "model")


def archive_options(mode: str):
    """The ``ArchiveOptions`` of a fuzz mode (no JPEG 2000 baseline: the audit's baseline is not the point)."""
    from dataclasses import replace

    import medsr

    fast = medsr.ArchiveOptions(method="bicubic", baselines=False)
    return {"bicubic": fast, "lossy": replace(fast, base="lossy"),
            "floor": replace(fast, floor_psnr_fg=45.0, floor_fallback="lossless"),
            "model": replace(fast, method="model", ensemble=1)}[mode]


def build_corpus(folder: Path) -> dict:
    """Small valid series (several dtypes and transfer syntaxes) and archives made from them."""
    import warnings

    from pydicom.uid import (DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian,
                             JPEG2000Lossless, JPEGLSLossless, RLELossless)

    import medsr
    from dicom_fixtures.build import build_series
    from dicom_fixtures.spec import SeriesSpec

    specs = {
        "u16": SeriesSpec(rows=32, cols=32, slices=3),
        "s16": SeriesSpec(rows=32, cols=32, slices=3, dtype="int16", slope=2.0, intercept=-1024.0,
                          stored_offset=-700.0),
        "u8": SeriesSpec(rows=32, cols=32, slices=2, dtype="uint8", bits_stored=8, intensity_scale=200.0),
        "odd": SeriesSpec(rows=18, cols=21, slices=3, orientation="sagittal"),
        "tiny16": SeriesSpec(rows=16, cols=16, slices=4),
        "rle": SeriesSpec(rows=32, cols=32, slices=2, transfer_syntax=RLELossless),
        "jls": SeriesSpec(rows=32, cols=32, slices=2, transfer_syntax=JPEGLSLossless),
        "j2k": SeriesSpec(rows=32, cols=32, slices=2, transfer_syntax=JPEG2000Lossless),
        "implicit": SeriesSpec(rows=32, cols=32, slices=2, transfer_syntax=ImplicitVRLittleEndian),
        "bigendian": SeriesSpec(rows=32, cols=32, slices=2, transfer_syntax=ExplicitVRBigEndian),
        "deflate": SeriesSpec(rows=32, cols=32, slices=2, transfer_syntax=DeflatedExplicitVRLittleEndian),
    }
    bases: dict[str, DicomBase] = {}
    for name, spec in specs.items():
        paths = build_series(folder / "series" / name, spec)
        base = DicomBase(name, [(p.name, p.read_bytes()) for p in paths])
        base.editable = name not in ("implicit", "bigendian", "deflate")
        if base.editable:
            for _, raw in base.files:
                meta, elems = _split(raw)
                base.meta.append(meta)
                base.elements.append(elems)
        bases[name] = base
    archives: dict[str, bytes] = {}
    fast = medsr.ArchiveOptions(method="bicubic", baselines=False)
    from dataclasses import replace

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, src, opts in (("u16", "u16", fast), ("u16-lossless", "u16", replace(fast, base="lossless")),
                                ("s16", "s16", fast), ("odd", "odd", fast), ("u8", "u8", fast),
                                *((f"u16-{mode}", "u16", archive_options(mode)) for mode in MODES if mode != "bicubic")):
            out = folder / "archives" / f"{name}.medsr.h5"
            out.parent.mkdir(parents=True, exist_ok=True)
            try:
                medsr.archive_series(folder / "series" / src, out, opts)
            except TypeError:  # an older ArchiveOptions without ``base``
                medsr.archive_series(folder / "series" / src, out, fast)
            archives[name] = out.read_bytes()
        nii = folder / "series" / "vol.nii.gz"
        _write_nifti(nii)
        out = folder / "archives" / "nifti.medsr.h5"
        medsr.archive_series(nii, out, fast)
        archives["nifti"] = out.read_bytes()
    for v1 in sorted((REPO / "tests" / "data").glob("v1-*.medsr.h5")):  # format version 1 still reads
        archives[v1.name.split(".")[0]] = v1.read_bytes()
    return {"dicom": bases, "archive": archives}


def _write_nifti(path: Path) -> None:
    import nibabel as nib
    import numpy as np

    rng = np.random.default_rng(0)
    vol = (rng.random((24, 20, 3)) * 1000).astype(np.int16)
    nib.save(nib.Nifti1Image(vol, np.diag([1.0, 1.0, 2.0, 1.0])), str(path))


# --------------------------------------------------------------------------- DICOM element encoding


def enc(tag: int, vr: str, value: bytes, length: int | None = None) -> bytes:
    """One explicit VR little endian element, optionally with a forged length field."""
    g, e = tag >> 16, tag & 0xFFFF
    n = len(value) if length is None else length
    if vr in LONG_VRS:
        return struct.pack("<HH2sHI", g, e, vr.encode("latin-1"), 0, n & 0xFFFFFFFF) + value
    return struct.pack("<HH2sH", g, e, vr.encode("latin-1"), n & 0xFFFF) + value


def _pad(b: bytes, vr: str) -> bytes:
    return b + (b"\0" if vr == "UI" else b" ") if len(b) % 2 else b


def enc_value(tag: int, value, vr: str | None = None) -> bytes:
    """Encode ``value`` (str / int / list / bytes) with the tag's dictionary VR (or ``vr``)."""
    from pydicom.datadict import dictionary_VR

    vr = vr or dictionary_VR(tag).split(" or ")[0]
    if isinstance(value, bytes):
        return enc(tag, vr, value)
    if vr in ("US", "SS", "UL", "SL"):
        fmt = {"US": "<H", "SS": "<h", "UL": "<I", "SL": "<i"}[vr]
        vals = value if isinstance(value, (list, tuple)) else [value]
        try:
            return enc(tag, vr, b"".join(struct.pack(fmt, int(v)) for v in vals))
        except (struct.error, ValueError):
            return enc(tag, "DS", _pad(str(value).encode("latin-1", "replace"), "DS"))  # unrepresentable: wrong VR
    if vr in ("FD", "FL"):
        vals = value if isinstance(value, (list, tuple)) else [value]
        return enc(tag, vr, b"".join(struct.pack("<d" if vr == "FD" else "<f", float(v)) for v in vals))
    text = "\\".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    return enc(tag, vr, _pad(text.encode("latin-1", "replace"), vr))


def tag_of(keyword: str) -> int:
    from pydicom.datadict import tag_for_keyword

    return int(tag_for_keyword(keyword))


# --------------------------------------------------------------------------- DICOM mutations

UID_ENHANCED = "1.2.840.10008.5.1.4.1.1.4.1"
UID_CT = "1.2.840.10008.5.1.4.1.1.2"
TS_VALUES = ["1.2.3.4.5.6", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2",
             "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.90", "", "1.2.840.10008.1.2.4.100",
             "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.1"]

SET_VALUES: dict[str, list] = {
    "Rows": [0, 1, 3, 4, 5, 17, 31, 33, 64, 4096, 4097, 60000, 65535],
    "Columns": [0, 1, 3, 4, 5, 17, 31, 33, 64, 4096, 4097, 60000, 65535],
    "BitsAllocated": [0, 1, 8, 12, 16, 24, 32, 64, 65535],
    "BitsStored": [0, 1, 7, 8, 12, 13, 16, 17, 32, 40, 65535],
    "HighBit": [0, 7, 11, 15, 16, 40, 65535],
    "PixelRepresentation": [0, 1, 2, 65535],
    "SamplesPerPixel": [0, 1, 2, 3, 4, 65535],
    "PlanarConfiguration": [0, 1, 2],
    "PhotometricInterpretation": ["", "RGB", "PALETTE COLOR", "YBR_FULL", "MONOCHROME1", "XYZ", "MONOCHROME2\\RGB"],
    "NumberOfFrames": ["0", "1", "2", "-1", "abc", "99999999", "", "1.5"],
    "RescaleSlope": ["0", "-1", "nan", "inf", "-inf", "1e308", "1e-308", "abc", "", "1\\2"],
    "RescaleIntercept": ["nan", "inf", "-1e308", "abc", "", "1e308"],
    "PixelSpacing": ["0\\0", "-1\\-1", "nan\\1", "1", "abc\\def", "1e-320\\1", "inf\\inf", "1\\2\\3", ""],
    "ImageOrientationPatient": ["0\\0\\0\\0\\0\\0", "1\\0\\0\\1\\0\\0", "nan\\0\\0\\0\\1\\0", "1\\0\\0",
                                "a\\b\\c\\d\\e\\f", "1e308\\0\\0\\0\\1e308\\0", "inf\\0\\0\\0\\1\\0", ""],
    "ImagePositionPatient": ["0\\0\\0", "nan\\nan\\nan", "inf\\0\\0", "1\\2", "x\\y\\z", "1e308\\1e308\\1e308",
                             "-1e308\\0\\0", ""],
    "SliceThickness": ["0", "-5", "nan", "abc", ""],
    "SpacingBetweenSlices": ["0", "-5", "nan", "inf"],
    "InstanceNumber": ["", "-1", "abc", "99999999999", "0", "1.5"],
    "Modality": ["", "CT", "mr", "MR\\CT", "OT", "M R"],
    "SOPClassUID": ["", UID_ENHANCED, "1.2.3", UID_CT, "1.2.840.10008.1.3.10", "x" * 64],
    "SeriesInstanceUID": ["", "../../etc/passwd", "1.2.3\x00x", "a" * 64, "1.2.3/../4", "1.2\n3"],
    "SOPInstanceUID": ["../x", "/abs/path", "", "1.2.3", "a\nb", "\x00", ".", ".."],
    "SeriesDescription": ["../../x", "a/b\\c", "a\nb", "\x00", "x" * 64, "é"],
    "SeriesNumber": ["", "abc", "-1", "99999999999999"],
    "WindowCenter": ["abc", "nan", "1\\2\\3"],
    "WindowWidth": ["0", "-1", "abc"],
    "SmallestImagePixelValue": [0, 65535],
    "LargestImagePixelValue": [0, 65535],
    "SpecificCharacterSet": ["ISO_IR 999", "\\ISO 2022 IR 87", "ISO_IR 192", "GB18030", "ISO_IR 100\\ISO_IR 101"],
    "ImageType": ["", "ORIGINAL", "DERIVED\\SECONDARY\\X\\Y\\Z"],
    "LossyImageCompression": ["01", "00", "xx"],
    "StudyInstanceUID": ["", "1.2.3"],
    "FrameOfReferenceUID": ["", "1.2.3"],
}
DROP_KEYWORDS = ["Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "SamplesPerPixel",
                 "PhotometricInterpretation", "PixelData", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID",
                 "Modality", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "RescaleSlope",
                 "RescaleIntercept", "InstanceNumber", "SliceThickness", "StudyInstanceUID", "FrameOfReferenceUID",
                 "PatientName", "SeriesDescription", "SpecificCharacterSet", "ImageType", "SeriesNumber"]
WRONG_VRS = ["DS", "IS", "US", "UL", "SS", "OB", "UN", "SQ", "LO", "UI", "FD", "AT", "PN", "DA", "OW", "XX", "\0\0"]
VR_KEYWORDS = DROP_KEYWORDS + ["PatientID", "PatientBirthDate", "AccessionNumber", "InstitutionName",
                               "ReferringPhysicianName", "NumberOfFrames"]
PHI_KEYWORDS = ["PatientName", "PatientID", "AccessionNumber", "InstitutionName", "ReferringPhysicianName"]


class DicomCase:
    """Mutable copy of one base series: per file a meta prefix and a list of (tag, encoding)."""

    def __init__(self, base: DicomBase):
        self.base = base
        self.names = [n for n, _ in base.files]
        self.raw: list[bytes | None] = [None] * len(base.files)  # set: whole-file bytes override
        self.meta = list(base.meta)
        self.elements = [list(e) for e in base.elements]
        self.extra: list[tuple[str, bytes]] = []

    def files(self) -> list[tuple[str, bytes]]:
        out = []
        for i, name in enumerate(self.names):
            if self.raw[i] is not None:
                out.append((name, self.raw[i]))
            elif self.base.editable:
                out.append((name, self.meta[i] + b"".join(b for _, b in self.elements[i])))
            else:
                out.append((name, self.base.files[i][1]))
        return out + self.extra

    def put(self, i: int, tag: int, encoding: bytes | None) -> None:
        """Replace (or insert in tag order, or with None remove) an element of file ``i``."""
        els = [(t, b) for t, b in self.elements[i] if t != tag]
        if encoding is not None:
            els.append((tag, encoding))
            els.sort(key=lambda x: x[0])
        self.elements[i] = els

    def get(self, i: int, tag: int) -> bytes | None:
        return next((b for t, b in self.elements[i] if t == tag), None)

    def materialise(self, i: int) -> None:
        """Freeze file ``i`` as raw bytes (for byte-level mutations)."""
        if self.raw[i] is None:
            self.raw[i] = dict(self.files())[self.names[i]]


def _targets(rng: random.Random, case: DicomCase) -> list[int]:
    n = len(case.names)
    return list(range(n)) if rng.random() < 0.3 else [rng.randrange(n)]


def _m_set(rng, case, bases):
    kw = rng.choice(list(SET_VALUES))
    v = rng.choice(SET_VALUES[kw])
    for i in _targets(rng, case):
        case.put(i, tag_of(kw), enc_value(tag_of(kw), v))
    return f"set:{kw}", f"set {kw}={v!r}"


def _m_drop(rng, case, bases):
    kw = rng.choice(DROP_KEYWORDS)
    for i in _targets(rng, case):
        case.put(i, tag_of(kw), None)
    return f"drop:{kw}", f"drop {kw}"


def _m_vr(rng, case, bases):
    kw = rng.choice(VR_KEYWORDS)
    vr = rng.choice(WRONG_VRS)
    t = tag_of(kw)
    for i in _targets(rng, case):
        old = case.get(i, t)
        if old is None:
            continue
        value = old[12:] if old[4:6].decode("latin-1") in LONG_VRS else old[8:]
        if rng.random() < 0.5:
            value = bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 2, 4, 8, 12])))
        if vr == "SQ":
            value = b""
        case.put(i, t, enc(t, vr, value if vr not in LONG_VRS and len(value) < 0xFFFF else value[:0xFFF0]))
    return f"vr:{kw}", f"{kw} encoded with VR {vr!r}"


def _m_len(rng, case, bases):
    kw = rng.choice(VR_KEYWORDS)
    t = tag_of(kw)
    for i in _targets(rng, case):
        old = case.get(i, t)
        if old is None:
            continue
        long_ = old[4:6].decode("latin-1") in LONG_VRS
        if len(old) < (12 if long_ else 8):
            continue
        n = struct.unpack("<I", old[8:12])[0] if long_ else struct.unpack("<H", old[6:8])[0]
        forged = rng.choice([n + 2, max(0, n - 2), n + 1, 0xFFFF, 0xFFFFFFFF if long_ else 0xFFFE, n * 1000])
        case.put(i, t, old[:8] + struct.pack("<I", forged & 0xFFFFFFFF) + old[12:] if long_
                 else old[:6] + struct.pack("<H", forged & 0xFFFF) + old[8:])
    return f"len:{kw}", f"{kw} with a forged length"


def _m_pixels(rng, case, bases):
    t = tag_of("PixelData")
    how = rng.choice(["trunc", "extend", "empty", "odd", "vr-OB", "vr-UN", "vr-OW", "undefined", "random", "huge-len"])
    for i in _targets(rng, case):
        old = case.get(i, t)
        if old is None:
            continue
        vr = old[4:6].decode("latin-1")
        if vr not in LONG_VRS or len(old) < 12:  # an earlier mutation changed its VR
            continue
        n = struct.unpack("<I", old[8:12])[0]
        value = old[12:]
        if how == "trunc":
            value = value[: rng.randrange(max(1, len(value)))]
            case.put(i, t, enc(t, vr, value))
        elif how == "extend":
            case.put(i, t, enc(t, vr, value + bytes(rng.randrange(256) for _ in range(rng.choice([2, 64, 1000])))))
        elif how == "empty":
            case.put(i, t, enc(t, vr, b""))
        elif how == "odd":
            case.put(i, t, enc(t, vr, value + b"\x01"))
        elif how.startswith("vr-"):
            case.put(i, t, enc(t, how[3:], value, n))
        elif how == "undefined":
            case.put(i, t, enc(t, vr, value, 0xFFFFFFFF))
        elif how == "random":
            case.put(i, t, enc(t, vr, bytes(rng.randrange(256) for _ in range(len(value))), n))
        else:
            case.put(i, t, enc(t, vr, value, 0x7FFFFFF0))
    return f"pixels:{how}", f"pixel data {how}"


def _m_reshape(rng, case, bases):
    """Rows x Columns changed but consistent with the number of pixels stored."""
    total = None
    r = case.get(0, tag_of("Rows"))
    c = case.get(0, tag_of("Columns"))
    if r is None or c is None:
        return "reshape", "reshape skipped"
    if len(r) < 10 or len(c) < 10:
        return "reshape", "reshape skipped"
    total = struct.unpack("<H", r[8:10])[0] * struct.unpack("<H", c[8:10])[0]
    if total == 0 or total > 1 << 16:  # (an earlier mutation forged huge dimensions)
        return "reshape", "reshape skipped"
    divisors = [d for d in range(1, total + 1) if total % d == 0]
    rows = rng.choice(divisors)
    for i in (range(len(case.names)) if rng.random() < 0.8 else _targets(rng, case)):
        case.put(i, tag_of("Rows"), enc_value(tag_of("Rows"), rows))
        case.put(i, tag_of("Columns"), enc_value(tag_of("Columns"), total // rows))
    return "reshape", f"reshape to {rows}x{total // rows}"


def _m_huge(rng, case, bases):
    rows, cols = rng.choice([(60000, 60000), (65535, 65535), (4096, 4096), (4097, 4096), (8192, 2048), (1, 65535),
                             (65535, 4)])
    frames = rng.choice([None, "1", "60000", "2147483647"])
    for i in _targets(rng, case):
        case.put(i, tag_of("Rows"), enc_value(tag_of("Rows"), rows))
        case.put(i, tag_of("Columns"), enc_value(tag_of("Columns"), cols))
        if frames:
            case.put(i, tag_of("NumberOfFrames"), enc_value(tag_of("NumberOfFrames"), frames))
    return "huge-dims", f"forged {rows}x{cols} frames={frames}"


def _m_ts(rng, case, bases):
    from io import BytesIO

    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info

    import pydicom

    uid = rng.choice(TS_VALUES)
    for i in _targets(rng, case):
        fp = BytesIO(case.meta[i])
        fp.seek(132)
        meta = pydicom.filereader._read_file_meta_info(fp)
        meta.TransferSyntaxUID = uid
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, False
        fp.write(b"\0" * 128 + b"DICM")
        write_file_meta_info(fp, meta, enforce_standard=False)
        case.meta[i] = fp.getvalue()
    return "transfer-syntax", f"TransferSyntaxUID={uid!r}"


def _m_mix(rng, case, bases):
    """A slice from another base series, claiming this series' UID (inconsistent slices)."""
    other = rng.choice([b for b in bases.values() if b.editable and b.name != case.base.name])
    j = rng.randrange(len(other.files))
    i = rng.randrange(len(case.names))
    suid = tag_of("SeriesInstanceUID")
    mine = case.get(0, suid)
    case.meta[i] = other.meta[j]
    case.elements[i] = list(other.elements[j])
    if mine is not None and rng.random() < 0.8:
        case.put(i, suid, mine)
    return "mix-slices", f"slice {i} replaced by {other.name}[{j}]"


def _m_dup(rng, case, bases):
    i = rng.randrange(len(case.names))
    case.materialise(i)
    case.names.append(f"dup_{case.names[i]}")
    case.raw.append(case.raw[i])
    if case.base.editable:
        case.meta.append(case.meta[i])
        case.elements.append(list(case.elements[i]))
    return "duplicate", f"slice {i} duplicated"


def _m_file(rng, case, bases):
    how = rng.choice(["truncate", "flip", "flip-header", "junk", "empty", "magic-only", "zeros"])
    for i in _targets(rng, case):
        case.materialise(i)
        raw = bytearray(case.raw[i])
        if len(raw) < 140 and how not in ("junk", "empty", "magic-only"):
            how = "junk"
        if how == "truncate":
            raw = raw[: rng.randrange(len(raw))]
        elif how in ("flip", "flip-header"):
            hi = min(len(raw), 1200) if how == "flip-header" else len(raw)
            for _ in range(rng.randint(1, 16)):
                k = rng.randrange(132, hi)
                raw[k] ^= 1 << rng.randrange(8)
        elif how == "junk":
            raw += bytes(rng.randrange(256) for _ in range(rng.choice([1, 7, 100, 5000])))
        elif how == "empty":
            raw = bytearray()
        elif how == "magic-only":
            raw = bytearray(b"\0" * 128 + b"DICM")
        else:
            k = rng.randrange(132, len(raw))
            raw[k:k + 256] = b"\0" * len(raw[k:k + 256])
        case.raw[i] = bytes(raw)
    return f"file:{how}", f"file bytes {how}"


def _m_order(rng, case, bases):
    how = rng.choice(["swap", "duplicate-tag", "reverse"])
    for i in _targets(rng, case):
        els = case.elements[i]
        if len(els) < 2:
            continue
        if how == "swap":
            a, b = rng.sample(range(len(els)), 2)
            els[a], els[b] = els[b], els[a]
        elif how == "duplicate-tag":
            k = rng.randrange(len(els))
            els.insert(k, els[k])
        else:
            els.reverse()
    return f"order:{how}", f"element order {how}"


def _deep_sequence(depth: int) -> bytes:
    item_start, item_end, seq_end = b"\xfe\xff\x00\xe0\xff\xff\xff\xff", b"\xfe\xff\x0d\xe0\0\0\0\0", \
        b"\xfe\xff\xdd\xe0\0\0\0\0"
    inner = b""
    for _ in range(depth):
        inner = (struct.pack("<HH2sHI", 0x0029, 0x1010, b"SQ", 0, 0xFFFFFFFF) + item_start + inner + item_end
                 + seq_end)
    return inner


def _m_private(rng, case, bases):
    how = rng.choice(["deep-seq", "many", "big", "garbage-creator"])
    for i in _targets(rng, case):
        case.put(i, 0x00290010, enc(0x00290010, "LO", b"FUZZ CREATOR"))
        if how == "deep-seq":
            case.put(i, 0x00291010, _deep_sequence(rng.choice([2, 20, 100, 300, 1000])))
        elif how == "many":
            for k in range(rng.choice([100, 2000])):
                tag = 0x00331000 + k
                case.put(i, tag, enc(tag, "LO", b"xx"))
        elif how == "big":
            case.put(i, 0x00291011, enc(0x00291011, "OB", bytes(rng.choice([1 << 16, 1 << 20]))))
        else:
            case.put(i, 0x00290010, enc(0x00290010, "LO", bytes(rng.randrange(256) for _ in range(16))))
            case.put(i, 0x00291012, enc(0x00291012, "UN", bytes(rng.randrange(256) for _ in range(64))))
    return f"private:{how}", f"private elements {how}"


def _m_charset(rng, case, bases):
    """A character set that cannot decode the patient's name (decode errors must not echo it)."""
    cs = rng.choice(SET_VALUES["SpecificCharacterSet"])
    kw = rng.choice(PHI_KEYWORDS)
    for i in _targets(rng, case):
        case.put(i, tag_of("SpecificCharacterSet"), enc_value(tag_of("SpecificCharacterSet"), cs))
        old = case.get(i, tag_of(kw))
        if old is not None and rng.random() < 0.5:  # bytes that are invalid in most character sets
            value = old[8:] + b"\xff\xfe\x1b$B"
            case.put(i, tag_of(kw), enc(tag_of(kw), old[4:6].decode("latin-1"), _pad(value, "PN")))
    return "charset", f"SpecificCharacterSet={cs!r} with {kw}"


def _m_extra_files(rng, case, bases):
    how = rng.choice(["junk", "dicomdir", "hidden", "magic-junk", "empty", "subfolder-copy"])
    if how == "junk":
        case.extra.append(("notes.dcm", bytes(rng.randrange(256) for _ in range(300))))
    elif how == "dicomdir":
        case.extra.append(("DICOMDIR", b"\0" * 128 + b"DICM" + b"\x02\x00\x00\x00UL\x04\x00\x00\x00\x00\x00"))
    elif how == "hidden":
        case.extra.append((".hidden.dcm", b"\0" * 10))
    elif how == "magic-junk":
        case.extra.append(("x.dcm", b"\0" * 128 + b"DICM" + bytes(rng.randrange(256) for _ in range(200))))
    elif how == "empty":
        case.extra.append(("empty.dcm", b""))
    else:
        name, raw = case.files()[0]
        case.extra.append((f"sub/{name}", raw))
    return f"extra:{how}", f"extra file {how}"


DICOM_MUTATIONS = [(_m_set, 14), (_m_drop, 8), (_m_vr, 8), (_m_len, 5), (_m_pixels, 8), (_m_reshape, 3),
                   (_m_huge, 4), (_m_ts, 4), (_m_mix, 4), (_m_dup, 2), (_m_file, 8), (_m_order, 3),
                   (_m_private, 3), (_m_charset, 3), (_m_extra_files, 3)]
RAW_ONLY = [(_m_file, 8), (_m_dup, 1), (_m_extra_files, 2)]


# --------------------------------------------------------------------------- archive mutations


ATTR_VALUES: dict[str, list] = {
    "format": ["x", "", b"medsr-archive", 1],
    "format_version": [0, 2, 4, -1, "x", 1.5, 2**40],
    "rows": [0, -1, 1, 3, 60000, 2**40, "x", 1.5],
    "cols": [0, -1, 1, 3, 60000, 2**40, "x"],
    "scale": [0, 1, 2, 3, 8, -4, 1000, "x"],
    "pad_rows": [-1, 1, 3, 4, 1000],
    "pad_cols": [-1, 1, 3, 4, 1000],
    "dtype": ["bogus", "object", "float128", "<U8", "int64", "float32", "uint8", "int8", "bool", "V8", "complex64", ""],
    "bits_stored": [0, 1, 8, 17, 64, -1, 1000],
    "pixel_representation": [2, -1, 1, 0],
    "window_lo": [float("nan"), float("inf"), -1e308, 1e308],
    "window_hi": [float("nan"), float("-inf"), 0.0, 1e308],
    "operator": ["nope", "area2-v1", "gauss4-v1", "", {"id": "nope", "scale": 4}, {"id": "area2-v1", "scale": 4},
                 {"id": "area4-v1", "scale": "x"}, {}, None, [4]],  # format 3: a group {id, scale}
    "model": [None, {}, "x", [1], {"name": "../x", "sha256": "x", "ensemble": 3},
              {"name": "medsr-srresnet-x4", "sha256": "0" * 64, "ensemble": "x"}],  # format 3: {name, sha256, ensemble}
    "method": ["nope", "model", "nearest", "bicubic", ""],
    "model_id": ["", "../x@", "nope@123"],
    "model_sha256": ["", "0" * 64, "x"],
    "kind": ["nifti", "dicom", "weird", ""],
    "series_uid": ["", "../../x", "a\nb"],
    "base": ["bogus", "lossless", "near-lossless", ""],
    "base_near": [-1, 0, 1000, 2**40],
    "base_min": [-1, 2**40, 70000],
    "base_max": [-1, 0, 2**40],
    "original_file_bytes": [-1, 0, 2**62],
    "original_pixel_bytes": [-1, 0],
    "created": ["", "x" * 1000],
    "below_threshold": [2, "x"],
}


def _datasets(f) -> list[str]:
    import h5py

    out = []
    f.visititems(lambda name, obj: out.append(name) if isinstance(obj, h5py.Dataset) else None)
    return sorted(out)


def _set_sha(ds) -> None:
    import numpy as np

    from medsr.archive.format import _names_sha, _sha

    data = ds[()]
    if isinstance(data, bytes):
        ds.attrs["sha256"] = _sha(data)
    elif ds.dtype.kind == "O":
        ds.attrs["sha256"] = _names_sha(data)
    else:
        ds.attrs["sha256"] = _sha(np.asarray(data))


def _replace(f, name: str, data, *, fix_sha: bool = True, **kw) -> None:
    attrs = dict(f[name].attrs)
    del f[name]
    ds = f.create_dataset(name, data=data, **kw)
    for k, v in attrs.items():
        try:
            ds.attrs[k] = v
        except (TypeError, ValueError, UnicodeError):  # an attribute an earlier mutation made unwritable
            pass
    if fix_sha:
        _set_sha(ds)


def _a_attr(rng, f):
    key = rng.choice(list(ATTR_VALUES))
    if rng.random() < 0.2:
        if key in f.attrs:
            del f.attrs[key]
        return f"attr-del:{key}", f"delete attribute {key}"
    v = rng.choice(ATTR_VALUES[key])
    f.attrs[key] = v
    return f"attr:{key}", f"attribute {key}={v!r}"


def _a_del(rng, f):
    names = _datasets(f) + ["headers", "sources", "slices"]
    name = rng.choice(names)
    if name in f:
        del f[name]
    return f"ds-del:{name.split('/')[-1]}", f"delete {name}"


def _a_sha(rng, f):
    name = rng.choice(_datasets(f))
    how = rng.choice(["wrong", "missing", "int", "bytes"])
    if how == "wrong":
        f[name].attrs["sha256"] = "0" * 64
    elif how == "missing":
        if "sha256" in f[name].attrs:  # format 2's /meta and /headers have none (their digests are elsewhere)
            del f[name].attrs["sha256"]
    elif how == "int":
        f[name].attrs["sha256"] = 7
    else:
        f[name].attrs["sha256"] = b"\xff" * 64
    return f"sha:{how}", f"{name} sha256 attribute {how}"


def _a_forge(rng, f):
    """Replace a dataset with forged content and a *matching* sha256 (checksums pass)."""
    import numpy as np

    name = rng.choice(_datasets(f))
    ds = f[name]
    data = ds[()]
    arr = np.asarray(data) if not isinstance(data, bytes) else np.frombuffer(data, np.uint8)
    how = rng.choice(["shape-2d", "empty", "extra", "fewer", "dtype-f8", "dtype-i1", "dtype-str", "nan", "neg",
                      "huge-values", "shuffle", "garbage", "scalar", "transpose", "huge-declared"])
    if how == "huge-declared":  # declared huge, nothing stored: reading it would allocate it all
        dims = (3, 60000, 60000) if arr.ndim == 3 else ((2**31,) + arr.shape[1:] if arr.ndim else (2**31,))
        attrs = dict(ds.attrs)
        del f[name]
        nd = f.create_dataset(name, shape=dims, dtype=arr.dtype if arr.dtype.kind != "O" else "u1",
                              chunks=tuple(min(d, 64) for d in dims))
        for k, v in attrs.items():
            try:
                nd.attrs[k] = v
            except (TypeError, ValueError, UnicodeError):
                pass
        return f"forge:{how}", f"{name} declared {dims}, no data"
    if arr.dtype.kind == "O" or arr.dtype.kind == "S":
        new = {"empty": arr[:0], "extra": np.concatenate([arr, arr[:1]]) if arr.size else arr,
               "fewer": arr[:-1], "garbage": np.asarray([b"\x01\x7f" * 7] * max(1, arr.size), dtype="S14")}.get(how)
        if new is None:
            new = arr[::-1].copy()
        if new.dtype.kind == "O":
            import h5py

            _replace(f, name, new.astype(object), dtype=h5py.string_dtype("utf-8", None))
        else:
            _replace(f, name, new)
        return f"forge:{how}", f"{name} forged ({how})"
    if how == "shape-2d":
        new = arr.reshape(arr.shape[0], -1) if arr.ndim >= 2 else arr.reshape(1, -1)
    elif how == "empty":
        new = arr[:0]
    elif how == "extra":
        new = np.concatenate([arr, arr[:1]]) if arr.ndim and arr.size else arr
    elif how == "fewer":
        new = arr[:-1] if arr.ndim else arr
    elif how == "dtype-f8":
        new = arr.astype(np.float64)
    elif how == "dtype-i1":
        new = arr.astype(np.int8)
    elif how == "dtype-str":
        new = np.asarray([b"x" * 8] * max(1, arr.shape[0] if arr.ndim else 1), dtype="S8")
    elif how == "nan":
        new = np.full(arr.shape, np.nan)
    elif how == "neg":
        new = -np.abs(arr.astype(np.int64)) - 1
    elif how == "huge-values":
        new = np.full(arr.shape, np.iinfo(np.int64).max // 2, dtype=np.int64) if arr.dtype.kind in "iu" \
            else np.full(arr.shape, 1e308)
    elif how == "shuffle":
        new = arr.copy().ravel()
        rng.shuffle(new)
        new = new.reshape(arr.shape)
    elif how == "garbage":
        new = np.frombuffer(bytes(rng.randrange(256) for _ in range(max(8, arr.nbytes))), dtype=np.uint8).copy()
    elif how == "scalar":
        new = np.asarray(arr.ravel()[0] if arr.size else 0)
    else:
        new = arr.T.copy() if arr.ndim >= 2 else arr[::-1].copy()
    _replace(f, name, new)
    return f"forge:{how}", f"{name} forged ({how}), checksum matching"


def _a_headers(rng, f):
    """Forge the packed-header index (offsets, ids) with matching checksums."""
    import numpy as np

    if "headers" not in f:
        return "headers:none", "no headers"
    if not hasattr(f["headers"], "keys"):  # format 2: one /headers block, its index in /meta
        return _a_meta_headers(rng, f)
    key = rng.choice(["slice_offsets", "element_ids", "blob_offsets", "meta_offsets", "blob", "meta"])
    if key not in f["headers"]:
        return "headers:none", f"headers/{key} already gone"
    arr = np.asarray(f["headers"][key][()])
    how = rng.choice(["decreasing", "out-of-range", "negative", "zero", "huge", "garbage", "off-by-one"])
    new = arr.astype(np.int64) if arr.dtype.kind in "iu" and how in ("negative", "out-of-range") else arr.copy()
    if new.size == 0 or new.ndim != 1:
        return "headers:empty", "empty"
    if how == "decreasing":
        new = new[::-1].copy()
    elif how == "out-of-range":
        top = np.iinfo(new.dtype).max if new.dtype.kind in "iu" else 2**30
        new[rng.randrange(new.size)] = min(int(new.max()) + rng.choice([1, 1000, 2**30]), top)
    elif how == "negative":
        new[rng.randrange(new.size)] = -rng.choice([1, 2**30])
    elif how == "zero":
        new[:] = 0
    elif how == "huge":
        new[-1] = np.iinfo(new.dtype).max if new.dtype.kind in "iu" else 1e308
    elif how == "off-by-one":
        k = rng.randrange(new.size)
        new[k] = new[k] + 1 if new[k] < np.iinfo(new.dtype).max else 0
    else:
        new = np.frombuffer(bytes(rng.randrange(256) for _ in range(new.nbytes)), dtype=new.dtype).copy()
    _replace(f, f"headers/{key}", new)
    return f"headers:{how}", f"headers/{key} {how}, checksum matching"


def _a_audit(rng, f):
    import numpy as np

    how = rng.choice(["not-json", "list", "string", "deep", "nan", "huge-number", "missing-methods", "utf8"])
    text = {"not-json": b"{not json", "list": b"[1,2,3]", "string": b'"x"', "deep": b"[" * 100000 + b"]" * 100000,
            "nan": b'{"methods": {"restored": {"psnr": NaN}}}', "huge-number": b'{"methods": 1e999999}',
            "missing-methods": b'{"x": 1}', "utf8": b'{"a": "\xff\xfe"}'}[how]
    if "audit" in f:
        _replace(f, "audit", np.frombuffer(text, np.uint8).copy())
    elif "meta" in f:  # format 2: the audit is a member of /meta
        try:
            value = json.loads(text.decode("utf-8"))
        except (ValueError, UnicodeDecodeError, RecursionError):
            value = text.decode("latin-1")[:1000]
        _edit_meta(f, lambda m: m.__setitem__("audit", value))
    return f"audit:{how}", f"audit JSON {how}"


def _edit_meta(f, fn) -> None:
    """Format 2: edit the parsed /meta JSON and store it back with a matching meta_sha256."""
    import hashlib

    import numpy as np

    import zlib

    try:
        m = f["meta"]
        if m.dtype != np.uint8 or m.ndim != 1 or m.shape[0] > 1 << 24:  # an earlier mutation forged it
            return
        meta = json.loads(zlib.decompress(m[()].tobytes()))
    except Exception:  # noqa: BLE001 - an earlier mutation damaged it
        return
    if not isinstance(meta, dict):
        return
    fn(meta)
    text = zlib.compress(json.dumps(meta, sort_keys=True, allow_nan=True).encode("utf-8"))
    del f["meta"]
    f.create_dataset("meta", data=np.frombuffer(text, np.uint8))
    f.attrs["meta_sha256"] = np.bytes_(hashlib.sha256(text).hexdigest())


def _a_meta(rng, f):
    """Format 2: forge /meta with a *matching* checksum: attributes, small arrays, their dtype/shape."""
    if "meta" not in f:
        return "meta:none", "no /meta (format 1)"
    how = rng.choice(["attr", "attr-del", "array-del", "array-shape", "array-dtype", "array-garbage", "array-values",
                      "b64-garbage", "not-dict", "no-arrays"])
    key = rng.choice(list(ATTR_VALUES))
    value = rng.choice(ATTR_VALUES[key])
    pick = rng.random()

    def edit(m):
        arrays = m.get("arrays") if isinstance(m.get("arrays"), dict) else {}
        name = sorted(arrays)[int(pick * len(arrays))] if arrays else None
        a = arrays.get(name) if name else None
        if how == "attr" and isinstance(m.get("attrs"), dict):
            m["attrs"][key] = value
        elif how == "attr-del" and isinstance(m.get("attrs"), dict):
            m["attrs"].pop(key, None)
        elif how == "array-del" and name:
            arrays.pop(name)
        elif how == "array-shape" and a:
            a["shape"] = [2 ** 31, 3] if pick < 0.5 else [-1]
        elif how == "array-dtype" and a:
            a["dtype"] = rng.choice(["<f8", "|S3", "str", "<i1", "xx", "|O"])
        elif how == "array-garbage" and a:
            a["data"] = rng.choice([None, "x", [[1, 2], [3]], {"a": 1}, [1e308] * 5])
        elif how == "array-values" and a and isinstance(a.get("data"), list) and a["data"]:
            a["data"] = [rng.choice([-1, 0, 2 ** 62, 1e308, "x"]) for _ in a["data"]]
        elif how == "b64-garbage" and a:
            a["b64"] = rng.choice(["!!!", "", "AAAA" * 3])
        elif how == "not-dict":
            m.clear()
            m["attrs"] = rng.choice([[], "x", 1])
        elif how == "no-arrays":
            m.pop("arrays", None)

    _edit_meta(f, edit)
    return f"meta:{how}", f"/meta forged ({how}), checksum matching"


def _a_meta_headers(rng, f):
    """Format 2: forge the index of the /headers block (kept in /meta), checksum matching."""
    how = rng.choice(["range", "negative", "dtype", "swap", "missing"])
    part = rng.choice(["blob", "blob_offsets", "element_ids", "slice_offsets", "meta", "meta_offsets"])

    def edit(m):
        parts = m.get("headers", {}).get("parts", {}) if isinstance(m.get("headers"), dict) else {}
        if part not in parts:
            return
        start, stop, dt = parts[part]
        if how == "range":
            parts[part] = [start, stop + 10 ** 6, dt]
        elif how == "negative":
            parts[part] = [-5, stop, dt]
        elif how == "dtype":
            parts[part] = [start, stop, rng.choice(["<f8", "|S3", "<i8", "zz"])]
        elif how == "swap":
            parts[part] = [stop, start, dt]
        else:
            parts.pop(part)

    _edit_meta(f, edit)
    return f"headers:{how}", f"headers index {part} {how} (format 2), checksum matching"


def _b_bytes(rng, raw: bytes):
    how = rng.choice(["flip", "flip-superblock", "truncate", "append", "zero-block", "empty", "flip-many"])
    b = bytearray(raw)
    if how == "flip":
        for _ in range(rng.randint(1, 4)):
            k = rng.randrange(len(b))
            b[k] ^= 1 << rng.randrange(8)
    elif how == "flip-many":
        for _ in range(rng.randint(10, 200)):
            k = rng.randrange(len(b))
            b[k] = rng.randrange(256)
    elif how == "flip-superblock":
        k = rng.randrange(min(len(b), 512))
        b[k] ^= 1 << rng.randrange(8)
    elif how == "truncate":
        b = b[: rng.randrange(len(b))]
    elif how == "append":
        b += bytes(rng.randrange(256) for _ in range(rng.choice([1, 100, 4096])))
    elif how == "zero-block":
        k = rng.randrange(len(b))
        b[k:k + 4096] = b"\0" * len(b[k:k + 4096])
    else:
        b = bytearray()
    return f"bytes:{how}", f"archive bytes {how}", bytes(b)


ARCHIVE_MUTATIONS = [(_a_attr, 10), (_a_del, 5), (_a_sha, 3), (_a_forge, 10), (_a_headers, 5), (_a_audit, 3),
                     (_a_meta, 12)]


# --------------------------------------------------------------------------- cases


def _pick(rng: random.Random, weighted):
    total = sum(w for _, w in weighted)
    x = rng.uniform(0, total)
    for fn, w in weighted:
        x -= w
        if x <= 0:
            return fn
    return weighted[-1][0]


def case_rng(seed: int, index: int) -> random.Random:
    return random.Random(seed * 1_000_003 + index)


def build_case(seed: int, index: int, corpus: dict, folder: Path) -> dict:
    """Write case ``index`` into ``folder``; returns {kind, input, families, descriptions}."""
    import h5py

    rng = case_rng(seed, index)
    folder.mkdir(parents=True, exist_ok=True)
    if rng.random() < 0.6:
        base = corpus["dicom"][rng.choice(sorted(corpus["dicom"]))]
        case = DicomCase(base)
        muts = DICOM_MUTATIONS if base.editable else RAW_ONLY
        fams, descs = [], []
        for _ in range(0 if rng.random() < 0.03 else rng.choice([1, 1, 1, 2, 2, 3])):
            fam, desc = _pick(rng, muts)(rng, case, corpus["dicom"])
            fams.append(fam)
            descs.append(desc)
        src = folder / "in"
        for name, raw in case.files():
            p = src / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(raw)
        return {"kind": "dicom", "input": str(src), "base": base.name, "families": fams or ["none"],
                "mutations": descs, "mode": MODES[index % len(MODES)]}
    name = rng.choice(sorted(corpus["archive"]))
    arc = folder / "in.medsr.h5"
    fams, descs = [], []
    n = 0 if rng.random() < 0.03 else rng.choice([1, 1, 1, 2, 2, 3])
    raw_level = rng.random() < 0.35
    if raw_level and n:
        fam, desc, data = _b_bytes(rng, corpus["archive"][name])
        arc.write_bytes(data)
        fams.append(fam)
        descs.append(desc)
    else:
        arc.write_bytes(corpus["archive"][name])
        if n:
            with h5py.File(arc, "a") as f:
                for _ in range(n):
                    fam, desc = _pick(rng, ARCHIVE_MUTATIONS)(rng, f)
                    fams.append(fam)
                    descs.append(desc)
    return {"kind": "archive", "input": str(arc), "base": name, "families": fams or ["none"], "mutations": descs}


# --------------------------------------------------------------------------- running one case


def _phi_markers() -> tuple[str, ...]:
    from dicom_fixtures import PHI_MARKERS

    return tuple(PHI_MARKERS)


class _Bug(Exception):
    def __init__(self, outcome: str, detail: str):
        super().__init__(detail)
        self.outcome = outcome
        self.detail = detail


def _leftovers(out: Path, allowed: set[str]) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name not in allowed)


def _call(what: str, fn, out: Path, allowed: set[str], final: str, markers) -> tuple[bool, object]:
    """Run one API call: (True, result) or (False, MedsrError); raises _Bug for anything else."""
    from medsr.errors import MedsrError

    try:
        return True, fn()
    except MedsrError as e:
        msg = str(e)
        if "MemoryError" in msg or "Unable to allocate" in msg:
            raise _Bug("crash", f"{what}: MemoryError behind a clean error: {msg[:300]}") from None
        if "\n" in msg:
            raise _Bug("crash", f"{what}: multi-line error message: {msg[:300]!r}") from None
        for m in markers:
            if m in msg or m.replace("^", " ") in msg:
                raise _Bug("leak", f"{what}: error message holds a patient marker: {msg[:300]!r}") from None
        left = _leftovers(out, allowed)
        if left:
            raise _Bug("partial", f"{what} failed ({msg[:200]}) and left {left}") from None
        return False, e
    except _Bug:
        raise
    except BaseException as e:  # noqa: BLE001 - anything but a MedsrError is a bug
        if isinstance(e, KeyboardInterrupt):
            raise
        tb = traceback.extract_tb(e.__traceback__)
        where = next((f"{Path(fr.filename).name}:{fr.lineno} in {fr.name}" for fr in reversed(tb)
                      if "/medsr/" in fr.filename), tb[-1].name if tb else "?")
        raise _Bug("crash", f"{what}: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''} "
                            f"[{where}]") from None


def run_case(case: dict, folder: Path, markers) -> tuple[str, str]:
    """-> (outcome, detail). Never raises."""
    import warnings

    import medsr
    from medsr.archive import verify_archive

    out = folder / "out"
    out.mkdir(exist_ok=True)
    options = archive_options(case.get("mode", "bicubic"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if case["kind"] == "dicom":
                ok, res = _call("archive", lambda: medsr.archive_series(case["input"], out / "a.medsr.h5", options),
                                out, set(), "a.medsr.h5", markers)
                if not ok:
                    return "error", str(res)[:300]
                _no_temps(out)
                v = verify_archive(out / "a.medsr.h5")
                if not v.ok:
                    raise _Bug("inconsistent", f"a just-written archive fails verification: {v.problems[0][:200]}")
                arc = out / "a.medsr.h5"
                allowed = {"a.medsr.h5"}
            else:
                arc = Path(case["input"])
                allowed = set()
                try:
                    v = verify_archive(arc)
                except BaseException as e:  # noqa: BLE001
                    raise _Bug("crash", f"verify_archive raised {type(e).__name__}: {str(e)[:200]}") from None
                for p in v.problems:
                    if "\n" in p or any(m in p for m in markers):
                        raise _Bug("leak" if "\n" not in p else "crash", f"verify problem text: {p[:200]!r}")
                ok_info, info = _call("open", lambda: medsr.open_archive(arc), out, allowed, "", markers)
                if v.ok and not ok_info:
                    raise _Bug("inconsistent", f"verify OK but open_archive failed: {str(info)[:200]}")
            kind = None
            try:
                kind = medsr.open_archive(arc).kind
            except Exception:  # noqa: BLE001 - judged by the calls above
                pass
            fmt = "nifti" if kind == "nifti" else "dicom"
            target = "r.nii.gz" if fmt == "nifti" else "r"
            ok_r, res_r = _call("restore", lambda: medsr.restore_archive(
                arc, out / target, medsr.RestoreOptions(format=fmt)), out, allowed, target, markers)
            _no_temps(out)
            if case["kind"] == "dicom" and not ok_r:
                raise _Bug("inconsistent", f"a just-written archive does not restore: {str(res_r)[:200]}")
            from medsr.errors import ModelError

            if case["kind"] == "archive" and v.ok and not ok_r and not isinstance(res_r, ModelError):
                # (a model this installation does not have is not the archive's fault)
                raise _Bug("inconsistent", f"verify OK but restore failed: {str(res_r)[:200]}")
            if ok_r and fmt == "dicom" and len(res_r.files) != medsr.open_archive(arc).n_slices:
                raise _Bug("inconsistent", "restore wrote a different number of files than slices")
            if case["kind"] == "archive" and not (v.ok and ok_r):
                return "error", (v.problems[0] if v.problems else str(res_r))[:300]
            return "ok", ""
    except _Bug as b:
        return b.outcome, b.detail


def _no_temps(out: Path) -> None:
    left = [p.name for p in out.iterdir() if p.name.startswith(".medsr-tmp-")]
    if left:
        raise _Bug("partial", f"temp left after success: {left}")


# --------------------------------------------------------------------------- workers


def _worker(conn, corpus_dir: str, seed: int, mem_gb: float, work: str) -> None:
    import logging
    import pickle
    import resource
    import warnings

    if mem_gb > 0:
        lim = int(mem_gb * (1 << 30))
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
    warnings.simplefilter("ignore")
    logging.getLogger("medsr").setLevel(logging.CRITICAL)
    logging.getLogger("nibabel").setLevel(logging.CRITICAL)
    logging.getLogger("nibabel.global").setLevel(logging.CRITICAL)
    try:
        import torch

        torch.set_num_threads(1)
    except Exception:  # noqa: BLE001
        pass
    import pydicom

    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    with open(Path(corpus_dir) / "corpus.pickle", "rb") as fh:
        corpus = pickle.load(fh)  # written by this module, moments ago  # nosec B301
    markers = _phi_markers()
    while True:
        try:
            index = conn.recv()
        except EOFError:
            return
        if index is None:
            return
        folder = Path(work) / f"case-{index}"
        t0 = time.perf_counter()
        try:
            case = build_case(seed, index, corpus, folder)
        except Exception as e:  # noqa: BLE001 - a bug in the fuzzer, not in medsr
            conn.send({"index": index, "outcome": "fuzzer-error", "detail": f"{type(e).__name__}: {e}"[:300],
                       "families": ["?"], "mutations": [], "seconds": 0.0})
            shutil.rmtree(folder, ignore_errors=True)
            continue
        outcome, detail = run_case(case, folder, markers)
        conn.send({"index": index, "outcome": outcome, "detail": detail, "kind": case["kind"], "base": case["base"],
                   "mode": case.get("mode"), "families": case["families"], "mutations": case["mutations"],
                   "seconds": round(time.perf_counter() - t0, 3)})
        shutil.rmtree(folder, ignore_errors=True)


class _Pool:
    def __init__(self, n: int, corpus_dir: Path, seed: int, mem_gb: float, work: Path):
        import multiprocessing as mp

        self.ctx = mp.get_context("spawn")
        self.args = (str(corpus_dir), seed, mem_gb, str(work))
        self.slots = [self._spawn() for _ in range(n)]

    def _spawn(self):
        parent, child = self.ctx.Pipe()
        p = self.ctx.Process(target=_worker, args=(child,) + self.args, daemon=True)
        p.start()
        child.close()
        return {"proc": p, "conn": parent, "index": None, "since": 0.0}

    def replace(self, k: int) -> None:
        s = self.slots[k]
        s["proc"].kill()
        s["proc"].join(10)
        s["conn"].close()
        self.slots[k] = self._spawn()

    def close(self) -> None:
        for s in self.slots:
            try:
                s["conn"].send(None)
            except (OSError, BrokenPipeError):
                pass
        for s in self.slots:
            s["proc"].join(5)
            if s["proc"].is_alive():
                s["proc"].kill()


def run_fuzz(cases: int, *, seed: int = 0, workers: int = 2, timeout: float = 60.0, mem_gb: float = 6.0,
             start: int = 0, progress: bool = False, work_dir: Path | None = None) -> dict:
    """Run cases ``start .. start+cases-1``; returns the summary dict (see ``main``)."""
    import multiprocessing.connection as mpc
    import pickle

    t0 = time.perf_counter()
    own = work_dir is None
    root = Path(tempfile.mkdtemp(prefix="medsr-fuzz-")) if own else Path(work_dir)
    try:
        corpus = build_corpus(root / "corpus")
        with open(root / "corpus" / "corpus.pickle", "wb") as fh:
            pickle.dump(corpus, fh)
        (root / "work").mkdir(exist_ok=True)
        pool = _Pool(max(1, workers), root / "corpus", seed, mem_gb, root / "work")
        todo = list(range(start, start + cases))
        results: list[dict] = []
        try:
            while todo or any(s["index"] is not None for s in pool.slots):
                for s in pool.slots:
                    if s["index"] is None and todo:
                        s["index"] = todo.pop(0)
                        s["since"] = time.monotonic()
                        s["conn"].send(s["index"])
                busy = [s["conn"] for s in pool.slots if s["index"] is not None]
                ready = mpc.wait(busy, timeout=1.0)
                for k, s in enumerate(pool.slots):
                    if s["index"] is None:
                        continue
                    if s["conn"] in ready:
                        try:
                            r = s["conn"].recv()
                        except (EOFError, OSError):
                            code = s["proc"].exitcode if not s["proc"].is_alive() else None
                            s["proc"].join(5)
                            code = s["proc"].exitcode
                            r = {"index": s["index"], "outcome": "crash", "families": ["?"], "mutations": [],
                                 "detail": f"worker process died (exit code {code})", "seconds": 0.0}
                            results.append(r)
                            shutil.rmtree(root / "work" / f"case-{s['index']}", ignore_errors=True)
                            s["index"] = None
                            pool.replace(k)
                            continue
                        results.append(r)
                        s["index"] = None
                    elif time.monotonic() - s["since"] > timeout:
                        results.append({"index": s["index"], "outcome": "hang", "families": ["?"], "mutations": [],
                                        "detail": f"no answer within {timeout:g} s", "seconds": timeout})
                        shutil.rmtree(root / "work" / f"case-{s['index']}", ignore_errors=True)
                        s["index"] = None
                        pool.replace(k)
                if progress and results and len(results) % 500 == 0:
                    _print_progress(results, cases, t0)
        finally:
            pool.close()
    finally:
        if own:
            shutil.rmtree(root, ignore_errors=True)
    return summarise(results, seed=seed, seconds=time.perf_counter() - t0, workers=workers, timeout=timeout)


def _print_progress(results, total, t0):
    c = {o: sum(r["outcome"] == o for r in results) for o in OUTCOMES}
    print(f"  {len(results)}/{total} cases in {time.perf_counter() - t0:.0f} s: " +
          ", ".join(f"{k} {v}" for k, v in c.items()), file=sys.stderr, flush=True)


def summarise(results: list[dict], *, seed: int, seconds: float, workers: int, timeout: float) -> dict:
    results = sorted(results, key=lambda r: r["index"])
    counts = {o: sum(r["outcome"] == o for r in results) for o in OUTCOMES + ("fuzzer-error",)}
    fam: dict[str, dict[str, int]] = {}
    for r in results:
        for f in set(r.get("families", [])):
            d = fam.setdefault(f, dict.fromkeys(OUTCOMES + ("fuzzer-error",), 0))
            d[r["outcome"]] += 1
    failures = [r for r in results if r["outcome"] in BAD + ("fuzzer-error",)]
    return {"schema": "medsr-fuzz-v1", "seed": seed, "cases": len(results), "seconds": round(seconds, 1),
            "workers": workers, "timeout_s": timeout, "counts": counts,
            "by_kind": {k: sum(r.get("kind") == k for r in results) for k in ("dicom", "archive")},
            # DICOM cases by how they were archived; archive cases by the kind of archive mutated
            "by_mode": {m: sum(r.get("kind") == "dicom" and r.get("mode") == m for r in results) for m in MODES},
            "by_archive": {a: sum(r.get("kind") == "archive" and r.get("base") == a for r in results)
                           for a in sorted({r.get("base") for r in results if r.get("kind") == "archive"})},
            "families": dict(sorted(fam.items())), "failures": failures,
            "passed": not failures}


def _report(s: dict) -> str:
    c = s["counts"]
    lines = [f"fuzz: {s['cases']} cases (seed {s['seed']}, {s['by_kind']['dicom']} DICOM series, "
             f"{s['by_kind']['archive']} archives) in {s['seconds']:.0f} s on {s['workers']} workers: "
             f"ok {c['ok']}, clean errors {c['error']}, crashes {c['crash']}, hangs {c['hang']}, "
             f"partial {c['partial']}, inconsistent {c['inconsistent']}, phi leaks {c['leak']}"
             + (f", fuzzer errors {c['fuzzer-error']}" if c["fuzzer-error"] else "")]
    for r in s["failures"][:40]:
        lines.append(f"  {r['outcome'].upper()} case {r['index']} [{r.get('base', '?')}] "
                     f"({', '.join(r.get('mutations') or r['families'])})"
                     f": {r['detail']}")
    if len(s["failures"]) > 40:
        lines.append(f"  ... and {len(s['failures']) - 40} more (see --json)")
    if s["failures"]:
        lines.append(f"  rerun one: python -m pipelines.fuzz --seed {s['seed']} --case N")
    return "\n".join(lines)


def run_one(seed: int, index: int, keep: Path | None = None) -> int:
    """Build and run one case in this process, printing what it did (and a traceback on a crash)."""
    root = Path(tempfile.mkdtemp(prefix="medsr-fuzz-one-"))
    corpus = build_corpus(root / "corpus")
    folder = (keep or root) / f"case-{index}"
    case = build_case(seed, index, corpus, folder)
    print(json.dumps({k: case[k] for k in ("kind", "base", "families", "mutations", "input")}, indent=1))
    outcome, detail = run_case(case, folder, _phi_markers())
    print(f"outcome: {outcome} {detail}")
    if keep is None:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if outcome in ("ok", "error") else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.fuzz", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", type=int, default=0, help="first case index")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per case before it counts as a hang")
    ap.add_argument("--mem-gb", type=float, default=6.0, help="address-space limit per worker (0: none)")
    ap.add_argument("--json", metavar="PATH", help="write the summary (every failure) as JSON")
    ap.add_argument("--case", type=int, help="run this one case in this process, verbosely")
    ap.add_argument("--keep", metavar="DIR", help="with --case: keep the case's files in DIR")
    ap.add_argument("--progress", action="store_true", help="print counts every 500 cases on stderr")
    args = ap.parse_args(argv)
    if args.case is not None:
        return run_one(args.seed, args.case, Path(args.keep) if args.keep else None)
    s = run_fuzz(args.cases, seed=args.seed, workers=args.workers, timeout=args.timeout, mem_gb=args.mem_gb,
                 start=args.start, progress=args.progress)
    print(_report(s))
    if args.json:
        Path(args.json).write_text(json.dumps(s, indent=1, default=str))
    return 0 if s["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
