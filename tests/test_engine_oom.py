"""The CUDA out-of-memory fallback of medsr.engine (halve the batch, then tile), driven by a stand-in
runner that runs out of memory above a size: no GPU needed to check what the engine does about it."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from medsr.engine import restore as engine
from medsr.engine.restore import EngineConfig


class _Runner:
    """Nearest x4 'network' that raises CUDA's out-of-memory error on inputs above a budget."""

    calls: list[tuple[int, int, int]] = []
    budget = 0  # largest batch * h * w it accepts

    def __init__(self, module, device, cfg):
        class _Cuda:
            @staticmethod
            def empty_cache():
                _Runner.calls.append((0, 0, 0))

        self.torch = type("T", (), {"cuda": _Cuda})

    def __call__(self, x):
        b, _, h, w = x.shape
        _Runner.calls.append((b, h, w))
        if b * h * w > _Runner.budget:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return np.repeat(np.repeat(x, 4, axis=2), 4, axis=3)


@pytest.fixture
def runner(monkeypatch):
    monkeypatch.setattr(engine, "ModelRunner", _Runner)
    _Runner.calls = []
    return _Runner


def _run(x, cfg, device="cuda"):
    out = np.full((len(x), x.shape[1] * 4, x.shape[2] * 4), np.nan, dtype=np.float32)
    for i, y in engine.iter_model(object(), x, 4, device, cfg):
        out[i:i + len(y)] = y
    return out


def test_out_of_memory_halves_the_batch_and_every_slice_is_restored(runner, caplog):
    x = np.random.default_rng(0).random((8, 16, 16), dtype=np.float32)
    runner.budget = 2 * 16 * 16  # at most 2 whole slices at once
    with caplog.at_level(logging.INFO, logger="medsr"):
        out = _run(x, EngineConfig(method="model", batch_size=8))
    np.testing.assert_array_equal(out, np.repeat(np.repeat(x, 4, axis=1), 4, axis=2))  # nothing lost or doubled
    sizes = [b for b, h, w in runner.calls if b]
    assert sizes[:3] == [8, 4, 2] and max(b for b in sizes if b * 256 <= runner.budget) == 2
    assert "CUDA out of memory: retrying with batch 4" in caplog.text


def test_out_of_memory_on_one_slice_falls_back_to_tiles(runner):
    x = np.random.default_rng(1).random((2, 64, 64), dtype=np.float32)
    runner.budget = 48 * 48  # one 64x64 slice is too big; a 32-pixel tile with 16 of context fits
    out = _run(x, EngineConfig(method="model", batch_size=1))
    np.testing.assert_array_equal(out, np.repeat(np.repeat(x, 4, axis=1), 4, axis=2))  # tiles stitched exactly
    assert any(h < 64 for b, h, w in runner.calls if b)


def test_out_of_memory_is_not_retried_on_the_cpu(runner):
    runner.budget = 0
    with pytest.raises(RuntimeError, match="out of memory"):
        _run(np.zeros((2, 16, 16), np.float32), EngineConfig(method="model", batch_size=2), device="cpu")
