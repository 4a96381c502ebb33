"""``medsr rd``: rate-distortion of medsr's storage modes for one series, to choose a mode.

For one series, each mode is one way of storing the x4 low-res slices; every mode is
restored exactly as ``medsr restore`` would (decode the base, network or bicubic,
projection onto the decoded base, rounding to the stored dtype) and measured against the
original with ``medsr.audit.measure`` (``medsr-metrics-v1``, docs/audit.md):

- ``lossless``: the archive's lossless base (HDF5 gzip + shuffle of the low-res integers);
- ``near-lossless-k<K>``: JPEG-LS NEAR=K of each low-res slice (``medsr.codec.base``);
- ``lossy-<P>%``: the archive's ``--base lossy``: JPEG-LS with NEAR = P% of the low-res window
  (``medsr.codec.base.lossy_near``), restored by the lossy-base tier model when the method is
  ``auto`` and one is shipped (``medsr.models.default_model_for("lossy")``);
- ``lossy-j2k-1/<F>``: JPEG 2000 (lossy) of the low-res slices at 1/F of the lossless
  bytes (``medsr.audit.jpeg2000_at_ratio`` on the low-res stack), a preview-quality base;
- ``floor-fg<DB>``: the archive's default base with the per-slice floor ``--floor-psnr-fg DB``
  (docs/floor.md), planned by the very code ``medsr archive`` runs (``medsr.flow.floor.floor_series``):
  ratio from the stored pixel bytes (base incl. placeholders + floor payloads), ``min_psnr_fg``
  over slices, slices/bytes per representation, and ``per_slice_j2k_floor``: per-slice-rate
  JPEG 2000 meeting the same floor (the floor's own baseline).

Beside each mode: JPEG 2000 of the full original slice at the same pixel ratio
(``jpeg2000_at_ratio``), the standard codec an administrator would otherwise use.
Ratio = original pixel bytes / stored pixel bytes (headers excluded: they are the same
for every mode). Writes ``rd.json`` (schema ``medsr-rd-v1``) and ``rd.png`` into a folder.
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

RD_SCHEMA = "medsr-rd-v1"
DEFAULT_NEARS = (2, 3, 4)
DEFAULT_LOSSY = (2, 4, 8)
DEFAULT_LOSSY_FRACTIONS = (0.02, 0.03, 0.05)  # --base lossy NEAR as fractions of the window (default 0.03)
DEFAULT_FLOORS = (35.0, 40.0)  # --floor-psnr-fg values (dB) of the floor modes
KEYS = ("psnr", "psnr_fg", "ssim", "ssim_fg")

Progress = Callable[[str, int, int], None]


def _rescale(stack: np.ndarray, slope: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    return stack.astype(np.float64) * slope[:, None, None] + intercept[:, None, None]


def _metrics(m) -> dict:
    from ..audit.metrics import json_safe

    return {k: json_safe(float(getattr(m, k))) for k in KEYS + ("nrmse", "hfen")}


def rate_distortion(series, *, method: str = "auto", model: str | None = None, device: str = "auto",
                    operator: str = "area4-v1", nears: Sequence[int] = DEFAULT_NEARS,
                    lossy: Sequence[float] = DEFAULT_LOSSY, lossy_fractions: Sequence[float] = DEFAULT_LOSSY_FRACTIONS,
                    floors: Sequence[float] = DEFAULT_FLOORS, consistency: bool = True, with_j2k: bool = True,
                    progress: Progress | None = None, ensemble: int | None = None) -> dict:
    """Measure every mode on ``series`` (a ``Series`` or a path) -> the ``rd.json`` dict.

    ``floors``: foreground-PSNR floors (dB), each a ``floor-fg<DB>`` row on the archive's default base.
    ``ensemble``: the models' self-ensemble size (None: each model's own, as an archive would use)."""
    from .restoring import resolve_model as _resolve_model
    from ..audit import measure, series_data_range
    from ..codec import crop_to, downsample, get_operator, intensity_window, pad_to_multiple
    from ..codec.base import (BASE_LOSSY, consistency_tolerance)
    from ..engine import EngineConfig, device_for, restore_stack, to_stored
    from ..io import Series, read_series

    t0 = time.perf_counter()
    if not isinstance(series, Series):
        series = read_series(series)
    op = get_operator(operator)
    rows, cols = series.shape
    padded, _pad = pad_to_multiple(series.pixels, op.scale)
    lowres = downsample(padded, op.id)
    window = intensity_window(lowres)
    requested = method
    method, loaded = _resolve_model(method, model, ensemble=ensemble)
    # the lossy modes restore with the lossy-base tier, as `medsr archive --base lossy` would
    loaded_lossy = _resolve_model(requested, model, BASE_LOSSY, ensemble)[1] if requested == "auto" else loaded
    for m in (loaded, loaded_lossy):
        if m is not None:
            m.check_operator(op.id, op.scale)
    dev = device_for(method, device)
    engine = EngineConfig(method=method, device=dev, consistency=consistency)
    original = series.rescaled()
    dr = series_data_range(original)
    integer = np.issubdtype(series.pixels.dtype, np.integer) and series.bits_stored <= 16
    opb = series.original_pixel_bytes

    modes = _base_modes(series, lowres, window, nears=nears, lossy_fractions=lossy_fractions, lossy=lossy,
                        integer=integer)

    floors = sorted({float(x) for x in floors}) if floors and integer else []
    if floors:
        from ..floor import check_floor

        for db in floors:
            check_floor(db, None, "lossless")  # invalid values fail before any work
    total = (len(modes) + (1 + len(floors) if floors else 0)) * series.n_slices  # floors: 1 restore + plans
    vr = series.value_range
    rows_out = []
    for name, base, param, codec, dec, nbytes in modes:
        mod = loaded_lossy if base == BASE_LOSSY else loaded
        cfg = replace(engine, consistency_tolerance=consistency_tolerance(base, int(param)))  # as archive + restore
        hr = restore_stack(dec, window, op.scale, config=cfg, module=mod.module if mod else None,
                           operator=op.id)
        restored = to_stored(crop_to(hr, rows, cols), series.pixels.dtype, vr)
        m = measure(original, _rescale(restored, series.slope, series.intercept), data_range=dr, name=name)
        ratio = opb / max(nbytes, 1)
        row = {"mode": name, "base": base, "parameter": param, "codec": codec, "stored_pixel_bytes": int(nbytes),
               "model_id": mod.model_id if mod else method, "ensemble": mod.ensemble if mod else 1,
               "ratio": ratio,
               "max_lowres_error": int(np.abs(dec.astype(np.float64) - lowres.astype(np.float64)).max()) if dec.size else 0,
               **_metrics(m)}
        if with_j2k and integer and ratio > 1:
            row["jpeg2000"] = _jpeg2000_beside(series, ratio, original, dr)
        rows_out.append(row)
        if progress:
            progress("rate-distortion", series.n_slices, total)
    if floors:
        rows_out += _floor_rows(series, floors, lowres=lowres, window=window, op=op, requested=requested, model=model,
                                ensemble=ensemble, dev=dev, consistency=consistency, with_j2k=with_j2k, original=original, dr=dr,
                                progress=(lambda k: progress("rate-distortion", k, total)) if progress else None)
    _add_deltas(rows_out)
    return {
        "schema": RD_SCHEMA, "metrics_id": "medsr-metrics-v1",
        "series": {"series_instance_uid": series.series_uid, "slices": series.n_slices, "rows": rows, "cols": cols,
                   "dtype": str(series.pixels.dtype), "bits_stored": series.bits_stored,
                   "original_pixel_bytes": opb, "source_kind": series.kind},
        "operator": op.id, "method": method, "model_id": loaded.model_id if loaded else method, "device": dev,
        "data_consistency": consistency, "data_range": dr,
        "ratio_definition": "original pixel bytes / stored pixel bytes (codestream or compressed dataset bytes)",
        "modes": rows_out, "seconds": time.perf_counter() - t0,
    }


def _add_deltas(rows_out: list[dict]) -> None:
    """Each row's ratio and PSNR relative to the lossless row (the first), and to JPEG 2000 beside it."""
    ref = rows_out[0]
    for r in rows_out:
        r["ratio_vs_lossless"] = r["ratio"] / ref["ratio"]
        r["delta_psnr_vs_lossless"] = _delta(r["psnr"], ref["psnr"])
        r["delta_psnr_fg_vs_lossless"] = _delta(r["psnr_fg"], ref["psnr_fg"])
        if "jpeg2000" in r:
            r["delta_psnr_vs_jpeg2000"] = _delta(r["psnr"], r["jpeg2000"]["psnr"])


