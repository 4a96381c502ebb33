"""Archive to a byte budget (``medsr archive --ratio N``): measure every representation, store the best.

The budget is the original pixel bytes / N. With the original at hand, each candidate is coded to the
budget, restored exactly as ``medsr restore`` would, and measured against the original with the
audit's definitions (``medsr.audit.measure``):

- ``x4-jpegls`` / ``x2-jpegls``: the x4 (``area4-v1``) or x2 (``area2-v1``) low-res stack on a lossy
  JPEG-LS base whose NEAR is searched to the budget (``medsr.codec.rate.base_to_budget``), restored by
  the shipped lossy-base tier for that scale (bicubic where none is shipped, or with ``method`` bicubic),
  projected onto the +-NEAR box;
- ``x4-jpegls+j2k`` / ``x2-jpegls+j2k``: the same, except that every slice whose own bytes buy a better
  slice as JPEG 2000 of the full slice (same encoder as the audit baseline) is stored so (per-slice
  choice through the floor's ``j2k`` representation; its base codestream is left empty);
- ``j2k``: every slice as JPEG 2000 of the full slice, one encoder ratio for the series (exactly the
  audit's JPEG 2000 baseline at the budget).

A candidate whose pixel bytes exceed the budget is not eligible. The stored one has the best foreground
PSNR (within ``TIE_DB`` of it: the best SSIM); the audit's ``budget`` object lists every candidate and
why the stored one won (``BudgetPlan.summary``). Docs: docs/ratio.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..codec import get_operator

BUDGET_ID = "medsr-ratio-v1"
SR_OPERATORS = ("area4-v1", "area2-v1")
BASE_CODERS = ("jpegls", "j2kbase")  # the low-res base of an SR candidate: JPEG-LS NEAR search, or JPEG 2000
TIE_DB = 0.005  # foreground PSNRs this close are a tie, decided by SSIM
FULL_J2K = "j2k"
MIN_RATIO = 2.0  # below this the budget holds more than a lossless base; use --base lossless

Progress = Callable[[str, int, int], None]


@dataclass
class Candidate:
    """One way of storing the series within the budget, measured."""

    name: str
    operator: str
    method: str  # model | bicubic (how its SR slices restore)
    model_id: str
    pixel_bytes: int
    metrics: object  # MethodMetrics
    near: int = 0  # the base's largest JPEG-LS NEAR (0: no SR slices)
    j2k_slices: int = 0
    fits: bool = True
    # what an archive stores when it wins (not in the summary)
    base: object = None  # PreparedBase (empty codestreams for slices held whole)
    floor: object = None  # FloorData or None
    restored: np.ndarray | None = None
    lowres: np.ndarray | None = None  # as read_archive gives it
    window: object = None
    pad: tuple[int, int] = (0, 0)
    loaded: object = None  # LoadedModel of its SR slices (None: bicubic)

    @property
    def ensemble(self) -> int:
        return self.loaded.ensemble if self.loaded is not None else 1

    def row(self, original_pixel_bytes: int) -> dict:
        m = self.metrics
        return {"candidate": self.name, "operator": self.operator, "scale": get_operator(self.operator).scale,
                "method": self.method, "model_id": self.model_id, "base_near": int(self.near),
                "j2k_slices": int(self.j2k_slices), "pixel_bytes": int(self.pixel_bytes),
                "pixel_ratio": round(original_pixel_bytes / max(self.pixel_bytes, 1), 3), "fits": bool(self.fits),
                **{k: _num(getattr(m, k)) for k in ("psnr", "psnr_fg", "ssim", "ssim_fg")}}


def _num(v) -> float | None:
    v = float(v)
    return None if not np.isfinite(v) else round(v, 4)


@dataclass
class BudgetPlan:
    target_ratio: float
    budget_bytes: float
    candidates: list[Candidate]
    chosen: Candidate
    why: str
    notes: list[str] = field(default_factory=list)

    def summary(self, original_pixel_bytes: int) -> dict:
        """The audit's ``budget`` object (JSON)."""
        j2k = next((c for c in self.candidates if c.name == FULL_J2K), None)
        out = {"id": BUDGET_ID, "target_ratio": self.target_ratio, "budget_bytes": int(self.budget_bytes),
               "chosen": self.chosen.name, "why": self.why,
               "candidates": [c.row(original_pixel_bytes) for c in self.candidates], "notes": list(self.notes)}
        if j2k is not None:
            out["margin_psnr_fg_vs_j2k"] = _num(self.chosen.metrics.psnr_fg - j2k.metrics.psnr_fg)
        return out


