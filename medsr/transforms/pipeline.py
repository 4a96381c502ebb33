"""The training pipeline: 2D slices of integer volumes -> (LR, HR) pairs for the network.

Order per sample (all numpy, in DataLoader workers):

1. ``RandForegroundCropd``: 96x96 HR crop on the 4-pixel block grid, biased to foreground;
2. ``RandFlipRot90d``: one of the 8 flips/rotations;
3. ``ToUnitd`` -> ``RandGammad`` -> (``RandContrastRemapd``, off by default) -> ``RandMRNoised``:
   contrast and noise in unit space;
4. ``RandQuantised``: back to stored integers (random amplitude);
5. ``MakeLowResd``: ``medsr.codec.downsample`` itself, exactly as the archive;
   (lossy-base tier only) ``RandBaseCoded``: the archive's JPEG-LS base, coded and decoded;
   (JPEG 2000-base tier only) ``RandJ2KBaseCoded``: the ``lossy-j2k`` base's encoder and decoder;
   (slice-level JPEG 2000 base, ``base_j2k_ratio``) step 1 is ``RandContextCropd`` (a slice-sized region),
   ``RandJ2KRatioCoded`` codes its low-res at an archive ratio, then ``RandAlignedCropd`` takes the crop;
   (both bases, ``base_near_fraction`` and ``base_j2k_ratio``) a ``OneOf`` draws one of the two per sample
   (JPEG 2000 with probability ``j2k_share``) on the slice-sized region, the two bases ``--ratio`` chooses from;
6. ``RandNetworkRanged``: LR -> [0, 1], HR -> [-1, 1] with the jittered volume window.

The window comes from ``intensity_window`` of the *whole low-res volume*, computed by
``volume_window`` the way the archive computes it from its low-res stack.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
from monai.data import Dataset
from monai.transforms import Compose, OneOf, SelectItemsd

from medsr.codec import IntensityWindow, downsample, get_operator, intensity_window, pad_to_multiple

from .degrade import MakeLowResd, RandBaseCoded, RandJ2KBaseCoded, RandJ2KRatioCoded, RandQuantised
from .intensity import RandContrastRemapd, RandGammad, RandMRNoised, RandNetworkRanged, ToUnitd
from .spatial import RandAlignedCropd, RandContextCropd, RandFlipRot90d, RandForegroundCropd

FG_FRACTION_OF_P995 = 0.05  # foreground = value > 5% of the volume's 99.5th percentile


@dataclass(frozen=True)
class AugmentConfig:
    crop_size: int = 96
    op_id: str = "area4-v1"
    fg_prob: float = 0.9
    gamma: tuple[float, float] = (0.6, 1.6)
    gamma_prob: float = 0.8
    remap_prob: float = 0.0  # random non-monotone contrast remap (RandContrastRemap); 0 = off (shipped weights)
    noise_sigmas: tuple[float, ...] = (0.005, 0.01, 0.02, 0.03)
    noise_prob: float = 0.3
    rician_prob: float = 0.5
    amplitude: tuple[float, float] = (0.5, 2.0)
    window_jitter: float = 0.15
    # lossy-base tier: code the low-res with the archive's JPEG-LS base, NEAR a fraction of the window
    base_near_fraction: tuple[float, float] | None = None
    base_prob: float = 1.0
    # JPEG 2000-base tier: code the low-res with the lossy-j2k base's encoder, PSNR target (dB) drawn from [lo, hi]
    base_j2k_psnr: tuple[float, float] | None = None
    # JPEG 2000-base tier, slice-level: code a slice-sized low-res region at an archive ratio N drawn from [lo, hi]
    # (RandContextCropd -> ... -> RandJ2KRatioCoded -> RandAlignedCropd), so the artefacts are a whole slice's
    base_j2k_ratio: tuple[float, float] | None = None
    j2k_context: int = 256  # high-res side of that region (at most; the slice's own size where smaller)
    j2k_share: float = 0.5  # with both base_near_fraction and base_j2k_ratio: the share of samples on JPEG 2000

    def to_dict(self) -> dict:
        return asdict(self)


def foreground_threshold(volume: np.ndarray) -> float:
    """Stored-value threshold of the foreground mask: 5% of the volume's 99.5th percentile."""
    return FG_FRACTION_OF_P995 * float(np.percentile(volume, 99.5))


