"""Super-resolution architectures (one per file) and the pretrained-model registry.

Names load on first use (PEP 562): ``medsr.models.ref`` and ``medsr.models.card`` are plain data and
import without torch, so reading an archive's model group or making a bicubic archive never pays
torch's start-up; the architectures and the registry import it when asked for.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .card import Measurement, ModelCard, TrainingRun
    from .discriminator import Discriminator, DiscriminatorConfig
    from .ref import ModelRef
    from .registry import (DEFAULT_MODEL, REGISTRY, LoadedModel, PretrainedModel, create_model, default_model_for,
                           find_by_sha256, list_models, save_weights)
    from .srresnet import SRResNet, SRResNetConfig

_WHERE = {
    "Measurement": ".card", "ModelCard": ".card", "TrainingRun": ".card",
    "Discriminator": ".discriminator", "DiscriminatorConfig": ".discriminator",
    "ModelRef": ".ref",
    **{n: ".registry" for n in ("DEFAULT_MODEL", "REGISTRY", "LoadedModel", "PretrainedModel", "create_model",
                                "default_model_for", "find_by_sha256", "list_models", "save_weights")},
    "SRResNet": ".srresnet", "SRResNetConfig": ".srresnet",
}

__all__ = ["ModelRef", "ModelCard", "Measurement", "TrainingRun", "DEFAULT_MODEL", "REGISTRY", "default_model_for",
           "find_by_sha256", "LoadedModel", "PretrainedModel", "create_model", "list_models", "save_weights",
           "SRResNet", "SRResNetConfig", "Discriminator", "DiscriminatorConfig"]


def __getattr__(name: str):
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(where, __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
