"""The batched audit metrics equal the slice-by-slice definitions (skimage's SSIM) to 1e-6 relative."""
import math

import numpy as np
import pytest
from skimage.metrics import structural_similarity

import medsr
from medsr.audit import metrics as M
from medsr.audit.fast_metrics import SeriesAccumulator, series_constants
from medsr.codec import downsample, pad_to_multiple
from medsr.engine.interpolate import bicubic_upsample

REL = 1e-6


def _close(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= REL * max(abs(a), abs(b), 1e-12)


def _variants(series) -> dict[str, np.ndarray]:
    """Test stacks like the audit's: bicubic of the x4 block mean, a noisy copy, a rounded copy, the original."""
    o = series.rescaled()
    padded, _ = pad_to_multiple(series.pixels, 4)
    lr = downsample(padded, "area4-v1")
    bic = bicubic_upsample(lr, out_shape=padded.shape[1:])[:, :o.shape[1], :o.shape[2]]
    bic = bic * series.slope[:, None, None] + series.intercept[:, None, None]
    rng = np.random.default_rng(1)
    return {"bicubic": bic, "noisy": o + rng.normal(0, 0.02 * (o.max() - o.min()), o.shape),
            "rounded": np.round(o / 7) * 7, "identical": o.copy()}


def _assert_matches_reference(o: np.ndarray, tests: dict[str, np.ndarray]) -> int:
    dr, thr, lo = series_constants(o)
    assert dr == M.series_data_range(o) and thr == M.foreground_threshold(o)
    result = M.audit(o, tests)
    mask = M.foreground_mask(o)
    checked = 0
    for name, t in tests.items():
        fast = result.methods[name]
        for i in range(o.shape[0]):
            ref = M.reference_slice_metrics(o[i].astype(float), t[i].astype(float), mask[i], i, dr, lo)
            got = fast.per_slice[i]
            for k in ("psnr", "psnr_fg", "ssim", "ssim_fg", "nrmse", "hfen", "fg_fraction"):
                assert _close(getattr(got, k), getattr(ref, k)), (name, i, k, getattr(got, k), getattr(ref, k))
            # and skimage itself, called as a third party would
            s = structural_similarity(o[i] - lo, t[i] - lo, data_range=dr)
            assert _close(got.ssim, float(s)), (name, i, got.ssim, s)
            checked += 1
        # series figures: means over the slices with >= 5% foreground
        assert fast.included == tuple(i for i in range(o.shape[0]) if fast.per_slice[i].fg_fraction >= M.MIN_FG_COVERAGE)
        incl = [fast.per_slice[i] for i in fast.included]
        if incl:
            assert _close(fast.psnr_fg, float(np.mean([s.psnr_fg for s in incl])))
    return checked


@pytest.mark.parametrize("case", ["basic", "odd_size", "signed", "rescale"])
def test_fast_metrics_equal_the_reference_on_fixtures(fixture_path, case):
    s = medsr.read_series(fixture_path(case))
    assert _assert_matches_reference(s.rescaled(), _variants(s)) == 4 * s.n_slices


def test_fast_metrics_equal_the_reference_on_real_slices(sag_anon):
    s = medsr.read_series(sag_anon)
    keep = [0, 40, 96, 150, 191]  # background-only edge slices and head slices
    o = s.rescaled()
    v = _variants(s)
    assert _assert_matches_reference(o[keep], {k: a[keep] for k, a in v.items()}) == 4 * len(keep)


def test_identical_stack_caps_psnr_and_scores_ssim_one(fixture_path):
    s = medsr.read_series(fixture_path("basic"))
    m = M.measure(s.rescaled(), s.rescaled(), name="same")
    assert m.psnr == m.psnr_fg == M.PSNR_CAP_DB and m.ssim == pytest.approx(1.0) and m.nrmse == 0.0


def test_batches_in_any_order_give_the_same_result(fixture_path):
    s = medsr.read_series(fixture_path("basic"))
    o, tests = s.rescaled(), _variants(s)
    dr, thr, lo = series_constants(o)
    whole = M.audit(o, tests).methods
    acc = SeriesAccumulator(tuple(tests), data_range=dr, fg_threshold=thr, series_min=lo)
    for start in (9, 0, 3):  # uneven batches, out of order
        stop = {9: 12, 0: 3, 3: 9}[start]
        acc.add(start, o[start:stop], {k: t[start:stop] for k, t in tests.items()})
    parts = acc.results()
    for k in tests:
        assert parts[k].to_dict() == whole[k].to_dict()


def test_constant_series_and_nan_are_refused(fixture_path):
    o = np.ones((2, 16, 16))
    with pytest.raises(ValueError, match="data_range"):
        M.measure(o, o, name="x")
    s = medsr.read_series(fixture_path("basic")).rescaled()
    bad = s.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        M.measure(s, bad, name="x")


@pytest.mark.parametrize("shape", [(2, 300, 97), (1, 129, 64), (1, 7, 9), (1, 8, 300)])
def test_strips_and_small_slices_equal_the_reference(shape):
    """SSIM is made in strips of ``STRIP_ROWS`` rows (a last strip of one row, slices of one strip, the
    smallest slice skimage accepts) and HFEN in the DCT domain: both still equal the definitions."""
    from medsr.audit.fast_metrics import STRIP_ROWS

    assert STRIP_ROWS < 300
    rng = np.random.default_rng(sum(shape))
    yy, xx = np.mgrid[:shape[1], :shape[2]]
    o = 1000.0 * np.exp(-((yy - shape[1] / 2) ** 2 + (xx - shape[2] / 2) ** 2) / (0.1 * shape[1] * shape[2]))
    o = np.repeat(o[None], shape[0], axis=0) + rng.normal(0, 20, shape)
    tests = {"noisy": o + rng.normal(0, 40, shape), "blurred": (o + np.roll(o, 1, axis=1) + np.roll(o, 1, axis=2)) / 3}
    assert _assert_matches_reference(o, tests) == 2 * shape[0]


def test_the_thread_knob(monkeypatch, caplog):
    """``MEDSR_AUDIT_THREADS`` sets the audit's threads; a value that is not an integer is a warning, not a failure."""
    from medsr.audit.fast_metrics import MAX_THREADS, threads

    monkeypatch.setenv("MEDSR_AUDIT_THREADS", "3")
    assert threads() == 3
    monkeypatch.setenv("MEDSR_AUDIT_THREADS", "0")
    assert threads() == 1
    monkeypatch.delenv("MEDSR_AUDIT_THREADS")
    default = threads()
    assert 1 <= default <= MAX_THREADS
    monkeypatch.setenv("MEDSR_AUDIT_THREADS", "two")
    with caplog.at_level("WARNING", logger="medsr"):
        assert threads() == default
    assert "not an integer" in caplog.text
