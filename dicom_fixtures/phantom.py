"""A small analytic 3D head phantom, sampled on a series' voxel grid.

The head is an ellipsoid with skin, subcutaneous fat, a skull with marrow,
CSF, a folded grey-matter cortex, white matter with finger-like borders, deep
grey nuclei, lateral and third ventricles, an interhemispheric fissure, eyes,
a superior sagittal sinus and a few small bright vessels.  A smooth texture,
a coil-like bias field and Rician noise (Gaussian for CT) finish it.

Everything is a function of patient coordinates, so every orientation shows
consistent anatomy, and everything random is drawn from ``seed``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .spec import (
    HEAD_CENTRE_MM,
    SeriesSpec,
    affine_lps,
    orientation_vectors,
    slice_positions,
    voxel_coordinates,
)

#: Head ellipsoid semi-axes (x: left-right, y: anterior-posterior, z: S-I), mm.
HEAD_SEMI_AXES_MM = np.array([72.0, 92.0, 80.0])

#: Tissue values per contrast: T1 and T2 in relative MR units, CT in HU.
TISSUES: dict[str, dict[str, float]] = {
    "background": {"T1": 0.0, "T2": 0.0, "CT": -1000.0},
    "skin": {"T1": 0.55, "T2": 0.50, "CT": 40.0},
    "fat": {"T1": 1.15, "T2": 0.95, "CT": -90.0},
    "bone": {"T1": 0.06, "T2": 0.04, "CT": 1100.0},
    "marrow": {"T1": 0.80, "T2": 0.55, "CT": 500.0},
    "csf": {"T1": 0.18, "T2": 1.35, "CT": 6.0},
    "gm": {"T1": 0.62, "T2": 0.85, "CT": 40.0},
    "wm": {"T1": 0.92, "T2": 0.60, "CT": 28.0},
    "deep_gm": {"T1": 0.72, "T2": 0.75, "CT": 38.0},
    "vitreous": {"T1": 0.15, "T2": 1.30, "CT": 10.0},
    "vessel": {"T1": 1.45, "T2": 0.35, "CT": 55.0},
}

CT_NOISE_HU = 6.0


class _Canvas:
    """An image being painted, structure after structure, with soft edges.

    x, y, z are voxel coordinates relative to the head centre (mm).
    """

    def __init__(self, spec: SeriesSpec):
        coords = voxel_coordinates(spec)
        self.spec = spec
        self.x, self.y, self.z = (c - np.float32(HEAD_CENTRE_MM[i]) for i, c in enumerate(coords))
        self.contrast = spec.contrast
        self.edge_mm = 0.8 * spec.pixel_spacing_mm[0]
        self.image = np.full(self.x.shape, TISSUES["background"][spec.contrast], dtype=np.float32)

    def paint(self, tissue: str, inside: np.ndarray, where: tuple = ()) -> None:
        """Blend ``tissue`` in with weight ``inside`` (0..1) on ``image[where]``."""
        value = np.float32(TISSUES[tissue][self.contrast])
        target = self.image[where]
        target += inside.astype(np.float32) * (value - target)
        self.image[where] = target

    def ramp(self, signed_depth_mm: np.ndarray) -> np.ndarray:
        """0 outside, 1 inside, linear over one edge width (anti-aliasing)."""
        return np.clip(signed_depth_mm / self.edge_mm + 0.5, 0.0, 1.0)

    def box(self, lo, hi) -> tuple | None:
        """Index box of the head-relative patient box lo..hi (None: not imaged)."""
        margin = self.edge_mm
        return _index_box(
            self.spec,
            np.asarray(lo, float) - margin + HEAD_CENTRE_MM,
            np.asarray(hi, float) + margin + HEAD_CENTRE_MM,
        )

    def plane_wave(self, k: np.ndarray, phase: float) -> np.ndarray:
        """sin(k . p + phase) on the grid, using that k . p is separable in
        (slice, row, col): sin(a + b) = sin a cos b + cos a sin b."""
        row, col, normal = orientation_vectors(self.spec.orientation)
        ps_row, ps_col = self.spec.pixel_spacing_mm
        origin = slice_positions(self.spec) - HEAD_CENTRE_MM
        a = origin @ k + phase
        plane = (np.arange(self.spec.rows) * ps_row * (col @ k))[:, None] + (
            np.arange(self.spec.cols) * ps_col * (row @ k)
        )[None, :]
        sin_a, cos_a = np.sin(a).astype(np.float32), np.cos(a).astype(np.float32)
        sin_b, cos_b = np.sin(plane).astype(np.float32), np.cos(plane).astype(np.float32)
        return sin_a[:, None, None] * cos_b[None] + cos_a[:, None, None] * sin_b[None]


def _ellipsoid_radius(canvas: _Canvas, centre, semi, where: tuple = ()) -> np.ndarray:
    return np.sqrt(
        ((canvas.x[where] - centre[0]) / semi[0]) ** 2
        + ((canvas.y[where] - centre[1]) / semi[1]) ** 2
        + ((canvas.z[where] - centre[2]) / semi[2]) ** 2
    )


def _paint_ellipsoid(canvas: _Canvas, tissue: str, centre, semi) -> None:
    centre, semi = np.asarray(centre, float), np.asarray(semi, float)
    where = canvas.box(centre - semi, centre + semi)
    if where is None:
        return
    rr = _ellipsoid_radius(canvas, centre, semi, where)
    canvas.paint(tissue, canvas.ramp((1.0 - rr) * float(semi.min())), where)


def _smooth_field(canvas: _Canvas, rng: np.random.Generator, n: int, wavelengths) -> np.ndarray:
    """Sum of n random plane waves, roughly unit variance."""
    field = np.zeros_like(canvas.x)
    for _ in range(n):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        k = direction * (2 * np.pi / rng.uniform(*wavelengths))
        field += canvas.plane_wave(k, rng.uniform(0, 2 * np.pi))
    return field * np.float32(np.sqrt(2.0 / n))


#: Concentric head shells, outside in: (tissue, outer radius in head units).
_SHELLS = (
    ("skin", 1.0),
    ("fat", 0.985),
    ("bone", 0.955),
    ("marrow", 0.942),
    ("bone", 0.926),
    ("csf", 0.908),
)


def _paint_shells(canvas: _Canvas, r: np.ndarray, mm_per_r: float) -> None:
    """Paint the shells in 1D on a fine radius grid, then look the volume up
    (the same result as painting each shell in 3D, at a fraction of the cost)."""
    grid = np.linspace(0.0, 1.5, 3001)
    profile = np.full(grid.shape, TISSUES["background"][canvas.contrast])
    for tissue, radius in _SHELLS:
        weight = np.clip((radius - grid) * mm_per_r / canvas.edge_mm + 0.5, 0.0, 1.0)
        profile += weight * (TISSUES[tissue][canvas.contrast] - profile)
    canvas.image[...] = np.interp(r, grid, profile)


def _paint_layers(canvas: _Canvas, rng: np.random.Generator) -> np.ndarray:
    """Head shells, folded cortex and white matter; returns the brain weight."""
    r = _ellipsoid_radius(canvas, (0, 0, 0), HEAD_SEMI_AXES_MM)
    mm_per_r = float(HEAD_SEMI_AXES_MM.mean())
    _paint_shells(canvas, r, mm_per_r)
    folds = _smooth_field(canvas, rng, 10, (14.0, 28.0))
    brain = canvas.ramp((0.875 + 0.018 * folds - r) * mm_per_r)
    canvas.paint("gm", brain)
    canvas.paint("wm", canvas.ramp((0.775 + 0.07 * folds - r) * mm_per_r))
    return brain


def _paint_deep_structures(canvas: _Canvas) -> None:
    """Thalami and putamina (grey), lateral and third ventricles (CSF)."""
    for side in (-1, 1):
        _paint_ellipsoid(canvas, "deep_gm", (side * 11, 8, 4), (8, 13, 8))
        _paint_ellipsoid(canvas, "deep_gm", (side * 22, -6, 6), (5, 13, 9))
        _paint_ellipsoid(canvas, "csf", (side * 7, -2, 14), (5, 26, 8))
    _paint_ellipsoid(canvas, "csf", (0, 6, 2), (1.6, 12, 8))


def _paint_fissure(canvas: _Canvas, brain: np.ndarray) -> None:
    """Interhemispheric fissure: a thin CSF sheet at x = 0, except where the
    corpus callosum joins the hemispheres (above and around the ventricles)."""
    where = canvas.box((-1.0, -100.0, -100.0), (1.0, 100.0, 100.0))
    if where is None:
        return
    above_callosum = np.maximum(canvas.z[where] - 22.0, np.abs(canvas.y[where]) - 40.0)
    sheet = canvas.ramp(0.6 - np.abs(canvas.x[where])) * canvas.ramp(above_callosum)
    canvas.paint("csf", sheet * brain[where], where)


def _paint_eyes(canvas: _Canvas) -> None:
    for side in (-1, 1):
        centre = (side * 30.0, -80.0, -30.0)
        _paint_ellipsoid(canvas, "fat", centre, (16.0, 16.0, 16.0))
        _paint_ellipsoid(canvas, "vitreous", centre, (11.0, 11.0, 11.0))


def _vessel_paths(rng: np.random.Generator) -> list[tuple[np.ndarray, float]]:
    """Polylines (points relative to the head centre, mm) with radii."""
    angles = np.linspace(-0.15 * np.pi, 1.15 * np.pi, 17)
    sinus = np.stack([np.zeros_like(angles), -80.0 * np.cos(angles), 66.0 * np.sin(angles)], 1)
    paths = [(sinus, 2.6)]
    for _ in range(6):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        point = direction * HEAD_SEMI_AXES_MM * 0.8
        points = [point]
        heading = -direction
        for _ in range(4):
            heading = heading + rng.normal(scale=0.5, size=3)
            heading /= np.linalg.norm(heading)
            point = point + heading * rng.uniform(12.0, 22.0)
            points.append(point)
        paths.append((np.array(points), float(rng.uniform(0.9, 1.6))))
    return paths


def _index_box(spec: SeriesSpec, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, slice, slice] | None:
    """The (slice, row, col) index box covering the patient-space box lo..hi."""
    inverse = np.linalg.inv(affine_lps(spec))
    corners = np.array([[a, b, c, 1.0] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
    idx = (inverse @ corners.T)[:3]
    first = np.floor(idx.min(axis=1)).astype(int)
    last = np.ceil(idx.max(axis=1)).astype(int) + 1
    shape = (spec.cols, spec.rows, spec.slices)
    box = [slice(max(f, 0), min(l, n)) for f, l, n in zip(first, last, shape)]
    if any(b.start >= b.stop for b in box):
        return None
    col, row, sl = box
    return (sl, row, col)


def _paint_vessels(canvas: _Canvas, rng: np.random.Generator, brain: np.ndarray) -> None:
    for points, radius in _vessel_paths(rng):
        for a, b in zip(points[:-1], points[1:]):
            reach = radius + canvas.edge_mm
            box = canvas.box(np.minimum(a, b) - reach, np.maximum(a, b) + reach)
            if box is None:
                continue
            px, py, pz = canvas.x[box] - a[0], canvas.y[box] - a[1], canvas.z[box] - a[2]
            d = (b - a).astype(np.float32)
            t = np.clip((px * d[0] + py * d[1] + pz * d[2]) / np.float32(d @ d), 0.0, 1.0)
            dist = np.sqrt((px - t * d[0]) ** 2 + (py - t * d[1]) ** 2 + (pz - t * d[2]) ** 2)
            weight = canvas.ramp(radius - dist)
            if radius < 2.0:  # small vessels only inside the brain
                weight = weight * brain[box]
            canvas.paint("vessel", weight, box)


def _add_texture_bias_noise(canvas: _Canvas, spec: SeriesSpec, rng: np.random.Generator) -> np.ndarray:
    image = canvas.image
    noise_rng = np.random.default_rng([spec.seed, 1])
    if spec.contrast == "CT":
        noise = noise_rng.normal(scale=CT_NOISE_HU, size=image.shape).astype(np.float32)
        return image + noise * (image > -900)
    texture = 1.0 + 0.025 * _smooth_field(canvas, rng, 12, (5.0, 14.0))
    bias = 1.0 - 0.07 * canvas.y / HEAD_SEMI_AXES_MM[1] + 0.04 * canvas.z / HEAD_SEMI_AXES_MM[2]
    image = image * texture * bias.astype(np.float32)
    sigma = np.float32(spec.noise_sigma)
    real = image + sigma * noise_rng.standard_normal(image.shape, dtype=np.float32)
    imag = sigma * noise_rng.standard_normal(image.shape, dtype=np.float32)
    return np.sqrt(real * real + imag * imag)


def _canonical(spec: SeriesSpec) -> SeriesSpec:
    """The spec reduced to the fields that decide the phantom (a cache key)."""
    modality = "CT" if spec.contrast == "CT" else "MR"
    return SeriesSpec(
        rows=spec.rows, cols=spec.cols, slices=spec.slices, orientation=spec.orientation,
        fov_mm=spec.fov_mm, slice_thickness_mm=spec.slice_thickness_mm,
        slice_spacing_mm=spec.spacing_between_slices_mm, contrast=spec.contrast,
        modality=modality, seed=spec.seed, noise_sigma=spec.noise_sigma,
    )


@lru_cache(maxsize=16)
def _cached_phantom(spec: SeriesSpec) -> np.ndarray:
    rng = np.random.default_rng(spec.seed)
    canvas = _Canvas(spec)
    brain = _paint_layers(canvas, rng)
    _paint_deep_structures(canvas)
    _paint_fissure(canvas, brain)
    _paint_eyes(canvas)
    _paint_vessels(canvas, rng, brain)
    image = _add_texture_bias_noise(canvas, spec, rng)
    image.setflags(write=False)
    return image


def phantom_intensity(spec: SeriesSpec) -> np.ndarray:
    """Phantom values (relative MR units, or HU for CT), shape (slices, rows, cols).

    Slices are in spatial order (increasing along the slice normal).  The
    returned array is shared and read-only; copy it before modifying.
    """
    return _cached_phantom(_canonical(spec))


def stored_pixels(spec: SeriesSpec) -> np.ndarray:
    """The exact stored pixel values of the series, in spatial slice order.

    Shape (slices, rows, cols) with dtype spec.dtype, or (slices, rows, cols, 3)
    uint8 for RGB.
    """
    image = phantom_intensity(spec)
    if spec.samples_per_pixel == 3:
        return _colourise(image / 1.5)
    lo, hi = spec.value_range()
    values = np.rint(image * np.float32(spec.intensity_scale) + np.float32(spec.stored_offset))
    return np.clip(values, lo, hi).astype(spec.dtype)


def _colourise(grey: np.ndarray) -> np.ndarray:
    """A 'hot'-like colour map, as a viewer screenshot or fused map would have."""
    g = np.clip(grey, 0.0, 1.0)
    rgb = np.stack([np.clip(1.6 * g, 0, 1), np.clip(1.6 * g - 0.4, 0, 1), np.clip(2.5 * g - 1.5, 0, 1)], -1)
    return np.rint(rgb * 255).astype(np.uint8)
