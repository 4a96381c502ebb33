"""Stored-byte counts: what a low-res base costs in an archive, measured with the archive's own filters."""
from __future__ import annotations

import numpy as np


def stored_pixel_bytes(lowres: np.ndarray) -> int:
    """Exact compressed size of the low-res dataset with the archive's filters (in-memory HDF5)."""
    import h5py

    from .digest import GZIP_LEVEL

    with h5py.File("mem.h5", "w", driver="core", backing_store=False) as f:
        d = f.create_dataset("x", data=lowres, chunks=(1,) + lowres.shape[1:], compression="gzip",
                             compression_opts=GZIP_LEVEL, shuffle=True)
        return int(d.id.get_storage_size())


def base_stored_bytes(base) -> int:
    """Stored bytes of a ``PreparedBase``: its codestreams, or the compressed ``/lowres`` dataset."""
    return base.coded_bytes if base.data is not None else stored_pixel_bytes(base.decoded)
