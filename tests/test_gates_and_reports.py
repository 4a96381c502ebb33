"""Quality gates refuse before writing; reports are self-contained; PHI only on request."""
import json
import subprocess
import sys

import numpy as np
import pytest

from medsr import restore_archive


def medsr(*args):
    return subprocess.run([sys.executable, "-m", "medsr", *map(str, args)], capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("gate", [["--min-psnr", "99"], ["--min-ssim", "0.9999"], ["--min-psnr-fg", "99"]])
def test_unreachable_gate_refuses_and_writes_nothing(fixture_path, tmp_path, gate):
    out = tmp_path / "out"
    out.mkdir()
    p = medsr("archive", fixture_path("basic"), "-o", out / "a.medsr.h5", "--no-j2k", *gate)
    assert p.returncode == 7, p.stderr
    assert "quality gate not met" in p.stderr and "Traceback" not in p.stderr
    assert list(out.iterdir()) == []


def test_keep_below_threshold_writes_and_marks(fixture_path, tmp_path):
    arc = tmp_path / "a.medsr.h5"
    p = medsr("archive", fixture_path("basic"), "-o", arc, "--no-j2k", "--min-psnr", "99", "--keep-below-threshold", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["below_threshold"] is True
    info = json.loads(medsr("info", arc, "--json").stdout)
    assert info["below_threshold"] is True


def test_reachable_gate_passes(fixture_path, tmp_path):
    p = medsr("archive", fixture_path("basic"), "-o", tmp_path / "a.medsr.h5", "--no-j2k", "--min-psnr", "10", "--json")
    assert p.returncode == 0, p.stderr


@pytest.fixture(scope="module")
def archived(fixture_path, tmp_path_factory):
    d = tmp_path_factory.mktemp("rep")
    arc = d / "a.medsr.h5"
    p = medsr("archive", fixture_path("large_256"), "-o", arc, "--json")
    assert p.returncode == 0, p.stderr
    return arc, json.loads(p.stdout)


def test_audit_report_with_reference_is_one_self_contained_file(archived, fixture_path, tmp_path):
    arc, summary = archived
    p = medsr("audit", arc, "-o", tmp_path / "r", "--reference", fixture_path("large_256"), "--json")
    assert p.returncode == 0, p.stderr
    html = (tmp_path / "r" / "report.html").read_text()
    assert html.count("data:image/png;base64") >= 4  # plot + three slice panels
    for bad in ("http://", "https://", "<script", "<link"):
        assert bad not in html
    data = json.loads((tmp_path / "r" / "report.json").read_text())
    assert set(data["methods"]) == {"restored", "bicubic", "jpeg2000"}
    # the reference re-measure agrees with the archive-time audit
    assert abs(data["methods"]["restored"]["psnr"] - summary["psnr"]) < 0.05
    # the bicubic baseline is bicubic: within 0.5 dB of an independent one (skimage cubic, exact block means)
    from skimage.transform import resize

    from independent import block_means, original_and_restored, series_psnr

    restored = restore_archive(arc, tmp_path / "restored")
    o, _ = original_and_restored(fixture_path("large_256"), restored.files)
    bic = np.stack([resize(s, o.shape[1:], order=3, mode="edge", anti_aliasing=False) for s in block_means(o)])
    assert data["methods"]["bicubic"]["psnr"] == pytest.approx(series_psnr(o, bic), abs=0.5)


def test_audit_report_without_reference_uses_the_stored_audit(archived, tmp_path):
    arc, summary = archived
    p = medsr("audit", arc, "-o", tmp_path / "r")
    assert p.returncode == 0, p.stderr
    data = json.loads((tmp_path / "r" / "report.json").read_text())
    assert abs(data["methods"]["restored"]["psnr"] - summary["psnr"]) < 1e-3  # summary rounds to 4 decimals
    assert data["ratios"]["file"] == pytest.approx(summary["ratio"], rel=1e-3)


def test_restore_with_reference_reports_metrics(archived, fixture_path, tmp_path):
    arc, summary = archived
    p = medsr("restore", arc, "-o", tmp_path / "out", "--reference", fixture_path("large_256"), "--json")
    assert p.returncode == 0, p.stderr
    a = json.loads(p.stdout)["audit"]
    assert abs(a["psnr"] - summary["psnr"]) < 0.05
    assert "psnr_bicubic" in a and "psnr_j2k" in a
    # and both agree with a measure of the written files that does not use medsr (docs/audit.md)
    from independent import original_and_restored, series_psnr

    o, r = original_and_restored(fixture_path("large_256"), sorted((tmp_path / "out").glob("*.dcm")))
    assert series_psnr(o, r) == pytest.approx(a["psnr"], abs=0.01)
    assert series_psnr(o, r, foreground=True) == pytest.approx(a["psnr_fg"], abs=0.01)


def test_phi_appears_in_report_only_with_include_phi(archived, tmp_path):
    from dicom_fixtures import PATIENT_ID, PATIENT_NAME

    arc, _ = archived
    medsr("audit", arc, "-o", tmp_path / "plain")
    medsr("audit", arc, "-o", tmp_path / "phi", "--include-phi")
    plain = (tmp_path / "plain" / "report.html").read_text() + (tmp_path / "plain" / "report.json").read_text()
    phi = (tmp_path / "phi" / "report.html").read_text()
    assert PATIENT_ID not in plain and str(PATIENT_NAME) not in plain
    assert PATIENT_ID in phi
