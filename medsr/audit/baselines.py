"""Baselines every audit reports next to the model: bicubic and JPEG 2000 at equal bytes.

- ``bicubic_upsample`` (``torch-bicubic-a0.75-v1``): PyTorch's bicubic
  (``F.interpolate(mode="bicubic", align_corners=False)``), i.e. Keys' cubic convolution
  with a = -0.75 (as OpenCV), half-pixel (pixel-centre) alignment and replicated borders,
  computed in float64. Low-res pixel ``i`` sits at high-res coordinate ``s*i + (s-1)/2``,
  the centre of the s x s block the area operator averaged. Constants are reproduced
  exactly; linear ramps to within a few % of one low-res step (a = -0.5, MATLAB's
  ``imresize``, would reproduce them exactly; the PSNR difference is about 0.1 dB).
  ``scipy.ndimage.zoom(order=3)`` is a cubic B-spline, not this.
- ``jpeg2000_at_ratio`` (``openjpeg-j2k-lossy-v1``): each full original slice coded as a
  JPEG 2000 codestream (irreversible 9-7 DWT, one quality layer, OpenJPEG through
  ``openjpeg.encode``, the library pydicom 3's JPEG 2000 encoder uses). The encoder's
  ratio is relative to BitsStored; one ratio for the whole series is searched so that the
  total codestream bytes ~= original pixel bytes / target ratio: usually one encode per
  slice; the achieved bytes, the target and the encoder calls are recorded
  (``J2KBaseline.provenance``, in the audit's provenance). Bytes are codestream
  bytes (what DICOM encapsulates per frame, without the ~8-byte item headers).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BICUBIC_ID = "torch-bicubic-a0.75-v1"
JPEG2000_ID = "openjpeg-j2k-lossy-v1"


def bicubic_upsample(lr: np.ndarray, out_shape: tuple[int, int]) -> np.ndarray:
    """Bicubic of (n, h, w) to (n, H, W), float64: the engine's ``bicubic_upsample`` (one implementation)."""
    from ..engine.interpolate import bicubic_upsample as _bicubic

    return _bicubic(lr, out_shape=out_shape)


def _check_range(a: np.ndarray, bits_stored: int) -> None:
    if not np.issubdtype(a.dtype, np.integer) or a.ndim != 3:
        raise ValueError(f"expected an integer (n, H, W) stack, got {a.dtype} {a.shape}")
    if not 1 <= bits_stored <= 8 * a.dtype.itemsize or bits_stored > 16:
        raise ValueError(f"(0028,0101) 'Bits Stored' {bits_stored} does not fit dtype {a.dtype} (max 16)")
    signed = np.issubdtype(a.dtype, np.signedinteger)
    lo, hi = (-(1 << (bits_stored - 1)), (1 << (bits_stored - 1)) - 1) if signed else (0, (1 << bits_stored) - 1)
    if a.size and (int(a.min()) < lo or int(a.max()) > hi):
        raise ValueError(f"values [{int(a.min())}, {int(a.max())}] exceed (0028,0101) 'Bits Stored' {bits_stored}")


def _encode(s: np.ndarray, bits_stored: int, r: float) -> bytes:
    from openjpeg import encode

    from ..codec.j2k_pad import pad_for_j2k

    return encode(pad_for_j2k(np.ascontiguousarray(s)), bits_stored=bits_stored, photometric_interpretation=2,
                  compression_ratios=[r])


@dataclass(frozen=True)
class J2KBaseline:
    """JPEG 2000 of every slice at one encoder ratio; what it cost and how close it came to the target."""
    decoded: np.ndarray | None  # (n, H, W), the stored dtype; None when made with decode=False (decode_slices)
    nbytes: int  # total codestream bytes achieved
    target_bytes: float  # original pixel bytes / target ratio
    encoder_ratio: float  # the one ratio every slice was coded at (relative to BitsStored)
    slice_encodes: int  # encoder calls in all (n = one encode per slice)
    codestreams: tuple[bytes, ...] = ()  # one per slice: what ``--ratio`` stores when full-slice JPEG 2000 wins

    def provenance(self) -> dict:
        return {"jpeg2000_target_bytes": round(self.target_bytes), "jpeg2000_bytes": self.nbytes,
                "jpeg2000_bytes_vs_target": round(self.nbytes / self.target_bytes, 4),
                "jpeg2000_encoder_ratio": round(self.encoder_ratio, 4),
                "jpeg2000_slice_encodes": self.slice_encodes, "jpeg2000_slices": len(self.codestreams)}

    def decode_slices(self, sl: slice, shape: tuple[int, int], dtype) -> np.ndarray:
        """Slices ``sl`` decoded (the stored dtype): what ``decoded[sl]`` holds, made on demand."""
        return decode_codestreams(self.codestreams[sl], shape, dtype)


def jpeg2000_at_ratio(stored_slices: np.ndarray, bits_stored: int, target_pixel_ratio: float, *,
                      tolerance: float = 0.02, max_iter: int = 8) -> tuple[np.ndarray, int]:
    """JPEG 2000 lossy of each slice so the series totals ~ ``stored_slices.nbytes / target_pixel_ratio`` bytes.

    Returns (decoded stack of the same shape and dtype, total codestream bytes); the
    achieved ratio is ``stored_slices.nbytes / bytes``. See ``jpeg2000_baseline``.
    """
    b = jpeg2000_baseline(stored_slices, bits_stored, target_pixel_ratio, tolerance=tolerance, max_iter=max_iter)
    return b.decoded, b.nbytes


