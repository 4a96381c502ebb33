"""The one retrain run (issue #14's GPU work), on a CPU at toy size: two default candidates, the better on the
validation split chosen, then the lossy, both x2 and SRGAN tiers from it, each a pipelines.train run with its figures."""
from __future__ import annotations

import json

import pytest
import torch

from medsr.models import SRResNet, SRResNetConfig, create_model
from medsr.models.registry import save_weights
from pack_util import make_tiny_pack
from pipelines.retrain import RUNS_ARCHIVE, RunResult, choose, main

TINY = ["--train-arg=--blocks=1", "--train-arg=--channels=8", "--train-arg=--disc-channels=8",
        "--train-arg=--disc-dense=16", "--train-arg=--val-slices=1", "--train-arg=--no-eval-extra"]


def test_the_better_validation_figure_is_chosen_and_a_failed_candidate_is_not():
    a = RunResult("scratch", 0, 1.0, "scratch/srresnet.safetensors", validation_fg=30.1)
    b = RunResult("warm", 0, 1.0, "warm/srresnet.safetensors", validation_fg=30.4)
    best, why = choose([a, b])
    assert best is b and "warm" in why and "scratch 30.100" in why
    broken = RunResult("warm", 1, 1.0, None)
    assert choose([a, broken])[0] is a
    with pytest.raises(SystemExit, match="no stage-1 candidate"):
        choose([broken])


def test_retrain_runs_every_tier_from_the_chosen_candidate(tmp_path):
    pack = tmp_path / "pack.npz"
    make_tiny_pack(pack)
    torch.manual_seed(0)
    warm = tmp_path / "warm.safetensors"
    cfg = SRResNetConfig(blocks=1, channels=8)
    save_weights(SRResNet(cfg), warm, architecture="srresnet", config=cfg.to_dict(), operator="area4-v1")
    out = tmp_path / "run"
    rc = main(["--pack", str(pack), "--out", str(out), "--device", "cpu", "--first-seconds", "2",
               "--tier-seconds", "2", "--batch-size", "2", "--workers", "0", "--warm-from", str(warm), *TINY,
               "--bundle", str(tmp_path / "OUT")])
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    runs = {r["name"]: r for r in s["runs"]}
    assert list(runs) == ["scratch", "warm", "lossy", "x2", "x2-j2k", "srgan"]
    assert all(r["rc"] == 0 and r["weights"] and r["validation_fg"] is not None for r in runs.values())
    chosen = max(("scratch", "warm"), key=lambda n: runs[n]["validation_fg"])
    assert s["choice"].startswith(chosen + ":")
    for tier in ("lossy", "x2", "x2-j2k", "srgan"):  # every tier started from the chosen candidate's weights
        log = (out / tier / "train.log").read_text()
        assert f"--init-weights {out / chosen / 'srresnet.safetensors'}" in log.splitlines()[0]
    assert create_model(out / "x2" / "srresnet.safetensors").operator == "area2-v1"
    assert create_model(out / "x2-j2k" / "srresnet.safetensors").operator == "area2-v1"
    assert "--base-j2k-ratio 60,200" in (out / "x2-j2k" / "train.log").read_text().splitlines()[0]
    assert (out / "srgan" / "srresnet.safetensors").read_bytes() == (out / chosen / "srresnet.safetensors").read_bytes()
    assert "| srgan | 0 |" in (out / "summary.md").read_text() and s["device"].startswith("cpu")
    assert s["command"].startswith("python -m pipelines.retrain --pack ") and "--bundle" in s["command"]
    # what comes back from a device call: at most 8 files, the six weights among them, logs in one archive
    import tarfile

    back = sorted(p.name for p in (tmp_path / "OUT").iterdir())
    assert len(back) <= 8 and {f"{n}.safetensors" for n in runs} <= set(back)
    with tarfile.open(tmp_path / "OUT" / RUNS_ARCHIVE) as tar:
        assert {f"{n}/eval.json" for n in runs} | {f"{n}/train.log" for n in runs} | {"summary.md"} <= set(tar.getnames())