def check_ratio(ratio) -> float:
    from ..errors import MedsrError

    try:
        r = float(ratio)
    except (TypeError, ValueError):
        raise MedsrError(f"--ratio must be a number (got {ratio!r})") from None
    if not (np.isfinite(r) and MIN_RATIO <= r <= 10_000):
        raise MedsrError(f"--ratio must be between {MIN_RATIO:g} and 10000 (got {ratio!r}); for an exact base use "
                         "--base lossless")
    return r


def plan_budget(series, ratio: float, *, method: str = "auto", model: str | None = None, device: str = "auto",
                consistency: bool = True, ensemble: int | None = None, operators=SR_OPERATORS,
                progress: Progress | None = None) -> BudgetPlan:
    """Measure every candidate for ``series`` at ``ratio`` and choose (see the module docstring)."""
    from ..audit.metrics import series_data_range
    from ..errors import InputError

    ratio = check_ratio(ratio)
    if not np.issubdtype(series.pixels.dtype, np.integer) or series.bits_stored > 16:
        raise InputError(f"--ratio needs integer pixels of at most 16 bits (these are {series.pixels.dtype}, "
                         f"{series.bits_stored} bits)", path=series.source)
    original = series.rescaled()
    dr = series_data_range(original)
    if not dr > 0:
        raise InputError("every pixel of the series has the same (rescaled) value: PSNR and SSIM are undefined, "
                         "so medsr cannot choose a representation", path=series.source)
    budget = series.original_pixel_bytes / ratio
    ctx = _Context(series, original, dr, budget, progress, 2 * len(operators) * len(BASE_CODERS) + 1)
    cands: list[Candidate] = []
    notes: list[str] = []
    for op_id, coder in ((o, c) for o in operators for c in BASE_CODERS):
        sr = _sr_candidate(ctx, op_id, method=method, model=model, device=device, consistency=consistency,
                           ensemble=ensemble, notes=notes, coder=coder)
        if sr is None:
            continue
        cands.append(sr)
        mixed = _mixed_candidate(ctx, sr)
        if mixed is not None:
            cands.append(mixed)
    cands.append(_j2k_candidate(ctx))
    chosen, why = _choose(cands)
    return BudgetPlan(ratio, budget, cands, chosen, why, notes)


@dataclass
class _Context:
    series: object
    original: np.ndarray
    dr: float
    budget: float
    progress: Progress | None
    steps: int
    done: int = 0

    def tick(self, stage: str) -> None:
        self.done += 1
        if self.progress:
            self.progress(f"ratio: {stage}", 1, self.steps)

    def measure(self, stored: np.ndarray, name: str):
        from ..audit import measure
        from .audit import rescale_stack

        s = self.series
        return measure(self.original, rescale_stack(stored, s.slope, s.intercept), data_range=self.dr, name=name)


def _models_for(op, method: str, model: str | None, ensemble, device: str, notes: list[str]) -> list[tuple]:
    """[(method, LoadedModel | None)] that may restore ``op``'s scale: ``model`` where it has that scale; else the
    shipped lossy-base tier for ``op`` and the shipped default model for ``op`` (trained on the exact and
    near-lossless bases: better where the budget buys a small NEAR), both measured; bicubic where none is
    shipped, or with ``method`` bicubic."""
    from ..codec.base import BASE_LOSSY
    from ..engine import select_device
    from ..models import default_model_for
    from .restoring import resolve_model as _resolve_model

    if method == "bicubic":
        return [("bicubic", None)]
    dev = select_device(device)
    if model is not None:
        m, loaded = _resolve_model("model", model, BASE_LOSSY, ensemble, device=dev, operator=op.id)
        if loaded.scale == op.scale:
            loaded.check_operator(op.id, op.scale)
            return [(m, loaded)]
    names = list(dict.fromkeys(n for n in (default_model_for(BASE_LOSSY, op.id), default_model_for(None, op.id)) if n))
    if not names:
        notes.append(f"no shipped model restores {op.id} (x{op.scale}): its candidates restore by bicubic")
        return [("bicubic", None)]
    out = []
    for name in names:
        m, loaded = _resolve_model("model", name, BASE_LOSSY, ensemble, device=dev, operator=op.id)
        loaded.check_operator(op.id, op.scale)
        out.append((m, loaded))
    return out


