"""Batch archive / restore on Dask: the code lives in ``medsr.batch_cli`` (installed with medsr, so that
Dask workers on other machines can import the task functions); this module re-exports it.

    python -m pipelines.batch archive-batch ROOT -o OUTDIR [--scheduler tcp://host:8786] [--workers N]
    python -m pipelines.batch restore-batch ARCHIVES -o OUTDIR

See docs/batch.md.
"""
from medsr.batch_cli import *  # noqa: F401,F403
from medsr.batch_cli import __all__  # noqa: F401

if __name__ == "__main__":
    import sys

    from medsr.batch_cli import main

    sys.exit(main())
