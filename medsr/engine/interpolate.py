"""Classical upsampling used as the baseline and as the I/O-floor stand-in."""
from __future__ import annotations

import numpy as np


def bicubic_upsample(lr: np.ndarray, scale: int, *, batch: int = 64) -> np.ndarray:
    """Bicubic (Keys, a = -0.75; ``torch`` ``interpolate(mode="bicubic", align_corners=False)``).

    Pixel-centre aligned, which matches the block-mean operator's geometry.
    ``lr`` (n, h, w) any dtype -> float64 (n, h*s, w*s), computed in float32.
    """
    import torch
    import torch.nn.functional as F

    x = np.asarray(lr, dtype=np.float32)
    squeeze = x.ndim == 2
    if squeeze:
        x = x[None]
    out = np.empty((x.shape[0], x.shape[1] * scale, x.shape[2] * scale), dtype=np.float64)
    with torch.no_grad():
        for i in range(0, x.shape[0], batch):
            t = torch.from_numpy(np.ascontiguousarray(x[i:i + batch]))[:, None]
            out[i:i + batch] = F.interpolate(t, scale_factor=scale, mode="bicubic", align_corners=False)[:, 0].numpy()
    return out[0] if squeeze else out


def nearest_upsample(lr: np.ndarray, scale: int) -> np.ndarray:
    """Pixel replication (the cheapest restore; the I/O floor in benchmarks)."""
    x = np.asarray(lr, dtype=np.float64)
    return np.repeat(np.repeat(x, scale, axis=-2), scale, axis=-1)
