"""Running the per-slice floor over a series: the glue between ``archive_series`` and ``medsr.floor``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..floor import Floor, FloorPlan, SliceJudge, plan_floor


def run_floor(series, restored: np.ndarray, floor: Floor, *, base_bytes: np.ndarray | None = None,
              progress: Callable[[int], None] | None = None) -> FloorPlan:
    """Plan every slice's representation against the original ``series`` (raises FloorError, see plan_floor)."""
    from ..errors import InputError

    if not np.issubdtype(series.pixels.dtype, np.integer) or series.bits_stored > 16:
        raise InputError(f"a per-slice floor needs integer pixels of at most 16 bits (these are {series.pixels.dtype}, "
                         f"{series.bits_stored} bits)", path=series.source)
    judge = SliceJudge(series.pixels, series.slope, series.intercept, floor)
    names = tuple(p.name for p in series.source_files)
    return plan_floor(series.pixels, restored, judge, bits_stored=series.bits_stored,
                      value_range=series.value_range, names=names,
                      base_bytes=base_bytes, progress=progress)


def base_slice_bytes(base, stored_base_bytes: int, n: int) -> np.ndarray:
    """Bytes of each slice's low-res base: its codestream, or an equal share of the lossless dataset."""
    if getattr(base, "offsets", None) is not None:
        return np.diff(np.asarray(base.offsets)).astype(np.float64)
    return np.full(n, stored_base_bytes / max(n, 1), dtype=np.float64)


def add_floor_to_audit(audit, plan: FloorPlan, base_bytes: np.ndarray, original_pixel_bytes: int):
    """A new ``Audit``: ``audit`` + ``floor`` (summary and per slice) + ``representation``/``bytes`` on each
    restored slice."""
    per = [{"representation": d.representation, "bytes": int(d.nbytes + round(float(base_bytes[d.index])))}
           for d in plan.decisions]
    return audit.with_floor(plan.summary(base_bytes, original_pixel_bytes), per)


def rebase(base, plan: FloorPlan, true_lowres: np.ndarray):
    """The base to store once the floor is planned: slices held whole by the floor get a placeholder
    (``medsr.archive.floor.placeholder_base``). ``true_lowres``: the exact low-res stack ``base`` was coded
    from. Every other slice must decode exactly as before (their restore and residual were measured from
    it); should the codec disagree, the original base is kept (and counted)."""
    from ..codec.base import prepare_base
    from ..archive.floor import FULL_SLICE, placeholder_base

    full = np.array([plan.stored.kind(i) in FULL_SLICE for i in range(len(base.decoded))])
    if not full.any():
        return base
    new = prepare_base(placeholder_base(true_lowres, plan.stored), base.meta.base, base.meta.near or None)
    if not np.array_equal(new.decoded[~full], base.decoded[~full]):
        return base
    return new


@dataclass(frozen=True)
class FlooredSeries:
    """What ``floor_series`` gives: the plan, and the restore, base and low-res stack an archive stores/reads."""
    plan: FloorPlan
    restored: np.ndarray  # the restore with every floor slice rebuilt from its representation (as restore writes it)
    base: object  # the base to store (``rebase``: placeholders for whole-slice representations)
    lowres: np.ndarray  # the low-res stack as ``read_archive`` gives it (``floor_lowres``)
    base_bytes: int  # stored bytes of ``base``
    stored_bytes: int  # stored pixel bytes: ``base_bytes`` + floor payloads

    @property
    def base_slice_bytes(self) -> np.ndarray:
        return base_slice_bytes(self.base, self.base_bytes, len(self.restored))


def floor_series(series, restored: np.ndarray, floor: Floor, base, *, true_lowres: np.ndarray, operator: str,
                 progress: Callable[[int], None] | None = None) -> FlooredSeries:
    """The archive's floor step (``archive_series`` and ``medsr rd`` both call it): plan every slice against
    ``series`` given the ``restored`` stack (stored dtype) from ``base``, rebuild the floor slices, swap whole-slice
    bases for placeholders and count the honest stored pixel bytes. ``true_lowres``: the exact low-res stack
    ``base`` was coded from. Raises FloorError (see plan_floor)."""
    from ..archive.sizes import base_stored_bytes as nbytes
    from ..floor import apply_floor
    from ..archive.floor import floor_lowres

    rows, cols = series.shape
    plan = run_floor(series, restored, floor,
                     base_bytes=base_slice_bytes(base, nbytes(base), series.n_slices), progress=progress)
    restored = apply_floor(0, restored, plan.stored, series.value_range, series.pixels.dtype)
    base = rebase(base, plan, true_lowres)  # whole-slice representations need no base
    lowres = floor_lowres(base.decoded, plan.stored, operator=operator, rows=rows, cols=cols,
                          value_range=series.value_range, dtype=series.pixels.dtype)  # as read_archive gives it
    b = nbytes(base)
    return FlooredSeries(plan, restored, base, lowres, b, b + int(plan.stored.data.size))
