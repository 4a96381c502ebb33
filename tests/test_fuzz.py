"""A small sample of the fuzzer (``pipelines/fuzz.py``) in CI, and the fuzzer's own classifier.

The benchmark-size run (``python -m pipelines.fuzz --cases 10000``) and its figures are in
docs/guarantees.md. Here: 200 cases, seed 1 (the benchmark used seed 0), every one must end
``ok`` or with a clean ``MedsrError`` (no crash, hang, partial output, inconsistency or PHI).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines import fuzz  # noqa: E402

CI_CASES = 200


def test_fuzz_sample_finds_no_bug():
    s = fuzz.run_fuzz(CI_CASES, seed=1, workers=2, timeout=120)
    report = fuzz._report(s)
    print(report)
    assert s["cases"] == CI_CASES
    assert s["by_kind"]["dicom"] > 50 and s["by_kind"]["archive"] > 30
    # every storage mode meets mutated input: DICOM series archived with each, archives of each kind mutated
    assert all(s["by_mode"][m] > 5 for m in fuzz.MODES), s["by_mode"]
    assert {"u16-lossy", "u16-floor", "u16-model"} <= set(s["by_archive"]), s["by_archive"]
    assert s["counts"]["ok"] > 20 and s["counts"]["error"] > 20  # both paths are exercised
    assert s["passed"], report


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return fuzz.build_corpus(tmp_path_factory.mktemp("fuzz_corpus"))


def _case(corpus, folder, kind="dicom"):
    for i in range(200):
        c = fuzz.build_case(0, i, corpus, folder / str(i))
        if c["kind"] == kind and c["families"] == ["none"] or (kind == "archive" and c["kind"] == kind):
            return c, folder / str(i)
    raise AssertionError("no case of that kind")


def test_classifier_ok_on_an_unmodified_series(corpus, tmp_path):
    case, folder = _case(corpus, tmp_path)
    assert fuzz.run_case(case, folder, fuzz._phi_markers()) == ("ok", "")


@pytest.mark.parametrize("fault,outcome", [("exception", "crash"), ("temp", "partial"), ("phi", "leak"),
                                           ("memory", "crash")])
def test_classifier_flags_bugs(corpus, tmp_path, monkeypatch, fault, outcome):
    import medsr
    from medsr.errors import InputError

    case, folder = _case(corpus, tmp_path)
    real = medsr.archive_series

    def broken(src, out, opts):
        if fault == "exception":
            raise ValueError("boom")
        if fault == "temp":
            (Path(out).parent / ".medsr-tmp-left").write_bytes(b"x")
            raise InputError("bad input", path=src)
        if fault == "phi":
            raise InputError("bad value FIXTURE^PATIENT", path=src)
        raise InputError("damaged (MemoryError: Unable to allocate 20 GiB)", path=src)

    monkeypatch.setattr(medsr, "archive_series", broken)
    got, detail = fuzz.run_case(case, folder, fuzz._phi_markers())
    assert got == outcome, detail
    monkeypatch.setattr(medsr, "archive_series", real)


def test_a_case_is_reproducible(corpus, tmp_path):
    a = fuzz.build_case(7, 123, corpus, tmp_path / "a")
    b = fuzz.build_case(7, 123, corpus, tmp_path / "b")
    assert a["mutations"] == b["mutations"] and a["families"] == b["families"]
    files = lambda root: {p.relative_to(root): p.read_bytes() for p in Path(root).rglob("*") if p.is_file()}
    assert files(Path(a["input"]).parent) .keys() == files(Path(b["input"]).parent).keys()
    assert json.dumps(a["mutations"]) == json.dumps(b["mutations"])


@pytest.mark.parametrize("index", [667, 886])
def test_a_sop_instance_uid_with_a_foreign_vr_is_a_clean_error(corpus, tmp_path, index):
    """The 10,000-case run (seed 0) found two crashes: SOP Instance UID encoded as US (odd length)
    and as 'XX', read by the duplicate-instance check before the VR check. Now one line naming it."""
    case = fuzz.build_case(0, index, corpus, tmp_path / str(index))
    outcome, detail = fuzz.run_case(case, tmp_path / str(index), fuzz._phi_markers())
    assert outcome == "error" and "(0008,0018)" in detail and "not standard" in detail
