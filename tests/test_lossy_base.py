"""`--base lossy`: JPEG-LS with NEAR = 3% of the window, labelled lossy, restored by the lossy-base tier."""
from __future__ import annotations

import numpy as np
import pydicom
import pytest

import medsr
from medsr.codec import IntensityWindow, downsample, intensity_window, project_consistent
from medsr.codec.base import (BASE_LOSSY, DEFAULT_NEAR, LOSSY_NEAR_FRACTION, BaseCodecError, check_base, lossy_near,
                              prepare_base)
from medsr.io import read_series
from medsr.models import DEFAULT_MODEL, REGISTRY, default_model_for
from medsr.transforms import RandBaseCode, RandJ2KBaseCode

from independent import block_means, original_and_restored, series_psnr


def _lowres(fixture_path, name="large_256"):
    return downsample(read_series(fixture_path(name)).pixels, "area4-v1")


def test_lossy_near_is_a_fraction_of_the_window_and_the_bound_holds(fixture_path):
    lr = _lowres(fixture_path)
    width = intensity_window(lr).width
    p = prepare_base(lr, BASE_LOSSY)
    assert p.meta.base == BASE_LOSSY
    # README / docs/base-codec.md: NEAR = 3% of the intensity window, at least 3
    assert p.meta.near == max(DEFAULT_NEAR + 1, lossy_near(width)) == max(3, round(0.03 * width))
    assert LOSSY_NEAR_FRACTION == 0.03
    assert np.abs(p.decoded.astype(int) - lr.astype(int)).max() <= p.meta.near
    assert "lossy" in p.meta.describe() and f"NEAR={p.meta.near}" in p.meta.describe()
    assert prepare_base(lr, BASE_LOSSY, 9).meta.near == 9  # an explicit NEAR wins
    coarser = prepare_base(lr, BASE_LOSSY, 2 * p.meta.near)
    assert coarser.coded_bytes < p.coded_bytes < prepare_base(lr, "near-lossless", DEFAULT_NEAR).coded_bytes
    with pytest.raises(BaseCodecError, match="NEAR"):
        check_base(BASE_LOSSY, 0)
    # wide 16-bit windows: NEAR stays within JPEG-LS's limit (found by a training run on 16x-scaled data)
    assert lossy_near(60_000) == 255 and check_base(BASE_LOSSY, None, 60_000) == (BASE_LOSSY, 255)
    t = RandBaseCode(near_fraction=(0.05, 0.05), prob=1.0)
    t.randomize()
    assert t.near_for(IntensityWindow(0.0, 60_000.0)) == 255


def test_training_codes_the_low_res_with_the_archive_base(fixture_path):
    """RandBaseCode is the archive's coder: same NEAR rule, same decoded values."""
    lr = _lowres(fixture_path)[:1]
    w = intensity_window(lr)
    t = RandBaseCode(near_fraction=(0.02, 0.02), prob=1.0)
    out = t(lr[0], w)
    k = lossy_near(w.width, 0.02)
    assert t.near_for(w) == k
    np.testing.assert_array_equal(out, prepare_base(lr, BASE_LOSSY, k).decoded[0])
    one = lr[0]
    assert RandBaseCode(prob=0.0)(one, w) is one  # prob 0: untouched


def test_training_codes_the_low_res_with_the_jpeg2000_base_coder(fixture_path):
    """RandJ2KBaseCode: the lossy-j2k base's encoder (OpenJPEG 9-7 on values shifted by their minimum) and decoder,
    its rate set by a PSNR target relative to the window's bit depth; the error follows the target."""
    from medsr.codec.j2k_pad import decode_j2k
    from medsr.codec.payload import j2k_encode

    lr = _lowres(fixture_path)[0]
    w = intensity_window(lr[None])
    peak = 2 ** max(int(lr.max() - lr.min()).bit_length(), int(w.hi - lr.min()).bit_length()) - 1
    errs = []
    for target in (26.0, 32.0, 38.0):
        t = RandJ2KBaseCode(psnr_db=(target, target), prob=1.0)
        out = t(lr, w)
        assert out.dtype == lr.dtype and out.shape == lr.shape
        shifted = (lr.astype(np.int64) - lr.min()).astype(np.uint16)
        bits = max(int(shifted.max()).bit_length(), int(w.hi - lr.min()).bit_length())
        want = np.clip(decode_j2k(j2k_encode(shifted, bits, psnr=target), lr.shape) + lr.min(), 0, 65535)
        np.testing.assert_array_equal(out, want)  # exactly the base's coder and decoder
        rmse = np.sqrt(np.mean((out.astype(float) - lr) ** 2))
        errs.append(rmse)
        assert abs(20 * np.log10(peak / rmse) - target) < 1.5, (target, rmse)
    assert errs[0] > errs[1] > errs[2]
    assert RandJ2KBaseCode(prob=0.0)(lr, w) is lr  # prob 0: untouched


