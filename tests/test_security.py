"""Security: weights load only from safetensors (sha256 checked), file names built from DICOM
values are sanitised, outputs are owner-only whatever the umask, and no PHI reaches logs,
errors, reports or manifests (unless ``--include-phi``).

Remote access to the Orthanc launcher needs authentication:
tests/test_orthanc.py::test_launcher_refuses_remote_without_auth. Sha256 of shipped weights:
tests/test_models.py::test_tampered_weights_are_refused. Static analysis:
tests/test_security_scan.py (bandit).
"""
from __future__ import annotations

import os
import pickle
import stat
import subprocess
from pathlib import Path

import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import medsr
from dicom_fixtures import PHI_MARKERS
from medsr.dicom import safe_filename
from safety_util import FAST_ARGS, REPO, env_with, medsr_cmd

FAST = medsr.ArchiveOptions(method="bicubic", baselines=False)
SAFE = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")


# --------------------------------------------------------------------------- weights


class _Evil:
    """Unpickling this creates a marker file: proof that a pickle was loaded."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path(self.marker).write_text, ("unpickled!",))


@pytest.mark.parametrize("name", ["evil.pt", "evil.pth", "evil.bin", "evil.ckpt", "evil.safetensors"])
def test_pickled_weights_are_never_unpickled(fixture_path, tmp_path, name):
    from medsr.models import create_model
    from medsr.models.registry import load_weights
    from medsr.models.srresnet import SRResNet, SRResNetConfig

    marker = tmp_path / "marker"
    weights = tmp_path / name
    weights.write_bytes(pickle.dumps({"state_dict": _Evil(str(marker))}))
    with pytest.raises(medsr.ModelError):
        create_model(weights)
    with pytest.raises(medsr.ModelError):
        load_weights(SRResNet(SRResNetConfig(blocks=1, channels=8)), weights)
    with pytest.raises(medsr.ModelError):  # through the public API too
        medsr.archive_series(fixture_path("basic"), tmp_path / "x.medsr.h5", medsr.ArchiveOptions(model=str(weights)))
    assert not marker.exists()


def test_registry_weights_are_sha256_checked_before_loading(monkeypatch, tmp_path):
    import dataclasses

    from medsr.models import registry

    entry = registry.REGISTRY["medsr-srresnet-x4"]
    fake = tmp_path / "w.safetensors"
    fake.write_bytes(entry.path.read_bytes()[:-1] + b"\0")  # one byte changed
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)
    monkeypatch.setitem(registry.REGISTRY, entry.name, dataclasses.replace(entry, weights=fake.name))
    loaded = []
    monkeypatch.setattr(registry, "load_weights", lambda *a: loaded.append(a))
    with pytest.raises(medsr.ModelError, match="sha256 mismatch"):
        registry.create_model(entry.name)
    assert loaded == []  # refused before the file was parsed at all


# --------------------------------------------------------------------------- file names


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_safe_filename_never_escapes(text):
    name = safe_filename(text)
    assert 1 <= len(name) <= 80 and set(name) <= SAFE
    assert not name.startswith(".") and name not in (".", "..")
    assert Path(name).name == name and len(Path(name).parts) == 1


@pytest.mark.parametrize("text", ["../../etc/passwd", "/abs/path", "a\0b", "x\ny\r", "..", ".", "", "\\..\\win",
                                  "1.2.840/../../x", "\u202e.dcm", "con", " ../ "])
def test_safe_filename_examples(text):
    name = safe_filename(text)
    assert set(name) <= SAFE and not name.startswith(".") and "/" not in name and "\0" not in name


def test_hostile_dicom_values_cannot_steer_output_paths(fixture_copy, tmp_path):
    src = fixture_copy("basic")
    for k, f in enumerate(sorted(src.glob("*.dcm"))):
        ds = pydicom.dcmread(f)
        ds.SOPInstanceUID = f"1.2.3.{k}"
        ds.SeriesDescription = "../../../escape\nline\0nul/x"
        ds.StudyDescription = "/etc/passwd"
        ds.save_as(f)
    out = tmp_path / "out"
    out.mkdir()
    arc = out / "a.medsr.h5"
    medsr.archive_series(src, arc, FAST)
    res = medsr.restore_archive(arc, out / "r")
    assert sorted(p.name for p in out.iterdir()) == ["a.medsr.h5", "r"]
    for f in res.files:
        assert f.parent == out / "r" and set(f.name) <= SAFE and not f.name.startswith(".")
    assert not list(tmp_path.glob("**/escape*"))


# --------------------------------------------------------------------------- permissions


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_outputs_are_owner_only_even_with_umask_0(fixture_path, tmp_path):
    pytest.importorskip("distributed")
    out = tmp_path / "out"
    out.mkdir()

    def run(*args):
        p = subprocess.run(medsr_cmd(*args), capture_output=True, text=True, cwd=REPO, env=env_with(),
                           preexec_fn=lambda: os.umask(0))  # the most permissive umask
        assert p.returncode == 0, p.stderr

    run("archive", fixture_path("basic"), "-o", out / "a.medsr.h5", *FAST_ARGS)
    run("restore", out / "a.medsr.h5", "-o", out / "r")
    run("restore", out / "a.medsr.h5", "-o", out / "v.nii.gz", "--format", "nifti")
    run("audit", out / "a.medsr.h5", "-o", out / "report")
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(fixture_path("basic"), root / "basic")
    run("archive-batch", root / "basic", "-o", out / "batch", "--workers", "1", *FAST_ARGS)
    assert _mode(out / "a.medsr.h5") == 0o600
    assert _mode(out / "r") == 0o700 and {_mode(f) for f in (out / "r").iterdir()} == {0o600}
    assert _mode(out / "v.nii.gz") == 0o600
    assert _mode(out / "report") == 0o700 and {_mode(f) for f in (out / "report").iterdir()} == {0o600}
    assert _mode(out / "batch") == 0o700
    assert {_mode(f) for f in (out / "batch").iterdir()} == {0o600}  # archives, manifest, lock


# --------------------------------------------------------------------------- no PHI in what medsr prints


def _phi_in(text: str) -> list[str]:
    """Markers (and the PN form with spaces) found in ``text``; case-sensitive: paths say 'fixture'."""
    return [v for m in PHI_MARKERS for v in {m, m.replace("^", " ")} if v in text]


def test_no_phi_in_outputs_reports_or_errors(fixture_path, fixture_copy, tmp_path):
    """Every command on a series carrying marker PHI: the markers appear in no stdout, stderr,
    report or manifest (they are in the archive and the restored DICOM, by design)."""
    pytest.importorskip("distributed")
    src = fixture_path("basic")  # PatientName FIXTURE^PATIENT, PatientID FIX-0001, ...
    assert _phi_in(pydicom.dcmread(sorted(src.glob("*.dcm"))[0]).PatientName.original_string.decode())
    out = tmp_path / "out"
    out.mkdir()
    arc = out / "a.medsr.h5"
    texts: dict[str, str] = {}

    def run(label, *args, code=0):
        p = subprocess.run(medsr_cmd(*args), capture_output=True, text=True, cwd=REPO, env=env_with(), timeout=600)
        assert p.returncode == code, (label, p.returncode, p.stderr)
        texts[label] = p.stdout + p.stderr

    run("archive", "archive", src, "-o", arc, *FAST_ARGS, "--report", out / "rep0")
    run("archive --json", "archive", src, "-o", out / "b.medsr.h5", "--json", *FAST_ARGS)
    run("restore", "restore", arc, "-o", out / "r", "--reference", src)
    run("restore --json", "restore", arc, "-o", out / "r2", "--json")
    run("info", "info", arc)
    run("info --json", "info", arc, "--json")
    run("verify", "verify", arc)
    run("audit", "audit", arc, "-o", out / "rep", "--reference", src)
    root = tmp_path / "root"
    root.mkdir()
    fixture_copy("basic").rename(root / "basic")
    fixture_copy("truncated").rename(root / "truncated")  # a failing row in the manifest
    run("archive-batch", "archive-batch", root, "-o", out / "batch", "--workers", "1", "--json", *FAST_ARGS, code=9)
    run("restore-batch", "restore-batch", out / "batch", "-o", out / "rbatch", "--workers", "1", "--json",
        "--method", "bicubic")
    # error paths
    run("exists", "archive", src, "-o", arc, *FAST_ARGS, code=5)
    run("truncated", "archive", fixture_path("truncated"), "-o", out / "t.medsr.h5", *FAST_ARGS, code=2)
    run("gate", "archive", src, "-o", out / "g.medsr.h5", "--min-psnr", "99", *FAST_ARGS, code=7)
    run("two series", "archive", fixture_path("two_series"), "-o", out / "s.medsr.h5", *FAST_ARGS, code=3)
    broken = fixture_copy("basic")
    bad = sorted(broken.glob("*.dcm"))[5]
    bad.write_bytes(bad.read_bytes()[:900])  # cut inside the header, near the patient module
    run("cut header", "archive", broken, "-o", out / "c.medsr.h5", *FAST_ARGS, code=2)
    damaged = out / "d.medsr.h5"
    raw = bytearray(arc.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    damaged.write_bytes(bytes(raw))
    run("verify damaged", "verify", damaged, code=4)
    run("restore damaged", "restore", damaged, "-o", out / "rd", code=4)
    for label, text in texts.items():
        assert not _phi_in(text), (label, _phi_in(text), text[-500:])
    for path in [*(out / "rep0").iterdir(), *(out / "rep").iterdir(), out / "batch" / "manifest.jsonl",
                 out / "rbatch" / "restore-manifest.jsonl"]:
        assert not _phi_in(path.read_text(errors="replace")), path
    # ... and on request they are there
    run("audit --include-phi", "audit", arc, "-o", out / "phi", "--include-phi")
    assert _phi_in((out / "phi" / "report.json").read_text())
    assert _phi_in(pydicom.dcmread(sorted((out / "r").glob("*.dcm"))[0]).PatientName.original_string.decode())
