"""MONAI-style transforms for training: the archive's degradation plus augmentations.

Each transform is an array class (parameters in ``__init__``, work in ``__call__``)
with a dictionary twin named ``...d``; random ones own a ``RandomState`` and draw in
``randomize()`` (reseeded per DataLoader worker by ``monai.data.DataLoader``).
Sample dictionaries carry ``hr`` (a 2D slice of stored integers), ``window``
((lo, hi) of the volume's low-res window) and ``fg_threshold`` (stored units).
"""
from .degrade import (MakeLowRes, MakeLowResd, RandBaseCode, RandBaseCoded, RandJ2KBaseCode, RandJ2KBaseCoded,
                      RandJ2KRatioCode, RandJ2KRatioCoded, RandQuantise, RandQuantised)
from .intensity import (RandContrastRemap, RandContrastRemapd, RandGamma, RandGammad, RandMRNoise, RandMRNoised, RandNetworkRange, RandNetworkRanged,
                        ToUnit, ToUnitd)
from .pipeline import (AugmentConfig, SliceSource, foreground_threshold, kept_slices, slice_items,
                       train_transforms, training_dataset, volume_window)
from .spatial import (RandAlignedCropd, RandContextCropd, RandFlipRot90, RandFlipRot90d, RandForegroundCrop,
                      RandForegroundCropd)

__all__ = [
    "MakeLowRes", "MakeLowResd", "RandBaseCode", "RandBaseCoded", "RandJ2KBaseCode", "RandJ2KBaseCoded", "RandQuantise", "RandQuantised", "RandGamma", "RandGammad", "RandMRNoise",
    "RandContrastRemap", "RandContrastRemapd",
    "RandMRNoised", "RandNetworkRange", "RandNetworkRanged", "ToUnit", "ToUnitd", "AugmentConfig", "SliceSource",
    "foreground_threshold", "kept_slices", "slice_items", "train_transforms", "training_dataset", "volume_window",
    "RandFlipRot90", "RandFlipRot90d", "RandForegroundCrop", "RandForegroundCropd",
    "RandJ2KRatioCode", "RandJ2KRatioCoded", "RandContextCropd", "RandAlignedCropd",
]
