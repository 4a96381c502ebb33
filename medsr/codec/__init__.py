"""Pure, versioned operators shared by archiving and training.

Training imports these very functions to make its low-res inputs, so the network
always learns the degradation the archive really applies.
"""
from .operators import (
    OPERATORS,
    Operator,
    downsample,
    get_operator,
    pad_to_multiple,
    project_consistent,
    crop_to,
)
from .scaling import IntensityWindow, intensity_window, to_unit, from_unit, to_signed_unit, from_signed_unit

__all__ = [
    "OPERATORS", "Operator", "downsample", "get_operator", "pad_to_multiple", "project_consistent",
    "crop_to", "IntensityWindow", "intensity_window", "to_unit", "from_unit", "to_signed_unit",
    "from_signed_unit",
]
