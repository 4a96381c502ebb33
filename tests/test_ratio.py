"""Archive to a byte budget (issue #19): ``medsr archive --ratio N``.

Spec, in the order a user meets it: the pixel payload is at most 1/N of the original pixel bytes and within
5% of it; every candidate is measured and the stored one has the best foreground PSNR; the restore is never
worse than JPEG 2000 of the full slices at the same bytes (measured independently); a restore writes what
the audit measured, and the DICOM says which scale and representation was stored; bad requests fail in one
line and write nothing; an archive whose empty base slice is not held whole is refused.
"""
import json
import subprocess
import sys

import numpy as np
import pytest

from independent import original_and_restored, series_psnr
from medsr.archive.format import open_logical
from medsr.codec import downsample, pad_to_multiple
from medsr.codec.base import decode_base, unpack_codestreams
from medsr.codec.rate import base_to_budget, j2k_base_to_budget, without_slices
from medsr.io import read_series


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "medsr", *map(str, args)], capture_output=True, text=True, timeout=900)


def _payload_bytes(path) -> int:
    """Stored pixel payload read straight from the archive's datasets: base codestreams + floor payloads."""
    f = open_logical(path)  # version 1's names, whatever the format version
    try:
        n = int(np.asarray(f["lowres_coded"][()]).size)
        return n + (int(np.asarray(f["floor"]["data"][()]).size) if "floor" in f else 0)
    finally:
        f.close()


def _independent_j2k_fg(original_stored: np.ndarray, rescale, bits: int, nbytes: int) -> float:
    """Foreground PSNR of JPEG 2000 (OpenJPEG called here, one ratio for all slices) of the full slices in at most
    ``nbytes`` bytes: the alternative an administrator would use."""
    from openjpeg import decode, encode

    r = original_stored.size * bits / 8 / nbytes
    for _ in range(6):
        coded = [encode(np.ascontiguousarray(s), bits_stored=bits, photometric_interpretation=2,
                        compression_ratios=[r]) for s in original_stored]
        total = sum(len(c) for c in coded)
        if total <= nbytes:
            break
        r *= 1.01 * total / nbytes
    dec = np.stack([np.asarray(decode(c)) for c in coded]).astype(np.float64)
    return series_psnr(rescale(original_stored), rescale(dec), foreground=True)


@pytest.fixture(scope="module")
def xa30_100(siemens_xa30, tmp_path_factory):
    out = tmp_path_factory.mktemp("ratio")
    arc = out / "p.medsr.h5"
    proc = _cli("archive", siemens_xa30, "-o", arc, "--ratio", 100, "--json")
    assert proc.returncode == 0, proc.stderr
    restored = out / "restored"
    proc2 = _cli("restore", arc, "-o", restored, "--json")
    assert proc2.returncode == 0, proc2.stderr
    return json.loads(proc.stdout), arc, restored


def test_payload_is_within_5_percent_below_the_budget(xa30_100, siemens_xa30):
    summary, arc, _ = xa30_100
    original = read_series(siemens_xa30).original_pixel_bytes
    stored = _payload_bytes(arc)
    assert original / 100 * 0.95 <= stored <= original / 100
    assert summary["pixel_ratio"] == pytest.approx(original / stored, rel=1e-3)


def test_every_candidate_is_measured_and_the_best_foreground_psnr_is_stored(xa30_100):
    """Every candidate is listed (96 slices: the default search ranks on a sample first, tests/test_ratio_search.py);
    the stored one is the best of those measured on every slice."""
    summary, _, _ = xa30_100
    b = summary["budget"]
    names = {c["candidate"].removesuffix("+j2k") for c in b["candidates"]}
    assert {"x4-jpegls", "x2-jpegls", "x4-j2kbase", "x2-j2kbase", "j2k"} <= names
    assert b["search"] == "sample" and b["sample_slices"] == 8
    fits = [c for c in b["candidates"] if c["fits"] and c["slices_measured"] is None]
    chosen = next(c for c in b["candidates"] if c["candidate"] == b["chosen"])
    assert chosen["fits"] and chosen["psnr_fg"] >= max(c["psnr_fg"] for c in fits) - 0.005
    assert b["why"] and summary["psnr_fg"] == pytest.approx(chosen["psnr_fg"], abs=1e-3)
    assert summary["operator"] == chosen["operator"]


