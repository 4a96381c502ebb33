"""Issue-16 ratios, each measured as whole processes in one run (part of ``medsr bench``).

    python -m pipelines.bench_ratios [--series-512 DIR] [--series-256 DIR] [--json OUT]

- ``bicubic_archive_vs_j2k_reencode``: ``medsr archive SERIES --method bicubic`` (full audit,
  no network) over re-encoding the same files as JPEG 2000 (20:1) with pydicom, one process
  each (target <= 2); the median of ``ROUNDS`` rounds (each round's value under ``..._all``);
- ``default_archive_vs_restore_plus_2_reencodes``: ``medsr archive SERIES`` (defaults) over
  ``medsr restore`` (defaults) of that archive + 2x the re-encode (target <= 1), the same rounds' median;
- ``restore_slices_s``: ``medsr restore`` of a 192-slice 256^2 archive, whole process, with the
  device's default self-ensemble and with 2 passes (target >= 15 slices/s on a CPU);
- ``startup_s``: ``python -c "import medsr.cli"`` and ``medsr --version``.

Before timing, ``medsr``'s modules are compiled to bytecode (``compileall``): what a pip-installed package
has from its install and an editable one writes on its first run, unless ``PYTHONDONTWRITEBYTECODE`` is set
(this sandbox sets it: every run would otherwise compile ~100 modules from source, ~0.1 s that no user pays
twice; the re-encode's pydicom is compiled by pip). The JSON says whether the variable was set.

The 512^2 series defaults to a 22-slice ``dicom_fixtures`` phantom (the issue measured a
22-slice 512^2 Philips T2); the 256^2 one to a 192-slice phantom. Every figure is printed with
``os.getloadavg()`` before the run: the CPU is shared, so compare ratios, not seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROUNDS = 3  # the archive ratios are medians of this many rounds: one process each is noisy to ~5% on 2 CPUs

REENCODE = """
import sys
from pathlib import Path
import pydicom
from pydicom.uid import JPEG2000
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
dst.mkdir(parents=True, exist_ok=True)
for f in sorted(p for p in src.rglob("*") if p.is_file()):
    ds = pydicom.dcmread(f)
    ds.compress(JPEG2000, j2k_cr=[20], generate_instance_uid=False)
    ds.save_as(dst / f.name)