def _base_modes(series, lowres: np.ndarray, window, *, nears, lossy_fractions, lossy, integer: bool) -> list[tuple]:
    """(name, base, parameter, codec id, decoded low-res, stored bytes) of every low-res base to measure."""
    from ..archive.sizes import stored_pixel_bytes
    from ..audit import jpeg2000_at_ratio
    from ..codec.base import BASE_LOSSY, BASE_NEAR_LOSSLESS, JPEGLS_NEAR_ID, lossy_near, prepare_base, supports_near_lossless
    from ..errors import MedsrError

    # (name, base, parameter, codec id) -> decoded low-res and stored bytes
    modes: list[tuple[str, str, float, str, np.ndarray, int]] = []
    lossless_bytes = stored_pixel_bytes(lowres)
    modes.append(("lossless", "lossless", 0, "hdf5-gzip6-shuffle", lowres, lossless_bytes))
    if nears and supports_near_lossless(lowres) == "":
        for k in sorted({int(k) for k in nears}):
            p = prepare_base(lowres, BASE_NEAR_LOSSLESS, k)
            modes.append((f"near-lossless-k{k}", BASE_NEAR_LOSSLESS, k, JPEGLS_NEAR_ID, p.decoded, p.coded_bytes))
    if lossy_fractions and supports_near_lossless(lowres) == "":
        for fr in sorted({float(x) for x in lossy_fractions}):
            if not 0 < fr < 0.5:
                raise MedsrError(f"--lossy-near fractions must be in (0, 0.5) (got {fr:g})")
            p = prepare_base(lowres, BASE_LOSSY, lossy_near(window.width, fr))
            modes.append((f"lossy-{100 * fr:g}%", BASE_LOSSY, p.meta.near, JPEGLS_NEAR_ID, p.decoded, p.coded_bytes))
    if lossy and integer:
        for f in sorted({float(f) for f in lossy}):
            if not f > 1:
                raise MedsrError(f"--lossy fractions are 1/F of the lossless size with F > 1 (got {f:g})")
            target_ratio = lowres.nbytes / (lossless_bytes / f)
            if not target_ratio > 1:
                continue
            dec, nbytes = jpeg2000_at_ratio(lowres, series.bits_stored, target_ratio)
            modes.append((f"lossy-j2k-1/{f:g}", "lossy-j2k", f, "openjpeg-j2k-lossy-v1", dec, nbytes))

    return modes


