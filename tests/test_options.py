"""Every archive/restore option a user can pass, each checked by a property of what it produces.

In-process ``medsr.cli.main`` (no interpreter start per call); pixels and block means are checked
with numpy (tests/independent.py), not with medsr's own operators.
"""
from __future__ import annotations

import json
import logging

import numpy as np
import pydicom
import pytest

import medsr
from independent import block_means
from medsr.archive import read_archive
from medsr.cli import main

FAST = ("--method", "bicubic", "--no-j2k")


def cli(*args) -> int:
    return main([str(a) for a in args])


def _pixels(folder) -> np.ndarray:
    """The restored stack in archive (file name) order, stored values."""
    return np.stack([pydicom.dcmread(f).pixel_array.astype(float) for f in sorted(folder.glob("*.dcm"))])


def _blocks(stack: np.ndarray) -> np.ndarray:
    n, h, w = stack.shape
    return stack.reshape(n, h // 4, 4, w // 4, 4).transpose(0, 1, 3, 2, 4).reshape(n, h // 4, w // 4, 16)


@pytest.fixture(scope="module")
def bicubic_archive(fixture_path, tmp_path_factory):
    arc = tmp_path_factory.mktemp("opt_bicubic") / "b.medsr.h5"
    assert cli("archive", fixture_path("basic"), "-o", arc, *FAST, "-q") == 0
    return arc


@pytest.fixture(scope="module")
def model_archive(fixture_path, tmp_path_factory):
    arc = tmp_path_factory.mktemp("opt_model") / "m.medsr.h5"
    # one network pass: these tests compare restores with each other, the ensemble is not the point
    assert cli("archive", fixture_path("large_256"), "-o", arc, "--method", "model", "--ensemble", "1", "--no-j2k",
               "-q") == 0
    return arc


def test_restore_method_nearest_repeats_each_stored_value_over_its_block(bicubic_archive, tmp_path, caplog):
    out = tmp_path / "nearest"
    with caplog.at_level(logging.WARNING, logger="medsr"):
        assert cli("restore", bicubic_archive, "-o", out, "--method", "nearest", "-q") == 0
    b = _blocks(_pixels(out))
    assert (b == b[..., :1]).all()  # every 4x4 block is one value
    np.testing.assert_array_equal(b[..., 0], read_archive(bicubic_archive).lowres)  # the stored (decoded) value
    assert "not the archive's bicubic" in caplog.text  # the stored audit does not describe it


def test_no_consistency_on_restore_leaves_the_block_means_off_the_stored_data(bicubic_archive, tmp_path):
    lowres = read_archive(bicubic_archive).lowres.astype(float)
    assert cli("restore", bicubic_archive, "-o", tmp_path / "on", "-q") == 0
    assert cli("restore", bicubic_archive, "-o", tmp_path / "off", "--no-consistency", "-q") == 0
    on, off = _pixels(tmp_path / "on"), _pixels(tmp_path / "off")
    unclipped = ~((_blocks(on) <= on.min()) | (_blocks(on) >= on.max())).any(-1)
    assert np.abs(block_means(on) - lowres)[unclipped].max() <= 0.5  # projected, then rounded
    assert np.abs(block_means(off) - lowres)[unclipped].max() > 2.0  # plain bicubic: not projected


def test_no_consistency_on_archive_is_recorded_and_changes_the_audit(fixture_path, bicubic_archive, tmp_path):
    arc = tmp_path / "nc.medsr.h5"
    res = medsr.archive_series(fixture_path("basic"), arc,
                               medsr.ArchiveOptions(method="bicubic", baselines=False, consistency=False))
    assert res.audit["provenance"]["data_consistency"] is False
    on = medsr.open_archive(bicubic_archive).audit
    assert on["provenance"]["data_consistency"] is True
    # projected bicubic and plain bicubic are different restores: the audit measured each
    assert res.audit["methods"]["restored"]["psnr"] != pytest.approx(on["methods"]["restored"]["psnr"], abs=1e-6)
    assert res.audit["methods"]["restored"]["psnr"] == pytest.approx(res.audit["methods"]["bicubic"]["psnr"], abs=1e-6)


def test_a_gaussian_operator_is_stored_and_says_it_has_no_consistency(fixture_path, tmp_path, caplog):
    from scipy.ndimage import gaussian_filter

    arc = tmp_path / "g.medsr.h5"
    with caplog.at_level(logging.WARNING, logger="medsr"):
        assert cli("archive", fixture_path("basic"), "-o", arc, "--operator", "gauss4-v1", *FAST, "-q") == 0
    assert "gauss4-v1 has no exact projection: data consistency is not applied" in caplog.text
    info = medsr.open_archive(arc)
    assert info.operator == "gauss4-v1" and info.audit["provenance"]["data_consistency"] is False
    # the stored low-res is a Gaussian (sigma 2 px) sampled at the 4x4 block centres, within the base's NEAR=2
    src = np.stack([pydicom.dcmread(f).pixel_array.astype(float) for f in sorted(fixture_path("basic").glob("*.dcm"))])
    blurred = gaussian_filter(src, sigma=(0, 2, 2), mode="reflect")
    centres = (blurred[:, 1::4, 1::4] + blurred[:, 2::4, 1::4] + blurred[:, 1::4, 2::4] + blurred[:, 2::4, 2::4]) / 4
    lowres = read_archive(arc).lowres.astype(float)
    assert np.abs(lowres - centres).max() <= 2.5
    assert cli("restore", arc, "-o", tmp_path / "r", "-q") == 0 and len(list((tmp_path / "r").glob("*.dcm"))) == 12


def test_allow_modality_admits_a_non_mr_series_and_keeps_its_modality(fixture_path, tmp_path):
    arc = tmp_path / "ct.medsr.h5"
    assert cli("archive", fixture_path("ct"), "-o", arc, *FAST, "-q") == 3  # MR only by default
    assert not arc.exists()
    assert cli("archive", fixture_path("ct"), "-o", arc, *FAST, "--allow-modality", "CT", "-q") == 0
    assert cli("restore", arc, "-o", tmp_path / "r", "-q") == 0
    assert {pydicom.dcmread(f).Modality for f in (tmp_path / "r").glob("*.dcm")} == {"CT"}


def test_batch_size_and_precision_fp32_do_not_change_the_pixels(model_archive, tmp_path):
    runs = {"a": ("--precision", "fp32"), "b": ("--precision", "fp32", "--batch-size", "1"),
            "c": ("--precision", "fp32", "--batch-size", "5")}
    for name, args in runs.items():
        assert cli("restore", model_archive, "-o", tmp_path / name, "--device", "cpu", *args, "-q") == 0
    a = _pixels(tmp_path / "a")
    assert np.array_equal(a, _pixels(tmp_path / "b")) and np.array_equal(a, _pixels(tmp_path / "c"))


def test_bf16_restores_within_half_a_percent_of_fp32(model_archive, tmp_path):
    for p in ("fp32", "bf16"):
        assert cli("restore", model_archive, "-o", tmp_path / p, "--device", "cpu", "--precision", p, "-q") == 0
    a, b = _pixels(tmp_path / "fp32"), _pixels(tmp_path / "bf16")
    w = medsr.open_archive(model_archive)
    window = a.max() - a.min()
    assert not np.array_equal(a, b)  # really another precision
    assert np.mean(np.abs(a - b)) < 0.005 * window, (np.mean(np.abs(a - b)), window, w.model_id)


def test_tiles_stitch_to_nearly_the_whole_slice_restore(model_archive, tmp_path):
    """--tile 32: the 64x64 low-res slices run as four 32x32 tiles with 16 pixels of context each side."""
    for name, args in {"whole": (), "tiled": ("--tile", "32")}.items():
        assert cli("restore", model_archive, "-o", tmp_path / name, "--device", "cpu", "--precision", "fp32",
                   *args, "-q") == 0
    a, b = _pixels(tmp_path / "whole"), _pixels(tmp_path / "tiled")
    window = a.max() - a.min()
    assert np.mean(np.abs(a - b)) < 0.002 * window and np.abs(a - b).max() < 0.05 * window


def test_compile_wraps_the_network_and_restores_the_same_pixels(bicubic_archive, fixture_path, tmp_path, monkeypatch):
    """--compile hands the network to torch.compile (here a recording stand-in: compiling on this CPU
    takes minutes; the GPU check runs the real one) and changes how it runs, not what it computes."""
    import torch

    compiled = []
    monkeypatch.setattr(torch, "compile", lambda module, **kw: compiled.append(module) or module)
    arc = tmp_path / "m.medsr.h5"
    assert cli("archive", fixture_path("basic"), "-o", arc, "--method", "model", "--no-j2k", "--ensemble", "1",
               "-q") == 0
    assert compiled == []
    for name, args in {"eager": (), "compiled": ("--compile",)}.items():
        assert cli("restore", arc, "-o", tmp_path / name, "--device", "cpu", "--precision", "fp32", *args, "-q") == 0
    assert len(compiled) == 1 and isinstance(compiled[0], torch.nn.Module)
    assert np.array_equal(_pixels(tmp_path / "eager"), _pixels(tmp_path / "compiled"))


def test_restore_refuses_an_existing_output_and_force_replaces_it(bicubic_archive, tmp_path):
    out = tmp_path / "r"
    assert cli("restore", bicubic_archive, "-o", out, "-q") == 0
    first = {pydicom.dcmread(f).SeriesInstanceUID for f in out.glob("*.dcm")}
    assert cli("restore", bicubic_archive, "-o", out, "-q") == 5
    assert {pydicom.dcmread(f).SeriesInstanceUID for f in out.glob("*.dcm")} == first  # untouched
    assert cli("restore", bicubic_archive, "-o", out, "--force", "-q") == 0
    second = {pydicom.dcmread(f).SeriesInstanceUID for f in out.glob("*.dcm")}
    assert len(second) == 1 and second != first and len(list(out.glob("*.dcm"))) == 12


def test_gates_apply_to_nifti_input(fixture_path, tmp_path, capsys):
    nii = next(fixture_path("nifti").glob("*.nii.gz"))
    assert cli("archive", nii, "-o", tmp_path / "n.medsr.h5", *FAST, "--min-psnr", "99", "-q") == 7
    assert not (tmp_path / "n.medsr.h5").exists()
    assert cli("archive", nii, "-o", tmp_path / "n.medsr.h5", *FAST, "--min-psnr", "10", "--json", "-q") == 0
    assert json.loads(capsys.readouterr().out)["psnr"] >= 10


# -- medsr rd: --series-uid, --allow-modality, --force -----------------------------------------------

RD_CHEAP = ("--method", "bicubic", "--near", "3", "--lossy", "", "--lossy-near", "", "--floors", "", "-q")


def test_rd_picks_a_series_admits_a_modality_and_replaces_only_with_force(fixture_path, tmp_path):
    two = fixture_path("two_series")
    uids = sorted({str(pydicom.dcmread(f).SeriesInstanceUID) for f in two.rglob("*.dcm")})
    assert len(uids) == 2
    out = tmp_path / "rd"
    assert cli("rd", two, "-o", out, *RD_CHEAP) == 3  # two series: pick one
    assert not out.exists()
    assert cli("rd", two, "-o", out, "--series-uid", uids[1], *RD_CHEAP) == 0
    first = json.loads((out / "rd.json").read_text())
    assert first["series"]["series_instance_uid"] == uids[1]
    assert cli("rd", two, "-o", out, "--series-uid", uids[0], *RD_CHEAP) == 5  # exists: untouched
    assert json.loads((out / "rd.json").read_text()) == first
    assert cli("rd", two, "-o", out, "--series-uid", uids[0], "--force", *RD_CHEAP) == 0
    assert json.loads((out / "rd.json").read_text())["series"]["series_instance_uid"] == uids[0]
    ct = tmp_path / "rd-ct"
    assert cli("rd", fixture_path("ct"), "-o", ct, *RD_CHEAP) == 3
    assert cli("rd", fixture_path("ct"), "-o", ct, "--allow-modality", "CT", *RD_CHEAP) == 0
    assert (ct / "rd.json").is_file() and (ct / "rd.png").is_file()


def test_only_the_program_freezes_the_garbage_collector_before_it_exits(monkeypatch, capsys):
    """``medsr`` run as the program skips the last collections at exit (gc.freeze, see cli.main._freeze_for_exit);
    ``main(argv)`` called by a script or a test leaves the collector alone, whatever the command returned."""
    import gc
    import sys

    from medsr.audit import beside

    monkeypatch.setattr(beside, "_allowed", beside._allowed)  # main() as the program allows audit children: undone after
    frozen = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(True))
    assert main(["models", "--json"]) == 0
    assert main(["info", "no-such.medsr.h5"]) != 0
    assert frozen == []
    monkeypatch.setattr(sys, "argv", ["medsr", "models", "--json"])
    assert main() == 0
    assert frozen == [True]
    monkeypatch.setattr(sys, "argv", ["medsr", "info", "no-such.medsr.h5"])
    assert main() != 0
    assert frozen == [True, True]
    capsys.readouterr()


