"""Orchestration: archive and restore a series end to end (pipeline), the audit and the per-slice floor
over a series, deleting verified originals, reports, ``medsr rd`` and ``medsr eval``.

Imports every room below it; nothing below imports it. The public names are chosen in :mod:`medsr.api`.
"""
