"""The archive's degradation as transforms: quantise to stored integers, then down-sample.

``MakeLowRes`` calls ``medsr.codec.downsample`` itself (the very function object the
archive calls), so the network is trained on exactly the low-res data it will see.
The HR input must already be integers in stored-value units (see ``RandQuantise``):
the operator rounds block means to the input's integer dtype, as the archive does.
"""
from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
from monai.transforms import MapTransform, Randomizable, Transform

from medsr.codec import IntensityWindow, downsample, get_operator

from .intensity import WINDOW_KEY

DTYPE_KEY = "stored_dtype"


class MakeLowRes(Transform):
    """(H, W) or (n, H, W) stored integers -> low-res stored integers, via ``medsr.codec.downsample``."""

    fn = staticmethod(downsample)

    def __init__(self, op_id: str = "area4-v1"):
        self.op_id = get_operator(op_id).id  # fail early on an unknown id

    def __call__(self, hr: np.ndarray) -> np.ndarray:
        if not np.issubdtype(hr.dtype, np.integer):
            raise TypeError(f"MakeLowRes needs integer stored values (quantise first), got {hr.dtype}")
        return self.fn(hr, self.op_id)


class MakeLowResd(MapTransform):
    """Dictionary twin: ``d[lr_key] = downsample(d[key])`` for the one HR key."""

    def __init__(self, keys: str = "hr", lr_key: str = "lr", op_id: str = "area4-v1"):
        super().__init__(keys)
        self.lr_key = lr_key
        self.op = MakeLowRes(op_id)

    def __call__(self, data: Mapping[Hashable, np.ndarray]) -> dict:
        d = dict(data)
        (key,) = self.keys
        d[self.lr_key] = self.op(d[key])
        return d


class RandQuantise(Randomizable, Transform):
    """Unit-space HR (float, window -> [0, 1]) back to stored integers of ``dtype``.

    A random amplitude factor (log-uniform in ``amplitude``) rescales the stored range,
    so the network sees both coarse (8-bit-like) and fine quantisation steps; the
    returned window is scaled with it. Values are rounded half to even and clipped to
    the dtype's range (magnitude images stay >= 0 for unsigned types).
    """

    def __init__(self, amplitude: tuple[float, float] = (1.0, 1.0), seed: int | None = None):
        self.amplitude = amplitude
        self.R = np.random.RandomState(seed)
        self._factor = 1.0

    def randomize(self, data: object = None) -> None:
        lo, hi = self.amplitude
        self._factor = float(np.exp(self.R.uniform(np.log(lo), np.log(hi)))) if hi > lo else float(lo)

    def __call__(self, u: np.ndarray, window: IntensityWindow, dtype: np.dtype, randomize: bool = True
                 ) -> tuple[np.ndarray, IntensityWindow]:
        if randomize:
            self.randomize()
        f = self._factor
        w = IntensityWindow(window.lo * f, window.lo * f + window.width * f)
        info = np.iinfo(dtype)
        stored = np.clip(np.rint(u.astype(np.float64) * w.width + w.lo), info.min, info.max).astype(dtype)
        return stored, w


class RandQuantised(Randomizable, MapTransform):
    """Dictionary twin of ``RandQuantise``; reads/writes the window and the stored dtype keys."""

    def __init__(self, keys: str = "hr", amplitude: tuple[float, float] = (1.0, 1.0),
                 window_key: str = WINDOW_KEY, dtype_key: str = DTYPE_KEY):
        MapTransform.__init__(self, keys)
        self.q = RandQuantise(amplitude)
        self.window_key, self.dtype_key = window_key, dtype_key

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        self.q.set_random_state(seed, state)
        return self

    def randomize(self, data: object = None) -> None:
        self.q.randomize()

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        (key,) = self.keys
        self.randomize()
        d[key], d[self.window_key] = self.q(d[key], d[self.window_key], np.dtype(d[self.dtype_key]), randomize=False)
        return d