def test_classical_methods_run_on_the_cpu_whatever_device_is_asked(fixture_path, tmp_path):
    """Bicubic and nearest are NumPy on the CPU: archive, restore and ``--ratio`` candidates say "cpu" even when
    CUDA is asked for (on a machine with or without one), and an unknown device name is still an error."""
    from medsr.engine import device_for
    from medsr.errors import MedsrError

    res = medsr.archive_series(fixture_path("basic"), tmp_path / "a.medsr.h5",
                               medsr.ArchiveOptions(method="bicubic", device="cuda"))
    assert res.audit.to_dict()["provenance"]["device"] == "cpu"
    out = medsr.restore_archive(res.archive, tmp_path / "r", medsr.RestoreOptions(method="nearest", device="cuda"))
    assert (out.method, out.device) == ("nearest", "cpu")
    assert device_for("bicubic", "cuda") == device_for("nearest", "auto") == "cpu"
    with pytest.raises(MedsrError, match="unknown device"):
        device_for("bicubic", "tpu")


def test_a_reader_that_goes_away_is_not_an_internal_error():
    """``medsr models | head -1``: when standard output's reader has closed, medsr stops quietly with 141 (128 +
    SIGPIPE, what a shell reports), no "internal error" and no traceback."""
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-m", "medsr", "models"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # before medsr has started: its first write finds no reader
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 141, err
    assert err == ""
