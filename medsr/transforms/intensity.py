"""Intensity transforms: stored values <-> unit space, gamma, contrast remaps, MR noise, network ranges.

"Unit space" is ``medsr.codec.to_unit`` with the volume's low-res window: background
~0, bright tissue ~1. Contrast and noise augmentations act there, before the image
is quantised back to stored integers and degraded.
"""
from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
from monai.transforms import MapTransform, Randomizable, Transform

from medsr.codec import IntensityWindow, to_signed_unit, to_unit

from .twin import RandEachKeyd, RandTwind

WINDOW_KEY = "window"


def as_window(w: IntensityWindow | Sequence[float]) -> IntensityWindow:
    return w if isinstance(w, IntensityWindow) else IntensityWindow(float(w[0]), float(w[1]))


class ToUnit(Transform):
    """Stored values -> float32 unit space with the given window (``medsr.codec.to_unit``)."""

    def __call__(self, x: np.ndarray, window: IntensityWindow) -> np.ndarray:
        return to_unit(x, window)


class ToUnitd(MapTransform):
    """Dictionary twin; records the stored dtype under ``dtype_key`` for ``RandQuantised``."""

    def __init__(self, keys: str = "hr", window_key: str = WINDOW_KEY, dtype_key: str = "stored_dtype"):
        super().__init__(keys)
        self.window_key, self.dtype_key = window_key, dtype_key
        self.t = ToUnit()

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        w = as_window(d[self.window_key])
        d[self.window_key] = w
        for key in self.keys:
            d[self.dtype_key] = np.asarray(d[key]).dtype.str
            d[key] = self.t(d[key], w)
        return d


class RandGamma(Randomizable, Transform):
    """With probability ``prob``: u -> max(u, 0) ** g, g log-uniform in ``gamma``.

    Monotone and fixing 0 and 1, so the window stays valid while the contrast between
    tissues changes (T1-, PD- and contrast-like variations).
    """

    def __init__(self, gamma: tuple[float, float] = (0.6, 1.6), prob: float = 0.8, seed: int | None = None):
        self.gamma, self.prob = gamma, prob
        self.R = np.random.RandomState(seed)
        self._g: float | None = None

    def randomize(self, data: object = None) -> None:
        lo, hi = self.gamma
        self._g = float(np.exp(self.R.uniform(np.log(lo), np.log(hi)))) if self.R.rand() < self.prob else None

    def __call__(self, u: np.ndarray, randomize: bool = True) -> np.ndarray:
        if randomize:
            self.randomize()
        if self._g is None:
            return u
        return np.power(np.maximum(u, 0.0), self._g, dtype=np.float32)


class RandContrastRemap(Randomizable, Transform):
    """With probability ``prob``: u -> f(u), a random piecewise-linear contrast curve.

    f is the identity up to ``background`` (the foreground threshold, 5% of the window in unit
    space: background and its noise stay as they are, dark as in every MR contrast); above it,
    ``knots`` control points evenly spaced on [``background``, 1] take values drawn uniformly from
    [``floor``, 1] (then scaled so the largest is 1); above 1, f grows with the last knot's value.
    f need not be monotone, so tissues can swap order: T1-trained crops become T2-, PD- or
    FLAIR-like (bright or dark fluid). Edges stay where they were; their polarity and height change.
    """

    def __init__(self, prob: float = 0.5, knots: int = 5, floor: float = 0.1, background: float = 0.05,
                 seed: int | None = None):
        if knots < 2:
            raise ValueError("knots must be at least 2")
        if not 0 <= background < 1 or not 0 <= floor <= 1:
            raise ValueError("need 0 <= background < 1 and 0 <= floor <= 1")
        self.prob, self.knots, self.floor, self.background = prob, knots, floor, background
        self.x = np.concatenate([[0.0], np.linspace(background, 1.0, knots)])  # knot positions (fixed)
        self.R = np.random.RandomState(seed)
        self._y: np.ndarray | None = None

    def randomize(self, data: object = None) -> None:
        if self.R.rand() >= self.prob:
            self._y = None
            return
        y = self.R.uniform(max(self.floor, self.background), 1.0, self.knots - 1)
        self._y = np.concatenate([[0.0, self.background], y / y.max()])

    def __call__(self, u: np.ndarray, randomize: bool = True) -> np.ndarray:
        if randomize:
            self.randomize()
        if self._y is None:
            return u
        y = self._y
        v = np.maximum(u, 0.0)
        out = np.interp(np.minimum(v, 1.0), self.x, y) + np.maximum(v - 1.0, 0.0) * y[-1]
        return out.astype(np.float32)


