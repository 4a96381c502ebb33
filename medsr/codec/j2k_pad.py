"""OpenJPEG's encoder (6 wavelet resolutions) refuses images under 32 pixels a side: such slices are
coded as their edge-replicated copy padded to 32, and cropped back after decoding. The padding's
few extra bytes count against JPEG 2000, never for medsr."""
from __future__ import annotations

import numpy as np

J2K_MIN_SIDE = 32


def padded_shape(shape: tuple[int, int]) -> tuple[int, int]:
    return max(J2K_MIN_SIDE, int(shape[0])), max(J2K_MIN_SIDE, int(shape[1]))


def pad_for_j2k(a: np.ndarray) -> np.ndarray:
    """A 2-D slice padded (edge values) to at least 32 x 32; the slice itself when large enough."""
    h, w = a.shape
    ph, pw = padded_shape((h, w))
    if (ph, pw) == (h, w):
        return a
    return np.ascontiguousarray(np.pad(a, ((0, ph - h), (0, pw - w)), mode="edge"))


def decode_j2k(codestream: bytes, shape: tuple[int, int]) -> np.ndarray:
    """One JPEG 2000 codestream -> int64 (H, W): decoded by OpenJPEG and cropped back (``crop_from_j2k``);
    ValueError when it does not decode to ``shape``."""
    from openjpeg import decode

    out = crop_from_j2k(np.asarray(decode(bytes(codestream))).astype(np.int64), tuple(shape))
    if out.shape != tuple(shape):
        raise ValueError(f"codestream decodes to {out.shape}, expected {tuple(shape)}")
    return out


def crop_from_j2k(decoded: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Undo ``pad_for_j2k``: crop a decoded padded slice to ``shape`` (any other shape is returned as is)."""
    if decoded.shape == padded_shape(shape) and decoded.shape != tuple(shape):
        return decoded[:shape[0], :shape[1]]
    return decoded