def test_restore_is_never_worse_than_jpeg2000_at_the_same_bytes(xa30_100, siemens_xa30):
    _, arc, restored = xa30_100
    series = read_series(siemens_xa30)
    original, ours = original_and_restored(siemens_xa30, sorted(restored.glob("*.dcm")))
    fg_ours = series_psnr(original, ours, foreground=True)
    order = np.argsort([h.SOPInstanceUID for h in series.headers])  # any order: the metric is a mean over slices
    j2k_fg = _independent_j2k_fg(series.pixels[order], lambda a: a * float(series.slope[0]) + float(series.intercept[0]),
                                 series.bits_stored, _payload_bytes(arc))
    assert fg_ours >= j2k_fg - 0.05


def test_restore_writes_what_the_audit_measured_and_says_what_was_stored(xa30_100, siemens_xa30, dciodvfy):
    import pydicom

    summary, _, restored = xa30_100
    original, ours = original_and_restored(siemens_xa30, sorted(restored.glob("*.dcm")))
    assert series_psnr(original, ours) == pytest.approx(summary["psnr"], abs=0.01)
    files = sorted(restored.glob("*.dcm"))
    ds = pydicom.dcmread(files[0])
    assert "byte budget of 1/100" in ds.DerivationDescription and summary["budget"]["chosen"] in ds.DerivationDescription
    assert ds.LossyImageCompression == "01"
    if summary["budget"]["chosen"] == "j2k":
        assert "ISO_15444_1" in ds.LossyImageCompressionMethod
    else:
        scale = int(summary["operator"][4])
        assert f"[medsr x{scale} restore]" in ds.SeriesDescription
        assert f"MEDSR_SR{scale}" in ds.LossyImageCompressionMethod
    src = next(p for p in siemens_xa30.rglob("*") if p.is_file() and p.suffix.lower() in (".dcm", ""))
    assert dciodvfy(files[0]) <= dciodvfy(src)


def test_info_and_the_report_list_the_candidates(xa30_100, tmp_path):
    summary, arc, _ = xa30_100
    proc = _cli("info", arc)
    assert proc.returncode == 0, proc.stderr
    assert "budget: 1/100" in proc.stdout and "x2-jpegls" in proc.stdout and "j2k" in proc.stdout
    proc = _cli("audit", arc, "-o", tmp_path / "rep")
    assert proc.returncode == 0, proc.stderr
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "Byte budget (--ratio 100)" in page and f"<b>{summary['budget']['chosen']}</b>" in page
    assert all(c["candidate"] in page for c in summary["budget"]["candidates"])


def test_a_high_ratio_on_a_real_brain_keeps_its_promise(sag_anon, tmp_path):
    """SAG-anon at 300:1 (bicubic restores, fast): within the budget, and at least JPEG 2000's foreground PSNR."""
    arc = tmp_path / "s.medsr.h5"
    proc = _cli("archive", sag_anon, "-o", arc, "--ratio", 300, "--method", "bicubic", "--json")
    assert proc.returncode == 0, proc.stderr
    s = json.loads(proc.stdout)
    original = read_series(sag_anon).original_pixel_bytes
    assert original / 300 * 0.95 <= _payload_bytes(arc) <= original / 300
    j2k = next(c for c in s["budget"]["candidates"] if c["candidate"] == "j2k")
    assert s["psnr_fg"] >= j2k["psnr_fg"] - 0.05
    assert s["budget"]["margin_psnr_fg_vs_j2k"] >= -0.05


@pytest.mark.parametrize("args, words", [
    (("--ratio", "1"), "--ratio must be between"),
    (("--ratio", "100", "--base", "lossless"), "drop --base"),
    (("--ratio", "100", "--floor-psnr-fg", "40"), "drop --floor-psnr-fg"),
])
def test_bad_requests_fail_in_one_line_and_write_nothing(fixture_path, tmp_path, args, words):
    arc = tmp_path / "x.medsr.h5"
    proc = _cli("archive", fixture_path("basic"), "-o", arc, *args)
    assert proc.returncode != 0 and words in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not arc.exists() and not list(tmp_path.iterdir())


def test_base_to_budget_spends_the_budget_within_each_slices_bound(sag_anon):
    pixels = read_series(sag_anon).pixels
    lowres = downsample(pad_to_multiple(pixels, 2)[0], "area2-v1")
    budget = pixels.nbytes / 150
    bb = base_to_budget(lowres, budget)
    assert bb.fits and 0.95 * budget <= bb.nbytes <= budget
    assert set(bb.nears) <= {bb.base.meta.near, bb.base.meta.near - 1}
    err = np.abs(bb.base.decoded.astype(np.int64) - lowres.astype(np.int64)).reshape(len(lowres), -1).max(axis=1)
    assert np.all(err <= np.asarray(bb.nears))