"""


def timed(cmd: list[str], cwd: Path = REPO, env: dict | None = None) -> float:
    """Seconds ``cmd`` takes as a whole process (run in ``cwd`` with ``env``); a failure ends the bench."""
    os.sync()  # what the previous command wrote goes to disk now, not by the kernel during this timed one
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-2000:]}")
    return dt


def _medsr(*args: str) -> list[str]:
    return [sys.executable, "-m", "medsr", *args]


def phantom(out: Path, rows: int, slices: int) -> Path:
    """The ``dicom_fixtures`` phantom (seed 7) of ``slices`` x ``rows``^2, written as DICOM files to ``out``."""
    sys.path.insert(0, str(REPO))
    from dicom_fixtures.build import build_series
    from dicom_fixtures.spec import SeriesSpec

    build_series(out, SeriesSpec(rows=rows, cols=rows, slices=slices, seed=7))
    return out


def _archive_round(series: Path, tmp: Path) -> dict:
    tmp.mkdir(parents=True, exist_ok=True)
    t_j2k = timed([sys.executable, "-c", REENCODE, str(series), str(tmp / "j2k")])
    t_bic = timed(_medsr("archive", str(series), "-o", str(tmp / "bic.medsr.h5"), "--method", "bicubic"))
    t_arc = timed(_medsr("archive", str(series), "-o", str(tmp / "def.medsr.h5")))
    t_res = timed(_medsr("restore", str(tmp / "def.medsr.h5"), "-o", str(tmp / "restored")))
    return {"j2k_reencode_s": t_j2k, "archive_bicubic_s": t_bic, "archive_default_s": t_arc, "restore_default_s": t_res,
            "bicubic_archive_vs_j2k_reencode": t_bic / t_j2k,
            "default_archive_vs_restore_plus_2_reencodes": t_arc / (t_res + 2 * t_j2k)}


def archive_ratios(series: Path, tmp: Path, rounds: int = ROUNDS) -> dict:
    """The two archive ratios, each the median of ``rounds`` rounds (every round times all four commands
    afresh, in the same order); the seconds reported are those of the median round of the first ratio."""
    load = os.getloadavg()[0]
    runs = [_archive_round(series, tmp / f"round{k}") for k in range(rounds)]
    mid = sorted(runs, key=lambda r: r["bicubic_archive_vs_j2k_reencode"])[len(runs) // 2]
    out = {"bench": "issue16_archive_ratios", "series": str(series), "load_before": round(load, 2), "rounds": rounds,
           "bytecode_compiled_first": True,
           "PYTHONDONTWRITEBYTECODE_set": bool(os.environ.get("PYTHONDONTWRITEBYTECODE"))}
    out.update({k: round(mid[k], 2) for k in ("j2k_reencode_s", "archive_bicubic_s", "archive_default_s",
                                               "restore_default_s")})
    for k in ("bicubic_archive_vs_j2k_reencode", "default_archive_vs_restore_plus_2_reencodes"):
        vals = sorted(r[k] for r in runs)
        out[k] = round(vals[len(vals) // 2], 2)
        out[k + "_all"] = [round(r[k], 2) for r in runs]
    return out


def restore_rates(series: Path, tmp: Path) -> dict:
    arc = tmp / "r256.medsr.h5"
    timed(_medsr("archive", str(series), "-o", str(arc), "--no-j2k", "--ensemble", "1"))
    import medsr

    n = medsr.open_archive(arc).n_slices
    load = os.getloadavg()[0]
    t_imp = timed([sys.executable, "-c", "import medsr.cli"])
    t_ver = timed(_medsr("--version"))
    t_def = timed(_medsr("restore", str(arc), "-o", str(tmp / "rd")))
    t_two = timed(_medsr("restore", str(arc), "-o", str(tmp / "r2"), "--ensemble", "2"))
    t_bic = timed(_medsr("restore", str(arc), "-o", str(tmp / "rb"), "--method", "bicubic"))
    return {"bench": "issue16_restore_whole_process", "series": str(series), "slices": n,
            "load_before": round(load, 2), "startup_import_cli_s": round(t_imp, 2), "startup_version_s": round(t_ver, 2),
            "restore_default_slices_s": round(n / t_def, 1), "restore_2_pass_slices_s": round(n / t_two, 1),
            "restore_bicubic_slices_s": round(n / t_bic, 1)}


def compile_package(package: Path | None = None) -> None:
    """Write the bytecode caches of ``package`` (default: the imported ``medsr``) now (see the module
    docstring), so no timed run compiles source."""
    import compileall

    if package is None:
        import medsr

        package = Path(medsr.__file__).parent
    if not compileall.compile_dir(str(package), quiet=1):
        raise SystemExit(f"compileall failed on {package}")


def run(series_512: Path | None, series_256: Path | None, tmp: Path) -> list[dict]:
    compile_package()
    s512 = series_512 or phantom(tmp / "s512", 512, 22)
    s256 = series_256 or phantom(tmp / "s256", 256, 192)
    os.sync()  # the phantoms' dirty pages are written back now, not by the kernel during the timed runs
    (tmp / "a").mkdir()
    (tmp / "b").mkdir()
    return [archive_ratios(s512, tmp / "a"), restore_rates(s256, tmp / "b")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.bench_ratios", description=__doc__.split("\n\n")[0])
    ap.add_argument("--series-512", type=Path)
    ap.add_argument("--series-256", type=Path)
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        rows = run(args.series_512, args.series_256, Path(d))
    for r in rows:
        print("  ".join(f"{k}={v}" for k, v in r.items()), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
