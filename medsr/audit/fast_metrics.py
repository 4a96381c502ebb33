"""The audit metrics of ``medsr.audit.metrics`` (``medsr-metrics-v1``), computed on slice batches.

Same definitions, vectorised over a batch of slices and shared across methods:

- SSIM is skimage's ``structural_similarity`` written out (7x7 ``uniform_filter`` with
  ``reflect`` borders, K1 0.01, K2 0.03, sample covariance 49/48, the map averaged over the
  interior 3 pixels from the border, as skimage crops it), filtered along the two in-plane
  axes of a ``(n, H, W)`` batch at once. The original's local means and second moments are
  filtered once per batch, not once per method.
- HFEN's Laplacian of Gaussian of the original is computed once per batch; the error's per
  method (``gaussian_filter`` with ``order`` 2 along each in-plane axis: what
  ``gaussian_laplace`` does slice by slice).
- PSNR, foreground PSNR, NRMSE: sums over axes (1, 2).

``SeriesAccumulator`` takes the series-level constants (data range, foreground threshold,
series minimum) and then batches in any order, so a caller can feed slices as it produces
them and drop each batch afterwards (memory bounded by the batch, not the series).
``tests/test_fast_metrics.py`` checks every figure against the slice-by-slice reference
(``metrics.reference_slice_metrics``, skimage's SSIM) to 1e-6 relative.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from .results import (FG_FRACTION, FG_PERCENTILE, HFEN_SIGMA, HFEN_TRUNCATE, METRIC_NAMES, MIN_FG_COVERAGE,
                      SSIM_WIN, MethodMetrics, SliceMetrics, psnr_from_mse)

K1, K2 = 0.01, 0.03
BATCH = 1  # slices measured together: ~40 float64 arrays of the batch live at once


def _box(a: np.ndarray) -> np.ndarray:
    from scipy.ndimage import uniform_filter

    return uniform_filter(a, size=(1, SSIM_WIN, SSIM_WIN))


def _log(a: np.ndarray) -> np.ndarray:
    """Laplacian of Gaussian of each slice (the same 1-D passes as ``gaussian_laplace`` on one slice)."""
    from scipy.ndimage import gaussian_filter

    kw = {"sigma": (0.0, HFEN_SIGMA, HFEN_SIGMA), "mode": "reflect", "truncate": HFEN_TRUNCATE}
    return gaussian_filter(a, order=(0, 2, 0), **kw) + gaussian_filter(a, order=(0, 0, 2), **kw)


def _norms(a: np.ndarray) -> np.ndarray:
    return np.sqrt(np.einsum("nij,nij->n", a, a))


class _OriginalBatch:
    """What every method's metrics need from the original batch, computed once."""

    def __init__(self, o: np.ndarray, mask: np.ndarray, lo: float):
        self.o = o
        self.x = o - lo
        self.mask = mask
        self.n_fg = mask.sum(axis=(1, 2))
        pad = (SSIM_WIN - 1) // 2
        inner = np.zeros(mask.shape[1:], dtype=bool)
        inner[pad:-pad, pad:-pad] = True
        self.inner = inner
        self.m_in = mask & inner
        self.ux = _box(self.x)
        self.vx = _box(self.x * self.x) - self.ux * self.ux
        self.norm_x = _norms(self.x)
        self.norm_log = _norms(_log(o))


def _ssim_map(ob: _OriginalBatch, y: np.ndarray, dr: float) -> np.ndarray:
    cov_norm = SSIM_WIN ** 2 / (SSIM_WIN ** 2 - 1.0)
    uy = _box(y)
    vy = cov_norm * (_box(y * y) - uy * uy)
    vxy = cov_norm * (_box(ob.x * y) - ob.ux * uy)
    c1, c2 = (K1 * dr) ** 2, (K2 * dr) ** 2
    ux = ob.ux
    a1 = 2 * ux * uy + c1
    a2 = 2 * vxy + c2
    b1 = ux ** 2 + uy ** 2 + c1
    b2 = cov_norm * ob.vx + vy + c2
    return (a1 * a2) / (b1 * b2)


def _ratio(num: np.ndarray, den: np.ndarray) -> list[float]:
    return [n / d if d > 0.0 else (0.0 if n == 0.0 else math.nan) for n, d in zip(num.tolist(), den.tolist())]


def _measure(ob: _OriginalBatch, t: np.ndarray, start: int, dr: float, lo: float) -> list[SliceMetrics]:
    n, h, w = t.shape
    err = t - ob.o
    sq = err * err
    mse = sq.mean(axis=(1, 2))
    sse = sq.sum(axis=(1, 2))
    sse_fg = np.einsum("nij,nij->n", sq, ob.mask)
    smap = _ssim_map(ob, t - lo, dr)
    pad = (SSIM_WIN - 1) // 2
    ssim = smap[:, pad:h - pad, pad:w - pad].mean(axis=(1, 2))
    n_in = ob.m_in.sum(axis=(1, 2))
    ssim_fg_sum = np.einsum("nij,nij->n", smap, ob.m_in)
    nrmse = _ratio(np.sqrt(sse), ob.norm_x)
    hfen = _ratio(_norms(_log(err)), ob.norm_log)
    out = []
    for k in range(n):
        nf = int(ob.n_fg[k])
        out.append(SliceMetrics(
            index=start + k,
            psnr=psnr_from_mse(float(mse[k]), dr),
            psnr_fg=psnr_from_mse(float(sse_fg[k]) / nf, dr) if nf else math.nan,
            ssim=float(ssim[k]),
            ssim_fg=float(ssim_fg_sum[k]) / int(n_in[k]) if n_in[k] else math.nan,
            nrmse=nrmse[k], hfen=hfen[k], fg_fraction=nf / (h * w),
        ))
    return out


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

    def add(self, start: int, original: np.ndarray, tests: Mapping[str, np.ndarray]) -> None:
        """Measure slices ``start ..`` of every method in ``tests`` (rescaled units, (n, H, W))."""
        o = np.asarray(original, dtype=np.float64)
        for s in range(0, o.shape[0], BATCH):
            ob = _OriginalBatch(o[s:s + BATCH], o[s:s + BATCH] > self.fg_threshold, self.lo)
            done: list[tuple[np.ndarray, list[SliceMetrics]]] = []
            for name in self.names:
                t = np.asarray(tests[name][s:s + BATCH], dtype=np.float64)
                if t.shape != ob.o.shape:
                    raise ValueError(f"original {ob.o.shape} and test {t.shape} differ in shape")
                if not np.isfinite(t).all():
                    raise ValueError(f"test stack {name!r} holds NaN or inf")
                # a method identical to one already measured (bicubic archive: restored == bicubic)
                same = next((m for a, m in done if np.array_equal(a, t)), None)
                res = same if same is not None else _measure(ob, t, start + s, self.data_range, self.lo)
                done.append((t, res))
                self.per[name].update({m.index: m for m in res})

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
