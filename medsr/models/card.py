"""``ModelCard``: the facts a shipped model's card must name, as data (``"card_data"`` in registry.json).

The Markdown card beside the weights tells the story; this holds the facts the project's rules ask of
every card (CONTRIBUTING.md, "Adding a model"): a one-line summary, the training data sources, each
training run's steps, wall time and hardware, the command that trained it, the weights it started
from, the validation figures it reports next to bicubic (and on which data and base), and the logs
folder. ``tests/test_model_cards.py`` holds the data and the prose to the same numbers. No patient
names, IDs or birth dates: sources are named as datasets, never by subject.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ModelError
from .ref import ModelRef


def _number(value, what: str, *, integer: bool = False) -> float | int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise ModelError(f"model card data: {what} must be {'an integer' if integer else 'a number'} or null, "
                         f"not {value!r}")
    return value


def _text(value, what: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip() or "\n" in value:
        raise ModelError(f"model card data: {what} must be one non-empty line, not {value!r}")
    return value


@dataclass(frozen=True)
class TrainingRun:
    """One run that made these weights (from the warm start, or from the previous run)."""

    steps: int | None  # optimiser steps, None where the card does not say
    seconds: float | None  # wall-clock training seconds, None where the card does not say
    hardware: str  # as the card names it, e.g. "NVIDIA H100 80GB HBM3"
    log: str | None = None  # the run's eval.json (repository-relative, pipelines/train.py writes it), if shipped

    def __post_init__(self) -> None:
        _number(self.steps, "training steps", integer=True)
        _number(self.seconds, "training seconds")
        if self.steps is not None and self.steps <= 0:
            raise ModelError(f"model card data: training steps must be > 0, not {self.steps}")
        _text(self.hardware, "hardware")
        _text(self.log, "training log", optional=True)

    def to_dict(self) -> dict:
        return {"steps": self.steps, "seconds": self.seconds, "hardware": self.hardware, "log": self.log}


@dataclass(frozen=True)
class Measurement:
    """Validation figures the card reports: foreground PSNR (dB) and SSIM of the model and of bicubic
    from the same stored data. ``source`` is ``"card"`` when the card prints the numbers, else the log
    file (repository-relative, under docs/training/) they come from, with its ``method`` key."""

    data: str  # which series or split, which base and restore settings
    source: str  # "card" or e.g. "docs/training/default-v3/eval.json"
    psnr_fg: float | None = None
    bicubic_psnr_fg: float | None = None
    gain_psnr_fg: float | None = None  # model - bicubic, as the card or log rounds it
    ssim: float | None = None
    bicubic_ssim: float | None = None
    method: str | None = None  # the log's method key ("srresnet", "srresnet+dc") when source is a log

    NUMBERS = ("psnr_fg", "bicubic_psnr_fg", "gain_psnr_fg", "ssim", "bicubic_ssim")

    def __post_init__(self) -> None:
        _text(self.data, "measurement data")
        _text(self.source, "measurement source")
        for name in self.NUMBERS:
            _number(getattr(self, name), name)
        if self.psnr_fg is None and self.gain_psnr_fg is None:
            raise ModelError("model card data: a measurement needs psnr_fg or gain_psnr_fg")
        if (self.source == "card") != (self.method is None):
            raise ModelError("model card data: a measurement from a log names the log's method; one from the card none")

    def to_dict(self) -> dict:
        return {"data": self.data, "source": self.source, **{n: getattr(self, n) for n in self.NUMBERS},
                "method": self.method}


@dataclass(frozen=True)
class ModelCard:
    summary: str  # one line: what the model is for
    training_data: tuple[str, ...]  # data sources, named as the card names them
    training: tuple[TrainingRun, ...]  # the runs that made these weights, in order
    command: str  # the command or Make target that trained it
    warm_start: ModelRef | None  # the shipped weights it started from; None when trained from scratch
    validation: tuple[Measurement, ...]  # the card's headline validation figures first
    logs: str | None = None  # the logs folder under docs/training/ the card names, if any

    def __post_init__(self) -> None:
        _text(self.summary, "summary")
        _text(self.command, "command")
        _text(self.logs, "logs", optional=True)
        if not self.training_data or not all(isinstance(s, str) and s.strip() for s in self.training_data):
            raise ModelError("model card data: training_data must name at least one source")
        if not self.training or not all(isinstance(r, TrainingRun) for r in self.training):
            raise ModelError("model card data: training must list at least one run")
        if not self.validation or not all(isinstance(m, Measurement) for m in self.validation):
            raise ModelError("model card data: validation must list at least one measurement")

    @property
    def steps(self) -> int | None:
        """Steps over all runs; None when a run's count is not stated."""
        counts = [r.steps for r in self.training]
        return None if None in counts else sum(counts)

    @property
    def seconds(self) -> float | None:
        """Training wall time over all runs; None when a run's is not stated."""
        times = [r.seconds for r in self.training]
        return None if None in times else sum(times)

    @property
    def hardware(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r.hardware for r in self.training))

    @classmethod
    def from_dict(cls, d: dict) -> ModelCard:
        """From a registry entry's ``"card_data"``; a malformed one is a ``ModelError``."""
        try:
            warm = d.get("warm_start")
            return cls(summary=d["summary"], training_data=tuple(d["training_data"]),
                       training=tuple(TrainingRun(**r) for r in d["training"]), command=d["command"],
                       warm_start=ModelRef(warm["name"], warm["sha256"]) if warm else None,
                       validation=tuple(Measurement(**m) for m in d["validation"]), logs=d.get("logs"))
        except (KeyError, TypeError) as e:
            raise ModelError(f"model card data is malformed: {type(e).__name__}: {e}") from None

    def to_dict(self) -> dict:
        return {"summary": self.summary, "training_data": list(self.training_data),
                "training": [r.to_dict() for r in self.training], "command": self.command,
                "warm_start": ({"name": self.warm_start.name, "sha256": self.warm_start.sha256}
                               if self.warm_start else None),
                "validation": [m.to_dict() for m in self.validation], "logs": self.logs}
