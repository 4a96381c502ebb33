"""The restore engine: batching, tiling, precision, data consistency (tiny random generators: no quality claims)."""
import numpy as np
import pytest
import torch

import medsr
from medsr.codec import downsample, intensity_window
from medsr.engine import EngineConfig, restore_stack
from medsr.models import SRResNet, SRResNetConfig, save_weights


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return SRResNet(SRResNetConfig(blocks=2, channels=16)).eval()


@pytest.fixture(scope="module")
def lr_stack():
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 4000, size=(3, 96, 80)).astype(np.uint16)
    return downsample(hr, "area4-v1")


def test_model_restore_is_consistent_with_the_stored_low_res(tiny, lr_stack):
    w = intensity_window(lr_stack)
    hr = restore_stack(lr_stack, w, 4, config=EngineConfig(method="model", device="cpu", precision="fp32"), module=tiny)
    assert hr.shape == (3, 96, 80)
    assert np.allclose(hr.reshape(3, 24, 4, 20, 4).mean(axis=(2, 4)), lr_stack, atol=1e-6)


def test_tiled_inference_matches_whole_slices(tiny, lr_stack):
    w = intensity_window(lr_stack)
    cfg = EngineConfig(method="model", device="cpu", precision="fp32", consistency=False)
    whole = restore_stack(lr_stack, w, 4, config=cfg, module=tiny)
    tiled = restore_stack(lr_stack, w, 4, config=EngineConfig(method="model", device="cpu", precision="fp32",
                                                              consistency=False, tile=8), module=tiny)
    # 16 low-res pixels of overlap cover this 2-block net's receptive field: identical up to float error
    assert np.abs(whole - tiled).max() < 1e-3 * (w.hi - w.lo)


def test_batch_size_does_not_change_the_result(tiny, lr_stack):
    w = intensity_window(lr_stack)
    a = restore_stack(lr_stack, w, 4, config=EngineConfig(method="model", device="cpu", precision="fp32", batch_size=1), module=tiny)
    b = restore_stack(lr_stack, w, 4, config=EngineConfig(method="model", device="cpu", precision="fp32", batch_size=3), module=tiny)
    assert np.abs(a - b).max() < 1e-6 * (w.hi - w.lo) + 1e-9


def test_bf16_on_cpu_stays_within_tolerance_of_fp32(tiny, lr_stack):
    w = intensity_window(lr_stack)
    a = restore_stack(lr_stack, w, 4, config=EngineConfig(method="model", device="cpu", precision="fp32"), module=tiny)
    b = restore_stack(lr_stack, w, 4, config=EngineConfig(method="model", device="cpu", precision="bf16"), module=tiny)
    # documented tolerance (README): mean |bf16 - fp32| below 0.5% of the intensity window
    assert np.mean(np.abs(a - b)) < 0.005 * (w.hi - w.lo)


def test_fp16_is_never_used_on_cpu():
    from medsr.engine import resolve_precision

    assert resolve_precision("fp16", "cpu") == "fp32"
    assert resolve_precision("auto", "cuda") == "bf16"


def test_restore_with_a_weights_file_records_the_model(tiny, fixture_path, tmp_path):
    weights = tmp_path / "tiny.safetensors"
    save_weights(tiny, weights, architecture="srresnet", config=tiny.config.to_dict(), operator="area4-v1")
    arc = tmp_path / "t.medsr.h5"
    res = medsr.archive_series(fixture_path("basic"), arc, medsr.ArchiveOptions(method="model", model=str(weights),
                                                                            baselines=False))
    assert res.info.method == "model" and res.info.model_id.startswith("tiny.safetensors@")
    rr = medsr.restore_archive(arc, tmp_path / "r", medsr.RestoreOptions(model=str(weights)))
    assert rr.slices == 12 and rr.model_id == res.info.model_id


def test_pickle_weights_are_refused(tmp_path):
    bad = tmp_path / "w.pt"
    torch.save({"x": torch.zeros(1)}, bad)
    with pytest.raises(medsr.ModelError, match="safetensors"):
        from medsr.models import create_model

        create_model(str(bad))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_bf16_matches_fp32_within_tolerance(lr_stack):
    torch.manual_seed(0)
    net = SRResNet().eval()
    w = intensity_window(lr_stack)
    a = restore_stack(lr_stack, w, 4, config=EngineConfig(method="model", device="cuda", precision="fp32"), module=net)
    b = restore_stack(lr_stack, w, 4, config=EngineConfig(method="model", device="cuda", precision="bf16"), module=net)
    c = restore_stack(lr_stack, w, 4, config=EngineConfig(method="model", device="cpu", precision="fp32"), module=net)
    assert np.mean(np.abs(a - b)) < 0.005 * (w.hi - w.lo)
    assert np.mean(np.abs(a - c)) < 0.001 * (w.hi - w.lo)


def test_arithmetic_names_precision_device_and_the_cpus_bf16_units():
    from medsr.engine import arithmetic, cpu_bf16_units

    assert arithmetic("fp32", "cpu") == "cpu-fp32"
    assert arithmetic("fp16", "cpu") == "cpu-fp32"  # never fp16 on a CPU
    assert arithmetic("auto", "cuda") == "cuda-bf16"
    assert arithmetic("bf16", "cpu") == f"cpu-bf16-{cpu_bf16_units() or 'emulated'}"


def test_an_archive_records_its_restores_arithmetic_and_a_restore_in_another_says_so(tiny, fixture_path, tmp_path):
    """The audit names the arithmetic its network restore ran in; a restore of the same weights in other
    arithmetic (another precision, or another CPU's bf16 units) warns that pixels may differ from what the audit
    measured, and --json names its own; a bicubic archive records none (exact on every machine)."""
    from medsr.engine import arithmetic

    weights = tmp_path / "tiny.safetensors"
    save_weights(tiny, weights, architecture="srresnet", config=tiny.config.to_dict(), operator="area4-v1")
    arc = tmp_path / "t.medsr.h5"
    res = medsr.archive_series(fixture_path("basic"), arc, medsr.ArchiveOptions(method="model", model=str(weights),
                                                                            baselines=False))
    recorded = res.audit.provenance["arithmetic"]
    assert recorded == arithmetic("auto", "cpu")
    opts = dict(model=str(weights), device="cpu", format="nifti")
    same = medsr.restore_archive(arc, tmp_path / "same.nii.gz", medsr.RestoreOptions(**opts))
    assert same.summary()["arithmetic"] == recorded and not same.warnings
    other = "bf16" if recorded == "cpu-fp32" else "fp32"
    moved = medsr.restore_archive(arc, tmp_path / "other.nii.gz", medsr.RestoreOptions(precision=other, **opts))
    assert moved.summary()["arithmetic"] == arithmetic(other, "cpu") != recorded
    (warning,) = moved.warnings
    assert recorded in warning and arithmetic(other, "cpu") in warning and "--reference" in warning

    bic = medsr.archive_series(fixture_path("basic"), tmp_path / "b.medsr.h5",
                               medsr.ArchiveOptions(method="bicubic", baselines=False))
    assert "arithmetic" not in bic.audit.provenance
    assert medsr.restore_archive(bic.archive, tmp_path / "b.nii.gz", medsr.RestoreOptions(format="nifti")).arithmetic is None
