"""``medsr jobs ROOT``: the jobs recorded in ROOT/jobs.sqlite (``medsr.api.JobLedger``).

ROOT is the Orthanc plugin's archive store or an ``archive-batch`` OUTDIR. States: queued,
running, done, failed (with the one-line error), interrupted (the process was stopped while
the job was queued or running), resumed (``resumed_by`` names the job that ran it again).
"""
from __future__ import annotations

import json

from ..api import JOB_STATES, JobLedger


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
    from .common import add_common_args as _common

    j = subparsers.add_parser("jobs", help="list the jobs recorded under an Orthanc archive store or batch OUTDIR",
                              description="List the jobs in ROOT/jobs.sqlite (queued, running, done, failed with "
                              "the error, interrupted by a restart, resumed). See docs/pacs.md.")
    j.add_argument("root", metavar="ROOT", help="the plugin's archive store, or an archive-batch OUTDIR")
    j.add_argument("--state", choices=JOB_STATES, help="only jobs in this state")
    _common(j)
    j.set_defaults(func=cmd_jobs)


__all__ = ["cmd_jobs", "register_cli"]
