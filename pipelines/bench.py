"""Benchmarks: every figure next to a baseline measured in the same process, with the device name.

    python -m pipelines.bench [--device auto|cpu|cuda] [--json OUT] [--series DIR] [--quick] [--compile]

1. model throughput (slices/s) at 64->256 and 128->512: fp32 eager (baseline) vs the engine's
   tuned path (CUDA: bf16 + channels_last [+ torch.compile]; CPU: channels_last [+ bf16 on AMX]);
   with the max |tuned - fp32| difference of the outputs;
2. end-to-end ``restore`` of a 192-slice 256^2 series (DICOM files written) vs the I/O floor
   (the same restore with nearest-neighbour upsampling instead of the network) and vs bicubic;
   with the default model's self-ensemble (``medsr models``) and, beside it, one network pass;
3. archive throughput (with its audit, and without the JPEG 2000 baseline);
4. the issue-16 ratios as whole processes (``pipelines/bench_ratios.py``): ``medsr archive --method
   bicubic`` vs re-encoding the same files as JPEG 2000 with pydicom, the default archive vs the
   default restore + 2x that re-encode, and whole-process restore slices/s and start-up.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def device_name(device: str) -> str:
    import torch

    if device == "cuda":
        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()} CPU x{torch.get_num_threads()} threads"


def _sync(device):
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _throughput(fn, x, device, min_seconds: float) -> float:
    fn(x)
    _sync(device)
    n, t0 = 0, time.perf_counter()
    while True:
        fn(x)
        n += x.shape[0]
        _sync(device)
        dt = time.perf_counter() - t0
        if dt >= min_seconds:
            return n / dt


def model_throughput(device: str, *, quick: bool, compile_: bool) -> list[dict]:
    import torch

    import copy

    from medsr.engine.restore import ModelRunner
    from medsr.engine import EngineConfig
    from medsr.models import SRResNet

    torch.manual_seed(0)
    net = SRResNet().eval()
    rows = []
    sizes = [(64, 256 if device == "cuda" else 8), (128, 64 if device == "cuda" else 2)]
    for lr, batch in sizes:
        x = torch.rand(batch, 1, lr, lr).numpy()
        base = ModelRunner(net, device, EngineConfig(precision="fp32"))
        if device == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        secs = 1.0 if quick else 3.0
        fp32 = _throughput(base, x, device, secs)
        ref = base(x[:2])
        if device == "cuda":
            torch.backends.cudnn.allow_tf32 = True
        tuned_runner = ModelRunner(copy.deepcopy(net), device, EngineConfig(precision="auto"))
        tuned = _throughput(tuned_runner, x, device, secs)
        diff = float(np.abs(tuned_runner(x[:2]) - ref).max())
        row = {"bench": "model_throughput", "size": f"{lr}->{lr * 4}", "batch": batch, "device": device,
               "device_name": device_name(device), "fp32_eager_slices_s": round(fp32, 1),
               "tuned_slices_s": round(tuned, 1), "tuned_precision": tuned_runner.precision,
               "speedup": round(tuned / fp32, 2), "max_abs_diff_vs_fp32": round(diff, 5)}
        if compile_ and device == "cuda":
            comp = ModelRunner(copy.deepcopy(net), device, EngineConfig(precision="auto", compile=True))
            t = time.perf_counter()
            comp(x)
            row["compile_seconds"] = round(time.perf_counter() - t, 1)
            row["compiled_slices_s"] = round(_throughput(comp, x, device, secs), 1)
            row["compiled_speedup"] = round(row["compiled_slices_s"] / fp32, 2)
            row["compiled_max_abs_diff_vs_fp32"] = round(float(np.abs(comp(x[:2]) - ref).max()), 5)
        rows.append(row)
    return rows


def _series(path: str | None, tmp: Path) -> Path:
    if path:
        return Path(path)
    from dicom_fixtures.build import build_series
    from dicom_fixtures.spec import SeriesSpec

    out = tmp / "bench_series"
    build_series(out, SeriesSpec(rows=256, cols=256, slices=192, seed=7))
    return out


def _weights(tmp: Path) -> str | None:
    """The shipped default model if there is one, else a random-init paper generator (speed only)."""
    from medsr.models import DEFAULT_MODEL, REGISTRY, SRResNet, save_weights

    if DEFAULT_MODEL in REGISTRY:
        return None
    p = tmp / "random-paper-generator.safetensors"
    net = SRResNet()
    save_weights(net, p, architecture="srresnet", config=net.config.to_dict(), operator="area4-v1")
    return str(p)


def end_to_end(device: str, series: Path, tmp: Path) -> list[dict]:
    import medsr

    weights = _weights(tmp)
    arc = tmp / "bench.medsr.h5"
    t = time.perf_counter()
    res = medsr.archive_series(series, arc, medsr.ArchiveOptions(method="model", model=weights, device=device, force=True))
    t_archive = time.perf_counter() - t
    t = time.perf_counter()
    medsr.archive_series(series, tmp / "fast.medsr.h5", medsr.ArchiveOptions(method="model", model=weights, device=device,
                                                                        baselines=False, force=True))
    t_archive_noj2k = time.perf_counter() - t
    n = res.info.n_slices
    mb = res.info.original_file_bytes / 1e6
    rows = [{"bench": "archive", "device": device, "device_name": device_name(device), "slices": n,
             "seconds_with_audit": round(t_archive, 2), "slices_s_with_audit": round(n / t_archive, 1),
             "mb_s_with_audit": round(mb / t_archive, 2), "seconds_without_j2k": round(t_archive_noj2k, 2),
             "mb_s_without_j2k": round(mb / t_archive_noj2k, 2), "ratio": round(res.ratio, 1)}]
    times = {}
    ens = res.info.model_ensemble
    runs = [("model", medsr.RestoreOptions(method="model", model=weights, device=device, force=True))]
    if ens > 1:  # the default model restores with a self-ensemble: show what one pass costs beside it
        runs.append(("model_one_pass", medsr.RestoreOptions(method="model", model=weights, device=device, force=True,
                                                            ensemble=1)))
    runs += [("nearest_io_floor", medsr.RestoreOptions(method="nearest", force=True)),
             ("bicubic", medsr.RestoreOptions(method="bicubic", force=True))]
    for label, opts in runs:
        medsr.restore_archive(arc, tmp / f"warm_{label}", opts)  # warm-up (model load, cudnn autotune)
        t = time.perf_counter()
        medsr.restore_archive(arc, tmp / f"out_{label}", opts)
        times[label] = time.perf_counter() - t
        shutil.rmtree(tmp / f"out_{label}", ignore_errors=True)
        shutil.rmtree(tmp / f"warm_{label}", ignore_errors=True)
    rows.append({"bench": "restore_end_to_end", "device": device, "device_name": device_name(device), "slices": n,
                 "size": f"{res.info.rows}x{res.info.cols}",
                 "model_ensemble": ens, "model_slices_s": round(n / times["model"], 1),
                 **({"model_one_pass_slices_s": round(n / times["model_one_pass"], 1)} if ens > 1 else {}),
                 "io_floor_slices_s": round(n / times["nearest_io_floor"], 1),
                 "bicubic_slices_s": round(n / times["bicubic"], 1),
                 "model_vs_io_floor": round(times["model"] / times["nearest_io_floor"], 2),
                 "model_vs_bicubic": round(times["model"] / times["bicubic"], 2),
                 "weights": "shipped default" if weights is None else "random-init paper generator (speed only)"})
    return rows


def _table(rows: list[dict]) -> str:
    lines = []
    for r in rows:
        lines.append("  ".join(f"{k}={v}" for k, v in r.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--json", help="also write the results to this JSON file")
    ap.add_argument("--series", help="series folder for the end-to-end runs (default: a 192-slice 256^2 fixture)")
    ap.add_argument("--quick", action="store_true", help="shorter timing loops")
    ap.add_argument("--compile", action="store_true", help="include torch.compile in the tuned CUDA path")
    ap.add_argument("--skip-end-to-end", action="store_true")
    ap.add_argument("--skip-ratios", action="store_true", help="skip the whole-process ratios (bench_ratios.py)")
    args = ap.parse_args(argv)
    from medsr.engine import select_device

    device = select_device(args.device)
    rows = model_throughput(device, quick=args.quick, compile_=args.compile)
    print(_table(rows), flush=True)
    if not args.skip_end_to_end:
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            more = end_to_end(device, _series(args.series, tmp), tmp)
        print(_table(more), flush=True)
        rows += more
    if not args.skip_ratios:
        from pipelines.bench_ratios import run as run_ratios

        with tempfile.TemporaryDirectory() as d:
            more = run_ratios(None, Path(args.series) if args.series else None, Path(d))
        print(_table(more), flush=True)
        rows += more
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
