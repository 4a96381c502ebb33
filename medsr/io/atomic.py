"""Atomic writes: temp file (or folder) + fsync + rename, owner-only permissions.

A crash at any moment leaves either the old state or the complete new one under
the final name; temp names start with ``.medsr-tmp-`` so a later run can
recognise and remove them (``clean_stale_temps``).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from ..errors import OutputError

TEMP_PREFIX = ".medsr-tmp-"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _check_parent(final: Path) -> Path:
    parent = final.parent if str(final.parent) else Path(".")
    if not parent.exists():
        raise OutputError("output folder does not exist", path=parent)
    if not parent.is_dir():
        raise OutputError("is not a folder, so nothing can be written inside it", path=parent)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError("output folder is not writable", path=parent)
    return parent


@contextlib.contextmanager
def atomic_file(final: Path, *, force: bool = False, mode: int = 0o600) -> Iterator[Path]:
    """Yield a temp path beside ``final``; on success fsync and rename it into place.

    Refuses an existing ``final`` unless ``force``. On any exception the temp file is removed.
    """
    final = Path(final)
    parent = _check_parent(final)
    if final.exists() and not force:
        raise OutputError("already exists (use --force to replace it)", path=final)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=final.suffix, dir=parent)
    except OSError as e:
        raise OutputError(f"cannot write here ({e.strerror or type(e).__name__})", path=parent) from None
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, mode)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if final.exists() and not force:  # someone else won the race
            raise OutputError("already exists (written concurrently by another process)", path=final)
        os.replace(tmp, final)
        _fsync_dir(parent)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise OutputError(f"write failed ({e.strerror or type(e).__name__}); nothing was left behind", path=final) from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_dir(final: Path, *, force: bool = False, mode: int = 0o700) -> Iterator[Path]:
    """Yield a temp folder beside ``final``; on success rename it into place.

    With ``force`` an existing ``final`` is replaced only after the new folder is
    complete (old moved aside, new renamed in, old removed).
    """
    final = Path(final)
    parent = _check_parent(final)
    if final.exists() and not force:
        raise OutputError("already exists (use --force to replace it)", path=final)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=parent))
    except OSError as e:
        raise OutputError(f"cannot write here ({e.strerror or type(e).__name__})", path=parent) from None
    os.chmod(tmp, mode)
    try:
        yield tmp
        for p in tmp.iterdir():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(tmp)
        if final.exists():
            if not force:
                raise OutputError("already exists (written concurrently by another process)", path=final)
            old = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX + "old-", dir=parent))
            os.replace(final, old / "x")
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(parent)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(f"write failed ({e.strerror or type(e).__name__}); nothing was left behind", path=final) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def clean_stale_temps(folder: Path, *, older_than_s: float = 0.0) -> list[Path]:
    """Remove medsr temp files/folders left in ``folder`` by a killed run; returns what was removed."""
    import time

    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    now = time.time()
    for p in folder.iterdir():
        if not p.name.startswith(TEMP_PREFIX):
            continue
        try:
            if now - p.stat().st_mtime < older_than_s:
                continue
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
        except OSError:
            continue
    return removed


def preflight_output(final: Path, *, force: bool = False, folder: bool = False) -> None:
    """Fail fast, before any work, if ``final`` could not be written (exists, bad parent, read-only)."""
    final = Path(final)
    if final.exists() and not force:
        raise OutputError("already exists (use --force to replace it)", path=final)
    if final.exists() and final.is_dir() != folder:
        raise OutputError("is a folder; give a file name" if not folder else "is a file; give a folder name", path=final)
    parent = _check_parent(final)
    try:
        fd, probe = tempfile.mkstemp(prefix=TEMP_PREFIX + "probe-", dir=parent)
    except OSError as e:
        raise OutputError(f"cannot write here ({e.strerror or type(e).__name__})", path=parent) from None
    os.close(fd)
    os.unlink(probe)
