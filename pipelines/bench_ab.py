"""Two checkouts of medsr, interleaved: the bicubic archive ratio of each, round by round on the same series.

    git worktree add ../medsr-old <commit>
    python -m pipelines.bench_ab ../medsr-old [--rounds 6] [--series DIR] [--json OUT]

Each round runs, for the other checkout and then this one, the pydicom JPEG 2000 re-encode of the series
(``bench_ratios.REENCODE``) and right after it ``medsr archive SERIES --method bicubic`` with that checkout
first on ``PYTHONPATH`` (run from a scratch folder, so neither checkout's folder shadows the other), each
command after an ``os.sync()``. So both versions see the same minute of a shared machine, and the difference
of the medians is the code's (the README's "Speed" quotes it). Both packages are compiled to bytecode first.
The series defaults to ``bench_ratios``' 22 x 512^2 phantom.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from pipelines.bench_ratios import REENCODE, compile_package, phantom, timed

REPO = Path(__file__).resolve().parents[1]


def ab(other: Path, series: Path, work: Path, rounds: int) -> dict:
    """{checkout: {"ratios": [...], "median": m}} for ``other`` and this repository, interleaved."""
    checkouts = {"other": other.resolve(), "this": REPO}
    for root in checkouts.values():
        if not (root / "medsr" / "__init__.py").is_file():
            raise SystemExit(f"{root}: not a medsr checkout (no medsr/__init__.py)")
        compile_package(root / "medsr")
    out: dict = {k: {"root": str(v), "ratios": []} for k, v in checkouts.items()}
    for r in range(rounds):
        for name, root in checkouts.items():
            d = work / f"r{r}-{name}"
            d.mkdir(parents=True)
            t_j2k = timed([sys.executable, "-c", REENCODE, str(series), str(d / "j2k")], cwd=work)
            env = {**os.environ, "PYTHONPATH": str(root)}
            t_bic = timed([sys.executable, "-m", "medsr", "archive", str(series), "-o", str(d / "a.medsr.h5"),
                            "--method", "bicubic"], cwd=work, env=env)
            out[name]["ratios"].append(round(t_bic / t_j2k, 3))
    for v in out.values():
        v["median"] = round(statistics.median(v["ratios"]), 3)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.bench_ab", description=__doc__.split("\n\n")[0])
    ap.add_argument("other", type=Path, help="the other medsr checkout (e.g. a git worktree of an older commit)")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--series", type=Path, help="a DICOM series folder (default: the 22 x 512^2 phantom)")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        series = args.series.resolve() if args.series else phantom(work / "s512", 512, 22)
        res = ab(args.other, series, work / "runs", args.rounds)
    for name, v in res.items():
        print(f"{name:5s} bicubic archive / J2K re-encode: median {v['median']}  rounds {v['ratios']}  ({v['root']})")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
