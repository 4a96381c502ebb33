"""Dask: connect to a scheduler (or start a local cluster), check the workers, and run tasks with a
bounded number in flight, recording each row in the manifest as it completes."""
from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import Callable

from ..api import record_manifest_row
from ..errors import MedsrError
from .manifest import Manifest
from .tasks import probe_worker

log = logging.getLogger("medsr")


@contextlib.contextmanager
def progress_bar(total: int, desc: str, unit: str, enabled: bool):
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not enabled, dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()


@contextlib.contextmanager
def connect(scheduler=None, workers: int | None = None):
    """A Dask client: ``scheduler`` an address (tcp://host:8786), an existing ``Client`` (not
    closed here), or None for a LocalCluster of ``workers`` (default 2) single-threaded processes."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise MedsrError("batch commands need Dask: pip install 'medsr[batch]' (dask[distributed])") from None
    if not log.isEnabledFor(logging.DEBUG):  # Dask logs every worker start/stop at INFO
        logging.getLogger("distributed").setLevel(logging.WARNING)
    if scheduler is not None and not isinstance(scheduler, str):
        yield scheduler
        return
    if scheduler:
        try:
            client = Client(scheduler, timeout="30s")
        except (OSError, TimeoutError) as e:
            raise MedsrError(f"cannot connect to the Dask scheduler at {scheduler}: {str(e).splitlines()[0][:160]}") from None
        try:
            yield client
        finally:
            client.close()
        return
    n = workers or 2
    if n < 1:
        raise MedsrError(f"--workers must be at least 1 (got {n})")
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address=None, scheduler_kwargs={"dashboard": False},
                           silence_logs=logging.ERROR)
    try:
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


def check_workers(client, paths: list[Path]) -> None:
    from .. import __version__

    try:
        client.wait_for_workers(1, timeout=120)
    except Exception:
        raise MedsrError("no Dask worker joined the scheduler within 120 s (start dask-worker processes)") from None
    try:
        probes = client.run(probe_worker, [str(p) for p in paths])
    except Exception as e:
        raise MedsrError("a Dask worker cannot run medsr (install the same medsr on every worker): "
                         f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}") from None
    for addr, info in probes.items():
        if info["medsr"] != __version__:
            raise MedsrError(f"worker {addr} runs medsr {info['medsr']}, this client {__version__}; "
                             "install the same medsr everywhere")
        for p, (is_dir, readable, writable) in info["paths"].items():
            if not (is_dir and readable):
                raise MedsrError(f"worker {addr} cannot see {p}: the input and output folders must be on "
                                 "storage shared by every worker, at the same path")
        out = str(paths[-1])
        if not info["paths"][out][2]:
            raise MedsrError(f"worker {addr} cannot write into {out} (shared storage mounted read-only?)")


def _window(client) -> int:
    try:
        return max(2, 2 * sum(client.nthreads().values()))
    except Exception:
        return 4


def run_tasks(client, jobs: list, fn: Callable, args: tuple, manifest: Manifest, fail_row: Callable,
               *, desc: str, progress: bool, ledger=None) -> list[dict]:
    """Submit ``fn(job, *args)`` per job, a bounded number in flight; record rows as they complete."""
    import uuid

    from dask.distributed import as_completed

    token = uuid.uuid4().hex[:8]
    todo = iter(jobs)
    inflight: dict = {}
    ac = as_completed()
    rows: list[dict] = []
    window = _window(client)

    def submit_next() -> bool:
        job = next(todo, None)
        if job is None:
            return False
        fut = client.submit(fn, job, *args, key=f"{desc}-{job.key}-{token}", pure=False, retries=0)
        if ledger is not None:
            ledger.running(job.key)
        inflight[fut] = job
        ac.add(fut)
        return True

    for _ in range(window):
        if not submit_next():
            break
    failed = 0
    with progress_bar(len(jobs), desc, "series", progress) as bar:
        for n, fut in enumerate(ac, 1):
            job = inflight.pop(fut)
            try:
                row = fut.result()
            except Exception as e:  # the worker died, the task could not be unpickled, ...
                row = fail_row(job, f"task failed on the cluster: {type(e).__name__}: "
                                    f"{str(e).splitlines()[0][:200] if str(e) else ''}")
            fut.release()
            rows.append(row)
            manifest.put(row)
            if ledger is not None:
                record_manifest_row(ledger, row)
            failed += row.get("status") == "failed"
            bar.update(1)
            if failed:
                bar.set_postfix(failed=failed)
            if n % 50 == 0:
                window = _window(client)
            while len(inflight) < window and submit_next():
                pass
    return rows