def _sr_candidate(ctx: _Context, op_id: str, *, method, model, device, consistency, ensemble,
                  notes: list[str], coder: str = "jpegls") -> Candidate | None:
    from ..codec import downsample, get_operator, intensity_window, pad_to_multiple
    from ..codec.base import BaseCodecError
    from ..codec.rate import base_to_budget, j2k_base_to_budget
    from ..engine import device_for
    from .restoring import applied_consistency as _consistency, archive_engine as _archive_engine
    from .restoring import restore_pixels_stored as _restore_pixels

    s = ctx.series
    op = get_operator(op_id)
    padded, pad = pad_to_multiple(s.pixels, op.scale)
    exact = downsample(padded, op.id)
    try:
        bb = (base_to_budget if coder == "jpegls" else j2k_base_to_budget)(exact, ctx.budget)
    except BaseCodecError as e:
        notes.append(f"{op.id} {coder}: the base cannot code this series ({e})")
        return None
    cons = _consistency(consistency, op.id)
    window = intensity_window(exact)
    rows, cols = s.shape
    name = f"x{op.scale}-{coder}"
    tried = []
    for m, loaded in _models_for(op, method, model, ensemble, device, notes):
        engine = _archive_engine(m, device_for(m, device), cons, bb.base.meta)
        restored = _restore_pixels(bb.base.decoded, window=window, scale=op.scale, operator=op.id, rows=rows,
                                   cols=cols, dtype=s.pixels.dtype, value_range=s.value_range, engine=engine,
                                   module=loaded.module if loaded else None)
        tried.append(Candidate(name, op.id, m, loaded.model_id if loaded else m, bb.nbytes,
                               ctx.measure(restored, name), near=bb.base.meta.near, fits=bb.fits, base=bb.base,
                               restored=restored, lowres=bb.base.decoded, window=window, pad=pad, loaded=loaded))
    best = max(tried, key=_fg)
    if len(tried) > 1:
        notes.append(f"{name} (NEAR {bb.base.meta.near}): " + ", ".join(
            f"{c.model_id.split('@')[0]} {_fg(c):.2f} dB" for c in tried) + f"; kept {best.model_id.split('@')[0]}")
    ctx.tick(name)
    if not bb.fits:
        notes.append(f"{name}: the base does not fit the budget even at its coarsest")
    return best


def _slice_j2k(a: np.ndarray, bits: int, nbytes: int) -> bytes | None:
    """JPEG 2000 of one slice in at most ``nbytes`` bytes (two tries), or None."""
    from ..codec.payload import j2k_encode

    raw = a.size * bits / 8
    r = max(1.0, raw / max(nbytes, 1))
    for _ in range(2):
        c = j2k_encode(a, bits, r)
        if len(c) <= nbytes:
            return c
        r *= 1.02 * len(c) / nbytes
    return None


def _per_slice(metrics) -> np.ndarray:
    """Each slice's foreground PSNR (its whole-slice PSNR where it has no foreground), as the floor judges."""
    return np.array([p.psnr_fg if np.isfinite(p.psnr_fg) else p.psnr for p in metrics.per_slice], dtype=np.float64)


