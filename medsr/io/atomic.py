"""Atomic writes: temp file (or folder) + fsync + no-clobber rename, owner-only permissions.

A crash at any moment leaves either the old state or the complete new one under
the final name. Temp names are ``.medsr-tmp-[kind-]<host>-<pid>-<random>`` beside the
final name (``host`` = 8 hex digits of sha256(hostname)), so a later run can recognise
them and tell whose they are (``clean_stale_temps``, called by ``preflight_output``):
a temp is removed when its owner, a process on this host, is dead, or when it is older
than ``STALE_AFTER_S`` (temps of other hosts on shared storage, and older names).

The final rename never replaces an output that appeared meanwhile (two runs writing one
output: one wins, the other gets ``OutputError``): ``renameat2(RENAME_NOREPLACE)`` on
Linux, else ``link`` (files) or a rename that fails on a non-empty folder (folders).
With ``force`` a folder is swapped in with ``renameat2(RENAME_EXCHANGE)`` where available.

Fault injection for the crash-safety tests (docs/guarantees.md): ``_test_hook(stage)`` is
a no-op unless the environment variable ``MEDSR_TEST_KILL_AT=<stage>`` (SIGKILL this
process there) or ``MEDSR_TEST_PAUSE_AT=<stage>:<seconds>`` (sleep there) names the stage;
``MEDSR_TEST_PAUSE_AT=<stage>:until=<go>`` is a barrier: the process creates ``<go>.<pid>.here``
and waits there until the file ``<go>`` exists (so a test holds several processes at one stage
together, with no timer).
Stages: ``file-temp-created``, ``file-before-rename``, ``file-after-rename``,
``dir-temp-created``, ``dir-before-rename``, ``dir-after-rename``; and, marked by the restore
(``medsr.api``, ``medsr.writers``): ``restore-archive-read`` (archive read and verified, nothing
written), ``restore-batch-done`` (after each batch of restored slices), ``dicom-file-written``
(after each derived file in the temp folder).
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Iterator

from ..errors import OutputError

TEMP_PREFIX = ".medsr-tmp-"
#: a temp whose owner cannot be checked (another host, an older name) is stale after this long
STALE_AFTER_S = 3600.0
_HOST = hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]
_OWNED = re.compile(r"^\.medsr-tmp-(?:[a-z]+-)?([0-9a-f]{8})-([0-9]+)-")


def _test_hook(stage: str) -> None:
    """Fault injection for tests only (see the module docstring); a no-op in normal use."""
    if os.environ.get("MEDSR_TEST_KILL_AT") == stage:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
    pause = os.environ.get("MEDSR_TEST_PAUSE_AT", "")
    if pause and pause.partition(":")[0] == stage:
        arg = pause.partition(":")[2] or "1"
        if arg.startswith("until="):  # a barrier: say "here" (<go>.<pid>.here), wait for the test's <go> file
            go = Path(arg[len("until="):])
            Path(f"{go}.{os.getpid()}.here").touch()
            deadline = time.monotonic() + 900
            while not go.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        else:
            time.sleep(float(arg))


def temp_prefix(kind: str = "") -> str:
    """``.medsr-tmp-[kind-]<host>-<pid>-``: the prefix of every temp this process creates."""
    return f"{TEMP_PREFIX}{kind + '-' if kind else ''}{_HOST}-{os.getpid()}-"


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


def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """Linux renameat2; True if done, False if unavailable here (no libc symbol, ENOSYS, EINVAL)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd = -100
    if fn(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(dst))


_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2


def rename_noreplace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``; ``FileExistsError`` if ``dst`` exists, never replacing it (race-free)."""
    if _renameat2(src, dst, _RENAME_NOREPLACE):
        return
    if not Path(src).is_dir():
        try:
            os.link(src, dst)  # fails with EEXIST if dst exists: atomic no-clobber
        except FileExistsError:
            raise
        except OSError:  # no hard links on this file system: best effort
            if os.path.lexists(dst):
                raise FileExistsError(errno.EEXIST, "File exists", str(dst)) from None
            os.rename(src, dst)
            return
        os.unlink(src)
        return
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, "File exists", str(dst))
    try:
        os.rename(src, dst)  # a folder never replaces a non-empty folder
    except OSError as e:
        if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise FileExistsError(errno.EEXIST, "File exists", str(dst)) from None
        raise


def _check_parent(final: Path) -> Path:
    parent = final.parent if str(final.parent) else Path(".")
    if not parent.exists():
        raise OutputError("output folder does not exist", path=parent)
    if not parent.is_dir():
        raise OutputError("is not a folder, so nothing can be written inside it", path=parent)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError("output folder is not writable", path=parent)
    return parent


def _concurrent(final: Path) -> OutputError:
    return OutputError("already exists (written concurrently by another process); nothing was replaced", path=final)


def exception_chain(e: BaseException | None) -> Iterator[BaseException]:
    """``e`` and the exceptions behind it (its cause, else its context), each once."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def errno_cause(e: BaseException) -> OSError | None:
    """The OSError with an errno behind ``e`` (ENOSPC, EIO...), or None.

    pydicom re-raises any exception met while it writes a data element as ``type(exc)(message) from exc``
    (``tag_in_exception``; ``write_numbers`` also wraps its errors in a bare ``OSError``), so a full disk
    hit at that moment would surface as "OSError" with no errno; the original is the cause.
    """
    return next((x for x in exception_chain(e) if isinstance(x, OSError) and x.errno is not None), None)