def test_a_slice_left_without_base_decodes_to_the_minimum_and_the_others_are_untouched(sag_anon):
    pixels = read_series(sag_anon).pixels[:6]
    lowres = downsample(pixels, "area4-v1")
    bb = base_to_budget(lowres, pixels.nbytes / 80)
    drop = np.array([True, False, True, False, False, False])
    thin = without_slices(bb.base, drop)
    streams = unpack_codestreams(thin.data, thin.offsets)
    assert [len(s) == 0 for s in streams] == list(drop)
    dec = decode_base(streams, thin.meta)
    assert np.array_equal(dec[~drop], bb.base.decoded[~drop]) and np.all(dec[drop] == thin.meta.vmin)


def test_an_empty_base_slice_that_is_not_held_whole_is_refused(tmp_path, fixture_path):
    """A damaged --ratio archive: a slice without base and without a whole-slice representation."""
    from medsr.archive import read_archive, write_archive
    from medsr.codec import intensity_window
    from medsr.errors import ArchiveError

    series = read_series(fixture_path("basic"))
    padded, pad = pad_to_multiple(series.pixels, 4)
    lowres = downsample(padded, "area4-v1")
    bb = base_to_budget(lowres, series.pixels.nbytes / 20)
    drop = np.zeros(len(lowres), dtype=bool)
    drop[0] = True
    thin = without_slices(bb.base, drop)
    arc = tmp_path / "bad.medsr.h5"
    write_archive(arc, series=series, lowres=thin.decoded, window=intensity_window(lowres), operator="area4-v1",
                  scale=4, pad=pad, method="bicubic", model=None, audit=None, base=thin)
    with pytest.raises(ArchiveError, match="slice 0 has no stored low-res base"):
        read_archive(arc)


