"""Job states that survive a restart (medsr/io/ledger.py), as `medsr jobs ROOT` shows them."""
from __future__ import annotations

import json

import pytest

from medsr import cli
from medsr.errors import InputError
from medsr.io.ledger import JobLedger, record_row


def test_a_restart_marks_unfinished_jobs_interrupted_and_keeps_finished_ones(tmp_path, capsys):
    ledger = JobLedger(tmp_path)
    assert ledger.list() == [] and ledger.mark_interrupted() == [] and not (tmp_path / "jobs.sqlite").exists()
    ledger.add("a" * 32, "archive", "series-a", {"series_id": "x", "opts": {"min_psnr": 30.0}})
    assert (tmp_path / "jobs.sqlite").stat().st_mode & 0o777 == 0o600  # made by the first write, owner-only
    ledger.add("b" * 32, "archive", "series-b")
    ledger.add("c" * 32, "restore", "archive-c")
    ledger.add("d" * 32, "archive", "series-d")
    ledger.running("a" * 32)
    ledger.done("c" * 32, {"series_id": "new"})
    ledger.failed("d" * 32, {"error": "series-d: not MR"}, 422)

    after = JobLedger(tmp_path)  # the next process on the same root
    assert sorted(after.mark_interrupted()) == ["a" * 32, "b" * 32]
    states = {j["job_id"][0]: j for j in after.list()}
    assert {k: v["state"] for k, v in states.items()} == {"a": "interrupted", "b": "interrupted", "c": "done",
                                                          "d": "failed"}
    assert states["a"]["resumable"] is True and states["b"]["resumable"] is False  # b recorded no parameters
    assert after.params("a" * 32) == {"series_id": "x", "opts": {"min_psnr": 30.0}}
    assert states["c"]["result"] == {"series_id": "new"} and states["d"]["error"]["error"] == "series-d: not MR"
    after.mark_resumed("a" * 32, "e" * 32)
    assert after.get("a" * 32)["state"] == "resumed" and after.get("a" * 32)["resumed_by"] == "e" * 32
    assert after.mark_interrupted() == []  # finished and resumed rows stay as they are

    assert cli.main(["jobs", str(tmp_path), "--json", "--state", "failed"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [j["job_id"] for j in shown["jobs"]] == ["d" * 32]
    assert cli.main(["jobs", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "series-d: not MR" in text and f"resumed by {'e' * 32}" in text


def test_batch_rows_and_a_folder_without_a_ledger(tmp_path, capsys):
    ledger = JobLedger(tmp_path)
    for key in ("s1", "s2"):
        ledger.add(key, "archive", key)
    record_row(ledger, {"key": "s1", "status": "ok", "archive": "s1.medsr.h5", "psnr": 31.2})
    record_row(ledger, {"key": "s2", "status": "failed", "error": "s2: unreadable"})
    rows = {r["job_id"]: r for r in ledger.list()}
    assert rows["s1"]["state"] == "done" and rows["s1"]["result"]["psnr"] == 31.2
    assert rows["s2"]["state"] == "failed" and rows["s2"]["error"] == {"error": "s2: unreadable"}
    with pytest.raises(InputError, match="no jobs.sqlite"):
        JobLedger(tmp_path / "elsewhere", create=False)
    assert cli.main(["jobs", str(tmp_path / "nowhere")]) == InputError.exit_code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no jobs.sqlite" in err
