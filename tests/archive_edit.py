"""Test helpers that damage or edit archives the way a disk error or an older/newer medsr would.

Format version 2 (medsr/archive/compact.py) keeps the root attributes and small arrays in the
zlib-compressed JSON ``/meta`` (checksummed by the root attribute ``meta_sha256``), the payloads in
their own datasets. ``edit_meta`` rewrites ``/meta`` *and* its checksum (a forged or
older-writer archive, not a damaged one); ``byte_offset`` finds where a physical dataset's
bytes lie in the file, to flip one.
"""
from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path
from typing import Callable

import h5py
import numpy as np

from medsr.archive.compact import PAYLOADS


def edit_meta(path: Path, fn: Callable[[dict], None]) -> None:
    """Apply ``fn`` to the parsed ``/meta`` JSON of a version-2 archive and store it back, re-checksummed."""
    with h5py.File(path, "r+") as f:
        meta = json.loads(zlib.decompress(f["meta"][()].tobytes()))
        fn(meta)
        text = zlib.compress(json.dumps(meta, sort_keys=True, allow_nan=True, separators=(",", ":")).encode("utf-8"))
        del f["meta"]
        f.create_dataset("meta", data=np.frombuffer(text, np.uint8))
        f.attrs["meta_sha256"] = np.bytes_(hashlib.sha256(text).hexdigest())


def byte_offset(path: Path, name: str) -> int:
    """File offset of the first stored byte of a dataset (a version-1 name or a version-2 payload;
    any other name: the compressed ``/meta`` block that holds it)."""
    with h5py.File(path, "r") as f:
        if name not in f:
            name = PAYLOADS.get(name, name) if PAYLOADS.get(name, name) in f else "meta"
        ds = f[name]
        return ds.id.get_offset() if ds.chunks is None else ds.id.get_chunk_info(0).byte_offset
