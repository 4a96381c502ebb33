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
from medsr.engine import cpu_bf16_units

DATA = Path(__file__).parent / "data"
EXPECTED = {f"{folder}/{name}": want for folder in ("previous-format", "format-v2")
            for name, want in json.loads((DATA / folder / "expected.json").read_text())["archives"].items()}
VERSIONS = {"previous-format": 1, "format-v2": 2}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_an_archive_of_the_previous_format_restores_bit_identically(name, tmp_path, fixture_path):
    want = EXPECTED[name]
    arc = DATA / name
    assert read_info(arc).format_version == VERSIONS[name.split("/")[0]]
    assert medsr.verify_archive(arc).ok

    res = medsr.restore_archive(arc, tmp_path / "r", medsr.RestoreOptions(device="cpu"))
    dss = sorted((pydicom.dcmread(f) for f in (tmp_path / "r").glob("*.dcm")), key=lambda ds: int(ds.InstanceNumber))
    px = np.stack([ds.pixel_array for ds in dss])
    assert (list(px.shape), str(px.dtype)) == (want["shape"], want["dtype"])
    same_kernels = want["method"] == "bicubic" or cpu_bf16_units() == RECORDED_BF16_UNITS[name.split("/")[0]]
    digest = hashlib.sha256(px.tobytes()).hexdigest()
    if same_kernels:
        assert digest == want["dicom_pixels_sha256"]
    elif digest != want["dicom_pixels_sha256"]:  # another CPU's network kernels: the audit's figures hold
        _assert_the_audit_figures_hold(arc, fixture_path, sorted((tmp_path / "r").glob("*.dcm")))
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
    if same_kernels:
        assert hashlib.sha256(nii.tobytes()).hexdigest() == want["nifti_pixels_sha256"]
    else:  # the NIfTI holds the same restore as the DICOM series
        assert np.array_equal(np.sort(nii.ravel()), np.sort(px.ravel()))


# The expected pixels were restored on a CPU whose network ran in bf16 on AMX units (the project's machine of
# those days; `medsr.engine.resolve_precision`: bf16 where the CPU has native bf16). Another CPU computes the
# network with other kernels (fp32 without native bf16, AVX512-BF16 on others) and rounds a few pixels
# differently; there the restore is checked against the figures the archive's own audit recorded.
RECORDED_BF16_UNITS = {"previous-format": "amx", "format-v2": "amx"}  # medsr.engine.cpu_bf16_units()


def _assert_the_audit_figures_hold(arc, fixture_path, restored_files):
    """The restore measured against the original series (the ``basic`` fixture the archive was made from) gives
    the audit's figures for what was stored: PSNR and foreground PSNR within 0.01 dB, SSIM within 0.0005
    (measured on an AVX512-BF16 CPU: 0.0007 dB and 0.0001 at most)."""
    from independent import original_and_restored
    from medsr.audit import measure

    audit = read_info(arc).audit
    original, restored = original_and_restored(fixture_path("basic"), restored_files)
    m = measure(original, restored, data_range=audit["data_range"], name="restored")
    stored = audit["methods"]["restored"]
    assert abs(m.psnr - stored["psnr"]) < 0.01 and abs(m.psnr_fg - stored["psnr_fg"]) < 0.01, (m, stored["psnr_fg"])
    assert abs(m.ssim - stored["ssim"]) < 0.0005
