"""The archive-time audit is measured in slice batches: the same figures as on whole stacks, in memory that
does not grow with the series beyond its stored integers."""
import tracemalloc

import numpy as np
import pytest

from medsr.audit import audit as whole_stack_audit
from medsr.audit import jpeg2000_baseline
from medsr.audit.fast_metrics import series_constants
from medsr.audit.streamed import stack_constants
from medsr.codec import downsample, pad_to_multiple
from medsr.flow.audit import bicubic_restore, build_audit, rescale_stack
from medsr.io import read_series
from pipelines.memory_bench import make_series


def _inputs(series):
    padded, _ = pad_to_multiple(series.pixels, 4)
    lowres = downsample(padded, "area4-v1")
    rows, cols = series.shape
    bic = bicubic_restore(lowres, rows, cols, series.pixels.dtype, series.value_range)
    restored = np.clip(bic.astype(np.int64) + 3, *series.value_range).astype(series.pixels.dtype)  # not bicubic
    return lowres, restored


def _streamed(series, lowres, restored, with_j2k=True):
    return build_audit(series, lowres=lowres, restored=restored, scale=4, operator="area4-v1",
                       stored_pixel_bytes=max(1, lowres.nbytes // 3), method="bicubic", model_id="bicubic",
                       with_j2k=with_j2k, consistency=False, device="cpu")


@pytest.mark.parametrize("case", ["sag_anon", "rescale", "signed"])
def test_the_batched_audit_equals_the_whole_stack_audit(case, request, fixture_path):
    series = read_series(request.getfixturevalue("sag_anon") if case == "sag_anon" else fixture_path(case))
    lowres, restored = _inputs(series)
    got = _streamed(series, lowres, restored).to_dict()
    rows, cols = series.shape
    j = jpeg2000_baseline(series.pixels, series.bits_stored, series.original_pixel_bytes / max(1, lowres.nbytes // 3))
    s, i = series.slope, series.intercept
    want = whole_stack_audit(series.rescaled(), {
        "restored": rescale_stack(restored, s, i),
        "bicubic": rescale_stack(bicubic_restore(lowres, rows, cols, series.pixels.dtype, series.value_range), s, i),
        "jpeg2000": rescale_stack(j.decoded, s, i)}).to_dict()
    assert (got["data_range"], got["fg_threshold"]) == (want["data_range"], want["fg_threshold"])
    assert got["methods"] == want["methods"]  # every per-slice figure, exactly


def test_a_jpeg2000_first_try_off_its_target_is_searched_on_and_measured_as_kept(sag_anon):
    """The audit codes the JPEG 2000 baseline's first ratio batch by batch and measures it with the other methods;
    when those bytes miss the target by more than the tolerance (here: half the slices are empty and code to
    almost nothing at any ratio), the search goes on and the audit measures what it kept, as a whole-stack
    baseline would."""
    from dataclasses import replace

    series = read_series(sag_anon)
    pixels = series.pixels.copy()
    pixels[::2] = 0
    series = replace(series, pixels=pixels)
    lowres, restored = _inputs(series)
    got = _streamed(series, lowres, restored).to_dict()
    j = jpeg2000_baseline(series.pixels, series.bits_stored, series.original_pixel_bytes / max(1, lowres.nbytes // 3))
    assert j.slice_encodes > series.n_slices  # the first try was not kept
    assert got["provenance"]["jpeg2000_slice_encodes"] == j.slice_encodes
    assert got["provenance"]["jpeg2000_bytes"] == j.nbytes
    s, i = series.slope, series.intercept
    want = whole_stack_audit(series.rescaled(), {"jpeg2000": rescale_stack(j.decoded, s, i)}).to_dict()
    assert got["methods"]["jpeg2000"] == want["methods"]["jpeg2000"]


def test_series_constants_come_from_the_integers_exactly():
    rng = np.random.RandomState(7)
    for _ in range(100):
        n = rng.randint(1, 6)
        a = rng.randint(0, rng.choice([3, 300, 4096, 65535]), size=(n, rng.randint(2, 30), rng.randint(2, 30)))
        a = a.astype(np.uint16)
        slope, icpt = np.full(n, rng.choice([1.0, 0.37, 2.5])), np.full(n, rng.choice([0.0, -1024.0, 7.25]))
        assert stack_constants(a, slope, icpt) == series_constants(rescale_stack(a, slope, icpt))
    per_slice = np.arange(1.0, 4.0)  # a per-slice rescale: the float copy, the same definition
    a = rng.randint(0, 900, size=(3, 8, 8)).astype(np.int16)
    assert stack_constants(a, per_slice, -per_slice) == series_constants(rescale_stack(a, per_slice, -per_slice))


def test_audit_memory_does_not_grow_with_the_series(monkeypatch):
    """Beyond its inputs, the audit of 64 slices of 256^2 allocates about what 16 slices do (a batch of float
    copies and the JPEG 2000 codestreams), where whole-stack figures needed several float64 copies of the series.
    On one thread that is exact; on two, the methods' batches are made at the same time and slices measured two
    at a time, so the peak moves with the threads' timing, by a few float64 batches at most, never with n."""
    def peak(n):
        series = make_series(n, 256)
        lowres, restored = _inputs(series)
        tracemalloc.start()
        _streamed(series, lowres, restored)
        top = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return top, series.pixels.nbytes

    monkeypatch.setenv("MEDSR_AUDIT_THREADS", "1")
    small, _ = peak(16)
    large, volume = peak(64)
    assert large < small + 0.5 * volume, (small, large, volume)  # not several float64 copies (4x volume each)
    monkeypatch.setenv("MEDSR_AUDIT_THREADS", "2")
    batch = 16 * 256 * 256 * 8  # two float64 batches of slices (AUDIT_BATCH is 8)
    for n in (16, 128):
        threaded, volume = peak(n)
        assert threaded < small + 3 * batch, (n, small, threaded)  # one float64 copy of 128 slices is 2.7x this margin


def test_an_archive_without_a_floor_audits_restored_batches_it_never_keeps(fixture_path, tmp_path):
    """The model restore an archive measures is made chunk by chunk (chunks a multiple of the engine's batch): its
    audit equals the audit of the whole restored stack, which is what ``medsr restore`` writes."""
    import medsr
    from medsr.codec import intensity_window
    from medsr.codec.base import prepare_base
    from medsr.flow.restoring import LazyRestore, archive_engine, resolve_model, restore_pixels_stored

    series = make_series(20, 384)  # 96x96 low-res: an engine batch of 3 slices, chunks of 9
    padded, _ = pad_to_multiple(series.pixels, 4)
    base = prepare_base(downsample(padded, "area4-v1"))
    method, loaded = resolve_model("auto", None, base.meta.base, None, device="cpu")
    rows, cols = series.shape
    how = dict(window=intensity_window(base.decoded), scale=4, operator="area4-v1", rows=rows, cols=cols,
               dtype=series.pixels.dtype, value_range=series.value_range,
               engine=archive_engine(method, "cpu", True, base.meta), module=loaded.module)
    lazy = LazyRestore.of(base.decoded, **how)
    assert lazy.batch % 3 == 0 and lazy.batch >= 8
    kw = dict(lowres=base.decoded, scale=4, operator="area4-v1", stored_pixel_bytes=base.coded_bytes, method=method,
              model_id=loaded.model_id, with_j2k=True, consistency=True, device="cpu")
    whole = build_audit(series, restored=restore_pixels_stored(base.decoded, **how), **kw).to_dict()
    assert build_audit(series, restored=lazy, **kw).to_dict()["methods"] == whole["methods"]
    res = medsr.archive_series(fixture_path("basic"), tmp_path / "a.medsr.h5", medsr.ArchiveOptions(device="cpu"))
    out = medsr.restore_archive(res.archive, tmp_path / "r", medsr.RestoreOptions(device="cpu"),
                                reference=fixture_path("basic"))
    assert out.audit.flat()["psnr_fg"] == res.audit.flat()["psnr_fg"]  # the stored audit describes the restore
