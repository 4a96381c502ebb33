"""Per-series archive overhead: whole-file bytes of near-lossless vs lossless archives of the same series.

    python -m pipelines.archive_overhead SERIES_DIR [SERIES_DIR ...] [--json OUT]

For each series, archives it twice (``--method bicubic``, full audit; ``--base lossless`` and
``--base near-lossless``) into a temp folder and prints the file bytes, the pixel payload
(stored pixel bytes), the compressed headers and the fixed overhead = file - pixels - headers
(HDF5 structure, the audit, per-slice tables), and the whole-file gain of the near-lossless
archive over the lossless one. The figures in docs/archive-format.md come from this script.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path


def header_bytes(path: Path) -> int:
    """Stored bytes of the packed headers: /headers (format 2) or the /headers group's datasets (format 1)."""
    import h5py

    with h5py.File(path, "r") as f:
        if "headers" not in f:
            return 0
        obj = f["headers"]
        if isinstance(obj, h5py.Dataset):
            return int(obj.id.get_storage_size())
        return int(sum(obj[k].id.get_storage_size() for k in obj))


def measure(series_dir: Path, work: Path) -> dict:
    import medsr

    series = medsr.read_series(series_dir)
    row: dict = {"series": series_dir.name, "slices": series.n_slices, "size": list(series.shape)}
    for base in ("lossless", "near-lossless"):
        out = work / f"{series_dir.name}-{base}.medsr.h5"
        res = medsr.archive_series(series, out, medsr.ArchiveOptions(method="bicubic", base=base, force=True))
        size = out.stat().st_size
        hdr = header_bytes(out)
        row[base] = {"file_bytes": size, "pixel_bytes": res.info.stored_pixel_bytes, "header_bytes": hdr,
                     "fixed_overhead_bytes": size - res.info.stored_pixel_bytes - hdr,
                     "format_version": res.info.format_version}
    row["near_lossless_gain_over_lossless"] = round(row["lossless"]["file_bytes"] / row["near-lossless"]["file_bytes"], 3)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipelines.archive_overhead", description=__doc__.split("\n\n")[0])
    ap.add_argument("series", nargs="+", type=Path)
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for s in args.series:
            r = measure(s, Path(d))
            rows.append(r)
            for base in ("lossless", "near-lossless"):
                b = r[base]
                print(f"{r['series']} ({r['slices']} x {r['size'][0]}x{r['size'][1]}) {base:14s} format {b['format_version']}: "
                      f"file {b['file_bytes']:,} = pixels {b['pixel_bytes']:,} + headers {b['header_bytes']:,} "
                      f"+ fixed overhead {b['fixed_overhead_bytes']:,} bytes")
            print(f"  whole-file gain of near-lossless over lossless: x{r['near_lossless_gain_over_lossless']}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
