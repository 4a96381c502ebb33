"""Write small, realistic synthetic MR test series (and some broken inputs).

    python -m dicom_fixtures.build OUTDIR [--case NAME ...]

``build_all(out_dir)`` writes every case in ``CASES`` into ``out_dir/<name>/``;
``build_series(out_dir, spec)`` writes one series.  Output is deterministic:
the same code writes byte-identical files on every run.
"""

from __future__ import annotations

import argparse
import struct
import sys
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from io import BytesIO
from pathlib import Path

import numpy as np
from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    MediaStorageDirectoryStorage,
    RLELossless,
)

from . import enhanced
from .headers import instance_uid, slice_dataset
from .phantom import stored_pixels
from .spec import SeriesSpec, affine_lps

# -- writing one series ---------------------------------------------------------


def _pixel_element_vr(spec: SeriesSpec) -> str:
    return "OW" if spec.bits_allocated == 16 else "OB"


def set_pixel_data(ds: Dataset, spec: SeriesSpec, frame: np.ndarray) -> None:
    """Store ``frame`` in ``ds`` encoded for ``spec.transfer_syntax``."""
    syntax = spec.transfer_syntax_uid
    ds.file_meta.TransferSyntaxUID = syntax
    if syntax.is_encapsulated:
        ds.compress(syntax, frame, generate_instance_uid=False)
        return
    byte_order = "<" if syntax.is_little_endian else ">"  # OW is swapped by hand
    frame = frame.astype(frame.dtype.newbyteorder(byte_order))
    ds.add_new(0x7FE00010, _pixel_element_vr(spec), frame.tobytes())


def slice_with_pixels(
    spec: SeriesSpec, index: int, instance_number: int | None = None, volume: np.ndarray | None = None
) -> Dataset:
    """Header plus encoded Pixel Data of slice ``index`` (spatial order).

    ``volume`` is ``stored_pixels(spec)``, passed in when writing many slices.
    """
    ds = slice_dataset(spec, index, instance_number)
    volume = stored_pixels(spec) if volume is None else volume
    set_pixel_data(ds, spec, volume[index])
    return ds


def _write(path: Path, ds: Dataset) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    dcmwrite(path, ds, enforce_file_format=True)
    return path


def default_names(spec: SeriesSpec) -> list[str]:
    return [f"IM{k + 1:04d}.dcm" for k in range(spec.slices)]


def build_series(
    out_dir: Path | str,
    spec: SeriesSpec,
    *,
    names: Sequence[str] | None = None,
    instance_numbers: Sequence[int] | None = None,
) -> list[Path]:
    """Write one series, a file per slice, into ``out_dir``.

    ``names`` (relative paths, may contain sub-folders) and ``instance_numbers``
    are per slice in spatial order; by default ``IM0001.dcm``... and 1..n.
    Returns the written files in spatial order (increasing along the normal).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = default_names(spec) if names is None else list(names)
    numbers = list(range(1, spec.slices + 1)) if instance_numbers is None else list(instance_numbers)
    if len(names) != spec.slices or len(numbers) != spec.slices:
        raise ValueError("names and instance_numbers need one entry per slice")
    volume = stored_pixels(spec)
    return [
        _write(out_dir / name, slice_with_pixels(spec, k, number, volume))
        for k, (name, number) in enumerate(zip(names, numbers))
    ]


# -- the named cases --------------------------------------------------------------

BASIC = SeriesSpec()
_LOSSLESS = {
    "j2k": JPEG2000Lossless,
    "jpegls": JPEGLSLossless,
    "rle": RLELossless,
    "deflate": DeflatedExplicitVRLittleEndian,
    "implicit": ImplicitVRLittleEndian,
    "bigendian": ExplicitVRBigEndian,
}


@dataclass(frozen=True)
class Case:
    """A named fixture folder: what it holds and how to write it."""

    name: str
    description: str
    specs: tuple[SeriesSpec, ...] = ()
    writer: Callable[[Path, "Case"], list[Path]] | None = field(default=None, repr=False)

    def build(self, folder: Path) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        if self.writer is None:
            return [p for spec in self.specs for p in build_series(folder, spec)]
        return self.writer(folder, self)


def _write_shuffled(folder: Path, case: Case) -> list[Path]:
    """Random names, scrambled InstanceNumbers, half the files two levels down,
    plus a text note and a DICOMDIR-like non-image DICOM file."""
    (spec,) = case.specs
    rng = np.random.default_rng(spec.seed + 1000)
    numbers = [int(v) + 1 for v in rng.permutation(spec.slices)]
    while numbers == sorted(numbers):  # never leave it in spatial order
        numbers = [int(v) + 1 for v in rng.permutation(spec.slices)]
    names = []
    for k in range(spec.slices):
        token = rng.bytes(6).hex()
        names.append(token if k % 2 else f"sub/deeper/{token}.dcm")
    files = build_series(folder, spec, names=names, instance_numbers=numbers)
    (folder / "notes.txt").write_text("Exported from a PACS for testing. Not an image.\n")
    _write_dicomdir_like(folder / "sub" / "DICOMDIR")
    return files


def _write_dicomdir_like(path: Path) -> None:
    """A Media Storage Directory object (no pixels) that readers must skip."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MediaStorageDirectoryStorage
    ds.file_meta.MediaStorageSOPInstanceUID = instance_uid(BASIC, -1)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.FileSetID = "FIXTURE"
    ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = 0
    ds.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = 0
    ds.FileSetConsistencyFlag = 0
    ds.DirectoryRecordSequence = []
    _write(path, ds)