def _floor_rows(series, floors, *, lowres, window, op, requested, model, ensemble, dev, consistency, with_j2k, original, dr,
                progress) -> list[dict]:
    """One ``floor-fg<DB>`` row per floor: exactly what ``medsr archive --floor-psnr-fg DB`` (default base)
    would plan and store. Planned with ``--floor-fallback lossless`` so a row always exists; ``lossless``
    slices (only the fallback stores them) mean the archive needs that option (``needs_fallback_lossless``)."""
    from .restoring import archive_engine as _archive_engine, resolve_model as _resolve_model
    from .restoring import restore_pixels_stored as _restore_pixels
    from ..audit import measure
    from ..codec.base import prepare_base
    from ..floor import FLOOR_ID, check_floor
    from .floor import floor_series

    rows, cols = series.shape
    opb = series.original_pixel_bytes
    base = prepare_base(lowres, None, None)  # the archive's default base (near-lossless where the data allow it)
    method, loaded = _resolve_model(requested, model, base.meta.base, ensemble)
    engine = _archive_engine(method, dev, consistency, base.meta)
    restored = _restore_pixels(base.decoded, window=window, scale=op.scale, operator=op.id, rows=rows, cols=cols,
                               dtype=series.pixels.dtype, value_range=series.value_range, engine=engine,
                               module=loaded.module if loaded else None, progress=progress)
    out = []
    for db in floors:
        fs = floor_series(series, restored.copy(), check_floor(db, None, "lossless"), base, true_lowres=lowres,
                          operator=op.id, progress=progress)
        summ = fs.plan.summary(fs.base_slice_bytes, opb)
        m = measure(original, _rescale(fs.restored, series.slope, series.intercept), data_range=dr,
                    name=f"floor-fg{db:g}")
        ratio = opb / max(fs.stored_bytes, 1)
        reps = summ["representations"]
        row = {"mode": f"floor-fg{db:g}", "base": "floor", "parameter": db, "codec": FLOOR_ID,
               "floor_base": base.meta.base, "floor_base_near": base.meta.near,
               "stored_pixel_bytes": int(fs.stored_bytes), "base_bytes": int(fs.base_bytes),
               "floor_bytes": int(summ["floor_bytes"]), "model_id": loaded.model_id if loaded else method,
               "ratio": ratio, "max_lowres_error": None, **_metrics(m),
               "min_psnr_fg": summ["min_psnr_fg"], "min_ssim": summ["min_ssim"], "representations": reps,
               "needs_fallback_lossless": reps["lossless"]["slices"] > 0}
        b = fs.plan.baseline_bytes
        if b is not None:
            row["per_slice_j2k_floor"] = {"bytes": int(b), "ratio": opb / max(b, 1),
                                          "bytes_vs": fs.stored_bytes / max(b, 1)}  # ours / it
        if with_j2k and ratio > 1:
            row["jpeg2000"] = _jpeg2000_beside(series, ratio, original, dr)
        out.append(row)
    return out


