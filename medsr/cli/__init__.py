"""The ``medsr`` command: argparse over :mod:`medsr.api` (and :mod:`medsr.batch`, :mod:`medsr.pacs`)."""
from .common import ENSEMBLE_SIZES, add_ensemble_arg  # noqa: F401
from .main import build_parser, main  # noqa: F401
