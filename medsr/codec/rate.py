"""Rate control of the lossy JPEG-LS base: code a low-res stack to a byte budget (pure functions).

``base_to_budget(lowres, budget)`` finds the smallest JPEG-LS NEAR ``k`` whose codestreams fit
the budget (bisection over 1..``MAX_NEAR``; the bytes fall as NEAR grows), then spends what is
left by coding slices, one after another, at ``k - 1`` while the total still fits. Every slice is
within +-its own NEAR of the exact low-res values, so within +-``k`` (the stored ``base_near``, the
bound restore's projection uses; ``BaseMeta.near``). A codestream carries its own NEAR, so a reader
decodes a mixed stack exactly as a uniform one (``decode_base``). Used by ``medsr archive --ratio``
(``medsr.flow.budget``) and ``medsr rd --ratios``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import BASE_LOSSY, MAX_NEAR, BaseCodecError, PreparedBase, decode_base, encode_base, pack_codestreams

FILL = 0.95  # JPEG 2000 landing under FILL x its budget tries other layouts (``j2k_layouts``)


@dataclass(frozen=True)
class BudgetedBase:
    """A base coded to a budget: the ``PreparedBase`` to store, each slice's NEAR, and whether it fits."""

    base: PreparedBase
    nears: tuple[int, ...]  # per slice
    budget: float
    fits: bool  # False: even NEAR = MAX_NEAR exceeds the budget (the base is then at MAX_NEAR)

    @property
    def nbytes(self) -> int:
        return self.base.coded_bytes


def base_to_budget(lowres: np.ndarray, budget: float, kind: str = BASE_LOSSY) -> BudgetedBase:
    """Code ``lowres`` (n, h, w) with JPEG-LS so its codestreams total at most ``budget`` bytes, as close
    to it as one NEAR step of one slice allows. Raises ``BaseCodecError`` for data JPEG-LS cannot code."""
    if not budget > 0:
        raise BaseCodecError(f"a byte budget must be > 0 (got {budget})")
    cache: dict[int, tuple[list[bytes], object]] = {}

    def coded(k: int):
        if k not in cache:
            cache[k] = encode_base(lowres, kind, k)
        return cache[k]

    def total(k: int) -> int:
        return sum(len(c) for c in coded(k)[0])

    lo, hi = 1, MAX_NEAR
    if total(hi) > budget:
        k, fits = hi, False
    elif total(lo) <= budget:
        k, fits = lo, True
    else:  # total(lo) > budget >= total(hi): the smallest k that fits
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if total(mid) <= budget:
                hi = mid
            else:
                lo = mid
        k, fits = hi, True
    streams = list(coded(k)[0])
    meta = coded(k)[1]
    nears = [k] * len(streams)
    if fits and k > 1:  # spend the rest: slices at k - 1 while the total fits
        finer = coded(k - 1)[0]
        spent = sum(len(c) for c in streams)
        for i, c in enumerate(finer):
            extra = len(c) - len(streams[i])
            if extra <= 0 or spent + extra <= budget:
                streams[i], nears[i] = c, k - 1
                spent += extra
    return BudgetedBase(_prepared(streams, meta, lowres, nears), tuple(nears), float(budget), fits)


def _prepared(streams: list[bytes], meta, lowres: np.ndarray, nears: list[int]) -> PreparedBase:
    data, offsets = pack_codestreams(streams)
    decoded = decode_base(streams, meta)
    err = np.abs(decoded.astype(np.int64) - np.asarray(lowres).astype(np.int64)).reshape(len(streams), -1)
    worst = err.max(axis=1) if err.size else np.zeros(len(streams), dtype=np.int64)
    bad = np.flatnonzero(worst > np.asarray(nears))
    if bad.size:  # the standard guarantees it; never store a base that breaks its recorded bound
        i = int(bad[0])
        raise BaseCodecError(f"JPEG-LS NEAR={nears[i]} decoded slice {i} with error {int(worst[i])}")
    return PreparedBase(meta, decoded, data, offsets)


