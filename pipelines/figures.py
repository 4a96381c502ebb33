"""Regenerate the published figures: every number in README/docs/cards comes from one of these.

    python -m pipelines.figures              # the CPU-feasible figures (`make figures`)
    python -m pipelines.figures --only fuzz memory
    python -m pipelines.figures --list       # what each figure is, where its JSON goes, what it costs

Each figure is a command that writes JSON; this runner writes that JSON beside the document
that quotes it, wrapped with a stamp: the UTC date, the git commit (and whether the tree was
dirty), the command, the machine (CPUs, load average at the start: a loaded machine measures
speed low) and medsr's defaults at the time (default model and its weights' sha256, base,
self-ensemble, operator). A document quotes a figure together with the date of its JSON, so a
stale figure is visible as such.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MEDSR_SHARED_DATA") or REPO.parent / "shared" / "data")


@dataclass(frozen=True)
class Figure:
    name: str
    document: str  # the document quoting it
    output: str  # the stamped JSON, beside the document
    what: str
    cpu_minutes: float  # rough cost on the project's 2-core CPU
    speed: bool  # timing figures: meaningless on a loaded machine


FIGURES: dict[str, Figure] = {f.name: f for f in (
    Figure("fuzz", "docs/guarantees.md", "docs/figures/fuzz.json",
           "fuzzer: 10,000 mutated series and archives (bicubic, lossy, floor and model archives), outcome counts", 15,
           False),
    Figure("fuzz-sample", "docs/guarantees.md", "docs/figures/fuzz-sample.json",
           "fuzzer: CI's 200-case sample (seed 1) in every mode, outcome counts", 3, False),
    Figure("memory", "docs/guarantees.md", "docs/figures/memory.json",
           "peak RSS restoring 512^2 series to DICOM and NIfTI: 1,000 slices bicubic, 200 with the default model", 20,
           False),
    Figure("sag-anon", "README.md", "docs/figures/sag-anon.json",
           "`medsr archive SAG-anon` with every default: ratio, restore / bicubic / JPEG 2000 PSNR and SSIM", 8, False),
    Figure("bench-cpu", "README.md", "docs/bench-cpu.json",
           "`medsr bench --device cpu`: network and end-to-end throughput next to baselines", 3, True),
)}


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False).stdout.strip()


def stamp(command: list[str]) -> dict:
    """Date, commit, machine and medsr's defaults: what a reader needs to trust or distrust a figure."""
    import medsr
    from medsr.codec.base import DEFAULT_BASE
    from medsr.models import DEFAULT_MODEL, REGISTRY

    model = REGISTRY[DEFAULT_MODEL]
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": _git("rev-parse", "HEAD"), "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "command": command,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_average_at_start": [round(x, 2) for x in os.getloadavg()]},
        "defaults": {"medsr": medsr.__version__, "model": DEFAULT_MODEL, "model_sha256": model.sha256,
                     "ensemble": model.ensemble, "base": DEFAULT_BASE, "operator": "area4-v1"},
    }


def _run_json(command: list[str], out_json: Path, *, check: bool = True) -> dict:
    subprocess.run(command, cwd=REPO, check=check)  # the fuzzer exits 1 on a bug: its JSON says which
    return json.loads(out_json.read_text())


def measure(name: str, work: Path) -> tuple[list[str], dict]:
    """Run one figure's command; -> (command, its JSON)."""
    py = sys.executable
    out = work / f"{name}.json"
    if name in ("fuzz", "fuzz-sample"):
        cases, seed = ("10000", "0") if name == "fuzz" else ("200", "1")
        cmd = [py, "-m", "pipelines.fuzz", "--cases", cases, "--seed", seed, "--workers", "2", "--json", str(out)]
    elif name == "memory":
        result, commands = {}, []
        # bicubic on 1,000 slices (the ceiling's shape); the default model on 200 (its batch working memory:
        # on this CPU the network restores ~2 slices/s at 512^2, so 1,000 would take most of an hour)
        for method, slices, runs in (("bicubic", "1000", "floor,restore-dicom,restore-nifti"),
                                     ("model", "200", "floor,restore-dicom")):
            cmd = [py, "-m", "pipelines.memory_bench", "--slices", slices, "--size", "512", "--method", method,
                   "--runs", runs, "--json", str(out)]
            result[method] = _run_json(cmd, out)
            commands.append(" ".join(cmd[1:]))
        return commands, result
    elif name == "sag-anon":
        import tarfile

        with tarfile.open(SHARED / "sag-anon-t1-mprage.tar.gz") as tar:
            tar.extractall(work, filter="data")
        cmd = [py, "-m", "medsr", "archive", str(work / "SAG-anon"), "-o", str(work / "sag.medsr.h5"), "--json"]
        p = subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, text=True)
        return ["medsr", "archive", "SAG-anon/", "-o", "x.medsr.h5", "--json"], json.loads(p.stdout)
    elif name == "bench-cpu":
        cmd = [py, "-m", "medsr", "bench", "--device", "cpu", "--json", str(out)]
    else:
        raise SystemExit(f"unknown figure {name!r}; known: {', '.join(FIGURES)}")
    return cmd, _run_json(cmd, out, check=not name.startswith("fuzz"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.figures", description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", choices=list(FIGURES), help="these figures only")
    ap.add_argument("--list", action="store_true", help="list the figures and exit")
    args = ap.parse_args(argv)
    if args.list:
        for f in FIGURES.values():
            print(f"{f.name:10s} ~{f.cpu_minutes:g} CPU min -> {f.output} (quoted in {f.document}): {f.what}"
                  + (" [speed: measure on an idle machine]" if f.speed else ""))
        return 0
    for name in args.only or list(FIGURES):
        fig = FIGURES[name]
        with tempfile.TemporaryDirectory(prefix=f"medsr-figure-{name}-") as d:
            print(f"figure {name}: {fig.what}", file=sys.stderr, flush=True)
            s = stamp([])
            command, result = measure(name, Path(d))
            s["command"] = [Path(c).name if c == sys.executable else c for c in command]  # no local paths
        target = REPO / fig.output
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"stamp": s, "figure": name, "document": fig.document, "result": result},
                                  indent=1) + "\n")
        tmp.replace(target)
        print(f"figure {name}: wrote {fig.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
