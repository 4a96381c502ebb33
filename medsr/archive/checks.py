"""Structural checks of an archive, run before anything is allocated or trusted.

Checksums prove the bytes are the ones written; these checks prove the written values
make sense, so that a damaged or forged archive (even one whose checksums were
recomputed) gives one ``ArchiveError`` line instead of a crash, a hang or a huge
allocation. ``format.py`` calls them at four points:

- ``check_open(f, path)``: right after opening: format/version readable, and no dataset
  declares more bytes than its storage can hold (an unallocated HDF5 dataset of
  60000 x 60000 x n reads as zeros: reading it would allocate all of it);
- ``check_info(info, f)``: attributes in range (kind, method, operator and scale, dtype,
  sizes within the limits of ``medsr.io.series``, padding, window) and the pixel
  dataset's declared shape;
- ``check_arrays(...)``: after reading: every per-slice array has one entry per slice and
  the packed-header index is consistent (offsets monotonic and in bounds);
- ``check_headers(data)`` (``verify_archive``): every stored header decodes and has what
  a restore needs (SOP Class/Instance UID, Rows/Columns/Bits Allocated of the archive).
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import ArchiveError
from ..io.series import MAX_PIXELS_PER_SLICE, MAX_SERIES_PIXELS, MAX_SLICES

#: deflate cannot compress better than ~1032:1; a dataset declaring more than this many times
#: its stored bytes (plus slack) is not backed by data
MAX_EXPANSION = 1100
SLACK_BYTES = 1 << 20
MAX_DATASET_BYTES = 4 << 30
METHODS = ("model", "bicubic", "nearest")
KINDS = ("dicom", "nifti")


def _err(path, msg: str) -> ArchiveError:
    return ArchiveError(msg, path=path)


def check_open(f, path) -> None:
    """Refuse unreadable root attributes and datasets that declare more than they store."""
    import h5py

    try:
        fmt = f.attrs.get("format")
        version = f.attrs.get("format_version", -1)
    except Exception as e:  # noqa: BLE001 - h5py raises OSError/KeyError/... on damaged metadata
        f.close()
        raise _err(path, f"archive metadata is damaged ({type(e).__name__})") from None
    try:
        int(version)
    except (TypeError, ValueError, OverflowError):
        f.close()
        raise _err(path, "archive format version is not a number") from None
    if isinstance(fmt, bytes):
        try:
            fmt.decode()
        except UnicodeDecodeError:
            f.close()
            raise _err(path, "not a medsr archive (format attribute is not text)") from None
    problems: list[str] = []

    def visit(name, obj):
        if problems or not isinstance(obj, h5py.Dataset):
            return
        try:
            shape = obj.shape or ()
            items = math.prod(shape) if shape else 1
            declared = items * max(obj.dtype.itemsize, 1)
            stored = obj.id.get_storage_size()
        except Exception as e:  # noqa: BLE001
            problems.append(f"dataset {name} is damaged ({type(e).__name__})")
            return
        if declared > MAX_DATASET_BYTES or declared > MAX_EXPANSION * stored + SLACK_BYTES:
            problems.append(f"dataset {name} declares {declared:,} bytes but stores {stored:,}: damaged or forged; "
                            "refused before reading")

    try:
        f.visititems(visit)
    except Exception as e:  # noqa: BLE001
        problems.append(f"archive structure is damaged ({type(e).__name__})")
    if problems:
        f.close()
        raise _err(path, problems[0])


def check_info(info, f=None):
    """Attribute ranges and the declared low-res shape; returns ``info`` (raises ``ArchiveError``)."""
    from ..codec import get_operator
    from ..errors import MedsrError

    p = info.path
    if info.kind not in KINDS:
        raise _err(p, f"unknown archive kind {info.kind!r} (dicom or nifti)")
    if info.method not in METHODS:
        raise _err(p, f"unknown restore method {info.method!r} recorded (model, bicubic or nearest)")
    try:
        op = get_operator(info.operator)
    except MedsrError:
        raise _err(p, f"unknown down-sampling operator {info.operator!r} recorded") from None
    if info.scale != op.scale:
        raise _err(p, f"scale {info.scale} does not match operator {info.operator} (x{op.scale})")
    try:
        dt = np.dtype(info.dtype)
    except TypeError:
        raise _err(p, f"unknown pixel dtype {info.dtype!r}") from None
    if dt.kind not in "iuf" or dt.itemsize > 8 or (dt.kind == "f" and dt.itemsize < 4):
        raise _err(p, f"unsupported pixel dtype {info.dtype!r}")
    if dt.kind in "iu" and not (1 <= info.bits_stored <= dt.itemsize * 8):
        raise _err(p, f"bits_stored {info.bits_stored} does not fit dtype {info.dtype}")
    if info.pixel_representation not in (0, 1):
        raise _err(p, f"pixel_representation {info.pixel_representation} is not 0 or 1")
    if not (1 <= info.n_slices <= MAX_SLICES):
        raise _err(p, f"archive holds {info.n_slices} slices (1 .. {MAX_SLICES} supported)")
    if not (1 <= info.rows and 1 <= info.cols and info.rows * info.cols <= MAX_PIXELS_PER_SLICE):
        raise _err(p, f"image size {info.rows}x{info.cols} is out of range")
    if info.n_slices * info.rows * info.cols > MAX_SERIES_PIXELS:
        raise _err(p, f"series of {info.n_slices}x{info.rows}x{info.cols} pixels exceeds {MAX_SERIES_PIXELS:,}")
    for name, pad, size in (("pad_rows", info.pad_rows, info.rows), ("pad_cols", info.pad_cols, info.cols)):
        if not (0 <= pad < info.scale) or (size + pad) % info.scale:
            raise _err(p, f"{name} {pad} is inconsistent with size {size} and scale {info.scale}")
    if not (math.isfinite(info.window_lo) and math.isfinite(info.window_hi) and info.window_hi > info.window_lo):
        raise _err(p, f"intensity window [{info.window_lo}, {info.window_hi}] is not a finite, non-empty range")
    if f is not None and getattr(info, "base", "lossless") == "lossless":
        want = (info.n_slices, (info.rows + info.pad_rows) // info.scale, (info.cols + info.pad_cols) // info.scale)
        lr = f["lowres"]
        if tuple(lr.shape) != want:
            raise _err(p, f"low-res dataset has shape {tuple(lr.shape)}, the attributes say {want}")
        if lr.dtype != dt:
            raise _err(p, f"low-res dataset is {lr.dtype}, the attributes say {info.dtype}")
    return info


def _index(p, name: str, a, length: int | None, end: int | None) -> None:
    a = np.asarray(a)
    if a.ndim != 1 or a.dtype.kind not in "iu":
        raise _err(p, f"{name} is not a 1-D integer array")
    if length is not None and len(a) != length:
        raise _err(p, f"{name} has {len(a)} entries, expected {length}")
    if len(a) and (a[0] != 0 or np.any(np.diff(a.astype(np.int64)) < 0) or (end is not None and a[-1] != end)):
        raise _err(p, f"{name} is not a monotonic index from 0 to {end}")


def check_arrays(info, lowres, slope, intercept, positions, sha, names, sizes, headers, affine=None,
                 nifti_header=None) -> None:
    """Shapes and index consistency of everything ``read_archive`` read (raises ``ArchiveError``)."""
    p, n = info.path, info.n_slices
    want = (n, (info.rows + info.pad_rows) // info.scale, (info.cols + info.pad_cols) // info.scale)
    lr = np.asarray(lowres)
    if lr.shape != want or lr.dtype != np.dtype(info.dtype):
        raise _err(p, f"low-res stack is {lr.dtype} {lr.shape}, the attributes say {info.dtype} {want}")
    for name, a in (("slices/slope", slope), ("slices/intercept", intercept)):
        a = np.asarray(a)
        if a.shape != (n,) or a.dtype.kind not in "fiu":
            raise _err(p, f"{name} has shape {a.shape}, expected ({n},)")
    pos = None if positions is None else np.asarray(positions)
    if pos is not None and (pos.shape != (n, 3) or pos.dtype.kind not in "fiu"):
        raise _err(p, f"slices/position has shape {pos.shape}, expected ({n}, 3)")
    if len(sha) < 1 or len(names) != len(sha) or len(sizes) != len(sha) or (info.kind == "dicom" and len(sha) != n):
        raise _err(p, "sources/sha256, sources/name and sources/bytes disagree with the number of slices")
    if any(len(s) != 64 or any(c not in "0123456789abcdef" for c in s) for s in sha):
        raise _err(p, "sources/sha256 holds a value that is not a sha256")
    if info.kind == "dicom" and headers is None:
        raise _err(p, "archive of a DICOM series holds no headers")
    if headers is not None:
        for k in ("blob", "meta"):
            a = np.asarray(getattr(headers, k))
            if a.ndim != 1 or a.dtype != np.uint8:
                raise _err(p, f"headers/{k} is not a byte array")
        ids = np.asarray(headers.element_ids)
        if ids.ndim != 1 or ids.dtype.kind not in "iu":
            raise _err(p, "headers/element_ids is not a 1-D integer array")
        _index(p, "headers/blob_offsets", headers.blob_offsets, None, len(headers.blob))
        _index(p, "headers/slice_offsets", headers.slice_offsets, n + 1, len(ids))
        _index(p, "headers/meta_offsets", headers.meta_offsets, n + 1, len(headers.meta))
        if ids.size and (ids.min() < 0 or ids.max() >= len(headers.blob_offsets) - 1):
            raise _err(p, "headers/element_ids points outside the stored elements")
    if info.kind == "nifti":
        a = np.asarray(affine, dtype=float) if affine is not None and np.asarray(affine).dtype.kind in "fiu" else None
        if (a is None or a.shape != (4, 4) or not np.isfinite(a).all() or not np.allclose(a[3], [0, 0, 0, 1])
                or abs(np.linalg.det(a[:3, :3])) < 1e-12):
            raise _err(p, "nifti/affine is not a finite, invertible 4x4 affine")
        if nifti_header is not None and len(nifti_header) not in (0, 348, 540):
            raise _err(p, f"nifti/header has {len(nifti_header)} bytes (a NIfTI header has 348 or 540)")


def nifti_header(data):
    """The stored NIfTI header as a nibabel header, or ``ArchiveError`` (one line, nibabel's log silenced)."""
    import io
    import logging

    import nibabel as nib

    quiet = logging.getLogger("nibabel.global")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        hdr = nib.Nifti1Header.from_fileobj(io.BytesIO(data.nifti_header), check=True)
        hdr.get_data_shape()
        hdr.get_data_dtype()
        return hdr
    except Exception as e:  # noqa: BLE001 - HeaderDataError and friends on damaged bytes
        raise _err(data.info.path, f"stored NIfTI header is damaged ({type(e).__name__})") from None
    finally:
        quiet.setLevel(level)


def check_headers(data) -> None:
    """Every stored header decodes and carries what a restore needs (``verify_archive``)."""
    info = data.info
    if info.kind == "nifti" and data.nifti_header:
        nifti_header(data)
    if data.headers is None:
        return
    bits = np.dtype(info.dtype).itemsize * 8
    for i in range(info.n_slices):
        ds = data.header(i)
        for kw in ("SOPClassUID", "SOPInstanceUID", "Rows", "Columns", "BitsAllocated"):
            try:
                ok = kw in ds and ds[kw].value not in (None, "")
            except Exception:  # noqa: BLE001 - an undecodable element
                ok = False
            if not ok:
                raise _err(info.path, f"header {i} has no usable {kw}")
        try:
            rows, cols, alloc = int(ds.Rows), int(ds.Columns), int(ds.BitsAllocated)
        except Exception:  # noqa: BLE001
            raise _err(info.path, f"header {i} has unreadable Rows/Columns/Bits Allocated") from None
        if (rows, cols) != (info.rows, info.cols) or alloc != bits:
            raise _err(info.path, f"header {i} says {rows}x{cols} at {alloc} bits; the archive holds "
                                  f"{info.rows}x{info.cols} at {bits}")
