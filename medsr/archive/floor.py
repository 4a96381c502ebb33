"""What an archive stores for the floor, and the one function that rebuilds a slice from it.

``FloorData``: ``kinds`` (n,) uint8 codes (``CODES``), ``data`` uint8 (the payloads
concatenated), ``offsets`` int64 (n + 1): slice i's payload is ``data[off[i]:off[i+1]]``
(empty for ``sr``). Payloads:

- ``sr`` (0): nothing; the slice is the super-resolution restore;
- ``j2k`` (1): JPEG 2000 (irreversible) of the full original slice, stored values;
- ``residual`` (2): JPEG 2000 (irreversible) of ``original - restore`` (signed integers);
  the slice is ``restore + decoded residual``;
- ``lossless`` (3): the original slice exactly (reversible JPEG 2000 or JPEG-LS NEAR=0).

Every rebuilt slice is rounded/clipped to the stored range and dtype.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..codec.payload import decode

REPRESENTATIONS = ("sr", "j2k", "residual", "lossless")
CODES = {name: i for i, name in enumerate(REPRESENTATIONS)}


def rebuild_slice(kind: str, payload: bytes, sr_slice: np.ndarray, value_range, dtype) -> np.ndarray:
    """The stored slice a restore writes for ``kind`` (``sr_slice``: the restore, stored dtype)."""
    if kind == "sr":
        return sr_slice
    v = decode(payload, sr_slice.shape)
    if kind == "residual":
        v = v + sr_slice.astype(np.int64)
    elif kind not in ("j2k", "lossless"):
        raise ValueError(f"unknown floor representation {kind!r}")
    lo, hi = value_range
    return np.clip(v, lo, hi).astype(np.dtype(dtype))


@dataclass(frozen=True)
class FloorData:
    kinds: np.ndarray  # (n,) uint8
    data: np.ndarray  # uint8
    offsets: np.ndarray  # (n + 1,) int64

    @classmethod
    def from_payloads(cls, kinds: list[str], payloads: list[bytes]) -> "FloorData":
        offsets = np.zeros(len(payloads) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(p) for p in payloads])
        data = np.frombuffer(b"".join(payloads), dtype=np.uint8).copy()
        return cls(np.asarray([CODES[k] for k in kinds], dtype=np.uint8), data, offsets)

    def check(self, n: int) -> str:
        """'' when consistent with n slices, else what is wrong."""
        k, o = np.asarray(self.kinds), np.asarray(self.offsets)
        if k.shape != (n,) or o.shape != (n + 1,):
            return f"floor datasets hold {k.shape} kinds and {o.shape} offsets for {n} slices"
        if k.size and int(k.max()) >= len(REPRESENTATIONS):
            return f"unknown floor representation code {int(k.max())}"
        if o[0] != 0 or o[-1] != self.data.size or np.any(np.diff(o) < 0):
            return "floor offsets do not match the floor data"
        sizes = np.diff(o)
        if np.any((k == CODES["sr"]) != (sizes == 0)):
            return "floor payloads disagree with their representations"
        return ""

    def kind(self, i: int) -> str:
        return REPRESENTATIONS[int(self.kinds[i])]

    def payload(self, i: int) -> bytes:
        return self.data[int(self.offsets[i]):int(self.offsets[i + 1])].tobytes()

    def nbytes(self, i: int) -> int:
        return int(self.offsets[i + 1] - self.offsets[i])

    def summary(self) -> dict:
        """{representation: {"slices": count, "bytes": payload bytes}} for every representation."""
        return representation_summary(self.kinds, self.offsets)


def representation_summary(kinds: np.ndarray, offsets: np.ndarray) -> dict:
    """{representation: {"slices": count, "bytes": payload bytes}} from the /floor kind and offset arrays."""
    kinds = np.asarray(kinds)
    sizes = np.diff(np.asarray(offsets))
    return {name: {"slices": int(np.sum(kinds == c)), "bytes": int(sizes[kinds == c].sum())}
            for name, c in CODES.items()}


def apply_floor(start: int, batch: np.ndarray, floor: FloorData | None, value_range, dtype) -> np.ndarray:
    """Replace the slices of ``batch`` (slices start..start+len) that the floor stores otherwise (in place)."""
    if floor is None:
        return batch
    for k in range(len(batch)):
        i = start + k
        if floor.kinds[i] != CODES["sr"]:
            batch[k] = rebuild_slice(floor.kind(i), floor.payload(i), batch[k], value_range, dtype)
    return batch


FULL_SLICE = ("j2k", "lossless")  # representations that hold the whole slice: their base is not needed


def placeholder_base(lowres: np.ndarray, floor: FloorData) -> np.ndarray:
    """The low-res stack to store: slices held whole by the floor become a near-constant placeholder.

    A placeholder is the stack minimum with one pixel at the stack maximum, so the stack's range
    (and with it the base codec's parameters for every other slice) is unchanged.
    """
    out = np.array(lowres, copy=True)
    if not out.size:
        return out
    vmin, vmax = out.min(), out.max()
    for i in range(len(out)):
        if floor.kind(i) in FULL_SLICE:
            out[i] = vmin
            out[i].flat[0] = vmax
    return out


def floor_lowres(lowres: np.ndarray, floor: FloorData | None, *, operator: str, rows: int, cols: int,
                 value_range, dtype) -> np.ndarray:
    """The low-res stack restore works from: slices held whole by the floor are the operator's
    down-sampling of their rebuilt slice (their stored base is a placeholder). Archive and read use this."""
    if floor is None or not any(floor.kind(i) in FULL_SLICE for i in range(len(lowres))):
        return lowres
    from ..codec import downsample, get_operator, pad_to_multiple

    scale = get_operator(operator).scale
    out = np.array(lowres, copy=True)
    blank = np.zeros((rows, cols), dtype=np.dtype(dtype))
    for i in range(len(out)):
        kind = floor.kind(i)
        if kind in FULL_SLICE:
            full = rebuild_slice(kind, floor.payload(i), blank, value_range, dtype)
            padded, _ = pad_to_multiple(full[None], scale)
            out[i] = downsample(padded, operator)[0].astype(out.dtype)
    return out
