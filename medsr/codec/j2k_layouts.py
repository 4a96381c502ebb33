"""JPEG 2000 code-block and resolution layouts other than the encoder default, for a rate that must land near
a byte budget (``medsr.codec.rate.j2k_base_to_budget``).

``payload.j2k_encode`` (OpenJPEG through pylibjpeg-openjpeg) always codes 64x64 code-blocks over 6 wavelet
resolutions. On a small image a handful of code-blocks hold all of it and one more coding pass of one of them
adds several percent of the bytes, so no encoder ratio lands in between (a 128 x 128 low-res slice with a
1,638-byte budget: 1,536 or 1,673 bytes, never between). Smaller code-blocks or fewer resolutions give the rate
control other truncation points. pylibjpeg-openjpeg does not expose those settings; glymur (ctypes over the
system's OpenJPEG, Debian ``libopenjp2-7``) does. The layout is written in the codestream's COD marker, so every
layout decodes with the same decoder (``payload.decode``); nothing about it is recorded elsewhere.

- ``J2KLayout(block, resolutions)``; ``DEFAULT`` (what ``payload.j2k_encode`` codes) and ``ALTERNATIVES``;
- ``unavailable()``: None, or why the alternatives cannot be coded on this machine;
- ``encode(a, ratio, layout)``: irreversible 9-7 JPEG 2000 of one non-negative 2-D slice (at most 16 bits),
  ``ratio`` relative to 16 bits a sample (the precision glymur writes for uint16 data: ``RAW_BITS``).
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

RAW_BITS = 16  # glymur writes uint16 data as 16-bit components: its ratios are relative to 16 bits


@dataclass(frozen=True)
class J2KLayout:
    block: int  # code-block side (pixels)
    resolutions: int  # wavelet resolutions (decomposition levels + 1)

    def describe(self) -> str:
        return f"{self.block}x{self.block} code-blocks, {self.resolutions} resolutions"


DEFAULT = J2KLayout(64, 6)
# tried in this order when DEFAULT cannot land near a budget; fewer resolutions first (the cheapest change),
# then smaller code-blocks (more truncation points, a little more overhead)
ALTERNATIVES = (J2KLayout(64, 5), J2KLayout(64, 4), J2KLayout(32, 6), J2KLayout(32, 5), J2KLayout(16, 6))


@lru_cache(maxsize=1)
def unavailable() -> str | None:
    """None when glymur can write JPEG 2000 here; else why not (one line, with what to install)."""
    try:
        import glymur
    except ImportError:
        return "glymur is not installed (pip install glymur)"
    version = tuple(getattr(glymur.version, "openjpeg_version_tuple", ()) or ())
    if version < (2, 3):
        return "OpenJPEG's library libopenjp2 >= 2.3 was not found (Debian: apt-get install libopenjp2-7)"
    return None


def encode(a: np.ndarray, ratio: float, layout: J2KLayout) -> bytes:
    """One slice as irreversible JPEG 2000 with ``layout``, at encoder ratio ``ratio`` (relative to 16 bits)."""
    import glymur

    from .j2k_pad import pad_for_j2k

    why = unavailable()
    if why:
        raise RuntimeError(why)
    arr = np.asarray(a)
    if arr.ndim != 2 or (arr.size and (int(arr.min()) < 0 or int(arr.max()) >= 1 << 16)):
        raise ValueError("a JPEG 2000 layout codes one 2-D slice of non-negative integers within 16 bits")
    arr = pad_for_j2k(np.ascontiguousarray(arr.astype(np.uint16)))
    with tempfile.TemporaryDirectory() as tmp:  # glymur writes files only; the codestream is read back
        path = Path(tmp) / "slice.j2k"
        glymur.Jp2k(str(path), data=arr, cratios=[max(1.0, float(ratio))], irreversible=True,
                    cbsize=(layout.block, layout.block), numres=layout.resolutions)
        return path.read_bytes()
