"""``medsr archive-batch`` and ``medsr restore-batch``: argparse over :mod:`medsr.batch` (docs/batch.md)."""
from __future__ import annotations

import argparse
import json
import logging
import sys

from ..batch import EXIT_SOME_FAILED, BatchSummary, archive_batch, restore_batch
from ..errors import InputError
from .common import add_common_args as _common
from .common import add_ensemble_arg, add_ratio_search_arg, ratio_search_kw
from .pacs import add_connection_args, connection_from_args

log = logging.getLogger("medsr")

BATCH_EPILOG = f"""exit codes: 0 every series archived/restored or skipped as already done;
{EXIT_SOME_FAILED} the batch ran but at least one series failed (see the manifest); other codes as for
`medsr archive` (e.g. 2 bad input folder, 5 output folder problem, 1 cluster problem)."""


def _add_cluster_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="Dask scheduler address (tcp://host:8786); default: a local cluster on this machine")
    p.add_argument("--workers", type=int, metavar="N", help="local cluster worker processes (default 2)")


def register_cli(subparsers) -> None:
    """Add ``archive-batch`` and ``restore-batch`` to medsr's argparse subparsers."""

    a = subparsers.add_parser(
        "archive-batch", help="archive every series below a folder, in parallel on a Dask cluster",
        description="Find every MR series below ROOT (DICOM headers only; NIfTI files too), archive each "
        "into OUTDIR as one Dask task, and keep OUTDIR/manifest.jsonl up to date. Rerunning resumes: "
        "series whose archive exists and verifies are skipped.",
        epilog=BATCH_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    a.add_argument("root", metavar="ROOT", nargs="?", help="folder searched recursively for series")
    a.add_argument("--dicomweb", metavar="URL", help="instead of ROOT: the series a QIDO-RS search of this DICOMweb "
                   "root selects (with --query), fetched as stored into a private temp folder (docs/pacs.md)")
    a.add_argument("--query", action="append", metavar="KEY=VALUE",
                   help="QIDO-RS filter for --dicomweb, repeatable: Modality=MR, StudyDate=20190101-20201231")
    a.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="folder for the archives and manifest")
    _add_cluster_args(a)
    a.add_argument("--method", default="auto", choices=["auto", "model", "bicubic"],
                   help="restore method recorded in each archive (as for `medsr archive`)")
    a.add_argument("--model", help="model name or .safetensors path")
    add_ensemble_arg(a, help="model self-ensemble size (as for `medsr archive`; default: the model's own)")
    a.add_argument("--operator", default="area4-v1", help="down-sampling operator id")
    a.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="device on each worker")
    a.add_argument("--no-consistency", action="store_true", help="do not project the restore onto the stored data")
    a.add_argument("--no-j2k", action="store_true", help="skip the JPEG 2000 baseline (faster)")
    a.add_argument("--allow-modality", action="append", default=[], metavar="MOD",
                   help="also archive this modality (others are listed as skipped)")
    a.add_argument("--min-psnr", type=float, metavar="DB", help="quality gate: a series below it fails")
    a.add_argument("--min-ssim", type=float, metavar="X", help="quality gate on SSIM")
    a.add_argument("--min-psnr-fg", type=float, metavar="DB", help="quality gate on foreground PSNR")
    a.add_argument("--keep-below-threshold", action="store_true", help="write archives below a gate, marked")
    from ..api import ARCHIVE_BASES  # numpy only: the parser still builds without torch

    a.add_argument("--base", choices=list(ARCHIVE_BASES),
                   help="how each series' low-res slices are stored (as for `medsr archive`; default near-lossless)")
    a.add_argument("--base-near", type=int, metavar="K",
                   help="JPEG-LS NEAR of --base near-lossless (default 2) or lossy (default 2%% of the window)")
    a.add_argument("--floor-psnr-fg", type=float, metavar="DB",
                   help="per-slice quality floor on the foreground PSNR, for every series (as for `medsr archive`; "
                   "docs/floor.md). A series whose floor cannot be met fails with its error in the manifest")
    a.add_argument("--floor-ssim", type=float, metavar="S", help="per-slice quality floor on the whole-slice SSIM")
    a.add_argument("--ratio", type=float, metavar="N",
                   help="archive every series to a byte budget of 1/N of its pixel bytes, choosing scale and base by "
                   "measurement (as for `medsr archive --ratio`; docs/ratio.md)")
    add_ratio_search_arg(a, "with --ratio: rank candidates on a sample of slices first (sample, default) or restore "
                         "every candidate in full (full); as for `medsr archive`")
    a.add_argument("--floor-fallback", default="error", choices=["error", "lossless"],
                   help="a slice no lossy representation meets: error (that series fails) or lossless")
    a.add_argument("--hashed-names", action="store_true", help="name archives by series-UID hash only (no folder names)")
    a.add_argument("--force", action="store_true", help="archive again even where a verified archive exists")
    add_connection_args(a, dimse=False)
    _common(a)
    a.set_defaults(func=cmd_archive_batch)

    r = subparsers.add_parser(
        "restore-batch", help="restore every archive below a folder, in parallel on a Dask cluster",
        description="Restore every *.medsr.h5 below ARCHIVES into OUTDIR (A/B.medsr.h5 -> OUTDIR/A/B/), one "
        "Dask task per archive, keeping OUTDIR/restore-manifest.jsonl up to date. Outputs that already "
        "exist complete are skipped.", epilog=BATCH_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("archives", metavar="ARCHIVES", help="folder searched recursively for *.medsr.h5 (or one archive)")
    r.add_argument("-o", "--output", required=True, metavar="OUTDIR")
    _add_cluster_args(r)
    r.add_argument("--format", default="auto", choices=["auto", "dicom", "nifti"],
                   help="auto: NIfTI for archives made from NIfTI, DICOM otherwise")
    r.add_argument("--method", choices=["model", "bicubic", "nearest"], help="override each archive's method")
    r.add_argument("--model", help="override each archive's model (the stored audit will not apply)")
    add_ensemble_arg(r, help="self-ensemble size (default: what each archive recorded)")
    r.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="device on each worker")
    r.add_argument("--batch-size", type=int, default=0, help="slices per batch (0: automatic)")
    r.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    r.add_argument("--no-consistency", action="store_true", help="do not project onto the stored low-res data")
    r.add_argument("--force", action="store_true", help="replace existing outputs")
    _common(r)
    r.set_defaults(func=cmd_restore_batch)


