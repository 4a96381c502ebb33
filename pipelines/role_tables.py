"""What the per-series table pipelines share (``bench_ratio``, ``lossy_crossover``): the ``ROLE=SERIES``
arguments that say what each series was to the models, the machine line, and writing OUT.json, OUT.md and
OUT.png together."""
from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path
from typing import Any, Callable, NamedTuple

ROLES = ("evaluation", "validation")  # docs/evaluation.md


class RoleSeries(NamedTuple):
    role: str
    path: str
    name: str


def add_series_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("series", nargs="+", metavar="ROLE=SERIES", help="role (evaluation or validation) = folder or .nii.gz")
    p.add_argument("--out", type=Path, required=True, help="output stem: OUT.json, OUT.md, OUT.png")


def parse_roles(specs: list[str]) -> list[RoleSeries]:
    """``evaluation=PATH`` / ``validation=PATH`` -> (role, path, name); anything else stops with one line."""
    out = []
    for spec in specs:
        role, _, path = spec.partition("=")
        if role not in ROLES or not path:
            raise SystemExit(f"expected evaluation=PATH or validation=PATH, got {spec!r}")
        out.append(RoleSeries(role, path, Path(path.rstrip("/")).name.removesuffix(".gz").removesuffix(".nii")))
    return out


def machine(devices: str) -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, device {devices}"


def write_table(out: Path, payload: dict, markdown: str, plot: Callable[[Path], None]) -> None:
    """OUT.json (``payload``), OUT.md (``markdown``, also printed) and OUT.png (``plot``)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown)
    plot(out.with_suffix(".png"))
    print(markdown)


def margin_plot(path: Path, draw: Callable[[Any], None], *, xlabel: str, ylabel: str, title: str,
                log_x: bool = False) -> None:
    """A margin-against-ratio PNG: ``draw(ax)`` plots the series; the zero line, labels, grid and legend are
    the same on every such plot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    draw(ax)
    ax.axhline(0, color="0.3", linewidth=1)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3, which="both" if log_x else "major")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(str(path), format="png")
