"""Slices under 32 pixels a side (OpenJPEG's smallest with its 6 wavelet levels): the JPEG 2000
baseline and the floor's JPEG 2000 representations code them padded, so an archive with every
default, or with a floor, is written and restores (found by the fuzzer's floor mode)."""
from __future__ import annotations

import numpy as np
import pytest

import medsr
from dicom_fixtures import SeriesSpec, build_series


@pytest.mark.parametrize("shape", [(16, 16), (18, 21), (31, 40)])
def test_small_slices_archive_with_the_j2k_baseline_and_a_floor(tmp_path, shape):
    build_series(tmp_path / "s", SeriesSpec(rows=shape[0], cols=shape[1], slices=3))
    res = medsr.archive_series(tmp_path / "s", tmp_path / "a.medsr.h5", medsr.ArchiveOptions(method="bicubic"))
    s = res.summary()
    # a real JPEG 2000 at the same bytes (at this size its headers and the padding eat most of the budget)
    assert np.isfinite(s["psnr_j2k"]) and s["psnr_j2k"] > 5 and "jpeg2000" in res.audit["methods"]
    floor = medsr.archive_series(tmp_path / "s", tmp_path / "f.medsr.h5",
                                 medsr.ArchiveOptions(method="bicubic", baselines=False, floor_psnr_fg=45.0,
                                                      floor_fallback="lossless"))
    assert floor.audit["floor"]["min_psnr_fg"] >= 45.0
    out = medsr.restore_archive(floor.archive, tmp_path / "r")
    assert len(out.files) == 3 and medsr.verify_archive(floor.archive).ok