def _reason(e: OSError) -> str:
    """strerror of the errno behind ``e`` (a library may have wrapped it), else the exception's type."""
    inner = errno_cause(e)
    return (inner.strerror if inner is not None else None) or type(e).__name__


@contextlib.contextmanager
def atomic_file(final: Path, *, force: bool = False, mode: int = 0o600) -> Iterator[Path]:
    """Yield a temp path beside ``final``; on success fsync and rename it into place.

    Refuses an existing ``final`` unless ``force`` (also one that appears while writing).
    On any exception the temp file is removed.
    """
    final = Path(final)
    parent = _check_parent(final)
    if final.exists() and not force:
        raise OutputError("already exists (use --force to replace it)", path=final)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=temp_prefix(), suffix=final.suffix, dir=parent)
    except OSError as e:
        raise OutputError(f"cannot write here ({e.strerror or type(e).__name__})", path=parent) from None
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, mode)
    try:
        _test_hook("file-temp-created")
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        _test_hook("file-before-rename")
        if force:
            os.replace(tmp, final)
        else:
            try:
                rename_noreplace(tmp, final)
            except FileExistsError:
                raise _concurrent(final) from None
        _fsync_dir(parent)
        _test_hook("file-after-rename")
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise OutputError(f"write failed ({_reason(e)}); nothing was left behind", path=final) from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_dir(final: Path, *, force: bool = False, mode: int = 0o700) -> Iterator[Path]:
    """Yield a temp folder beside ``final``; on success rename it into place.

    With ``force`` an existing ``final`` is replaced only after the new folder is
    complete (atomically exchanged where the OS allows, else old moved aside, new
    renamed in, old removed).
    """
    final = Path(final)
    parent = _check_parent(final)
    if final.exists() and not force:
        raise OutputError("already exists (use --force to replace it)", path=final)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(), dir=parent))
    except OSError as e:
        raise OutputError(f"cannot write here ({e.strerror or type(e).__name__})", path=parent) from None
    os.chmod(tmp, mode)
    try:
        _test_hook("dir-temp-created")
        yield tmp
        for p in tmp.iterdir():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(tmp)
        _test_hook("dir-before-rename")
        if final.exists() and force:
            if _renameat2(tmp, final, _RENAME_EXCHANGE):  # tmp now holds the old folder
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                old = Path(tempfile.mkdtemp(prefix=temp_prefix("old"), dir=parent))
                os.replace(final, old / "x")
                os.replace(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                rename_noreplace(tmp, final)
            except FileExistsError:
                raise _concurrent(final) from None
        _fsync_dir(parent)
        _test_hook("dir-after-rename")
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(f"write failed ({_reason(e)}); nothing was left behind", path=final) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists (another user's process)
        return True
    return True


def is_stale_temp(p: Path, *, older_than_s: float = STALE_AFTER_S, now: float | None = None) -> bool:
    """Is ``p`` a medsr temp left by a run that is over?

    A temp of this host names its owner's PID: stale once that process is dead (a live
    owner's temp is kept however old; a reused PID only delays the cleaning). Others (other
    hosts on shared storage, older names) are stale when older than ``older_than_s``.
    With ``older_than_s=0`` every temp of another process counts (for callers holding a lock).
    """
    if not p.name.startswith(TEMP_PREFIX):
        return False
    m = _OWNED.match(p.name)
    if m and m.group(1) == _HOST and int(m.group(2)) == os.getpid():
        return False  # ours, in use
    if older_than_s <= 0:
        return True
    if m and m.group(1) == _HOST:
        return not _pid_alive(int(m.group(2)))
    try:
        age = (time.time() if now is None else now) - p.lstat().st_mtime
    except OSError:
        return False
    return age >= older_than_s


def clean_stale_temps(folder: Path, *, older_than_s: float = 0.0) -> list[Path]:
    """Remove medsr temp files/folders left in ``folder`` by killed runs; returns what was removed.

    See ``is_stale_temp``: ``older_than_s=0`` removes every temp of another process (for
    callers that hold a lock on ``folder``); ``preflight_output`` uses ``STALE_AFTER_S``,
    which is safe beside concurrent runs. This process's own temps are never removed.
    """
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    now = time.time()
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for p in entries:
        if not is_stale_temp(p, older_than_s=older_than_s, now=now):
            continue
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
        except OSError:
            continue
    return removed


def preflight_output(final: Path, *, force: bool = False, folder: bool = False) -> None:
    """Fail fast, before any work, if ``final`` could not be written (exists, bad parent, read-only).

    Then remove stale temps of killed runs beside it (``clean_stale_temps`` with ``STALE_AFTER_S``).
    """
    final = Path(final)
    if final.exists() and not force:
        raise OutputError("already exists (use --force to replace it)", path=final)
    if final.exists() and final.is_dir() != folder:
        raise OutputError("is a folder; give a file name" if not folder else "is a file; give a folder name", path=final)
    parent = _check_parent(final)
    try:
        fd, probe = tempfile.mkstemp(prefix=temp_prefix("probe"), dir=parent)
    except OSError as e:
        raise OutputError(f"cannot write here ({e.strerror or type(e).__name__})", path=parent) from None
    os.close(fd)
    os.unlink(probe)
    for p in clean_stale_temps(parent, older_than_s=STALE_AFTER_S):
        import logging

        logging.getLogger("medsr").info("removed %s, left by a killed medsr run", p)
