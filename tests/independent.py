"""References computed without medsr: the checks of tests that must not grade medsr with its own code.

Only numpy, pydicom and scikit-image; definitions from docs/audit.md (a third party's reading).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom


def block_means(stack: np.ndarray) -> np.ndarray:
    """Exact 4x4 block means over the whole blocks of each slice of an (n, h, w) stack."""
    n, h, w = stack.shape
    h4, w4 = h // 4 * 4, w // 4 * 4
    return stack[:, :h4, :w4].reshape(n, h4 // 4, 4, w4 // 4, 4).mean(axis=(2, 4))


def series_psnr(original: np.ndarray, test: np.ndarray, *, foreground: bool = False) -> float:
    """docs/audit.md: per-slice PSNR (data_range = series max - min, optionally over the series'
    foreground mask), mean over slices with >= 5% foreground."""
    o, t = np.asarray(original, float), np.asarray(test, float)
    lo, dr = o.min(), o.max() - o.min()
    mask = o > lo + 0.05 * (np.percentile(o, 99.5) - lo)
    values = []
    for oi, ti, mi in zip(o, t, mask):
        if mi.mean() < 0.05:
            continue
        err = (ti - oi)[mi] if foreground else ti - oi
        values.append(min(100.0, 10 * np.log10(dr ** 2 / max(np.mean(err ** 2), 1e-300))))
    return float(np.mean(values))


def rescaled(ds) -> np.ndarray:
    return ds.pixel_array.astype(float) * float(ds.get("RescaleSlope", 1) or 1) + float(ds.get("RescaleIntercept", 0) or 0)


def original_and_restored(source: Path, restored_files) -> tuple[np.ndarray, np.ndarray]:
    """(original, restored) stacks in rescaled units, paired by the restore's Source Image Sequence."""
    originals = {}
    for f in Path(source).rglob("*"):
        if f.is_file():
            try:
                ds = pydicom.dcmread(f)
            except Exception:  # noqa: BLE001 - notes and other non-DICOM files in a fixture folder
                continue
            if "PixelData" in ds:
                originals[str(ds.SOPInstanceUID)] = ds
    o, r = [], []
    for f in restored_files:
        ds = pydicom.dcmread(f)
        o.append(rescaled(originals[str(ds.SourceImageSequence[0].ReferencedSOPInstanceUID)]))
        r.append(rescaled(ds))
    return np.stack(o), np.stack(r)
