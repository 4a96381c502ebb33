"""Audit: metrics with an explicit data_range and foreground mask, baselines, and reports.

Pure functions on numpy arrays; no DICOM file I/O. Definitions: docs/audit.md.
"""
from .baselines import BICUBIC_ID, JPEG2000_ID, J2KBaseline, bicubic_upsample, jpeg2000_at_ratio, jpeg2000_baseline
from .metrics import (
    METRICS_ID, PSNR_CAP_DB, AuditResult, MethodMetrics, SliceMetrics, audit, foreground_mask,
    foreground_threshold, measure, series_data_range,
)
from .record import Audit
from .report import BICUBIC, JPEG2000, ORIGINAL, RESTORED, select_slices, write_report

__all__ = [
    "BICUBIC_ID", "JPEG2000_ID", "bicubic_upsample", "jpeg2000_at_ratio", "jpeg2000_baseline", "J2KBaseline", "METRICS_ID", "PSNR_CAP_DB",
    "AuditResult", "MethodMetrics", "SliceMetrics", "audit", "foreground_mask", "foreground_threshold",
    "measure", "series_data_range", "BICUBIC", "JPEG2000", "ORIGINAL", "RESTORED", "select_slices",
    "write_report", "Audit",
]
