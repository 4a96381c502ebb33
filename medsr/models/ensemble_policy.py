"""How many self-ensemble passes a restore runs by default, per device class.

The fidelity models' registry default is a 2-pass self-ensemble (``"ensemble"`` in
registry.json): +0.03 to +0.10 dB foreground for twice the network time. On a GPU that time
is small next to I/O; on this project's 2-core CPU a 2-pass restore of a 192-slice 256^2
series ran at ~7 slices/s as a whole process against ~11-12 for one pass (README, Speed;
``medsr bench`` measures both in one run), below the >= 15 slices/s the project holds CPU
restores to. So without ``--ensemble``:

- ``medsr archive`` on ``cuda`` runs the model's registry default, on ``cpu`` at most
  ``CPU_MAX_PASSES`` (1), and records what it ran (``model_ensemble``) with the audit;
- ``medsr restore`` runs what the archive recorded (its audit stays true, and an archive made on a
  CPU restores at one pass); with another model than the archive's, the device's default.

``--ensemble N`` always runs N; a restore with other passes than the archive's audit measured
says so in its warnings (and ``--json``): the stored audit does not describe that restore.
"""
from __future__ import annotations

CPU_MAX_PASSES = 1


def default_passes(model_default: int, device: str) -> int:
    """Passes a restore on ``device`` ('cpu' or 'cuda') runs when no ``--ensemble`` is given."""
    return min(int(model_default), CPU_MAX_PASSES) if device == "cpu" else int(model_default)
