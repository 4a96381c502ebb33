"""Inference only: low-res stacks in, high-res stacks out. No DICOM, no files."""
from .restore import METHODS, EngineConfig, restore_stack, select_device, to_stored
from .interpolate import bicubic_upsample, nearest_upsample

__all__ = ["METHODS", "EngineConfig", "restore_stack", "select_device", "to_stored", "bicubic_upsample",
           "nearest_upsample"]
