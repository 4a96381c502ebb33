"""The audit metrics of ``medsr.audit.metrics`` (``medsr-metrics-v1``), computed on slice batches.

Same definitions, vectorised over a batch of slices and shared across methods:

- SSIM is skimage's ``structural_similarity`` written out (7x7 ``uniform_filter`` with
  ``reflect`` borders, K1 0.01, K2 0.03, sample covariance 49/48, the map averaged over the
  interior 3 pixels from the border, as skimage crops it), made in strips of ``STRIP_ROWS`` rows
  from window sums (``_ssim_sums``); the original's local sums once per strip, not once per method.
- HFEN needs only the norms of the Laplacian of Gaussian (``gaussian_laplace``, ``reflect``
  borders) of the original and of each method's error: computed as a weighted sum over the
  slice's orthonormal DCT, where that filter is diagonal (``_log_gain2``), the original's once
  per batch.
- PSNR, foreground PSNR, NRMSE: sums over axes (1, 2).

``SeriesAccumulator`` takes the series-level constants (data range, foreground threshold,
series minimum) and then batches in any order, so a caller can feed slices as it produces
them and drop each batch afterwards (memory bounded by the batch, not the series).
``tests/test_fast_metrics.py`` checks every figure against the slice-by-slice reference
(``metrics.reference_slice_metrics``, skimage's SSIM) to 1e-6 relative.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Mapping

import numpy as np

from .results import (FG_FRACTION, FG_PERCENTILE, HFEN_SIGMA, HFEN_TRUNCATE, METRIC_NAMES, MIN_FG_COVERAGE,
                      SSIM_WIN, MethodMetrics, SliceMetrics, psnr_from_mse)

K1, K2 = 0.01, 0.03
BATCH = 1  # slices measured together: ~40 float64 arrays of the batch live at once (per thread)
MAX_THREADS = 4  # audit threads at most: each holds ~40 float64 copies of a slice while it measures


@functools.lru_cache(maxsize=None)
def _warn_once(message: str) -> None:
    import logging

    logging.getLogger("medsr").warning(message)


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity where the OS says, else the machine's count)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads() -> int:
    """Threads the audit measures slices on: the CPUs this process may use, at most ``MAX_THREADS``;
    ``MEDSR_AUDIT_THREADS`` overrides (1: none)."""
    import os

    env = os.environ.get("MEDSR_AUDIT_THREADS", "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError:  # a developer knob: a typo must not fail an archive
            _warn_once(f"MEDSR_AUDIT_THREADS={env!r} is not an integer: using the default")
    return max(1, min(MAX_THREADS, usable_cpus()))


@functools.lru_cache(maxsize=8)
def _log_gain2(h: int, w: int) -> np.ndarray:
    """Squared gain of the Laplacian of Gaussian on each orthonormal DCT-II basis image of an (h, w) slice.

    SciPy's ``reflect`` border is the half-sample symmetric extension that the DCT-II assumes, and the
    Gaussian kernels (orders 0 and 2) are symmetric, so filtering is diagonal in the DCT basis: basis
    (k, l) is scaled by ``G2(k) G0(l) + G0(k) G2(l)``, where ``G(k) = sum_j g[j] cos(pi k j / n)`` over
    the kernel's taps ``g`` (the same taps ``gaussian_laplace`` uses). By Parseval, ``||LoG(a)||`` is
    then ``sqrt(sum(DCT(a)^2 * gain^2))``: one transform instead of four filter passes."""
    radius = int(HFEN_TRUNCATE * HFEN_SIGMA + 0.5)
    taps = np.arange(-radius, radius + 1)
    s2 = HFEN_SIGMA * HFEN_SIGMA
    g0 = np.exp(-0.5 * taps * taps / s2)
    g0 /= g0.sum()  # the sampled Gaussian, normalised as SciPy normalises it
    kernels = {0: g0, 2: g0 * (taps * taps - s2) / (s2 * s2)}  # and its second derivative (both symmetric)

    def gain(order: int, n: int) -> np.ndarray:
        return np.cos(np.pi * np.arange(n)[:, None] * taps[None, :] / n) @ kernels[order]

    g = np.outer(gain(2, h), gain(0, w)) + np.outer(gain(0, h), gain(2, w))
    return g * g


def warm_up() -> None:
    """Import what measuring needs (SciPy's FFT: ~0.3 s of interpreter work) now, while this thread would wait
    anyway; otherwise the first slice group imports it with the other threads waiting on it."""
    import scipy.fft  # noqa: F401


def _log_norms(a: np.ndarray) -> np.ndarray:
    """``||LoG(slice)||`` of each slice of an (n, H, W) batch (``gaussian_laplace`` with ``HFEN_SIGMA``,
    ``HFEN_TRUNCATE`` and ``reflect`` borders), computed in the DCT domain (``_log_gain2``)."""
    from scipy.fft import dctn

    c = dctn(a, axes=(1, 2), norm="ortho")
    return np.sqrt(np.einsum("nij,nij,ij->n", c, c, _log_gain2(a.shape[1], a.shape[2])))


def _norms(a: np.ndarray) -> np.ndarray:
    return np.sqrt(np.einsum("nij,nij->n", a, a))


class _OriginalBatch:
    """What every method's metrics need from the original batch, computed once."""

    def __init__(self, o: np.ndarray, mask: np.ndarray, lo: float, norms: tuple | None = None):
        self.o = o
        self.x = o - lo
        self.mask = mask
        self.n_fg = mask.sum(axis=(1, 2))
        pad = (SSIM_WIN - 1) // 2
        inner = np.zeros(mask.shape[1:], dtype=bool)
        inner[pad:-pad, pad:-pad] = True
        self.m_in = mask & inner  # foreground inside skimage's SSIM crop
        # the original's norms (NRMSE, HFEN denominators): given when an earlier sweep computed them
        self.norm_x, self.norm_log = norms if norms is not None else (_norms(self.x), _log_norms(o))


STRIP_ROWS = 128  # SSIM rows per strip: temporaries stay in cache, ops stay large enough for 2 threads (best of 32-512 on 512^2)


def _window_sums(a: np.ndarray) -> np.ndarray:
    """Sums over every whole ``SSIM_WIN`` x ``SSIM_WIN`` window of (n, R + 6, C + 6) -> (n, R, C): sums of
    shifted views (contiguous adds; no border handling, the caller pads)."""
    k = SSIM_WIN
    r, c = a.shape[1] - k + 1, a.shape[2] - k + 1
    rows = np.add(a[:, 0:r], a[:, 1:r + 1])
    for d in range(2, k):
        rows += a[:, d:d + r]
    out = np.add(rows[:, :, 0:c], rows[:, :, 1:c + 1])
    for d in range(2, k):
        out += rows[:, :, d:d + c]
    return out


def _padded(a: np.ndarray, pad: int, lo: float = 0.0) -> np.ndarray:
    """``a - lo`` padded by ``pad`` on both sides of its last two axes as NumPy's ``symmetric`` mode (SciPy's
    ``reflect``) pads: the same array as ``np.pad(a - lo, ..., mode="symmetric")``, written in place of
    ``np.pad``'s general loop (3 ms -> 0.5 ms on a 512^2 slice); slices under ``pad`` pixels take ``np.pad``."""
    n, h, w = a.shape
    p = pad
    if h < p or w < p:
        return np.pad(a - lo, ((0, 0), (p, p), (p, p)), mode="symmetric")
    out = np.empty((n, h + 2 * p, w + 2 * p))
    np.subtract(a, lo, out=out[:, p:h + p, p:w + p])
    if p:
        out[:, p:h + p, :p] = out[:, p:h + p, 2 * p - 1:p - 1:-1]
        out[:, p:h + p, w + p:] = out[:, p:h + p, w + p - 1:w - 1:-1]
        out[:, :p] = out[:, 2 * p - 1:p - 1:-1]
        out[:, h + p:] = out[:, h + p - 1:h - 1:-1]
    return out


def _ssim_sums(ob: _OriginalBatch, ys: list[np.ndarray], dr: float,
               lo: float = 0.0) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each test ``y`` (rescaled; ``lo``, the series minimum, is taken off as from ``ob.x``): the SSIM
    map summed over skimage's crop (3 pixels in from every border) and over the foreground inside it, per slice.

    The slices are padded once as ``uniform_filter``'s ``reflect`` pads them (numpy's ``symmetric``), then
    the map is made in strips of ``STRIP_ROWS`` rows from window sums of shifted views (``_window_sums``),
    the original's local statistics once per strip for every test: the same map as skimage's to rounding,
    with a strip's temporaries in cache. With window sums ``S = N * mean`` (N = 49) every factor of the SSIM
    quotient is written times N^2, which cancels: ``(2 Sx Sy + c1 N^2)(2 cn (N Sxy - Sx Sy) + c2 N^2) /
    ((Sx^2 + Sy^2 + c1 N^2)(cn (N Sxx - Sx^2) + cn (N Syy - Sy^2) + c2 N^2))``."""
    n, h, w = ob.x.shape
    pad = (SSIM_WIN - 1) // 2
    N = float(SSIM_WIN * SSIM_WIN)
    cn = N / (N - 1.0)  # sample covariance, as skimage
    c1, c2 = (K1 * dr) ** 2 * N * N, (K2 * dr) ** 2 * N * N

    xp = _padded(ob.x, pad)
    yps = [_padded(y, pad, lo) for y in ys]
    total = [np.zeros(n) for _ in ys]
    fg = [np.zeros(n) for _ in ys]
    for r0 in range(0, h, STRIP_ROWS):
        r1 = min(h, r0 + STRIP_ROWS)
        crop = slice(max(r0, pad) - r0, max(min(r1, h - pad) - r0, 0))  # skimage's crop, in strip rows
        m_in = ob.m_in[:, r0:r1]
        xs = xp[:, r0:r1 + 2 * pad]
        sx = _window_sums(xs)
        sx2c1 = sx * sx
        bx = _window_sums(xs * xs)
        bx *= N
        bx -= sx2c1
        bx *= cn
        bx += c2  # cn (N Sxx - Sx^2) + c2 N^2
        sx2c1 += c1  # Sx^2 + c1 N^2
        for j, yp in enumerate(yps):
            ys_ = yp[:, r0:r1 + 2 * pad]
            sy = _window_sums(ys_)
            syy = _window_sums(ys_ * ys_)
            sxy = _window_sums(xs * ys_)
            sxsy = sx * sy
            sxy *= N
            sxy -= sxsy
            sxy *= 2.0 * cn
            sxy += c2  # 2 cn (N Sxy - Sx Sy) + c2 N^2
            sxsy *= 2.0
            sxsy += c1  # 2 Sx Sy + c1 N^2
            sy *= sy
            syy *= N
            syy -= sy
            syy *= cn
            syy += bx  # cn (N Sxx - Sx^2) + cn (N Syy - Sy^2) + c2 N^2
            sy += sx2c1  # Sx^2 + Sy^2 + c1 N^2
            sxsy *= sxy
            sy *= syy
            sxsy /= sy  # the SSIM map of the strip
            total[j] += sxsy[:, crop, pad:w - pad].sum(axis=(1, 2))
            fg[j] += np.einsum("nij,nij->n", sxsy, m_in)
    return list(zip(total, fg))


def _ratio(num: np.ndarray, den: np.ndarray) -> list[float]:
    return [n / d if d > 0.0 else (0.0 if n == 0.0 else math.nan) for n, d in zip(num.tolist(), den.tolist())]


def _measure(ob: _OriginalBatch, tests: list[np.ndarray], start: int, dr: float, lo: float) -> list[list[SliceMetrics]]:
    """Every figure of each test (rescaled, (n, H, W)) against the original batch."""
    n, h, w = ob.o.shape
    pad = (SSIM_WIN - 1) // 2
    n_crop = max(h - 2 * pad, 0) * max(w - 2 * pad, 0)
    n_in = ob.m_in.sum(axis=(1, 2))
    sums = _ssim_sums(ob, tests, dr, lo)
    results = []
    for t, (ssim_sum, ssim_fg_sum) in zip(tests, sums):
        err = t - ob.o
        sq = err * err
        sse = sq.sum(axis=(1, 2))
        mse = sse / (h * w)  # what sq.mean(axis=(1, 2)) computes
        sse_fg = np.einsum("nij,nij->n", sq, ob.mask)
        nrmse = _ratio(np.sqrt(sse), ob.norm_x)
        hfen = _ratio(_log_norms(err), ob.norm_log)
        out = []
        for k in range(n):
            nf = int(ob.n_fg[k])
            out.append(SliceMetrics(
                index=start + k,
                psnr=psnr_from_mse(float(mse[k]), dr),
                psnr_fg=psnr_from_mse(float(sse_fg[k]) / nf, dr) if nf else math.nan,
                ssim=float(ssim_sum[k]) / n_crop if n_crop else math.nan,
                ssim_fg=float(ssim_fg_sum[k]) / int(n_in[k]) if n_in[k] else math.nan,
                nrmse=nrmse[k], hfen=hfen[k], fg_fraction=nf / (h * w),
            ))
        results.append(out)
    return results


def _mean(values: list[float]) -> float:
    v = [x for x in values if math.isfinite(x)]
    return float(np.mean(v)) if v else math.nan


class SeriesAccumulator:
    """Per-slice metrics of several methods against one original series, fed in slice batches.

    ``data_range``, ``fg_threshold`` and ``series_min`` are the series-level constants of
    ``medsr-metrics-v1`` (``series_constants`` computes them from a whole stack).
    """

    def __init__(self, names, *, data_range: float, fg_threshold: float, series_min: float):
        if not data_range > 0.0:
            raise ValueError(f"data_range must be > 0 (got {data_range}); the original series is constant")
        self.names = tuple(names)
        self.data_range, self.fg_threshold, self.lo = float(data_range), float(fg_threshold), float(series_min)
        self.per: dict[str, dict[int, SliceMetrics]] = {k: {} for k in self.names}
        self._norms: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # first slice of a group -> the original's norms

    def add(self, start: int, original: np.ndarray, tests: Mapping[str, np.ndarray]) -> None:
        """Measure slices ``start ..`` of the methods in ``tests`` (rescaled units, (n, H, W)); a method
        may be fed in a later pass than the others.

        Slice groups are measured on ``threads()`` threads: SciPy's filters and NumPy's array loops
        release the GIL, and every figure of a slice is computed by one thread in the same order as
        on one, so the result does not depend on the thread count (``tests/test_fast_metrics.py``)."""
        o = np.asarray(original, dtype=np.float64)
        unknown = set(tests) - set(self.names)
        if unknown:
            raise ValueError(f"methods {sorted(unknown)} were not named when the accumulator was made")
        for name in tests:
            if np.shape(tests[name]) != o.shape:
                raise ValueError(f"original {o.shape} and test {np.shape(tests[name])} differ in shape")
        starts = range(0, o.shape[0], BATCH)
        workers = min(threads(), len(starts))
        if workers <= 1:
            parts = [self._group(start, s, o, tests) for s in starts]
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(workers, thread_name_prefix="medsr-audit") as pool:
                parts = list(pool.map(lambda s: self._group(start, s, o, tests), starts))
        for part in parts:
            for name, res in part.items():
                self.per[name].update({m.index: m for m in res})

    def _group(self, start: int, s: int, o: np.ndarray, tests: Mapping[str, np.ndarray]) -> dict[str, list[SliceMetrics]]:
        ob = _OriginalBatch(o[s:s + BATCH], o[s:s + BATCH] > self.fg_threshold, self.lo,
                            self._norms.get(start + s))
        self._norms[start + s] = (ob.norm_x, ob.norm_log)  # a later sweep over these slices reuses them
        unique: list[np.ndarray] = []
        which: dict[str, int] = {}
        for name in (n for n in self.names if n in tests):
            t = np.asarray(tests[name][s:s + BATCH], dtype=np.float64)
            if not np.isfinite(t).all():
                raise ValueError(f"test stack {name!r} holds NaN or inf")
            # a method identical to one already measured (e.g. restored == bicubic without consistency)
            same = next((i for i, a in enumerate(unique) if np.array_equal(a, t)), None)
            if same is None:
                unique.append(t)
                same = len(unique) - 1
            which[name] = same
        res = _measure(ob, unique, start + s, self.data_range, self.lo)
        return {name: res[i] for name, i in which.items()}

    def results(self) -> dict[str, MethodMetrics]:
        out = {}
        for name in self.names:
            per = tuple(self.per[name][i] for i in sorted(self.per[name]))
            inc = tuple(s.index for s in per if s.fg_fraction >= MIN_FG_COVERAGE)
            exc = tuple(s.index for s in per if s.fg_fraction < MIN_FG_COVERAGE)
            sel = [s for s in per if s.fg_fraction >= MIN_FG_COVERAGE]
            means = {k: _mean([getattr(s, k) for s in sel]) for k in METRIC_NAMES}
            out[name] = MethodMetrics(name=name, per_slice=per, included=inc, excluded=exc, **means)
        return out


def series_constants(original: np.ndarray) -> tuple[float, float, float]:
    """(data_range, fg_threshold, series_min) of a whole original stack (rescaled units)."""
    a = np.asarray(original)
    lo, hi = float(a.min()), float(a.max())
    thr = lo + FG_FRACTION * (float(np.percentile(a, FG_PERCENTILE)) - lo)
    return hi - lo, thr, lo
