"""The one restore path: which model restores, the engine an archive-time restore uses, and the restored stack in
the stored dtype. Archive audits (``pipeline``, ``budget``), ``medsr rd``, ``medsr eval`` and restore all call these,
so what an audit measured is what a restore writes."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..codec import crop_to, get_operator
from ..engine import EngineConfig, to_stored
from ..errors import MedsrError

log = logging.getLogger("medsr")


def resolve_model(method: str, model: str | None, base: str | None = None, ensemble: int | None = None,
                  device: str | None = None, operator: str = "area4-v1"):
    """-> (method, LoadedModel | None). ``auto`` uses the default shipped model for ``base`` (the
    lossy-base tier for a lossy base, where shipped), else bicubic. ``ensemble``: self-ensemble
    size (None: the model's registry default, capped on ``device`` 'cpu': models/ensemble_policy.py).
    A classical method never imports the model registry (nor torch with it)."""
    if method in ("bicubic", "nearest"):
        return method, None
    from ..models import REGISTRY, create_model, default_model_for
    from ..models.ensemble_policy import default_passes

    default = default_model_for(base, operator)
    if method == "auto":
        if model is not None:
            method = "model"
        elif default in REGISTRY:
            method, model = "model", default
        else:
            method = "bicubic"
    if method == "model":
        name = model or default
        if name is None:
            raise MedsrError(f"no shipped model restores operator {operator}: pass --model, or --method bicubic")
        if ensemble is None and device is not None and name in REGISTRY:
            ensemble = default_passes(REGISTRY[name].ensemble, device)
        return method, create_model(name, ensemble=ensemble)
    if method in ("bicubic", "nearest"):
        return method, None
    raise MedsrError(f"unknown method {method!r} (auto, model, bicubic)")


def stored_batches(lr: np.ndarray, *, window, scale: int, operator: str, rows: int, cols: int,
                    dtype, value_range, engine: EngineConfig, module, floor=None):
    """Yield (start, restored batch in the stored dtype, cropped): the one path archive audits and restore write.

    ``floor`` (``medsr.floor.FloorData``): slices stored by another representation are rebuilt from it."""
    from ..engine import iter_restore
    from ..floor import apply_floor

    for i, hr in iter_restore(lr, window, scale, config=engine, module=module, operator=operator):
        yield i, apply_floor(i, to_stored(crop_to(hr, rows, cols), np.dtype(dtype), value_range), floor,
                             value_range, dtype)


def restore_pixels_stored(lr: np.ndarray, *, rows: int, cols: int, dtype, progress=None, **kw) -> np.ndarray:
    out = np.empty((lr.shape[0], rows, cols), dtype=np.dtype(dtype))
    for i, batch in stored_batches(lr, rows=rows, cols=cols, dtype=dtype, **kw):
        out[i:i + len(batch)] = batch
        if progress:
            progress(len(batch))
    return out


@dataclass(frozen=True)
class LazyRestore:
    """``restore_pixels_stored`` of ``lr`` made chunk by chunk when indexed (``self[sl]``), for an audit that
    measures slice batches and keeps nothing: ``batch`` is a multiple of the engine's own step
    (``medsr.engine.restore_step``), so every chunk batches its slices as the whole-stack restore does."""

    lr: np.ndarray
    kw: dict
    batch: int
    progress: object = None

    @classmethod
    def of(cls, lr: np.ndarray, *, at_least: int = 8, progress=None, **kw) -> "LazyRestore":
        from ..engine import restore_step

        step = restore_step(kw["engine"], lr.shape[1:], kw["scale"])
        return cls(lr, kw, step * -(-at_least // step), progress)

    def __getitem__(self, sl: slice) -> np.ndarray:
        if sl.start is not None and sl.start % self.batch:
            raise ValueError(f"restore chunks start at multiples of {self.batch} (got {sl.start})")
        return restore_pixels_stored(self.lr[sl], progress=self.progress, **self.kw)


def archive_engine(method: str, device: str, consistency: bool, base_meta) -> EngineConfig:
    """The engine an archive-time restore uses: its projection bound comes from the base (``consistency_tolerance``)."""
    from ..codec.base import consistency_tolerance

    return EngineConfig(method=method, device=device, consistency=consistency,
                        consistency_tolerance=consistency_tolerance(base_meta.base, base_meta.near))


def restore_arithmetic(method: str, device: str, precision: str = "auto") -> str | None:
    """What a network restore on ``device`` (auto, cpu, cuda) at ``precision`` computes in
    (``medsr.engine.arithmetic``); None for bicubic/nearest (exact: the same pixels on every machine)."""
    if method != "model":
        return None
    from ..engine import arithmetic, select_device

    return arithmetic(precision, select_device(device))


def applied_consistency(requested: bool, operator: str) -> bool:
    """Data consistency as applied: only the area operators have an exact projection (say so, never silently)."""
    if requested and not get_operator(operator).exact_projection:
        log.warning(f"operator {operator} has no exact projection: data consistency is not applied")
        return False
    return requested