def _command_set_bytes(ds: Dataset) -> bytes:
    """Group 0000 elements as a C-STORE request would carry them."""
    command = Dataset()
    command.AffectedSOPClassUID = ds.SOPClassUID
    command.CommandField = 0x0001
    command.MessageID = 7
    command.Priority = 0
    command.CommandDataSetType = 0x0000
    command.AffectedSOPInstanceUID = ds.SOPInstanceUID
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, command)
    head = DicomBytesIO()
    head.is_little_endian, head.is_implicit_VR = True, False
    length = Dataset()
    length.CommandGroupLength = len(body.getvalue())
    write_dataset(head, length)
    return head.getvalue() + body.getvalue()


def _write_command_set(folder: Path, case: Case) -> list[Path]:
    """Every file has a (0000,eeee) command group spliced in after the file meta
    and a (FFFC,FFFC) Data Set Trailing Padding element after Pixel Data."""
    (spec,) = case.specs
    files = []
    volume = stored_pixels(spec)
    for k, name in enumerate(default_names(spec)):
        ds = slice_with_pixels(spec, k, volume=volume)
        ds.add_new(0xFFFCFFFC, "OB", b"\x00" * 64)
        buffer = BytesIO()
        dcmwrite(buffer, ds, enforce_file_format=True)
        raw = buffer.getvalue()
        meta_end = 132 + 12 + struct.unpack("<I", raw[140:144])[0]
        path = folder / name
        path.write_bytes(raw[:meta_end] + _command_set_bytes(ds) + raw[meta_end:])
        files.append(path)
    return files


def _write_two_series(folder: Path, case: Case) -> list[Path]:
    """Two series in one folder with interleaved file names."""
    files = []
    for offset, spec in enumerate(case.specs):
        names = [f"IM{2 * k + offset + 1:04d}.dcm" for k in range(spec.slices)]
        files += build_series(folder, spec, names=names)
    return files


