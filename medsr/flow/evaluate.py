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
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        p = result["panels"]
        keys = [k for k in p if k != "index"]
        vmax = np.percentile(p["original"], 99.5)
        fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3.4))
        for ax, k in zip(np.atleast_1d(axes), keys):
            ax.imshow(p[k], cmap="gray", vmin=0, vmax=vmax)
            ax.set_title(k, fontsize=9)
            ax.axis("off")
        fig.suptitle(f"{Path(rows[0]['series']).name}, slice {p['index']}", fontsize=10)
        fig.tight_layout()
        png = out / "eval.png"
        fig.savefig(png, dpi=110)
        plt.close(fig)
    return md, js, png
