"""The per-slice choice: the representation that meets the floor at the fewest bytes.

A slice whose restore (``sr``) meets the floor stays ``sr`` unless its own full-slice JPEG 2000
meeting the floor (searched for every slice) costs less than its low-res base:
then it is stored as ``j2k`` (fewer bytes, still above the floor).

For a slice whose restore (``sr``) misses the floor, two lossy candidates are measured, each by a
bisection of the JPEG 2000 rate (``RATE_STEPS`` steps in log2 of the rate, so
``RATE_STEPS + 2`` encodes) between the rate that would cost as much as the lossless slice and
``RATE_MAX``, keeping the smallest codestream whose *rebuilt* slice meets the floor:

- ``j2k``: the full original slice;
- ``residual``: ``original - restore``, added back to the restore.

A lossy candidate counts only when it meets the floor with fewer bytes than ``lossless`` (the
smaller of reversible JPEG 2000 and JPEG-LS). Costs count the slice's low-res base where the
representation needs it: ``residual`` needs the restore, so it costs payload + base; ``j2k`` and
``lossless`` hold the whole slice, so their base is replaced by a placeholder of a few bytes
(``stored.placeholder_base``) and they cost their payload. When neither does, the floor cannot be met lossily:
``FloorError`` (nothing is written) unless the floor's fallback is ``lossless``.

The baseline of the target (per-slice-rate JPEG 2000 meeting the same floor) is the ``j2k``
search applied to every slice, reversible JPEG 2000 where no rate meets it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..codec.payload import bits_for, j2k_encode, lossless_encode
from .spec import Floor, FloorError, SliceJudge, SliceQuality
from ..archive.floor import FloorData, rebuild_slice

RATE_MAX = 2048.0
RATE_STEPS = 8
PLACEHOLDER_BYTES = 64  # what a whole-slice representation's placeholder base costs, at most (measured 40-55)


@dataclass(frozen=True)
class Found:
    payload: bytes
    quality: SliceQuality


def search_rate(encode: Callable[[float], bytes], judge_payload: Callable[[bytes], tuple[SliceQuality, bool]],
                r_min: float, *, max_bytes: int, steps: int = RATE_STEPS, r_max: float = RATE_MAX) -> Found | None:
    """Smallest codestream of ``encode(rate)`` whose rebuilt slice meets the floor and is < ``max_bytes``."""
    best: Found | None = None

    def attempt(r: float) -> bool:
        nonlocal best
        c = encode(r)
        q, ok = judge_payload(c)
        if ok and len(c) < max_bytes and (best is None or len(c) < len(best.payload)):
            best = Found(c, q)
        return ok  # the bisection follows the floor; only codestreams under max_bytes are kept

    lo, hi = math.log2(max(r_min, 1.0)), math.log2(r_max)
    if lo >= hi:
        return None
    if attempt(2.0 ** hi):
        return best
    if not attempt(2.0 ** lo):
        return best
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        if attempt(2.0 ** mid):
            lo = mid
        else:
            hi = mid
    return best


@dataclass(frozen=True)
class SliceDecision:
    index: int
    representation: str
    nbytes: int  # payload bytes of the representation (0 for sr); the slice's base bytes are extra
    quality: SliceQuality  # of the slice as restore writes it
    sr_quality: SliceQuality
    candidates: dict = field(default_factory=dict)  # name -> payload bytes meeting the floor, or None
    baseline_bytes: int | None = None  # per-slice-rate JPEG 2000 meeting the floor (reversible if none does)

    def to_dict(self) -> dict:
        return {"index": self.index, "representation": self.representation, "bytes": self.nbytes,
                **self.quality.to_dict(), "sr": self.sr_quality.to_dict(), "candidates": dict(self.candidates),
                "baseline_j2k_bytes": self.baseline_bytes}


@dataclass(frozen=True)
class FloorPlan:
    floor: Floor
    decisions: tuple[SliceDecision, ...]
    stored: FloorData

    @property
    def baseline_bytes(self) -> int | None:
        b = [d.baseline_bytes for d in self.decisions]
        return None if any(x is None for x in b) else int(sum(b))

    def summary(self, base_slice_bytes: np.ndarray, original_pixel_bytes: int) -> dict:
        """The audit's ``floor`` object: the floor, counts and bytes per representation, the worst slice after
        the floor, the target's baseline; per slice its representation, payload bytes and base bytes."""
        base = np.asarray(base_slice_bytes, dtype=np.float64)
        extra = int(self.stored.data.size)
        ours = int(round(float(base.sum()))) + extra
        q = [d.quality for d in self.decisions]
        fg = [x.psnr_fg for x in q if not math.isnan(x.psnr_fg)]
        ss = [x.ssim for x in q if not math.isnan(x.ssim)]
        per = []
        for d in self.decisions:
            e = d.to_dict()
            e["base_bytes"] = round(float(base[d.index]), 1)
            per.append(e)
        out = {**self.floor.to_dict(), "representations": self.stored.summary(), "floor_bytes": extra,
               "base_bytes": int(round(float(base.sum()))), "pixel_bytes": ours,
               "pixel_ratio": original_pixel_bytes / max(ours, 1),
               "min_psnr_fg": min(fg) if fg else None, "min_ssim": min(ss) if ss else None, "per_slice": per}
        b = self.baseline_bytes
        if b is not None:
            out["floor_baseline_j2k_bytes"] = b
            out["floor_baseline_j2k_pixel_ratio"] = original_pixel_bytes / max(b, 1)
            out["bytes_vs_baseline"] = ours / max(b, 1)  # ours / per-slice-rate JPEG 2000 (< 1: ours is smaller)
        return out


