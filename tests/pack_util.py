"""Small training packs for tests: smooth synthetic 12-bit-like volumes, one training and one validation source."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.prepare_data import PackVolume, save_pack


def synthetic_volume(n: int = 6, size: int = 128, seed: int = 0) -> np.ndarray:
    """Smooth blobs inside a disc, 12-bit-like uint16 stored values."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    v = gaussian_filter(rng.random((n, size, size)), sigma=(0, 4, 4))
    v = (v - v.min()) / (v.max() - v.min())
    yy, xx = np.mgrid[:size, :size]
    disc = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (0.4 * size) ** 2
    return (v * disc * 900 + 20 * disc).astype(np.uint16)


def make_tiny_pack(path: Path) -> None:
    train = PackVolume("vol_a", "syn-a", "syn", "s1", "train", synthetic_volume(6, 128, 0), (0, 1, 2))
    val = PackVolume("vol_v", "syn-v", "syn-val", "s2", "val", synthetic_volume(1, 132, 5), (0,))
    save_pack(path, [train, val], val_source="syn-val")
