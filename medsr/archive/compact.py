"""Format versions 2 and 3: the same logical archive in four HDF5 objects (docs/archive-format.md).

Version 1 stored ~20 datasets and groups, each with its own object header, checksum
attribute and (for chunked data) index: ~29 kB of HDF5 metadata per series, more than the
coded pixels of a short near-lossless series. Version 2 keeps the logical content and
names of version 1 but stores them as::

    /              attrs: format, format_version = 3 (or 2), meta_sha256 (sha256 of /meta's bytes)
    /meta          uint8, contiguous: zlib-compressed UTF-8 JSON {"attrs": {the root attributes},
                   "arrays": {logical name: {"dtype", "shape", "data" (a JSON list; bytes as base64)}},
                   "audit": the audit object, "headers": {part: [start, stop, dtype]}}
    /headers       uint8, contiguous: the packed header arrays, concatenated, zlib-compressed (index in /meta)
    /lowres        lossless base: as in version 1 (chunk = 1 slice, gzip + shuffle; attr sha256)
    /lowres_coded  near-lossless/lossy base: uint8 codestreams (attr sha256; offsets in /meta)
    /floor_data    per-slice floor payloads (optional; attr sha256; kinds and offsets in /meta)

/meta and /headers are compressed by zlib (Python's standard library) and stored contiguous,
so they need no chunk index: with HDF5's earliest-compatible object format (kept: see
docs/archive-format.md) a one-chunk gzip dataset costs a ~2 kB B-tree. Attributes are
fixed-length strings (a variable-length string attribute costs a 4 kB global heap). Every byte is still covered by a sha256:
/meta's in a root attribute (it holds every small array and the audit), the payloads' in
their own attribute, /headers' in /meta. Readable with h5py alone:
``json.loads(zlib.decompress(f["meta"][()].tobytes()))``.

Version 3 records the operator and the model as one attribute group each (version 2: six flat
version-1 attributes ``operator``, ``scale``, ``model_id`` = ``name@sha256[:12]``, ``model_sha256``,
``model_ensemble``; ``method`` stays flat)::

    "operator": {"id": "area4-v1", "scale": 4}
    "model":    {"name": "medsr-srresnet-x4", "sha256": "<64 hex>", "ensemble": 2}   (null: no model)

``LogicalFile`` presents a version-2 or -3 file under version 1's names (``f["slices/slope"]``,
``f["headers"]["blob"]``, ``f.attrs["operator"]``, ``f.attrs["model_id"]``), so one reader serves
every version.
"""
from __future__ import annotations

import base64
import hashlib
import json
import zlib
from typing import Any

import numpy as np

from ..errors import ArchiveError
from .digest import GZIP_LEVEL as LOWRES_LEVEL, names_sha, sha_array

