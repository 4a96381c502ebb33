"""Command line: a thin layer over the public API (``medsr --help``).

Errors print one line ``medsr: error: <file>: <problem>`` on stderr and exit with the
code listed in ``medsr --help`` (no traceback unless ``--debug``).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .. import __version__
from ..errors import EXIT_CODES, MedsrError
from .common import ENSEMBLE_SIZES, add_ensemble_arg  # noqa: F401  (re-exported by medsr.cli)
from .common import Progress as _Progress
from .common import add_common_args as _common
from .common import emit as _emit
from .common import fmt as _fmt
from .common import add_ratio_search_arg, ratio_search_kw
from .pacs import add_connection_args

EPILOG = """\
examples:
  medsr archive SERIES_DIR -o series.medsr.h5          # store at 1/16 of the pixels, with an audit
  medsr restore series.medsr.h5 -o restored/           # new derived DICOM series, full size
  medsr info series.medsr.h5 --json                    # what is inside, and the stored audit
  medsr verify series.medsr.h5                         # checksums and structure (exit 4 on damage)
  medsr audit series.medsr.h5 -o report/ --reference SERIES_DIR   # HTML + JSON report

exit codes:
""" + "\n".join(f"  {k:>3}  {v}" for k, v in EXIT_CODES.items())


# ---------------------------------------------------------------- commands

def cmd_archive(args) -> int:
    from ..api import ARCHIVE_SUFFIX, ArchiveOptions, archive_series

    out = Path(args.output) if args.output else Path(str(Path(args.series).name).removesuffix(".gz").removesuffix(".nii") + ARCHIVE_SUFFIX)
    opts = ArchiveOptions(
        operator=args.operator, method=args.method, model=args.model, device=args.device,
        consistency=not args.no_consistency, series_uid=args.series_uid,
        allow_modalities=("MR",) + tuple(m.upper() for m in args.allow_modality), force=args.force,
        delete_original=args.delete_original, min_psnr=args.min_psnr, min_ssim=args.min_ssim,
        min_psnr_fg=args.min_psnr_fg, keep_below_threshold=args.keep_below_threshold, baselines=not args.no_j2k,
        base=args.base, base_near=args.base_near,
        floor_psnr_fg=args.floor_psnr_fg, floor_ssim=args.floor_ssim, floor_fallback=args.floor_fallback,
        ensemble=args.ensemble, ratio=args.ratio, **ratio_search_kw(args),
    )
    prog = _Progress(not args.quiet and sys.stderr.isatty())
    from ..pacs.sources import is_remote

    remote = is_remote(args.series)  # a DICOMweb URL or dimse:// address: fetched to a private temp folder
    try:
        if remote:
            from .pacs import archive_from_args

            res = archive_from_args(args, out, opts, prog)
        else:
            res = archive_series(args.series, out, opts, progress=prog)
    finally:
        prog.close()
    s = res.summary()
    if args.report:
        from ..api import report_for_archive

        json_path, html_path = report_for_archive(res.archive, args.report, reference=None if remote else args.series,
                                                  force=True)
        s["report"] = str(html_path)
    text = (f"archived {s['slices']} slices -> {s['archive']}\n"
            f"  size: {s['original_bytes']:,} -> {s['archive_bytes']:,} bytes (ratio {s['ratio']:.1f}:1 files, "
            f"{s['pixel_ratio']:.1f}:1 pixels)\n"
            f"  restore by {s['method']} ({s['model_id']}{_ens(s)}): PSNR {_fmt(s['psnr'])} dB (fg {_fmt(s['psnr_fg'])}), SSIM {_fmt(s['ssim'], 4)}\n"
            f"  bicubic baseline:     PSNR {_fmt(s['psnr_bicubic'])} dB (fg {_fmt(s['psnr_fg_bicubic'])}), SSIM {_fmt(s['ssim_bicubic'], 4)}\n"
            f"  JPEG 2000, same bytes: PSNR {_fmt(s['psnr_j2k'])} dB (fg {_fmt(s['psnr_fg_j2k'])}), SSIM {_fmt(s['ssim_j2k'], 4)}")
    if s.get("budget"):
        text += "\n" + _info_budget_text(s["budget"])
    if s.get("floor"):
        text += "\n" + _floor_text(s["floor"])
    if s["below_threshold"]:
        text += "\n  WARNING: below the quality gate; written because of --keep-below-threshold"
    if s["deleted_originals"]:
        text += f"\n  deleted {s['deleted_originals']} original files after verifying the archive"
    if s.get("deleted_from_pacs"):
        text += f"\n  deleted the original from the PACS after verifying the archive ({s['freed_bytes']:,} bytes)"
    if "report" in s:
        text += f"\n  report: {s['report']}"
    _emit(args, s, text)
    return 0


def _floor_text(f: dict) -> str:
    reps = ", ".join(f"{k} {v['slices']} ({v['bytes']:,} B)" for k, v in f["representations"].items() if v["slices"])
    line = (f"  per-slice floor: {reps}; pixels {f['pixel_bytes']:,} B incl. base ({f['pixel_ratio']:.1f}:1); "
            f"worst slice fg PSNR {_fmt(f.get('min_psnr_fg'))} dB")
    if f.get("floor_baseline_j2k_bytes"):
        line += (f"\n  per-slice-rate JPEG 2000 meeting the same floor: {f['floor_baseline_j2k_bytes']:,} B "
                 f"({f['floor_baseline_j2k_pixel_ratio']:.1f}:1); ours / it = {f['bytes_vs_baseline']:.3f}")
    return line


def _ens(s: dict) -> str:
    n = s.get("ensemble", 1)
    return f", self-ensemble x{n}" if s.get("method") == "model" and n and n > 1 else ""


def cmd_restore(args) -> int:
    from ..api import RestoreOptions, restore_archive

    out = Path(args.output) if args.output else Path(Path(args.archive).name.split(".")[0] + "-restored" + (".nii.gz" if args.format == "nifti" else ""))
    opts = RestoreOptions(method=args.method, model=args.model, device=args.device,
                          consistency=not args.no_consistency, format=args.format, force=args.force,
                          batch_size=args.batch_size, precision=args.precision, compile=args.compile, tile=args.tile,
                          ensemble=args.ensemble)
    if args.to:  # a DICOMweb root or dimse:// address: STOW-RS / C-STORE the derived series
        from .pacs import restore_from_args

        s, text = restore_from_args(args, opts)
        _emit(args, s, text)
        return 0
    prog = _Progress(not args.quiet and sys.stderr.isatty())
    try:
        res = restore_archive(args.archive, out, opts, reference=args.reference, progress=prog)
    finally:
        prog.close()
    s = res.summary()
    text = (f"restored {s['slices']} slices -> {s['output']} in {s['seconds']:.2f} s "
            f"({s['slices_per_second']:.1f} slices/s, {s['method']} {s['model_id']}{_ens(s)} on {s['device']}"
            f"{', ' + s['arithmetic'] if s.get('arithmetic') else ''})")
    if res.audit is not None:
        a = s["audit"]
        text += (f"\n  vs reference: PSNR {_fmt(a.get('psnr'))} dB (fg {_fmt(a.get('psnr_fg'))}), SSIM {_fmt(a.get('ssim'), 4)};"
                 f" bicubic {_fmt(a.get('psnr_bicubic'))} dB; JPEG 2000 {_fmt(a.get('psnr_j2k'))} dB")
    _emit(args, s, text)
    return 0


#: audit provenance keys ``medsr info`` shows beside the archive's own fields, where the audit has them
INFO_PROVENANCE = ("base_note", "arithmetic")


def cmd_info(args) -> int:
    from ..api import open_archive

    info = open_archive(args.archive)
    d = info.to_dict()
    if info.audit:
        from ..api import flat_audit

        d["audit"] = flat_audit(info.audit)
    prov = (info.audit or {}).get("provenance") or {}
    for key in INFO_PROVENANCE:  # how the stored base was coded, what the audit's restore computed in
        if prov.get(key):
            d[key] = prov[key]
    text = "\n".join(f"{k:>22}: {v}" for k, v in d.items() if k not in ("audit", "floor"))
    budget = (info.audit or {}).get("budget")
    if budget:
        text += "\n" + _info_budget_text(budget)
    if d.get("floor"):
        text += "\n" + _info_floor_text(d["floor"], (info.audit or {}).get("floor") or {})
    if "audit" in d:
        text += "\n" + "\n".join(f"{k:>22}: {v}" for k, v in d["audit"].items())
    _emit(args, d, text)
    return 0


def _info_budget_text(b: dict) -> str:
    """``medsr info``/``archive``: the ``--ratio`` choice, one line per candidate measured."""
    lines = [f"{'budget':>22}: 1/{b['target_ratio']:g} of the pixel bytes ({b['budget_bytes']:,} B); stored "
             f"{b['chosen']}: {b['why']}"]
    for c in b.get("candidates", []):
        mark = "*" if c["candidate"] == b["chosen"] else " "
        lines.append(f"{'':>22} {mark}{c['candidate']:<14} {c['pixel_ratio']:>8.1f}:1  fg PSNR {_fmt(c['psnr_fg'])} dB  "
                     f"SSIM {_fmt(c['ssim'], 4)}  {c['model_id'].split('@')[0]}"
                     + (f", {c['j2k_slices']} slices JPEG 2000" if c["j2k_slices"] else "")
                     + ("" if c["fits"] else "  (over the budget)")
                     + (f"  (ranked out on {c['slices_measured']} sample slices)" if c.get("slices_measured") else ""))
    if b.get("margin_psnr_fg_vs_j2k") is not None:
        lines.append(f"{'':>22}  margin over full-slice JPEG 2000 at the budget: {b['margin_psnr_fg_vs_j2k']:+.2f} dB fg")
    return "\n".join(lines)


def _info_floor_text(fl: dict, audited: dict) -> str:
    """``medsr info``: the per-slice floor, one line per representation (``--json`` keeps the dict)."""
    what = [f"foreground PSNR >= {fl['floor_psnr_fg']:g} dB" for _ in [0] if fl.get("floor_psnr_fg") is not None]
    what += [f"SSIM >= {fl['floor_ssim']:g}" for _ in [0] if fl.get("floor_ssim") is not None]
    lines = [f"{'floor':>22}: every slice {' and '.join(what) or '(no value recorded)'}; "
             f"fallback {fl.get('floor_fallback', 'error')} ({fl.get('floor_id', 'medsr-floor-v1')})"]
    if fl.get("floor_source") == "ratio":
        lines = [f"{'slices':>22}: stored per slice as chosen by --ratio ({fl.get('floor_id', 'medsr-floor-v1')})"]
    for name, v in fl.get("representations", {}).items():
        lines.append(f"{'':>22}  {name:<9} {v['slices']:>5} slices {v['bytes']:>12,} B")
    tail = f"floor payloads {fl.get('floor_bytes', 0):,} B"
    if audited.get("pixel_bytes") is not None:
        tail += f"; pixels {audited['pixel_bytes']:,} B incl. base ({audited['pixel_ratio']:.1f}:1)"
    if audited.get("min_psnr_fg") is not None:
        tail += f"; worst slice fg PSNR {audited['min_psnr_fg']:.2f} dB"
    if audited.get("min_ssim") is not None:
        tail += f", SSIM {audited['min_ssim']:.4f}"
    lines.append(f"{'':>22}  {tail}")
    if audited.get("floor_baseline_j2k_bytes"):
        lines.append(f"{'':>22}  per-slice-rate JPEG 2000 meeting the same floor: "
                     f"{audited['floor_baseline_j2k_bytes']:,} B ({audited['floor_baseline_j2k_pixel_ratio']:.1f}:1); "
                     f"ours / it = {audited['bytes_vs_baseline']:.3f}")
    return "\n".join(lines)


def cmd_verify(args) -> int:
    from ..api import verify_archive

    res = verify_archive(Path(args.archive))
    _emit(args, res.to_dict(), f"{args.archive}: OK ({res.n_slices} slices, all checksums match)" if res.ok
          else f"{args.archive}: FAILED: " + "; ".join(res.problems))
    if not res.ok and not args.json:
        print(f"medsr: error: {res.problems[0]}", file=sys.stderr)
    return 0 if res.ok else 4


def cmd_audit(args) -> int:
    from ..api import report_for_archive

    json_path, html_path = report_for_archive(Path(args.archive), Path(args.output), reference=args.reference,
                                              include_phi=args.include_phi, force=args.force)
    _emit(args, {"archive": args.archive, "report_json": str(json_path), "report_html": str(html_path)},
          f"report: {html_path}\n  data: {json_path}")
    return 0


def cmd_models(args) -> int:
    from ..api import list_models

    rows = [{"name": m.name, "kind": m.kind, "operator": m.operator, "config": m.config.to_dict(),
             "sha256": m.sha256, "card": str(m.path.with_name(m.card)), "metrics": m.metrics,
             "ensemble": m.ensemble, "card_data": m.card_data.to_dict() if m.card_data else None}
            for m in list_models()]
    text = "\n".join(f"{r['name']:<24} {r['kind']:<10} {r['operator']:<9} ensemble x{r['ensemble']}  "
                     f"sha256 {r['sha256'][:12]}  card {r['card']}"
                     + (f"\n{'':<24} {r['card_data']['summary']}" if r["card_data"] else "")
                     + (f"\n{'':<24} {_headline(r['metrics'])}" if r["metrics"] else "")
                     for r in rows) or "no models shipped"
    _emit(args, {"models": rows}, text)
    return 0


def _headline(m: dict) -> str:
    """The card's headline validation figures in one line (its data are in the card and in --json)."""
    fig = f"fg PSNR {m['psnr_fg']:.2f} dB" if m.get("psnr_fg") is not None else ""
    if m.get("bicubic_psnr_fg") is not None and fig:
        fig += f" (bicubic {m['bicubic_psnr_fg']:.2f})"
    elif m.get("gain_psnr_fg") is not None:
        fig = (fig + ", " if fig else "") + f"{m['gain_psnr_fg']:+.2f} dB fg over bicubic"
    if m.get("ssim") is not None:
        fig += f", SSIM {m['ssim']:.4f}" + (f" (bicubic {m['bicubic_ssim']:.4f})" if m.get("bicubic_ssim") is not None else "")
    return f"validation: {fig} [{m['source']}]"