def without_slices(prepared: PreparedBase, drop: np.ndarray) -> PreparedBase:
    """The base with the codestreams of slices ``drop`` (bool mask) left empty: slices an archive holds whole
    (``medsr.archive.floor.FULL_SLICE``) need no base; a reader rebuilds their low-res from the whole slice.
    The other slices' codestreams are untouched (so they decode exactly as before)."""
    from .base import unpack_codestreams

    if prepared.data is None:
        raise BaseCodecError("only a coded base can leave slices empty")
    drop = np.asarray(drop, dtype=bool)
    streams = [b"" if d else s for s, d in zip(unpack_codestreams(prepared.data, prepared.offsets), drop)]
    data, offsets = pack_codestreams(streams)
    decoded = np.array(prepared.decoded, copy=True)  # what decode_base gives: the kept slices as they were,
    decoded[drop] = np.asarray(prepared.meta.vmin).astype(decoded.dtype)  # the emptied ones at the minimum
    return PreparedBase(prepared.meta, decoded, data, offsets, note=prepared.note)


def empty_base(lowres: np.ndarray) -> PreparedBase:
    """A lossy base with every codestream empty: for an archive whose every slice is held whole (the ``j2k``
    candidate of ``--ratio``); nothing is coded. Its range is the stack's, its NEAR ``MAX_NEAR``."""
    from .base import BaseMeta

    a = np.asarray(lowres)
    vmin, vmax = (int(a.min()), int(a.max())) if a.size else (0, 0)
    meta = BaseMeta(BASE_LOSSY, MAX_NEAR, vmin, vmax, tuple(a.shape), str(a.dtype))
    data, offsets = pack_codestreams([b""] * len(a))
    return PreparedBase(meta, np.full(a.shape, vmin, dtype=a.dtype), data, offsets)


def j2k_base_to_budget(lowres: np.ndarray, budget: float) -> BudgetedBase:
    """Code ``lowres`` (n, h, w) integers as JPEG 2000 (irreversible 9-7, the audit baseline's encoder) of each
    low-res slice, one encoder ratio for the stack, totalling at most ``budget`` bytes (closest of a few
    tries). Where that lands under ``FILL`` (95%) of the budget (a small stack: the default 64x64 code-blocks
    leave only coarse steps), other code-block and resolution layouts are fitted too (``_other_layout``; the
    base's ``note`` says which was stored and why). The base records the largest low-res error measured after
    decoding (``BaseMeta.near``: the bound restore's projection uses). Raises ``BaseCodecError`` for data it
    cannot code."""
    from .base import BASE_LOSSY_J2K, BaseMeta, supports_near_lossless
    from .payload import bits_for

    a = np.asarray(lowres)
    why = supports_near_lossless(a)
    if why:
        raise BaseCodecError(f"a JPEG 2000 base needs integer data within 16 bits: {why}")
    if not budget > 0:
        raise BaseCodecError(f"a byte budget must be > 0 (got {budget})")
    vmin, vmax = (int(a.min()), int(a.max())) if a.size else (0, 0)
    shifted = (a.astype(np.int64) - vmin).astype(np.uint16)
    bits = max(1, bits_for(shifted))
    best, streams, note = j2k_stack_to_budget(shifted, bits, budget, "JPEG 2000 base")
    fits = best is not None
    streams = best if fits else streams
    meta = BaseMeta(BASE_LOSSY_J2K, 0, vmin, vmax, tuple(a.shape), str(a.dtype))
    decoded = decode_base(streams, meta)
    err = int(np.abs(decoded.astype(np.int64) - a.astype(np.int64)).max()) if a.size else 0
    meta = BaseMeta(BASE_LOSSY_J2K, max(1, err), vmin, vmax, tuple(a.shape), str(a.dtype))
    data, offsets = pack_codestreams(streams)
    return BudgetedBase(PreparedBase(meta, decoded, data, offsets, note=note), (meta.near,) * len(streams),
                        float(budget), fits)


