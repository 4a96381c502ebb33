"""The two architecture trials of issue #14 (batch norm off, a deeper body) start from the shipped function:
batch norm folded into the convs, new residual blocks as identities; a variant's weights file says what it is."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medsr.models import SRResNet, SRResNetConfig, create_model
from medsr.models.registry import save_weights
from medsr.models.srresnet import fold_batch_norm
from pipelines.train import config_from_args, load_init_weights


def _trained_bn_generator(blocks: int = 2, channels: int = 8, seed: int = 0) -> SRResNet:
    """A small generator whose batch-norm layers hold non-trivial statistics and affine maps, as trained ones do."""
    torch.manual_seed(seed)
    g = SRResNet(SRResNetConfig(blocks=blocks, channels=channels))
    for m in g.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.2, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return g.eval()


@pytest.fixture()
def source(tmp_path) -> tuple[SRResNet, Path]:
    g = _trained_bn_generator()
    path = tmp_path / "src.safetensors"
    save_weights(g, path, architecture="srresnet", config=g.config.to_dict(), operator="area4-v1")
    return g, path


def test_folding_batch_norm_keeps_the_function():
    g = _trained_bn_generator()
    h = SRResNet(SRResNetConfig(blocks=2, channels=8, batch_norm=False)).eval()
    h.load_state_dict(fold_batch_norm(g.state_dict()))  # strict: every key of the BN-free generator, none left over
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in h.modules())
    x = torch.rand(2, 1, 12, 12)
    with torch.no_grad():
        assert torch.allclose(g(x), h(x), atol=1e-5)


def test_a_warm_start_without_batch_norm_starts_as_the_source(source):
    g, path = source
    h = SRResNet(SRResNetConfig(blocks=2, channels=8, batch_norm=False))
    load_init_weights(h, path)
    x = torch.rand(1, 1, 10, 10)
    with torch.no_grad():
        assert torch.allclose(g(x), h.eval()(x), atol=1e-5)


@pytest.mark.parametrize("batch_norm", [True, False])
def test_a_deeper_warm_start_starts_as_the_source_and_its_new_blocks_can_learn(source, batch_norm, capsys):
    g, path = source
    h = SRResNet(SRResNetConfig(blocks=4, channels=8, batch_norm=batch_norm))
    load_init_weights(h, path)
    assert "residual blocks 2, 3 as identities" in capsys.readouterr().out
    x = torch.rand(1, 1, 10, 10)
    with torch.no_grad():
        assert torch.allclose(g(x), h.eval()(x), atol=1e-5)
    h.train()
    h(x).square().mean().backward()
    last = h.body[3].bn2 if batch_norm else h.body[3].conv2
    assert last.weight.grad is not None and last.weight.grad.abs().sum() > 0  # not a dead block


def test_a_variant_weights_file_names_its_architecture(tmp_path):
    cfg = SRResNetConfig(blocks=3, channels=8, batch_norm=False)
    path = tmp_path / "nobn.safetensors"
    save_weights(SRResNet(cfg), path, architecture="srresnet", config=cfg.to_dict(), operator="area4-v1")
    m = create_model(path)
    assert m.module.config == cfg
    assert not any(isinstance(x, torch.nn.BatchNorm2d) for x in m.module.modules())
    # the paper's generator writes the metadata it always has (no batch_norm key): old files and new agree
    assert "batch_norm" not in SRResNetConfig().to_dict()


def test_the_train_options_build_the_variants():
    cfg = config_from_args(["--pack", "p.npz", "--out", "o", "--no-batch-norm", "--blocks", "24"])
    assert cfg.generator_config() == SRResNetConfig(blocks=24, batch_norm=False)
    assert config_from_args(["--pack", "p.npz", "--out", "o"]).generator_config().batch_norm
