"""Intensity scaling between stored DICOM values and the network's ranges.

The window is computed from the *low-res* stack, so the archive (which only
keeps the low-res data) and training (which makes its low-res data with the same
operator) derive exactly the same mapping. The network takes LR in [0, 1] and
produces HR in [-1, 1], as in the paper. Values above the window are not clipped:
the network sees them as > 1 and restore maps them back.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WINDOW_PERCENTILE = 99.8


@dataclass(frozen=True)
class IntensityWindow:
    lo: float
    hi: float

    @property
    def width(self) -> float:
        return max(self.hi - self.lo, 1e-6)


def intensity_window(lr: np.ndarray, percentile: float = WINDOW_PERCENTILE) -> IntensityWindow:
    """Robust window of a low-res stack: (min, percentile) of its values."""
    v = np.asarray(lr, dtype=np.float64)
    lo = float(v.min())
    hi = float(np.percentile(v, percentile))
    if hi <= lo:
        hi = float(v.max())
    if hi <= lo:
        hi = lo + 1.0
    return IntensityWindow(lo, hi)


def to_unit(x: np.ndarray, w: IntensityWindow) -> np.ndarray:
    """Stored values -> [0, 1] (float32)."""
    return ((np.asarray(x, dtype=np.float64) - w.lo) / w.width).astype(np.float32)


def from_unit(u: np.ndarray, w: IntensityWindow) -> np.ndarray:
    """[0, 1] -> stored values (float64, not rounded)."""
    return np.asarray(u, dtype=np.float64) * w.width + w.lo


def to_signed_unit(x: np.ndarray, w: IntensityWindow) -> np.ndarray:
    """Stored values -> [-1, 1] (float32): the generator's output range."""
    return (to_unit(x, w) * 2.0 - 1.0).astype(np.float32)


def from_signed_unit(y: np.ndarray, w: IntensityWindow) -> np.ndarray:
    """[-1, 1] -> stored values (float64, not rounded)."""
    return from_unit((np.asarray(y, dtype=np.float64) + 1.0) / 2.0, w)
