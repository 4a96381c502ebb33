"""The description of one synthetic series and its scanner geometry.

Coordinates are DICOM patient coordinates (LPS, millimetres): +x towards the
patient's left, +y posterior, +z superior.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydicom.uid import UID, ExplicitVRLittleEndian

Orientation = Literal["axial", "sagittal", "coronal"]
Contrast = Literal["T1", "T2", "CT"]

#: (row direction, column direction) cosines per orientation, as real scanners
#: write them for a head-first-supine patient.
_ORIENTATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "axial": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "sagittal": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
    "coronal": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
}

#: Centre of the head phantom in patient coordinates (an off-centre table
#: position, so that ImagePositionPatient is not trivially symmetric).
HEAD_CENTRE_MM = np.array([1.5, -12.0, 31.0])

_DTYPE_BITS = {"uint16": 16, "int16": 16, "uint8": 8}


@dataclass(frozen=True)
class SeriesSpec:
    """Everything that decides the pixels and headers of one series.

    Stored pixel values are ``round(phantom * intensity_scale + stored_offset)``;
    ``slope``/``intercept`` (when not None) are written as RescaleSlope /
    RescaleIntercept, so the "real" value is ``stored * slope + intercept``.
    """

    rows: int = 64
    cols: int = 64
    slices: int = 12
    orientation: Orientation = "axial"
    dtype: Literal["uint16", "int16", "uint8"] = "uint16"
    bits_stored: int = 12
    slope: float | None = None
    intercept: float | None = None
    transfer_syntax: str = ExplicitVRLittleEndian
    modality: Literal["MR", "CT"] = "MR"
    contrast: Contrast = "T1"
    samples_per_pixel: Literal[1, 3] = 1
    seed: int = 0
    series_description: str = "T1 MPRAGE AX"
    series_number: int = 1
    fov_mm: float = 220.0
    slice_thickness_mm: float = 4.0
    slice_spacing_mm: float | None = None
    intensity_scale: float = 1000.0
    stored_offset: float = 0.0
    noise_sigma: float = 0.02
    study_key: str = "study-1"

    def __post_init__(self) -> None:
        if self.orientation not in _ORIENTATIONS:
            raise ValueError(f"unknown orientation {self.orientation!r}")
        if self.dtype not in _DTYPE_BITS:
            raise ValueError(f"unsupported dtype {self.dtype!r}")
        if not 1 <= self.bits_stored <= _DTYPE_BITS[self.dtype]:
            raise ValueError("bits_stored must fit in the dtype")
        if self.samples_per_pixel == 3 and self.dtype != "uint8":
            raise ValueError("RGB fixtures are 8-bit (dtype='uint8')")
        if (self.modality == "CT") != (self.contrast == "CT"):
            raise ValueError("modality CT goes with contrast CT and vice versa")
        if min(self.rows, self.cols, self.slices) < 1:
            raise ValueError("rows, cols and slices must be positive")

    # -- derived values -------------------------------------------------
    @property
    def signed(self) -> bool:
        return self.dtype == "int16"

    @property
    def bits_allocated(self) -> int:
        return _DTYPE_BITS[self.dtype]

    @property
    def transfer_syntax_uid(self) -> UID:
        return UID(self.transfer_syntax)

    @property
    def pixel_spacing_mm(self) -> tuple[float, float]:
        """(row spacing, column spacing), square pixels over fov_mm."""
        spacing = round(self.fov_mm / max(self.rows, self.cols), 6)
        return (spacing, spacing)

    @property
    def spacing_between_slices_mm(self) -> float:
        if self.slice_spacing_mm is None:
            return self.slice_thickness_mm
        return self.slice_spacing_mm

    def value_range(self) -> tuple[int, int]:
        """The representable stored range given bits_stored and signedness."""
        if self.signed:
            return -(1 << (self.bits_stored - 1)), (1 << (self.bits_stored - 1)) - 1
        return 0, (1 << self.bits_stored) - 1


def orientation_vectors(orientation: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row cosine, column cosine and slice normal (row x column)."""
    row, col = (np.array(v, dtype=float) for v in _ORIENTATIONS[orientation])
    return row, col, np.cross(row, col)


def image_orientation(spec: SeriesSpec) -> list[float]:
    row, col, _ = orientation_vectors(spec.orientation)
    return [float(v) for v in (*row, *col)]


def slice_positions(spec: SeriesSpec) -> np.ndarray:
    """ImagePositionPatient of each slice, shape (slices, 3), in spatial order.

    The slab is centred on the head, so the centre pixel of the middle slice
    sits at HEAD_CENTRE_MM; slice k is offset by k * spacing along the normal.
    """
    row, col, normal = orientation_vectors(spec.orientation)
    ps_row, ps_col = spec.pixel_spacing_mm
    corner = (
        HEAD_CENTRE_MM
        - row * ps_col * (spec.cols - 1) / 2.0
        - col * ps_row * (spec.rows - 1) / 2.0
    )
    offsets = (np.arange(spec.slices) - (spec.slices - 1) / 2.0) * spec.spacing_between_slices_mm
    return np.round(corner[None, :] + offsets[:, None] * normal[None, :], 4)


def voxel_coordinates(spec: SeriesSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patient x, y, z (mm) of every voxel, each shaped (slices, rows, cols)."""
    row, col, _ = orientation_vectors(spec.orientation)
    ps_row, ps_col = spec.pixel_spacing_mm
    ipp = slice_positions(spec)
    r = np.arange(spec.rows, dtype=np.float64) * ps_row
    c = np.arange(spec.cols, dtype=np.float64) * ps_col
    coords = []
    for axis in range(3):
        grid = (
            ipp[:, axis][:, None, None]
            + (r * col[axis])[None, :, None]
            + (c * row[axis])[None, None, :]
        )
        coords.append(grid.astype(np.float32))
    return coords[0], coords[1], coords[2]


def affine_lps(spec: SeriesSpec) -> np.ndarray:
    """4x4 voxel (col, row, slice) -> patient LPS affine."""
    row, col, normal = orientation_vectors(spec.orientation)
    ps_row, ps_col = spec.pixel_spacing_mm
    affine = np.eye(4)
    affine[:3, 0] = row * ps_col
    affine[:3, 1] = col * ps_row
    affine[:3, 2] = normal * spec.spacing_between_slices_mm
    affine[:3, 3] = slice_positions(spec)[0]
    return affine
