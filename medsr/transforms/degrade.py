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

from .intensity import WINDOW_KEY, as_window
from .twin import RandTwind

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


class RandQuantised(RandTwind):
    """Dictionary twin of ``RandQuantise``; reads/writes the window and the stored dtype keys."""

    def __init__(self, keys: str = "hr", amplitude: tuple[float, float] = (1.0, 1.0),
                 window_key: str = WINDOW_KEY, dtype_key: str = DTYPE_KEY):
        MapTransform.__init__(self, keys)
        self.t = RandQuantise(amplitude)
        self.window_key, self.dtype_key = window_key, dtype_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        (key,) = self.keys
        self.randomize()
        d[key], d[self.window_key] = self.t(d[key], d[self.window_key], np.dtype(d[self.dtype_key]), randomize=False)
        return d


class RandBaseCode(Randomizable, Transform):
    """Low-res stored integers -> what the archive's lossy base gives back after decoding.

    With probability ``prob``, codes the slice with ``medsr.codec.base.encode_base`` (JPEG-LS,
    ``NEAR = k``) and decodes it with ``decode_base``: the very functions the archive calls, so
    the network learns on the base it will see at restore. ``k`` is a fraction of the window
    width drawn uniformly from ``near_fraction`` (the same rule as ``lossy_near``), at least 1.
    """

    def __init__(self, near_fraction: tuple[float, float] = (0.005, 0.035), prob: float = 1.0,
                 seed: int | None = None):
        self.near_fraction, self.prob = near_fraction, prob
        self.R = np.random.RandomState(seed)
        self._fraction = 0.0

    def randomize(self, data: object = None) -> None:
        lo, hi = self.near_fraction
        self._fraction = float(self.R.uniform(lo, hi)) if self.R.rand() < self.prob else 0.0

    def near_for(self, window: IntensityWindow) -> int:
        from medsr.codec.base import lossy_near

        return lossy_near(window.width, self._fraction) if self._fraction > 0 else 0

    def __call__(self, lr: np.ndarray, window: IntensityWindow, randomize: bool = True) -> np.ndarray:
        from medsr.codec.base import BASE_NEAR_LOSSLESS, decode_base, encode_base

        if randomize:
            self.randomize()
        k = self.near_for(window)
        if k == 0:
            return lr
        stack = lr[None] if lr.ndim == 2 else lr
        streams, meta = encode_base(stack, BASE_NEAR_LOSSLESS, k)
        out = decode_base(streams, meta)
        return out[0] if lr.ndim == 2 else out


class _LowResCoded(RandTwind):
    """Dictionary twin of a low-res base coder ``t`` (``t(lr, window, randomize=False)``) on the low-res key:
    reads the window key, draws once per sample."""

    def __init__(self, keys: str, t, window_key: str = WINDOW_KEY):
        MapTransform.__init__(self, keys)
        self.t = t
        self.window_key = window_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        self.randomize()
        w = as_window(d[self.window_key])
        for key in self.keys:
            d[key] = self.t(d[key], w, randomize=False)
        return d


class RandBaseCoded(_LowResCoded):
    """Dictionary twin of ``RandBaseCode`` on the low-res key (reads the window key)."""

    def __init__(self, keys: str = "lr", near_fraction: tuple[float, float] = (0.005, 0.035), prob: float = 1.0,
                 window_key: str = WINDOW_KEY):
        super().__init__(keys, RandBaseCode(near_fraction, prob), window_key)


def _j2k_round_trip(lr: np.ndarray, code) -> np.ndarray:
    """Each slice of ``lr`` (a slice or a stack) as the ``lossy-j2k`` base gives it back: shifted by its minimum,
    coded by ``code(shifted, vmin) -> codestream`` (``codec.payload.j2k_encode`` at some rate), decoded by the
    base's decoder (``codec.j2k_pad.decode_j2k``), shifted back and clipped to the dtype."""
    from medsr.codec.j2k_pad import decode_j2k

    stack = lr[None] if lr.ndim == 2 else lr
    out = np.empty_like(stack)
    info = np.iinfo(lr.dtype) if np.issubdtype(lr.dtype, np.integer) else None
    for i, s in enumerate(stack):
        vmin = int(s.min())
        dec = decode_j2k(code((s.astype(np.int64) - vmin).astype(np.uint16), vmin), s.shape) + vmin
        out[i] = np.clip(dec, info.min, info.max) if info else dec
    return out[0] if lr.ndim == 2 else out


