"""Retrain every tier in one run (issue #14's GPU work): two default candidates, the better on validation, then
the lossy-base x4 tier, both x2 tiers and the SRGAN from it.

    python -m pipelines.retrain --pack .gpu/pack --out OUT --device cuda --first-seconds 240 --tier-seconds 120

Stage 1, side by side: ``scratch`` (the paper's generator from random weights: lr 3e-4 cosine) and ``warm`` (the
shipped default fine-tuned with batch norm learning: lr 1e-4 cosine), both with the manifest recipe (contrast
remaps p = 0.5, noise and gamma augmentations, foreground-biased crops, every orientation the pack lists).
The candidate with the higher mean foreground PSNR over the **validation** sources (``srresnet+dc`` in its
``eval.json``) is chosen; evaluation series are never read here. Stage 2, side by side, from the chosen weights:
``lossy`` (decoded lossy JPEG-LS base, NEAR 1-5% of the window), ``x2`` (area-mean x2 operator, JPEG-LS base NEAR
0.3-5%, crop 80: ``medsr-srresnet-x2-lossy``), ``x2-j2k`` (the same, each sample's base either that JPEG-LS or
JPEG 2000 of a slice-sized region up to 512^2 at 60-200:1, half each: ``medsr-srresnet-x2-j2k``, the model
``--ratio`` restores its x2 JPEG 2000 base with) and ``srgan`` (phase 2: pixel MSE + 1e-3 adversarial, a new
discriminator). Every run is
``pipelines.train`` in its own folder (``train.log``, ``log.csv``, ``eval.json``, weights); ``summary.json`` and
``summary.md`` give each run's validation figures, seconds and device, and the choice with its reason.
``--bundle DIR`` copies what comes back from a device call (at most 8 files): the six weights files as
``<run>.safetensors``, ``summary.json`` and ``runs.tar.gz`` (``summary.md`` and every run's logs and eval.json).

Sized for the device tool (one call, at most 600 s): 240 + 120 s of training, the evaluations and start-up fit
in ~8 minutes on an H100/H200. On a CPU it runs too (tests use a tiny pack and a few seconds).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_WARM = ROOT / "medsr" / "models" / "weights" / "medsr-srresnet-x4.safetensors"
RUNS_ARCHIVE = "runs.tar.gz"  # the bundle's one archive of every run's logs and eval.json
RECIPE = ["--remap-prob", "0.5", "--val-every", "0", "--val-slices", "18"]


@dataclass(frozen=True)
class Run:
    name: str
    args: list[str]
    weights: str = "srresnet.safetensors"  # the file this run ships
    method: str = "srresnet+dc"  # the eval.json method its validation figure is read from
    beside: str | None = None  # weights copied into the run's folder as srresnet.safetensors, measured beside it


@dataclass
class RunResult:
    name: str
    rc: int
    seconds: float
    weights: str | None
    validation_fg: float | None = None
    validation_fg_gain: float | None = None
    validation_ssim: float | None = None
    device: str | None = None
    extra: dict = field(default_factory=dict)


def stage_one(a: argparse.Namespace) -> list[Run]:
    common = ["--phase1-seconds", str(a.first_seconds), "--phase2-seconds", "0", *RECIPE]
    return [
        Run("scratch", [*common, "--lr", "3e-4", "--lr-schedule", "cosine", "--seed", str(a.seed)]),
        Run("warm", [*common, "--init-weights", str(a.warm_from), "--lr", "1e-4", "--lr-schedule", "cosine",
                     "--lr-min-ratio", "0.1", "--seed", str(a.seed + 1)]),
    ]


def stage_two(a: argparse.Namespace, chosen: Path) -> list[Run]:
    t = ["--phase1-seconds", str(a.tier_seconds), "--phase2-seconds", "0", "--init-weights", str(chosen), *RECIPE]
    return [
        Run("lossy", [*t, "--base-near-fraction", "0.01,0.05", "--lr", "5e-5", "--lr-schedule", "cosine",
                      "--lr-min-ratio", "0.1", "--seed", str(a.seed + 2)]),
        Run("x2", [*t, "--operator", "area2-v1", "--crop-size", "80", "--base-near-fraction", "0.003,0.05",
                   "--lr", "1e-4", "--lr-schedule", "cosine", "--lr-min-ratio", "0.1", "--seed", str(a.seed + 3)]),
        Run("x2-j2k", [*t, "--operator", "area2-v1", "--crop-size", "80", "--base-near-fraction", "0.003,0.05",
                       "--base-j2k-ratio", "60,200", "--j2k-context", "512", "--j2k-share", "0.5",
                       "--lr", "1e-4", "--lr-schedule", "cosine", "--lr-min-ratio", "0.1", "--seed", str(a.seed + 5)]),
        Run("srgan", ["--phase1-seconds", "0", "--phase2-seconds", str(a.tier_seconds), "--init-weights",
                      str(chosen), *RECIPE, "--seed", str(a.seed + 4)], weights="srgan.safetensors", method="srgan",
            beside=str(chosen)),
    ]


def launch(run: Run, a: argparse.Namespace, out: Path) -> tuple[subprocess.Popen, IO[str]]:
    """Start ``run`` in ``out/<name>``, its output into ``train.log`` (the caller closes it when the run ends)."""
    folder = out / run.name
    folder.mkdir(parents=True, exist_ok=True)
    if run.beside:  # phase 2 starts from the chosen generator, measured beside it (as make train-srgan)
        shutil.copyfile(run.beside, folder / "srresnet.safetensors")
    cmd = [sys.executable, "-m", "pipelines.train", "--pack", str(a.pack), "--out", str(folder), "--device", a.device,
           "--batch-size", str(a.batch_size), "--num-workers", str(a.workers), *run.args, *a.train_arg]
    log = open(folder / "train.log", "w")  # noqa: SIM115 - outlives this call
    log.write("$ " + " ".join(cmd) + "\n")
    log.flush()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), log


def read_result(run: Run, rc: int, seconds: float, out: Path) -> RunResult:
    folder = out / run.name
    weights = folder / run.weights
    res = RunResult(run.name, rc, round(seconds, 1), str(weights.relative_to(out)) if weights.is_file() else None)
    ev_path = folder / "eval.json"
    if ev_path.is_file():
        ev = json.loads(ev_path.read_text())
        m = ev.get("methods", {}).get(run.method) or {}
        res.validation_fg = m.get("psnr_fg")
        res.validation_fg_gain = m.get("gain_psnr_fg_vs_bicubic")
        res.validation_ssim = m.get("ssim")
        res.device = ev.get("training", {}).get("device")
        res.extra = {"bicubic_fg": ev.get("methods", {}).get("bicubic", {}).get("psnr_fg"),
                     "sources": sorted(ev.get("per_source", {}))}
    return res


def run_side_by_side(runs: list[Run], a: argparse.Namespace, out: Path) -> list[RunResult]:
    t0 = time.perf_counter()
    started = [(r, *launch(r, a, out)) for r in runs]
    results = []
    for run, p, log in started:
        rc = p.wait()
        log.close()
        results.append(read_result(run, rc, time.perf_counter() - t0, out))
        print(f"[{run.name}] exit {rc}, {results[-1].seconds:.0f} s, validation fg {results[-1].validation_fg}",
              flush=True)
    return results


def choose(candidates: list[RunResult]) -> tuple[RunResult, str]:
    """The candidate with the higher validation mean fg PSNR (needs weights and an eval.json)."""
    ok = [c for c in candidates if c.rc == 0 and c.weights and c.validation_fg is not None]
    if not ok:
        raise SystemExit("retrain: no stage-1 candidate finished with weights and a validation figure "
                         f"(see {', '.join(c.name + '/train.log' for c in candidates)})")
    best = max(ok, key=lambda c: c.validation_fg)
    others = "; ".join(f"{c.name} {c.validation_fg:.3f} dB" for c in ok if c is not best)
    return best, (f"{best.name}: validation mean fg PSNR {best.validation_fg:.3f} dB"
                  + (f" (vs {others})" if others else " (the only candidate that finished)"))


def write_summary(out: Path, a: argparse.Namespace, results: list[RunResult], reason: str, seconds: float) -> None:
    summary = {"command": "python -m pipelines.retrain " + " ".join(a.argv),
               "device": next((r.device for r in results if r.device), None), "seconds": round(seconds, 1),
               "choice": reason, "runs": [asdict(r) for r in results],
               "note": ("validation figures only (the manifest's held-out subjects and sources); the evaluation "
                        "series are measured after shipping, with make eval-unseen")}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [f"# Retrain ({summary['device']}, {summary['seconds']:.0f} s)", "", f"Choice: {reason}.", "",
             "| run | exit | seconds | weights | validation fg PSNR | gain vs bicubic | SSIM |", "|---|---|---|---|---|---|---|"]

    def f(x, p=3):
        return "-" if x is None else f"{x:.{p}f}"

    for r in results:
        lines.append(f"| {r.name} | {r.rc} | {r.seconds:.0f} | {r.weights or '-'} | {f(r.validation_fg)} | "
                     f"{f(r.validation_fg_gain)} | {f(r.validation_ssim, 4)} |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")


def bundle(out: Path, dest: Path, results: list[RunResult]) -> None:
    """The run as few files (a device call returns at most 8): each run's weights, summary.json, and one archive
    of summary.md and every run's logs and eval.json."""
    import tarfile

    dest.mkdir(parents=True, exist_ok=True)
    for r in results:
        if r.weights:
            shutil.copyfile(out / r.weights, dest / f"{r.name}.safetensors")
    shutil.copyfile(out / "summary.json", dest / "summary.json")
    with tarfile.open(dest / RUNS_ARCHIVE, "w:gz") as tar:
        tar.add(out / "summary.md", arcname="summary.md")
        for r in results:
            for f in sorted((out / r.name).iterdir()):
                if f.suffix in (".log", ".csv", ".json"):
                    tar.add(f, arcname=f"{r.name}/{f.name}")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m pipelines.retrain", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pack", type=Path, default=Path(".gpu/pack"), help="a pack file or a folder of parts")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu", "auto"])
    ap.add_argument("--first-seconds", type=float, default=240.0, help="stage 1 training budget per candidate")
    ap.add_argument("--tier-seconds", type=float, default=120.0, help="stage 2 training budget per tier")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=3, help="DataLoader workers per run (runs go side by side)")
    ap.add_argument("--warm-from", type=Path, default=DEFAULT_WARM, help="the warm candidate's start weights")
    ap.add_argument("--seed", type=int, default=70)
    ap.add_argument("--stage", choices=["all", "one"], default="all", help="one: stage 1 and the choice only")
    ap.add_argument("--train-arg", action="append", default=[], metavar="ARG",
                    help="appended to every pipelines.train call (repeat; e.g. --train-arg=--blocks=1)")
    ap.add_argument("--bundle", type=Path, default=None, help="also write the run as <= 8 files into this folder")
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    a = build_parser().parse_args(argv)
    a.argv = argv
    if not a.pack.exists():
        print(f"error: {a.pack}: no pack (python -m pipelines.gpu_pack makes .gpu/pack)", file=sys.stderr)
        return 2
    if not a.warm_from.is_file():
        print(f"error: {a.warm_from}: no weights for the warm candidate", file=sys.stderr)
        return 2
    a.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    first = run_side_by_side(stage_one(a), a, a.out)
    best, reason = choose(first)
    print(f"chosen: {reason}", flush=True)
    results = list(first)
    if a.stage == "all":
        results += run_side_by_side(stage_two(a, a.out / best.weights), a, a.out)
    write_summary(a.out, a, results, reason, time.perf_counter() - t0)
    print(f"wrote {a.out / 'summary.md'}", flush=True)
    if a.bundle:
        bundle(a.out, a.bundle, results)
        print(f"bundled into {a.bundle}: {', '.join(sorted(p.name for p in a.bundle.iterdir()))}", flush=True)
    return 0 if all(r.rc == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
