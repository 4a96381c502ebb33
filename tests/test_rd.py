"""``medsr rd``: rate-distortion report of the storage modes (JSON + PNG)."""
from __future__ import annotations

import argparse
import json

import pytest

import medsr
from medsr.codec.base import BASE_LOSSLESS, BASE_NEAR_LOSSLESS


def _run(argv: list[str]) -> int:
    """``medsr ...`` in-process, with ``rd`` registered even before cli.py registers it itself."""
    from medsr import cli
    from medsr.cli.rd import register_cli

    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "rd" not in sub.choices:
        register_cli(sub)
    args = parser.parse_args([str(a) for a in argv])
    try:
        return args.func(args)
    except medsr.MedsrError as e:
        return e.exit_code


@pytest.fixture(scope="module")
def rd_out(fixture_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("rd") / "report"
    rc = _run(["rd", fixture_path("large_256"), "-o", out, "--method", "bicubic", "--near", "2,3", "--lossy", "2,4",
               "--lossy-near", "0.03", "--floors", "22", "--quiet"])
    assert rc == 0
    return out


def test_rd_writes_json_and_png_with_every_mode(rd_out):
    d = json.loads((rd_out / "rd.json").read_text())
    assert d["schema"] == "medsr-rd-v1" and d["method"] == "bicubic"
    modes = {r["mode"]: r for r in d["modes"]}
    assert list(modes) == ["lossless", "near-lossless-k2", "near-lossless-k3", "lossy-3%", "lossy-j2k-1/2",
                           "lossy-j2k-1/4", "floor-fg22"]
    for r in d["modes"]:
        for k in ("ratio", "psnr", "psnr_fg", "ssim", "ssim_fg", "stored_pixel_bytes", "delta_psnr_vs_lossless"):
            assert isinstance(r[k], (int, float)), (r["mode"], k)
        j = r["jpeg2000"]
        assert j["ratio"] == pytest.approx(r["ratio"], rel=0.05)  # full-slice JPEG 2000 at the same ratio
        assert 0 < r["ssim"] <= 1 and 0 < j["ssim"] <= 1
    assert modes["lossless"]["max_lowres_error"] == 0
    assert modes["near-lossless-k2"]["max_lowres_error"] <= 2 and modes["near-lossless-k3"]["max_lowres_error"] <= 3
    # coarser bases store fewer bytes
    assert modes["lossless"]["ratio"] < modes["near-lossless-k2"]["ratio"] < modes["near-lossless-k3"]["ratio"]
    assert modes["lossy-j2k-1/2"]["ratio"] < modes["lossy-j2k-1/4"]["ratio"]
    lossy = modes["lossy-3%"]  # `--base lossy`: JPEG-LS NEAR = 3% of the window, bound recorded and held
    assert lossy["base"] == "lossy" and lossy["parameter"] >= 3 and lossy["max_lowres_error"] <= lossy["parameter"]
    assert lossy["ratio"] > modes["near-lossless-k3"]["ratio"]
    png = (rd_out / "rd.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_rd_measures_what_the_archive_stores(rd_out, fixture_path, tmp_path):
    """The lossless, near-lossless and lossy rows are what an archive stores and what its restore
    gives, re-measured here without medsr's metrics (tests/independent.py) from the written files."""
    import h5py

    from independent import original_and_restored, series_psnr

    d = {r["mode"]: r for r in json.loads((rd_out / "rd.json").read_text())["modes"]}
    src = fixture_path("large_256")
    for base, near, mode in ((BASE_LOSSLESS, None, "lossless"), (BASE_NEAR_LOSSLESS, 3, "near-lossless-k3"),
                             ("lossy", None, "lossy-3%")):
        arc = tmp_path / f"{mode}.medsr.h5"
        res = medsr.archive_series(src, arc, medsr.ArchiveOptions(method="bicubic", baselines=False, base=base,
                                                                  base_near=near))
        assert res.info.pixel_ratio == pytest.approx(d[mode]["ratio"], rel=1e-9)
        with h5py.File(arc, "r") as f:  # the stored low-res bytes, as HDF5 holds them
            lr = f["lowres"] if "lowres" in f else f["lowres_coded"]
            stored = lr.id.get_storage_size()
        original_bytes = res.info.n_slices * res.info.rows * res.info.cols * 2  # 16-bit fixture
        assert original_bytes / stored == pytest.approx(d[mode]["ratio"], rel=0.02)
        out = medsr.restore_archive(arc, tmp_path / f"{mode}-restored")
        o, r = original_and_restored(src, out.files)
        assert series_psnr(o, r) == pytest.approx(d[mode]["psnr"], abs=0.02)
        assert series_psnr(o, r, foreground=True) == pytest.approx(d[mode]["psnr_fg"], abs=0.02)


def test_rd_refuses_an_existing_output(rd_out, fixture_path):
    assert _run(["rd", fixture_path("basic"), "-o", rd_out, "--method", "bicubic", "--quiet"]) == 5
    assert (rd_out / "rd.json").exists()


def test_rd_json_stdout(fixture_path, tmp_path, capsys):
    rc = _run(["rd", fixture_path("basic"), "-o", tmp_path / "r", "--method", "bicubic", "--near", "3", "--lossy", "",
               "--lossy-near", "", "--floors", "", "--json", "--quiet"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert [m["mode"] for m in out["modes"]] == ["lossless", "near-lossless-k3"]
    assert (tmp_path / "r" / "rd.png").exists()


def test_rd_floor_row_is_what_the_archive_stores(rd_out, fixture_path, tmp_path):
    """A floor row plans exactly as `medsr archive --floor-psnr-fg DB` (default base): same stored pixel bytes,
    same representations, every slice at or above the floor; beside it JPEG 2000 at the same ratio and the
    per-slice-rate JPEG 2000 meeting the same floor."""
    d = json.loads((rd_out / "rd.json").read_text())
    row = {r["mode"]: r for r in d["modes"]}["floor-fg22"]
    assert row["base"] == "floor" and row["parameter"] == 22 and row["floor_base"] == BASE_NEAR_LOSSLESS
    reps = row["representations"]
    # bicubic restores these slices at 21-22 dB fg; at a 22 dB floor each slice's own JPEG 2000 meeting it costs
    # less than its low-res base, so every slice is stored j2k (those below the floor and those above it)
    assert reps["j2k"]["slices"] == d["series"]["slices"]
    assert row["per_slice_j2k_floor"]["bytes_vs"] <= 1.10  # the target: within 10% of per-slice JPEG 2000
    assert sum(v["slices"] for v in reps.values()) == d["series"]["slices"] and not row["needs_fallback_lossless"]
    assert row["min_psnr_fg"] >= 22.0
    assert row["stored_pixel_bytes"] == row["base_bytes"] + row["floor_bytes"]
    assert row["jpeg2000"]["ratio"] == pytest.approx(row["ratio"], rel=0.05)
    pj = row["per_slice_j2k_floor"]
    assert pj["bytes"] > 0 and pj["ratio"] == pytest.approx(d["series"]["original_pixel_bytes"] / pj["bytes"])
    res = medsr.archive_series(fixture_path("large_256"), tmp_path / "floor.medsr.h5",
                               medsr.ArchiveOptions(method="bicubic", baselines=False, floor_psnr_fg=22))
    assert res.info.base == BASE_NEAR_LOSSLESS
    assert res.info.stored_pixel_bytes == row["stored_pixel_bytes"]
    assert res.info.pixel_ratio == pytest.approx(row["ratio"], rel=1e-12)
    assert res.info.floor["representations"] == reps
    assert res.audit["floor"]["min_psnr_fg"] == pytest.approx(row["min_psnr_fg"], abs=1e-9)
    assert res.summary()["psnr_fg"] == pytest.approx(row["psnr_fg"], abs=1e-3)
    assert res.summary()["psnr"] == pytest.approx(row["psnr"], abs=1e-3)