def _report(args, summary: BatchSummary, verb: str) -> int:
    d = summary.to_dict()
    if args.json:
        print(json.dumps(d, default=str))
    else:
        lines = [f"{verb} {summary.ok}, skipped {summary.skipped} (already done or excluded), failed {summary.failed}"
                 f" of {len(summary.rows)} in {summary.seconds:.1f} s; manifest: {summary.manifest_path}"]
        lines += [f"  FAILED {f['source']}: {f['error']}" for f in d["failures"][:20]]
        if summary.failed > 20:
            lines.append(f"  ... and {summary.failed - 20} more (see the manifest)")
        print("\n".join(lines))
    return summary.exit_code


def _check_workers_arg(args) -> None:
    if args.scheduler and args.workers:
        log.warning("--workers is ignored with --scheduler (the cluster has its own workers)")


def cmd_archive_batch(args) -> int:
    from ..api import ArchiveOptions

    _check_workers_arg(args)
    opts = ArchiveOptions(
        operator=args.operator, method=args.method, model=args.model, device=args.device,
        consistency=not args.no_consistency, allow_modalities=("MR",) + tuple(m.upper() for m in args.allow_modality),
        force=args.force, min_psnr=args.min_psnr, min_ssim=args.min_ssim, min_psnr_fg=args.min_psnr_fg,
        keep_below_threshold=args.keep_below_threshold, baselines=not args.no_j2k, base=args.base,
        base_near=args.base_near, floor_psnr_fg=args.floor_psnr_fg, floor_ssim=args.floor_ssim,
        floor_fallback=args.floor_fallback, ensemble=args.ensemble, ratio=args.ratio,
        **ratio_search_kw(args))
    kw = dict(scheduler=args.scheduler, workers=args.workers, options=opts,
              progress=not args.quiet and sys.stderr.isatty(), names="hash" if args.hashed_names else "path")
    if (args.root is None) == (args.dicomweb is None):
        raise InputError("give ROOT or --dicomweb URL (with --query), not both or neither")
    if args.dicomweb is None:
        s = archive_batch(args.root, args.output, **kw)
    else:  # the series a QIDO-RS search selects, fetched into a private temp folder (medsr/pacs/batch.py)
        from ..pacs.batch import fetch_query

        with fetch_query(args.dicomweb, args.query, args.output, connection=connection_from_args(args),
                         allow_modalities=opts.allow_modalities) as root:
            s = archive_batch(root, args.output, **kw)
    return _report(args, s, "archived")


def cmd_restore_batch(args) -> int:
    from ..api import RestoreOptions

    _check_workers_arg(args)
    opts = RestoreOptions(method=args.method, model=args.model, device=args.device, consistency=not args.no_consistency,
                          format=args.format, force=args.force, batch_size=args.batch_size, precision=args.precision,
                          ensemble=args.ensemble)
    s = restore_batch(args.archives, args.output, scheduler=args.scheduler, workers=args.workers, options=opts,
                      progress=not args.quiet and sys.stderr.isatty())
    return _report(args, s, "restored")
