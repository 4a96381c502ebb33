"""Audit metrics, defined once: PSNR, SSIM (whole slice and foreground), NRMSE, HFEN.

Definitions (``medsr-metrics-v1``; docs/audit.md repeats them for third parties):

- Inputs are an original and a test stack ``(n, H, W)`` in rescaled units (Rescale
  Slope/Intercept applied) on the original grid, converted to float64.
- ``data_range = max - min`` of the original *series* (whole stack), never 255 or a
  dtype range. It is passed explicitly to every formula below.
- Foreground mask: ``(original - series_min) > 0.05 * (p99.5 - series_min)`` with
  ``p99.5`` the 99.5th percentile of the whole original series (``np.percentile``,
  linear interpolation). For MR magnitude data (series_min = 0) this is
  ``original > 5% of p99.5``.
- PSNR = ``10 log10(data_range**2 / MSE)`` over the whole slice; ``psnr_fg`` is the same
  with the MSE over the mask pixels only. Identical data (MSE = 0) and anything above
  100 dB report ``PSNR_CAP_DB`` = 100 dB, so values stay finite in JSON.
- SSIM = ``skimage.metrics.structural_similarity(o - series_min, t - series_min,
  data_range=data_range)`` (defaults: 7x7 uniform window, K1 0.01, K2 0.03, sample
  covariance). SSIM's luminance term assumes values in [0, L]; shifting by the series
  minimum keeps it independent of a Rescale Intercept and is a no-op for MR magnitude
  data (series_min = 0). ``ssim_fg`` is the
  mean of the SSIM map (``full=True``) over the mask pixels that are at least 3 pixels
  from the slice border: skimage's ``ssim`` itself averages the map over exactly that
  interior, so a full mask gives ``ssim_fg == ssim``.
- NRMSE = ``||t - o||_2 / ||o - series_min||_2`` per slice (skimage's 'euclidean'
  normalisation on min-shifted values, so a Rescale Intercept does not change it).
- HFEN = ``||LoG(t) - LoG(o)||_2 / ||LoG(o)||_2`` with ``scipy.ndimage.gaussian_laplace``
  (sigma 1.5, 15x15 kernel: truncate 7/1.5, reflect borders), after Ravishankar and
  Bresler (IEEE TMI 2011).
- Series figures are means over the slices whose mask covers >= 5% of the slice; the
  other slices are listed as excluded. Undefined values (empty mask) are NaN in Python
  and ``null`` in JSON.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from .results import (FG_FRACTION, FG_PERCENTILE, HFEN_SIGMA, HFEN_TRUNCATE, METRIC_NAMES, METRICS_ID,  # noqa: F401
                      MIN_FG_COVERAGE, PSNR_CAP_DB, SCHEMA, SSIM_WIN, AuditResult, MethodMetrics, SliceMetrics, _num,
                      json_safe, psnr_from_mse)


def _as_stack(x: np.ndarray) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"expected (n, H, W) or (H, W), got shape {np.shape(x)}")
    return a


def series_data_range(original: np.ndarray) -> float:
    """``max - min`` of the whole original series, in its own (rescaled) units."""
    a = _as_stack(original)
    return float(a.max() - a.min())


def foreground_threshold(original: np.ndarray) -> float:
    """Series-level threshold: ``series_min + 0.05 * (p99.5 - series_min)``."""
    a = _as_stack(original)
    lo = float(a.min())
    return lo + FG_FRACTION * (float(np.percentile(a, FG_PERCENTILE)) - lo)


def foreground_mask(original: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """Boolean (n, H, W) mask ``original > threshold`` (default ``foreground_threshold``)."""
    a = _as_stack(original)
    return a > (foreground_threshold(a) if threshold is None else threshold)


def _ratio_norm(num: float, den: float) -> float:
    if den > 0.0:
        return num / den
    return 0.0 if num == 0.0 else math.nan


def _l2(x: np.ndarray) -> float:
    # np.sum(x * x), not np.linalg.norm: BLAS dot thrashes under thread contention
    return math.sqrt(float(np.sum(x * x)))


def reference_slice_metrics(o: np.ndarray, t: np.ndarray, m: np.ndarray, index: int, dr: float, lo: float) -> SliceMetrics:
    """The definitions above, one slice at a time with skimage's SSIM: the reference that the batched
    implementation (``fast_metrics``, what ``measure`` and ``audit`` run) is tested against."""
    from scipy.ndimage import gaussian_laplace
    from skimage.metrics import structural_similarity

    err = t - o
    sq = err * err
    n_fg = int(m.sum())
    ssim, smap = structural_similarity(o - lo, t - lo, data_range=dr, win_size=SSIM_WIN, full=True)
    pad = (SSIM_WIN - 1) // 2
    inner = np.zeros_like(m)
    inner[pad:-pad, pad:-pad] = True
    m_in = m & inner
    log_o = gaussian_laplace(o, HFEN_SIGMA, mode="reflect", truncate=HFEN_TRUNCATE)
    log_e = gaussian_laplace(err, HFEN_SIGMA, mode="reflect", truncate=HFEN_TRUNCATE)
    return SliceMetrics(
        index=index,
        psnr=psnr_from_mse(float(sq.mean()), dr),
        psnr_fg=psnr_from_mse(float(sq[m].mean()), dr) if n_fg else math.nan,
        ssim=float(ssim),
        ssim_fg=float(smap[m_in].mean()) if m_in.any() else math.nan,
        nrmse=_ratio_norm(math.sqrt(float(sq.sum())), _l2(o - lo)),
        hfen=_ratio_norm(_l2(log_e), _l2(log_o)),
        fg_fraction=n_fg / m.size,
    )


def _mean(values: list[float]) -> float:
    v = [x for x in values if math.isfinite(x)]
    return float(np.mean(v)) if v else math.nan


def measure(original: np.ndarray, test: np.ndarray, *, data_range: float | None = None, name: str) -> MethodMetrics:
    """Per-slice and series metrics of ``test`` against ``original`` (see module docstring).

    Both are (n, H, W) (or (H, W)) in rescaled units on the same grid; integer input is
    converted to float64 by value, so uint16 12-bit data measures like its float copy.
    ``data_range`` defaults to ``series_data_range(original)``. The foreground mask is
    always computed from ``original`` (series-level threshold). Raises ValueError on
    shape mismatch or a constant series (data_range <= 0).
    """
    from .fast_metrics import SeriesAccumulator

    o, t = _as_stack(original), _as_stack(test)
    if o.shape != t.shape:
        raise ValueError(f"original {o.shape} and test {t.shape} differ in shape")
    dr = series_data_range(o) if data_range is None else float(data_range)
    acc = SeriesAccumulator((name,), data_range=dr, fg_threshold=foreground_threshold(o), series_min=float(o.min()))
    acc.add(0, o, {name: t})
    return acc.results()[name]


def audit(original: np.ndarray, tests: Mapping[str, np.ndarray], *, data_range: float | None = None,
          ratios: Mapping[str, float] | None = None, provenance: Mapping[str, Any] | None = None) -> AuditResult:
    """Measure every stack in ``tests`` (name -> (n, H, W)) against ``original`` into one result."""
    o = _as_stack(original)
    dr = series_data_range(o) if data_range is None else float(data_range)
    prov = {"metrics_id": METRICS_ID, **dict(provenance or {})}
    from .fast_metrics import SeriesAccumulator

    thr = foreground_threshold(o)
    acc = SeriesAccumulator(tuple(tests), data_range=dr, fg_threshold=thr, series_min=float(o.min()))
    stacks = {k: _as_stack(v) for k, v in tests.items()}
    for k, v in stacks.items():
        if v.shape != o.shape:
            raise ValueError(f"original {o.shape} and test {v.shape} ({k!r}) differ in shape")
    acc.add(0, o, stacks)
    return AuditResult(data_range=dr, fg_threshold=thr, methods=acc.results(),
                       ratios={k: float(v) for k, v in (ratios or {}).items()}, provenance=prov)
