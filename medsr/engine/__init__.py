"""Inference only: low-res stacks in, high-res stacks out. No DICOM, no files."""
from .restore import (METHODS, EngineConfig, arithmetic, cpu_bf16_units, cpu_has_fast_bf16, iter_restore, resolve_precision, restore_stack, restore_step,
                      device_for, select_device, to_stored)
from .interpolate import bicubic_upsample, nearest_upsample

__all__ = ["METHODS", "EngineConfig", "arithmetic", "cpu_bf16_units", "cpu_has_fast_bf16", "iter_restore", "resolve_precision", "restore_stack", "restore_step", "select_device", "device_for", "to_stored", "bicubic_upsample",
           "nearest_upsample"]
