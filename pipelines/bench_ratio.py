"""The per-series table of ``medsr archive --ratio N`` (issue #19): what is stored, and its margin over JPEG 2000.

    python -m pipelines.bench_ratio --out docs/figures/ratio --ratios 80,100,150 ROLE=SERIES [ROLE=SERIES ...]

Every row is ``medsr.flow.budget.plan_budget`` (the code ``medsr archive --ratio N`` runs, restore method
``auto``: the shipped lossy-base tiers) on one series at one N: each candidate coded to 1/N of the original
pixel bytes, restored, and measured with the audit's definitions. ROLE says what the series was to the
models (``evaluation``: never used to train or choose anything; ``validation``: used to choose), so a
reader never mistakes one for the other. Writes OUT.json, OUT.md and OUT.png (margin over full-slice JPEG
2000 against N, per series). ``make ratio-table`` runs it on the project's series.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .role_tables import add_series_arguments, machine, margin_plot, parse_roles, write_table

REPO = Path(__file__).resolve().parents[1]


def _row(name: str, role: str, r: dict) -> dict:
    cands = {c["candidate"]: c for c in r["candidates"]}
    chosen = cands[r["chosen"]]
    j2k = cands.get("j2k", {})
    return {"series": name, "role": role, "target_ratio": r["target_ratio"], "chosen": r["chosen"],
            "pixel_ratio": chosen["pixel_ratio"], "psnr_fg": chosen["psnr_fg"], "ssim": chosen["ssim"],
            "model_id": chosen["model_id"], "j2k_psnr_fg": j2k.get("psnr_fg"), "j2k_ratio": j2k.get("pixel_ratio"),
            "margin_psnr_fg_vs_j2k": r.get("margin_psnr_fg_vs_j2k"),
            "best_sr": max((c for c in r["candidates"] if c["candidate"] != "j2k" and c["fits"]),
                           key=lambda c: c["psnr_fg"], default={}).get("candidate"),
            **{f"x{k}_{b}_{f}": cands.get(f"x{k}-{b}", {}).get(g) for k in (4, 2) for b in ("jpegls", "j2kbase")
               for f, g in (("psnr_fg", "psnr_fg"), ("fits", "fits"), ("ratio", "pixel_ratio"))},
            "ratio_hit": round(chosen["pixel_ratio"] / r["target_ratio"], 4)}


def _markdown(rows: list[dict], meta: dict) -> str:
    def f(v, d=2):
        return "" if v is None else f"{v:.{d}f}"

    out = [f"Machine: {meta['machine']}; restore method auto ({', '.join(meta['models'])}); "
           f"{meta['seconds']:.0f} s. Command: `{meta['command']}`.", "",
           "| series | role | N | stored | achieved ratio | fg PSNR | SSIM | JPEG 2000 fg (ratio) | margin fg | "
           "x4 tier fg: JPEG-LS / JPEG 2000 base | x2 tier fg: JPEG-LS / JPEG 2000 base |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['series']} | {r['role']} | {r['target_ratio']:g} | {r['chosen']} | {r['pixel_ratio']:.1f} | "
                   f"{f(r['psnr_fg'])} | {f(r['ssim'], 4)} | {f(r['j2k_psnr_fg'])} ({f(r['j2k_ratio'], 1)}) | "
                   f"{'' if r['margin_psnr_fg_vs_j2k'] is None else format(r['margin_psnr_fg_vs_j2k'], '+.2f')} | "
                   f"{_tier(r, 'x4')} | {_tier(r, 'x2')} |")
    return "\n".join(out) + "\n"


def _tier(r: dict, k: str) -> str:
    """A tier's fg PSNR on each base (JPEG-LS / JPEG 2000); a base that cannot fit the budget is shown at the
    ratio it reached (not eligible)."""
    out = []
    for b in ("jpegls", "j2kbase"):
        v = r.get(f"{k}_{b}_psnr_fg")
        if v is None:
            out.append("-")
        elif r.get(f"{k}_{b}_fits", True):
            out.append(f"{v:.2f}")
        else:
            out.append(f"({v:.2f} at {r[f'{k}_{b}_ratio']:.0f}:1)")
    return " / ".join(out)


def _plot(rows: list[dict], path: Path) -> None:
    def draw(ax) -> None:
        for k, name in enumerate(dict.fromkeys(r["series"] for r in rows)):
            pts = [(r["target_ratio"], r["margin_psnr_fg_vs_j2k"], r["chosen"]) for r in rows if r["series"] == name]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "-o", color=f"C{k}", label=name)
            for x, y, c in pts:
                ax.annotate(c, (x, y), textcoords="offset points", xytext=(3, 3), fontsize=6, color=f"C{k}")

    margin_plot(path, draw, xlabel="ratio N (pixel payload <= original pixel bytes / N)",
                ylabel="stored minus JPEG 2000 at the same budget, fg PSNR (dB)",
                title="medsr archive --ratio N: margin over full-slice JPEG 2000")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipelines.bench_ratio", description=__doc__.split("\n\n")[0])
    add_series_arguments(p)
    p.add_argument("--ratios", default="80,100,150")
    p.add_argument("--device", default="auto")
    a = p.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from medsr.engine import select_device
    from medsr.flow.rd_ratio import ratio_sweep
    from medsr.io import read_series

    ratios = [float(x) for x in a.ratios.split(",") if x.strip()]
    specs = parse_roles(a.series)
    t0 = time.perf_counter()
    rows, models = [], set()
    for role, path, name in specs:
        res = ratio_sweep(read_series(path), ratios, device=a.device)
        for r in res["ratios"]:
            rows.append(_row(name, role, r))
            models |= {c["model_id"] for c in r["candidates"]}
            print(json.dumps(rows[-1]), flush=True)
    meta = {"machine": machine(select_device(a.device)), "models": sorted(models), "seconds": time.perf_counter() - t0,
            "command": "python -m pipelines.bench_ratio " + " ".join(argv if argv is not None else sys.argv[1:])}
    write_table(a.out, {"meta": meta, "rows": rows}, _markdown(rows, meta), lambda png: _plot(rows, png))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
