"""Build an HDF5 file in memory, then write its bytes with plain file I/O.

HDF5 never touches the disk itself: a full disk or an I/O error while writing an archive
surfaces as one ordinary ``OSError`` from ``write``/``fsync`` (which ``atomic_file`` turns
into a one-line ``OutputError``). Writing through HDF5 directly, a failed write during
close left h5py objects in a broken state: tracebacks printed by ``__dealloc__`` and a
segmentation fault at exit (found by tests/test_io_errors.py on a full tmpfs).
The cost is one in-memory copy of the (compressed) archive.
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def hdf5_via_memory(path: Path, **kw) -> Iterator[object]:
    """Yield a writable ``h5py.File`` held in memory (``kw``: h5py.File options, e.g. ``libver``); on success
    write it to ``path``."""
    import h5py

    buf = io.BytesIO()
    with h5py.File(buf, "w", **kw) as f:
        yield f
    with open(path, "wb") as out:
        out.write(buf.getbuffer())
