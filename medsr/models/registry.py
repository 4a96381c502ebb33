"""Named pretrained models: name -> weights file, config, model card and its facts as data (``ModelCard``).

The single door is ``create_model(name_or_path)``. Weights load from safetensors
only and their sha256 is checked against the registry entry (for named models).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ModelError
from .card import ModelCard
from .ref import ModelRef
from .srresnet import SRResNet, SRResNetConfig

WEIGHTS_DIR = Path(__file__).parent / "weights"


@dataclass(frozen=True)
class PretrainedModel:
    name: str
    architecture: str
    config: SRResNetConfig
    weights: str  # file name inside WEIGHTS_DIR
    sha256: str
    operator: str
    card: str  # file name of the model card (Markdown) inside WEIGHTS_DIR
    kind: str = "fidelity"  # "fidelity" (MSE/L1) or "perceptual" (GAN)
    base: str = ""  # the archive base it was trained for ("" = exact / near-lossless; "lossy" = the lossy tier)
    ensemble: int = 1  # geometric self-ensemble it restores with by default (medsr.models.ensemble)
    card_data: ModelCard | None = None  # the card's facts as data (registry "card_data"; medsr.models.card)

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / self.weights

    @property
    def metrics(self) -> dict:
        """The card's headline validation figures (``ModelCard.validation[0]``: foreground PSNR and SSIM of the
        model and of bicubic, with the data and source they come from); {} for a model without card data."""
        return self.card_data.validation[0].to_dict() if self.card_data and self.card_data.validation else {}


ARCHITECTURES = {"srresnet": (SRResNet, SRResNetConfig)}


def _load_registry() -> dict[str, PretrainedModel]:
    index = WEIGHTS_DIR / "registry.json"
    if not index.exists():
        return {}
    entries = json.loads(index.read_text())
    out = {}
    for e in entries:
        arch = e["architecture"]
        _, cfg_cls = ARCHITECTURES[arch]
        out[e["name"]] = PretrainedModel(
            name=e["name"], architecture=arch, config=cfg_cls(**e["config"]), weights=e["weights"],
            sha256=e["sha256"], operator=e["operator"], card=e["card"], kind=e.get("kind", "fidelity"),
            base=e.get("base", ""), ensemble=int(e.get("ensemble", 1)),
            card_data=ModelCard.from_dict(e["card_data"]) if "card_data" in e else None,
        )
    return out


REGISTRY: dict[str, PretrainedModel] = _load_registry()
DEFAULT_MODEL = "medsr-srresnet-x4"


def default_model_for(base: str | None, operator: str = "area4-v1") -> str | None:
    """The default (fidelity) model for an archive base and operator: the shipped tier trained on that base
    for that operator, else (x4) ``DEFAULT_MODEL``; None when no shipped model restores ``operator``'s
    scale (an x2 archive then restores by bicubic)."""
    for m in REGISTRY.values():
        if base and m.base == base and m.kind == "fidelity" and m.operator == operator:
            return m.name
    if operator == "area4-v1":
        return DEFAULT_MODEL
    return next((m.name for m in REGISTRY.values() if m.operator == operator and m.kind == "fidelity"), None)


def find_by_sha256(sha256: str | None) -> PretrainedModel | None:
    """The shipped model whose weights file has this sha256, if any. An archive records the
    sha256 of the weights its audit used; a name can move on to newer weights (the older ones
    stay shipped under a versioned name), so a restore finds the exact weights by digest."""
    if not sha256:
        return None
    return next((m for m in REGISTRY.values() if m.sha256 == sha256), None)


def list_models() -> list[PretrainedModel]:
    return list(REGISTRY.values())


from ..io.digest import file_sha256  # noqa: E402  (re-exported: medsr.models.registry.file_sha256)


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Load a safetensors file into ``model`` (strict). Never unpickles."""
    from safetensors.torch import load_file

    if path.suffix != ".safetensors":
        raise ModelError("weights must be a .safetensors file (pickle is never loaded)", path=path)
    if not path.is_file():
        raise ModelError("weights file not found", path=path)
    try:
        state = load_file(str(path), device="cpu")
        model.load_state_dict(state, strict=True)
    except ModelError:
        raise
    except Exception as e:  # safetensors / shape errors
        raise ModelError(f"cannot load weights: {type(e).__name__}: {str(e).splitlines()[0][:200]}", path=path) from None