class RandJ2KBaseCode(Randomizable, Transform):
    """Low-res stored integers -> what the archive's ``lossy-j2k`` base gives back after decoding.

    With probability ``prob``, codes the slice as the base does (``medsr.codec.payload.j2k_encode``:
    OpenJPEG irreversible 9-7, values shifted by their minimum) and decodes it with the base's
    decoder (``medsr.codec.j2k_pad.decode_j2k``). The archive sets the rate by a ratio over whole
    low-res slices; a training crop cannot hold a slice's header and context, so here the rate is
    set by a PSNR target (relative to ``2**bits - 1``, ``bits`` covering the volume window), drawn
    uniformly from ``psnr_db``: the same encoder and artefacts. The default range covers what whole
    low-res slices gave at low-res ratios 10-40:1 in the probe of docs/training/x2-j2k-experiment/.
    """

    def __init__(self, psnr_db: tuple[float, float] = (24.0, 40.0), prob: float = 1.0, seed: int | None = None):
        self.psnr_db, self.prob = psnr_db, prob
        self.R = np.random.RandomState(seed)
        self._psnr: float | None = None

    def randomize(self, data: object = None) -> None:
        lo, hi = self.psnr_db
        self._psnr = float(self.R.uniform(lo, hi)) if self.R.rand() < self.prob else None

    def __call__(self, lr: np.ndarray, window: IntensityWindow, randomize: bool = True) -> np.ndarray:
        from medsr.codec.payload import bits_for, j2k_encode

        if randomize:
            self.randomize()
        if self._psnr is None:
            return lr

        def code(shifted: np.ndarray, vmin: int) -> bytes:
            bits = max(bits_for(shifted), int(max(1.0, window.hi - vmin)).bit_length())
            return j2k_encode(shifted, bits, psnr=self._psnr)

        return _j2k_round_trip(lr, code)


class RandJ2KBaseCoded(_LowResCoded):
    """Dictionary twin of ``RandJ2KBaseCode`` on the low-res key (reads the window key)."""

    def __init__(self, keys: str = "lr", psnr_db: tuple[float, float] = (24.0, 40.0), prob: float = 1.0,
                 window_key: str = WINDOW_KEY):
        super().__init__(keys, RandJ2KBaseCode(psnr_db, prob), window_key)


class RandJ2KRatioCode(Randomizable, Transform):
    """Low-res stored integers of a slice-sized region -> the ``lossy-j2k`` base at an archive ratio.

    What ``medsr archive --ratio N`` stores when it keeps an SR tier on the JPEG 2000 base: every low-res
    slice coded by ``codec.payload.j2k_encode`` (values shifted by their minimum) so that the base spends
    1/N of the original's 16-bit pixel bytes, i.e. ``16 * scale**2 / N`` bits per low-res pixel; N drawn
    log-uniformly from ``ratios`` (with probability ``prob``). Meant for a region of about a slice's size
    (``RandContextCropd`` before it, ``RandAlignedCropd`` after it): the artefacts of JPEG 2000 depend on the
    image it codes, and a small training crop coded on its own shows others (``RandJ2KBaseCode``'s caveat).
    """

    def __init__(self, ratios: tuple[float, float] = (60.0, 200.0), scale: int = 2, prob: float = 1.0,
                 seed: int | None = None):
        self.ratios, self.scale, self.prob = ratios, int(scale), prob
        self.R = np.random.RandomState(seed)
        self._ratio: float | None = None

    def randomize(self, data: object = None) -> None:
        lo, hi = np.log(self.ratios[0]), np.log(self.ratios[1])
        self._ratio = float(np.exp(self.R.uniform(lo, hi))) if self.R.rand() < self.prob else None

    def __call__(self, lr: np.ndarray, window: IntensityWindow | None = None, randomize: bool = True) -> np.ndarray:
        from medsr.codec.payload import bits_for, j2k_encode

        if randomize:
            self.randomize()
        if self._ratio is None:
            return lr
        bpp = 16.0 * self.scale ** 2 / self._ratio  # bits per low-res pixel the base may spend

        def code(shifted: np.ndarray, vmin: int) -> bytes:
            bits = bits_for(shifted)
            return j2k_encode(shifted, bits, max(1.0, bits / bpp))

        return _j2k_round_trip(lr, code)


class RandJ2KRatioCoded(_LowResCoded):
    """Dictionary twin of ``RandJ2KRatioCode`` on the low-res key."""

    def __init__(self, keys: str = "lr", ratios: tuple[float, float] = (60.0, 200.0), scale: int = 2,
                 prob: float = 1.0, window_key: str = WINDOW_KEY):
        super().__init__(keys, RandJ2KRatioCode(ratios, scale, prob), window_key)
