"""``medsr eval``: the paper's kind of table for given series, from medsr's own audit.

    medsr eval SERIES [SERIES ...] -o DIR [--models medsr-srresnet-x4 medsr-srgan-x4] [--ensemble 1 2] [--no-j2k]

For every series and model, the series is archived to a temporary file with that model and
the audit (docs/audit.md definitions: data_range = series max - min, foreground mask, SSIM
with explicit data_range) gives PSNR / PSNR on the foreground / SSIM for the model, bicubic
from the same low-res data and JPEG 2000 at the same bytes. Writes ``eval.md``,
``eval.json`` and ``eval.png`` (the median slice of the first series by each method).
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np


def _variants(models: list[str], ensembles: list[int] | None) -> list[tuple[str, int | None]]:
    """(model, self-ensemble size or None = the model's own) pairs to evaluate."""
    return [(m, e) for m in models for e in (ensembles or [None])]


def evaluate(series: list[Path], models: list[str], *, j2k: bool = True, device: str = "auto",
             ensembles: list[int] | None = None) -> dict:
    from ..io import read_series
    from .pipeline import ArchiveOptions, archive_series

    rows = []
    panels = None
    variants = _variants(models, ensembles)
    for src in series:
        s = read_series(src)
        per = {}
        for i, (name, ens) in enumerate(variants):
            with tempfile.TemporaryDirectory() as d:
                res = archive_series(s, Path(d) / "e.medsr.h5",
                                     ArchiveOptions(method="model", model=name, device=device,
                                                    baselines=j2k and i == 0, ensemble=ens))
            m = res.audit["methods"]
            if i == 0:
                per["bicubic"] = m["bicubic"]
                if "jpeg2000" in m:
                    per["jpeg2000 (same bytes)"] = m["jpeg2000"]
                ratio = res.info.pixel_ratio
            n = res.info.model_ensemble
            per[name + (f" (self-ensemble x{n})" if n > 1 else "")] = m["restored"]
        for method, mm in per.items():
            rows.append({"series": str(src), "slices": s.n_slices, "size": f"{s.shape[0]}x{s.shape[1]}",
                         "method": method, "psnr": mm["psnr"], "psnr_fg": mm["psnr_fg"], "ssim": mm["ssim"],
                         "ssim_fg": mm["ssim_fg"], "pixel_ratio": ratio,
                         "gain_psnr_fg_vs_bicubic": mm["psnr_fg"] - per["bicubic"]["psnr_fg"]
                         if mm["psnr_fg"] is not None and per["bicubic"]["psnr_fg"] is not None else None})
        if panels is None:
            panels = _panel_images(s, variants, device)
    return {"rows": rows, "models": models, "ensembles": ensembles, "panels": panels}


def _panel_images(s, variants, device):
    """The median-foreground slice of a series, restored by bicubic and each model."""
    from ..codec import crop_to, downsample, intensity_window, pad_to_multiple
    from ..engine import EngineConfig, bicubic_upsample, restore_stack
    from .restoring import resolve_model as _resolve_model

    fg = (s.pixels > 0.05 * np.percentile(s.pixels, 99.5)).mean(axis=(1, 2))
    idx = int(np.argsort(fg)[len(fg) // 2 + len(fg) // 4]) if len(fg) > 1 else 0
    padded, _ = pad_to_multiple(s.pixels, 4)
    lr = downsample(padded, "area4-v1")
    w = intensity_window(lr)
    rows, cols = s.shape
    out = {"index": idx, "original": s.pixels[idx].astype(float),
           "bicubic": crop_to(bicubic_upsample(lr[idx:idx + 1], 4), rows, cols)[0]}
    for name, ens in variants:
        _, loaded = _resolve_model("model", name, ensemble=ens)
        hr = restore_stack(lr[idx:idx + 1], w, 4, config=EngineConfig(method="model", device=device), module=loaded.module)
        out[name + (f" x{loaded.ensemble}" if loaded.ensemble > 1 else "")] = crop_to(hr, rows, cols)[0]
    return out


def write_outputs(result: dict, out: Path) -> tuple[Path, Path, Path | None]:
    out.mkdir(parents=True, exist_ok=True)
    rows = result["rows"]
    lines = ["| series | size x slices | method | PSNR | PSNR fg | SSIM | fg gain vs bicubic |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        f = lambda v, d=2: "n/a" if v is None else f"{v:.{d}f}"
        lines.append(f"| {Path(r['series']).name} | {r['size']} x {r['slices']} | {r['method']} | {f(r['psnr'])} | "
                     f"{f(r['psnr_fg'])} | {f(r['ssim'], 4)} | {f(r['gain_psnr_fg_vs_bicubic'])} |")
    md = out / "eval.md"
    md.write_text("# medsr eval\n\nDefinitions: docs/audit.md (means over slices with >= 5% foreground; "
                  "JPEG 2000 at the archive's pixel bytes).\n\n" + "\n".join(lines) + "\n")
    js = out / "eval.json"
    js.write_text(json.dumps({"rows": rows, "models": result["models"], "ensembles": result.get("ensembles")}, indent=1))
    png = None
    if result.get("panels"):
        png = out / "eval.png"
        draw_panels(result["panels"], f"{Path(rows[0]['series']).name}, slice {result['panels']['index']}", png)
    return md, js, png


PANEL_COLUMNS = 5


def zoom_box(image: np.ndarray, fraction: float = 0.25) -> tuple[int, int, int]:
    """(top, left, size) of a square crop, ``fraction`` of the shorter side, centred on the foreground's centre
    of mass (pixels > 5% of the 99.5th percentile) and kept inside the image: the region the panel enlarges so
    that texture (what a perceptual model adds) can be seen."""
    img = np.asarray(image, dtype=float)
    h, w = img.shape
    size = max(8, int(round(min(h, w) * fraction)))
    fg = img > 0.05 * np.percentile(img, 99.5)
    cy, cx = (np.argwhere(fg).mean(axis=0) if fg.any() else (h / 2, w / 2))
    top = int(np.clip(round(cy - size / 2), 0, max(0, h - size)))
    left = int(np.clip(round(cx - size / 2), 0, max(0, w - size)))
    return top, left, min(size, h, w)


def draw_panels(panels: dict, title: str, path: Path, columns: int = PANEL_COLUMNS) -> None:
    """One slice by every method, ``columns`` methods a row, each over an enlarged crop (``zoom_box``, outlined
    on the full slice), all on the original's grey scale."""
    import math

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    keys = [k for k in panels if k != "index"]
    vmax = float(np.percentile(panels["original"], 99.5))
    top, left, size = zoom_box(panels["original"])
    ncols = min(columns, len(keys))
    blocks = math.ceil(len(keys) / ncols)
    fig = Figure(figsize=(3.0 * ncols, 6.2 * blocks))
    FigureCanvasAgg(fig)
    axes = fig.subplots(2 * blocks, ncols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, key in enumerate(keys):
        b, c = divmod(k, ncols)
        full, zoom = axes[2 * b, c], axes[2 * b + 1, c]
        full.imshow(panels[key], cmap="gray", vmin=0, vmax=vmax)
        full.add_patch(Rectangle((left - 0.5, top - 0.5), size, size, fill=False, edgecolor="#e8a33d", linewidth=1))
        full.set_title(key, fontsize=9)
        zoom.imshow(panels[key][top:top + size, left:left + size], cmap="gray", vmin=0, vmax=vmax,
                    interpolation="nearest")
        zoom.set_title(f"{key}, {size}x{size} crop", fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(str(path), dpi=110)
