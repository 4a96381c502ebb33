"""The one set of checks on archive/restore options, run when an ``ArchiveOptions``/``RestoreOptions`` is made
(``__post_init__``): the CLI, the batch runner and the Orthanc plugin all build options, so a bad value is one
clear ``MedsrError`` before any series is read or any task or job is queued. What needs the series (e.g. a
lossy base's default NEAR from its window, CUDA being present) is checked when the series is archived."""
from __future__ import annotations

from ..errors import MedsrError

ARCHIVE_METHODS = ("auto", "model", "bicubic", "nearest")
RESTORE_METHODS = ("auto", "model", "bicubic", "nearest")
DEVICES = ("auto", "cpu", "cuda")
FORMATS = ("auto", "dicom", "nifti")  # auto: NIfTI for archives made from NIfTI (the batch restore's default)
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def check_archive_options(o) -> None:
    """Operator, method, device, self-ensemble, base and per-slice floor of an ``ArchiveOptions``."""
    from ..codec import get_operator

    get_operator(o.operator)
    _check_common(o.method, ARCHIVE_METHODS, o.device, o.ensemble)
    from ..codec.base import BASE_LOSSY, check_base

    if o.base is not None and (o.base != BASE_LOSSY or o.base_near is not None):  # lossy's default NEAR needs the window
        check_base(o.base, o.base_near)
    from .budget import check_ratio, check_search

    check_search(o.ratio_search)
    if o.ratio is not None:
        check_ratio(o.ratio)
        clash = [flag for flag, bad in (("--base", o.base is not None), ("--base-near", o.base_near is not None),
                                        ("--operator", o.operator != "area4-v1"),
                                        ("--floor-psnr-fg", o.floor_psnr_fg is not None),
                                        ("--floor-ssim", o.floor_ssim is not None)) if bad]
        if clash:
            raise MedsrError(f"--ratio chooses the scale and the base itself: drop {', '.join(clash)}")
    if o.floor_psnr_fg is not None or o.floor_ssim is not None or o.floor_fallback != "error":
        from ..floor import check_floor

        check_floor(o.floor_psnr_fg, o.floor_ssim, o.floor_fallback)


def check_restore_options(o) -> None:
    """Method, device, self-ensemble, output format, precision and sizes of a ``RestoreOptions``."""
    _check_common(o.method, RESTORE_METHODS, o.device, o.ensemble, optional_method=True)
    if o.format not in FORMATS:
        raise MedsrError(f"unknown output format {o.format!r} (auto, dicom or nifti)")
    if o.precision not in PRECISIONS:
        raise MedsrError(f"unknown precision {o.precision!r} (auto, fp32, bf16, fp16)")
    for name, v in (("batch size", o.batch_size), ("tile", o.tile)):
        if not (isinstance(v, int) and v >= 0):
            raise MedsrError(f"{name} must be a whole number >= 0 (0: automatic), got {v!r}")


def _check_common(method, methods: tuple[str, ...], device: str, ensemble: int | None, *,
                  optional_method: bool = False) -> None:
    if not (method in methods or (optional_method and method is None)):
        raise MedsrError(f"unknown method {method!r} ({', '.join(methods)})")
    if device not in DEVICES:
        raise MedsrError(f"unknown device {device!r} (auto, cpu or cuda)")
    if ensemble is not None:
        from ..models.ensemble import check_ensemble

        check_ensemble(ensemble)
