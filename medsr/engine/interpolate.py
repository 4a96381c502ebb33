"""Classical upsampling: the bicubic baseline (also ``--method bicubic``) and pixel replication."""
from __future__ import annotations

import math

import numpy as np


A_KEYS = -0.75  # PyTorch's (and OpenCV's) cubic convolution constant


def _cubic_weights(t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The four tap weights of Keys' cubic at fractional offsets ``t``, written as PyTorch's
    ``get_cubic_upsample_coefficients`` writes them (same operations, same order)."""
    a = A_KEYS
    x1 = t + 1.0
    w0 = ((a * x1 - 5.0 * a) * x1 + 8.0 * a) * x1 - 4.0 * a
    w1 = ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0
    x2 = 1.0 - t
    w2 = ((a + 2.0) * x2 - (a + 3.0)) * x2 * x2 + 1.0
    x3 = x2 + 1.0
    w3 = ((a * x3 - 5.0 * a) * x3 + 8.0 * a) * x3 - 4.0 * a
    return w0, w1, w2, w3


def _taps(n_in: int, n_out: int) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """Per output sample of one axis: the floor of its source coordinate (taps at floor - 1 .. floor + 2,
    before the replicated borders) and the four weights; half-pixel alignment, no corner alignment."""
    scale = n_in / n_out
    real = scale * (np.arange(n_out, dtype=np.float64) + 0.5) - 0.5
    f = np.floor(real)
    return f.astype(np.int64), _cubic_weights(real - f)


def _pass(a: np.ndarray, axis: int, n_out: int) -> np.ndarray:
    """Cubic interpolation of ``a`` along ``axis`` (1 or 2) to ``n_out`` samples: per output sample
    ``((v0 * w0 + v1 * w1) + v2 * w2) + v3 * w3`` over its four taps (replicated borders).

    At an integer scale the taps repeat with the phase (output ``s*i + p`` reads inputs ``i + f_p - 1 ..
    i + f_p + 2`` with the same weights): each phase is four shifted views of the edge-padded input, multiplied
    and summed in two reused buffers (no temporaries per tap), into every s-th output sample. Otherwise (never for an archive's operators) each tap is a gather."""
    n_in = a.shape[axis]
    floor, w = _taps(n_in, n_out)
    s = n_out // n_in if n_out % n_in == 0 else 0
    shape = list(a.shape)
    shape[axis] = n_out
    out = np.empty(shape, dtype=np.float64)
    periodic = s > 0 and all(np.all(wk[p::s] == wk[p]) for wk in w for p in range(s)) and \
        all(np.array_equal(floor[p::s], floor[p] + np.arange(n_in)) for p in range(s))
    if not periodic:
        tmp = np.empty(shape, dtype=np.float64)
        along = (lambda v: v[:, None]) if axis == 1 else (lambda v: v)
        np.take(a, np.clip(floor - 1, 0, n_in - 1), axis=axis, out=out)  # tap k reads input clip(floor + k - 1)
        out *= along(w[0])
        for k in (1, 2, 3):
            np.take(a, np.clip(floor + k - 1, 0, n_in - 1), axis=axis, out=tmp)
            tmp *= along(w[k])
            out += tmp
        return out
    widths = [(0, 0)] * 3
    widths[axis] = (2, 2)
    ap = np.pad(a, widths, mode="edge")  # index j of ap is input clip(j - 2): the replicated border
    # output s*i + p is phase p of input i: out viewed as (.., n_in, s) along the axis, one phase a strided view
    phases = out.reshape(a.shape[:axis] + (n_in, s) + a.shape[axis + 1:])
    tmp = np.empty(a.shape, dtype=np.float64)
    acc = np.empty(a.shape, dtype=np.float64) if axis == 2 else None  # strided last-axis phases: sum contiguously
    view = [slice(None)] * 3
    for p in range(s):
        dst = phases[(slice(None),) * (axis + 1) + (p,)]
        into = acc if acc is not None else dst
        for k in range(4):  # tap k reads input i + floor_p + k - 1: ((v0 w0 + v1 w1) + v2 w2) + v3 w3
            start = int(floor[p]) + k - 1 + 2
            view[axis] = slice(start, start + n_in)
            np.multiply(ap[tuple(view)], w[k][p], out=into if k == 0 else tmp)
            if k:
                into += tmp
        if acc is not None:
            dst[...] = acc
    return out


def _bicubic_exact(x: np.ndarray, H: int, W: int) -> np.ndarray:
    """(n, h, w) float64 -> (n, H, W): along x first on every low-res row, then along y, each a left-to-right
    sum of four products, as PyTorch's CPU kernel orders them. At x2 and x4 (every archive operator's scale) on
    integer-valued input (the low-res stack of an integer series: ``downsample`` rounds) every weight has at most
    ~12 significant bits, so every product and sum is exact and the result is bit-identical to ``F.interpolate(mode="bicubic",
    align_corners=False)`` in float64; at other scales or on other floats they agree to rounding (PyTorch's last bit depends
    on whether its kernel fuses multiply-adds) (``tests/test_bicubic_numpy.py``)."""
    return _pass(_pass(x, 2, W), 1, H)


def bicubic_upsample(lr: np.ndarray, scale: int | None = None, *, out_shape: tuple[int, int] | None = None) -> np.ndarray:
    """Bicubic (Keys a = -0.75, pixel-centre aligned) of (n, h, w) -> float64 (n, H, W).

    PyTorch's ``interpolate(mode="bicubic", align_corners=False)`` in float64, computed in NumPy
    (bit-identical on integer-valued stacks at x2 and x4, see ``_bicubic_exact``; no torch import, so a bicubic
    archive or restore never loads torch): low-res pixel ``i`` sits at high-res ``s*i + (s-1)/2``, the centre of the block
    the area operator averaged. Give ``scale`` or ``out_shape``; with ``out_shape`` the result is
    computed at the integer scale ``ceil(H/h)`` and cropped bottom/right (archives pad
    bottom/right before down-sampling).
    """
    x = np.asarray(lr, dtype=np.float64)
    squeeze = x.ndim == 2
    x3 = x[None] if squeeze else x
    if x3.ndim != 3:
        raise ValueError(f"expected (n, h, w) or (h, w), got shape {np.shape(lr)}")
    _, h, w = x3.shape
    if out_shape is None:
        if not scale:
            raise ValueError("give scale or out_shape")
        out_shape = (h * scale, w * scale)
    H, W = int(out_shape[0]), int(out_shape[1])
    s = max(math.ceil(H / h), math.ceil(W / w))  # padding can make one ratio look smaller (9 of 12 -> 3 px)
    if s < 1 or s * h - H >= s or s * w - W >= s:
        raise ValueError(f"cannot upsample {(h, w)} to {(H, W)} by one integer scale")
    if x3.shape[0] <= 32 and (H, W) == (s * h, s * w):
        out = _bicubic_exact(x3, H, W)  # an audit batch: no crop, no copy
    else:
        out = np.empty((x3.shape[0], H, W), dtype=np.float64)
        for i in range(0, x3.shape[0], 32):
            out[i:i + 32] = _bicubic_exact(x3[i:i + 32], s * h, s * w)[:, :H, :W]
    return out[0] if squeeze else out


def nearest_upsample(lr: np.ndarray, scale: int) -> np.ndarray:
    """Pixel replication (the cheapest restore; the I/O floor in benchmarks)."""
    x = np.asarray(lr, dtype=np.float64)
    return np.repeat(np.repeat(x, scale, axis=-2), scale, axis=-1)
