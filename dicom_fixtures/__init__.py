"""Synthetic, deterministic DICOM MR test series for medsr's test suite.

    from dicom_fixtures import CASES, SeriesSpec, build_all, build_series, stored_pixels

``build_all(out_dir)`` writes every named case into ``out_dir/<name>/`` and
returns ``{name: folder}``; ``stored_pixels(spec)`` gives the exact stored
pixel values (slices in spatial order) a series was written with.
CLI: ``python -m dicom_fixtures.build OUTDIR [--case NAME ...]``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .headers import (
    PATIENT_ID,
    PATIENT_NAME,
    PHI_MARKERS,
    PRIVATE_MARKER,
    instance_uid,
    series_uid,
    study_uid,
)
from .phantom import phantom_intensity, stored_pixels
from .spec import SeriesSpec, affine_lps, image_orientation, orientation_vectors, slice_positions

if TYPE_CHECKING:
    from .build import BASIC, CASES, Case, build_all, build_series, nifti_affine_ras

# Imported lazily so that ``python -m dicom_fixtures.build`` runs the module once.
_FROM_BUILD = {"BASIC", "CASES", "Case", "build_all", "build_series", "nifti_affine_ras"}


def __getattr__(name: str) -> Any:
    if name in _FROM_BUILD:
        return getattr(importlib.import_module(".build", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BASIC",
    "CASES",
    "Case",
    "PATIENT_ID",
    "PATIENT_NAME",
    "PHI_MARKERS",
    "PRIVATE_MARKER",
    "SeriesSpec",
    "affine_lps",
    "build_all",
    "build_series",
    "image_orientation",
    "instance_uid",
    "nifti_affine_ras",
    "orientation_vectors",
    "phantom_intensity",
    "series_uid",
    "slice_positions",
    "stored_pixels",
    "study_uid",
]
