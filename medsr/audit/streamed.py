"""The audit of a series fed in slice batches: memory bounded by the batch, not the series.

``stack_constants(stored, slope, intercept)`` gives ``fast_metrics.series_constants`` of the
rescaled stack (``slope * stored + intercept``, float64) without making that float copy when one
rescale serves every slice (slope > 0): the map keeps the order of the integers, so the extremes and
the two order statistics the 99.5th percentile interpolates between are those of the stored
integers, read from a histogram built batch by batch, then rescaled and interpolated as NumPy's
``percentile`` (method "linear") does. Other series (per-slice rescale, non-integer pixels) take
the float copy (``tests/test_streamed_audit.py`` holds both ways to the same constants).

``measure_batched(...)`` runs ``fast_metrics.SeriesAccumulator`` over batches of
``AUDIT_BATCH`` slices, each method's batch made on demand by a callable.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from .fast_metrics import SeriesAccumulator, series_constants, threads, warm_up
from .results import FG_FRACTION, FG_PERCENTILE, MethodMetrics

AUDIT_BATCH = 8  # slices rescaled and measured at once: a float64 batch of 512^2 slices is 16 MiB, under glibc's
# largest mmap threshold (32 MiB), so batches reuse heap pages; 16 slices (32 MiB) were fresh, page-faulted mmaps
# every batch (python -m pipelines.bench_ratios: bicubic archive 2.2 -> 2.0 s on 22 x 512^2, 2 CPUs)
MAX_SPAN = 1 << 16  # integers within 16 bits: a histogram of at most 65,536 bins


def _lerp(a: float, b: float, t: float) -> float:
    """NumPy's linear interpolation between two order statistics (numpy.lib._function_base_impl._lerp)."""
    d = b - a
    out = a + d * t
    return float(b - d * (1 - t)) if t >= 0.5 else float(out)


def _one_rescale(slope: np.ndarray, intercept: np.ndarray) -> bool:
    s, i = np.asarray(slope, np.float64), np.asarray(intercept, np.float64)
    return bool(s.size) and bool(np.all(s == s[0]) and np.all(i == i[0]) and s[0] > 0)


def stack_constants(stored: np.ndarray, slope: np.ndarray, intercept: np.ndarray,
                    batch: int = AUDIT_BATCH) -> tuple[float, float, float]:
    """(data_range, fg_threshold, series_min) of ``slope * stored + intercept`` (see the module docstring)."""
    a = np.asarray(stored)
    if not np.issubdtype(a.dtype, np.integer) or not a.size or not _one_rescale(slope, intercept):
        return series_constants(a.astype(np.float64) * np.asarray(slope)[:, None, None]
                                + np.asarray(intercept)[:, None, None])
    vmin, vmax = int(a.min()), int(a.max())
    if vmax - vmin >= MAX_SPAN:
        return series_constants(a.astype(np.float64) * slope[0] + intercept[0])
    counts = np.zeros(vmax - vmin + 1, dtype=np.int64)
    for s in range(0, a.shape[0], batch):
        counts += np.bincount((a[s:s + batch].astype(np.int64) - vmin).ravel(), minlength=counts.size)
    n = int(a.size)
    virtual = (n - 1) * (np.float64(FG_PERCENTILE) / 100)  # NumPy's "linear" method: (n - 1) * q
    k = int(np.floor(virtual))
    t = float(virtual - k)
    cum = np.cumsum(counts)
    below, above = (int(np.searchsorted(cum, j, side="right")) + vmin for j in (k, min(k + 1, n - 1)))

    def rescale(x: int) -> float:
        return float(np.float64(x) * np.float64(slope[0]) + np.float64(intercept[0]))

    lo, hi = rescale(vmin), rescale(vmax)
    p = _lerp(rescale(below), rescale(above), t)
    return hi - lo, lo + FG_FRACTION * (p - lo), lo


def measure_batched(n_slices: int, original: Callable[[slice], np.ndarray],
                    tests: Mapping[str, Callable[[slice], np.ndarray]], *, data_range: float, fg_threshold: float,
                    series_min: float, batch: int = AUDIT_BATCH, parallel_make: bool = True) -> dict[str, MethodMetrics]:
    """Every method's ``MethodMetrics``; ``original(sl)`` and each ``tests[name](sl)`` give slices ``sl``
    in rescaled units. Only one batch of each is alive at a time, and each batch of the original is measured
    against every method in one pass.

    ``parallel_make=False`` makes each method's batch in turn (a network restore uses every core itself, and its
    working memory should not stack with the others'); the slices are measured on ``threads()`` threads either way."""
    acc = SeriesAccumulator(tuple(tests), data_range=data_range, fg_threshold=fg_threshold, series_min=series_min)
    _sweep(acc, n_slices, original, tests, batch, parallel_make)
    return acc.results()


def _sweep(acc: SeriesAccumulator, n_slices: int, original, tests, batch: int, parallel_make: bool = True) -> None:
    workers = min(threads(), len(tests)) if parallel_make else 1
    if workers <= 1:
        for s in range(0, n_slices, batch):
            sl = slice(s, min(s + batch, n_slices))
            acc.add(s, original(sl), {name: make(sl) for name, make in tests.items()})
        return
    from concurrent.futures import ThreadPoolExecutor

    # each method's batch is made on its own thread (a restore chunk, a bicubic, a JPEG 2000 decode: NumPy,
    # SciPy and torch release the GIL), the original's on this one
    with ThreadPoolExecutor(workers, thread_name_prefix="medsr-audit-make") as pool:
        for s in range(0, n_slices, batch):
            sl = slice(s, min(s + batch, n_slices))
            made = {name: pool.submit(make, sl) for name, make in tests.items()}
            if s == 0:
                warm_up()
            o = original(sl)
            acc.add(s, o, {name: f.result() for name, f in made.items()})
            del made, o  # before the next batch is made: one batch alive at a time
