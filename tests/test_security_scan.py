"""Static security scan: ``bandit`` over medsr/ with the project's config finds nothing, and
every skip (global in pyproject's [tool.bandit], or an inline ``# nosec``) is justified in
docs/guarantees.md."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

try:  # Python >= 3.11; on 3.10 the tomli backport (a dev extra there) reads the same
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]


def test_bandit_finds_nothing():
    pytest.importorskip("bandit", reason="bandit is in the dev extras: pip install -e '.[dev]'")
    p = subprocess.run([sys.executable, "-m", "bandit", "-c", "pyproject.toml", "-r", "medsr", "-f", "json", "-q"],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
    report = json.loads(p.stdout)
    findings = [f"{r['filename']}:{r['line_number']} {r['test_id']} {r['issue_text']}" for r in report["results"]]
    assert not findings, "\n".join(findings)
    assert p.returncode == 0, p.stderr
    assert report["metrics"]["_totals"]["loc"] > 1000  # it really scanned the package


def test_every_skip_is_justified():
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["bandit"]
    doc = (REPO / "docs" / "guarantees.md").read_text()
    for test_id in cfg.get("skips", []):
        assert test_id in doc, f"global bandit skip {test_id} is not justified in docs/guarantees.md"
    for py in (REPO / "medsr").rglob("*.py"):
        for n, line in enumerate(py.read_text().splitlines(), 1):
            m = re.search(r"#\s*nosec\b\s*(B\d+)?", line)
            if m:
                assert m.group(1), f"{py}:{n}: a bare '# nosec' (name the test id)"
                assert m.group(1) in doc and py.name in doc, f"{py}:{n}: nosec {m.group(1)} not justified in the doc"
