"""``Audit``: one audit as a typed, read-only value, with the one flat view that commands print.

It reads like the JSON stored in an archive (``audit["methods"]["restored"]["psnr"]``), so an audit
read from any archive and one just measured are used the same way; nothing changes it in place
(``with_floor`` returns a new one).
"""
from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any

from .metrics import AuditResult, MethodMetrics

#: (method, suffix) of the flat view: restored -> psnr, bicubic -> psnr_bicubic, jpeg2000 -> psnr_j2k
FLAT_METHODS = (("restored", ""), ("bicubic", "_bicubic"), ("jpeg2000", "_j2k"))
FLAT_METRICS = ("psnr", "psnr_fg", "ssim", "ssim_fg")


class Audit(Mapping[str, Any]):
    """An archive's audit: ``methods`` (``MethodMetrics`` of restored, bicubic, jpeg2000), ``ratios``,
    ``provenance``, ``floor`` (the per-slice floor's summary, or None) and ``flat()``."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any]):
        self._data = copy.deepcopy(dict(data))

    @classmethod
    def of(cls, audit: Any) -> Any:
        """``audit`` as an ``Audit`` (from a stored JSON object, an ``Audit`` or None). Anything else (the audit
        of a damaged archive that is not a JSON object) is returned as stored, as ``read_info`` gives it."""
        if audit is None or isinstance(audit, Audit) or not isinstance(audit, Mapping):
            return audit
        return cls(audit)

    # read-only mapping over the stored JSON form (values are copies)
    def __getitem__(self, key: str) -> Any:
        return copy.deepcopy(self._data[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"Audit({self.flat()!r})"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form an archive stores."""
        return copy.deepcopy(self._data)

    @property
    def result(self) -> AuditResult:
        return AuditResult.from_dict(self._data)

    @property
    def methods(self) -> dict[str, MethodMetrics]:
        return self.result.methods

    @property
    def ratios(self) -> dict[str, float]:
        return dict(self._data.get("ratios", {}))

    @property
    def provenance(self) -> dict[str, Any]:
        return copy.deepcopy(self._data.get("provenance", {}))

    @property
    def floor(self) -> dict[str, Any] | None:
        return copy.deepcopy(self._data.get("floor"))

    def flat(self) -> dict[str, float]:
        """One level: ``psnr``, ``psnr_fg``, ``ssim``, ``ssim_fg`` of the restore, the same with ``_bicubic``
        and ``_j2k`` (rounded to 4 decimals; a metric not measured is left out)."""
        out = {}
        for method, suffix in FLAT_METHODS:
            for metric in FLAT_METRICS:
                v = self._data.get("methods", {}).get(method, {}).get(metric)
                if v is not None:
                    out[metric + suffix] = round(float(v), 4)
        return out

    @property
    def budget(self) -> dict[str, Any] | None:
        """``--ratio``: the budget, every candidate measured and why the stored one won (``medsr.flow.budget``)."""
        return copy.deepcopy(self._data.get("budget"))

    def with_budget(self, summary: Mapping[str, Any]) -> Audit:
        """A new audit with the ``--ratio`` choice recorded."""
        data = self.to_dict()
        data["budget"] = dict(summary)
        return Audit(data)

    def with_floor(self, summary: Mapping[str, Any], per_slice: list[Mapping[str, Any]]) -> Audit:
        """A new audit with the per-slice floor: its ``summary`` and, on each restored slice, the ``per_slice``
        fields (representation, bytes) in slice order."""
        data = self.to_dict()
        data["floor"] = dict(summary)
        for entry, extra in zip(data.get("methods", {}).get("restored", {}).get("per_slice", []), per_slice):
            entry.update(extra)
        return Audit(data)
