"""Job state that survives restarts: one SQLite file (``jobs.sqlite``) under the Orthanc plugin's
archive store or an ``archive-batch`` OUTDIR.

Every job is a row: id, kind, target, state, times, the parameters it needs to run again,
its result or its one-line error. States: ``queued`` -> ``running`` -> ``done`` | ``failed``;
a process that starts and finds rows still ``queued`` or ``running`` (its predecessor was
killed) marks them ``interrupted``; resuming one submits a new job with the same
parameters and marks the old row ``resumed`` (``resumed_by`` names the new job).

``medsr jobs ROOT`` lists them; the Orthanc plugin answers ``GET /medsr/jobs`` from here.
Each call opens its own short connection (safe from any thread); the file is 0600.
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
from datetime import datetime, timezone
from pathlib import Path

from ..errors import InputError

LEDGER_NAME = "jobs.sqlite"
STATES = ("queued", "running", "done", "failed", "interrupted", "resumed")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, target TEXT NOT NULL, state TEXT NOT NULL,
    created REAL NOT NULL, started REAL, finished REAL, params TEXT, result TEXT, error TEXT,
    http_status INTEGER, resumed_by TEXT
)"""


def _iso(t):
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


class JobLedger:
    """The ``jobs`` table of ``<root>/jobs.sqlite``."""

    def __init__(self, root: str | Path, *, create: bool = True):
        """``create=False``: refuse a folder without a ledger. The file itself is made on the first write,
        so reading (or refusing a bad request) leaves nothing behind."""
        self.path = Path(root) / LEDGER_NAME
        if not create and not self.path.is_file():
            raise InputError(f"no {LEDGER_NAME} here (not an archive store or batch output folder)", path=root)

    def _db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)  # autocommit: each statement durable
        db.row_factory = sqlite3.Row
        return db

    def _exec(self, sql: str, args=(), *, write: bool = False) -> list[sqlite3.Row]:
        if not self.path.exists():
            if not write:
                return []
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))  # owner-only before any row
        db = self._db()
        try:
            if write:
                db.execute(_SCHEMA)
            return db.execute(sql, args).fetchall()
        finally:
            db.close()

    # ---- writes

    def add(self, job_id: str, kind: str, target: str, params: dict | None = None, *, created: float | None = None):
        self._exec("INSERT OR REPLACE INTO jobs (id, kind, target, state, created, params) VALUES (?,?,?,?,?,?)",
                   (job_id, kind, target, "queued", created or time.time(),
                    json.dumps(params) if params is not None else None), write=True)

    def running(self, job_id: str, started: float | None = None) -> None:
        self._exec("UPDATE jobs SET state='running', started=? WHERE id=?", (started or time.time(), job_id), write=True)

    def done(self, job_id: str, result: dict | None, finished: float | None = None) -> None:
        self._exec("UPDATE jobs SET state='done', finished=?, result=? WHERE id=?",
                   (finished or time.time(), json.dumps(result, default=str), job_id), write=True)

    def failed(self, job_id: str, error: dict, http_status: int | None = 500, finished: float | None = None) -> None:
        self._exec("UPDATE jobs SET state='failed', finished=?, error=?, http_status=? WHERE id=?",
                   (finished or time.time(), json.dumps(error, default=str),
                    None if http_status is None else int(http_status), job_id), write=True)

    def mark_interrupted(self) -> list[str]:
        """At start: rows a killed predecessor left queued/running -> ``interrupted``; returns their ids."""
        ids = [r["id"] for r in self._exec("SELECT id FROM jobs WHERE state IN ('queued','running')")]
        if ids:
            self._exec("UPDATE jobs SET state='interrupted', finished=? WHERE state IN ('queued','running')",
                       (time.time(),), write=True)
        return ids

    def mark_resumed(self, job_id: str, new_id: str) -> None:
        self._exec("UPDATE jobs SET state='resumed', resumed_by=? WHERE id=?", (new_id, job_id), write=True)

    # ---- reads

    def get(self, job_id: str) -> dict | None:
        rows = self._exec("SELECT * FROM jobs WHERE id=?", (job_id,))
        return self._row(rows[0]) if rows else None

    def params(self, job_id: str) -> dict | None:
        rows = self._exec("SELECT params FROM jobs WHERE id=?", (job_id,))
        return json.loads(rows[0]["params"]) if rows and rows[0]["params"] else None

    def list(self, limit: int = 1000) -> list[dict]:
        return [self._row(r) for r in self._exec("SELECT * FROM jobs ORDER BY created LIMIT ?", (int(limit),))]

    @staticmethod
    def _row(r: sqlite3.Row) -> dict:
        d = {"job_id": r["id"], "kind": r["kind"], "target": r["target"], "state": r["state"],
             "created": _iso(r["created"]), "started": _iso(r["started"]), "finished": _iso(r["finished"])}
        if r["result"]:
            d["result"] = json.loads(r["result"])
        if r["error"]:
            d["error"] = json.loads(r["error"])
            if r["http_status"] is not None:
                d["http_status"] = r["http_status"]
        if r["resumed_by"]:
            d["resumed_by"] = r["resumed_by"]
        if r["state"] == "interrupted":
            d["resumable"] = bool(r["params"])
        return d


def record_row(ledger: JobLedger, row: dict) -> None:
    """An ``archive-batch`` manifest row -> the ledger (ok/skipped: done; failed: failed with its error)."""
    key = str(row["key"])
    if row.get("status") == "failed":
        ledger.failed(key, {"error": row.get("error")}, None)
    else:
        ledger.done(key, {k: row.get(k) for k in ("status", "archive", "slices", "ratio", "psnr", "note")})


__all__ = ["JobLedger", "LEDGER_NAME", "STATES", "record_row"]