def test_rd_ratios_draws_every_candidate_and_marks_what_an_archive_stores(sag_anon, tmp_path):
    out = tmp_path / "rd"
    proc = _cli("rd", sag_anon, "-o", out, "--ratios", "100,300", "--method", "bicubic", "--json")
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    saved = json.loads((out / "rd.json").read_text())
    assert saved["schema"] == "medsr-rd-ratio-v1" and (out / "rd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [r["target_ratio"] for r in d["ratios"]] == [100.0, 300.0]
    for r in saved["ratios"]:
        assert {"x4-jpegls", "x2-jpegls", "j2k"} <= {c["candidate"] for c in r["candidates"]}
        best = max(c["psnr_fg"] for c in r["candidates"] if c["fits"])
        assert next(c for c in r["candidates"] if c["candidate"] == r["chosen"])["psnr_fg"] >= best - 0.005
    # what `medsr archive --ratio 300` stores is what rd marked at 300
    arc = tmp_path / "s.medsr.h5"
    proc = _cli("archive", sag_anon, "-o", arc, "--ratio", 300, "--method", "bicubic", "--json", "--no-j2k")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["budget"]["chosen"] == saved["ratios"][1]["chosen"]


def test_a_jpeg2000_low_res_base_fits_the_budget_and_reads_back_as_coded(sag_anon, tmp_path):
    """The ``j2kbase`` candidates' base: JPEG 2000 of each low-res slice within the budget, its recorded bound the
    largest error measured, and an archive holding it decodes to exactly what was measured."""
    from medsr.archive import read_archive, write_archive
    from medsr.codec import intensity_window

    series = read_series(sag_anon)
    padded, pad = pad_to_multiple(series.pixels, 2)
    lowres = downsample(padded, "area2-v1")
    budget = series.pixels.nbytes / 120
    bb = j2k_base_to_budget(lowres, budget)
    assert bb.fits and 0.95 * budget <= bb.nbytes <= budget
    err = np.abs(bb.base.decoded.astype(np.int64) - lowres.astype(np.int64)).max()
    assert bb.base.meta.base == "lossy-j2k" and bb.base.meta.near == max(1, err)
    arc = tmp_path / "j.medsr.h5"
    write_archive(arc, series=series, lowres=bb.base.decoded, window=intensity_window(lowres), operator="area2-v1",
                  scale=2, pad=pad, method="bicubic", model=None, audit=None, base=bb.base)
    data = read_archive(arc)
    assert data.info.base == "lossy-j2k" and np.array_equal(data.lowres, bb.base.decoded)


def test_the_x2_jpeg2000_base_is_restored_by_both_x2_models_and_the_better_is_kept(fixture_path):
    """The x2 tier's JPEG 2000 base is restored by its own model (medsr-srresnet-x2-j2k) and by the x2 tier's
    JPEG-LS model, each measured against the original; the better is the candidate. The JPEG-LS base keeps its one."""
    import re

    from medsr.flow.budget import plan_budget
    from medsr.models import default_model_for

    assert default_model_for("lossy-j2k", "area2-v1") == "medsr-srresnet-x2-j2k"
    plan = plan_budget(read_series(fixture_path("large_256")), 60, search="full", device="cpu", operators=("area2-v1",))
    note = next(n for n in plan.notes if n.startswith("x2-j2kbase"))
    figures = {name: float(db) for name, db in re.findall(r"(medsr-srresnet-x2-[\w-]+) ([\d.]+) dB", note)}
    assert set(figures) == {"medsr-srresnet-x2-j2k", "medsr-srresnet-x2-lossy"}, note
    kept = note.rsplit("kept ", 1)[1]
    assert figures[kept] == max(figures.values())
    sr = next(c for c in plan.candidates if c.name == "x2-j2kbase")
    assert sr.model_id.startswith(kept + "@")
    assert next(c for c in plan.candidates if c.name == "x2-jpegls").model_id.startswith("medsr-srresnet-x2-lossy@")


def _cod(codestream: bytes) -> tuple[int, int]:
    """(resolutions, code-block side) from a JPEG 2000 codestream's COD marker segment (ISO 15444-1 A.6.1)."""
    i = codestream.index(b"\xff\x52")
    levels, xcb = codestream[i + 9], codestream[i + 10]
    return levels + 1, 1 << (xcb + 2)


@pytest.mark.parametrize("layout", __import__("medsr.codec.j2k_layouts", fromlist=["x"]).ALTERNATIVES,
                         ids=lambda lay: f"{lay.block}px-{lay.resolutions}res")
def test_each_jpeg2000_layout_is_written_in_the_codestream_and_decodes_with_the_usual_decoder(sag_anon, layout):
    from medsr.codec import j2k_layouts
    from medsr.codec.payload import decode

    if j2k_layouts.unavailable():
        pytest.skip(j2k_layouts.unavailable())
    lowres = downsample(pad_to_multiple(read_series(sag_anon).pixels, 2)[0], "area2-v1")
    a = lowres[len(lowres) // 2].astype(np.int64)
    a = (a - a.min()).astype(np.uint16)
    c = j2k_layouts.encode(a, 4.0, layout)
    assert _cod(c) == (layout.resolutions, layout.block)
    mse = float(((decode(c, a.shape) - a.astype(np.int64)) ** 2).mean())
    assert 10 * np.log10(float(a.max()) ** 2 / mse) > 35  # PSNR, data_range the slice's range


def test_a_one_slice_jpeg2000_base_lands_within_5_percent_of_its_budget(unseen_data):
    """The one-slice FLAIR's x2 low-res (128^2) at 80:1: the encoder's default layout can only land 6% under
    the budget (or over it); another layout lands within 5%, decodes closer to the low-res, and the note says so."""
    from medsr.codec import j2k_layouts
    from medsr.codec.payload import bits_for, j2k_encode
    from medsr.codec.rate import _fit_ratio

    if j2k_layouts.unavailable():
        pytest.skip(j2k_layouts.unavailable())
    series = read_series(unseen_data("flair-brain-ge-1.5t"))
    lowres = downsample(pad_to_multiple(series.pixels, 2)[0], "area2-v1")
    budget = series.original_pixel_bytes / 80
    shifted = (lowres.astype(np.int64) - lowres.min()).astype(np.uint16)
    bits = bits_for(shifted)
    default, _ = _fit_ratio(shifted, budget, lambda s, r: j2k_encode(s, bits, r), bits)
    assert sum(map(len, default)) < 0.95 * budget  # what this test is about

    bb = j2k_base_to_budget(lowres, budget)
    assert bb.fits and 0.95 * budget <= bb.nbytes <= budget
    (c,) = unpack_codestreams(bb.base.data, bb.base.offsets)
    assert _cod(c) != (6, 64) and f"{_cod(c)[1]}x{_cod(c)[1]} code-blocks, {_cod(c)[0]} resolutions" in bb.base.note
    vmin = int(lowres.min())
    default_decoded = decode_base(default, bb.base.meta)
    assert np.abs(bb.base.decoded - default_decoded).max() > 0  # a different image was stored...
    def sse(d):
        return float(((d.astype(np.float64) - lowres) ** 2).sum())

    assert sse(bb.base.decoded) < sse(default_decoded)  # ...closer to the low-res
    assert int(bb.base.decoded.min()) >= vmin


@pytest.mark.parametrize("ratio, baseline_landed", [(70, "92.6%"), (160, "100.2%")])
def test_the_full_slice_jpeg2000_candidate_lands_within_5_percent_under_the_budget(unseen_data, ratio, baseline_landed):
    """The ``j2k`` candidate (the alternative every archive is held to, and stored where it wins) on the one-slice
    FLAIR: where the audit baseline's rate search lands 7% under (70:1) or just over (160:1: it could not be
    stored), one ratio bisected to the budget and other layouts bring it within 5% under, as measured."""
    from medsr.flow.budget import plan_budget

    series = read_series(unseen_data("flair-brain-ge-1.5t"))
    plan = plan_budget(series, ratio, search="full", device="cpu")
    j2k = next(c for c in plan.candidates if c.name == "j2k")
    assert j2k.fits and 0.95 * plan.budget_bytes <= j2k.pixel_bytes <= plan.budget_bytes
    assert any(n.startswith(f"j2k: the baseline's rate search landed at {baseline_landed}") for n in plan.notes)
    streams = [j2k.floor.payload(0)]
    assert sum(map(len, streams)) == j2k.pixel_bytes
    from medsr.codec.payload import decode

    assert np.array_equal(np.clip(decode(streams[0], series.shape), *series.value_range), j2k.restored[0])


def test_without_glymur_the_default_layout_is_kept_and_the_note_says_what_to_install(unseen_data, monkeypatch):
    """Where the other layouts cannot be written (no glymur, or no libopenjp2), the base is the default layout's
    closest fit, still within the budget, and its note says why it is short and what would fix it."""
    from medsr.codec import j2k_layouts

    monkeypatch.setattr(j2k_layouts, "unavailable", lambda: "glymur is not installed (pip install glymur)")
    series = read_series(unseen_data("flair-brain-ge-1.5t"))
    lowres = downsample(pad_to_multiple(series.pixels, 2)[0], "area2-v1")
    budget = series.original_pixel_bytes / 80
    bb = j2k_base_to_budget(lowres, budget)
    (c,) = unpack_codestreams(bb.base.data, bb.base.offsets)
    assert bb.fits and bb.nbytes < 0.95 * budget and _cod(c) == (6, 64)
    assert "other layouts not tried: glymur is not installed (pip install glymur)" in bb.base.note


def test_a_layout_that_cannot_be_written_never_fails_the_base(unseen_data, monkeypatch):
    """Other layouts are an improvement, not a requirement: where writing them fails (e.g. no writable temporary
    folder), the default fit is kept and the note says what failed."""
    from medsr.codec import j2k_layouts

    if j2k_layouts.unavailable():
        pytest.skip(j2k_layouts.unavailable())

    def unwritable(*_args, **_kwargs):
        raise PermissionError("[Errno 13] Permission denied: '/tmp/x.j2k'")

    monkeypatch.setattr(j2k_layouts, "encode", unwritable)
    series = read_series(unseen_data("flair-brain-ge-1.5t"))
    lowres = downsample(pad_to_multiple(series.pixels, 2)[0], "area2-v1")
    bb = j2k_base_to_budget(lowres, series.original_pixel_bytes / 80)
    (c,) = unpack_codestreams(bb.base.data, bb.base.offsets)
    assert bb.fits and _cod(c) == (6, 64) and "other layouts failed (PermissionError" in bb.base.note


def test_a_one_slice_series_archived_at_80_to_1_stores_within_5_percent_of_the_budget(unseen_data, tmp_path):
    """Issue #19's ratio hit on the series that missed it: ``--ratio 80`` on the one-slice FLAIR."""
    from medsr.codec import j2k_layouts

    if j2k_layouts.unavailable():
        pytest.skip(j2k_layouts.unavailable())
    flair = unseen_data("flair-brain-ge-1.5t")
    arc = tmp_path / "f.medsr.h5"
    proc = _cli("archive", flair, "-o", arc, "--ratio", 80, "--json")
    assert proc.returncode == 0, proc.stderr
    original = read_series(flair).original_pixel_bytes
    assert original / 80 * 0.95 <= _payload_bytes(arc) <= original / 80
    info = json.loads(_cli("info", arc, "--json").stdout)  # says how the base was coded, and why
    assert info["base"] == "lossy-j2k" and "code-blocks" in info["base_note"] and "budget" in info["base_note"]
