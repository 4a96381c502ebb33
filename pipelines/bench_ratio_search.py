"""How much ``--ratio-search sample`` (the default) saves over ``full``, and what it costs in choice (issue #19).

    python -m pipelines.bench_ratio_search --out docs/figures/ratio-search --ratios 100,150 ROLE=SERIES [...]

For every series and N, ``medsr.flow.budget.plan_budget`` (the code ``medsr archive --ratio N`` runs) twice in
this process, on the same series already read: ``full`` (every candidate restored and measured in full: the
baseline) then ``sample`` (restores ranked on ``SAMPLE_SLICES`` slices first, only those within ``KEEP_DB`` of
the best restored in full). Prints and writes, per row: the stored candidate and its foreground PSNR under
each search, the difference, the seconds of each and their ratio. A series of at most ``SAMPLE_SLICES``
slices is the same under both (no ranking), so only longer ones are worth listing. ROLE as in
``pipelines.bench_ratio``. ``make ratio-search-bench`` runs it on the project's series.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .role_tables import add_series_arguments, machine, parse_roles, write_table

REPO = Path(__file__).resolve().parents[1]


def compare(series, ratio: float, device: str = "auto") -> dict:
    """One row: ``plan_budget`` with ``full`` then ``sample``, timed in this process."""
    from medsr.flow.budget import plan_budget

    out = {"target_ratio": ratio, "slices": series.n_slices}
    for search in ("full", "sample"):
        t0 = time.perf_counter()
        plan = plan_budget(series, ratio, device=device, search=search)
        out[search] = {"seconds": round(time.perf_counter() - t0, 2), "chosen": plan.chosen.name,
                       "model_id": plan.chosen.model_id, "psnr_fg": round(float(plan.chosen.metrics.psnr_fg), 4),
                       "ssim": round(float(plan.chosen.metrics.ssim), 4), "pixel_bytes": int(plan.chosen.pixel_bytes),
                       "restored_in_full": sum(1 for c in plan.candidates if c.slices_measured is None
                                               and c.name != "j2k" and not c.name.endswith("+j2k"))}
    out["same_choice"] = out["full"]["chosen"] == out["sample"]["chosen"] and \
        out["full"]["model_id"] == out["sample"]["model_id"]
    out["psnr_fg_sample_minus_full"] = round(out["sample"]["psnr_fg"] - out["full"]["psnr_fg"], 4)
    out["speedup"] = round(out["full"]["seconds"] / max(out["sample"]["seconds"], 1e-9), 2)
    return out


def _markdown(rows: list[dict], meta: dict) -> str:
    out = [f"Machine: {meta['machine']}; {meta['seconds']:.0f} s in all. Command: `{meta['command']}`. "
           "Seconds are `plan_budget` only (the candidates coded, restored and measured), both searches in one "
           "process on the series already read; compare the ratio, not the seconds, across machines.", "",
           "| series | role | slices | N | stored (full) | stored (sample) | fg PSNR full / sample | "
           "SR candidates restored in full (full / sample) | s full | s sample | full / sample |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        f, s = r["full"], r["sample"]
        out.append(f"| {r['series']} | {r['role']} | {r['slices']} | {r['target_ratio']:g} | {f['chosen']} | "
                   f"{s['chosen']} | {f['psnr_fg']:.2f} / {s['psnr_fg']:.2f} | {f['restored_in_full']} / "
                   f"{s['restored_in_full']} | {f['seconds']:.1f} | {s['seconds']:.1f} | {r['speedup']:.2f}x |")
    return "\n".join(out) + "\n"


def _plot(rows: list[dict], path: Path) -> None:
    """Seconds of each search per row (bars), the ratio written above each pair."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    x = range(len(rows))
    ax.bar([i - 0.2 for i in x], [r["full"]["seconds"] for r in rows], 0.4, label="full (every candidate in full)")
    ax.bar([i + 0.2 for i in x], [r["sample"]["seconds"] for r in rows], 0.4, label="sample (default)")
    for i, r in zip(x, rows):
        ax.annotate(f"{r['speedup']:.1f}x" + ("" if r["same_choice"] else " (other choice)"),
                    (i, r["full"]["seconds"]), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=7)
    ax.set_xticks(list(x), [f"{r['series'][:18]}\n{r['slices']} sl, {r['target_ratio']:g}:1" for r in rows],
                  fontsize=6)
    ax.set_ylabel("seconds (plan_budget)")
    ax.set_title("medsr archive --ratio N: ranking on a sample of slices vs restoring every candidate")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipelines.bench_ratio_search", description=__doc__.split("\n\n")[0])
    add_series_arguments(p)
    p.add_argument("--ratios", default="100,150")
    p.add_argument("--device", default="auto")
    a = p.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from medsr.engine import select_device
    from medsr.io import read_series

    ratios = [float(x) for x in a.ratios.split(",") if x.strip()]
    t0 = time.perf_counter()
    rows = []
    for role, path, name in parse_roles(a.series):
        series = read_series(path)
        for n in ratios:
            rows.append({"series": name, "role": role, **compare(series, n, a.device)})
            print(json.dumps(rows[-1]), flush=True)
    meta = {"machine": machine(select_device(a.device)), "seconds": time.perf_counter() - t0,
            "command": "python -m pipelines.bench_ratio_search " + " ".join(argv if argv is not None else sys.argv[1:])}
    write_table(a.out, {"meta": meta, "rows": rows}, _markdown(rows, meta), lambda png: _plot(rows, png))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
