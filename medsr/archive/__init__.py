"""The archive file format: write, read, verify (HDF5, readable with h5py alone)."""
from .format import (ARCHIVE_SUFFIX, FORMAT, FORMAT_VERSION, ArchiveData, ArchiveInfo, VerifyResult, read_archive, read_info,
                     verify_archive, write_archive)

__all__ = ["ARCHIVE_SUFFIX", "FORMAT", "FORMAT_VERSION", "ArchiveData", "ArchiveInfo", "VerifyResult", "read_archive", "read_info",
           "verify_archive", "write_archive"]