class RandMRNoise(Randomizable, Transform):
    """With probability ``prob``: add noise of a std drawn from ``sigmas`` (unit space).

    Rician (magnitude of complex Gaussian noise, the MR case) with probability
    ``rician_prob``, else Gaussian. Applied to the HR image before quantisation, so the
    low-res data carry the block-averaged noise just as a noisier acquisition would.
    """

    def __init__(self, sigmas: Sequence[float] = (0.005, 0.01, 0.02, 0.03), prob: float = 0.3,
                 rician_prob: float = 0.5, seed: int | None = None):
        self.sigmas, self.prob, self.rician_prob = tuple(sigmas), prob, rician_prob
        self.R = np.random.RandomState(seed)
        self._sigma = 0.0
        self._rician = False
        self._seed = 0

    def randomize(self, data: object = None) -> None:
        on = self.R.rand() < self.prob and len(self.sigmas) > 0
        self._sigma = float(self.sigmas[self.R.randint(len(self.sigmas))]) if on else 0.0
        self._rician = bool(self.R.rand() < self.rician_prob)
        self._seed = int(self.R.randint(2**31 - 1))

    def __call__(self, u: np.ndarray, randomize: bool = True) -> np.ndarray:
        if randomize:
            self.randomize()
        if self._sigma <= 0:
            return u
        g = np.random.default_rng(self._seed)
        n1 = g.standard_normal(u.shape, dtype=np.float32) * self._sigma
        if not self._rician:
            return (u + n1).astype(np.float32)
        n2 = g.standard_normal(u.shape, dtype=np.float32) * self._sigma
        return np.sqrt((u + n1) ** 2 + n2**2).astype(np.float32)


class RandGammad(RandEachKeyd):
    def __init__(self, keys: str = "hr", gamma: tuple[float, float] = (0.6, 1.6), prob: float = 0.8):
        super().__init__(keys, RandGamma(gamma, prob))


class RandContrastRemapd(RandEachKeyd):
    def __init__(self, keys: str = "hr", prob: float = 0.5, knots: int = 5, floor: float = 0.1,
                 background: float = 0.05):
        super().__init__(keys, RandContrastRemap(prob, knots, floor, background))


class RandMRNoised(RandEachKeyd):
    def __init__(self, keys: str = "hr", sigmas: Sequence[float] = (0.005, 0.01, 0.02, 0.03), prob: float = 0.3,
                 rician_prob: float = 0.5):
        super().__init__(keys, RandMRNoise(sigmas, prob, rician_prob))


class RandNetworkRange(Randomizable, Transform):
    """(LR, HR) stored values -> network ranges: LR in [0, 1], HR in [-1, 1], shape (1, H, W).

    Uses ``medsr.codec.to_unit`` / ``to_signed_unit`` with the volume's low-res window
    whose width is jittered by a factor in [1 - jitter, 1 + jitter], so the network is
    robust to how the archive's window falls on a new series.
    """

    def __init__(self, jitter: float = 0.15, seed: int | None = None):
        self.jitter = jitter
        self.R = np.random.RandomState(seed)
        self._f = 1.0

    def randomize(self, data: object = None) -> None:
        self._f = float(self.R.uniform(1 - self.jitter, 1 + self.jitter)) if self.jitter > 0 else 1.0

    def __call__(self, lr: np.ndarray, hr: np.ndarray, window: IntensityWindow, randomize: bool = True
                 ) -> tuple[np.ndarray, np.ndarray]:
        if randomize:
            self.randomize()
        w = IntensityWindow(window.lo, window.lo + window.width * self._f)
        return to_unit(lr, w)[None], to_signed_unit(hr, w)[None]


class RandNetworkRanged(RandTwind):
    def __init__(self, lr_key: str = "lr", hr_key: str = "hr", window_key: str = WINDOW_KEY, jitter: float = 0.15):
        MapTransform.__init__(self, (lr_key, hr_key))
        self.lr_key, self.hr_key, self.window_key = lr_key, hr_key, window_key
        self.t = RandNetworkRange(jitter)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        self.randomize()
        d[self.lr_key], d[self.hr_key] = self.t(d[self.lr_key], d[self.hr_key], as_window(d[self.window_key]),
                                                randomize=False)
        return d
