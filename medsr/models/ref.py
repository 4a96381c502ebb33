"""``ModelRef``: which weights restore a series, as one value (name, sha256, self-ensemble size).

An archive records it as one attribute group ``model`` {name, sha256, ensemble} (format 3; formats 1
and 2 as ``model_id`` = ``name@sha256[:12]``, ``model_sha256``, ``model_ensemble``; docs/archive-format.md);
this is the one place that id is built or split.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelRef:
    name: str  # registry name, or the weights file's name
    sha256: str = ""  # the weights' sha256 (hex); "" when unknown
    ensemble: int = 1  # mirrored/rotated passes averaged per slice (medsr.models.ensemble)

    @property
    def id(self) -> str:
        """``name@sha256[:12]``: what archives, audits and reports call the model."""
        return f"{self.name}@{self.sha256[:12]}"

    @property
    def label(self) -> str:
        """The id, with the self-ensemble when there is one (for the DICOM Derivation Description)."""
        return self.id + (f" averaged over {self.ensemble} mirrored/rotated passes" if self.ensemble > 1 else "")

    @classmethod
    def from_record(cls, model_id: str, sha256: str = "", ensemble: int = 1) -> ModelRef:
        """From an archive's (or audit's) recorded ``model_id`` (``name@sha12``), sha256 and ensemble size."""
        return cls(str(model_id).split("@")[0], sha256 or "", int(ensemble or 1))
