"""One 2-D integer slice <-> bytes: JPEG 2000 (OpenJPEG, as the audit's baseline) and JPEG-LS lossless.

- ``j2k_encode(a, bits, ratio)``: irreversible 9-7 JPEG 2000 at ``compression_ratios=[ratio]``
  (relative to ``bits``, as pydicom's encoder), or reversible 5-3 (lossless) with ``ratio`` None;
  ``j2k_encode(a, bits, psnr=dB)``: the same irreversible coding with OpenJPEG's rate control aimed
  at a PSNR (relative to ``2**bits - 1``) instead of a ratio (training codes crops, whose bytes a
  ratio cannot match to a whole slice's: ``medsr.transforms.degrade.RandJ2KBaseCode``).
  Signed arrays code as signed components.
- ``jpegls_encode(a)``: JPEG-LS NEAR=0 (CharLS) of a non-negative slice; None for negative values.
- ``decode(data)``: either codestream (JPEG 2000 starts FF4F, JPEG-LS starts FFD8) -> int64 array.
"""
from __future__ import annotations

import numpy as np

J2K_SOC = b"\xff\x4f"
JPEGLS_SOI = b"\xff\xd8"


def bits_for(a: np.ndarray) -> int:
    """Bits a JPEG 2000 component needs for these integers (sign bit included for signed data)."""
    lo, hi = int(a.min()), int(a.max())
    if lo < 0:
        return max(2, max(-lo - 1, hi).bit_length() + 1)
    return max(1, hi.bit_length())


def _j2k_array(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if int(a.min()) < 0:
        return np.ascontiguousarray(a.astype(np.int16 if bits_for(a) <= 16 else np.int32))
    return np.ascontiguousarray(a.astype(np.uint16 if int(a.max()) < (1 << 16) else np.uint32))


def j2k_encode(a: np.ndarray, bits: int, ratio: float | None = None, *, psnr: float | None = None) -> bytes:
    from openjpeg import encode

    from .j2k_pad import pad_for_j2k

    arr = pad_for_j2k(_j2k_array(a))  # OpenJPEG needs 32 px a side: small slices are coded padded
    bits = max(int(bits), bits_for(arr))
    if psnr is not None:
        return bytes(encode(arr, bits_stored=bits, photometric_interpretation=2, signal_noise_ratios=[float(psnr)]))
    if ratio is None:
        return bytes(encode(arr, bits_stored=bits, photometric_interpretation=2))
    return bytes(encode(arr, bits_stored=bits, photometric_interpretation=2, compression_ratios=[float(ratio)]))


def jpegls_encode(a: np.ndarray) -> bytes | None:
    """JPEG-LS lossless of a non-negative slice of at most 16 bits; None where it does not apply."""
    from .base import load_jpegls

    a = np.asarray(a)
    if int(a.min()) < 0 or int(a.max()) >= (1 << 16):
        return None
    bits = max(2, int(a.max()).bit_length())
    h, w = a.shape
    buf = np.ascontiguousarray(a.astype("<u2" if bits > 8 else np.uint8)).tobytes()
    try:
        return bytes(load_jpegls().encode_buffer(buf, h, w, 1, bits, lossy_error=0))
    except RuntimeError:  # CharLS refuses tiny incompressible slices
        return None


def decode(data: bytes, shape: tuple[int, int]) -> np.ndarray:
    """Decode a JPEG 2000 or JPEG-LS codestream -> int64 (H, W); ValueError on a wrong shape or codec."""
    if data[:2] == J2K_SOC:
        from .j2k_pad import decode_j2k

        out = decode_j2k(data, shape)
    elif data[:2] == JPEGLS_SOI:
        from .base import decode_jpegls

        out = decode_jpegls(data, tuple(shape))  # BaseCodecError is a ValueError
    else:
        raise ValueError("neither a JPEG 2000 nor a JPEG-LS codestream")
    if out.shape != tuple(shape):
        raise ValueError(f"codestream decodes to {out.shape}, expected {tuple(shape)}")
    return out


def lossless_encode(a: np.ndarray, bits: int) -> bytes:
    """The smaller of reversible JPEG 2000 and JPEG-LS lossless."""
    j2k = j2k_encode(a, bits, None)
    ls = jpegls_encode(a)
    return ls if ls is not None and len(ls) < len(j2k) else j2k
