"""Job state that survives restarts: one SQLite file under the archive store (or batch OUTDIR).

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
        self.path = Path(root) / LEDGER_NAME
        if not create and not self.path.is_file():
            raise InputError(f"no {LEDGER_NAME} here (not an archive store or batch output folder)", path=root)
        if create and not self.path.exists():
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        with self._db() as db:
            db.execute(_SCHEMA)

    def _db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)  # autocommit: each statement durable
        db.row_factory = sqlite3.Row
        return db

    def _exec(self, sql: str, args=()) -> list[sqlite3.Row]:
        db = self._db()
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()

    # ---- writes

    def add(self, job_id: str, kind: str, target: str, params: dict | None = None, *, created: float | None = None):
        self._exec("INSERT OR REPLACE INTO jobs (id, kind, target, state, created, params) VALUES (?,?,?,?,?,?)",
                   (job_id, kind, target, "queued", created or time.time(),
                    json.dumps(params) if params is not None else None))

    def running(self, job_id: str, started: float | None = None) -> None:
        self._exec("UPDATE jobs SET state='running', started=? WHERE id=?", (started or time.time(), job_id))

    def done(self, job_id: str, result: dict | None, finished: float | None = None) -> None:
        self._exec("UPDATE jobs SET state='done', finished=?, result=? WHERE id=?",
                   (finished or time.time(), json.dumps(result, default=str), job_id))

    def failed(self, job_id: str, error: dict, http_status: int = 500, finished: float | None = None) -> None:
        self._exec("UPDATE jobs SET state='failed', finished=?, error=?, http_status=? WHERE id=?",
                   (finished or time.time(), json.dumps(error, default=str), int(http_status), job_id))

    def mark_interrupted(self) -> list[str]:
        """At start: rows a killed predecessor left queued/running -> ``interrupted``; returns their ids."""
        ids = [r["id"] for r in self._exec("SELECT id FROM jobs WHERE state IN ('queued','running')")]
        if ids:
            self._exec("UPDATE jobs SET state='interrupted', finished=? WHERE state IN ('queued','running')",
                       (time.time(),))
        return ids

    def mark_resumed(self, job_id: str, new_id: str) -> None:
        self._exec("UPDATE jobs SET state='resumed', resumed_by=? WHERE id=?", (new_id, job_id))

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
            d["http_status"] = r["http_status"]
        if r["resumed_by"]:
            d["resumed_by"] = r["resumed_by"]
        if r["state"] == "interrupted":
            d["resumable"] = bool(r["params"])
        return d


def cmd_jobs(args) -> int:
    """``medsr jobs ROOT``: the jobs recorded under an archive store or batch output folder."""
    ledger = JobLedger(args.root, create=False)
    rows = ledger.list()
    if args.state:
        rows = [r for r in rows if r["state"] == args.state]
    if args.json:
        print(json.dumps({"jobs": rows, "count": len(rows)}, default=str))
        return 0
    if not rows:
        print("no jobs")
    for r in rows:
        tail = r.get("error", {}).get("error", "") if r["state"] == "failed" else (
            f"resumed by {r['resumed_by']}" if r.get("resumed_by") else "")
        print(f"{r['job_id']}  {r['state']:<11} {r['kind']:<8} {r['target']:<48} {r['created']}  {tail}".rstrip())
    return 0


def register_cli(subparsers) -> None:
    from ..cli import _common

    j = subparsers.add_parser("jobs", help="list the jobs recorded under an Orthanc archive store or batch OUTDIR",
                              description="List the jobs in ROOT/jobs.sqlite (queued, running, done, failed with "
                              "the error, interrupted by a restart, resumed). See docs/pacs.md.")
    j.add_argument("root", metavar="ROOT", help="the plugin's archive store, or an archive-batch OUTDIR")
    j.add_argument("--state", choices=STATES, help="only jobs in this state")
    _common(j)
    j.set_defaults(func=cmd_jobs)


__all__ = ["JobLedger", "LEDGER_NAME", "STATES", "cmd_jobs", "register_cli"]
