"""Writing restored stacks: a derived DICOM series folder, or a NIfTI file. Atomic, owner-only."""
from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Iterable

import numpy as np

from ..archive import ArchiveData
from . import DerivationInfo, derive_instance, new_series_uid, safe_filename
from ..io import atomic_dir, atomic_file
from ..io.atomic import _test_hook, errno_cause, exception_chain


def derivation_for(data: ArchiveData, *, method: str, model_id: str, model=None) -> DerivationInfo:
    """The series' derivation; ``model`` (a ``medsr.models.ModelRef``) also goes to Contributing Equipment."""
    info = data.info
    what = {"model": f"super-resolution model {model_id}", "bicubic": "bicubic interpolation",
            "nearest": "pixel replication"}.get(method, method)
    budget = _budget_text(data)
    floor = getattr(data, "floor", None)
    if budget and floor is not None and len(floor.kinds) and all(floor.kind(i) == "j2k" for i in range(len(floor.kinds))):
        desc = (f"medsr {info.medsr_version}: every slice stored as JPEG 2000 (lossy) of the original slice "
                f"(pixel ratio {info.pixel_ratio:.1f}:1 = original pixel bytes / stored pixel bytes){budget}. "
                "Lossy: not the original pixels.")
        return DerivationInfo(series_uid=new_series_uid(), description=desc, ratio=info.pixel_ratio,
                              method_term="ISO_15444_1", series_suffix=" [medsr JPEG 2000]")
    desc = (f"medsr {info.medsr_version}: stored at 1/{info.scale} resolution per axis by operator {info.operator} "
            f"(pixel ratio {info.pixel_ratio:.1f}:1 = original pixel bytes / stored pixel bytes){budget}, "
            f"{_base_text(info)}restored by {what}. Lossy: not the original pixels.")
    return DerivationInfo(series_uid=new_series_uid(), description=desc, ratio=info.pixel_ratio,
                          method_term=f"MEDSR_SR{info.scale}", series_suffix=f" [medsr x{info.scale} restore]",
                          model_name=model.name if model is not None else "",
                          model_sha256=model.sha256 if model is not None else "")


def _budget_text(data) -> str:
    """``--ratio`` archives: the budget and that the representation was chosen by measurement."""
    audit = data.info.audit
    b = audit.get("budget") if isinstance(audit, Mapping) else None
    if not b:
        return ""
    return (f"; representation {b.get('chosen')} chosen by measurement against the original for a byte budget of "
            f"1/{float(b.get('target_ratio', 0)):g} of the original pixel bytes")


def _base_text(info) -> str:
    """How the low-res base was stored, for the Derivation Description (empty for lossless)."""
    from ..codec.base import BASE_LOSSLESS, get_base

    return get_base(getattr(info, "base", BASE_LOSSLESS)).derivation(int(getattr(info, "base_near", 0)))


FLOOR_TEXT = {
    "j2k": "This slice is stored instead as JPEG 2000 (lossy) of the original slice, to meet the archive's "
           "per-slice quality floor.",
    "residual": "This slice is the restore plus a JPEG 2000-coded residual, to meet the archive's per-slice quality "
                "floor.",
    "lossless": "This slice is stored losslessly (its pixels equal the original's): no lossy representation met the "
                "archive's per-slice quality floor.",
}


RATIO_J2K_TEXT = ("This slice is stored instead as JPEG 2000 (lossy) of the original slice: at the archive's byte "
                  "budget it measured better than the super-resolution restore.")


def _slice_derivation(deriv: DerivationInfo, data: ArchiveData, i: int) -> DerivationInfo:
    """The series' derivation, plus how this slice was stored when the per-slice floor (or the ``--ratio`` choice)
    replaced the restore."""
    floor = getattr(data, "floor", None)
    if floor is None or floor.kind(i) == "sr" or deriv.method_term == "ISO_15444_1":
        return deriv
    from dataclasses import replace

    ratio = bool((getattr(data.info, "floor", None) or {}).get("floor_source") == "ratio")
    text = RATIO_J2K_TEXT if ratio and floor.kind(i) == "j2k" else FLOOR_TEXT[floor.kind(i)]
    return replace(deriv, description=f"{deriv.description} {text}")


def _cause_name(e: BaseException) -> str:
    """The type of the first exception behind pydicom's bare ``OSError`` wrappers (they say nothing
    themselves): e.g. ``error`` for a ``struct.error`` (a value out of its VR's range)."""
    return next((type(x).__name__ for x in exception_chain(e) if type(x) is not OSError), "OSError")


