"""Skip policy: friendly on a user's machine, strict in CI.

Without ``MEDSR_STRICT_TESTS`` a test that needs something absent (``../shared/data``, a Debian
tool, a kernel capability, the network) skips with its reason, as pytest always does.

With ``MEDSR_STRICT_TESTS=1`` (``.ci/run`` sets it) a skip is reported as a **failure** naming the
reason, whether it happens in a test, in a fixture or while collecting a module
(``pytest.importorskip``). Only tests marked ``gpu`` may still skip: CI machines have no GPU,
and those tests run in ``pipelines/gpu_check.sh`` on a machine that has one. So CI cannot go
green by losing a suite.
"""
from __future__ import annotations

import os

import pytest

STRICT_ENV = "MEDSR_STRICT_TESTS"
#: tests carrying one of these markers may skip even in strict mode
MAY_SKIP_MARKERS = ("gpu",)


def strict_mode() -> bool:
    """True when ``MEDSR_STRICT_TESTS`` is set to anything but ``""``/``0``/``false``/``no``."""
    return os.environ.get(STRICT_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _reason(longrepr) -> str:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # (path, line, "Skipped: reason")
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _strict_message(reason: str) -> str:
    return (f"{STRICT_ENV}=1: a skip is a failure here (only tests marked "
            f"{' or '.join(MAY_SKIP_MARKERS)} may skip); install what it needs: {reason}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    outcome = yield
    report = outcome.get_result()
    if not (report.skipped and strict_mode()) or hasattr(report, "wasxfail"):
        return
    if any(item.get_closest_marker(m) is not None for m in MAY_SKIP_MARKERS):
        return
    report.outcome = "failed"
    report.longrepr = _strict_message(_reason(report.longrepr))


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and strict_mode():  # a whole module skipped (e.g. pytest.importorskip)
        report.outcome = "failed"
        report.longrepr = _strict_message(_reason(report.longrepr))
