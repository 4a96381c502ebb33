"""CI set-up: .ci/preflight.py names what is missing before anything is installed, and its lists
stay in step with what the tests read (conftest.py) and what the Makefile installs."""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import conftest

REPO = Path(__file__).resolve().parents[1]
PREFLIGHT = REPO / ".ci" / "preflight.py"


def _preflight_module():
    spec = importlib.util.spec_from_file_location("ci_preflight", PREFLIGHT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run_preflight(**env) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, str(PREFLIGHT)], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=60)


def test_preflight_requires_every_archive_the_tests_read():
    used = {v for k, v in vars(conftest).items() if k.endswith("_ARCHIVE")}
    for test in REPO.glob("tests/*.py"):  # archives named directly in a test file
        used |= set(re.findall(r"[\w-]+\.(?:tar\.gz|zip)\b", test.read_text()))
    assert used and used <= set(_preflight_module().REQUIRED_ARCHIVES)


def test_preflight_checks_every_debian_package_the_makefile_installs():
    make = (REPO / "Makefile").read_text()
    apt = re.search(r"^APT_PACKAGES\s*:=\s*(.+)$", make, re.M).group(1).split()
    assert sorted(apt) == sorted(_preflight_module().DEBIAN_TOOLS)


def test_without_the_shared_data_ci_stops_at_once_naming_it(tmp_path):
    p = _run_preflight(MEDSR_SHARED_DATA=str(tmp_path / "shared" / "data"))
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ci preflight: cannot run the full test suite here; missing:")
    assert str(tmp_path / "shared" / "data") in lines[0]


def test_with_an_incomplete_data_folder_ci_names_the_missing_archives(tmp_path):
    (tmp_path / "sag-anon-t1-mprage.tar.gz").write_bytes(b"")
    p = _run_preflight(MEDSR_SHARED_DATA=str(tmp_path))
    assert p.returncode == 2
    assert "siemens-xa30-phantom-t1w.tar.gz, philips-phantom-t1.zip in" in p.stderr
    assert "sag-anon-t1-mprage.tar.gz" not in p.stderr


def test_ci_runs_the_readme_test_command_strictly_after_the_preflight():
    steps = [l for l in (REPO / ".ci" / "run").read_text().splitlines() if l and not l.startswith(("#", "set ", "cd "))]
    assert steps == ["python3 .ci/preflight.py", "MEDSR_STRICT_TESTS=1 make test"]
    assert "make test" in (REPO / "README.md").read_text()