def test_slice_level_training_codes_the_low_res_as_an_archive_ratio_does(fixture_path):
    """RandJ2KRatioCode: a slice's x2 low-res coded as the lossy-j2k base spends at ratio N (16 * 4 / N bits per
    low-res pixel); its error is close to that of the archive's own base coded to the same budget
    (``j2k_base_to_budget``), and grows with N."""
    from medsr.codec.rate import j2k_base_to_budget
    from medsr.transforms import RandJ2KRatioCode

    hr = read_series(fixture_path("large_256")).pixels
    lr = downsample(hr, "area2-v1")[len(hr) // 2]
    w = intensity_window(lr[None])
    errs = []
    for n in (60.0, 120.0, 200.0):
        out = RandJ2KRatioCode(ratios=(n, n), scale=2, prob=1.0)(lr, w)
        assert out.dtype == lr.dtype and out.shape == lr.shape
        rmse = np.sqrt(np.mean((out.astype(float) - lr) ** 2))
        base = j2k_base_to_budget(lr[None], hr[0].size * 2 / n)  # the archive's base at 1/n of one 16-bit slice
        rmse_base = np.sqrt(np.mean((base.base.decoded[0].astype(float) - lr) ** 2))
        assert 20 * abs(np.log10(rmse / rmse_base)) < 1.0, (n, rmse, rmse_base)  # within 1 dB of the archive's
        errs.append(rmse)
    assert errs[0] < errs[1] < errs[2]
    assert RandJ2KRatioCode(prob=0.0)(lr, w) is lr  # prob 0: untouched


def test_box_projection_keeps_block_means_within_the_bound():
    rng = np.random.default_rng(0)
    hr = rng.normal(100, 30, (2, 16, 16))
    lr = np.rint(rng.normal(100, 30, (2, 4, 4)))
    exact = project_consistent(hr, lr)
    np.testing.assert_allclose(block_means(exact), lr, atol=1e-9)  # block means computed here, not by medsr
    np.testing.assert_allclose(project_consistent(hr, lr, tolerance=0.0), exact)
    box = project_consistent(hr, lr, tolerance=5.0)
    means = block_means(box)
    assert np.all(np.abs(means - lr) <= 5.0 + 1e-9)
    inside = np.abs(block_means(hr) - lr) <= 5.0  # blocks already within the bound are untouched
    blocks_unchanged = np.all((box == hr).reshape(2, 4, 4, 4, 4).transpose(0, 1, 3, 2, 4).reshape(2, 4, 4, 16), -1)
    assert np.array_equal(blocks_unchanged, inside)
    assert np.abs(box - hr).sum() <= np.abs(exact - hr).sum()  # never moves further than the exact projection
    with pytest.raises(ValueError):
        project_consistent(hr, lr, tolerance=-1)


def test_lossy_archive_is_labelled_lossy_and_restores_as_its_audit_says(fixture_path, tmp_path):
    src = fixture_path("large_256")
    res = medsr.archive_series(src, tmp_path / "l.medsr.h5", medsr.ArchiveOptions(base=BASE_LOSSY, device="cpu"))
    near_res = medsr.archive_series(src, tmp_path / "n.medsr.h5",
                                    medsr.ArchiveOptions(method="bicubic", baselines=False, device="cpu"))
    s = res.summary()
    assert s["base"] == BASE_LOSSY and s["base_near"] >= 3
    assert res.info.pixel_ratio > 1.3 * near_res.info.pixel_ratio  # the point of a lossy base
    assert res.audit["provenance"]["base"] == BASE_LOSSY
    assert res.info.model_id.split("@")[0] == default_model_for(BASE_LOSSY)
    out = medsr.restore_archive(res.archive, tmp_path / "r", medsr.RestoreOptions(device="cpu"), reference=src)
    a = out.summary()["audit"]
    assert a["psnr_fg"] == pytest.approx(s["psnr_fg"], abs=0.05) and a["ssim"] == pytest.approx(s["ssim"], abs=1e-3)
    assert out.model_id == res.info.model_id and not out.warnings  # the tier recorded at archive time restores it
    ds = pydicom.dcmread(out.files[0], stop_before_pixels=True)
    assert "LOSSY low-res base" in str(ds.DerivationDescription)
    assert f"NEAR={s['base_near']}" in str(ds.DerivationDescription)
    assert ds.LossyImageCompression == "01"
    from medsr.api import report_for_archive

    _, html_path = report_for_archive(res.archive, tmp_path / "report")
    html = html_path.read_text()
    assert "LOSSY BASE, PREVIEW QUALITY" in html
    # projected onto the +-(NEAR + 0.5) box around the decoded base (then rounded and clipped to the stored range)
    from medsr.archive import read_archive

    data = read_archive(res.archive)
    restored = np.stack([pydicom.dcmread(p).pixel_array for p in out.files]).astype(float)
    back = block_means(restored)  # numpy, not medsr's operator
    within = np.abs(back - data.lowres.astype(float)) <= s["base_near"] + 1.5
    assert within.mean() > 0.99  # off only where rounding/clipping at the ends of the stored range moved a block
    # and against the original (not the stored base): within the bound plus the base's own error
    o, r = original_and_restored(src, out.files)
    assert np.mean(np.abs(block_means(r) - block_means(o)) <= 2 * s["base_near"] + 1.5) > 0.99
    assert series_psnr(o, r, foreground=True) == pytest.approx(a["psnr_fg"], abs=0.01)


def test_lossy_restores_project_onto_the_bound_box_not_onto_the_coding_noise():
    """Exact projection for exact and near-lossless bases; +-(NEAR + 0.5) for the lossy base."""
    from medsr.codec.base import consistency_tolerance

    assert consistency_tolerance("lossless", 0) == 0.0 and consistency_tolerance("near-lossless", 2) == 0.0
    assert consistency_tolerance(BASE_LOSSY, 12) == 12.5


def test_the_lossy_tier_is_the_default_model_only_for_a_lossy_base():
    assert default_model_for(None) == DEFAULT_MODEL and default_model_for("near-lossless") == DEFAULT_MODEL
    tiers = [m for m in REGISTRY.values() if m.base == BASE_LOSSY and m.operator == "area4-v1"]
    if tiers:
        assert default_model_for(BASE_LOSSY) == tiers[0].name and tiers[0].kind == "fidelity"
    else:
        assert default_model_for(BASE_LOSSY) == DEFAULT_MODEL
    # each scale has its own tier: an x2 (area2-v1) archive never gets an x4 model, and the other way round
    for op in ("area4-v1", "area2-v1"):
        name = default_model_for(BASE_LOSSY, op)
        assert name is None or REGISTRY[name].operator == op


def test_cli_base_lossy(fixture_path, tmp_path, capsys):
    from medsr import cli

    out = tmp_path / "c.medsr.h5"
    assert cli.main(["archive", str(fixture_path("basic")), "-o", str(out), "--method", "bicubic", "--no-j2k",
                     "--base", "lossy", "--json", "--quiet"]) == 0
    import json

    d = json.loads(capsys.readouterr().out)
    assert d["base"] == "lossy" and medsr.open_archive(out).base == "lossy"


@pytest.mark.parametrize("cmd", ["bench", "train", "eval"])
def test_passthrough_commands_teach_with_dash_h(cmd, capsys):
    """``medsr eval -h``; benchmarks and training are the repository's (``python -m pipelines.bench|train -h``)."""
    import importlib

    from medsr import cli

    main = cli.main if cmd == "eval" else lambda argv: importlib.import_module(f"pipelines.{argv[0]}").main(argv[1:])
    with pytest.raises(SystemExit) as e:
        main([cmd, "-h"])
    assert e.value.code == 0
    assert "usage" in capsys.readouterr().out
