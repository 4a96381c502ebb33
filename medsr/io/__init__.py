"""Reading inputs (a DICOM folder or a NIfTI file) into a frozen Series, deciding which files are DICOM and what
they hold (classify.py), and atomic writes."""
from .atomic import atomic_dir, atomic_file, clean_stale_temps
from .series import Series, read_series

__all__ = ["Series", "read_series", "atomic_dir", "atomic_file", "clean_stale_temps"]
