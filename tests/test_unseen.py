"""The default model on real MR it never trained on, and the fetch that brings it.

The shipped models trained on two T1 brain subjects (Siemens 3 T sag-anon, Colin27). The sets of
``dicom_fixtures.unseen`` are other subjects, scanners, field strengths and contrasts, fetched from
pinned registry packages, in two roles (docs/evaluation.md): the *evaluation* sets were never used
to choose anything (the only ones called unseen); the two pydicom-data *validation* slices were
watched during training and used to choose, so they are tested here as validation. Figures come
from medsr's own audit (docs/audit.md), archive defaults.
"""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from dicom_fixtures import unseen
from dicom_fixtures.unseen import EVALUATION_SETS, SETS, VALIDATION_SETS, FetchError, NpmTarball, UnseenSet, fetch


def _audit(series: Path, tmp_path: Path) -> dict:
    import medsr

    res = medsr.archive_series(series, tmp_path / f"{series.name}.medsr.h5", medsr.ArchiveOptions(baselines=False))
    assert res.info.model_id.startswith("medsr-srresnet-x4@")
    return res.audit["methods"]


def test_every_registry_set_has_exactly_one_role():
    assert sorted(EVALUATION_SETS + VALIDATION_SETS) == sorted(SETS)
    assert not set(EVALUATION_SETS) & set(VALIDATION_SETS)


def test_default_model_gains_2_5_db_over_bicubic_on_the_unseen_1_5t_pd_brain(unseen_data, tmp_path):
    """Evaluation set: GE 1.5 T proton-density FSE, 20 x 256^2: subject, scanner, field strength and
    contrast all unseen."""
    m = _audit(unseen_data("pd-brain-ge-1.5t"), tmp_path)
    gain = m["restored"]["psnr_fg"] - m["bicubic"]["psnr_fg"]
    assert gain >= 2.5, f"foreground PSNR gain over bicubic {gain:.2f} dB"
    assert m["restored"]["ssim"] > m["bicubic"]["ssim"]


@pytest.mark.parametrize("name", [n for n in EVALUATION_SETS if n != "pd-brain-ge-1.5t"])
def test_default_model_beats_bicubic_on_every_other_evaluation_set(unseen_data, tmp_path, name):
    """Above bicubic in foreground PSNR and SSIM on the unseen FLAIR and MEMPRAGE slices."""
    m = _audit(unseen_data(name), tmp_path)
    assert m["restored"]["psnr_fg"] > m["bicubic"]["psnr_fg"]
    assert m["restored"]["ssim"] > m["bicubic"]["ssim"]


@pytest.mark.parametrize("name", VALIDATION_SETS)
def test_default_model_beats_bicubic_on_the_validation_slices(unseen_data, tmp_path, name):
    """Validation (watched during training, not unseen): a regression here is still a regression."""
    m = _audit(unseen_data(name), tmp_path)
    assert m["restored"]["psnr_fg"] > m["bicubic"]["psnr_fg"]
    assert m["restored"]["ssim"] > m["bicubic"]["ssim"]


# -- the fetch -------------------------------------------------------------------------------


def _tgz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, blob in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tf.addfile(info, io.BytesIO(blob))
    return buf.getvalue()


def _integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


@pytest.fixture
def fake_set(monkeypatch):
    """One set served from an in-memory tarball whose integrity is pinned like the real ones."""
    data = _tgz({"package/a.dcm": b"first", "package/b.dcm": b"second", "package/other.txt": b"x"})
    pkg = NpmTarball("fake-pkg", "1.0.0", _integrity(data), "MIT")
    s = UnseenSet("fake", "a fake set", pkg, ("package/a.dcm", "package/b.dcm"))
    monkeypatch.setattr(unseen, "SETS", {"fake": s})
    calls = []

    def download(tarball):
        calls.append(tarball.url)
        return data

    return s, download, calls


def test_fetch_writes_the_pinned_members_with_their_source(fake_set, tmp_path):
    s, download, calls = fake_set
    got = fetch(tmp_path, ["fake"], downloader=download)
    folder = got["fake"]
    assert sorted(p.name for p in folder.iterdir()) == ["a.dcm", "b.dcm"]  # the series only
    assert (folder / "a.dcm").read_bytes() == b"first"
    assert s.source.integrity in unseen.source_file(tmp_path, "fake").read_text()
    # present sets are kept, not fetched again
    fetch(tmp_path, ["fake"], downloader=download)
    assert len(calls) == 1


def test_fetch_refuses_a_package_that_does_not_match_its_pinned_sha512(fake_set, tmp_path):
    _, _, _ = fake_set
    with pytest.raises(FetchError, match="sha512 mismatch"):
        fetch(tmp_path / "out", ["fake"], downloader=lambda t: _tgz({"package/a.dcm": b"tampered"}))
    assert not (tmp_path / "out" / "fake").exists()


def test_fetch_writes_nothing_when_a_member_is_missing(monkeypatch, tmp_path):
    data = _tgz({"package/a.dcm": b"only one"})
    s = UnseenSet("fake", "a fake set", NpmTarball("fake-pkg", "1.0.0", _integrity(data), "MIT"),
                  ("package/a.dcm", "package/gone.dcm"))
    monkeypatch.setattr(unseen, "SETS", {"fake": s})
    with pytest.raises(FetchError, match="gone.dcm"):
        fetch(tmp_path, ["fake"], downloader=lambda t: data)
    assert list(tmp_path.iterdir()) == []


def test_unknown_set_names_are_refused(tmp_path):
    with pytest.raises(FetchError, match="unknown set"):
        fetch(tmp_path, ["no-such-set"])
