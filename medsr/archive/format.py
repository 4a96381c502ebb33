"""The medsr archive: one HDF5 file per series (format documented in docs/archive-format.md).

Layout (format_version 1)::

    /                      attrs: format, format_version, medsr_version, created, operator, scale,
                           method, model_id, model_sha256, model_ensemble (self-ensemble size the
                           audit's restore used; absent = 1), kind, series_uid, rows, cols, pad_rows,
                           pad_cols, dtype, bits_stored, pixel_representation, window_lo, window_hi,
                           original_file_bytes, original_pixel_bytes, below_threshold
    /lowres                (n, h, w) stored dtype, chunk = 1 slice, gzip + shuffle; attr sha256
                           (base "lossless"; base "near-lossless" stores instead
    /lowres_coded          uint8: JPEG-LS codestreams, concatenated, and
    /lowres_coded_offsets  int64 (n + 1): slice i = lowres_coded[off[i]:off[i+1]]; root attrs
                           base, base_near, base_min, base_max; see medsr.codec.base)
    /slices/slope, /slices/intercept (n,) float64; /slices/position (n, 3) float64 (DICOM only)
    /headers/...           packed original headers (see headers.py); each dataset has attr sha256
    /sources/sha256        (n,) sha256 hex of each original file's bytes
    /sources/name          (n,) original file path relative to the input folder
    /sources/bytes         (n,) int64 original file sizes
    /nifti/affine, /nifti/header   (NIfTI input only)
    /audit                 UTF-8 JSON bytes as uint8, gzip (the audit, see medsr.audit); attr sha256
    /floor/kind, /floor/data, /floor/offsets   per-slice quality floor (optional; medsr.floor):
                           (n,) uint8 representation codes, uint8 payloads, int64 (n + 1) offsets;
                           root attrs floor_psnr_fg, floor_ssim, floor_fallback, floor_id

Every dataset carries the sha256 of its bytes; ``verify_archive`` recomputes all of them.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .. import __version__
from ..codec.base import BASE_LOSSLESS, KNOWN_BASES
from ..errors import ArchiveError
from ..io.atomic import atomic_file
from .headers import PackedHeaders, pack_headers, unpack_header
from .checks import check_arrays, check_headers, check_info, check_open
from .digest import names_sha as _names_sha, sha_array as _sha
from .memfile import hdf5_via_memory

FORMAT = "medsr-archive"
ARCHIVE_SUFFIX = ".medsr.h5"  # the file name ending every medsr tool gives an archive
FORMAT_VERSION = 3  # written; READS: every version this medsr reads (1: before the compact container;
READS = (1, 2, 3)  # 2: before the operator and model attribute groups)
@dataclass(frozen=True)
class ArchiveInfo:
    path: Path
    format_version: int
    medsr_version: str
    created: str
    operator: str
    scale: int
    method: str
    model_id: str
    model_sha256: str
    kind: str
    series_uid: str
    n_slices: int
    rows: int
    cols: int
    pad_rows: int
    pad_cols: int
    dtype: str
    bits_stored: int
    pixel_representation: int
    window_lo: float
    window_hi: float
    original_file_bytes: int
    original_pixel_bytes: int
    stored_pixel_bytes: int
    archive_bytes: int
    below_threshold: bool
    audit: Mapping | None = field(default=None, repr=False)  # the stored JSON (medsr.api.open_archive: an Audit)
    base: str = "lossless"  # how /lowres is stored: lossless | near-lossless (medsr.codec.base)
    base_near: int = 0  # near-lossless: max |decoded - true| per low-res value
    floor: dict | None = None  # per-slice floor: the floor and {representation: {slices, bytes}} (medsr.floor)
    model_ensemble: int = 1  # geometric self-ensemble the audit's restore used (absent in older archives: 1)

    @property
    def model(self):
        """The ``medsr.models.ModelRef`` (name, sha256, self-ensemble) the audit's restore used; None without a model."""
        if self.method != "model":
            return None
        from ..models.ref import ModelRef

        return ModelRef.from_record(self.model_id, self.model_sha256, self.model_ensemble)

    @property
    def ratio(self) -> float:
        """Original file bytes / archive file bytes."""
        return self.original_file_bytes / max(self.archive_bytes, 1)

    @property
    def pixel_ratio(self) -> float:
        """Original pixel bytes / stored (compressed) low-res pixel bytes."""
        return self.original_pixel_bytes / max(self.stored_pixel_bytes, 1)

    @property
    def value_range(self) -> tuple[float, float]:
        """The range the stored values may take (Bits Stored, Pixel Representation); unbounded for floats."""
        dt = np.dtype(self.dtype)
        if not np.issubdtype(dt, np.integer):
            return (-np.inf, np.inf)
        b = self.bits_stored
        if self.pixel_representation == 1:
            return (-(1 << (b - 1)), (1 << (b - 1)) - 1)
        return (0, (1 << min(b, dt.itemsize * 8)) - 1)

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "audit"}
        d["path"] = str(self.path)
        d["ratio"] = round(self.ratio, 3)
        d["pixel_ratio"] = round(self.pixel_ratio, 3)
        return d


