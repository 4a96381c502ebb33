"""Spatial transforms on 2D stored-value slices: foreground-biased aligned crops, flips/rot90."""
from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
from monai.transforms import MapTransform, Randomizable, Transform

from .twin import RandEachKeyd, RandTwind

FG_KEY = "fg_threshold"


class RandForegroundCrop(Randomizable, Transform):
    """Random ``size`` x ``size`` crop whose corner sits on a multiple of ``multiple``.

    With probability ``fg_prob`` the crop is centred (then snapped to the grid) on a
    random pixel above ``threshold``, else placed uniformly. The grid alignment keeps
    the crop's 4x4 blocks on the archive's block grid. Returns a copy.
    """

    def __init__(self, size: int = 96, multiple: int = 4, fg_prob: float = 0.9, seed: int | None = None):
        if size % multiple:
            raise ValueError(f"crop size {size} is not a multiple of {multiple}")
        self.size, self.multiple, self.fg_prob = size, multiple, fg_prob
        self.R = np.random.RandomState(seed)
        self._corner = (0, 0)

    def randomize(self, data: tuple[np.ndarray, float]) -> None:
        img, threshold = data
        h, w = img.shape[-2:]
        s, m = self.size, self.multiple
        if h < s or w < s:
            raise ValueError(f"slice {h}x{w} is smaller than the {s}x{s} crop")
        max_y, max_x = (h - s) // m, (w - s) // m  # in grid units
        if self.R.rand() < self.fg_prob:
            idx = np.flatnonzero(img.reshape(-1) > threshold)
            if idx.size:
                cy, cx = divmod(int(idx[self.R.randint(idx.size)]), w)
                gy = min(max((cy - s // 2) // m, 0), max_y)
                gx = min(max((cx - s // 2) // m, 0), max_x)
                self._corner = (gy * m, gx * m)
                return
        self._corner = (self.R.randint(max_y + 1) * m, self.R.randint(max_x + 1) * m)

    def __call__(self, img: np.ndarray, threshold: float = 0.0, randomize: bool = True) -> np.ndarray:
        if randomize:
            self.randomize((img, threshold))
        y, x = self._corner
        return np.array(img[..., y:y + self.size, x:x + self.size], copy=True)


class RandForegroundCropd(RandTwind):
    """Dictionary twin; the threshold comes from ``d[threshold_key]`` (stored units)."""

    def __init__(self, keys: str = "hr", size: int = 96, multiple: int = 4, fg_prob: float = 0.9,
                 threshold_key: str = FG_KEY):
        MapTransform.__init__(self, keys)
        self.threshold_key = threshold_key
        self.t = RandForegroundCrop(size, multiple, fg_prob)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        first = self.keys[0]
        self.randomize((d[first], float(d.get(self.threshold_key, 0.0))))
        for key in self.keys:
            d[key] = self.t(d[key], randomize=False)
        return d


class RandFlipRot90(Randomizable, Transform):
    """One of the 8 flips/rotations of the square (uniform), on the last two axes."""

    def __init__(self, seed: int | None = None):
        self.R = np.random.RandomState(seed)
        self._k, self._flip = 0, False

    def randomize(self, data: object = None) -> None:
        self._k = int(self.R.randint(4))
        self._flip = bool(self.R.rand() < 0.5)

    def __call__(self, img: np.ndarray, randomize: bool = True) -> np.ndarray:
        if randomize:
            self.randomize()
        out = np.rot90(img, self._k, axes=(-2, -1))
        if self._flip:
            out = out[..., ::-1]
        return np.ascontiguousarray(out)


class RandFlipRot90d(RandEachKeyd):
    def __init__(self, keys: str = "hr"):
        super().__init__(keys, RandFlipRot90())


class RandContextCropd(RandForegroundCropd):
    """``RandForegroundCropd`` of the largest square of at most ``size`` that the slice holds (on the grid): the
    region a slice-level degradation (``RandJ2KRatioCoded``) codes before ``RandAlignedCropd`` takes the crop."""

    def __init__(self, keys: str = "hr", size: int = 256, multiple: int = 4, fg_prob: float = 0.9,
                 threshold_key: str = FG_KEY):
        super().__init__(keys, size, multiple, fg_prob, threshold_key)
        self.size = size

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        h, w = np.asarray(data[self.keys[0]]).shape[-2:]
        m = self.t.multiple
        self.t.size = max(m, min(self.size, h - h % m, w - w % m))  # this slice's region
        return super().__call__(data)


class RandAlignedCropd(Randomizable, MapTransform):
    """A uniform ``size`` x ``size`` crop of ``hr_key`` on the ``scale`` grid and the matching
    ``size / scale`` crop of ``lr_key`` (the same region of the low-res image)."""

    def __init__(self, hr_key: str = "hr", lr_key: str = "lr", size: int = 96, scale: int = 4,
                 seed: int | None = None):
        if size % scale:
            raise ValueError(f"crop size {size} is not a multiple of the scale {scale}")
        MapTransform.__init__(self, (hr_key, lr_key))
        self.hr_key, self.lr_key, self.size, self.scale = hr_key, lr_key, size, scale
        self.R = np.random.RandomState(seed)
        self._corner = (0, 0)  # in low-res pixels

    def randomize(self, data: tuple[int, int]) -> None:
        h, w = data
        s = self.size // self.scale
        if h < s or w < s:
            raise ValueError(f"low-res region {h}x{w} is smaller than the {s}x{s} crop")
        self._corner = (int(self.R.randint(h - s + 1)), int(self.R.randint(w - s + 1)))

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        lr = np.asarray(d[self.lr_key])
        self.randomize(lr.shape[-2:])
        y, x = self._corner
        s, k = self.size // self.scale, self.scale
        d[self.lr_key] = np.array(lr[..., y:y + s, x:x + s], copy=True)
        d[self.hr_key] = np.array(np.asarray(d[self.hr_key])[..., y * k:(y + s) * k, x * k:(x + s) * k], copy=True)
        return d
