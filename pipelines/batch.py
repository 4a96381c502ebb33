"""Batch archive / restore on Dask: the code lives in ``medsr.batch`` (installed with medsr, so that
Dask workers on other machines can import the task functions); this module re-exports it.

    python -m pipelines.batch archive-batch ROOT -o OUTDIR [--scheduler tcp://host:8786] [--workers N]
    python -m pipelines.batch restore-batch ARCHIVES -o OUTDIR

(the same as ``medsr archive-batch`` / ``medsr restore-batch``). See docs/batch.md.
"""
from medsr.batch import *  # noqa: F401,F403
from medsr.batch import __all__  # noqa: F401

if __name__ == "__main__":
    import sys

    from medsr.cli import main

    sys.exit(main())