def write_dicom_series(output: Path, data: ArchiveData, batches: Iterable[tuple[int, np.ndarray]] | np.ndarray, *,
                       method: str, model_id: str, force: bool = False, workers: int = 2,
                       model=None) -> list[Path]:
    """One derived file per original instance, into a new folder (atomic: all or nothing).

    ``batches`` yields (start index, slices) as the engine produces them (or is a full
    stack); files are encoded and written by ``workers`` threads meanwhile.
    """
    from concurrent.futures import ThreadPoolExecutor

    if isinstance(batches, np.ndarray):
        batches = [(0, batches)]
    deriv = derivation_for(data, method=method, model_id=model_id, model=model)
    names: dict[int, str] = {}
    with atomic_dir(output, force=force) as tmp:
        def write_one(i: int, pixels: np.ndarray) -> None:
            import pydicom

            from ..errors import DicomError, MedsrError

            try:
                ds = derive_instance(data.header(i), pixels, _slice_derivation(deriv, data, i))
                name = f"{i + 1:04d}_{safe_filename(ds.SOPInstanceUID)}.dcm"
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    pydicom.dcmwrite(tmp / name, ds, enforce_file_format=True)
            except MedsrError:
                raise
            except OSError as e:  # a disk error (atomic_dir reports the errno behind pydicom's wrapper) ...
                if errno_cause(e) is None:  # ... or a value pydicom cannot encode, re-raised as a bare OSError
                    raise DicomError(f"slice {i}: the derived instance cannot be written ({_cause_name(e)}); "
                                     "nothing was written", path=output) from None
                raise
            except Exception as e:  # an archived header pydicom cannot write back: one line, no values quoted
                raise DicomError(f"slice {i}: the derived instance cannot be written ({type(e).__name__}); "
                                 "nothing was written", path=output) from None
            (tmp / name).chmod(0o600)
            names[i] = name
            _test_hook("dicom-file-written")  # crash tests: killed with part of the series written

        with ThreadPoolExecutor(max_workers=workers) as pool:
            # bounded: at most ~2 batches wait for the writers, so the whole volume is never held
            pending: deque = deque()
            for start, batch in batches:
                pending.extend(pool.submit(write_one, start + k, batch[k]) for k in range(len(batch)))
                while len(pending) > max(len(batch), 4 * workers):
                    pending.popleft().result()
            while pending:
                pending.popleft().result()
    return [Path(output) / names[i] for i in sorted(names)]


def dicom_affine(data: ArchiveData) -> np.ndarray:
    """RAS affine for a (cols=i, rows=j, slice=k) voxel grid from DICOM geometry (LPS)."""
    hdr = data.header(0)
    try:
        ori = np.asarray([float(v) for v in hdr.ImageOrientationPatient])
        dr, dc = (float(v) for v in hdr.PixelSpacing)
        pos = data.positions if data.positions is not None else None
    except (AttributeError, TypeError, ValueError):
        return np.eye(4)
    row_cos, col_cos = ori[:3], ori[3:]
    if pos is not None and len(pos) > 1:
        step = (pos[-1] - pos[0]) / (len(pos) - 1)
    else:
        step = np.cross(row_cos, col_cos) * float(hdr.get("SliceThickness", 1.0) or 1.0)
    origin = pos[0] if pos is not None else np.zeros(3)
    lps = np.eye(4)
    lps[:3, 0] = row_cos * dc  # i: along a row (column index)
    lps[:3, 1] = col_cos * dr  # j: down the column (row index)
    lps[:3, 2] = step
    lps[:3, 3] = origin
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def _nifti_header(data: ArchiveData):
    from ..archive.checks import nifti_header

    return nifti_header(data)


def write_nifti(output: Path, data: ArchiveData, restored: np.ndarray, *, force: bool = False) -> Path:
    """Write the restored volume as NIfTI (rescaled units only if slope/intercept are uniform)."""
    import nibabel as nib

    vol = np.transpose(restored, (2, 1, 0))  # (n, rows, cols) -> (i=cols, j=rows, k=slice)
    if data.info.kind == "nifti":
        hdr = _nifti_header(data) if data.nifti_header else None
        img = nib.Nifti1Image(vol, data.nifti_affine, header=hdr)
        if hdr is not None:
            img.header.set_data_dtype(vol.dtype)
    else:
        img = nib.Nifti1Image(vol, dicom_affine(data))
        slopes, inters = np.unique(data.slope), np.unique(data.intercept)
        if len(slopes) == 1 and len(inters) == 1:
            img.header.set_slope_inter(float(slopes[0]), float(inters[0]))
    out = Path(output)
    suffix = ".nii.gz" if out.name.endswith(".gz") else ".nii"
    if not (out.name.endswith(".nii") or out.name.endswith(".nii.gz")):
        out = out.with_name(out.name + ".nii.gz")
        suffix = ".nii.gz"
    with atomic_file(out, force=force) as tmp:
        target = tmp.with_name(tmp.name + suffix) if not tmp.name.endswith(suffix) else tmp
        try:
            nib.save(img, str(target))
            target.chmod(0o600)  # nibabel creates the file with the umask's mode: owner-only like every output
            if target != tmp:
                target.replace(tmp)
        finally:  # a failed save must not leave its partial file beside the temp
            if target != tmp and target.exists():
                target.unlink()
    return out
