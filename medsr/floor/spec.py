"""The floor and the one judge of a slice against it (the audit's definitions, medsr.audit.metrics).

A slice meets the floor when its foreground PSNR >= ``psnr_fg`` (whole-slice PSNR for a slice
with no foreground pixel, where the foreground PSNR is undefined) and its whole-slice SSIM >=
``ssim``. data_range, the foreground mask and SSIM's arguments are exactly those of
``medsr.audit.measure``, so the floor check and the stored audit agree to the last bit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..audit.metrics import SSIM_WIN, foreground_threshold, psnr_from_mse, series_data_range
from ..errors import MedsrError, QualityGateError

FLOOR_ID = "medsr-floor-v1"
FALLBACKS = ("error", "lossless")


class FloorError(QualityGateError):
    """A slice cannot meet the floor with any lossy representation (nothing was written)."""


@dataclass(frozen=True)
class Floor:
    psnr_fg: float | None = None  # dB, foreground PSNR per slice
    ssim: float | None = None  # whole-slice SSIM per slice
    fallback: str = "error"  # error | lossless: what happens to a slice no lossy representation can meet

    def describe(self) -> str:
        parts = ([f"foreground PSNR >= {self.psnr_fg:g} dB"] if self.psnr_fg is not None else []) + \
                ([f"SSIM >= {self.ssim:g}"] if self.ssim is not None else [])
        return " and ".join(parts)

    def to_dict(self) -> dict:
        return {"floor_psnr_fg": self.psnr_fg, "floor_ssim": self.ssim, "floor_fallback": self.fallback,
                "floor_id": FLOOR_ID}


def check_floor(psnr_fg: float | None, ssim: float | None, fallback: str = "error") -> Floor | None:
    """Validate archive options -> a Floor, or None when no floor is asked for (one-line MedsrError)."""
    if fallback not in FALLBACKS:
        raise MedsrError(f"--floor-fallback must be one of {', '.join(FALLBACKS)} (got {fallback!r})")
    if psnr_fg is not None and not (math.isfinite(psnr_fg) and 0.0 < psnr_fg <= 100.0):
        raise MedsrError(f"--floor-psnr-fg must be a PSNR in dB, > 0 and <= 100 (got {psnr_fg:g})")
    if ssim is not None and not (math.isfinite(ssim) and 0.0 < ssim <= 1.0):
        raise MedsrError(f"--floor-ssim must be in (0, 1] (got {ssim:g})")
    if psnr_fg is None and ssim is None:
        if fallback != "error":
            raise MedsrError("--floor-fallback needs a floor (--floor-psnr-fg or --floor-ssim)")
        return None
    return Floor(None if psnr_fg is None else float(psnr_fg), None if ssim is None else float(ssim), fallback)


@dataclass(frozen=True)
class SliceQuality:
    psnr_fg: float  # NaN when the slice has no foreground pixel
    psnr: float
    ssim: float  # NaN when no SSIM floor is set (not measured)

    @property
    def psnr_floor_value(self) -> float:
        """What the PSNR floor is compared with: foreground PSNR, or whole-slice PSNR without foreground."""
        return self.psnr if math.isnan(self.psnr_fg) else self.psnr_fg

    def to_dict(self) -> dict:
        return {k: (None if math.isnan(v) else round(float(v), 4)) for k, v in
                (("psnr_fg", self.psnr_fg), ("psnr", self.psnr), ("ssim", self.ssim))}


class SliceJudge:
    """Measures candidate slices (stored units) of one series against its original, as the audit does."""

    def __init__(self, original_stored: np.ndarray, slope: np.ndarray, intercept: np.ndarray, floor: Floor):
        self.slope = np.asarray(slope, dtype=np.float64)
        self.intercept = np.asarray(intercept, dtype=np.float64)
        self.original = np.asarray(original_stored).astype(np.float64) * self.slope[:, None, None] \
            + self.intercept[:, None, None]
        self.floor = floor
        self.data_range = series_data_range(self.original)
        self.lo = float(self.original.min())
        self.mask = self.original > foreground_threshold(self.original)

    def quality(self, i: int, stored_slice: np.ndarray) -> SliceQuality:
        o = self.original[i]
        t = np.asarray(stored_slice).astype(np.float64) * self.slope[i] + self.intercept[i]
        err = t - o
        sq = err * err
        m = self.mask[i]
        ssim = math.nan
        if self.floor.ssim is not None:
            from skimage.metrics import structural_similarity

            ssim = float(structural_similarity(o - self.lo, t - self.lo, data_range=self.data_range,
                                               win_size=SSIM_WIN))
        return SliceQuality(psnr_from_mse(float(sq[m].mean()), self.data_range) if m.any() else math.nan,
                            psnr_from_mse(float(sq.mean()), self.data_range), ssim)

    def meets(self, q: SliceQuality) -> bool:
        f = self.floor
        if f.psnr_fg is not None and not q.psnr_floor_value >= f.psnr_fg:
            return False
        return f.ssim is None or q.ssim >= f.ssim