@dataclass(frozen=True)
class ArchiveData:
    """Everything in an archive needed to restore it (read fully into memory)."""

    info: ArchiveInfo
    lowres: np.ndarray
    slope: np.ndarray
    intercept: np.ndarray
    positions: np.ndarray | None
    headers: PackedHeaders | None
    source_sha256: tuple[str, ...]
    source_names: tuple[str, ...]
    source_bytes: tuple[int, ...]
    nifti_affine: np.ndarray | None = None
    nifti_header: bytes = b""
    floor: object | None = None  # medsr.floor.FloorData; None: every slice is the restore

    def header(self, i: int):
        if self.headers is None:
            raise ArchiveError("archive holds no DICOM headers (NIfTI source)", path=self.info.path)
        return unpack_header(self.headers, i)


def write_archive(path: Path, *, series, lowres: np.ndarray, window, operator: str, scale: int,
                  pad: tuple[int, int], method: str, model=None,
                  audit: dict | None, below_threshold: bool = False, force: bool = False,
                  base=None, floor=None, floor_attrs: dict | None = None) -> ArchiveInfo:
    """Write the archive atomically (temp + fsync + rename, mode 0600); returns its info.

    ``model``: the ``medsr.models.ModelRef`` the audit's restore used (None for bicubic/nearest).
    ``base``: a ``medsr.codec.base.PreparedBase``; None or lossless keeps ``/lowres``.
    ``floor``: a ``medsr.floor.FloorData`` (with ``floor_attrs``: its root attributes) or None.
    """

    from .compact import model_group, operator_group, write_compact

    path = Path(path)
    attrs = dict(
        format=FORMAT, format_version=FORMAT_VERSION, medsr_version=__version__,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        operator=operator_group(operator, scale), method=method, model=model_group(model),
        kind=series.kind, series_uid=series.series_uid,
        rows=series.shape[0], cols=series.shape[1],
        pad_rows=pad[0], pad_cols=pad[1], dtype=str(series.pixels.dtype), bits_stored=series.bits_stored,
        pixel_representation=series.pixel_representation, window_lo=window.lo, window_hi=window.hi,
        original_file_bytes=series.original_file_bytes, original_pixel_bytes=series.original_pixel_bytes,
        below_threshold=bool(below_threshold),
    )
    arrays: dict[str, np.ndarray] = {}  # version 1's dataset names (compact.py stores them in few objects)
    if base is not None and base.meta.base != BASE_LOSSLESS:
        m = base.meta
        attrs.update(dict(base=m.base, base_near=int(m.near), base_min=int(m.vmin), base_max=int(m.vmax)))
        arrays["lowres_coded"] = np.asarray(base.data, dtype=np.uint8)
        arrays["lowres_coded_offsets"] = base.offsets.astype("<i8")
    else:
        attrs.update(dict(base=BASE_LOSSLESS, base_near=0))
        arrays["lowres"] = np.ascontiguousarray(lowres).astype(lowres.dtype.newbyteorder("<"), copy=False)
    arrays["slices/slope"] = series.slope.astype(np.float64)
    arrays["slices/intercept"] = series.intercept.astype(np.float64)
    if series.positions is not None:
        arrays["slices/position"] = series.positions.astype(np.float64)
    root = series.source if series.source.is_dir() else series.source.parent
    names = [str(p.relative_to(root)) if p.is_relative_to(root) else p.name for p in series.source_files]
    arrays["sources/sha256"] = np.asarray(series.source_sha256, dtype="S64")
    arrays["sources/name"] = np.asarray(names, dtype=object)
    arrays["sources/bytes"] = np.asarray(series.source_bytes, dtype=np.int64)
    if series.kind == "dicom":
        packed = pack_headers(series.header_prefixes, series.header_elements)
        for name in ("blob", "blob_offsets", "element_ids", "slice_offsets", "meta", "meta_offsets"):
            arrays[f"headers/{name}"] = getattr(packed, name)
    else:
        arrays["nifti/affine"] = series.affine.astype(np.float64)
        arrays["nifti/header"] = np.frombuffer(series.nifti_header, dtype=np.uint8).copy()
    if floor is not None:
        attrs.update({k: v for k, v in (floor_attrs or {}).items() if v is not None})
        arrays["floor/kind"] = np.asarray(floor.kinds, dtype=np.uint8)
        arrays["floor/data"] = np.asarray(floor.data, dtype=np.uint8)
        arrays["floor/offsets"] = np.asarray(floor.offsets).astype("<i8")
    with atomic_file(path, force=force) as tmp:
        with hdf5_via_memory(tmp, libver="latest") as f:  # a full disk -> one clean OSError (see memfile.py)
            write_compact(f, attrs, arrays, audit)
    return read_info(path)


