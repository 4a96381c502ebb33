"""Generator / discriminator shapes and sizes match the paper; weights round-trip via safetensors."""
from __future__ import annotations

import pytest
import torch

from medsr.models import Discriminator, DiscriminatorConfig, SRResNet, SRResNetConfig, create_model, save_weights


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def expected_generator_params(c: int = 64, blocks: int = 16, stages: int = 2) -> int:
    conv = lambda i, o, k: i * o * k * k + o  # noqa: E731
    head = conv(1, c, 9) + c  # + PReLU(c)
    block = 2 * conv(c, c, 3) + 2 * 2 * c + c  # two convs, two BN (weight+bias), PReLU(c)
    body_tail = conv(c, c, 3) + 2 * c
    up = conv(c, 4 * c, 3) + c
    return head + blocks * block + body_tail + stages * up + conv(c, 1, 9)


def test_generator_matches_paper():
    g = SRResNet(SRResNetConfig())
    n = n_params(g)
    assert n == expected_generator_params()
    assert 1.4e6 < n < 1.6e6  # "about 1.5 M parameters at 1 channel"
    assert len(g.body) == 16
    with torch.no_grad():
        y = g.eval()(torch.rand(2, 1, 24, 20))
    assert y.shape == (2, 1, 96, 80)


def test_discriminator_matches_paper():
    cfg = DiscriminatorConfig()
    d = Discriminator(cfg)
    convs = [m for m in d.features if isinstance(m, torch.nn.Conv2d)]
    bns = [m for m in d.features if isinstance(m, torch.nn.BatchNorm2d)]
    assert [m.out_channels for m in convs] == [64, 64, 128, 128, 256, 256, 512, 512]
    assert [m.stride[0] for m in convs] == [1, 2, 1, 2, 1, 2, 1, 2]
    assert all(m.kernel_size == (3, 3) for m in convs)
    assert len(bns) == 7  # BN on all but the first conv
    acts = [m for m in d.modules() if isinstance(m, torch.nn.LeakyReLU)]
    assert len(acts) == 9 and all(a.negative_slope == 0.2 for a in acts)
    lin = [m for m in d.classifier if isinstance(m, torch.nn.Linear)]
    assert (lin[0].in_features, lin[0].out_features, lin[1].out_features) == (512 * 6 * 6, 1024, 1)
    conv_p = sum(m.weight.numel() + m.bias.numel() for m in convs)
    assert n_params(d) == conv_p + 2 * sum(b.num_features for b in bns) + (18432 * 1024 + 1024) + 1025
    with torch.no_grad():
        logits = d.eval()(torch.rand(3, 1, 96, 96) * 2 - 1)
    assert logits.shape == (3, 1)  # logits, no sigmoid: any real value


def test_discriminator_rejects_wrong_crop():
    d = Discriminator(DiscriminatorConfig(base_channels=8, dense=16))
    try:
        d(torch.zeros(1, 1, 64, 64))
    except ValueError as e:
        assert "96x96" in str(e)
    else:
        raise AssertionError("expected ValueError")


def test_safetensors_round_trip(tmp_path):
    cfg = SRResNetConfig(blocks=2, channels=16)
    g = SRResNet(cfg).eval()
    with torch.no_grad():
        for p in g.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    path = tmp_path / "g.safetensors"
    digest = save_weights(g, path, architecture="srresnet", config=cfg.to_dict(), operator="area4-v1",
                          extra={"phase": "srresnet"})
    loaded = create_model(path)
    assert loaded.sha256 == digest and loaded.operator == "area4-v1" and loaded.scale == 4
    assert loaded.module.config == cfg
    x = torch.rand(1, 1, 12, 12)
    with torch.no_grad():
        assert torch.equal(g(x), loaded.module(x))
    assert path.read_bytes()[:8] != b"\x80\x02\x8a\x0a"  # not a pickle


# ---------------------------------------------------------------- shipped weights

def test_shipped_models_load_from_safetensors_with_checked_sha256():
    from medsr.codec import get_operator
    from medsr.models import REGISTRY, create_model
    from medsr.models.registry import file_sha256

    assert {"medsr-srresnet-x4", "medsr-srgan-x4"} <= set(REGISTRY)
    for name, entry in REGISTRY.items():
        assert entry.path.suffix == ".safetensors" and entry.path.stat().st_size < 20_000_000
        assert file_sha256(entry.path) == entry.sha256
        assert entry.path.with_name(entry.card).exists(), f"model card missing for {name}"
        loaded = create_model(name)
        assert loaded.scale == entry.config.scale and loaded.model_id.startswith(name + "@")
        assert get_operator(entry.operator).scale == loaded.scale  # an x2 tier is trained on area2-v1


