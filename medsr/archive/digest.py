"""Digests and compression settings shared by the archive writers and readers (version 1 and the
compact version 2): one definition of how an array's sha256 is taken."""
from __future__ import annotations

import hashlib

import numpy as np

GZIP_LEVEL = 6


def sha_array(arr: np.ndarray | bytes) -> str:
    """sha256 of raw bytes, or of an array's little-endian C-order bytes."""
    if isinstance(arr, bytes):
        return hashlib.sha256(arr).hexdigest()
    a = np.ascontiguousarray(arr)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    return hashlib.sha256(a.tobytes()).hexdigest()


def names_sha(names) -> str:
    """sha256 of a list of names (str or UTF-8 bytes) joined by NUL."""
    return sha_array("\0".join(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names).encode("utf-8"))
