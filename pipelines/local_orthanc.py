"""A throwaway local Orthanc (Debian's, + its DICOMweb plugin) for tests and benchmarks.

Private network namespace, free ports, start with extra configuration, stop.

Orthanc 1.10 cannot bind to one address (it listens on 0.0.0.0), so when the kernel allows
it the calling thread first moves into a fresh network namespace holding only loopback (the
``unshare -n`` system call); Orthanc, started from that thread, inherits it, and nothing
outside this process can reach it. Used by tests/test_orthanc.py, tests/test_pacs_transports.py
and pipelines/bench_pacs.py (never for a production PACS: see ``medsr orthanc serve``).
"""
from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import fcntl
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

CLONE_NEWNET = 0x40000000
DICOMWEB_PLUGIN_CANDIDATES = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
                              "/usr/lib/orthanc/libOrthancDicomWeb.so.1.7")


def loopback_up() -> None:
    SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14s", b"lo", 0, b"\0" * 14)
        flags = struct.unpack("16sH", fcntl.ioctl(s, SIOCGIFFLAGS, req)[:18])[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14s", b"lo", flags | IFF_UP, b"\0" * 14))


def enter_private_netns():
    """Move this thread into a new network namespace with only loopback up -> undo() or None."""
    if not sys.platform.startswith("linux") or os.environ.get("MEDSR_TEST_NO_NETNS"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    try:
        saved = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    except OSError:
        return None
    if libc.unshare(CLONE_NEWNET) != 0:  # EPERM without CAP_SYS_ADMIN
        os.close(saved)
        return None

    def undo():
        libc.setns(saved, CLONE_NEWNET)
        os.close(saved)

    try:
        loopback_up()
    except OSError:
        undo()
        return None
    return undo


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL, the process group Orthanc leads (bounded waits)."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def find_dicomweb_plugin() -> Path | None:
    for c in DICOMWEB_PLUGIN_CANDIDATES:
        if Path(c).is_file():
            return Path(c)
    return None


def start_orthanc(base: Path, *, http_port: int, dicom_port: int, extra: dict | None = None,
                  plugins: list[Path] = (), aet: str = "ORTHANC", wait_s: float = 60.0):
    """Write the launcher's configuration under ``base``, add ``extra`` keys and ``plugins``, start Orthanc.

    Returns (process, log path). The caller stops it with :func:`stop`; it also stops at exit.
    """
    from medsr.pacs import launcher

    root, store = base / "root", base / "store"
    out = subprocess.run([sys.executable, "-m", "medsr", "orthanc", "serve", "--root", str(root),
                          "--http-port", str(http_port), "--dicom-port", str(dicom_port), "--aet", aet,
                          "--archive-store", str(store), "--device", "cpu", "--dry-run", "--json"],
                         capture_output=True, text=True, timeout=120, check=True)
    plan = json.loads(out.stdout)
    cfg_path = Path(plan["config"])
    cfg = json.loads(cfg_path.read_text())
    cfg["Plugins"] = cfg["Plugins"] + [str(p) for p in plugins]
    cfg.update(extra or {})
    cfg_path.write_text(json.dumps(cfg, indent=2))
    log = base / "orthanc.log"
    with open(log, "ab") as log_file:
        proc = subprocess.Popen(plan["command"], env=launcher.orthanc_environment(), stdout=log_file,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=base, start_new_session=True)
    atexit.register(stop, proc)  # even if the session is torn down abruptly
    return proc, log


def wait_for_http(proc: subprocess.Popen, session, url: str, log: Path, wait_s: float = 60.0) -> None:
    """Poll ``url`` until it answers 200 (bounded); raise with the log's tail if Orthanc exits or never answers."""
    import requests

    deadline = time.monotonic() + wait_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"Orthanc exited with {proc.returncode}:\n{log_tail(log)}")
        try:
            if session.get(url, timeout=5).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"Orthanc did not answer {url} within {wait_s:.0f} s:\n{log_tail(log)}")
        time.sleep(0.1)


def log_tail(log: Path, n: int = 40) -> str:
    try:
        return "\n".join(Path(log).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""
