"""Lossless coding of a pack's volumes: slice by slice JPEG-LS (CharLS, NEAR = 0), bit-exact.

The default pack is ``np.savez_compressed`` (zlib: 84 MB for the manifest). A GPU run carries the repository and
its data in 64 MiB, so ``pipelines.gpu_pack`` re-codes the volumes as JPEG-LS (55 MB for the same arrays) and
``load_pack`` decodes them: the arrays a training run sees are the same, value for value.

A coded volume is two arrays: ``<key>`` (uint8, the slices' codestreams end to end) and ``<key>_ends``
(int64, where each ends); values are shifted by the volume's minimum into uint16 (``shift`` in the meta).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

CODING = "jpeg-ls-lossless"


def _jpeg_ls():
    try:
        import jpeg_ls
    except ImportError as e:  # the GPU image lacks it: carry the pyjpegls wheel (CONTRIBUTING, "GPU runs")
        raise SystemExit(f"a {CODING} pack needs pyjpegls (import jpeg_ls failed: {e})") from None
    return jpeg_ls


class Coded(NamedTuple):
    data: np.ndarray  # uint8: the slices' codestreams end to end
    ends: np.ndarray  # int64: where each slice's codestream ends
    shift: int  # the volume's minimum, subtracted before coding

    @property
    def nbytes(self) -> int:
        return int(self.data.size)


def encode_volume(v: np.ndarray) -> Coded:
    """(n, H, W) integers -> their JPEG-LS codestreams; raises ValueError when the range exceeds 16 bits."""
    jpeg_ls = _jpeg_ls()
    shift = int(v.min()) if v.size else 0
    span = int(v.max()) - shift if v.size else 0
    if not np.issubdtype(v.dtype, np.integer) or span > 0xFFFF:
        raise ValueError(f"cannot code {v.dtype} values spanning {span} losslessly in 16 bits")
    u = (v.astype(np.int64) - shift).astype(np.uint16)
    streams = [np.frombuffer(bytes(jpeg_ls.encode(np.ascontiguousarray(s))), np.uint8) for s in u]
    ends = np.cumsum([len(s) for s in streams]).astype(np.int64)
    return Coded(np.concatenate(streams) if streams else np.zeros(0, np.uint8), ends, shift)


def decode_volume(data: np.ndarray, ends: np.ndarray, shift: int, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    jpeg_ls = _jpeg_ls()
    out = np.empty(shape, dtype=np.dtype(dtype))
    start = 0
    for i, end in enumerate(ends):
        s = jpeg_ls.decode(data[start:int(end)])
        out[i] = (s.astype(np.int64) + shift).astype(out.dtype)
        start = int(end)
    return out
