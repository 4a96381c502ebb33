"""Self-ensemble passes per device: a CPU archive runs (and records) one pass, a GPU the model's default; a
restore runs what the archive recorded, so the stored audit stays true."""
import pytest

import medsr
from medsr.models import DEFAULT_MODEL, REGISTRY
from medsr.models.ensemble_policy import CPU_MAX_PASSES, default_passes


def test_default_passes_per_device():
    assert default_passes(2, "cpu") == CPU_MAX_PASSES == 1
    assert default_passes(2, "cuda") == 2 and default_passes(1, "cuda") == 1 and default_passes(1, "cpu") == 1


@pytest.mark.skipif(DEFAULT_MODEL not in REGISTRY or REGISTRY[DEFAULT_MODEL].ensemble < 2,
                    reason="needs the shipped 2-pass default model")
def test_cpu_archive_records_the_passes_it_ran_and_its_restore_reproduces_them(fixture_path, tmp_path):
    arc = tmp_path / "cpu.medsr.h5"
    res = medsr.archive_series(fixture_path("basic"), arc, medsr.ArchiveOptions(device="cpu", baselines=False))
    assert res.info.model_ensemble == 1 and res.audit["provenance"]["ensemble"] == 1
    out = medsr.restore_archive(arc, tmp_path / "r", medsr.RestoreOptions(device="cpu"),
                                reference=fixture_path("basic"))
    assert out.ensemble == 1 and not out.warnings
    assert out.audit["methods"]["restored"]["psnr"] == pytest.approx(res.audit["methods"]["restored"]["psnr"], abs=1e-9)


@pytest.mark.skipif(DEFAULT_MODEL not in REGISTRY or REGISTRY[DEFAULT_MODEL].ensemble < 2,
                    reason="needs the shipped 2-pass default model")
def test_a_2_pass_archive_restores_with_2_passes_on_a_cpu_and_fewer_passes_say_so(fixture_path, tmp_path, capsys):
    arc = tmp_path / "two.medsr.h5"
    medsr.archive_series(fixture_path("basic"), arc, medsr.ArchiveOptions(ensemble=2, baselines=False))  # e.g. a GPU's
    out = medsr.restore_archive(arc, tmp_path / "r", medsr.RestoreOptions(device="cpu"))
    assert out.ensemble == 2 and not out.warnings  # what the audit measured, on any device
    fewer = medsr.restore_archive(arc, tmp_path / "r1", medsr.RestoreOptions(device="cpu", ensemble=1))
    assert fewer.ensemble == 1
    (w,) = [w for w in fewer.warnings if "self-ensemble" in w]
    assert "not the archive's 2" in w and "does not describe this restore" in w and "--ensemble 2" in w
    assert fewer.summary()["warnings"] == list(fewer.warnings)  # what --json prints
    from medsr.cli import main

    assert main(["restore", str(arc), "-o", str(tmp_path / "cli"), "--device", "cpu", "--ensemble", "1", "--json"]) == 0
    captured = capsys.readouterr()
    assert "does not describe this restore" in captured.out + captured.err