def _decode_all(codestreams, shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
    from ..codec.j2k_pad import decode_j2k  # cropped back where slices under 32 px were coded padded

    out = np.empty((len(codestreams),) + tuple(shape), dtype=dtype)
    for i, c in enumerate(codestreams):
        try:
            out[i] = decode_j2k(c, shape)
        except ValueError as e:
            raise ValueError(f"JPEG 2000 slice {i}: {e}") from None
    return out


def decode_codestreams(codestreams, shape: tuple[int, int], dtype) -> np.ndarray:
    """(n, *shape) stack of the stored dtype from one codestream per slice (``J2KBaseline.codestreams``)."""
    return _decode_all(codestreams, shape, np.dtype(dtype))


def first_ratio(stored_slices: np.ndarray, bits_stored: int, target_pixel_ratio: float) -> float:
    """The encoder ratio ``jpeg2000_baseline`` tries first (the encoder counts BitsStored, the target counts
    the stored dtype's bytes): usually its only one."""
    _check_range(stored_slices, bits_stored)
    if not target_pixel_ratio > 1.0:
        raise ValueError(f"target_pixel_ratio must be > 1 (got {target_pixel_ratio})")
    return max(1.0, target_pixel_ratio * bits_stored / (8 * np.asarray(stored_slices).dtype.itemsize))


def encode_slices(stored_slices: np.ndarray, bits_stored: int, ratio: float) -> tuple[bytes, ...]:
    """Each slice coded at one encoder ratio: a batch of ``jpeg2000_baseline``'s first try, made where the caller
    likes (``medsr.flow.audit`` codes them beside the audit, batch by batch, and hands them back as ``first_try``)."""
    return tuple(bytes(_encode(s, bits_stored, ratio)) for s in np.asarray(stored_slices))


def jpeg2000_baseline(stored_slices: np.ndarray, bits_stored: int, target_pixel_ratio: float, *,
                      tolerance: float = 0.02, max_iter: int = 8, decode: bool = True,
                      first_try: tuple[bytes, ...] | None = None) -> J2KBaseline:
    """JPEG 2000 lossy of each slice at one encoder ratio, the series totalling ~ the target bytes.

    ``stored_slices``: (n, H, W) stored values (uint16/int16/uint8..., not rescaled);
    ``bits_stored``: (0028,0101). The encoder's rate is relative to BitsStored, so the
    first ratio is ``target * bits_stored / (8 * itemsize)``: one encode per slice, usually
    within ``tolerance`` (2%) of the target bytes. Otherwise the next ratio comes from a
    per-slice model: a slice coded well under its share of the budget (an empty or flat
    slice, complete at that rate) keeps its size, the others scale as 1 / ratio; only
    those others are coded again. The closest try is kept; ``J2KBaseline`` says how close.
    ``decode=False``: the codestreams only (``J2KBaseline.decode_slices`` decodes a batch when asked).
    ``first_try``: the slices already coded at ``first_ratio`` (``encode_slices``): the search goes on from
    them, and keeps them (the same bytes) when they meet the target.
    """
    a = np.asarray(stored_slices)
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1 (got {max_iter})")
    r = first_ratio(a, bits_stored, target_pixel_ratio)
    n = a.shape[0]
    target = a.nbytes / target_pixel_ratio
    if first_try is not None and len(first_try) != n:
        raise ValueError(f"first_try holds {len(first_try)} codestreams for {n} slices")
    coded = list(first_try) if first_try is not None else [_encode(s, bits_stored, r) for s in a]
    encodes = n
    best = (abs(sum(map(len, coded)) / target - 1.0), r, list(coded))
    from ..codec.j2k_pad import padded_shape

    ph, pw = padded_shape(a.shape[1:])  # slices under 32 px are coded padded (codec/j2k_pad.py)
    share = ph * pw * bits_stored / 8  # a slice's raw bytes at BitsStored, as the encoder counts them
    for _ in range(max_iter - 1):
        if best[0] <= tolerance:
            break
        sizes = np.array([len(c) for c in coded], dtype=np.float64)
        complete = sizes < 0.8 * share / r  # coded well under its budget at this ratio: will not grow
        free = target - sizes[complete].sum()
        if free <= 0 or complete.all():
            r_new = max(1.0, r * sizes.sum() / target)
        else:
            r_new = max(1.0, r * sizes[~complete].sum() / free)
        if r_new == r:
            break  # at the encoder's limit (ratio 1): the data compress below the budget
        redo = [i for i in range(n) if not complete[i] or r_new > r]  # a higher ratio can shrink any slice
        for i in redo:
            coded[i] = _encode(a[i], bits_stored, r_new)
        encodes += len(redo)
        r = r_new
        err = abs(sum(map(len, coded)) / target - 1.0)
        if err < best[0]:
            best = (err, r, list(coded))
    _, r, coded = best
    out = _decode_all(coded, a.shape[1:], a.dtype) if decode else None
    return J2KBaseline(out, int(sum(len(c) for c in coded)), float(target), float(r), encodes,
                       tuple(bytes(c) for c in coded))