def test_default_model_restores_a_fixture_above_bicubic(fixture_path, tmp_path):
    import medsr

    res = medsr.archive_series(fixture_path("large_256"), tmp_path / "m.medsr.h5", medsr.ArchiveOptions(baselines=False))
    m = res.audit["methods"]
    assert res.info.method == "model" and res.info.model_id.startswith("medsr-srresnet-x4@")
    assert m["restored"]["psnr_fg"] > m["bicubic"]["psnr_fg"]
    assert m["restored"]["ssim"] > m["bicubic"]["ssim"]


def test_tampered_weights_are_refused(tmp_path, monkeypatch):
    import dataclasses

    import medsr
    from medsr.models import registry

    entry = registry.REGISTRY["medsr-srresnet-x4"]
    bad = dataclasses.replace(entry, sha256="0" * 64)
    monkeypatch.setitem(registry.REGISTRY, "medsr-srresnet-x4", bad)
    with pytest.raises(medsr.ModelError, match="sha256"):
        registry.create_model("medsr-srresnet-x4")


def test_a_restore_finds_the_archived_weights_by_digest_after_the_name_moves_on(fixture_path, tmp_path, monkeypatch):
    """Shipping new weights under the default name must not change what an old archive restores:
    the archive records the weights' sha256, and the older weights stay shipped under a versioned name."""
    import dataclasses

    import medsr
    from medsr.models import registry

    src = fixture_path("basic")
    arc = tmp_path / "a.medsr.h5"
    res = medsr.archive_series(src, arc, medsr.ArchiveOptions(method="model", baselines=False))
    name = res.info.model_id.split("@")[0]
    assert name == registry.DEFAULT_MODEL
    # the name moves on to other (older) weights; the archive's weights stay shipped as "<name>-next"
    moved = dict(registry.REGISTRY)
    moved[name + "-next"] = dataclasses.replace(registry.REGISTRY[name], name=name + "-next")
    moved[name] = dataclasses.replace(registry.REGISTRY[name + "-v1"], name=name)
    monkeypatch.setattr(registry, "REGISTRY", moved)
    out = medsr.restore_archive(arc, tmp_path / "r", reference=src)
    assert out.model_id.startswith(name + "-next@") and not out.warnings
    assert out.audit["methods"]["restored"]["psnr"] == pytest.approx(res.audit["methods"]["restored"]["psnr"], abs=1e-9)
    # weights shipped nowhere any more: restored by name, with the warning
    del moved[name + "-next"]
    again = medsr.restore_archive(arc, tmp_path / "r2")
    assert again.model_id.startswith(name + "@") and any("stored audit does not describe" in w for w in again.warnings)


def test_the_previous_default_weights_stay_shipped():
    """Archives written before the default was retrained recorded medsr-srresnet-x4@51374c8f3e99."""
    from medsr.models import REGISTRY, find_by_sha256

    old = find_by_sha256("51374c8f3e99be085b0ff8fafba7f3eadeb780f537a60d19ae95e8732da8eb97")
    assert old is not None and old.name == "medsr-srresnet-x4-v1"
    v2 = find_by_sha256("987c76525c068302e2a00c8f2eb1b6c9029d5fa2a281ec3c22a84ebcd0ee49ef")  # default until 2026-11-30
    assert v2 is not None and v2.name == "medsr-srresnet-x4-v2"
    lossy_v1 = find_by_sha256("5b69d4dcfc3a1c24c150a54895506aa67799e0a64c4cf5e2ca78e7776cd9cc1c")  # until 2026-12-01
    assert lossy_v1 is not None and lossy_v1.name == "medsr-srresnet-x4-lossy-v1" and lossy_v1.base == "lossy"
    srgan_v1 = find_by_sha256("b0667f86dbc06bdd7309b6c1d9bacf6186a95d36e004b0531de9614a0d896dc3")  # until 2026-12-01
    assert srgan_v1 is not None and srgan_v1.name == "medsr-srgan-x4-v1" and srgan_v1.kind == "perceptual"
    assert REGISTRY["medsr-srgan-x4"].sha256 != srgan_v1.sha256
    x2_v1 = find_by_sha256("5035074da8fce58a4c97fa1b4919a5717367d71205907996444c70dad6cf84bb")  # until 2026-12-01
    assert x2_v1 is not None and x2_v1.name == "medsr-srresnet-x2-lossy-v1" and x2_v1.operator == "area2-v1"
    assert REGISTRY["medsr-srresnet-x2-lossy"].sha256 != x2_v1.sha256
    from medsr.models import default_model_for

    assert default_model_for("lossy", "area2-v1") == "medsr-srresnet-x2-lossy"  # new archives use the new weights
    assert default_model_for(None, "area2-v1") == "medsr-srresnet-x2-lossy"  # the JPEG 2000 base's tier comes after it
