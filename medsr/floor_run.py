"""Running the per-slice floor over a series: the glue between ``archive_series`` and ``medsr.floor``."""
from __future__ import annotations

from typing import Callable

import numpy as np

from .floor import Floor, FloorPlan, SliceJudge, plan_floor


def run_floor(series, restored: np.ndarray, floor: Floor, *, with_baseline: bool, base_bytes: np.ndarray | None = None,
              progress: Callable[[int], None] | None = None) -> FloorPlan:
    """Plan every slice's representation against the original ``series`` (raises FloorError, see plan_floor)."""
    from .errors import InputError

    if not np.issubdtype(series.pixels.dtype, np.integer) or series.bits_stored > 16:
        raise InputError(f"a per-slice floor needs integer pixels of at most 16 bits (these are {series.pixels.dtype}, "
                         f"{series.bits_stored} bits)", path=series.source)
    judge = SliceJudge(series.pixels, series.slope, series.intercept, floor)
    names = tuple(p.name for p in series.source_files)
    return plan_floor(series.pixels, restored, judge, bits_stored=series.bits_stored,
                      value_range=series.value_range, names=names, with_baseline=with_baseline,
                      base_bytes=base_bytes, progress=progress)


def base_slice_bytes(base, stored_base_bytes: int, n: int) -> np.ndarray:
    """Bytes of each slice's low-res base: its codestream, or an equal share of the lossless dataset."""
    if getattr(base, "offsets", None) is not None:
        return np.diff(np.asarray(base.offsets)).astype(np.float64)
    return np.full(n, stored_base_bytes / max(n, 1), dtype=np.float64)


def add_floor_to_audit(audit: dict, plan: FloorPlan, base_bytes: np.ndarray, original_pixel_bytes: int) -> dict:
    """Audit dict + ``floor`` (summary and per slice) + ``representation``/``bytes`` on each restored slice."""
    audit["floor"] = plan.summary(base_bytes, original_pixel_bytes)
    per = audit.get("methods", {}).get("restored", {}).get("per_slice", [])
    for entry, d in zip(per, plan.decisions):
        entry["representation"] = d.representation
        entry["bytes"] = int(d.nbytes + round(float(base_bytes[d.index])))
    return audit


def rebase(base, plan: FloorPlan, true_lowres: np.ndarray):
    """The base to store once the floor is planned: slices held whole by the floor get a placeholder
    (``medsr.floor.stored.placeholder_base``). ``true_lowres``: the exact low-res stack ``base`` was coded
    from. Every other slice must decode exactly as before (their restore and residual were measured from
    it); should the codec disagree, the original base is kept (and counted)."""
    from .codec.base import prepare_base
    from .floor.stored import FULL_SLICE, placeholder_base

    full = np.array([plan.stored.kind(i) in FULL_SLICE for i in range(len(base.decoded))])
    if not full.any():
        return base
    new = prepare_base(placeholder_base(true_lowres, plan.stored), base.meta.base, base.meta.near or None)
    if not np.array_equal(new.decoded[~full], base.decoded[~full]):
        return base
    return new
