"""`make figures` (pipelines/figures.py): each figure's JSON is stamped with what makes it checkable."""
from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines import figures  # noqa: E402


def test_every_figure_sits_beside_a_document_that_exists():
    for f in figures.FIGURES.values():
        assert (REPO / f.document).is_file(), f.document
        assert f.output.endswith(".json") and f.output.startswith("docs/")


def test_the_stamp_names_date_commit_machine_and_defaults():
    s = figures.stamp(["python", "-m", "x"])
    assert s["date"].endswith("Z") and len(s["commit"]) == 40
    assert s["defaults"]["model"] == "medsr-srresnet-x4" and len(s["defaults"]["model_sha256"]) == 64
    assert s["defaults"]["base"] == "near-lossless" and s["defaults"]["ensemble"] >= 1
    assert len(s["machine"]["load_average_at_start"]) == 3
    json.dumps(s)


def test_a_figure_is_written_atomically_with_its_stamp(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(figures, "REPO", tmp_path)
    monkeypatch.setattr(figures, "measure", lambda name, work: (["cmd", name], {"value": 42}))
    assert figures.main(["--only", "fuzz"]) == 0
    d = json.loads((tmp_path / figures.FIGURES["fuzz"].output).read_text())
    assert d["result"] == {"value": 42} and d["figure"] == "fuzz" and d["document"] == "docs/guarantees.md"
    assert d["stamp"]["command"] == ["cmd", "fuzz"] and d["stamp"]["date"]
    assert not list(tmp_path.rglob("*.tmp"))
    assert figures.main(["--list"]) == 0 and "fuzz" in capsys.readouterr().out
