"""Archives written by earlier medsr versions still read, verify and restore bit-identically.

``tests/data/v1-*.medsr.h5`` were written by medsr 0.1.0 (format_version 1, before the compact
container) from the ``basic`` fixture with ``--method bicubic`` (bit-exact on any CPU);
``v1-archives.json`` holds the sha256 of the pixels their restore gave then.
"""
import hashlib
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

import medsr
from medsr.api import restore_pixels
from medsr.archive import read_archive

DATA = Path(__file__).parent / "data"
EXPECTED = json.loads((DATA / "v1-archives.json").read_text())


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()).hexdigest()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_v1_archive_reads_verifies_and_restores_bit_identically(name, tmp_path):
    want = EXPECTED[name]
    arc = DATA / name
    info = medsr.open_archive(arc)
    assert info.format_version == want["format_version"] == 1
    assert medsr.verify_archive(arc).ok
    data = read_archive(arc)
    assert _sha(data.lowres) == want["lowres_sha256"]
    px, *_ = restore_pixels(data, medsr.RestoreOptions())
    assert list(px.shape) == want["shape"] and str(px.dtype) == want["dtype"]
    assert _sha(px) == want["restored_pixels_sha256"]
    rr = medsr.restore_archive(arc, tmp_path / "restored", medsr.RestoreOptions())  # and as DICOM files
    files = sorted(rr.files)
    assert len(files) == want["shape"][0]
    stack = np.stack([pydicom.dcmread(f).pixel_array for f in files])
    assert _sha(stack) == want["restored_pixels_sha256"]
