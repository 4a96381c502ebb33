"""``medsr rd``: argparse over :func:`medsr.flow.rd.rate_distortion` (docs/base-codec.md)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..api import RD_DEFAULT_FLOORS, RD_DEFAULT_LOSSY, RD_DEFAULT_LOSSY_FRACTIONS, RD_DEFAULT_NEARS, format_rd_table
from .common import Progress as _Progress
from .common import add_common_args as _common
from .common import add_ensemble_arg


def _numbers(text: str, cast) -> tuple:
    try:
        return tuple(cast(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def cmd_rd(args) -> int:
    from ..api import check_floor, preflight_output, rate_distortion, read_series, write_rd

    for db in args.floors:
        check_floor(db, None, "lossless")  # a bad --floors value: one error before anything is read
    out = Path(args.output)
    preflight_output(out, force=args.force, folder=True)
    series = read_series(args.series, series_uid=args.series_uid,
                         allow_modalities=("MR",) + tuple(m.upper() for m in args.allow_modality))
    prog = _Progress(not args.quiet and sys.stderr.isatty())
    if args.ratios:
        return _rd_ratios(args, series, out, prog)
    try:
        result = rate_distortion(series, method=args.method, model=args.model, device=args.device,
                                 operator=args.operator, nears=args.near, lossy=args.lossy,
                                 lossy_fractions=args.lossy_near, floors=args.floors,
                                 consistency=not args.no_consistency, progress=prog, ensemble=args.ensemble)
    finally:
        prog.close()
    json_path, png_path = write_rd(result, out, force=args.force)
    if args.json:
        print(json.dumps({"rd_json": str(json_path), "rd_png": str(png_path), "modes": [
            {k: r.get(k) for k in ("mode", "ratio", "psnr", "psnr_fg", "ssim", "delta_psnr_vs_lossless", "min_psnr_fg",
                                   "representations", "per_slice_j2k_floor") if k in r}
            for r in result["modes"]]}, default=str))
    else:
        print(format_rd_table(result))
        print(f"rate-distortion: {json_path}\n  plot: {png_path}")
    return 0


def _rd_ratios(args, series, out: Path, prog) -> int:
    """``medsr rd --ratios``: the ``--ratio`` candidates at every N (medsr.flow.rd_ratio)."""
    from ..api import format_ratio_table, ratio_sweep, write_ratio_sweep

    try:
        result = ratio_sweep(series, args.ratios, method=args.method, model=args.model, device=args.device,
                             consistency=not args.no_consistency, ensemble=args.ensemble, progress=prog)
    finally:
        prog.close()
    json_path, png_path = write_ratio_sweep(result, out, force=args.force)
    if args.json:
        print(json.dumps({"rd_json": str(json_path), "rd_png": str(png_path), "ratios": [
            {"target_ratio": r["target_ratio"], "chosen": r["chosen"], "margin_psnr_fg_vs_j2k": r.get("margin_psnr_fg_vs_j2k"),
             "candidates": r["candidates"]} for r in result["ratios"]]}))
    else:
        print(format_ratio_table(result))
        print(f"--ratio candidates: {json_path}\n  plot: {png_path}")
    return 0


def register_cli(subparsers) -> None:
    """Add ``medsr rd`` to medsr's argparse subparsers."""

    p = subparsers.add_parser(
        "rd", help="rate-distortion of the storage modes for one series (JSON + PNG), to choose a mode",
        description="Measure, for one series, PSNR / foreground PSNR / SSIM against the pixel ratio for medsr's "
        "modes (lossless base, near-lossless and lossy JPEG-LS bases, lossy JPEG 2000 bases, per-slice floors), "
        "each next to JPEG 2000 of the full slice at the same ratio. Writes DIR/rd.json and DIR/rd.png. "
        "Nothing is archived.")
    p.add_argument("series", help="folder of DICOM files (searched recursively) or a .nii/.nii.gz file")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="new folder for rd.json and rd.png")
    p.add_argument("--method", default="auto", choices=["auto", "model", "bicubic"],
                   help="restore method (auto: the shipped default model, else bicubic; bicubic is fast)")
    p.add_argument("--model", help="model name (see `medsr models`) or a .safetensors path")
    add_ensemble_arg(p, help="model self-ensemble size (default: each model's own, as an archive uses)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--operator", default="area4-v1", help="down-sampling operator id")
    p.add_argument("--near", type=lambda s: _numbers(s, int), default=RD_DEFAULT_NEARS, metavar="K,K,...",
                   help="JPEG-LS NEAR values of the near-lossless modes (default 2,3,4; empty: none)")
    p.add_argument("--lossy", type=lambda s: _numbers(s, float), default=RD_DEFAULT_LOSSY, metavar="F,F,...",
                   help="lossy JPEG 2000 low-res bases at 1/F of the lossless bytes (default 2,4,8; empty: none)")
    p.add_argument("--lossy-near", type=lambda s: _numbers(s, float), default=RD_DEFAULT_LOSSY_FRACTIONS,
                   metavar="P,P,...", help="`--base lossy` modes: JPEG-LS NEAR as fractions of the low-res window "
                   "(default 0.02,0.03,0.05; the archive's default is 0.03), restored by the lossy-base model")
    p.add_argument("--floors", type=lambda s: _numbers(s, float), default=RD_DEFAULT_FLOORS, metavar="DB,DB,...",
                   help="per-slice floor modes: `medsr archive --floor-psnr-fg DB` on the default base, each next to "
                   "per-slice-rate JPEG 2000 meeting the same floor (default 35,40; empty: none; docs/floor.md)")
    p.add_argument("--ratios", type=lambda s: _numbers(s, float), default=(), metavar="N,N,...",
                   help="instead of the base modes: at each N, every `medsr archive --ratio N` candidate (x4 and x2 "
                   "tiers on a JPEG-LS base coded to 1/N of the pixel bytes, their per-slice JPEG 2000 mixes, JPEG "
                   "2000 of the full slices), measured as the archive would; the plot marks the one stored "
                   "(e.g. 50,80,100,150,200; docs/ratio.md)")
    p.add_argument("--no-consistency", action="store_true", help="do not project restores onto the base")
    p.add_argument("--series-uid", help="pick one series when the folder holds several")
    p.add_argument("--allow-modality", action="append", default=[], metavar="MOD")
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    _common(p)
    p.set_defaults(func=cmd_rd)