def cmd_eval(args) -> int:
    from .eval import main as eval_main

    return int(eval_main(args.rest) or 0)


# ---------------------------------------------------------------- parser

def _add_archive_parser(sub) -> None:
    a = sub.add_parser("archive", help="archive one MR series (folder or NIfTI) into one .medsr.h5 file",
                       description="Down-sample a series x4 per axis (exact 4x4 block means), store it losslessly with "
                       "every original header, restore it in memory and store the audit (PSNR/SSIM vs the original, "
                       "bicubic and JPEG 2000 at equal bytes beside it). The original is never modified.")
    a.add_argument("series", help="folder of DICOM files (searched recursively), a .nii/.nii.gz file, a DICOMweb "
                   "series URL http(s)://host/dicom-web/studies/<StudyUID>/series/<SeriesUID>, or "
                   "dimse://AET@host:port/<StudyUID>/<SeriesUID> (docs/pacs.md)")
    a.add_argument("-o", "--output", help="archive file to write (default: <series name>.medsr.h5)")
    a.add_argument("--series-uid", help="pick one series when the folder holds several")
    a.add_argument("--method", default="auto", choices=["auto", "model", "bicubic"],
                   help="restore method recorded in the archive (auto: the shipped default model, else bicubic)")
    a.add_argument("--model", help="model name (see `medsr models`) or a .safetensors path")
    add_ensemble_arg(a, help="self-ensemble: average the model over N mirrored/rotated copies of each slice (1, 2, 4, 8; N x the network time). Default: the model's own (see `medsr models`); recorded in the archive")
    a.add_argument("--operator", default="area4-v1", help="down-sampling operator id (area4-v1, area2-v1, gauss4-v1)")
    a.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    a.add_argument("--no-consistency", action="store_true", help="do not project the restore onto the stored data")
    a.add_argument("--allow-modality", action="append", default=[], metavar="MOD", help="also accept this modality (at your own risk)")
    a.add_argument("--min-psnr", type=float, help="refuse to archive if the restore's PSNR (dB) is below this")
    a.add_argument("--min-ssim", type=float, help="refuse to archive if the restore's SSIM is below this")
    a.add_argument("--min-psnr-fg", type=float, help="refuse if the foreground PSNR (dB) is below this")
    a.add_argument("--keep-below-threshold", action="store_true", help="write the archive anyway, marked below threshold")
    a.add_argument("--no-j2k", action="store_true", help="skip the JPEG 2000 baseline (faster)")
    from ..api import ARCHIVE_BASES  # numpy only: the parser still builds without torch

    a.add_argument("--base", choices=list(ARCHIVE_BASES),
                   help="how the low-res slices are stored (default near-lossless: JPEG-LS, each value within "
                   "+-NEAR, ~2x the lossless ratio for < 0.1 dB; lossless keeps them exact; lossy: JPEG-LS with "
                   "NEAR = 3%% of the intensity window, ~230-360:1 preview quality, restored by the lossy-base "
                   "model; see docs/base-codec.md and `medsr rd` to choose from numbers)")
    a.add_argument("--base-near", type=int, metavar="K",
                   help="JPEG-LS NEAR of --base near-lossless (default 2) or lossy (default 3%% of the window)")
    a.add_argument("--ratio", type=float, metavar="N",
                   help="archive to a byte budget: the pixel payload is at most the original pixel bytes / N. "
                   "medsr measures, against the original, the x4 and x2 super-resolution tiers on a lossy JPEG-LS "
                   "base coded to the budget (with JPEG 2000 for the slices where it restores better) and JPEG 2000 "
                   "of every full slice, and stores the one with the best foreground PSNR; the audit lists every "
                   "candidate. Chooses the scale and base itself (no --base/--operator/--floor-*). docs/ratio.md")
    add_ratio_search_arg(a, "with --ratio: 'sample' (default) ranks every candidate on 8 evenly spaced slices of a "
                         "longer series and restores in full only those within 0.3 dB of the best (JPEG 2000 is always "
                         "measured in full, so the stored one is never worse than it); 'full' restores every candidate "
                         "in full (slower: one network pass of the whole series per candidate)")
    a.add_argument("--floor-psnr-fg", type=float, metavar="DB",
                   help="per-slice quality floor: every slice must restore with a foreground PSNR of at least DB "
                   "(audit definitions, docs/audit.md). A slice whose restore misses it is stored instead by the "
                   "representation that meets it at the fewest bytes: JPEG 2000 of the full slice, a JPEG 2000-coded "
                   "residual over the restore, or (with --floor-fallback lossless) the slice losslessly. "
                   "See docs/floor.md")
    a.add_argument("--floor-ssim", type=float, metavar="S",
                   help="per-slice quality floor on the whole-slice SSIM, in (0, 1]; combines with --floor-psnr-fg")
    a.add_argument("--floor-fallback", default="error", choices=["error", "lossless"],
                   help="a slice that no lossy representation meets with fewer bytes than lossless: error (the "
                   "default: nothing is written, the slice's file is named) or lossless (store it exactly)")
    a.add_argument("--report", metavar="DIR", help="also write the HTML/JSON audit report into DIR")
    a.add_argument("--force", action="store_true", help="replace an existing archive")
    a.add_argument("--delete-original", action="store_true",
                   help="delete the original files (or, for a DICOMweb URL, the series on the PACS), only after the "
                   "written archive was re-read and verified")
    add_connection_args(a)
    _common(a)
    a.set_defaults(func=cmd_archive)


