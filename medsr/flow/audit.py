"""Running the audit over a series: the glue between archive/restore and ``medsr.audit``.

The restored stack measured here is the exact array ``restore`` writes (same code,
same rounding), so the stored audit describes what a later restore produces.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from .. import __version__
from ..audit import Audit
from ..audit import bicubic_upsample, jpeg2000_baseline
from ..audit.baselines import decode_codestreams, encode_slices, first_ratio
from ..engine import to_stored


def rescale_stack(stack: np.ndarray, slope: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    out = stack.astype(np.float64)  # a new array: rescaled in place below
    s, i = np.asarray(slope, np.float64), np.asarray(intercept, np.float64)
    if s.size and np.all(s == 1.0) and np.all(i == 0.0):
        return out  # x * 1 + 0 == x: no rescale (most MR series)
    out *= s[:, None, None]
    out += i[:, None, None]
    return out


def bicubic_restore(lowres: np.ndarray, rows: int, cols: int, dtype, value_range) -> np.ndarray:
    """Plain bicubic from the stored low-res data, rounded as a restore would write it."""
    return to_stored(bicubic_upsample(lowres, (rows, cols)), np.dtype(dtype), value_range)


def build_audit(series, *, lowres: np.ndarray, restored, scale: int, operator: str,
                stored_pixel_bytes: int, method: str, model_id: str, with_j2k: bool, consistency: bool,
                device: str, progress: Callable[[int], None] | None = None, return_images: bool = False,
                base: dict | None = None, ensemble: int = 1, arithmetic: str | None = None):
    """The ``Audit`` of an archive of ``series``; optionally the stacks too.

    ``lowres`` is the base as restore decodes it; ``base`` (``PreparedBase.provenance()``) is
    recorded in the provenance (default: lossless); ``arithmetic`` (``medsr.engine.arithmetic``: what a network
    restore computed in) too, where given. ``restored``: the restored stack (stored dtype), or a
    ``restoring.LazyRestore`` that makes it batch by batch as the audit measures (nothing of it is kept).
    """
    rows, cols = series.shape
    from ..audit import METRICS_ID, AuditResult
    from ..audit.streamed import AUDIT_BATCH, measure_batched, stack_constants
    from ..errors import InputError

    slope, intercept = series.slope, series.intercept
    dr, thr, lo = stack_constants(series.pixels, slope, intercept)  # no float copy of the series (streamed.py)
    if not dr > 0:  # found by fuzzing: measure() raised ValueError
        raise InputError("every pixel of the series has the same (rescaled) value: PSNR and SSIM are undefined, "
                         "so medsr cannot audit it and does not archive it", path=series.source)

    def rescaled(stack):  # an array, or anything sliced like one (restoring.LazyRestore)
        return lambda sl: rescale_stack(stack[sl], slope[sl], intercept[sl])

    def bicubic(sl: slice) -> np.ndarray:  # made per batch from the low-res slices: never the whole stack
        bic = bicubic_restore(lowres[sl], rows, cols, series.pixels.dtype, series.value_range)
        return rescale_stack(bic, slope[sl], intercept[sl])

    batch = getattr(restored, "batch", AUDIT_BATCH)  # a LazyRestore is measured in its own chunks
    tests = {"restored": rescaled(restored), "bicubic": bicubic}
    pixel_ratio = series.original_pixel_bytes / max(stored_pixel_bytes, 1)
    ratios = {"pixel": pixel_ratio}
    j2k_note = ""
    j2k = None
    from ..audit.beside import Beside

    measure = dict(data_range=dr, fg_threshold=thr, series_min=lo, batch=batch, parallel_make=method != "model")
    # a child process only beside a classical restore: a network restore keeps both cores busy itself and its
    # working memory is what bounds an archive's (docs/guarantees.md); there the coder's thread suffices
    with Beside(int(series.pixels.size), process=method != "model") as beside:
        if with_j2k and np.issubdtype(series.pixels.dtype, np.integer) and series.bits_stored <= 16:
            first = _J2KFirstTry(beside, series, pixel_ratio, batch)
            tests["jpeg2000"] = lambda sl: rescale_stack(first.decoded(sl), slope[sl], intercept[sl])
        elif with_j2k:
            j2k_note = f"JPEG 2000 baseline skipped: {series.pixels.dtype} data is not integer"
        methods = measure_batched(series.n_slices, rescaled(series.pixels), tests, **measure)
    if "jpeg2000" in tests:
        tried = first.codestreams()
        j2k = jpeg2000_baseline(series.pixels, series.bits_stored, pixel_ratio, decode=False, first_try=tried)
        if j2k.codestreams != tried:  # the first ratio missed the target: measure what the search kept
            dtype = series.pixels.dtype
            tests["jpeg2000"] = lambda sl: rescale_stack(j2k.decode_slices(sl, (rows, cols), dtype),
                                                         slope[sl], intercept[sl])
            methods.update(measure_batched(series.n_slices, rescaled(series.pixels),
                                           {"jpeg2000": tests["jpeg2000"]}, **measure))
        ratios["jpeg2000_pixel"] = series.original_pixel_bytes / max(j2k.nbytes, 1)
    if progress:
        progress(series.n_slices)
    provenance = {
        "medsr_version": __version__, "operator": operator, "scale": scale, "method": method, "model_id": model_id,
        "ensemble": int(ensemble), "data_consistency": consistency, "device": device, "series_instance_uid": series.series_uid,
        "slices": series.n_slices, "rows": rows, "cols": cols, "source_kind": series.kind,
        "measured": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "original_pixel_bytes": series.original_pixel_bytes, "stored_pixel_bytes": stored_pixel_bytes,
        "original_file_bytes": series.original_file_bytes,
    }
    provenance.update(base or {"base": "lossless", "base_near": 0})
    if j2k_note:
        provenance["note"] = j2k_note
    if j2k is not None:
        provenance.update(j2k.provenance())  # the bytes JPEG 2000 achieved beside its target
    provenance["model_kind"] = _model_kind(model_id)
    if arithmetic and method == "model":
        provenance["arithmetic"] = arithmetic
    result = Audit(AuditResult(data_range=dr, fg_threshold=thr, methods=methods,
                               ratios={k: float(v) for k, v in ratios.items()},
                               provenance={"metrics_id": METRICS_ID, **provenance}).to_dict())
    if return_images:  # the report's panels: whole stacks, asked for by reports only
        return result, {"original": series.rescaled(), **{k: make(slice(None)) for k, make in tests.items()}}
    return result


class _J2KFirstTry:
    """The JPEG 2000 baseline's first try (``audit.baselines.first_ratio``: usually its only one), coded beside
    the audit one batch of ``batch`` slices at a time (a child process where that pays: ``audit/beside.py``), so
    each batch is measured with the restore's and bicubic's, in one pass over the original."""

    def __init__(self, beside, series, pixel_ratio: float, batch: int):
        a = series.pixels
        r = first_ratio(a, series.bits_stored, pixel_ratio)  # a bad stack fails here, before anything is sent
        self.batch, self.shape, self.dtype = batch, series.shape, a.dtype
        self.parts = [beside.submit(encode_slices, a[s:s + batch], series.bits_stored, r)
                      for s in range(0, a.shape[0], batch)]

    def decoded(self, sl: slice) -> np.ndarray:
        if sl.start is not None and sl.start % self.batch:
            raise ValueError(f"JPEG 2000 batches start at multiples of {self.batch} (got {sl.start})")
        if sl.start is None and sl.stop is None:  # every slice (a report's panels)
            return decode_codestreams(self.codestreams(), self.shape, self.dtype)
        return decode_codestreams(self.parts[(sl.start or 0) // self.batch].result(), self.shape, self.dtype)

    def codestreams(self) -> tuple[bytes, ...]:
        return tuple(c for part in self.parts for c in part.result())


def _model_kind(model_id: str) -> str:
    """fidelity (MSE/L1-trained or interpolation) or perceptual (GAN) - the report says which."""
    if model_id in ("bicubic", "nearest"):  # interpolation: no registry (and no torch) to ask
        return "fidelity"
    from ..models import REGISTRY, ModelRef

    entry = REGISTRY.get(ModelRef.from_record(model_id).name)
    return entry.kind if entry is not None else "fidelity"


def audit_against_reference(reference: Path, data, restored: np.ndarray, *, with_j2k: bool = True,
                            return_images: bool = False, ensemble: int | None = None, method: str | None = None,
                            model_id: str | None = None, consistency: bool = True, arithmetic: str | None = None):
    """Measure a restore (stored units) against a reference series read from disk, labelled with what
    restored it: ``method``, ``model_id``, ``ensemble`` (None: the archive's own) and ``consistency``."""
    from ..errors import InputError
    from ..io import read_series

    ref = read_series(reference)
    if ref.pixels.shape != restored.shape:
        raise InputError(f"reference has shape {ref.pixels.shape} but the restore has {restored.shape}", path=reference)
    info = data.info
    from ..codec.base import BaseMeta

    base = BaseMeta(info.base, info.base_near)
    base_prov = {**base.to_dict(), "base_description": base.describe()}
    return build_audit(ref, lowres=data.lowres, restored=restored, scale=info.scale, operator=info.operator,
                       stored_pixel_bytes=info.stored_pixel_bytes, method=method or info.method,
                       model_id=model_id or info.model_id, with_j2k=with_j2k, consistency=consistency, device="cpu", return_images=return_images,
                       base=base_prov, ensemble=info.model_ensemble if ensemble is None else ensemble,
                       arithmetic=arithmetic)
