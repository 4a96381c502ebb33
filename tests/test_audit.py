"""medsr.audit: metrics against independent computations, baselines, self-contained report."""
from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from skimage.metrics import normalized_root_mse, structural_similarity

from medsr.audit import (
    PSNR_CAP_DB, AuditResult, audit, bicubic_upsample, foreground_mask, foreground_threshold,
    jpeg2000_at_ratio, measure, select_slices, series_data_range, write_report,
)


def _phantom(n: int = 6, size: int = 64, *, peak: float = 3000.0, seed: int = 0) -> np.ndarray:
    """Smooth ellipses with texture on a zero background, uint16 12-bit."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    out = []
    for k in range(n):
        r = 0.25 + 0.15 * k / max(n - 1, 1)
        head = ((xx / r) ** 2 + (yy / (1.2 * r)) ** 2) < 1
        inner = ((xx - 0.05) / (0.4 * r)) ** 2 + (yy / (0.6 * r)) ** 2 < 1
        img = head * (0.6 + 0.1 * np.sin(40 * xx) * np.cos(30 * yy)) + inner * 0.35
        img = img * peak + head * rng.normal(0, 20, img.shape)
        out.append(img)
    return np.clip(np.rint(out), 0, 4095).astype(np.uint16)


def _hand_psnr(o: np.ndarray, t: np.ndarray, dr: float) -> float:
    return 10 * math.log10(dr * dr / np.mean((o.astype(float) - t.astype(float)) ** 2))


# ---- metrics ---------------------------------------------------------------------------------

def test_psnr_and_ssim_match_hand_formula_and_skimage() -> None:
    o = _phantom()
    t = o + np.random.default_rng(1).normal(0, 15, o.shape)
    dr = float(o.max()) - float(o.min())
    m = measure(o.astype(float), t, name="noisy")
    for i, s in enumerate(m.per_slice):
        assert s.psnr == pytest.approx(_hand_psnr(o[i], t[i], dr), abs=1e-9)
        assert s.ssim == pytest.approx(structural_similarity(o[i].astype(float), t[i], data_range=dr), abs=1e-12)
        assert s.nrmse == pytest.approx(normalized_root_mse(o[i].astype(float), t[i]), rel=1e-9)  # series_min = 0
    assert m.psnr == pytest.approx(np.mean([s.psnr for s in m.per_slice]))


def test_identical_is_capped_not_inf_and_json_safe() -> None:
    o = _phantom(3).astype(float)
    m = measure(o, o.copy(), name="same")
    assert (m.psnr, m.psnr_fg) == (PSNR_CAP_DB, PSNR_CAP_DB)
    assert m.ssim == pytest.approx(1.0) and m.ssim_fg == pytest.approx(1.0)
    assert m.nrmse == 0.0 and m.hfen == 0.0
    json.dumps(m.to_dict(), allow_nan=False)


def test_data_range_is_the_series_range_not_the_dtype_range() -> None:
    o = _phantom()
    t = np.clip(o.astype(np.int32) + np.random.default_rng(2).integers(-30, 31, o.shape), 0, 4095).astype(np.uint16)
    as_int = measure(o, t, name="u16")
    as_float = measure(o.astype(np.float64), t.astype(np.float64), name="f64")
    assert series_data_range(o) == float(o.max())  # min is 0
    assert as_int.psnr == pytest.approx(as_float.psnr, abs=1e-12)
    assert as_int.ssim == pytest.approx(as_float.ssim, abs=1e-12)
    wrong = measure(o, t, data_range=65535.0, name="dtype-range")
    assert wrong.psnr - as_int.psnr == pytest.approx(20 * math.log10(65535.0 / o.max()), abs=1e-9)
    assert abs(wrong.psnr - as_int.psnr) > 20


def test_foreground_mask_excludes_background() -> None:
    o = _phantom(4).astype(float)
    mask = foreground_mask(o)
    thr = foreground_threshold(o)
    assert thr == pytest.approx(0.05 * np.percentile(o, 99.5))
    assert not mask[o == 0].any() and mask.any()
    t = o.copy()
    t[~mask] += 50.0  # error only in the background
    m = measure(o, t, name="bg-error")
    assert m.psnr_fg == PSNR_CAP_DB and m.psnr < 60
    assert m.ssim_fg > m.ssim


def test_offset_data_measure_like_unshifted() -> None:
    o = _phantom(4).astype(float)
    t = o + np.random.default_rng(3).normal(0, 10, o.shape)
    a, b = measure(o, t, name="a"), measure(o - 1024.0, t - 1024.0, name="b")
    assert (foreground_mask(o) == foreground_mask(o - 1024.0)).all()
    for k in ("psnr", "psnr_fg", "ssim", "ssim_fg", "nrmse", "hfen"):
        assert getattr(a, k) == pytest.approx(getattr(b, k), rel=1e-6)


def test_excluded_slices_listed_and_not_averaged() -> None:
    size = 64
    yy, xx = np.mgrid[:size, :size]
    big = ((yy - 32) ** 2 + (xx - 32) ** 2 < 20 ** 2) * 1000.0
    tiny = ((yy - 32) ** 2 + (xx - 32) ** 2 < 4 ** 2) * 1000.0  # ~1.2% of the slice
    o = np.stack([np.zeros((size, size)), tiny, big])
    t = o + np.random.default_rng(4).normal(0, 5, o.shape)
    m = measure(o, t, name="x")
    assert m.excluded == (0, 1) and m.included == (2,)
    assert m.psnr == pytest.approx(m.per_slice[2].psnr)
    assert math.isnan(m.per_slice[0].psnr_fg)  # empty mask: undefined, not averaged


def test_ssim_fg_equals_ssim_when_everything_is_foreground() -> None:
    rng = np.random.default_rng(5)
    o = 1000 + 100 * rng.random((2, 48, 48))
    o[:, 0, 0] = 0.0  # series minimum in the border the SSIM mean leaves out anyway
    t = o + rng.normal(0, 10, o.shape)
    m = measure(o, t, name="full")
    assert all(s.fg_fraction == 1 - 1 / 48**2 for s in m.per_slice)
    assert m.ssim_fg == pytest.approx(m.ssim, abs=1e-12)


def test_hfen_is_relative_log_error() -> None:
    from scipy.ndimage import gaussian_laplace

    o = _phantom(2).astype(float)
    e = np.random.default_rng(6).normal(0, 10, o.shape)
    h1, h2 = measure(o, o + e, name="1").per_slice[0].hfen, measure(o, o + 2 * e, name="2").per_slice[0].hfen
    assert h2 == pytest.approx(2 * h1, rel=1e-9)
    log = lambda x: gaussian_laplace(x, 1.5, mode="reflect", truncate=7 / 1.5)  # noqa: E731
    assert h1 == pytest.approx(np.linalg.norm(log(e[0])) / np.linalg.norm(log(o[0])), rel=1e-9)


def test_audit_result_json_round_trip() -> None:
    o = np.concatenate([np.zeros((1, 64, 64)), _phantom(3).astype(float)])
    t = o + np.random.default_rng(7).normal(0, 8, o.shape)
    a = audit(o, {"restored": t, "bicubic": t + 3}, ratios={"pixel": 16.0}, provenance={"operator": "area4-v1"})
    text = json.dumps(a.to_dict(), allow_nan=False)
    b = AuditResult.from_dict(json.loads(text))
    assert b.to_dict() == a.to_dict()
    assert b.methods["restored"].excluded == (0,) and math.isnan(b.methods["restored"].per_slice[0].psnr_fg)
    assert b.provenance["metrics_id"] == "medsr-metrics-v1"


# ---- baselines -------------------------------------------------------------------------------

def _keys_weights(t: float, a: float = -0.75) -> np.ndarray:
    def k(x: float) -> float:
        x = abs(x)
        if x <= 1:
            return (a + 2) * x ** 3 - (a + 3) * x ** 2 + 1
        return a * x ** 3 - 5 * a * x ** 2 + 8 * a * x - 4 * a if x < 2 else 0.0
    return np.array([k(t + 1), k(t), k(1 - t), k(2 - t)])


def _keys_upsample_1d(row: np.ndarray, s: int) -> np.ndarray:
    n = row.size
    out = np.empty(n * s)
    for X in range(n * s):
        src = (X + 0.5) / s - 0.5
        i0 = math.floor(src)
        idx = np.clip(np.arange(i0 - 1, i0 + 3), 0, n - 1)
        out[X] = _keys_weights(src - i0) @ row[idx]
    return out


def test_bicubic_is_keys_cubic_convolution_pixel_centred() -> None:
    lr = np.random.default_rng(8).random((1, 6, 5)) * 1000
    up = bicubic_upsample(lr, (24, 20))
    rows = np.stack([_keys_upsample_1d(r, 4) for r in lr[0]])
    ref = np.stack([_keys_upsample_1d(c, 4) for c in rows.T]).T
    assert up.dtype == np.float64 and up.shape == (1, 24, 20)
    np.testing.assert_allclose(up[0], ref, atol=1e-9)


def test_bicubic_constant_and_ramp() -> None:
    const = np.full((2, 8, 8), 123.25)
    np.testing.assert_allclose(bicubic_upsample(const, (32, 32)), 123.25, atol=1e-12)
    ramp = np.tile(np.arange(16, dtype=float) * 10.0, (1, 16, 1))
    up = bicubic_upsample(ramp, (64, 64))[0]
    ideal = (np.arange(64) - 1.5) / 4 * 10.0  # LR pixel i sits at HR 4i + 1.5
    interior = slice(8, 56)
    assert np.max(np.abs(up[:, interior] - ideal[interior])) < 0.05 * 10.0
    assert bicubic_upsample(ramp, (62, 61)).shape == (1, 62, 61)  # cropped after padding
    with pytest.raises(ValueError):
        bicubic_upsample(ramp, (64, 40))


@pytest.mark.parametrize("signed", [False, True])
def test_jpeg2000_hits_target_ratio(signed: bool) -> None:
    o = _phantom(6, 128)
    stored = (o.astype(np.int32) - 2048).astype(np.int16) if signed else o
    target = 20.0
    dec, nbytes = jpeg2000_at_ratio(stored, 12, target)
    assert dec.shape == stored.shape and dec.dtype == stored.dtype
    assert abs(stored.nbytes / nbytes / target - 1) < 0.05
    assert measure(stored.astype(float), dec.astype(float), name="j2k").psnr > 30


def test_jpeg2000_rejects_values_beyond_bits_stored() -> None:
    with pytest.raises(ValueError, match="Bits Stored"):
        jpeg2000_at_ratio(np.full((1, 16, 16), 5000, np.uint16), 12, 10.0)


# ---- report ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[AuditResult, dict[str, np.ndarray], Path, Path]:
    """A 6-slice 12-bit phantom (slice 0 blank) audited and reported with only the three chosen slices."""
    from medsr.codec import downsample

    o = np.concatenate([np.zeros((1, 64, 64), np.uint16), _phantom(5)])
    lr = downsample(o, "area4-v1")
    bic = bicubic_upsample(lr, o.shape[1:])
    rest = bic + 0.3 * (o - bic)
    j2k, nb = jpeg2000_at_ratio(o, 12, o.nbytes / lr.nbytes)
    stacks = {"original": o.astype(float), "bicubic": bic, "restored": rest, "jpeg2000": j2k.astype(float)}
    a = audit(o, {k: v for k, v in stacks.items() if k != "original"},
              ratios={"file": 14.0, "pixel": o.nbytes / lr.nbytes, "jpeg2000_pixel": o.nbytes / nb},
              provenance={"medsr_version": "0.1.0", "operator": "area4-v1", "model_id": "test@000",
                          "model_kind": "perceptual", "series_instance_uid": "1.2.3", "PatientName": "DOE^JANE"})
    sel = select_slices(a)
    only_three = {k: {i: v[i] for i in sel.values()} for k, v in stacks.items()}
    out = tmp_path_factory.mktemp("report")
    jp, hp = write_report(a, only_three, out)
    return a, stacks, jp, hp


def test_report_is_one_self_contained_file(report: tuple[AuditResult, dict[str, np.ndarray], Path, Path]) -> None:
    a, _, jp, hp = report
    assert sorted(p.name for p in hp.parent.iterdir()) == ["report.html", "report.json"]  # no temp files left
    page = hp.read_text(encoding="utf-8")
    assert "data:image/png;base64," in page
    refs = re.findall(r"""(?:src|href)\s*=\s*['"]?([^'"\s>]*)""", page, flags=re.I)
    assert len(refs) == 4 and all(r.startswith("data:image/png;base64,") for r in refs)  # plot + 3 panels
    assert not re.search(r"https?://", page)
    assert not re.search(r"<script|<link|@import|url\(", page, flags=re.I)
    assert page.count("class='summary'") == 1 and page.count("class='panel'") == 3
    assert "PERCEPTUAL (GAN)" in page and "JPEG 2000" in page
    assert "DOE" not in page and "DOE" not in jp.read_text()
    data = json.loads(jp.read_text())
    assert AuditResult.from_dict(data).methods.keys() == a.methods.keys()
    assert select_slices(a)["worst"] != select_slices(a)["best"]


def test_report_phi_only_on_request(report: tuple[AuditResult, dict[str, np.ndarray], Path, Path], tmp_path: Path) -> None:
    a, stacks, _, _ = report
    jp, hp = write_report(a, stacks, tmp_path / "phi", phi={"PatientName": "DOE^JANE"})  # full stacks work too
    assert "DOE^JANE" in hp.read_text() and json.loads(jp.read_text())["phi"]["PatientName"] == "DOE^JANE"


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(report: tuple[AuditResult, dict[str, np.ndarray], Path, Path],
                                             tmp_path: Path) -> None:
    from matplotlib.image import imread

    hp = report[3]
    shot = tmp_path / "shot.png"
    cmd = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,2000",
           hp.resolve().as_uri()]
    subprocess.run(cmd, check=True, capture_output=True, timeout=90)
    img = imread(shot)
    assert img.shape[0] >= 1000 and float(img[..., :3].std()) > 0.05