def _add_restore_parser(sub) -> None:
    r = sub.add_parser("restore", help="restore an archive to a new derived DICOM series (or NIfTI)",
                       description="Rebuild every original instance at full size as a DERIVED, lossy image with new UIDs "
                       "and references to the originals.")
    r.add_argument("archive")
    r.add_argument("-o", "--output", help="output folder (DICOM) or .nii.gz file (NIfTI)")
    r.add_argument("--format", default="dicom", choices=["dicom", "nifti"])
    r.add_argument("--method", choices=["model", "bicubic", "nearest"], help="override the archive's method")
    r.add_argument("--model", help="override the archive's model (warns; the stored audit will not apply)")
    add_ensemble_arg(r, help="self-ensemble size (1, 2, 4, 8); default: what the archive recorded (another size warns: the stored audit will not apply)")
    r.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    r.add_argument("--batch-size", type=int, default=0, help="slices per batch (0: automatic)")
    r.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="auto: bf16 on CUDA and on CPUs with native bf16 (AMX, AVX512-BF16), else fp32 (fp16 is never "
                        "used on CPU)")
    r.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA; slower start, faster batches)")
    r.add_argument("--tile", type=int, default=0, metavar="PX",
                   help="run the network on overlapping low-res tiles of PX pixels (for very large slices)")
    r.add_argument("--no-consistency", action="store_true", help="do not project onto the stored low-res data")
    r.add_argument("--reference", help="original series to measure this restore against")
    r.add_argument("--force", action="store_true", help="replace an existing output")
    r.add_argument("--to", metavar="PACS", help="send the derived series to a PACS instead of -o: a DICOMweb root "
                   "http(s)://host/dicom-web (STOW-RS) or dimse://AET@host:port (C-STORE)")
    add_connection_args(r)
    _common(r)
    r.set_defaults(func=cmd_restore)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="medsr", description="Store DICOM MR series at x4 lower resolution and restore "
                                "them with super-resolution; every archive carries a PSNR/SSIM audit.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"medsr {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    _add_archive_parser(sub)
    _add_restore_parser(sub)

    i = sub.add_parser("info", help="show an archive's metadata and stored audit")
    i.add_argument("archive")
    _common(i)
    i.set_defaults(func=cmd_info)

    v = sub.add_parser("verify", help="check an archive's structure and every checksum (exit 4 on damage)")
    v.add_argument("archive")
    _common(v)
    v.set_defaults(func=cmd_verify)

    au = sub.add_parser("audit", help="write report.json and a self-contained report.html for an archive")
    au.add_argument("archive")
    au.add_argument("-o", "--output", required=True, help="report folder")
    au.add_argument("--reference", help="original series: measure a fresh restore against it (with image panels)")
    au.add_argument("--include-phi", action="store_true", help="include patient name/ID in the report")
    au.add_argument("--force", action="store_true")
    _common(au)
    au.set_defaults(func=cmd_audit)

    m = sub.add_parser("models", help="list the shipped super-resolution models")
    _common(m)
    m.set_defaults(func=cmd_models)

    ev = sub.add_parser("eval", help="PSNR/SSIM table of models vs bicubic vs JPEG 2000 (see `medsr eval --help`)",
                        add_help=False)
    ev.add_argument("rest", nargs=argparse.REMAINDER)
    ev.set_defaults(func=cmd_eval, json=False, quiet=False, debug=False)

    from . import batch, jobs, orthanc, rd

    orthanc.register_cli(sub)  # `medsr orthanc serve|env`
    batch.register_cli(sub)  # `medsr archive-batch|restore-batch`
    jobs.register_cli(sub)  # `medsr jobs ROOT`
    rd.register_cli(sub)  # `medsr rd`
    return p


_PASSTHROUGH = {"eval": cmd_eval}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    as_program = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _PASSTHROUGH:  # their own parsers (argparse.REMAINDER drops a leading -h)
        args = argparse.Namespace(command=argv[0], rest=argv[1:], func=_PASSTHROUGH[argv[0]],
                                  json=False, quiet=False, debug="--debug" in argv)
    else:
        args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.DEBUG if args.debug else (logging.ERROR if args.quiet else logging.WARNING),
                        format="medsr: %(levelname)s: %(message)s", stream=sys.stderr)
    if not args.debug:
        import warnings

        warnings.simplefilter("ignore")
    if as_program:  # run as the program (`medsr`, `python -m medsr`: guarded entry points), not called by a script
        from ..api import allow_audit_processes

        allow_audit_processes()  # so an audit may code JPEG 2000 in a spawned child (medsr/audit/beside.py)
    try:
        return args.func(args)
    except MedsrError as e:
        if args.debug:
            raise
        print(f"medsr: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("medsr: interrupted; nothing partial was left under a final name", file=sys.stderr)
        return 130
    except Exception as e:  # a bug, not a user error: still one line unless --debug
        if isinstance(e, BrokenPipeError) and _stdout_closed():  # `medsr models | head`: the reader went away
            return 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader closed
        if args.debug:
            raise
        print(f"medsr: internal error: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''} "
              "(rerun with --debug for a traceback, and please report it)", file=sys.stderr)
        return 1
    finally:
        if as_program:
            _freeze_for_exit()


def _stdout_closed() -> bool:
    """Whether standard output is a pipe whose reader has gone (poll says POLLERR), not some other pipe or socket
    medsr was writing to; if so it is pointed at /dev/null, so the interpreter's last flush does not fail again
    (Python's recipe for SIGPIPE)."""
    import os
    import select

    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        closed = any(ev & select.POLLERR for _, ev in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows) or no real stdout (a test's capture)
        return False
    if closed:
        os.dup2(os.open(os.devnull, os.O_WRONLY), fd)
    return closed


def _freeze_for_exit() -> None:
    """The program exits next: move every object to the garbage collector's permanent generation, so the
    interpreter's last collections at exit skip them (NumPy, SciPy, pydicom and h5py leave ~50,000 tracked
    objects): from the end of ``main`` to the end of a ``medsr archive`` process 82 -> 23 ms (22 x 512^2, 2 CPUs).
    Output is written and closed by now, and atexit handlers and module teardown still run; only cyclic garbage
    left at exit goes uncollected, which the OS reclaims. Not for ``main(argv)`` called by a script or a test:
    that process goes on."""
    import gc

    gc.freeze()


if __name__ == "__main__":
    sys.exit(main())
