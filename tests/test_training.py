"""Training pipeline: the archive's own operator in the transforms, learning, and the train CLI end to end."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import medsr.codec
from medsr.codec import IntensityWindow, downsample
from medsr.models import SRResNet, SRResNetConfig, create_model
from medsr.transforms import (AugmentConfig, MakeLowRes, MakeLowResd, RandContrastRemap, RandContrastRemapd,
                              RandFlipRot90, RandFlipRot90d, RandForegroundCrop, RandGamma, RandGammad, RandMRNoise,
                              RandMRNoised, SliceSource, slice_items, train_transforms, training_dataset)
from pipelines.prepare_data import PackVolume, load_pack, save_pack
from pack_util import make_tiny_pack, synthetic_volume

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from threads, and OpenMP spin-waits collapse on a busy 2-core box."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_make_low_res_is_the_codec_operator():
    assert MakeLowRes.fn is medsr.codec.downsample
    assert MakeLowResd().op.fn is downsample
    x = np.random.default_rng(1).integers(0, 4096, (8, 12), dtype=np.uint16)
    np.testing.assert_array_equal(MakeLowRes()(x), downsample(x, "area4-v1"))
    out = MakeLowResd()({"hr": x})
    np.testing.assert_array_equal(out["lr"], downsample(x))
    with pytest.raises(TypeError):
        MakeLowRes()(x.astype(np.float32))


def test_crop_is_grid_aligned_and_foreground_biased():
    img = np.zeros((200, 240), np.uint16)
    img[150:190, 10:50] = 1000
    t = RandForegroundCrop(size=96, multiple=4, fg_prob=1.0, seed=3)
    for _ in range(20):
        c = t(img, threshold=50.0)
        y, x = t._corner
        assert c.shape == (96, 96) and y % 4 == 0 and x % 4 == 0
        assert (c > 50).any()


def test_pipeline_pairs_are_consistent_with_the_archive():
    vol = synthetic_volume()
    items = slice_items(SliceSource("syn", vol, axes=(0,)))
    assert items and all(it["hr"].shape == (128, 128) for it in items)
    # without intensity jitter the pair maps back exactly: downsample(stored HR) == stored LR
    cfg = AugmentConfig(amplitude=(1.0, 1.0), window_jitter=0.0)
    tf = train_transforms(cfg)
    tf.set_random_state(seed=0)
    lo, hi = items[0]["window"]
    w = IntensityWindow(lo, hi)
    for it in items:
        s = tf(it)
        assert s["lr"].shape == (1, 24, 24) and s["hr"].shape == (1, 96, 96)
        assert s["lr"].dtype == np.float32 and s["hr"].dtype == np.float32
        hr_stored = np.rint(medsr.codec.from_signed_unit(s["hr"][0], w)).astype(np.uint16)
        lr_stored = np.rint(medsr.codec.from_unit(s["lr"][0], w)).astype(np.uint16)
        np.testing.assert_array_equal(downsample(hr_stored), lr_stored)
    # with jitter: still a block-mean pair up to the rounding of stored values
    tf = train_transforms(AugmentConfig(noise_prob=1.0))
    tf.set_random_state(seed=1)
    s = tf(items[0])
    hr01 = (s["hr"][0] + 1) / 2
    block = hr01.reshape(24, 4, 24, 4).mean(axis=(1, 3))
    assert np.abs(block - s["lr"][0]).max() < 0.02


def test_random_transforms_are_reproducible():
    items = slice_items(SliceSource("syn", synthetic_volume(), axes=(0,)))
    a, b = train_transforms(), train_transforms()
    a.set_random_state(seed=7)
    b.set_random_state(seed=7)
    for it in items[:3]:
        sa, sb = a(it), b(it)
        np.testing.assert_array_equal(sa["hr"], sb["hr"])
        np.testing.assert_array_equal(sa["lr"], sb["lr"])
    assert items[0]["hr"].shape == (128, 128)  # the source items are not modified


def test_a_few_steps_reduce_the_loss():
    from monai.data import DataLoader

    from medsr.models import SRResNet, SRResNetConfig

    torch.manual_seed(0)
    ds = training_dataset(slice_items(SliceSource("syn", synthetic_volume(), axes=(0,))), min_length=16)
    batch = next(iter(DataLoader(ds, batch_size=2, shuffle=False, num_workers=0)))
    g = SRResNet(SRResNetConfig(blocks=2, channels=16)).train()
    opt = torch.optim.Adam(g.parameters(), lr=1e-3, betas=(0.9, 0.999))
    losses = []
    for _ in range(40):
        loss = torch.nn.functional.mse_loss(g(batch["lr"]), batch["hr"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:3])


def test_pack_round_trip(tmp_path):
    make_tiny_pack(tmp_path / "p.npz")
    pack = load_pack(tmp_path / "p.npz")
    assert pack.val_source == "syn-val"
    assert [v.split for v in pack.volumes] == ["train", "val"]
    assert pack.volumes[0].data.dtype == np.uint16 and pack.volumes[1].data.shape == (1, 132, 132)


def test_a_held_out_slice_moved_to_training_is_weighted_and_one_stays_held_out(tmp_path):
    from pipelines.prepare_data import move_to_train
    from pipelines.train import TrainConfig, make_runtime, train_loader

    big = PackVolume("vol_b", "big.dcm", "syn-val", "s3", "val", synthetic_volume(1, 256, 3), (0,))
    val = PackVolume("vol_v", "syn-v", "syn-val", "s2", "val", synthetic_volume(1, 132, 5), (0,))
    train = PackVolume("vol_a", "syn-a", "syn", "s1", "train", synthetic_volume(6, 128, 0), (0, 1, 2))
    move_to_train([train, big, val], ["big.dcm"], repeat=5)
    assert (big.split, big.repeat, val.split) == ("train", 5, "val")
    with pytest.raises(SystemExit, match="not a validation slice"):
        move_to_train([train, big, val], ["nope.dcm"], repeat=5)
    with pytest.raises(SystemExit, match="keep at least one"):
        move_to_train([train, val], ["syn-v"], repeat=2)
    save_pack(tmp_path / "p.npz", [train, big, val], val_source="syn-val")
    pack = load_pack(tmp_path / "p.npz")
    assert [v.repeat for v in pack.volumes] == [1, 5, 1]
    cfg = TrainConfig(pack=tmp_path / "p.npz", device="cpu", num_workers=0)
    _, n_items = train_loader(pack, cfg, make_runtime(cfg))
    _, n_plain = train_loader(load_pack(tmp_path / "p.npz").__class__(
        [v for v in pack.volumes if v.name != "big.dcm"], pack.val_source, pack.meta), cfg, make_runtime(cfg))
    assert n_items == n_plain + 5  # the one big slice, listed five times


def test_train_cli_end_to_end(tmp_path):
    from pipelines.train import main

    pack = tmp_path / "pack.npz"
    make_tiny_pack(pack)
    out = tmp_path / "run"
    rc = main(["--pack", str(pack), "--out", str(out), "--device", "cpu", "--phase1-seconds", "3",
               "--phase2-seconds", "3", "--blocks", "1", "--channels", "8", "--disc-channels", "8",
               "--disc-dense", "16", "--batch-size", "2", "--num-workers", "0", "--val-every", "5",
               "--log-every", "5", "--val-slices", "1", "--seed", "1"])
    assert rc == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == ["checkpoint.json", "eval.json", "log.csv", "srgan.safetensors", "srresnet.safetensors"]
    ev = json.loads((out / "eval.json").read_text())
    assert ev["val_source"] == "syn-val"
    for m in ("bicubic", "srresnet", "srgan", "srresnet+dc"):
        assert {"psnr", "psnr_fg", "ssim"} <= set(ev["methods"][m])
    # the projection makes the restore consistent with the stored low-res data: never worse than garbage
    assert ev["methods"]["bicubic"]["psnr"] > 20
    header = (out / "log.csv").read_text().splitlines()[0].split(",")
    assert {"step", "loss", "lr", "val_psnr", "val_ssim"} <= set(header)
    for name in ("srresnet", "srgan"):
        m = create_model(out / f"{name}.safetensors")
        assert m.operator == "area4-v1" and m.module.config.channels == 8


def test_vgg54_needs_a_local_weights_file():
    from pipelines.train import VGG54Content

    with pytest.raises(SystemExit) as e:
        VGG54Content(None)
    assert "vgg" in str(e.value).lower() or "torchvision" in str(e.value)


BLOCKED = ("pydicom", "nibabel", "h5py", "tqdm", "matplotlib")


def test_training_imports_need_no_dicom_stack():
    code = (
        "import sys\n"
        f"for n in {BLOCKED!r}: sys.modules[n] = None\n"
        "import medsr.models, medsr.codec, medsr.transforms, pipelines.train\n"
        f"bad = [n for n in {BLOCKED!r} if sys.modules.get(n) is not None]\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]


def test_freeze_bn_keeps_running_statistics_while_weights_learn():
    from pipelines.train import train_mode

    torch.manual_seed(0)
    g = SRResNet(SRResNetConfig(blocks=2, channels=8))
    bns = [m for m in g.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [m.running_mean.clone() for m in bns]
    train_mode(g, freeze_bn=True)
    assert g.training and not any(m.training for m in bns)
    opt = torch.optim.Adam(g.parameters(), lr=1e-2)
    w0 = bns[0].weight.detach().clone()
    loss = g(torch.rand(2, 1, 8, 8)).square().mean()
    loss.backward()
    opt.step()
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before, bns))  # statistics fixed
    assert not torch.equal(w0, bns[0].weight)  # the affine scale still learns
    train_mode(g, freeze_bn=False)
    assert all(m.training for m in bns)


def test_crop_size_option_sets_the_training_crop_and_refuses_bad_sizes():
    from pipelines.train import config_from_args

    assert config_from_args(["--crop-size", "128"]).augment.crop_size == 128
    assert config_from_args([]).augment.crop_size == 96  # the paper's
    for bad in ("30", "98"):
        with pytest.raises(SystemExit, match="--crop-size"):
            config_from_args(["--crop-size", bad])


def test_slice_level_jpeg2000_pairs_stay_aligned_and_the_option_is_checked():
    """--base-j2k-ratio: a slice-sized region is coded, then the crop is taken from the high-res and low-res
    alike, so (coding off, no jitter) the low-res crop is exactly the block means of the high-res crop."""
    from pipelines.train import config_from_args

    items = slice_items(SliceSource("syn", synthetic_volume(), axes=(0,)), crop_size=48, op_id="area2-v1")
    cfg = AugmentConfig(amplitude=(1.0, 1.0), window_jitter=0.0, base_j2k_ratio=(60.0, 200.0), base_prob=0.0,
                        op_id="area2-v1", crop_size=48, j2k_context=96)
    tf = train_transforms(cfg)
    tf.set_random_state(seed=2)
    lo, hi = items[0]["window"]
    w = IntensityWindow(lo, hi)
    for it in items[:6]:
        s = tf(it)
        assert s["hr"].shape == (1, 48, 48) and s["lr"].shape == (1, 24, 24)
        hr_stored = np.rint(medsr.codec.from_signed_unit(s["hr"][0], w)).astype(np.uint16)
        lr_stored = np.rint(medsr.codec.from_unit(s["lr"][0], w)).astype(np.uint16)
        np.testing.assert_array_equal(downsample(hr_stored, "area2-v1"), lr_stored)
    coded = train_transforms(AugmentConfig(base_j2k_ratio=(150.0, 150.0), op_id="area2-v1", crop_size=48))
    coded.set_random_state(seed=2)
    assert coded(items[0])["lr"].shape == (1, 24, 24)
    c = config_from_args(["--operator", "area2-v1", "--crop-size", "80", "--base-j2k-ratio", "60,200"])
    assert c.augment.base_j2k_ratio == (60.0, 200.0) and c.augment.j2k_context == 256 and c.val_j2k_ratio
    for bad, words in ((["--base-j2k-ratio", "1,50"], "--base-j2k-ratio"),
                       (["--base-j2k-ratio", "60,200", "--base-j2k-psnr", "24,40"], "one JPEG 2000 base"),
                       (["--base-j2k-ratio", "60,200", "--base-near-fraction", "0.01,0.03", "--j2k-share", "1"],
                        "--j2k-share"),
                       (["--base-j2k-ratio", "60,200", "--j2k-context", "64"], "--j2k-context")):
        with pytest.raises(SystemExit, match=words):
            config_from_args(bad)


def test_both_bases_draw_one_coder_per_sample_and_keep_pairs_aligned():
    """--base-near-fraction with --base-j2k-ratio: each sample's slice-sized region is coded by the JPEG-LS base
    (low-res within +-NEAR of the exact block means of its high-res crop: the pair is aligned) or by the JPEG 2000
    base at an archive ratio (errors well past that NEAR); over a dozen samples both occur."""
    from medsr.codec.base import lossy_near
    from pipelines.train import config_from_args

    items = slice_items(SliceSource("syn", synthetic_volume(), axes=(0,)), crop_size=48, op_id="area2-v1")
    cfg = AugmentConfig(amplitude=(1.0, 1.0), window_jitter=0.0, base_near_fraction=(0.003, 0.003),
                        base_j2k_ratio=(300.0, 300.0), op_id="area2-v1", crop_size=48, j2k_context=96)
    tf = train_transforms(cfg)
    tf.set_random_state(seed=3)
    lo, hi = items[0]["window"]
    w = IntensityWindow(lo, hi)
    near = lossy_near(w.width, 0.003)
    kinds = []
    for it in (items * 3)[:12]:
        s = tf(it)
        assert s["hr"].shape == (1, 48, 48) and s["lr"].shape == (1, 24, 24)
        hr_stored = np.rint(medsr.codec.from_signed_unit(s["hr"][0], w)).astype(np.int64)
        lr_stored = np.rint(medsr.codec.from_unit(s["lr"][0], w)).astype(np.int64)
        err = int(np.abs(downsample(hr_stored.astype(np.uint16), "area2-v1").astype(np.int64) - lr_stored).max())
        kinds.append("jpegls" if err <= near else "j2k")
    assert set(kinds) == {"jpegls", "j2k"}, kinds
    c = config_from_args(["--operator", "area2-v1", "--crop-size", "80", "--base-near-fraction", "0.003,0.05",
                          "--base-j2k-ratio", "60,200", "--j2k-share", "0.25"])
    assert c.augment.j2k_share == 0.25 and c.augment.base_near_fraction == (0.003, 0.05)
    assert c.val_j2k_ratio and c.val_base_fraction is None  # validated on the JPEG 2000 base only


def test_contrast_remap_keeps_background_and_can_swap_tissue_order():
    from medsr.transforms import RandContrastRemap

    u = np.linspace(0.0, 1.2, 241, dtype=np.float32)
    np.testing.assert_array_equal(RandContrastRemap(prob=0.0, seed=0)(u), u)  # off: identity
    t = RandContrastRemap(prob=1.0, seed=0)
    swapped = 0
    for _ in range(50):
        f = t(u)
        bg = u <= t.background
        np.testing.assert_allclose(f[bg], u[bg], atol=1e-6)  # background and its noise untouched
        inside = (u > t.background) & (u <= 1.0)
        assert f[inside].min() >= min(t.floor, t.background) - 1e-6 and f[inside].max() <= 1.0 + 1e-6
        np.testing.assert_allclose(t(t.x.astype(np.float32), randomize=False).max(), 1.0, atol=1e-6)  # a knot reaches 1
        swapped += bool(np.any(np.diff(f[inside]) < -1e-6))  # some tissue got darker than a darker one
    assert 10 <= swapped < 50  # non-monotone curves happen, monotone ones too


def test_contrast_remap_is_off_in_the_shipped_recipe_and_set_by_the_train_option():
    from medsr.transforms import RandContrastRemapd
    from pipelines.train import config_from_args

    assert AugmentConfig().remap_prob == 0.0
    assert not any(isinstance(t, RandContrastRemapd) for t in train_transforms().transforms)
    cfg = config_from_args(["--remap-prob", "0.5"]).augment
    assert cfg.remap_prob == 0.5
    assert any(isinstance(t, RandContrastRemapd) for t in train_transforms(cfg).transforms)
    # still reproducible with the remap on
    items = slice_items(SliceSource("syn", synthetic_volume(), axes=(0,)))
    a, b = train_transforms(cfg), train_transforms(cfg)
    a.set_random_state(seed=3)
    b.set_random_state(seed=3)
    np.testing.assert_array_equal(a(items[0])["hr"], b(items[0])["hr"])



@pytest.mark.parametrize("twin, array", [
    (lambda: RandGammad(prob=1.0), lambda: RandGamma(prob=1.0)),
    (lambda: RandMRNoised(prob=1.0), lambda: RandMRNoise(prob=1.0)),
    (lambda: RandContrastRemapd(prob=1.0), lambda: RandContrastRemap(prob=1.0)),
    (RandFlipRot90d, RandFlipRot90),
], ids=["gamma", "noise", "remap", "flip-rot90"])
def test_a_dictionary_twin_draws_what_its_array_transform_draws(twin, array):
    """Seeded alike, the ``...d`` form and the array form give the same output, several draws in a row."""
    d, a = twin().set_random_state(seed=5), array().set_random_state(seed=5)
    x = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    for _ in range(4):
        np.testing.assert_array_equal(d({"hr": x})["hr"], a(x))
