"""Archive a series and restore an archive, end to end (options, results, the two flows); public through medsr.api."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from ..audit import Audit
from ..archive import ArchiveData, ArchiveInfo, VerifyResult, read_archive, read_info, verify_archive, write_archive
from ..codec import downsample, get_operator, intensity_window, pad_to_multiple
from ..engine import EngineConfig, device_for
from ..errors import ArchiveError, MedsrError, QualityGateError
from ..io import Series, read_series
from ..archive.sizes import base_stored_bytes as _base_stored_bytes  # noqa: F401
from ..archive.sizes import stored_pixel_bytes as _stored_pixel_bytes  # noqa: F401
from ..io.atomic import _test_hook, preflight_output  # _test_hook: crash-test stage markers (no-op)
from .options import check_archive_options, check_restore_options
from .restoring import applied_consistency as _consistency, archive_engine as _archive_engine  # noqa: F401
from .restoring import resolve_model as _resolve_model, restore_pixels_stored as _restore_pixels  # noqa: F401
from .restoring import stored_batches as _stored_batches  # noqa: F401
from .restoring import LazyRestore, restore_arithmetic

log = logging.getLogger("medsr")

Progress = Callable[[str, int, int], None]  # (stage, done_increment, total)


@dataclass(frozen=True)
class ArchiveOptions:
    operator: str = "area4-v1"
    method: str = "auto"  # auto (the default model if shipped, else bicubic) | model | bicubic
    model: str | None = None  # registry name or safetensors path
    device: str = "auto"
    consistency: bool = True
    series_uid: str | None = None
    allow_modalities: tuple[str, ...] = ("MR",)
    force: bool = False
    delete_original: bool = False
    min_psnr: float | None = None
    min_ssim: float | None = None
    min_psnr_fg: float | None = None
    keep_below_threshold: bool = False
    baselines: bool = True  # compute the JPEG 2000 baseline (bicubic is always computed)
    base: str | None = None  # low-res storage: lossless | near-lossless | lossy; None: the default (medsr.codec.base)
    base_near: int | None = None  # JPEG-LS NEAR; None: DEFAULT_NEAR (near-lossless), lossy_near(window) (lossy)
    floor_psnr_fg: float | None = None  # per-slice floor (docs/floor.md): foreground PSNR (dB) every slice meets
    floor_ssim: float | None = None  # per-slice floor: whole-slice SSIM every slice meets
    floor_fallback: str = "error"  # a slice no lossy representation meets: error (nothing written) | lossless
    ensemble: int | None = None  # model self-ensemble size (1, 2, 4, 8; medsr.models.ensemble); None: the model's default
    ratio: float | None = None  # byte budget: pixel payload <= original pixel bytes / ratio; chooses scale + base (flow/budget.py)
    ratio_search: str = "sample"  # with ratio: rank the restores on a sample of slices first (sample) or restore all (full)

    def __post_init__(self):
        check_archive_options(self)  # one set of checks for the CLI, the batch runner and the Orthanc plugin


@dataclass(frozen=True)
class ArchiveResult:
    archive: Path
    info: ArchiveInfo
    audit: Audit
    deleted: tuple[Path, ...] = ()
    seconds: float = 0.0

    @property
    def ratio(self) -> float:
        return self.info.ratio

    def summary(self) -> dict:
        """The flat JSON object ``medsr archive --json`` prints."""
        m = self.audit.get("methods", {})

        def g(method, key):
            v = m.get(method, {}).get(key)
            return None if v is None else round(float(v), 4)

        out = {
            "archive": str(self.archive), "slices": self.info.n_slices,
            "original_bytes": self.info.original_file_bytes, "archive_bytes": self.info.archive_bytes,
            "ratio": round(self.info.ratio, 3), "pixel_ratio": round(self.info.pixel_ratio, 3),
            "method": self.info.method, "model_id": self.info.model_id, "ensemble": self.info.model_ensemble,
            "operator": self.info.operator,
            "psnr": g("restored", "psnr"), "ssim": g("restored", "ssim"), "psnr_fg": g("restored", "psnr_fg"),
            "ssim_fg": g("restored", "ssim_fg"),
            "psnr_bicubic": g("bicubic", "psnr"), "ssim_bicubic": g("bicubic", "ssim"),
            "psnr_fg_bicubic": g("bicubic", "psnr_fg"), "ssim_fg_bicubic": g("bicubic", "ssim_fg"),
            "psnr_j2k": g("jpeg2000", "psnr"), "ssim_j2k": g("jpeg2000", "ssim"),
            "psnr_fg_j2k": g("jpeg2000", "psnr_fg"), "ssim_fg_j2k": g("jpeg2000", "ssim_fg"),
            "base": self.info.base, "base_near": self.info.base_near,
            "below_threshold": self.info.below_threshold,
            "deleted_originals": len(self.deleted), "seconds": round(self.seconds, 3),
        }
        bu = self.audit.get("budget")
        if bu:
            out["budget"] = bu
        fl = self.audit.get("floor")
        if fl:
            out["floor"] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in fl.items() if k != "per_slice"}
        return out


@dataclass(frozen=True)
class RestoreOptions:
    method: str | None = None  # None: what the archive recorded
    model: str | None = None  # None: the archive's model
    device: str = "auto"
    consistency: bool = True
    format: str = "dicom"  # dicom | nifti
    force: bool = False
    batch_size: int = 0
    precision: str = "auto"
    compile: bool = False  # torch.compile (CUDA)
    tile: int = 0  # low-res tile size for very large slices (0: whole slices)
    ensemble: int | None = None  # self-ensemble size (1, 2, 4, 8); None: what the archive recorded

    def __post_init__(self):
        check_restore_options(self)


@dataclass(frozen=True)
class RestoreResult:
    output: Path
    slices: int
    seconds: float
    device: str
    method: str
    model_id: str
    ensemble: int = 1
    files: tuple[Path, ...] = ()
    warnings: tuple[str, ...] = ()
    audit: Audit | None = None  # with --reference: this restore measured against the reference
    arithmetic: str | None = None  # a network restore's arithmetic (``medsr.engine.arithmetic``); None otherwise

    def summary(self) -> dict:
        d = {"output": str(self.output), "slices": self.slices, "seconds": round(self.seconds, 3),
             "device": self.device, "method": self.method, "model_id": self.model_id, "ensemble": self.ensemble,
             "arithmetic": self.arithmetic,
             "slices_per_second": round(self.slices / max(self.seconds, 1e-9), 2), "warnings": list(self.warnings)}
        if self.audit is not None:
            d["audit"] = flat_audit(self.audit)
        return d


def flat_audit(audit) -> dict:
    """The audit (an ``Audit`` or its stored JSON dict) as one flat dict: ``psnr``, ``psnr_fg``, ``ssim``,
    ``ssim_fg`` and the ``_bicubic``/``_j2k`` columns (``Audit.flat``)."""
    return Audit.of(audit).flat()


# --------------------------------------------------------------------------- models



# --------------------------------------------------------------------------- restore core







def _tick(progress: Progress | None, stage: str, total: int):
    if progress is None:
        return None
    return lambda k: progress(stage, k, total)


# --------------------------------------------------------------------------- archive

def archive_series(series: str | Path | Series, output: str | Path, options: ArchiveOptions = ArchiveOptions(),
                   *, progress: Progress | None = None) -> ArchiveResult:
    """Archive one MR series (folder or NIfTI, or an already read Series) into ``output``.

    Restores it in memory with the same code as ``restore_archive``, audits that restore
    against the original (with bicubic and JPEG 2000 baselines), applies the quality
    gates, then writes the archive atomically. With ``delete_original`` the source files
    are removed only after the written archive was re-read and verified.
    """
    t0 = time.perf_counter()
    output = Path(output)
    from ..floor import check_floor

    floor = check_floor(options.floor_psnr_fg, options.floor_ssim, options.floor_fallback)  # before reading anything
    preflight_output(output, force=options.force)
    if options.baselines and options.ratio is None and options.method in ("bicubic", "nearest"):
        from ..audit.beside import prewarm

        prewarm()  # the JPEG 2000 baseline's child (where allowed: audit/beside.py) starts while the series is read
    if not isinstance(series, Series):
        series = read_series(series, series_uid=options.series_uid, allow_modalities=options.allow_modalities)
    if options.ratio is not None:
        return _archive_to_ratio(series, output, options, progress, t0)
    op = get_operator(options.operator)
    rows, cols = series.shape
    padded, pad = pad_to_multiple(series.pixels, op.scale)
    exact = downsample(padded, op.id)
    window = intensity_window(exact)
    from ..codec.base import prepare_base

    base = prepare_base(exact, options.base, options.base_near)  # None: the default base (docs/base-codec.md)
    lowres = base.decoded  # restore, audit and bicubic see exactly what a later restore decodes
    method, loaded = _resolve_model(options.method, options.model, base.meta.base, options.ensemble,
                                    device=device_for(options.method, options.device), operator=op.id)
    if loaded is not None:
        loaded.check_operator(op.id, op.scale)
    ensemble = loaded.ensemble if loaded else 1
    consistency = _consistency(options.consistency, op.id)
    engine = _archive_engine(method, options.device, consistency, base.meta)
    how = dict(window=window, scale=op.scale, operator=op.id, rows=rows, cols=cols, dtype=series.pixels.dtype,
               value_range=series.value_range, engine=engine, module=loaded.module if loaded else None)
    tick = _tick(progress, "restore + audit" if floor is None else "restore (audit)", series.n_slices)
    # without a floor nothing but the audit needs the restored slices: made batch by batch as it measures them
    restored = _restore_pixels(lowres, progress=tick, **how) if floor is not None else \
        LazyRestore.of(lowres, progress=tick, **how)
    stored_bytes = _base_stored_bytes(base)
    plan = None
    if floor is not None:  # per-slice floor (docs/floor.md): a FloorError here writes nothing
        from .floor import floor_series

        fs = floor_series(series, restored, floor, base, true_lowres=exact, operator=op.id,
                          progress=_tick(progress, "floor", series.n_slices))
        plan, restored, base, lowres = fs.plan, fs.restored, fs.base, fs.lowres
        stored_bytes = fs.stored_bytes
    from .audit import build_audit

    audit = build_audit(series, lowres=lowres, restored=restored, scale=op.scale, operator=op.id,
                        stored_pixel_bytes=stored_bytes, method=method,
                        model_id=loaded.model_id if loaded else method, with_j2k=options.baselines,
                        consistency=consistency, device=device_for(method, options.device), base=base.provenance(),
                        ensemble=ensemble, arithmetic=restore_arithmetic(method, engine.device),
                        progress=_tick(progress, "audit", series.n_slices))
    if plan is not None:
        from .floor import add_floor_to_audit

        audit = add_floor_to_audit(audit, plan, fs.base_slice_bytes, series.original_pixel_bytes)
    below = _check_gates(audit, options, series)
    info = write_archive(output, series=series, lowres=base.decoded, window=window, operator=op.id, scale=op.scale,
                         pad=pad, method=method, model=loaded.ref if loaded else None, audit=audit,
                         below_threshold=below, force=options.force, base=base,
                         floor=plan.stored if plan else None, floor_attrs=floor.to_dict() if floor else None)
    deleted: tuple[Path, ...] = ()
    if options.delete_original:
        deleted = _delete_verified_originals(output, series)
    return ArchiveResult(archive=output, info=info, audit=audit, deleted=deleted, seconds=time.perf_counter() - t0)


def _archive_to_ratio(series: Series, output: Path, options: ArchiveOptions, progress: Progress | None,
                      t0: float) -> ArchiveResult:
    """``archive_series`` with ``options.ratio``: measure the candidates (``medsr.flow.budget``), store the best."""
    from ..floor import FLOOR_ID
    from .audit import build_audit
    from .budget import plan_budget

    plan = plan_budget(series, options.ratio, method=options.method, model=options.model, device=options.device,
                       consistency=options.consistency, ensemble=options.ensemble, search=options.ratio_search,
                       progress=progress)
    c = plan.chosen
    op = get_operator(c.operator)
    prov = c.base.provenance()
    if c.j2k_slices == series.n_slices:
        prov["base_description"] = "none: every slice is stored as JPEG 2000 of the full slice"
    audit = build_audit(series, lowres=c.lowres, restored=c.restored, scale=op.scale, operator=op.id,
                        stored_pixel_bytes=c.pixel_bytes, method=c.method, model_id=c.model_id, with_j2k=options.baselines,
                        consistency=_consistency(options.consistency, op.id), device=device_for(c.method, options.device),
                        base=prov, ensemble=c.ensemble, progress=_tick(progress, "audit", series.n_slices),
                        arithmetic=restore_arithmetic(c.method, options.device))
    audit = audit.with_budget(plan.summary(series.original_pixel_bytes))
    below = _check_gates(audit, options, series)
    info = write_archive(output, series=series, lowres=c.base.decoded, window=c.window, operator=op.id,
                         scale=op.scale, pad=c.pad, method=c.method, model=c.loaded.ref if c.loaded else None,
                         audit=audit, below_threshold=below, force=options.force, base=c.base,
                         floor=c.floor, floor_attrs={"floor_id": FLOOR_ID, "floor_source": "ratio"} if c.floor is not None else None)
    deleted = _delete_verified_originals(output, series) if options.delete_original else ()
    return ArchiveResult(archive=output, info=info, audit=audit, deleted=deleted, seconds=time.perf_counter() - t0)


def _check_gates(audit: dict, options: ArchiveOptions, series: Series) -> bool:
    r = audit["methods"]["restored"]
    failures = []
    for name, key, floor in (("PSNR", "psnr", options.min_psnr), ("SSIM", "ssim", options.min_ssim),
                             ("foreground PSNR", "psnr_fg", options.min_psnr_fg)):
        if floor is not None and not (r.get(key) is not None and r[key] >= floor):
            failures.append(f"{name} {r.get(key, float('nan')):.4g} < {floor:g}")
    if failures and not options.keep_below_threshold:
        raise QualityGateError("quality gate not met (" + "; ".join(failures) + "); nothing was written "
                               "(lower the gate, or --keep-below-threshold to write it marked)", path=series.source)
    return bool(failures)


def _delete_verified_originals(archive: Path, series: Series) -> tuple[Path, ...]:
    """Delete source files only if the archive re-reads, verifies, and records their exact bytes
    (every check first; any failure deletes nothing: see medsr/flow/originals.py)."""
    from .originals import delete_verified_originals

    return delete_verified_originals(archive, series)


# --------------------------------------------------------------------------- restore

def open_archive(path: str | Path) -> ArchiveInfo:
    """Archive metadata and stored audit (an ``Audit``; no pixels read)."""
    info = read_info(Path(path))
    return replace(info, audit=Audit.of(info.audit))


def restore_archive(archive: str | Path, output: str | Path, options: RestoreOptions = RestoreOptions(), *,
                    reference: str | Path | None = None, progress: Progress | None = None) -> RestoreResult:
    """Restore an archive to a new derived DICOM series folder (or a NIfTI file).

    Inference and DICOM writing overlap: batches are written by worker threads while
    the next batch runs through the network.
    """
    t0 = time.perf_counter()
    archive, output = Path(archive), Path(output)
    preflight_output(output, force=options.force, folder=options.format == "dicom")
    data = read_archive(archive)  # verifies checksums
    _test_hook("restore-archive-read")
    info = data.info
    plan = _plan_restore(data, options)
    from ..dicom.write import write_dicom_series, write_nifti

    if options.format == "nifti":
        restored = _collect(data, plan, progress)
        files = (write_nifti(output, data, restored, force=options.force),)
    elif options.format == "dicom":
        if info.kind != "dicom":
            raise ArchiveError("archive was made from NIfTI; restore it with --format nifti", path=archive)
        # the whole stack is kept only for a --reference audit; otherwise batches stream to disk
        restored = np.empty((info.n_slices, info.rows, info.cols), dtype=np.dtype(info.dtype)) if reference else None

        def batches():
            for i, batch in _iter_stored(data, plan):
                if restored is not None:
                    restored[i:i + len(batch)] = batch
                if progress:
                    progress("restore", len(batch), info.n_slices)
                yield i, batch
                _test_hook("restore-batch-done")

        files = write_dicom_series(output, data, batches(), method=plan.method, model_id=plan.model_label,
                                   force=options.force, model=plan.model)
    else:
        raise MedsrError(f"unknown output format {options.format!r} (dicom or nifti)")
    seconds = time.perf_counter() - t0  # the restore itself; a --reference audit is extra work
    audit = None
    if reference is not None:
        from .audit import audit_against_reference

        audit = audit_against_reference(Path(reference), data, restored, ensemble=plan.ensemble, method=plan.method,
                                        model_id=plan.model_id, consistency=options.consistency,
                                        arithmetic=plan.arithmetic)
    return RestoreResult(output=output, slices=info.n_slices, seconds=seconds, device=plan.device,
                         method=plan.method, model_id=plan.model_id, ensemble=plan.ensemble, files=tuple(files),
                         warnings=plan.warnings, audit=audit, arithmetic=plan.arithmetic)


@dataclass(frozen=True)
class _RestorePlan:
    method: str
    loaded: object
    device: str
    engine: EngineConfig
    warnings: tuple[str, ...]

    @property
    def model_id(self) -> str:
        return self.loaded.model_id if self.loaded is not None else self.method

    @property
    def arithmetic(self) -> str | None:
        return restore_arithmetic(self.method, self.engine.device, self.engine.precision)

    @property
    def ensemble(self) -> int:
        return self.loaded.ensemble if self.loaded is not None else 1

    @property
    def model(self):
        """The ``ModelRef`` that restores (None for bicubic/nearest)."""
        return self.loaded.ref if self.loaded is not None else None

    @property
    def model_label(self) -> str:
        """The model id, with its self-ensemble when there is one (for the Derivation Description)."""
        return self.model.label if self.model is not None else self.method




def _arithmetic_warning(info: ArchiveInfo, method: str, engine: EngineConfig) -> str | None:
    """A restore by the archive's own model in other arithmetic than its audit's may round some pixels
    differently from what the audit measured: say so (archives before 2026-12-01 did not record it: silent)."""
    recorded = ((info.audit or {}).get("provenance") or {}).get("arithmetic")
    mine = restore_arithmetic(method, engine.device, engine.precision)
    if info.method != "model" or not recorded or mine is None or mine == recorded:
        return None
    return (f"restoring in {mine} arithmetic, not the {recorded} the archive's audit was measured in: some pixels "
            "may differ from what it measured by a few units (figures within about 0.001 dB where measured; "
            "--reference re-measures this restore)")


def _plan_restore(data: ArchiveData, options: RestoreOptions) -> _RestorePlan:
    info = data.info
    warnings_: list[str] = []
    method = options.method or info.method
    model_name = options.model
    if method == "model" and model_name is None and info.method == "model":
        # the exact weights the audit used, by digest (a registry name may have moved on), else by name
        from ..models import find_by_sha256

        pinned = find_by_sha256(info.model_sha256)
        model_name = pinned.name if pinned is not None else info.model.name
    same_model = method == "model" and info.method == "model" and options.model is None
    device = device_for(method, options.device)
    # the passes the archive's audit measured (an archive made on a CPU recorded the CPU default, 1);
    # otherwise the device's default (models/ensemble_policy.py)
    ensemble = options.ensemble if options.ensemble is not None else (info.model_ensemble if same_model else None)
    method, loaded = _resolve_model(method, model_name, ensemble=ensemble, device=device)
    if loaded is not None:
        loaded.check_operator(info.operator, info.scale)
    if (info.method == "model" and loaded is not None and loaded.sha256 == info.model_sha256
            and loaded.ensemble != info.model_ensemble):
        warnings_.append(f"restoring with a self-ensemble of {loaded.ensemble}, not the archive's {info.model_ensemble}: "
                         f"the stored audit does not describe this restore (--ensemble {info.model_ensemble} "
                         "restores what it measured)")
    if info.method == "model" and (loaded is None or loaded.sha256 != info.model_sha256):
        warnings_.append(f"restoring with {loaded.model_id if loaded else method}, not the archive's {info.model_id}: "
                         "the stored audit does not describe this restore")
    elif info.method != "model" and method != info.method:
        warnings_.append(f"restoring with {loaded.model_id if loaded else method}, not the archive's {info.method}: "
                         "the stored audit does not describe this restore")
    for w in warnings_:
        log.warning(w)
    device = device if method == "model" else "cpu"
    from ..codec.base import consistency_tolerance

    engine = EngineConfig(method=method, device=device,
                          consistency=_consistency(options.consistency, info.operator),
                          consistency_tolerance=consistency_tolerance(info.base, info.base_near),
                          batch_size=options.batch_size, precision=options.precision, compile=options.compile,
                          tile=options.tile)
    if not warnings_:  # another model or ensemble already says the audit does not describe this restore
        why = _arithmetic_warning(info, method, engine)
        if why:
            log.warning(why)
            warnings_.append(why)
    return _RestorePlan(method, loaded, device, engine, tuple(warnings_))


def _iter_stored(data: ArchiveData, plan: _RestorePlan):
    """Yield (start, batch of restored slices in the stored dtype, cropped to the original size)."""
    info = data.info
    yield from _stored_batches(data.lowres, window=_window(info), scale=info.scale, operator=info.operator,
                               rows=info.rows, cols=info.cols, dtype=info.dtype,
                               value_range=info.value_range,
                               engine=plan.engine, module=plan.loaded.module if plan.loaded is not None else None,
                               floor=data.floor)


def _collect(data: ArchiveData, plan: _RestorePlan, progress: Progress | None = None) -> np.ndarray:
    info = data.info
    out = np.empty((info.n_slices, info.rows, info.cols), dtype=np.dtype(info.dtype))
    for i, batch in _iter_stored(data, plan):
        out[i:i + len(batch)] = batch
        if progress:
            progress("restore", len(batch), info.n_slices)
    return out


def restore_pixels(data: ArchiveData, options: RestoreOptions = RestoreOptions(), *, progress: Progress | None = None):
    """Restore an archive's pixels in memory -> (stack in stored dtype, method, model, device, warnings)."""
    plan = _plan_restore(data, options)
    return _collect(data, plan, progress), plan.method, plan.loaded, plan.device, plan.warnings


def _window(info: ArchiveInfo):
    from ..codec import IntensityWindow

    return IntensityWindow(info.window_lo, info.window_hi)


__all__ = ["ArchiveOptions", "ArchiveResult", "RestoreOptions", "RestoreResult", "archive_series", "restore_archive",
           "open_archive", "verify_archive", "read_series", "VerifyResult"]
