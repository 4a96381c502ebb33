"""What every medsr command shares: ``--json/--quiet/--debug``, ``--ensemble N``, progress bars, output."""
from __future__ import annotations

import argparse
import json
import sys


class Progress:
    """tqdm bars on stderr, one per stage; silent when stderr is not a terminal or --quiet."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bars = {}

    def __call__(self, stage: str, k: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        bar = self.bars.get(stage)
        if bar is None:
            bar = self.bars[stage] = tqdm(total=total, desc=stage, unit="slice", file=sys.stderr, leave=False)
        bar.update(k)

    def close(self):
        for b in self.bars.values():
            b.close()


def emit(args, payload: dict, text: str) -> None:
    if args.json:
        print(json.dumps(payload, default=str))
    else:
        print(text)


def fmt(v, digits=2):
    return "n/a" if v is None else f"{v:.{digits}f}"


ENSEMBLE_SIZES = (1, 2, 4, 8)  # = medsr.models.ensemble.SIZES, kept here so the CLI starts without torch


def add_ensemble_arg(parser: argparse.ArgumentParser, help: str, **kw) -> None:
    """The one ``--ensemble N`` option (archive, restore, the batch commands, rd, eval)."""
    parser.add_argument("--ensemble", type=int, choices=ENSEMBLE_SIZES, metavar="N", help=help, **kw)


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout (for scripts)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars or warnings")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")


def add_ratio_search_arg(parser: argparse.ArgumentParser, help: str) -> None:
    """The one ``--ratio-search`` option (archive, archive-batch); ``ratio_search_kw`` reads it."""
    parser.add_argument("--ratio-search", choices=["sample", "full"], default=None, help=help)


def ratio_search_kw(args) -> dict:
    """``ArchiveOptions`` keywords for ``--ratio-search`` (none when not given: the option's own default); only
    meaningful with ``--ratio``."""
    from ..errors import MedsrError

    if args.ratio_search is not None and args.ratio is None:
        raise MedsrError("--ratio-search needs --ratio N (it chooses how the byte-budget candidates are measured)")
    return {} if args.ratio_search is None else {"ratio_search": args.ratio_search}
