"""The batch manifest: one JSON row per series (archive) or archive (restore), written by the client
process alone and rewritten atomically as results arrive."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

log = logging.getLogger("medsr")

MANIFEST = "manifest.jsonl"
RESTORE_MANIFEST = "restore-manifest.jsonl"
#: manifest columns, in this order, for every row (None when not applicable)
ARCHIVE_FIELDS = ("key", "source", "kind", "series_uid", "files", "archive", "status", "slices", "original_bytes",
                  "archive_bytes", "ratio", "psnr", "psnr_fg", "psnr_bicubic", "psnr_j2k", "pixel_ratio", "base",
                  "base_near", "floor", "seconds", "error", "note", "finished")
RESTORE_FIELDS = ("key", "archive", "output", "format", "status", "slices", "method", "model_id", "device",
                  "seconds", "error", "note", "finished")


class Manifest:
    """``manifest.jsonl``: one JSON object per line, keyed by ``key``, rewritten atomically on each update.

    Rows of earlier runs that this run does not touch (e.g. series whose originals were
    deleted after archiving) are kept. Rewrites are throttled only when the file is so
    large that a rewrite takes more than 50 ms (then at most ~10% of the time is spent writing).
    """

    def __init__(self, path: Path, fields: tuple[str, ...]):
        self.path = Path(path)
        self.fields = fields
        self.rows: dict[str, dict] = {}
        self._cost = 0.0
        self._last = 0.0
        self._dirty = False
        if self.path.exists():
            for n, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    self.rows[row["key"]] = row
                except (ValueError, KeyError, TypeError):
                    log.warning("%s line %d is not a manifest row; dropped", self.path, n)

    def put(self, row: dict) -> None:
        self.rows[row["key"]] = {k: row.get(k) for k in self.fields}
        self._dirty = True
        if self._cost < 0.05 or time.monotonic() - self._last >= 10 * self._cost:
            self.write()

    def write(self) -> None:
        from ..api import atomic_file

        t0 = time.monotonic()
        with atomic_file(self.path, force=True, mode=0o600) as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                for key in sorted(self.rows):
                    f.write(json.dumps(self.rows[key], default=str, allow_nan=False) + "\n")
        self._last = time.monotonic()
        self._cost = self._last - t0
        self._dirty = False

    def flush(self) -> None:
        if self._dirty or not self.path.exists():
            self.write()
