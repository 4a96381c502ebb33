"""Where the lossy-base tier overtakes JPEG 2000 (issue #14's evidence): per series, the margin of
``medsr archive --base lossy`` over JPEG 2000 of the full slices at the same pixel bytes, at the archive's
operating point (NEAR = 3% of the window) and across a NEAR sweep, and the crossover ratio: the ratio from
which the restore stays ahead of JPEG 2000 on the foreground.

    python -m pipelines.lossy_crossover --out docs/figures/lossy-crossover ROLE=SERIES [ROLE=SERIES ...]

Every point is ``medsr.api.rate_distortion`` (the code ``medsr rd`` runs) with only its ``--base lossy``
modes: each NEAR coded by the archive's JPEG-LS base coder, restored by the shipped lossy-base tier with its
own self-ensemble and the ±NEAR projection, exactly as archive + restore would, and measured with the
audit's definitions beside JPEG 2000 at the same ratio. ROLE (``evaluation``: never used to train or choose
anything; ``validation``: used to choose) is printed on every row. Writes OUT.json, OUT.md and OUT.png.
``make lossy-crossover`` runs it on the project's series.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from .role_tables import add_series_arguments, machine, margin_plot, parse_roles, write_table

DEFAULT_FRACTIONS = (0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05)
OPERATING_POINT = 0.03  # `medsr archive --base lossy`'s NEAR fraction (medsr.codec.base)
EQUAL_BYTES = 0.05  # JPEG 2000's ratio within 5% of the restore's: "at equal bytes"


def crossover(points: list[tuple[float, float]]) -> dict:
    """The ratio from which the restore stays ahead: ``points`` are (ratio, margin in dB) pairs.

    Sorted by ratio, the last point with a negative margin and the point after it bound the crossing, which is
    interpolated linearly in log(ratio). ``{"ratio": r, "kind": "between"}``; ``"below"`` when every measured
    margin is >= 0 (the crossing is at or under the smallest ratio measured, ``ratio`` = that one);
    ``"above"`` when the margin is negative at the largest ratio measured (``ratio`` = that one: the restore
    was not ahead anywhere from there up); ``{}`` without points.
    """
    pts = sorted((float(r), float(m)) for r, m in points if r is not None and m is not None
                 and math.isfinite(r) and math.isfinite(m))
    if not pts:
        return {}
    negative = [k for k, (_, m) in enumerate(pts) if m < 0]
    if not negative:
        return {"ratio": pts[0][0], "kind": "below"}
    k = negative[-1]
    if k == len(pts) - 1:
        return {"ratio": pts[-1][0], "kind": "above"}
    (r0, m0), (r1, m1) = pts[k], pts[k + 1]
    t = -m0 / (m1 - m0)  # m0 < 0 <= m1
    return {"ratio": math.exp(math.log(r0) + t * (math.log(r1) - math.log(r0))), "kind": "between"}


def series_rows(rd: dict) -> list[dict]:
    """The lossy-base points of one ``rate_distortion`` result: ratio, fg PSNR, SSIM, JPEG 2000 beside, margin."""
    out = []
    for m in rd["modes"]:
        if m.get("base") != "lossy" or "jpeg2000" not in m:
            continue
        j = m["jpeg2000"]
        out.append({"mode": m["mode"], "near": m["parameter"], "model_id": m["model_id"], "ensemble": m["ensemble"],
                    "ratio": m["ratio"], "psnr_fg": m["psnr_fg"], "ssim": m["ssim"], "j2k_ratio": j["ratio"],
                    "j2k_psnr_fg": j["psnr_fg"], "j2k_ssim": j["ssim"], "margin_psnr_fg": m["psnr_fg"] - j["psnr_fg"],
                    # JPEG 2000 has a floor of bytes (markers, one packet a slice): on small slices it cannot reach
                    # every ratio and spends more bytes than the restore (a margin in its favour)
                    "j2k_equal_bytes": abs(j["ratio"] / m["ratio"] - 1) <= EQUAL_BYTES})
    return out


def summarise(name: str, role: str, rd: dict, operating: float = OPERATING_POINT) -> dict:
    rows = series_rows(rd)
    op_mode = f"lossy-{operating * 100:g}%"
    op = next((r for r in rows if r["mode"] == op_mode), None)
    return {"series": name, "role": role, "points": rows, "operating_point": op,
            "crossover": crossover([(r["ratio"], r["margin_psnr_fg"]) for r in rows]),
            "device": rd["device"], "seconds": rd["seconds"]}


def _crossing_text(c: dict) -> str:
    if not c:
        return "-"
    return {"between": f"{c['ratio']:.0f}:1", "below": f"<= {c['ratio']:.0f}:1 (ahead at every point)",
            "above": f"> {c['ratio']:.0f}:1 (behind at the largest ratio)"}[c["kind"]]


def markdown(results: list[dict], meta: dict) -> str:
    out = [f"Machine: {meta['machine']}. {meta['seconds']:.0f} s. Command: `{meta['command']}`.", "",
           "| series | role | model (passes) | at the operating point (NEAR 3%): ratio, fg PSNR, JPEG 2000 fg, margin, "
           "SSIM vs JPEG 2000 | crossover ratio | margin fg at each ratio measured |", "|---|---|---|---|---|---|"]
    for s in results:
        op = s["operating_point"]
        ops = "-" if op is None else (f"{op['ratio']:.0f}:1, {op['psnr_fg']:.2f}, {op['j2k_psnr_fg']:.2f}"
                                      + ("" if op["j2k_equal_bytes"] else f" (at {op['j2k_ratio']:.0f}:1)") + ", "
                                      f"**{op['margin_psnr_fg']:+.2f}**, {op['ssim']:.4f} vs {op['j2k_ssim']:.4f}")
        sweep = ", ".join(f"{p['ratio']:.0f}:1 {p['margin_psnr_fg']:+.2f}"
                          + ("" if p["j2k_equal_bytes"] else f" (JPEG 2000 at {p['j2k_ratio']:.0f}:1)")
                          for p in sorted(s["points"], key=lambda p: p["ratio"]))
        first = s["points"][0] if s["points"] else {}
        out.append(f"| {s['series']} | {s['role']} | {first.get('model_id', '-')} ({first.get('ensemble', '-')}) | "
                   f"{ops} | {_crossing_text(s['crossover'])} | {sweep} |")
    if any(not p["j2k_equal_bytes"] for s in results for p in s["points"]):
        out += ["", "(JPEG 2000 at N:1): JPEG 2000 could not code the series in as few bytes (its floor of bytes on "
                "small slices); it is measured at the smallest size it reached, with more bytes than the restore, so "
                "that margin is in JPEG 2000's favour."]
    return "\n".join(out) + "\n"


def plot(results: list[dict], path: Path) -> None:
    def draw(ax) -> None:
        for k, s in enumerate(results):
            pts = sorted((p["ratio"], p["margin_psnr_fg"]) for p in s["points"])
            style = "-o" if s["role"] == "evaluation" else "--s"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, color=f"C{k}",
                    label=f"{s['series']} ({s['role']})")
            if s["crossover"].get("kind") == "between":
                ax.plot([s["crossover"]["ratio"]], [0], "x", color=f"C{k}", markersize=9)

    margin_plot(path, draw, xlabel="pixel ratio (original pixel bytes / stored)",
                ylabel="--base lossy restore minus JPEG 2000, fg PSNR (dB)",
                title="Lossy-base tier vs JPEG 2000 at equal bytes (x: crossover)", log_x=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipelines.lossy_crossover", description=__doc__.split("\n\n")[0])
    add_series_arguments(p)
    p.add_argument("--near-fractions", default=",".join(f"{f:g}" for f in DEFAULT_FRACTIONS),
                   help="NEAR as fractions of the low-res window (the operating point, 0.03, is always measured)")
    p.add_argument("--method", default="auto", choices=("auto", "bicubic"),
                   help="auto: the shipped lossy-base tier (bicubic: fast, for tests)")
    p.add_argument("--device", default="auto")
    a = p.parse_args(argv)
    from medsr.api import rate_distortion, read_series

    fractions = sorted({float(x) for x in a.near_fractions.split(",") if x.strip()} | {OPERATING_POINT})
    specs = parse_roles(a.series)
    t0 = time.perf_counter()
    results = []
    for role, path, name in specs:
        rd = rate_distortion(read_series(path), method=a.method, device=a.device, nears=(), lossy=(), floors=(),
                             lossy_fractions=fractions)
        results.append(summarise(name, role, rd))
        print(json.dumps({k: v for k, v in results[-1].items() if k != "points"}), flush=True)
    meta = {"machine": machine(", ".join(sorted({r["device"] for r in results}))),
            "seconds": time.perf_counter() - t0, "near_fractions": fractions,
            "command": "python -m pipelines.lossy_crossover " + " ".join(argv if argv is not None else sys.argv[1:])}
    write_table(a.out, {"meta": meta, "series": results}, markdown(results, meta), lambda png: plot(results, png))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
