"""Super-resolution architectures (one per file) and the pretrained-model registry."""
from .card import Measurement, ModelCard, TrainingRun
from .discriminator import Discriminator, DiscriminatorConfig
from .ref import ModelRef
from .registry import (DEFAULT_MODEL, REGISTRY, LoadedModel, PretrainedModel, create_model, default_model_for,
                       find_by_sha256,
                       list_models, save_weights)
from .srresnet import SRResNet, SRResNetConfig

__all__ = ["ModelRef", "ModelCard", "Measurement", "TrainingRun", "DEFAULT_MODEL", "REGISTRY", "default_model_for", "find_by_sha256", "LoadedModel", "PretrainedModel", "create_model", "list_models",
           "save_weights", "SRResNet", "SRResNetConfig", "Discriminator", "DiscriminatorConfig"]
