"""The audit's definitions and typed results: metric constants (docs/audit.md), per-slice and
per-method figures, and their JSON form. Shared by the reference metrics (``metrics``) and the fast
path (``fast_metrics``), so neither imports the other's module for them."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

import numpy as np

METRICS_ID = "medsr-metrics-v1"
SCHEMA = "medsr-audit-v1"
PSNR_CAP_DB = 100.0
FG_PERCENTILE = 99.5
FG_FRACTION = 0.05
MIN_FG_COVERAGE = 0.05
SSIM_WIN = 7
HFEN_SIGMA = 1.5
HFEN_TRUNCATE = 7.0 / 1.5  # kernel radius int(truncate * sigma + 0.5) = 7 -> 15 x 15
METRIC_NAMES = ("psnr", "psnr_fg", "ssim", "ssim_fg", "nrmse", "hfen")


@dataclass(frozen=True)
class SliceMetrics:
    index: int
    psnr: float
    psnr_fg: float
    ssim: float
    ssim_fg: float
    nrmse: float
    hfen: float
    fg_fraction: float

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SliceMetrics":
        return cls(index=int(d["index"]), **{f.name: _num(d[f.name]) for f in fields(cls) if f.name != "index"})


@dataclass(frozen=True)
class MethodMetrics:
    name: str
    psnr: float
    psnr_fg: float
    ssim: float
    ssim_fg: float
    nrmse: float
    hfen: float
    per_slice: tuple[SliceMetrics, ...]
    included: tuple[int, ...]
    excluded: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name}
        d.update({k: json_safe(getattr(self, k)) for k in METRIC_NAMES})
        d["per_slice"] = [s.to_dict() for s in self.per_slice]
        d["included"] = list(self.included)
        d["excluded"] = list(self.excluded)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "MethodMetrics":
        return cls(
            name=str(d["name"]), **{k: _num(d[k]) for k in METRIC_NAMES},
            per_slice=tuple(SliceMetrics.from_dict(s) for s in d["per_slice"]),
            included=tuple(int(i) for i in d["included"]), excluded=tuple(int(i) for i in d["excluded"]),
        )


@dataclass(frozen=True)
class AuditResult:
    data_range: float
    fg_threshold: float
    methods: dict[str, MethodMetrics]
    ratios: dict[str, float] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA, "metrics_id": METRICS_ID, "data_range": json_safe(self.data_range),
            "fg_threshold": json_safe(self.fg_threshold),
            "methods": {k: m.to_dict() for k, m in self.methods.items()},
            "ratios": json_safe(dict(self.ratios)), "provenance": json_safe(dict(self.provenance)),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "AuditResult":
        if d.get("schema", SCHEMA) != SCHEMA:
            raise ValueError(f"unknown audit schema {d.get('schema')!r}; expected {SCHEMA!r}")
        return cls(
            data_range=_num(d["data_range"]), fg_threshold=_num(d["fg_threshold"]),
            methods={k: MethodMetrics.from_dict(m) for k, m in d["methods"].items()},
            ratios={k: _num(v) for k, v in d.get("ratios", {}).items()},
            provenance=dict(d.get("provenance", {})),
        )


def _num(v: Any) -> float:
    return math.nan if v is None else float(v)


def json_safe(v: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None, numpy scalars -> Python, tuples -> lists."""
    if isinstance(v, Mapping):
        return {str(k): json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def psnr_from_mse(mse: float, data_range: float) -> float:
    """``10 log10(data_range**2 / mse)``, capped at ``PSNR_CAP_DB`` (mse = 0 -> cap)."""
    if not math.isfinite(mse):
        return math.nan
    if mse <= 0.0:
        return PSNR_CAP_DB
    return min(PSNR_CAP_DB, 10.0 * math.log10(data_range * data_range / mse))
