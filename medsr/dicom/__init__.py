"""The one place derived DICOM is built: restored images as DERIVED, lossy, new-UID objects."""
from .derive import DerivationInfo, derive_instance, new_series_uid, safe_filename

__all__ = ["DerivationInfo", "derive_instance", "new_series_uid", "safe_filename"]
