"""How many self-ensemble passes a restore runs by default, per device class.

The fidelity models' registry default is a 2-pass self-ensemble (``"ensemble"`` in
registry.json): +0.03 to +0.10 dB foreground for twice the network time. On a GPU that time
is small next to I/O; on this project's 2-core CPU a 2-pass restore of a 192-slice 256^2
series ran at ~7 slices/s as a whole process against ~11-12 for one pass (README, Speed;
``medsr bench`` measures both in one run), below the >= 15 slices/s the project holds CPU
restores to. So without ``--ensemble``:

- on ``cuda`` a restore runs the model's registry default;
- on ``cpu`` it runs at most ``CPU_MAX_PASSES`` (1).

An archive records the passes its audit's restore ran (``model_ensemble``). A restore of it
with fewer passes (a CPU restore of an archive audited with 2) says so in its warnings, its
``--json`` output and its report: the stored audit does not describe that restore.
``--ensemble N`` always runs N.
"""
from __future__ import annotations

CPU_MAX_PASSES = 1


def default_passes(model_default: int, device: str) -> int:
    """Passes a restore on ``device`` ('cpu' or 'cuda') runs when no ``--ensemble`` is given."""
    return min(int(model_default), CPU_MAX_PASSES) if device == "cpu" else int(model_default)