def plan_floor(original: np.ndarray, restored: np.ndarray, judge: SliceJudge, *, bits_stored: int, value_range,
               names: tuple[str, ...] = (), base_bytes: np.ndarray | None = None,
               progress: Callable[[int], None] | None = None) -> FloorPlan:
    """Choose every slice's representation. ``original``/``restored``: (n, H, W) stored values and dtype.

    Raises ``FloorError`` (naming the slice's file, never patient data) when a slice cannot meet the
    floor lossily and the fallback is ``error``.
    """
    floor = judge.floor
    dtype = restored.dtype
    base = np.zeros(original.shape[0]) if base_bytes is None else np.asarray(base_bytes, dtype=np.float64)
    kinds: list[str] = []
    payloads: list[bytes] = []
    decisions: list[SliceDecision] = []
    for i in range(original.shape[0]):
        o, sr = original[i], restored[i]
        sr_q = judge.quality(i, sr)
        sr_ok = judge.meets(sr_q)
        lossless = lossless_encode(o, bits_stored)
        raw = o.size * bits_stored / 8.0

        def judged(kind: str, base: np.ndarray):
            def f(c: bytes):
                q = judge.quality(i, rebuild_slice(kind, c, base, value_range, dtype))
                return q, judge.meets(q)
            return f

        j2k = search_rate(lambda r: j2k_encode(o, bits_stored, r), judged("j2k", sr), raw / len(lossless),
                          max_bytes=len(lossless))
        baseline = len(j2k.payload) if j2k else len(j2k_encode(o, bits_stored, None))
        if sr_ok and j2k is not None and len(j2k.payload) + PLACEHOLDER_BYTES < base[i]:
            # the restore meets the floor, but the slice's own JPEG 2000 meeting it costs less than its base
            kinds.append("j2k"); payloads.append(j2k.payload)
            decisions.append(SliceDecision(i, "j2k", len(j2k.payload), j2k.quality, sr_q,
                                           {"j2k": len(j2k.payload)}, baseline))
            if progress:
                progress(1)
            continue
        if sr_ok:
            kinds.append("sr"); payloads.append(b"")
            decisions.append(SliceDecision(i, "sr", 0, sr_q, sr_q, {"j2k": len(j2k.payload) if j2k else None},
                                           baseline))
            if progress:
                progress(1)
            continue
        res = o.astype(np.int64) - sr.astype(np.int64)
        rbits = bits_for(res)
        residual = None
        if rbits <= 16:
            budget = len(lossless) - int(base[i])  # the residual also pays for the slice's base
            if budget > 0:
                residual = search_rate(lambda r: j2k_encode(res, rbits, r), judged("residual", sr),
                                       res.size * rbits / 8.0 / budget, max_bytes=budget)
        found = {k: v for k, v in (("j2k", j2k), ("residual", residual)) if v is not None}
        cand = {"j2k": len(j2k.payload) if j2k else None, "residual": len(residual.payload) if residual else None,
                "lossless": len(lossless)}
        if found:
            cost = {k: len(v.payload) + (base[i] if k == "residual" else 0.0) for k, v in found.items()}
            kind = min(found, key=lambda k: (cost[k], k))
            payload, q = found[kind].payload, found[kind].quality
        elif floor.fallback == "lossless":
            kind, payload = "lossless", lossless
            q = judge.quality(i, rebuild_slice("lossless", lossless, sr, value_range, dtype))
        else:
            name = names[i] if i < len(names) else f"#{i}"
            raise FloorError(f"slice {i} ({name}) cannot meet the floor ({floor.describe()}) with fewer bytes than "
                             f"storing it losslessly (restore: foreground PSNR {sr_q.psnr_fg:.2f} dB); nothing was "
                             "written (lower the floor, or --floor-fallback lossless to store such slices losslessly)")
        kinds.append(kind); payloads.append(payload)
        decisions.append(SliceDecision(i, kind, len(payload), q, sr_q, cand, baseline))
        if progress:
            progress(1)
    return FloorPlan(floor, tuple(decisions), FloorData.from_payloads(kinds, payloads))
