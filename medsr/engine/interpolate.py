"""Classical upsampling: the bicubic baseline (also ``--method bicubic``) and pixel replication."""
from __future__ import annotations

import math

import numpy as np


def bicubic_upsample(lr: np.ndarray, scale: int | None = None, *, out_shape: tuple[int, int] | None = None) -> np.ndarray:
    """Bicubic (Keys a = -0.75, pixel-centre aligned) of (n, h, w) -> float64 (n, H, W).

    PyTorch's ``interpolate(mode="bicubic", align_corners=False)`` in float64: low-res
    pixel ``i`` sits at high-res ``s*i + (s-1)/2``, the centre of the block the area
    operator averaged. Give ``scale`` or ``out_shape``; with ``out_shape`` the result is
    computed at the integer scale ``ceil(H/h)`` and cropped bottom/right (archives pad
    bottom/right before down-sampling).
    """
    import torch
    import torch.nn.functional as F

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
    out = np.empty((x3.shape[0], H, W), dtype=np.float64)
    with torch.no_grad():
        for i in range(0, x3.shape[0], 32):
            t = torch.from_numpy(np.ascontiguousarray(x3[i:i + 32]))[:, None]
            y = F.interpolate(t, size=(s * h, s * w), mode="bicubic", align_corners=False)
            out[i:i + 32] = y[:, 0, :H, :W].numpy()
    return out[0] if squeeze else out


def nearest_upsample(lr: np.ndarray, scale: int) -> np.ndarray:
    """Pixel replication (the cheapest restore; the I/O floor in benchmarks)."""
    x = np.asarray(lr, dtype=np.float64)
    return np.repeat(np.repeat(x, scale, axis=-2), scale, axis=-1)