def _open(path: Path):
    import h5py

    path = Path(path)
    if not path.exists():
        raise ArchiveError("no such archive", path=path)
    if path.is_dir():
        raise ArchiveError("is a folder, not an archive file", path=path)
    try:
        f = h5py.File(path, "r")
    except Exception as e:
        raise ArchiveError(f"not a readable medsr archive (HDF5 open failed: {type(e).__name__})", path=path) from None
    check_open(f, path)  # readable metadata; no dataset declares more than it stores (checks.py)
    fmt = f.attrs.get("format")
    if isinstance(fmt, bytes):
        fmt = fmt.decode()
    if fmt != FORMAT:
        f.close()
        raise ArchiveError("not a medsr archive (missing format attribute)", path=path)
    ver = int(f.attrs.get("format_version", -1))
    if ver not in READS:
        f.close()
        raise ArchiveError(f"archive format version {ver} is not supported by this medsr (reads "
                           f"{', '.join(map(str, READS))})", path=path)
    if ver >= 2:  # the compact container, seen under version 1's names (compact.py)
        from .compact import LogicalFile

        try:
            return LogicalFile(f, path)
        except BaseException:
            f.close()
            raise
    return f


def _attr(f, key, cast=str):
    if key not in f.attrs:
        raise ArchiveError(f"archive is missing attribute {key!r}", path=f.filename)
    v = f.attrs[key]
    if isinstance(v, bytes):
        v = v.decode()
    return cast(v)




def _base_of(f, path) -> tuple[str, int]:
    """(base, base_near) of an open archive; archives without the attribute are lossless."""
    base = f.attrs.get("base", "lossless")
    if isinstance(base, bytes):
        base = base.decode()
    if base not in KNOWN_BASES:
        raise ArchiveError(f"archive base {base!r} is not supported by this medsr (reads: {', '.join(KNOWN_BASES)}); "
                           "upgrade medsr to read it", path=path)
    return str(base), int(f.attrs.get("base_near", 0))