def _jpeg2000_beside(series, ratio: float, original: np.ndarray, dr: float) -> dict:
    """JPEG 2000 of the full original slices at ``ratio``: its achieved ratio, bytes and metrics."""
    from ..audit import jpeg2000_at_ratio, measure

    j, jb = jpeg2000_at_ratio(series.pixels, series.bits_stored, ratio)
    jm = measure(original, _rescale(j, series.slope, series.intercept), data_range=dr, name="jpeg2000")
    return {"ratio": series.original_pixel_bytes / max(jb, 1), "bytes": int(jb), **_metrics(jm)}


def _delta(a, b):
    return None if a is None or b is None else a - b


def plot_rd(result: dict, path: Path) -> None:
    """PSNR, foreground PSNR and SSIM against ratio: medsr's modes next to JPEG 2000 (PNG, Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    fig = Figure(figsize=(15, 4.6), dpi=100)
    FigureCanvasAgg(fig)
    modes = result["modes"]
    styles = {"lossless": ("s", "C0"), "near-lossless": ("o", "C1"), "lossy": ("D", "C3"), "lossy-j2k": ("^", "C2"),
              "floor": ("*", "C4")}
    labels = {"floor": "medsr, per-slice floor fg>=DB (default base)"}
    for ax, key, label in zip(fig.subplots(1, 3), KEYS[:2] + ("ssim",), ("PSNR (dB)", "foreground PSNR (dB)", "SSIM")):
        j = sorted((r["jpeg2000"]["ratio"], r["jpeg2000"][key]) for r in modes if "jpeg2000" in r
                   and r["jpeg2000"].get(key) is not None)
        if j:
            ax.plot([x for x, _ in j], [y for _, y in j], "-", color="0.4", marker="x",
                    label="JPEG 2000 of the full slice")
        for base, (mk, col) in styles.items():
            pts = sorted((r["ratio"], r[key], r["mode"]) for r in modes if r["base"] == base and r.get(key) is not None)
            if not pts:
                continue
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "-", marker=mk, color=col,
                    markersize=10 if base == "floor" else 6, label=labels.get(base, f"medsr, {base} base"))
            for x, y, name in pts:
                ax.annotate(name.replace("near-lossless-", "").replace("lossy-j2k-", "j2k ").replace("floor-", ""),
                            (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7, color=col)
        # the floor's own baseline: per-slice-rate JPEG 2000 meeting the same floor (bytes only: a vertical line)
        for n, r in enumerate(r for r in modes if r["base"] == "floor" and r.get("per_slice_j2k_floor")):
            x = r["per_slice_j2k_floor"]["ratio"]
            ax.axvline(x, color="C5", linestyle=":", linewidth=1.2,
                       label="per-slice-rate JPEG 2000 meeting the same floor" if n == 0 else None)
            ax.annotate(f"J2K {r['mode'].replace('floor-', '')}", (x, 0.02), xycoords=("data", "axes fraction"),
                        fontsize=7, color="C5", rotation=90, xytext=(2, 0), textcoords="offset points")
        ax.set_xscale("log")
        lo, hi = ax.get_xlim()
        ticks = [t for t in (2, 3, 5, 7, 10, 15, 20, 30, 40, 50, 70, 100, 150, 200, 300, 500, 700, 1000, 2000)
                 if lo <= t <= hi]
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("ratio (original pixel bytes / stored pixel bytes)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    fig.axes[0].legend(fontsize=8, loc="best")
    s = result["series"]
    lossy_ids = {r.get("model_id") for r in modes if r["base"] == "lossy"} - {None, result["model_id"]}
    by = result["model_id"] + (f"; lossy rows: {', '.join(sorted(lossy_ids))}" if lossy_ids else "")
    fig.suptitle(f"medsr rate-distortion: {s['slices']} x {s['rows']}x{s['cols']}, restore by {by} "
                 f"({result['operator']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(str(path), format="png")


def write_rd(result: dict, out_dir: Path, *, force: bool = False, plot=None) -> tuple[Path, Path]:
    """Write ``rd.json`` and ``rd.png`` into ``out_dir`` (a new folder, atomically; ``force`` replaces it).
    ``plot(result, png_path)`` draws the PNG (default ``plot_rd``; ``medsr rd --ratios`` passes its own)."""
    from ..audit.metrics import json_safe
    from ..io import atomic_dir

    out_dir = Path(out_dir)
    with atomic_dir(out_dir, force=force) as tmp:
        (tmp / "rd.json").write_text(json.dumps(json_safe(result), indent=2, allow_nan=False) + "\n")
        (plot or plot_rd)(result, tmp / "rd.png")
    return out_dir / "rd.json", out_dir / "rd.png"


def format_table(result: dict) -> str:
    def f(v, d=2):
        return "   n/a" if v is None else f"{v:6.{d}f}"

    lines = [f"{'mode':<22} {'ratio':>7} {'PSNR':>6} {'fg':>6} {'SSIM':>6} {'dPSNR':>6} | "
             f"{'J2K ratio':>9} {'PSNR':>6} {'fg':>6} {'SSIM':>6}"]
    for r in result["modes"]:
        j = r.get("jpeg2000", {})
        lines.append(f"{r['mode']:<22} {r['ratio']:7.1f} {f(r['psnr'])} {f(r['psnr_fg'])} {f(r['ssim'], 4)} "
                     f"{f(r['delta_psnr_vs_lossless'])} | {f(j.get('ratio'), 1):>9} {f(j.get('psnr'))} "
                     f"{f(j.get('psnr_fg'))} {f(j.get('ssim'), 4)}")
    for r in result["modes"]:
        if r["base"] != "floor":
            continue
        reps = ", ".join(f"{k} {v['slices']}" for k, v in r["representations"].items() if v["slices"])
        line = f"  {r['mode']}: {reps}; worst slice fg PSNR {f(r['min_psnr_fg']).strip()} dB"
        p = r.get("per_slice_j2k_floor")
        if p:
            line += (f"; per-slice-rate JPEG 2000 meeting it: {p['bytes']:,} B ({p['ratio']:.1f}:1), "
                     f"ours / it = {p['bytes_vs']:.3f}")
        if r.get("needs_fallback_lossless"):
            line += " (needs --floor-fallback lossless)"
        lines.append(line)
    return "\n".join(lines)
