"""The skip policy of tests/skip_policy.py: a user's run skips with reasons, CI's strict run fails.

Each test runs a small pytest session (pytester) with the policy plugin and reads its outcome.
"""
from __future__ import annotations

import pytest

from skip_policy import STRICT_ENV

SUITE = {
    "test_needs_data": """
        import pytest
        def test_real_series():
            pytest.skip("real MR data not available: ../shared/data does not exist")
        def test_runs():
            assert 1 + 1 == 2
    """,
    "test_needs_cuda": """
        import pytest
        @pytest.mark.gpu
        def test_cuda():
            pytest.skip("needs a CUDA GPU")
        @pytest.mark.skipif(True, reason="dciodvfy (Debian package dicom3tools) is not installed")
        def test_tool():
            pass
    """,
    "test_fixture_skips": """
        import pytest
        @pytest.fixture
        def orthanc():
            pytest.skip("needs Debian's orthanc")
        def test_plugin(orthanc):
            pass
        @pytest.mark.xfail(reason="known")
        def test_known_bug():
            assert False
    """,
}


MODULE_SKIP = """
    import pytest
    pytest.importorskip("medsr_no_such_package_anywhere")
    def test_never_collected():
        pass
"""
REASONS = ("real MR data not available", "dicom3tools", "needs Debian's orthanc")


def _run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, strict: str | None, files=SUITE):
    if strict is None:
        monkeypatch.delenv(STRICT_ENV, raising=False)
    else:
        monkeypatch.setenv(STRICT_ENV, strict)
    pytester.makeini("[pytest]\nmarkers =\n    gpu: needs CUDA\n")
    pytester.makepyfile(**files)
    return pytester.runpytest_inprocess("-p", "skip_policy", "-ra")


def test_on_a_users_machine_missing_things_skip_with_their_reason(pytester, monkeypatch):
    result = _run(pytester, monkeypatch, None, {**SUITE, "test_module_needs_a_package": MODULE_SKIP})
    result.assert_outcomes(passed=1, skipped=5, xfailed=1)
    assert result.ret == pytest.ExitCode.OK
    out = result.stdout.str()
    for reason in (*REASONS, "medsr_no_such_package_anywhere", "needs a CUDA GPU"):
        assert "SKIPPED [1]" in out and reason in out, reason


@pytest.mark.parametrize("value", ["1", "true"])
def test_in_strict_mode_every_skip_but_a_gpu_test_is_a_failure_naming_the_reason(pytester, monkeypatch, value):
    result = _run(pytester, monkeypatch, value)
    # a skipif mark or a fixture that skips fails in the setup phase: pytest counts those as errors
    result.assert_outcomes(passed=1, failed=1, errors=2, skipped=1, xfailed=1)  # xfail is not a skip
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    out = result.stdout.str()
    for reason in REASONS:
        assert any(f"{STRICT_ENV}=1: a skip is a failure here" in line and reason in line
                   for line in out.splitlines()), reason
    result.stdout.fnmatch_lines(["SKIPPED*needs a CUDA GPU*"])


def test_in_strict_mode_a_module_skipped_at_collection_is_an_error(pytester, monkeypatch):
    result = _run(pytester, monkeypatch, "1", {"test_module_needs_a_package": MODULE_SKIP})
    result.assert_outcomes(errors=1)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines([f"*{STRICT_ENV}=1: a skip is a failure here*medsr_no_such_package_anywhere*"])


@pytest.mark.parametrize("value", ["", "0", "false"])
def test_strict_mode_is_off_unless_asked_for(pytester, monkeypatch, value):
    result = _run(pytester, monkeypatch, value)
    result.assert_outcomes(passed=1, skipped=4, xfailed=1)
    assert result.ret == pytest.ExitCode.OK