def _write_truncated(folder: Path, case: Case) -> list[Path]:
    """One file cut off in the middle of its Pixel Data."""
    (spec,) = case.specs
    buffer = BytesIO()
    dcmwrite(buffer, slice_with_pixels(spec, spec.slices // 2), enforce_file_format=True)
    raw = buffer.getvalue()
    pixel_bytes = spec.rows * spec.cols * spec.bits_allocated // 8
    path = folder / "IM0001.dcm"
    path.write_bytes(raw[: len(raw) - pixel_bytes // 2])
    return [path]


def _write_nothing(folder: Path, case: Case) -> list[Path]:
    return []


def tiny_png(size: int = 8) -> bytes:
    """A valid grey-scale PNG (a gradient), written without any image library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes((x * 32 + y * 8) % 256 for x in range(size)) for y in range(size))
    header = struct.pack(">IIBBBBB", size, size, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")


def _write_not_dicom(folder: Path, case: Case) -> list[Path]:
    """Only non-DICOM files, one of them misleadingly named ``.dcm``."""
    files = {
        "README.txt": b"Scan notes for a test patient.\nNo images here.\n",
        "preview.png": tiny_png(),
        "report.dcm": b"This file is plain text with a .dcm extension.\n",
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return [folder / name for name in files]


def nifti_affine_ras(spec: SeriesSpec) -> np.ndarray:
    """Voxel (col, row, slice) -> RAS+ mm affine of the phantom volume."""
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_lps(spec)


def _write_nifti(folder: Path, case: Case) -> list[Path]:
    """The phantom as a NIfTI-1 volume, axes (col, row, slice), RAS affine."""
    import nibabel as nib

    (spec,) = case.specs
    data = np.ascontiguousarray(stored_pixels(spec).transpose(2, 1, 0)).astype(np.int16)
    image = nib.Nifti1Image(data, nifti_affine_ras(spec))
    image.header.set_xyzt_units("mm", "sec")
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    path = folder / "phantom_t1.nii.gz"
    nib.save(image, path)
    return [path]


def _write_enhanced(folder: Path, case: Case) -> list[Path]:
    (spec,) = case.specs
    path = folder / "ENHANCED_MR.dcm"
    _write(path, enhanced.enhanced_dataset(spec, stored_pixels(spec)))
    return [path]


def _cases() -> dict[str, Case]:
    t2 = replace(BASIC, contrast="T2", series_description="T2 TSE AX", series_number=2)
    cases = [
        Case("basic", "12 axial 64x64 uint16 slices, BitsStored 12, explicit VR LE", (BASIC,)),
        Case(
            "odd_size",
            "70x61 sagittal slices (rows/cols not divisible by 4)",
            (SeriesSpec(rows=70, cols=61, orientation="sagittal", series_description="T1 MPRAGE SAG", series_number=3),),
        ),
        Case(
            "signed",
            "int16 PixelRepresentation 1 with negative values, slope 2 intercept -1024",
            (replace(BASIC, dtype="int16", slope=2.0, intercept=-1024.0, stored_offset=-700.0,
                     series_description="T1 MPRAGE AX SIGNED", series_number=4),),
        ),
        Case(
            "rescale",
            "uint16 with RescaleSlope 0.5, RescaleIntercept 10",
            (replace(BASIC, slope=0.5, intercept=10.0, series_description="T1 MPRAGE AX RESCALED", series_number=5),),
        ),
        *(
            Case(name, f"basic's pixels in {UID(syntax).name}", (replace(BASIC, transfer_syntax=syntax),))
            for name, syntax in _LOSSLESS.items()
        ),
        Case(
            "shuffled",
            "random file names, InstanceNumber not in spatial order, sub-folders, notes.txt, DICOMDIR",
            (replace(BASIC, series_description="T1 MPRAGE AX SHUFFLED", series_number=6, seed=1),),
            _write_shuffled,
        ),
        Case(
            "command_set",
            "group 0000 command elements in the data set and (FFFC,FFFC) trailing padding",
            (replace(BASIC, series_description="T1 MPRAGE AX CSTORE", series_number=7),),
            _write_command_set,
        ),
        Case("two_series", "a T1 and a T2 series in one folder", (replace(BASIC, series_number=1), t2), _write_two_series),
        Case(
            "ct",
            "CT Image Storage, must be refused",
            (SeriesSpec(modality="CT", contrast="CT", slope=1.0, intercept=-1024.0, intensity_scale=1.0,
                        stored_offset=1024.0, slice_thickness_mm=5.0, series_description="HEAD CT",
                        series_number=8),),
        ),
        Case(
            "rgb",
            "MR Image Storage with SamplesPerPixel 3 (RGB), must be refused",
            (replace(BASIC, dtype="uint8", bits_stored=8, samples_per_pixel=3,
                     series_description="T1 MPRAGE AX RGB", series_number=9),),
        ),
        Case("truncated", "one DICOM file cut in the middle of Pixel Data", (BASIC,), _write_truncated),
        Case("empty", "an empty folder", (), _write_nothing),
        Case("not_dicom", "text and PNG files only (one named .dcm)", (), _write_not_dicom),
        Case(
            "large_256",
            "24 axial 256x256 slices",
            (SeriesSpec(rows=256, cols=256, slices=24, slice_thickness_mm=3.0,
                        series_description="T1 MPRAGE AX 256", series_number=10),),
        ),
        Case(
            "enhanced",
            "Enhanced MR Image Storage, one multi-frame file",
            (replace(BASIC, series_description="T1 MPRAGE AX ENHANCED", series_number=11),),
            _write_enhanced,
        ),
        Case("nifti", "the basic phantom as .nii.gz (nibabel), RAS affine", (BASIC,), _write_nifti),
    ]
    return {case.name: case for case in cases}


#: Every named fixture case, in build order.
CASES: dict[str, Case] = _cases()


def build_all(out_dir: Path | str, names: Sequence[str] | None = None) -> dict[str, Path]:
    """Write every case (or just ``names``) into ``out_dir/<name>/``."""
    out_dir = Path(out_dir)
    selected = list(CASES) if names is None else list(names)
    unknown = sorted(set(selected) - set(CASES))
    if unknown:
        raise KeyError(f"unknown fixture case(s): {', '.join(unknown)}")
    folders = {}
    for name in selected:
        folder = out_dir / name
        CASES[name].build(folder)
        folders[name] = folder
    return folders


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dicom_fixtures.build", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="folder to write the cases into")
    parser.add_argument("--case", action="append", choices=sorted(CASES), help="build only this case (repeatable)")
    args = parser.parse_args(argv)
    for name, folder in build_all(args.out_dir, args.case).items():
        print(f"{name:12s} {folder}  ({CASES[name].description})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