def _mixed_candidate(ctx: _Context, sr: Candidate) -> Candidate | None:
    """``sr`` with every slice stored as full-slice JPEG 2000 where that slice's own base bytes buy a better slice."""
    from ..archive.floor import FloorData, floor_lowres
    from ..codec.payload import decode
    from ..codec.rate import without_slices

    s = ctx.series
    if not sr.fits or sr.base is None or sr.base.offsets is None:
        return None
    lo, hi = s.value_range
    per_bytes = np.diff(np.asarray(sr.base.offsets))
    trial = np.array(sr.restored, copy=True)
    payloads: list[bytes | None] = []
    for i in range(s.n_slices):
        c = _slice_j2k(s.pixels[i], s.bits_stored, int(per_bytes[i]))
        payloads.append(c)
        if c is not None:
            trial[i] = np.clip(decode(c, s.shape), lo, hi).astype(s.pixels.dtype)
    better = (_per_slice(ctx.measure(trial, "j2k-slices")) > _per_slice(sr.metrics)) & \
        np.array([p is not None for p in payloads])
    ctx.tick(f"{sr.name}+j2k")
    if not better.any() or better.all():  # all JPEG 2000: the `j2k` candidate, at fewer bytes than the budget
        return None
    kinds = ["j2k" if b else "sr" for b in better]
    floor = FloorData.from_payloads(kinds, [payloads[i] if b else b"" for i, b in enumerate(better)])
    restored = np.where(better[:, None, None], trial, sr.restored)
    base = without_slices(sr.base, better)
    rows, cols = s.shape
    lowres = floor_lowres(base.decoded, floor, operator=sr.operator, rows=rows, cols=cols,
                          value_range=s.value_range, dtype=s.pixels.dtype)
    nbytes = base.coded_bytes + int(floor.data.size)
    name = sr.name + "+j2k"
    return Candidate(name, sr.operator, sr.method, sr.model_id, nbytes, ctx.measure(restored, name), near=sr.near,
                     j2k_slices=int(better.sum()), fits=nbytes <= ctx.budget, base=base, floor=floor,
                     restored=restored, lowres=lowres, window=sr.window, pad=sr.pad, loaded=sr.loaded)


def _j2k_candidate(ctx: _Context) -> Candidate:
    """Every slice as JPEG 2000 of the full slice at one encoder ratio, at most the budget (the audit baseline)."""
    from ..archive.floor import FloorData, floor_lowres
    from ..audit import jpeg2000_baseline
    from ..codec import downsample, get_operator, intensity_window, pad_to_multiple
    from ..codec.rate import empty_base

    s = ctx.series
    target = s.original_pixel_bytes / ctx.budget * 1.01
    j = jpeg2000_baseline(s.pixels, s.bits_stored, target)
    for _ in range(3):
        if j.nbytes <= ctx.budget:
            break
        target *= 1.005 * j.nbytes / ctx.budget
        j = jpeg2000_baseline(s.pixels, s.bits_stored, target)
    lo, hi = s.value_range
    restored = np.clip(j.decoded.astype(np.int64), lo, hi).astype(s.pixels.dtype)
    op = get_operator("area4-v1")
    padded, pad = pad_to_multiple(s.pixels, op.scale)
    exact = downsample(padded, op.id)
    base = empty_base(exact)
    floor = FloorData.from_payloads(["j2k"] * s.n_slices, list(j.codestreams))
    rows, cols = s.shape
    lowres = floor_lowres(base.decoded, floor, operator=op.id, rows=rows, cols=cols, value_range=s.value_range,
                          dtype=s.pixels.dtype)
    ctx.tick(FULL_J2K)
    return Candidate(FULL_J2K, op.id, "bicubic", "bicubic", j.nbytes, ctx.measure(restored, FULL_J2K),
                     j2k_slices=s.n_slices, fits=j.nbytes <= ctx.budget, base=base, floor=floor, restored=restored,
                     lowres=lowres, window=intensity_window(exact), pad=pad)


def _fg(c: Candidate) -> float:
    """A candidate's foreground PSNR (its whole-image PSNR when nothing is foreground)."""
    v = float(c.metrics.psnr_fg)
    return v if np.isfinite(v) else float(c.metrics.psnr)


def _choose(cands: list[Candidate]) -> tuple[Candidate, str]:
    eligible = [c for c in cands if c.fits] or cands
    best = max(eligible, key=_fg)
    tied = [c for c in eligible if _fg(best) - _fg(c) <= TIE_DB]
    chosen = max(tied, key=lambda c: float(c.metrics.ssim))
    others = sorted((c for c in eligible if c is not chosen), key=_fg, reverse=True)
    why = f"best foreground PSNR within the budget: {_fg(chosen):.2f} dB"
    if len(tied) > 1:
        why = f"foreground PSNR tied within {TIE_DB} dB; best SSIM {float(chosen.metrics.ssim):.4f}"
    if others:
        why += f" (next: {others[0].name} {_fg(others[0]):.2f} dB)"
    excluded = [c.name for c in cands if not c.fits]
    if excluded:
        why += f"; over the budget: {', '.join(excluded)}"
    return chosen, why
