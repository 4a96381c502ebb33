"""Per-slice quality floor (issue #8): every slice whose restore misses the floor is stored by the
representation that meets it at the fewest bytes. Pure functions; no file I/O. docs/floor.md.

- ``spec``: the floor itself (``Floor``, ``check_floor``) and ``SliceJudge``, the audit's metric
  definitions applied to one slice;
- ``codecs``: one slice <-> bytes (JPEG 2000 lossy/reversible, JPEG-LS lossless);
- ``stored``: ``FloorData`` (what the archive stores) and ``rebuild_slice``, the one function
  archive-time measurement and restore both use;
- ``search``: the rate searches and the per-slice choice (``plan_floor``).
"""
from .spec import FALLBACKS, FLOOR_ID, Floor, FloorError, SliceJudge, SliceQuality, check_floor
from ..archive.floor import CODES, REPRESENTATIONS, FloorData, apply_floor, rebuild_slice
from .search import FloorPlan, SliceDecision, plan_floor

__all__ = ["FALLBACKS", "FLOOR_ID", "Floor", "FloorError", "SliceJudge", "SliceQuality", "check_floor", "CODES",
           "REPRESENTATIONS", "FloorData", "apply_floor", "rebuild_slice", "FloorPlan", "SliceDecision", "plan_floor"]