def _lowres_size(f, base: str) -> tuple[int, int]:
    """(n_slices, stored pixel bytes): the lossless dataset's storage, or the codestream bytes."""
    if base == "lossless":
        lr = f["lowres"]
        return int(lr.shape[0]), int(lr.id.get_storage_size())
    return int(f["lowres_coded_offsets"].shape[0]) - 1, int(f["lowres_coded"].size)


def _base_meta(f, info: "ArchiveInfo"):
    from ..codec.base import BaseMeta

    shape = (info.n_slices, (info.rows + info.pad_rows) // info.scale, (info.cols + info.pad_cols) // info.scale)
    return BaseMeta(info.base, info.base_near, _attr(f, "base_min", int), _attr(f, "base_max", int), shape, info.dtype)


def _info_from(f, path: Path) -> ArchiveInfo:
    try:
        base, base_near = _base_of(f, path)
        n_slices, stored_bytes = _lowres_size(f, base)
        floor = _floor_summary(f)
        stored_bytes += floor["floor_bytes"] if floor else 0
        audit = json.loads(f["audit"][()].tobytes().decode("utf-8")) if "audit" in f else None
        return ArchiveInfo(
            path=path, format_version=_attr(f, "format_version", int), medsr_version=_attr(f, "medsr_version"),
            created=_attr(f, "created"), operator=_attr(f, "operator"), scale=_attr(f, "scale", int),
            method=_attr(f, "method"), model_id=_attr(f, "model_id"), model_sha256=_attr(f, "model_sha256"),
            kind=_attr(f, "kind"), series_uid=_attr(f, "series_uid"), n_slices=n_slices,
            rows=_attr(f, "rows", int), cols=_attr(f, "cols", int), pad_rows=_attr(f, "pad_rows", int),
            pad_cols=_attr(f, "pad_cols", int), dtype=_attr(f, "dtype"), bits_stored=_attr(f, "bits_stored", int),
            pixel_representation=_attr(f, "pixel_representation", int), window_lo=_attr(f, "window_lo", float),
            window_hi=_attr(f, "window_hi", float), original_file_bytes=_attr(f, "original_file_bytes", int),
            original_pixel_bytes=_attr(f, "original_pixel_bytes", int), stored_pixel_bytes=stored_bytes,
            archive_bytes=path.stat().st_size, below_threshold=bool(f.attrs.get("below_threshold", False)), audit=audit,
            base=base, base_near=base_near, floor=floor, model_ensemble=int(f.attrs.get("model_ensemble", 1)),
        )
    except ArchiveError:
        raise
    except Exception as e:
        raise ArchiveError(f"archive structure is damaged ({type(e).__name__}: {str(e)[:120]})", path=path) from None


def _floor_summary(f) -> dict | None:
    """The floor's root attributes and counts/bytes per representation; None without /floor."""
    if "floor" not in f:
        return None
    from .floor import representation_summary

    kinds, offsets = f["floor/kind"][()], f["floor/offsets"][()]
    if len(offsets) != len(kinds) + 1:  # damaged: counts only (read_archive/verify say what is wrong)
        offsets = np.zeros(len(kinds) + 1, dtype=np.int64)
    d = {k: (v.decode() if isinstance(v, bytes) else v.item() if hasattr(v, "item") else v)
         for k, v in f.attrs.items() if k.startswith("floor_")}
    d["representations"] = representation_summary(kinds, offsets)
    d["floor_bytes"] = int(f["floor/data"].size)
    return d


def read_info(path: Path) -> ArchiveInfo:
    """Read the archive's attributes and audit (cheap; no pixels)."""
    path = Path(path)
    f = _open(path)
    try:
        return check_info(_info_from(f, path), f)
    finally:
        f.close()


def _checked(ds, path: Path, name: str) -> np.ndarray:
    data = ds[()]
    if isinstance(data, bytes):
        digest = _sha(data)
    elif isinstance(data, str):
        digest = _sha(data.encode("utf-8"))
    else:
        digest = _sha(np.asarray(data)) if ds.dtype.kind != "O" else _names_sha(data)
    expected = ds.attrs.get("sha256")
    if isinstance(expected, bytes):
        expected = expected.decode()
    if digest is not None and digest != expected:
        raise ArchiveError(f"checksum mismatch in {name}: the archive is corrupt", path=path)
    return data


def read_archive(path: Path, *, check: bool = True) -> ArchiveData:
    """Read a whole archive, verifying every checksum (``check=True``) before returning."""
    path = Path(path)
    f = _open(path)
    try:
        info = check_info(_info_from(f, path), f)
        try:
            floor = _read_floor(f, path, info.n_slices) if "floor" in f else None
            if info.base == "lossless":
                lowres = _checked(f["lowres"], path, "lowres") if check else f["lowres"][()]
            else:
                lowres = _decode_base(f, info, path, check, floor)
            slope = _checked(f["slices/slope"], path, "slices/slope")
            intercept = _checked(f["slices/intercept"], path, "slices/intercept")
            positions = _checked(f["slices/position"], path, "slices/position") if "slices/position" in f else None
            sha = tuple(s.decode() for s in _checked(f["sources/sha256"], path, "sources/sha256"))
            names = tuple(s.decode() if isinstance(s, bytes) else str(s) for s in _checked(f["sources/name"], path, "sources/name"))
            sizes = tuple(int(x) for x in _checked(f["sources/bytes"], path, "sources/bytes"))
            headers = None
            if "headers" in f:
                parts = {k: _checked(f["headers"][k], path, f"headers/{k}") for k in
                         ("blob", "blob_offsets", "element_ids", "slice_offsets", "meta", "meta_offsets")}
                headers = PackedHeaders(**parts)
            affine = nhdr = None
            if "nifti" in f:
                affine = _checked(f["nifti/affine"], path, "nifti/affine")
                nhdr = _checked(f["nifti/header"], path, "nifti/header").tobytes()
            if "audit" in f:
                _checked(f["audit"], path, "audit")
        except ArchiveError:
            raise
        except KeyError as e:
            raise ArchiveError(f"archive is missing a required dataset ({str(e)[:80]})", path=path) from None
        except Exception as e:
            raise ArchiveError(f"archive data is damaged ({type(e).__name__}: {str(e)[:120]})", path=path) from None
    finally:
        f.close()
    check_arrays(info, lowres, slope, intercept, positions, sha, names, sizes, headers, affine, nhdr)
    if floor is not None:  # slices held whole by the floor: their low-res is derived from them (medsr.floor)
        lowres = _floor_lowres(lowres, floor, info, path)
    n = info.n_slices
    if not (len(slope) == len(intercept) == n) or (info.kind == "dicom" and len(sha) != n) or (headers is not None and len(headers.slice_offsets) != n + 1):
        raise ArchiveError("archive datasets disagree on the number of slices", path=path)
    return ArchiveData(info=info, lowres=lowres, slope=slope, intercept=intercept, positions=positions,
                       headers=headers, source_sha256=sha, source_names=names, source_bytes=sizes,
                       nifti_affine=affine, nifti_header=nhdr or b"", floor=floor)


def _floor_lowres(lowres: np.ndarray, floor, info: ArchiveInfo, path: Path) -> np.ndarray:
    from .floor import floor_lowres

    try:
        return floor_lowres(lowres, floor, operator=info.operator, rows=info.rows, cols=info.cols,
                            value_range=info.value_range, dtype=info.dtype)
    except Exception as e:  # a codestream that does not decode (checksums matched: forged or a codec bug)
        raise ArchiveError(f"floor data cannot be decoded ({type(e).__name__}: {str(e)[:120]})", path=path) from None


def _read_floor(f, path: Path, n: int):
    """The /floor datasets (after their checksums) as a ``medsr.floor.FloorData``."""
    from .floor import FloorData

    floor = FloorData(*(np.asarray(_checked(f[f"floor/{k}"], path, f"floor/{k}")) for k in ("kind", "data", "offsets")))
    why = floor.check(n)
    if why:
        raise ArchiveError(f"floor is damaged: {why}", path=path)
    return floor


def _check_empty_base(offsets, floor, path: Path) -> None:
    """A slice may have an empty base codestream only when the floor holds it whole (``--ratio`` archives)."""
    from .floor import FULL_SLICE

    empty = np.flatnonzero(np.diff(np.asarray(offsets, dtype=np.int64)) == 0)
    for i in empty:
        if floor is None or floor.kind(int(i)) not in FULL_SLICE:
            raise ArchiveError(f"slice {int(i)} has no stored low-res base and is not stored whole: the archive is "
                               "damaged", path=path)


def _decode_base(f, info: ArchiveInfo, path: Path, check: bool, floor=None) -> np.ndarray:
    """Decode the coded base (after its checksums) into the (n, h, w) low-res stack; an empty codestream must be
    a slice ``floor`` holds whole."""
    from ..codec.base import BaseCodecError, decode_base

    coded = _checked(f["lowres_coded"], path, "lowres_coded") if check else f["lowres_coded"][()]
    offsets = (_checked(f["lowres_coded_offsets"], path, "lowres_coded_offsets") if check
               else f["lowres_coded_offsets"][()])
    _check_empty_base(offsets, floor, path)
    try:
        return decode_base((np.asarray(coded), np.asarray(offsets)), _base_meta(f, info))
    except BaseCodecError as e:
        raise ArchiveError(f"low-res base cannot be decoded: {str(e)[:160]}", path=path) from None
    except Exception as e:  # a codec error on damaged data (checksums off): still one line
        raise ArchiveError(f"low-res base is damaged ({type(e).__name__}: {str(e)[:120]})", path=path) from None


@dataclass(frozen=True)
class VerifyResult:
    path: Path
    ok: bool
    problems: tuple[str, ...]
    n_slices: int = 0

    def to_dict(self) -> dict:
        return {"archive": str(self.path), "ok": self.ok, "problems": list(self.problems), "slices": self.n_slices}


def verify_archive(path: Path) -> VerifyResult:
    """Recompute every checksum and parse every header; never raises for a bad archive."""
    path = Path(path)
    try:
        data = read_archive(path, check=True)
        if data.headers is not None:
            for i in range(data.info.n_slices):
                ds = data.header(i)
                if "SOPInstanceUID" not in ds:
                    raise ArchiveError(f"header {i} lost its SOP Instance UID", path=path)
        check_headers(data)  # what a restore needs from every header (checks.py)
        expected = (data.info.rows + data.info.pad_rows) // data.info.scale, (data.info.cols + data.info.pad_cols) // data.info.scale
        if data.lowres.shape[1:] != expected:
            raise ArchiveError(f"low-res shape {data.lowres.shape[1:]} does not match {expected}", path=path)
    except ArchiveError as e:
        return VerifyResult(path, False, (str(e),))
    except Exception as e:  # h5py/OS errors on a damaged file: still a verdict, never a crash
        return VerifyResult(path, False, (f"{path}: archive is damaged ({type(e).__name__}: {str(e)[:120]})",))
    return VerifyResult(path, True, (), data.info.n_slices)


def open_logical(path):
    """Open an archive of any version for reading under version 1's names (for tools and tests):
    an ``h5py.File`` (version 1) or a ``compact.LogicalFile`` (version 2). Close it after use."""
    return _open(path)
