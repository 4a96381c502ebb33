"""``medsr rd --ratios``: the ``--ratio`` candidates of one series against the ratio, and where each wins.

At every ratio N, ``medsr.flow.budget.plan_budget`` (the very code ``medsr archive --ratio N`` runs) codes
each candidate to 1/N of the original pixel bytes, restores it as ``medsr restore`` would and measures it
with the audit's definitions. ``rd.json`` (schema ``medsr-rd-ratio-v1``) holds every candidate at every N
and the one an archive would store; ``rd.png`` draws foreground PSNR and SSIM against the ratio for the x4
tier, the x2 tier, their per-slice JPEG 2000 mixes and JPEG 2000 of the full slices, and marks the winner.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

RD_RATIO_SCHEMA = "medsr-rd-ratio-v1"
DEFAULT_RATIOS = (50.0, 80.0, 100.0, 150.0, 200.0)

Progress = Callable[[str, int, int], None]


def ratio_sweep(series, ratios: Sequence[float] = DEFAULT_RATIOS, *, method: str = "auto", model: str | None = None,
                device: str = "auto", consistency: bool = True, ensemble: int | None = None,
                search: str = "full", progress: Progress | None = None) -> dict:
    """Measure the ``--ratio`` candidates of ``series`` (a ``Series`` or a path) at every ratio.

    ``search`` ``full`` (default here: the curves draw every candidate restored in full; an archive's default
    ``sample`` ranks on a sample of slices first, ``medsr.flow.budget``)."""
    from ..io import Series, read_series
    from ..errors import BudgetError
    from .budget import check_ratio, plan_budget

    t0 = time.perf_counter()
    ratios = sorted({check_ratio(r) for r in ratios})  # a bad value fails before any work
    if not isinstance(series, Series):
        series = read_series(series)
    opb = series.original_pixel_bytes
    rows = []
    unreachable = None
    for k, n in enumerate(ratios):
        try:
            plan = plan_budget(series, n, method=method, model=model, device=device, consistency=consistency,
                               ensemble=ensemble, search=search)
        except BudgetError as e:  # ratios ascend: no higher one fits either
            unreachable = {"from_ratio": n, "error": str(e)}
            break
        rows.append(plan.summary(opb))
        if progress:
            progress("rate-distortion (ratios)", 1, len(ratios))
    if not rows:
        raise BudgetError(unreachable["error"])
    return {"schema": RD_RATIO_SCHEMA, "metrics_id": "medsr-metrics-v1",
            "series": {"series_instance_uid": series.series_uid, "slices": series.n_slices, "rows": series.shape[0],
                       "cols": series.shape[1], "bits_stored": series.bits_stored, "original_pixel_bytes": opb},
            "method": method, "ratios": rows, "unreachable": unreachable, "seconds": time.perf_counter() - t0}


STYLES = {"x4-jpegls": ("o", "C0", "x4 tier, lossy JPEG-LS base"),
          "x2-jpegls": ("s", "C1", "x2 tier, lossy JPEG-LS base"),
          "x4-j2kbase": ("o", "C4", "x4 tier, JPEG 2000 base"),
          "x2-j2kbase": ("s", "C5", "x2 tier, JPEG 2000 base"),
          "x4-jpegls+j2k": ("o", "C2", "x4 tier (JPEG-LS) + JPEG 2000 slices where better"),
          "x2-jpegls+j2k": ("s", "C3", "x2 tier (JPEG-LS) + JPEG 2000 slices where better"),
          "x4-j2kbase+j2k": ("o", "C6", "x4 tier (JPEG 2000 base) + JPEG 2000 slices"),
          "x2-j2kbase+j2k": ("s", "C7", "x2 tier (JPEG 2000 base) + JPEG 2000 slices"),
          "j2k": ("x", "0.3", "JPEG 2000 of the full slices")}


def plot_ratio_sweep(result: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    fig = Figure(figsize=(13, 5), dpi=100)
    FigureCanvasAgg(fig)
    for ax, key, label in zip(fig.subplots(1, 2), ("psnr_fg", "ssim"), ("foreground PSNR (dB)", "SSIM")):
        for name, (mk, col, text) in STYLES.items():
            pts = [(r["target_ratio"], c[key]) for r in result["ratios"] for c in r["candidates"]
                   if c["candidate"] == name and c["fits"] and c.get(key) is not None]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "-" if name != "j2k" else "--", marker=mk,
                        color=col, label=text)
        for r in result["ratios"]:  # the stored one at each ratio
            c = next(c for c in r["candidates"] if c["candidate"] == r["chosen"])
            ax.plot([r["target_ratio"]], [c[key]], marker="*", markersize=16, color="gold", markeredgecolor="k",
                    linestyle="none", zorder=5)
            ax.annotate(r["chosen"], (r["target_ratio"], c[key]), textcoords="offset points", xytext=(0, 10),
                        fontsize=7, ha="center")
        ax.set_xscale("log")
        ticks = sorted({r["target_ratio"] for r in result["ratios"]})
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("ratio N (pixel payload <= original pixel bytes / N)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    fig.axes[0].legend(fontsize=7, loc="best", title="gold star: what --ratio N stores", title_fontsize=7)
    s = result["series"]
    fig.suptitle(f"medsr --ratio candidates: {s['slices']} x {s['rows']}x{s['cols']}, {s['bits_stored']}-bit "
                 f"(restore method {result['method']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(str(path), format="png")


def format_ratio_table(result: dict) -> str:
    lines = [f"{'ratio':>7}  {'candidate':<15} {'achieved':>9} {'fg PSNR':>8} {'SSIM':>7} {'vs J2K fg':>9}  model"]
    for r in result["ratios"]:
        j2k = next((c for c in r["candidates"] if c["candidate"] == "j2k"), None)
        for c in r["candidates"]:
            mark = "*" if c["candidate"] == r["chosen"] else " "
            d = (c["psnr_fg"] - j2k["psnr_fg"]) if j2k and c["psnr_fg"] is not None else None
            lines.append(f"{r['target_ratio']:7g} {mark}{c['candidate']:<15} {c['pixel_ratio']:8.1f}: "
                         f"{c['psnr_fg']:8.2f} {c['ssim']:7.4f} {'' if d is None else f'{d:+9.2f}'}  "
                         f"{c['model_id'].split('@')[0]}{'' if c['fits'] else ' (over the budget)'}")
    if result.get("unreachable"):
        u = result["unreachable"]
        lines.append(f"{u['from_ratio']:7g}  not drawn from here on: {u['error'].split(': ', 1)[-1]}")
    return "\n".join(lines)


def write_ratio_sweep(result: dict, out_dir: Path, *, force: bool = False) -> tuple[Path, Path]:
    """Write ``rd.json`` and ``rd.png`` into ``out_dir`` (``medsr.flow.rd.write_rd`` with this plot)."""
    from .rd import write_rd

    return write_rd(result, out_dir, force=force, plot=plot_ratio_sweep)
