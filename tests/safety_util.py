"""Helpers shared by the crash-safety, concurrency, security and fuzz tests."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FAST_ARGS = ("--method", "bicubic", "--no-j2k")


def env_with(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDSR_TEST_")}
    env.update(extra)
    return env


def medsr_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "medsr", *map(str, args)]


def run_medsr(*args, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(medsr_cmd(*args), capture_output=True, text=True, cwd=REPO, env=env or env_with(),
                          timeout=timeout)


def start_medsr(*args, env: dict | None = None, module: str = "medsr") -> subprocess.Popen:
    """Start ``python -m <module> args`` in its own session (so its whole process group can be killed)."""
    return subprocess.Popen([sys.executable, "-m", module, *map(str, args)], cwd=REPO, env=env or env_with(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(30)


def tree_digest(folder: Path) -> dict[str, str]:
    """relative path -> sha256 of every file below ``folder`` (byte-identity of originals)."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def temps(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.name.startswith(".medsr-tmp-"))


def wait_for(cond, timeout: float, what: str, proc: subprocess.Popen | None = None, step: float = 0.005):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended (rc {proc.returncode}) before {what}: {proc.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(step)


def one_error_line(stderr: str) -> str:
    lines = [l for l in stderr.strip().splitlines() if l.startswith("medsr: error")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr, stderr
    return lines[0]