FORMAT_VERSION = 3
HEADER_PARTS = ("blob", "blob_offsets", "element_ids", "slice_offsets", "meta", "meta_offsets")
GZIP_LEVEL = 9  # the small blocks (/meta, /headers): best ratio, microseconds
#: logical arrays whose bytes live in their own HDF5 dataset (physical name)
PAYLOADS = {"lowres": "lowres", "lowres_coded": "lowres_coded", "floor/data": "floor_data"}


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _le(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    return a.astype(a.dtype.newbyteorder("<")) if a.dtype.byteorder == ">" else a


def _encode_array(a: np.ndarray) -> dict:
    """A small array as JSON: numbers as a list, strings as a list, raw bytes (uint8) as base64."""
    a = np.asarray(a)
    if a.dtype.kind == "O" or a.dtype.kind == "U":
        return {"dtype": "str", "shape": list(a.shape), "data": [str(x.decode("utf-8") if isinstance(x, bytes) else x)
                                                                  for x in a.ravel().tolist()]}
    if a.dtype.kind == "S":
        return {"dtype": a.dtype.str, "shape": list(a.shape), "data": [x.decode("ascii") for x in a.ravel().tolist()]}
    if a.dtype == np.uint8:
        return {"dtype": "|u1", "shape": list(a.shape), "b64": base64.b64encode(a.tobytes()).decode("ascii")}
    a = _le(a)
    return {"dtype": a.dtype.str, "shape": list(a.shape), "data": a.ravel().tolist()}


def _decode_array(d: dict) -> np.ndarray:
    shape = tuple(int(x) for x in d["shape"])
    if d["dtype"] == "str":
        return np.asarray(list(d["data"]), dtype=object).reshape(shape)
    dt = np.dtype(d["dtype"])
    if "b64" in d:
        return np.frombuffer(base64.b64decode(d["b64"], validate=True), dtype=dt).reshape(shape).copy()
    if dt.kind == "S":
        return np.asarray([s.encode("ascii") for s in d["data"]], dtype=dt).reshape(shape)
    return np.asarray(d["data"], dtype=dt).reshape(shape)


def operator_group(operator: str, scale: int) -> dict:
    """The ``operator`` attribute group of format 3."""
    return {"id": str(operator), "scale": int(scale)}


def model_group(model) -> dict | None:
    """The ``model`` attribute group of format 3 from a ``medsr.models.ModelRef`` (None: no model ran)."""
    if model is None:
        return None
    return {"name": str(model.name), "sha256": str(model.sha256), "ensemble": int(model.ensemble)}


def flat_attributes(attrs: dict, path) -> dict:
    """Format 3's attribute groups -> version 1's flat names (what the reader and its checks use).

    A group that is not an object is one ``ArchiveError``; a member it lacks becomes a missing attribute
    (the reader names it). Without a model the model id is the restore method, as versions 1 and 2 wrote it."""
    from ..models.ref import ModelRef

    out = dict(attrs)
    op = out.pop("operator", None)
    model = out.pop("model", None)
    for name, group in (("operator", op), ("model", model)):
        if group is not None and not isinstance(group, dict):
            raise ArchiveError(f"archive attribute group {name!r} is malformed (not an object)", path=path)
    if op is not None:
        out.update({k: op[g] for k, g in (("operator", "id"), ("scale", "scale")) if g in op})
    if model is None:
        out.update(model_id=out.get("method", ""), model_sha256="", model_ensemble=1)
    else:
        ref = ModelRef(str(model.get("name", "")), str(model.get("sha256", "")), 1)
        out.update(model_id=ref.id, model_sha256=ref.sha256, model_ensemble=model.get("ensemble", 1))
    return out


def write_compact(f, attrs: dict, arrays: dict[str, np.ndarray], audit: dict | None) -> None:
    """Write the logical archive (``attrs``: the root attributes, format 3's groups included; ``arrays``:
    version-1 dataset names -> arrays) into the open, empty ``h5py.File`` ``f``."""

    small: dict[str, dict] = {}
    headers: dict[str, list] = {}
    chunks: list[bytes] = []
    pos = 0
    for name, arr in arrays.items():
        if name in PAYLOADS:
            a = _le(np.asarray(arr))
            kw: dict[str, Any] = {}
            if name == "lowres" and a.size:  # as version 1: one gzip + shuffle chunk per slice
                kw = dict(chunks=(1,) + a.shape[1:], compression="gzip", compression_opts=LOWRES_LEVEL, shuffle=True)
            d = f.create_dataset(PAYLOADS[name], data=a, **kw)
            d.attrs["sha256"] = np.bytes_(sha_array(a))  # fixed-length: a str attribute costs a 4 kB global heap
        elif name.startswith("headers/"):
            a = _le(np.asarray(arr))
            if a.dtype.kind == "i" and a.dtype.itemsize > 4 and (not a.size or (a.min() >= 0 and a.max() < 2 ** 31)):
                a = a.astype("<i4")  # offsets as int32 when they fit: fewer bytes to compress
            b = a.tobytes()
            headers[name.split("/", 1)[1]] = [pos, pos + len(b), a.dtype.str]
            chunks.append(b)
            pos += len(b)
        else:
            small[name] = _encode_array(arr)
    meta: dict[str, Any] = {"attrs": _jsonable(attrs), "arrays": small}
    if headers:
        packed = zlib.compress(b"".join(chunks), GZIP_LEVEL)
        f.create_dataset("headers", data=np.frombuffer(packed, dtype=np.uint8))
        meta["headers"] = {"parts": headers, "sha256": _sha(packed)}
    if audit is not None:
        meta["audit"] = audit.to_dict() if hasattr(audit, "to_dict") else audit  # a medsr.audit.Audit or its dict
    text = zlib.compress(json.dumps(meta, sort_keys=True, allow_nan=True, separators=(",", ":")).encode("utf-8"),
                         GZIP_LEVEL)
    f.create_dataset("meta", data=np.frombuffer(text, dtype=np.uint8))
    f.attrs["format"] = np.bytes_(attrs["format"])
    f.attrs["format_version"] = np.int64(FORMAT_VERSION)
    f.attrs["meta_sha256"] = np.bytes_(_sha(text))


def inflate(data: bytes, what: str, path) -> bytes:
    """zlib-decompress ``data``, refusing more than deflate can produce (a forged stream: one line)."""
    from .checks import MAX_EXPANSION, SLACK_BYTES

    d = zlib.decompressobj()
    try:
        out = d.decompress(data, MAX_EXPANSION * len(data) + SLACK_BYTES)
        if d.unconsumed_tail or not d.eof:
            raise ValueError("truncated or oversized")
    except (zlib.error, ValueError) as e:
        raise ArchiveError(f"{what} cannot be decompressed ({type(e).__name__}): the archive is damaged",
                           path=path) from None
    return out


def _jsonable(attrs: dict) -> dict:
    out = {}
    for k, v in attrs.items():
        if isinstance(v, np.generic):
            v = v.item()
        out[k] = v
    return out


class _Attrs(dict):
    pass


class _Array:
    """A logical dataset read from /meta or /headers: what format.py's reader uses of an h5py.Dataset."""

    def __init__(self, data: np.ndarray, sha256: str):
        self._data = data
        self.attrs = {"sha256": sha256}
        self.dtype = data.dtype
        self.shape = data.shape
        self.size = data.size

    def __getitem__(self, key):
        if key == ():
            return self._data
        return self._data[key]


class _Group:
    def __init__(self, lf: "LogicalFile", prefix: str):
        self._lf, self._prefix = lf, prefix

    def __getitem__(self, key: str):
        return self._lf[f"{self._prefix}/{key}"]

    def __contains__(self, key: str) -> bool:
        return f"{self._prefix}/{key}" in self._lf

    def __iter__(self):
        return iter(sorted({n.split("/", 1)[1] for n in self._lf.names() if n.startswith(self._prefix + "/")}))


class LogicalFile:
    """A version-2 or -3 archive seen under version 1's names. ``/meta`` is checked against its
    sha256 here (a mismatch or undecodable JSON: ``ArchiveError``); ``/headers`` when first read."""

    def __init__(self, f, path):
        self._f, self._path, self.filename = f, path, str(path)
        try:
            packed = f["meta"][()].tobytes()
        except Exception as e:  # noqa: BLE001 - h5py errors on damaged data
            raise ArchiveError(f"archive metadata is damaged ({type(e).__name__})", path=path) from None
        want = f.attrs.get("meta_sha256", b"")
        want = want.decode() if isinstance(want, bytes) else str(want)
        if _sha(packed) != want:
            raise ArchiveError("checksum mismatch in meta: the archive is corrupt", path=path)
        raw = inflate(packed, "archive metadata (/meta)", path)
        try:
            meta = json.loads(raw.decode("utf-8"))
            if not isinstance(meta, dict) or not isinstance(meta.get("attrs"), dict):
                raise ValueError("meta")
            self._small = {k: _decode_array(v) for k, v in dict(meta.get("arrays", {})).items()}
            parts = dict(meta.get("headers", {}).get("parts", {})) if "headers" in meta else {}
        except Exception as e:  # noqa: BLE001 - a forged meta whose checksum was recomputed
            raise ArchiveError(f"archive metadata cannot be decoded ({type(e).__name__})", path=path) from None
        self._meta = meta
        self._parts = parts
        self._header_arrays: dict[str, _Array] | None = None
        version = int(f.attrs.get("format_version"))
        self.attrs = _Attrs(flat_attributes(meta["attrs"], path) if version >= 3 else meta["attrs"])
        fmt = f.attrs.get("format")
        self.attrs["format"] = fmt.decode() if isinstance(fmt, bytes) else fmt
        self.attrs["format_version"] = version
        self._audit = None
        if "audit" in meta:
            self._audit = np.frombuffer(json.dumps(meta["audit"], sort_keys=True, allow_nan=True).encode("utf-8"),
                                        dtype=np.uint8)

    def names(self) -> list[str]:
        out = list(self._small)
        out += [n for n, p in PAYLOADS.items() if p in self._f]
        out += [f"headers/{k}" for k in self._parts]
        if self._audit is not None:
            out.append("audit")
        return out

    def _headers(self) -> dict[str, _Array]:
        if self._header_arrays is None:
            packed = self._f["headers"][()].tobytes()
            ok = _sha(packed) == self._meta["headers"].get("sha256")
            if not ok:  # read_archive's checksum check then names the first part
                self._header_arrays = {k: _Array(np.zeros(0, np.uint8), "mismatch") for k in self._parts}
                return self._header_arrays
            blob = inflate(packed, "stored headers (/headers)", self._path)
            arrays = {}
            for k, (start, stop, dt) in self._parts.items():
                start, stop = int(start), int(stop)
                if not (0 <= start <= stop <= len(blob)):
                    raise ArchiveError(f"headers/{k} lies outside the stored headers", path=self._path)
                a = np.frombuffer(blob[start:stop], dtype=np.dtype(dt)).copy()
            
                arrays[k] = _Array(a, sha_array(a))
            self._header_arrays = arrays
        return self._header_arrays

    def __contains__(self, name: str) -> bool:
        if name in ("headers", "floor", "nifti", "slices", "sources"):
            return any(n.startswith(name + "/") for n in self.names())
        return name in self.names()

    def __getitem__(self, name: str):
        if name in ("headers", "floor", "nifti", "slices", "sources"):
            if name not in self:
                raise KeyError(name)
            return _Group(self, name)
        if name in PAYLOADS and PAYLOADS[name] in self._f:
            return self._f[PAYLOADS[name]]
        if name.startswith("headers/") and name.split("/", 1)[1] in self._parts:
            return self._headers()[name.split("/", 1)[1]]
        if name == "audit" and self._audit is not None:
            return _Array(self._audit, hashlib.sha256(self._audit.tobytes()).hexdigest())
        if name in self._small:
            a = self._small[name]
            return _Array(a, names_sha(a) if a.dtype.kind == "O" else sha_array(a))  # covered by meta_sha256
        raise KeyError(name)

    def close(self) -> None:
        self._f.close()