def volume_window(stack: np.ndarray, op_id: str = "area4-v1") -> IntensityWindow:
    """The archive's window for a stack (n, H, W) of stored slices: from its low-res stack."""
    scale = get_operator(op_id).scale
    padded, _ = pad_to_multiple(stack, scale)
    return intensity_window(downsample(padded, op_id))


def kept_slices(slices: np.ndarray, threshold: float, min_fg: float = 0.05) -> np.ndarray:
    """Indices of slices (axis 0) whose foreground fraction is at least ``min_fg``."""
    frac = (slices > threshold).reshape(slices.shape[0], -1).mean(axis=1)
    return np.flatnonzero(frac >= min_fg)


@dataclass
class SliceSource:
    """One integer volume (n, H, W) in its acquisition order and which slices to use."""

    name: str
    volume: np.ndarray
    axes: tuple[int, ...] = (0,)
    keep: dict[int, np.ndarray] = field(default_factory=dict)  # axis -> slice indices; missing = compute


def slice_items(src: SliceSource, crop_size: int = 96, op_id: str = "area4-v1", min_fg: float = 0.05) -> list[dict]:
    """One item per usable 2D slice, in every listed orientation; slices smaller than the crop are skipped."""
    window = volume_window(src.volume, op_id)
    thr = foreground_threshold(src.volume)
    items: list[dict] = []
    for axis in src.axes:
        stack = np.ascontiguousarray(np.moveaxis(src.volume, axis, 0))
        if min(stack.shape[1:]) < crop_size:
            continue
        keep = src.keep.get(axis)
        if keep is None:
            keep = kept_slices(stack, thr, min_fg)
        for i in np.asarray(keep, dtype=int):
            items.append({"hr": stack[i], "window": (window.lo, window.hi), "fg_threshold": thr,
                          "source": src.name})
    return items


def train_transforms(cfg: AugmentConfig = AugmentConfig()) -> Compose:
    scale = get_operator(cfg.op_id).scale
    return Compose([
        (RandContextCropd("hr", cfg.j2k_context, scale, cfg.fg_prob) if cfg.base_j2k_ratio
         else RandForegroundCropd("hr", cfg.crop_size, scale, cfg.fg_prob)),
        RandFlipRot90d("hr"),
        ToUnitd("hr"),
        RandGammad("hr", cfg.gamma, cfg.gamma_prob),
        *([RandContrastRemapd("hr", cfg.remap_prob)] if cfg.remap_prob > 0 else []),
        RandMRNoised("hr", cfg.noise_sigmas, cfg.noise_prob, cfg.rician_prob),
        RandQuantised("hr", cfg.amplitude),
        MakeLowResd("hr", "lr", cfg.op_id),
        *_base_coders(cfg, scale),
        RandNetworkRanged("lr", "hr", jitter=cfg.window_jitter),
        SelectItemsd(("lr", "hr")),
    ])


def _base_coders(cfg: AugmentConfig, scale: int) -> list:
    """Step 5's base coder(s): none, one base, or (both ``base_near_fraction`` and ``base_j2k_ratio``) one of the
    two drawn per sample; a slice-level JPEG 2000 base is followed by the aligned crop of its region."""
    jpegls = RandBaseCoded("lr", cfg.base_near_fraction, cfg.base_prob) if cfg.base_near_fraction else None
    if cfg.base_j2k_psnr:
        return [*([jpegls] if jpegls else []), RandJ2KBaseCoded("lr", cfg.base_j2k_psnr, cfg.base_prob)]
    if not cfg.base_j2k_ratio:
        return [jpegls] if jpegls else []
    j2k = RandJ2KRatioCoded("lr", cfg.base_j2k_ratio, scale, cfg.base_prob)
    if jpegls:
        if not 0.0 < cfg.j2k_share < 1.0:
            raise ValueError(f"j2k_share must be in (0, 1) with both bases (got {cfg.j2k_share})")
        j2k = OneOf([jpegls, j2k], weights=[1.0 - cfg.j2k_share, cfg.j2k_share])
    return [j2k, RandAlignedCropd("hr", "lr", cfg.crop_size, scale)]


def training_dataset(items: list[dict], cfg: AugmentConfig = AugmentConfig(), min_length: int = 100_000) -> Dataset:
    """A MONAI ``Dataset`` cycling through ``items`` (repeated to ``min_length`` so epochs are rare)."""
    if not items:
        raise ValueError("no training slices")
    reps = max(1, math.ceil(min_length / len(items)))
    return Dataset(items * reps, transform=train_transforms(cfg))
