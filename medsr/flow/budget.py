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

Ranking (``--ratio-search sample``, the default): a series of more than ``SAMPLE_SLICES`` slices first restores
every way (operator, base, model) on ``SAMPLE_SLICES`` evenly spaced slices only, scored by the better of its
own foreground PSNR there and that of its per-slice JPEG 2000 mix; the ways within ``KEEP_DB`` of the best are
then restored and measured in full as above (only ways whose base fits the budget compete), the others are
listed with their sample figures (``slices_measured``) and cannot be stored. ``j2k`` is always measured in
full, so the stored one is never worse than it. ``--ratio-search full`` restores every way in full (what
``medsr rd --ratios`` draws).

A candidate whose pixel bytes exceed the budget is not eligible; where none fits (not even JPEG 2000 or a base
at its coarsest), nothing is restored or written: a ``BudgetError`` names the smallest and the ratio it
reaches. The stored one has the best foreground PSNR (within ``TIE_DB`` of it: the best SSIM); the audit's
``budget`` object lists every candidate and why the stored one won (``BudgetPlan.summary``). Docs:
docs/ratio.md.
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
SEARCHES = ("sample", "full")  # --ratio-search: rank the restores on a sample of slices first, or restore all in full
DEFAULT_SEARCH = "sample"
SAMPLE_SLICES = 8  # slices a longer series ranks its restores on (evenly spaced, ends included)
KEEP_DB = 0.3  # restores ranked within this of the best on the sample are restored in full (docs/ratio.md)

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
    slices_measured: int | None = None  # set: ranked on that many sample slices only, not restored in full

    @property
    def eligible(self) -> bool:
        """Within the budget and measured on every slice: only such a candidate can be stored."""
        return self.fits and self.slices_measured is None

    @property
    def ensemble(self) -> int:
        return self.loaded.ensemble if self.loaded is not None else 1

    def row(self, original_pixel_bytes: int) -> dict:
        m = self.metrics
        return {"candidate": self.name, "operator": self.operator, "scale": get_operator(self.operator).scale,
                "method": self.method, "model_id": self.model_id, "base_near": int(self.near),
                "j2k_slices": int(self.j2k_slices), "pixel_bytes": int(self.pixel_bytes),
                "slices_measured": self.slices_measured,
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
    search: str = "full"
    sample: int = 0  # slices the restores were ranked on (the series' slice count: no ranking)

    def summary(self, original_pixel_bytes: int) -> dict:
        """The audit's ``budget`` object (JSON)."""
        j2k = next((c for c in self.candidates if c.name == FULL_J2K), None)
        out = {"id": BUDGET_ID, "target_ratio": self.target_ratio, "budget_bytes": int(self.budget_bytes),
               "chosen": self.chosen.name, "why": self.why,
               "search": self.search, "sample_slices": int(self.sample),
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
                search: str = DEFAULT_SEARCH, progress: Progress | None = None) -> BudgetPlan:
    """Measure every candidate for ``series`` at ``ratio`` and choose (see the module docstring).

    ``search`` ``full`` restores every way in full; ``sample`` (a series of more than ``SAMPLE_SLICES``
    slices) ranks them on a sample of slices first and restores in full only those within ``KEEP_DB`` of
    the best (``rank_on_sample``)."""
    from ..audit.metrics import series_data_range
    from ..errors import InputError

    ratio = check_ratio(ratio)
    check_search(search)
    if not np.issubdtype(series.pixels.dtype, np.integer) or series.bits_stored > 16:
        raise InputError(f"--ratio needs integer pixels of at most 16 bits (these are {series.pixels.dtype}, "
                         f"{series.bits_stored} bits)", path=series.source)
    original = series.rescaled()
    dr = series_data_range(original)
    if not dr > 0:
        raise InputError("every pixel of the series has the same (rescaled) value: PSNR and SSIM are undefined, "
                         "so medsr cannot choose a representation", path=series.source)
    budget = series.original_pixel_bytes / ratio
    sample = sample_slices(series.n_slices, search)
    pairs = [(o, c) for o in operators for c in BASE_CODERS]
    ctx = _Context(series, original, dr, budget, progress, steps=0)  # steps: set once the ways are known
    notes: list[str] = []
    ways = [w for op_id, coder in pairs
            for w in _ways(ctx, op_id, coder, method=method, model=model, device=device, consistency=consistency,
                           ensemble=ensemble, notes=notes)]
    ctx.steps = len(ways) * (1 if sample is None else 2) + len(pairs) + 1
    j2k = _j2k_candidate(ctx, notes)
    if not j2k.fits and not any(w.bb.fits for w in ways):
        raise _unreachable(series, ratio, budget, [(w.bb.nbytes, w.name) for w in ways] + [(j2k.pixel_bytes, j2k.name)])
    ranked: dict[int, Candidate] = {}
    if sample is not None:
        ranked = rank_on_sample(ctx, ways, sample)
        # only a way whose base fits the budget can be stored: the others neither set the bar nor are restored
        best = max((_fg(c) for c in ranked.values() if c.fits), default=0.0)
        full = {i for i, c in ranked.items() if c.fits and _fg(c) >= best - KEEP_DB}
        notes.append(f"ranked {len(ways)} restores on {len(sample)} of {series.n_slices} slices (--ratio-search "
                     f"sample); restored in full: {len(full)} within the budget and within {KEEP_DB} dB of the best "
                     f"({', '.join(_way_name(ways[i]) for i in sorted(full))})")
    else:
        full = set(range(len(ways)))
    cands: list[Candidate] = []
    for op_id, coder in pairs:
        group = [i for i, w in enumerate(ways) if (w.op.id, w.coder) == (op_id, coder)]
        if not group:
            continue
        tried = [_full_candidate(ctx, ways[i]) for i in group if i in full]
        if not tried:  # every way of this pair was ranked out: listed with its sample figures, not eligible
            cands.append(max((ranked[i] for i in group), key=_fg))
            continue
        sr = max(tried, key=_fg)
        if len(group) > 1:
            notes.append(f"{sr.name} (NEAR {sr.near}): " + ", ".join(
                f"{c.model_id.split('@')[0]} {_fg(c):.2f} dB" for c in tried)
                + "".join(f", {ranked[i].model_id.split('@')[0]} {_fg(ranked[i]):.2f} dB on the sample"
                          for i in group if i not in full)
                + f"; kept {sr.model_id.split('@')[0]}")
        if not sr.fits:
            notes.append(f"{sr.name}: the base does not fit the budget even at its coarsest")
        cands.append(sr)
        mixed = _mixed_candidate(ctx, sr)
        if mixed is not None:
            cands.append(mixed)
    cands.append(j2k)
    chosen, why = _choose(cands)
    return BudgetPlan(ratio, budget, cands, chosen, why, notes, search=search,
                      sample=len(sample) if sample is not None else series.n_slices)


def _unreachable(series, ratio: float, budget: float, sizes: list[tuple[int, str]]):
    """The error for a budget no representation fits: nothing is written, and the user learns the ratio that can be
    kept (the smallest candidate's)."""
    from ..errors import BudgetError

    nbytes, name = min(sizes)
    reach = series.original_pixel_bytes / max(nbytes, 1)
    return BudgetError(f"no representation fits 1/{ratio:g} of the pixel bytes ({int(budget):,} B): the smallest, "
                      f"{name}, takes {nbytes:,} B ({reach:.1f}:1); use --ratio {int(reach)} or less (nothing was "
                      "written)", path=series.source)


def check_search(search) -> str:
    from ..errors import MedsrError

    if search not in SEARCHES:
        raise MedsrError(f"--ratio-search must be one of {', '.join(SEARCHES)} (got {search!r})")
    return search


def sample_slices(n: int, search: str = DEFAULT_SEARCH) -> np.ndarray | None:
    """The slices ``sample`` search ranks on: ``SAMPLE_SLICES`` evenly spaced (ends included); None (every slice,
    no ranking) for ``full`` or a series of at most ``SAMPLE_SLICES`` slices."""
    if search == "full" or n <= SAMPLE_SLICES:
        return None
    return np.unique(np.round(np.linspace(0, n - 1, SAMPLE_SLICES)).astype(np.int64))


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

    def measure(self, stored: np.ndarray, name: str, slices: np.ndarray | None = None):
        """Audit metrics of ``stored`` against the original (only ``slices`` of it when given; same data range)."""
        from ..audit import measure
        from .audit import rescale_stack

        s = self.series
        if slices is None:
            return measure(self.original, rescale_stack(stored, s.slope, s.intercept), data_range=self.dr, name=name)
        return measure(self.original[slices], rescale_stack(stored, s.slope[slices], s.intercept[slices]),
                       data_range=self.dr, name=name)


@dataclass
class _Way:
    """One way to restore an SR candidate: an operator, its base coded to the budget, a model (None: bicubic)."""

    op: object
    coder: str
    bb: object  # BudgetedBase
    method: str
    loaded: object
    engine: object
    window: object
    pad: tuple[int, int]

    @property
    def name(self) -> str:
        return f"x{self.op.scale}-{self.coder}"

    def restore(self, ctx: _Context, slices: np.ndarray | None = None) -> np.ndarray:
        """The restore ``medsr restore`` would write (of ``slices`` only, when given)."""
        from .restoring import restore_pixels_stored

        s = ctx.series
        lr = self.bb.base.decoded if slices is None else self.bb.base.decoded[slices]
        rows, cols = s.shape
        return restore_pixels_stored(lr, window=self.window, scale=self.op.scale, operator=self.op.id, rows=rows,
                                     cols=cols, dtype=s.pixels.dtype, value_range=s.value_range, engine=self.engine,
                                     module=self.loaded.module if self.loaded else None)

    def candidate(self, restored: np.ndarray, metrics, slices_measured: int | None = None) -> Candidate:
        b = self.bb
        return Candidate(self.name, self.op.id, self.method, self.loaded.model_id if self.loaded else self.method,
                         b.nbytes, metrics, near=b.base.meta.near, fits=b.fits, base=b.base,
                         restored=restored if slices_measured is None else None,
                         lowres=b.base.decoded, window=self.window, pad=self.pad, loaded=self.loaded,
                         slices_measured=slices_measured)


def _way_name(w: _Way) -> str:
    return f"{w.name} {w.loaded.model_id.split('@')[0] if w.loaded else w.method}"


def _ways(ctx: _Context, op_id: str, coder: str, *, method, model, device, consistency, ensemble,
          notes: list[str]) -> list[_Way]:
    """The base of ``op_id`` coded to the budget by ``coder``, and each model that may restore it."""
    from ..codec import downsample, get_operator, intensity_window, pad_to_multiple
    from ..codec.base import BaseCodecError
    from ..codec.rate import base_to_budget, j2k_base_to_budget
    from ..engine import device_for
    from .restoring import applied_consistency as _consistency, archive_engine as _archive_engine

    s = ctx.series
    op = get_operator(op_id)
    padded, pad = pad_to_multiple(s.pixels, op.scale)
    exact = downsample(padded, op.id)
    try:
        bb = (base_to_budget if coder == "jpegls" else j2k_base_to_budget)(exact, ctx.budget)
    except BaseCodecError as e:
        notes.append(f"{op.id} {coder}: the base cannot code this series ({e})")
        return []
    cons = _consistency(consistency, op.id)
    window = intensity_window(exact)
    return [_Way(op, coder, bb, m, loaded, _archive_engine(m, device_for(m, device), cons, bb.base.meta), window, pad)
            for m, loaded in _models_for(op, method, model, ensemble, device, notes, bb.base.meta.base)]


def _models_for(op, method: str, model: str | None, ensemble, device: str, notes: list[str],
                base: str | None = None) -> list[tuple]:
    """[(method, LoadedModel | None)] that may restore ``op``'s scale: ``model`` where it has that scale; else the
    shipped lossy-base tier for ``op``, the shipped default model for ``op`` (trained on the exact and
    near-lossless bases: better where the budget buys a small NEAR) and the tier shipped for ``base`` itself
    where there is one (``medsr-srresnet-x2-j2k`` for the x2 JPEG 2000 base), each measured; bicubic where none
    is shipped, or with ``method`` bicubic."""
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
    names = list(dict.fromkeys(n for n in (default_model_for(BASE_LOSSY, op.id), default_model_for(None, op.id),
                                           default_model_for(base, op.id) if base else None) if n))
    if not names:
        notes.append(f"no shipped model restores {op.id} (x{op.scale}): its candidates restore by bicubic")
        return [("bicubic", None)]
    out = []
    for name in names:
        m, loaded = _resolve_model("model", name, BASE_LOSSY, ensemble, device=dev, operator=op.id)
        loaded.check_operator(op.id, op.scale)
        out.append((m, loaded))
    return out


def _full_candidate(ctx: _Context, w: _Way) -> Candidate:
    restored = w.restore(ctx)
    c = w.candidate(restored, ctx.measure(restored, w.name))
    ctx.tick(w.name)
    return c


def rank_on_sample(ctx: _Context, ways: list[_Way], sample: np.ndarray) -> dict[int, Candidate]:
    """Each way restored on the ``sample`` slices only and measured there, as a candidate (``slices_measured``)
    whose figures are the better of its own and of its per-slice JPEG 2000 mix (``_mixed_candidate``'s rule)
    on those slices: the figure a way is ranked by."""
    out = {}
    for i, w in enumerate(ways):
        restored = w.restore(ctx, sample)
        m = ctx.measure(restored, w.name, sample)
        c = w.candidate(restored, m, slices_measured=len(sample))
        if w.bb.fits and w.bb.base.offsets is not None:
            per_bytes = np.diff(np.asarray(w.bb.base.offsets))[sample]
            mixed = _j2k_where_better(ctx, restored, m, per_bytes, sample)
            if mixed is not None and _fg_of(mixed[2]) > _fg_of(m):
                c.name, c.metrics, c.j2k_slices = c.name + "+j2k", mixed[2], int(mixed[0].sum())
        out[i] = c
        ctx.tick(f"{w.name} on {len(sample)} slices")
    return out


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


def _j2k_where_better(ctx: _Context, restored: np.ndarray, metrics, per_bytes: np.ndarray,
                      slices: np.ndarray | None = None):
    """Each slice of ``restored`` (the series' ``slices``, or all) as JPEG 2000 of the full slice in that slice's
    own base bytes, kept where that measures better -> (better mask, the mix, its metrics, the payloads), or None
    when no slice or every slice is better so (every slice JPEG 2000 is the ``j2k`` candidate)."""
    from ..codec.payload import decode

    s = ctx.series
    lo, hi = s.value_range
    idx = np.arange(s.n_slices) if slices is None else np.asarray(slices)
    trial = np.array(restored, copy=True)
    payloads: list[bytes | None] = []
    for k, i in enumerate(idx):
        c = _slice_j2k(s.pixels[i], s.bits_stored, int(per_bytes[k]))
        payloads.append(c)
        if c is not None:
            trial[k] = np.clip(decode(c, s.shape), lo, hi).astype(s.pixels.dtype)
    better = (_per_slice(ctx.measure(trial, "j2k-slices", slices)) > _per_slice(metrics)) & \
        np.array([p is not None for p in payloads])
    if not better.any() or better.all():
        return None
    mix = np.where(better[:, None, None], trial, restored)
    return better, mix, ctx.measure(mix, "mixed", slices), payloads


def _mixed_candidate(ctx: _Context, sr: Candidate) -> Candidate | None:
    """``sr`` with every slice stored as full-slice JPEG 2000 where that slice's own base bytes buy a better slice."""
    from ..archive.floor import FloorData, floor_lowres
    from ..codec.rate import without_slices

    s = ctx.series
    if not sr.fits or sr.base is None or sr.base.offsets is None:
        return None
    found = _j2k_where_better(ctx, sr.restored, sr.metrics, np.diff(np.asarray(sr.base.offsets)))
    ctx.tick(f"{sr.name}+j2k")
    if found is None:
        return None
    better, restored, metrics, payloads = found
    kinds = ["j2k" if b else "sr" for b in better]
    floor = FloorData.from_payloads(kinds, [payloads[i] if b else b"" for i, b in enumerate(better)])
    base = without_slices(sr.base, better)
    rows, cols = s.shape
    lowres = floor_lowres(base.decoded, floor, operator=sr.operator, rows=rows, cols=cols,
                          value_range=s.value_range, dtype=s.pixels.dtype)
    nbytes = base.coded_bytes + int(floor.data.size)
    return Candidate(sr.name + "+j2k", sr.operator, sr.method, sr.model_id, nbytes, metrics, near=sr.near,
                     j2k_slices=int(better.sum()), fits=nbytes <= ctx.budget, base=base, floor=floor,
                     restored=restored, lowres=lowres, window=sr.window, pad=sr.pad, loaded=sr.loaded)


def _j2k_candidate(ctx: _Context, notes: list[str] | None = None) -> Candidate:
    """Every slice as JPEG 2000 of the full slice at one encoder ratio, at most the budget: the audit baseline's
    search aimed just under it; where that lands over the budget or under ``FILL`` of it (a small stack: coarse
    steps), one encoder ratio bisected to the budget and, if still short, other code-block layouts
    (``codec.rate.j2k_stack_to_budget``), kept where closer to the budget (``notes`` says so)."""
    from ..archive.floor import FloorData, floor_lowres
    from ..audit import jpeg2000_baseline
    from ..codec import downsample, get_operator, intensity_window, pad_to_multiple
    from ..codec.payload import decode
    from ..codec.rate import FILL, empty_base, j2k_stack_to_budget

    s = ctx.series
    target = s.original_pixel_bytes / ctx.budget * 1.01
    j = jpeg2000_baseline(s.pixels, s.bits_stored, target)
    for _ in range(3):
        if j.nbytes <= ctx.budget:
            break
        target *= 1.005 * j.nbytes / ctx.budget
        j = jpeg2000_baseline(s.pixels, s.bits_stored, target)
    streams, nbytes, decoded = list(j.codestreams), j.nbytes, j.decoded
    if not FILL * ctx.budget <= nbytes <= ctx.budget:
        fit, _, why = j2k_stack_to_budget(s.pixels, s.bits_stored, ctx.budget, "the full slices")
        spent = sum(len(c) for c in fit) if fit is not None else 0
        if fit is not None and (nbytes > ctx.budget or spent > nbytes):
            if notes is not None:
                notes.append(f"{FULL_J2K}: the baseline's rate search landed at {nbytes / ctx.budget:.1%} of the budget; "
                             + (why or f"one encoder ratio bisected to it: {spent / ctx.budget:.1%}"))
            streams, nbytes = fit, spent
            decoded = np.stack([decode(c, s.shape) for c in fit])
    lo, hi = s.value_range
    restored = np.clip(decoded.astype(np.int64), lo, hi).astype(s.pixels.dtype)
    op = get_operator("area4-v1")
    padded, pad = pad_to_multiple(s.pixels, op.scale)
    exact = downsample(padded, op.id)
    base = empty_base(exact)
    floor = FloorData.from_payloads(["j2k"] * s.n_slices, streams)
    rows, cols = s.shape
    lowres = floor_lowres(base.decoded, floor, operator=op.id, rows=rows, cols=cols, value_range=s.value_range,
                          dtype=s.pixels.dtype)
    ctx.tick(FULL_J2K)
    return Candidate(FULL_J2K, op.id, "bicubic", "bicubic", nbytes, ctx.measure(restored, FULL_J2K),
                     j2k_slices=s.n_slices, fits=nbytes <= ctx.budget, base=base, floor=floor, restored=restored,
                     lowres=lowres, window=intensity_window(exact), pad=pad)


def _fg(c: Candidate) -> float:
    """A candidate's foreground PSNR (its whole-image PSNR when nothing is foreground)."""
    return _fg_of(c.metrics)


def _fg_of(m) -> float:
    v = float(m.psnr_fg)
    return v if np.isfinite(v) else float(m.psnr)


def _choose(cands: list[Candidate]) -> tuple[Candidate, str]:
    eligible = [c for c in cands if c.eligible]  # never empty: plan_budget refuses a budget nothing fits
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
    ranked_out = [c for c in cands if c.fits and c.slices_measured is not None]
    if ranked_out:
        why += (f"; ranked out on {ranked_out[0].slices_measured} sample slices: "
                + ", ".join(c.name for c in ranked_out))
    return chosen, why
