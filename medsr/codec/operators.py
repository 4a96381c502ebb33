"""Down-sampling operators: the archive's degradation, as pure numpy functions.

An operator maps a stack of slices ``(n, H, W)`` (H and W multiples of the scale)
to ``(n, H/s, W/s)``. Each has a versioned id recorded in every archive; changing
what an id computes is a format break, so add a new id instead.

- ``area4-v1`` / ``area2-v1``: exact mean of s x s blocks of the stored values, rounded
  half-to-even to the input's integer dtype (float inputs stay float). Its adjoint
  projection (``project_consistent``) is exact: ``downsample(project(y, lr)) == lr``
  up to that rounding.
- ``gauss4-v1``: the paper's degradation, Gaussian blur (sigma = 0.5 * s, as in
  bicubic-kernel-like anti-aliasing) then decimation at block centres; kept for
  experiments, not the archive default.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Operator:
    id: str
    scale: int
    description: str
    fn: Callable[[np.ndarray, int], np.ndarray]
    exact_projection: bool = False  # project_consistent can make a restore reproduce the stored data exactly

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return downsample(x, self.id)


def _block_mean(x: np.ndarray, s: int) -> np.ndarray:
    n, h, w = x.shape
    blocks = x.reshape(n, h // s, s, w // s, s).astype(np.float64)
    return blocks.mean(axis=(2, 4))


def _gauss_decimate(x: np.ndarray, s: int) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    sigma = 0.5 * s
    xf = x.astype(np.float64)
    blurred = gaussian_filter(xf, sigma=(0, sigma, sigma), mode="reflect")
    # sample at block centres, i.e. the same grid positions as the area operator
    off = (s - 1) / 2.0
    n, h, w = x.shape
    from scipy.ndimage import map_coordinates

    ys = off + s * np.arange(h // s)
    xs = off + s * np.arange(w // s)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    out = np.stack([map_coordinates(b, [yy, xx], order=1, mode="nearest") for b in blurred])
    return out


OPERATORS: dict[str, Operator] = {
    "area4-v1": Operator("area4-v1", 4, "exact mean of 4x4 blocks of the stored values, rounded to the stored dtype",
                         _block_mean, exact_projection=True),
    "area2-v1": Operator("area2-v1", 2, "exact mean of 2x2 blocks of the stored values, rounded to the stored dtype",
                         _block_mean, exact_projection=True),
    "gauss4-v1": Operator("gauss4-v1", 4, "Gaussian blur (sigma 2 px) then sampling at 4x4 block centres", _gauss_decimate),
}


def get_operator(op_id: str) -> Operator:
    try:
        return OPERATORS[op_id]
    except KeyError:
        from ..errors import MedsrError

        raise MedsrError(f"unknown operator {op_id!r}; known: {', '.join(sorted(OPERATORS))}") from None


def _cast_like(values: np.ndarray, like: np.dtype) -> np.ndarray:
    if np.issubdtype(like, np.integer):
        info = np.iinfo(like)
        return np.clip(np.rint(values), info.min, info.max).astype(like)
    return values.astype(like)


CHUNK_PIXELS = 1 << 22  # downsample this many input pixels at a time (16 slices of 512x512)


def downsample(x: np.ndarray, op_id: str = "area4-v1") -> np.ndarray:
    """Apply operator ``op_id`` to ``x`` of shape (n, H, W) or (H, W); returns the same rank.

    H and W must be multiples of the operator's scale (see ``pad_to_multiple``).
    Integer input gives integer output of the same dtype (rounded half to even).
    """
    op = get_operator(op_id)
    squeeze = x.ndim == 2
    x3 = x[None] if squeeze else x
    if x3.ndim != 3:
        raise ValueError(f"expected (n, H, W) or (H, W), got shape {x.shape}")
    s = op.scale
    if x3.shape[1] % s or x3.shape[2] % s:
        raise ValueError(f"slice size {x3.shape[1:]} is not a multiple of {s}; pad first")
    step = max(1, CHUNK_PIXELS // max(1, x3.shape[1] * x3.shape[2]))  # slices at a time: bounded float copies
    if x3.shape[0] <= step:
        out = _cast_like(op.fn(x3, s), x.dtype)
    else:  # the operator is per slice: chunks give the same values, in memory bounded by the chunk
        out = np.concatenate([_cast_like(op.fn(x3[i:i + step], s), x.dtype) for i in range(0, x3.shape[0], step)])
    return out[0] if squeeze else out


def pad_to_multiple(x: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Pad the last two axes at the bottom/right by edge replication to a multiple.

    Returns the padded array and the (rows, cols) of padding added, which
    ``crop_to`` undoes. Edge replication keeps block means at the border honest.
    """
    h, w = x.shape[-2:]
    ph = (-h) % multiple
    pw = (-w) % multiple
    if not ph and not pw:
        return x, (0, 0)
    pad = [(0, 0)] * (x.ndim - 2) + [(0, ph), (0, pw)]
    return np.pad(x, pad, mode="edge"), (ph, pw)


def crop_to(x: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Crop the last two axes back to (rows, cols)."""
    return x[..., :rows, :cols]


def project_consistent(hr: np.ndarray, lr: np.ndarray, op_id: str = "area4-v1", tolerance: float = 0.0
                       ) -> np.ndarray:
    """Data consistency: the closest image to ``hr`` whose block means are within ``tolerance`` of ``lr``.

    ``tolerance`` 0 (exact data): ``hr + nearest_upsample(lr - blockmean(hr))``, the orthogonal
    projection onto the images the archive could have come from. ``tolerance`` t > 0 (a base
    that only bounds the block means, e.g. JPEG-LS NEAR=k: t = k + 0.5 with the rounding): each
    block whose mean is already within ``lr +- t`` is left alone, the others are shifted just
    onto the nearest edge of that interval, which is the orthogonal projection onto the box
    ``|blockmean(x) - lr| <= t`` (blocks are disjoint, so it separates per block).
    Works in float64; ``hr`` (n, H, W) and ``lr`` (n, H/s, W/s) in the same units.
    Non-area operators have no exact projection and return ``hr`` unchanged.
    """
    op = get_operator(op_id)
    if not op.exact_projection:
        return hr
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0 (got {tolerance})")
    s = op.scale
    hr64 = np.asarray(hr, dtype=np.float64)
    squeeze = hr64.ndim == 2
    h3 = hr64[None] if squeeze else hr64
    l3 = (lr[None] if squeeze else lr).astype(np.float64)
    mean = _block_mean(h3, s)
    target = np.clip(mean, l3 - tolerance, l3 + tolerance) if tolerance > 0 else l3
    n, H, W = h3.shape
    # each pixel plus its block's correction (the nearest-upsampled difference, broadcast, not materialised)
    out = (h3.reshape(n, H // s, s, W // s, s) + (target - mean)[:, :, None, :, None]).reshape(n, H, W)
    return out[0] if squeeze else out
