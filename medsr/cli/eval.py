"""``medsr eval``: argparse over :mod:`medsr.flow.evaluate` (the table of docs/training/eval-unseen.md)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..api import EVAL_DESCRIPTION, evaluate, write_eval_outputs
from .common import add_ensemble_arg


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="medsr eval", description=EVAL_DESCRIPTION,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("series", nargs="+", help="series folders, single DICOM files or NIfTI files")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--models", nargs="+", default=["medsr-srresnet-x4", "medsr-srgan-x4"])
    add_ensemble_arg(ap, help="evaluate each model at these self-ensemble sizes (default: each model's own)",
                     nargs="+")
    ap.add_argument("--no-j2k", action="store_true")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--debug", action="store_true", help="show a traceback on errors (read by `medsr`'s error handling)")
    args = ap.parse_args(argv)
    res = evaluate([Path(s) for s in args.series], args.models, j2k=not args.no_j2k, device=args.device,
                   ensembles=args.ensemble)
    md, js, png = write_eval_outputs(res, Path(args.output))
    print(md.read_text())
    print(f"wrote {md}, {js}" + (f", {png}" if png else ""))
    return 0
