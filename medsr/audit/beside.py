"""Run the JPEG 2000 baseline's encoder beside the audit's measuring: in another process where that pays.

OpenJPEG's Python binding holds the GIL while it codes, so on a thread it only takes turns with the
audit. Beside a classical restore (bicubic: the audit is all the work there is; a network restore keeps the
cores busy itself and its working memory bounds the archive's, so there the coder's thread suffices), on a
series of at least ``PROCESS_MIN_PIXELS`` pixels (the child is sent one audit batch of slices at a time,
so an archive's memory ceiling, docs/guarantees.md, stays that of the thread), on a machine with two CPUs
or more,
``Beside.submit(fn, *args)`` runs ``fn`` in one short-lived spawned Python process (a fresh interpreter: no
fork of torch's or the audit's threads), so the codestreams are made on another core, batch by batch, while
the audit measures each batch's restore and bicubic (and then its JPEG 2000, in the same sweep).

A spawned child imports the parent's main module, so a script without an ``if __name__ == "__main__":``
guard would run again in it: children are used only where the main module is known to be guarded, i.e.
after ``allow_processes()`` (``medsr``'s own CLI calls it) or with ``MEDSR_AUDIT_PROCESS=1``. Anywhere a
child process cannot run or is not wanted (a library call that did not allow it, a daemonic worker
process such as a Dask or multiprocessing pool worker, an interpreter embedded in another program,
``MEDSR_AUDIT_PROCESS=0``), or if starting it fails, ``fn`` runs on a thread instead: the result is the
same either way (``tests/test_audit_beside.py``).

Measured (``python -m pipelines.bench_ratios``, 22 x 512^2, 2 CPUs): see the README's speed table.
"""
from __future__ import annotations

import logging
import os
import sys
from concurrent.futures import Executor, Future, ThreadPoolExecutor

from .fast_metrics import usable_cpus as _cpus  # a module name here, so tests can stand in for it

log = logging.getLogger("medsr")

PROCESS_MIN_PIXELS = 1 << 22  # below ~4 M pixels a spawned interpreter costs more than the encode it overlaps


_allowed = False


def allow_processes(on: bool = True) -> None:
    """Let the audit code the JPEG 2000 baseline in a spawned child process (the main module is guarded)."""
    global _allowed
    _allowed = bool(on)


_warm = None  # a child started by ``prewarm`` (interpreter and imports done while the parent reads the series)


def _ready() -> bool:
    import openjpeg  # noqa: F401 - what the baseline's encoder needs, imported before it is asked for

    from . import baselines  # noqa: F401
    return True


def _spawn_pool():
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))


def prewarm() -> None:
    """Start the child now (where children are allowed at all), so that its interpreter start and imports
    (~0.2 s) overlap the parent's reading of the series instead of the audit; ``Beside`` uses it if the series
    turns out to want one, and it is shut down at exit otherwise."""
    global _warm
    if _warm is not None or not process_allowed(PROCESS_MIN_PIXELS):
        return
    try:
        pool = _spawn_pool()
        pool.submit(_ready)
    except Exception as e:  # noqa: BLE001 - no child: Beside decides again later
        log.debug("JPEG 2000 baseline: no child process to prewarm (%s)", e)
        return
    _warm = pool
    import atexit

    atexit.register(_drop_warm)


def _drop_warm() -> None:
    global _warm
    if _warm is not None:
        _warm.shutdown(wait=False, cancel_futures=True)
        _warm = None


def process_allowed(pixels: int) -> bool:
    """Whether ``Beside`` would use a child process for a series of ``pixels`` pixels (see the module docstring)."""
    env = os.environ.get("MEDSR_AUDIT_PROCESS", "").strip()
    if env == "0" or not (_allowed or env == "1"):
        return False
    if env != "1" and (pixels < PROCESS_MIN_PIXELS or _cpus() < 2):
        return False
    import multiprocessing

    if multiprocessing.current_process().daemon:  # daemonic processes may not have children
        return False
    exe = os.path.basename(sys.executable or "")
    return exe.startswith("python")  # embedded (an Orthanc plugin): sys.executable is not an interpreter


class Beside:
    """``with Beside(pixels) as b: fut = b.submit(fn, *args)``: a process when ``process_allowed``, else a thread.
    Every ``submit`` goes to the same one worker, in order; a child that cannot start or has died turns the rest
    into a thread's work (and ``_Fallback`` codes here what it had been sent)."""

    def __init__(self, pixels: int, *, process: bool = True):
        self.pixels, self.process = pixels, process
        self.pool: Executor | None = None
        self.kind = "thread"

    def __enter__(self) -> "Beside":
        return self

    def _start(self) -> None:
        global _warm
        if self.process and process_allowed(self.pixels):
            try:
                self.pool, _warm = (_warm or _spawn_pool()), None  # the prewarmed child, if any: this call owns it
                self.kind = "process"
                return
            except Exception as e:  # noqa: BLE001 - no child: a thread instead
                log.debug("JPEG 2000 baseline: no child process (%s); coding on a thread", e)
        self._thread()

    def _thread(self) -> None:
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="medsr-j2k")
        self.kind = "thread"

    def submit(self, fn, *args, **kw) -> "Future | _Fallback":
        if self.pool is None:
            self._start()
        if self.kind == "process":
            try:
                return _Fallback(self.pool.submit(fn, *args, **kw), fn, args, kw)
            except Exception as e:  # noqa: BLE001 - the child cannot start or has died: a thread from now on
                log.debug("JPEG 2000 baseline: no child process (%s); coding on a thread", e)
                self._close()
                self._thread()
        return self.pool.submit(fn, *args, **kw)

    def _close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None

    def __exit__(self, *exc) -> None:
        self._close()


class _Fallback:
    """A child process's future (``result()`` only) that, if the process dies or cannot start
    (``BrokenProcessPool``, ``OSError``), runs ``fn`` here; errors that ``fn`` itself raises come through unchanged."""

    def __init__(self, fut: Future, fn, args, kw):
        self._fut, self._call = fut, (fn, args, kw)

    def result(self, timeout=None):
        from concurrent.futures.process import BrokenProcessPool

        try:
            return self._fut.result(timeout)
        except (BrokenProcessPool, OSError) as e:
            log.debug("JPEG 2000 baseline: child process failed (%s); coding here", e)
            fn, args, kw = self._call
            return fn(*args, **kw)