@dataclass(frozen=True)
class LoadedModel:
    model_id: str  # "name@sha256[:12]" or "path@sha256[:12]"
    name: str
    sha256: str
    module: torch.nn.Module  # the generator, wrapped in a SelfEnsemble when ensemble > 1
    operator: str | None
    scale: int
    ensemble: int = 1  # network passes averaged per slice (medsr.models.ensemble)

    def check_operator(self, operator: str, scale: int) -> None:
        """A clear error when this model cannot restore data made by ``operator`` (x``scale``): another scale, or
        trained on another operator's degradation (a weights file without operator metadata is not checked)."""
        if self.scale != scale:
            from ..errors import MedsrError

            raise MedsrError(f"model {self.name} is x{self.scale} but operator {operator} is x{scale}")
        if self.operator and self.operator != operator:
            raise ModelError(f"model {self.name} was trained for operator {self.operator}, but the data was made by "
                             f"{operator}: use a model trained for {operator}, or --method bicubic")

    @property
    def ref(self) -> ModelRef:
        """Name, weights sha256 and self-ensemble size: what an archive records about this model."""
        return ModelRef(self.name, self.sha256, self.ensemble)


def config_from_safetensors(path: Path) -> tuple[str, SRResNetConfig, str | None]:
    """Read architecture/config/operator from a safetensors file's metadata."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:
        raise ModelError(f"not a readable safetensors file: {type(e).__name__}", path=path) from None
    arch = meta.get("architecture", "srresnet")
    if arch not in ARCHITECTURES:
        raise ModelError(f"unknown architecture {arch!r} in weights metadata", path=path)
    cfg = json.loads(meta["config"]) if "config" in meta else {}
    return arch, ARCHITECTURES[arch][1](**cfg), meta.get("operator")


def create_model(name_or_path: str | Path | None = None, *, pretrained: bool = True,
                 ensemble: int | None = None) -> LoadedModel:
    """Build a generator from a registry name or a safetensors path, weights loaded, eval mode.

    ``ensemble``: geometric self-ensemble size (1, 2, 4, 8); None: the registry entry's
    (1 for a weights file)."""
    from .ensemble import with_ensemble

    name_or_path = str(name_or_path or DEFAULT_MODEL)
    if name_or_path in REGISTRY:
        entry = REGISTRY[name_or_path]
        cls, _ = ARCHITECTURES[entry.architecture]
        model = cls(entry.config)
        if pretrained:
            digest = file_sha256(entry.path)
            if digest != entry.sha256:
                raise ModelError(f"sha256 mismatch for model {entry.name}: registry {entry.sha256[:12]}, file {digest[:12]}", path=entry.path)
            load_weights(model, entry.path)
        else:
            digest = entry.sha256
        model.eval()
        n = entry.ensemble if ensemble is None else ensemble
        return LoadedModel(ModelRef(entry.name, digest).id, entry.name, digest, with_ensemble(model, n), entry.operator,
                           entry.config.scale, n)
    path = Path(name_or_path)
    if not path.exists():
        known = ", ".join(sorted(REGISTRY)) or "none shipped"
        raise ModelError(f"no such model or weights file (known models: {known})", path=name_or_path)
    arch, cfg, op = config_from_safetensors(path)
    model = ARCHITECTURES[arch][0](cfg)
    load_weights(model, path)
    model.eval()
    digest = file_sha256(path)
    n = 1 if ensemble is None else ensemble
    return LoadedModel(ModelRef(path.name, digest).id, path.name, digest, with_ensemble(model, n), op, cfg.scale, n)


def save_weights(model: torch.nn.Module, path: Path, *, architecture: str, config: dict, operator: str, extra: dict | None = None) -> str:
    """Write a safetensors file with architecture/config/operator metadata; returns its sha256."""
    from safetensors.torch import save_file

    meta = {"architecture": architecture, "config": json.dumps(config), "operator": operator}
    meta.update({k: str(v) for k, v in (extra or {}).items()})
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(state, str(tmp), metadata=meta)
    tmp.replace(path)
    return file_sha256(path)
