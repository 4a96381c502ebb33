"""Archives written by earlier medsr restore bit-identically with today's code.

tests/data/previous-format/ holds four small archives made by medsr at f2cf953 (before the restructure of
issue 15; format version 1) from the ``basic`` fixture (bicubic; the default model with its self-ensemble; a
lossless base with a per-slice floor stored as JPEG 2000; the lossy base with its own model) and the sha256
of the pixels that code restored from them (``make.py`` there says how they were made). tests/data/format-v2/
holds the same four and a ``--ratio 80`` archive made by medsr at 1cae0a5 (format version 2, before the
operator and model attribute groups of format 3).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

import medsr
from medsr.archive import read_info

DATA = Path(__file__).parent / "data"
EXPECTED = {f"{folder}/{name}": want for folder in ("previous-format", "format-v2")
            for name, want in json.loads((DATA / folder / "expected.json").read_text())["archives"].items()}
VERSIONS = {"previous-format": 1, "format-v2": 2}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_an_archive_of_the_previous_format_restores_bit_identically(name, tmp_path):
    want = EXPECTED[name]
    arc = DATA / name
    assert read_info(arc).format_version == VERSIONS[name.split("/")[0]]
    assert medsr.verify_archive(arc).ok

    res = medsr.restore_archive(arc, tmp_path / "r", medsr.RestoreOptions(device="cpu"))
    dss = sorted((pydicom.dcmread(f) for f in (tmp_path / "r").glob("*.dcm")), key=lambda ds: int(ds.InstanceNumber))
    px = np.stack([ds.pixel_array for ds in dss])
    assert (list(px.shape), str(px.dtype)) == (want["shape"], want["dtype"])
    assert hashlib.sha256(px.tobytes()).hexdigest() == want["dicom_pixels_sha256"]
    # the same weights (sha256) and passes; their registry name may have moved on (the default of the day that
    # wrote "basic-model" now ships as medsr-srresnet-x4-v2), and the restore names what it found by sha256
    sha = want["model_id"].partition("@")[2]
    assert (res.method, res.model_id.partition("@")[2], res.ensemble) == (want["method"], sha, want["ensemble"])
    if sha:
        from medsr.models import REGISTRY

        assert res.model_id.partition("@")[0] == next(e.name for e in REGISTRY.values() if e.sha256.startswith(sha))

    medsr.restore_archive(arc, tmp_path / "r.nii.gz", medsr.RestoreOptions(device="cpu", format="nifti"))
    nii = np.ascontiguousarray(np.asarray(nib.load(tmp_path / "r.nii.gz").dataobj))
    assert (list(nii.shape), str(nii.dtype)) == (want["nifti_shape"], want["nifti_dtype"])
    assert hashlib.sha256(nii.tobytes()).hexdigest() == want["nifti_pixels_sha256"]
