"""One batch per output folder: an exclusive ``flock`` on ``OUTDIR/.medsr-batch.lock``."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from ..errors import OutputError

LOCK_NAME = ".medsr-batch.lock"


@contextlib.contextmanager
def outdir_lock(outdir: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    fd = os.open(outdir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise OutputError("another medsr batch is writing into this folder (its lock is held); "
                              "wait for it to finish or stop it", path=outdir) from None
        yield
    finally:
        os.close(fd)  # releases the lock