def j2k_stack_to_budget(stack: np.ndarray, bits: int, budget: float,
                        what: str = "JPEG 2000") -> tuple[list[bytes] | None, list[bytes], str]:
    """JPEG 2000 (``payload.j2k_encode``) of each slice of ``stack`` (n, h, w integers, coded as they are), one
    encoder ratio for the stack, totalling at most ``budget`` bytes and as close to it as a few tries land; where
    that is under ``FILL`` of the budget, other code-block layouts too (``_other_layout``; non-negative data only)
    -> (the streams kept or None when none fit, the last streams tried, a note on ``what`` saying why a layout was
    or was not changed: empty when the default landed within ``FILL``)."""
    from .payload import j2k_encode

    a = np.asarray(stack)
    best, last = _fit_ratio(a, budget, lambda s, r: j2k_encode(s, bits, r), bits)
    note = ""
    if best is not None and sum(len(c) for c in best) < FILL * budget:
        if a.size and int(a.min()) >= 0 and int(a.max()) < 1 << 16:
            best, note = _other_layout(a, budget, best, what)
        else:
            spent = sum(len(c) for c in best)
            note = f"{what} fits {spent:,} bytes of the {budget:,.0f}-byte budget ({spent / budget:.1%}); other " \
                   "layouts code non-negative data only"
    return best, last, note


def _fit_ratio(stack: np.ndarray, budget: float, code, raw_bits: int) -> tuple[list[bytes] | None, list[bytes]]:
    """Bisect one encoder ratio for the stack so the codestreams ``code(slice, ratio)`` total at most ``budget``,
    as close as a few tries land -> (the largest fitting streams or None, the last streams tried)."""
    r = max(1.0, stack[0].size * raw_bits / 8 * len(stack) / budget)
    best: list[bytes] | None = None
    under, over = None, None  # encoder ratios known to fit / not to fit
    for _ in range(14):
        streams = [code(s, r) for s in stack]
        total = sum(len(c) for c in streams)
        if total <= budget:
            under = r if under is None else min(under, r)
            if best is None or total > sum(len(c) for c in best):
                best = streams
            if total >= 0.98 * budget:
                break
        else:
            over = r if over is None else max(over, r)
        if under is not None and over is not None:  # the encoder's rate control is coarse: bisect (log scale)
            r_new = float(np.sqrt(under * over))
        else:
            r_new = max(1.0, r * total / (0.995 * budget))
        if abs(r_new - r) < 1e-6 * r:
            break
        r = r_new
    return best, streams


def _other_layout(stack: np.ndarray, budget: float, default: list[bytes], what: str) -> tuple[list[bytes], str]:
    """The default layout's fit lands under ``FILL`` x the budget: fit each of ``j2k_layouts.ALTERNATIVES``; of
    those landing within [FILL x budget, budget], the one whose decoded stack is closest to ``stack`` (least
    squared error); if none lands there, the one spending the most bytes (when more than the default's) ->
    (streams, the note that says why), or (``default``, a note) when none is better or none can be coded."""
    from . import j2k_layouts
    from .j2k_pad import decode_j2k

    spent = sum(len(c) for c in default)
    short = f"the encoder's default JPEG 2000 layout ({j2k_layouts.DEFAULT.describe()}) fits {spent:,} bytes " \
            f"of the {budget:,.0f}-byte budget ({spent / budget:.1%})"
    why = j2k_layouts.unavailable()
    if why:
        return default, f"{short}; other layouts not tried: {why}"
    within, most, failed = [], None, ""
    for layout in j2k_layouts.ALTERNATIVES:
        try:
            fit, _ = _fit_ratio(stack, budget, lambda s, r, lay=layout: j2k_layouts.encode(s, r, lay),
                                j2k_layouts.RAW_BITS)
            total = sum(len(c) for c in fit) if fit is not None else 0
            sse = sum(float(((decode_j2k(c, s.shape) - s.astype(np.int64)) ** 2).sum())
                      for c, s in zip(fit, stack)) if fit is not None and total >= FILL * budget else 0.0
        except Exception as e:  # noqa: BLE001 - a layout is an optional improvement: never fail an archive on it
            failed = f"{type(e).__name__}: {str(e)[:80]}"
            continue
        if fit is None:
            continue
        if total >= FILL * budget:
            within.append((sse, -total, layout, fit))
        elif total > spent and (most is None or total > most[0]):
            most = (total, layout, fit)
    if within:
        _, neg, layout, fit = min(within, key=lambda t: (t[0], t[1]))
        return fit, f"{what} coded with {layout.describe()} ({-neg:,} bytes): {short}"
    if most is not None:
        total, layout, fit = most
        return fit, f"{what} coded with {layout.describe()} ({total:,} bytes, the closest to the budget " \
                    f"of {len(j2k_layouts.ALTERNATIVES)} other layouts): {short}"
    return default, f"{short}; " + (f"other layouts failed ({failed})" if failed else "no other layout fits closer")
