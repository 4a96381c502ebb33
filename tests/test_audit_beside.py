"""The JPEG 2000 baseline coded beside the audit (medsr.audit.beside): same audit on a process or a thread,
children only where they are safe, and a failed child never loses the baseline."""
import multiprocessing
import os

import numpy as np
import pytest

import medsr
from medsr.audit import beside


def _audit(series, out, monkeypatch, mode: str) -> dict:
    monkeypatch.setenv("MEDSR_AUDIT_PROCESS", mode)
    res = medsr.archive_series(series, out, medsr.ArchiveOptions(method="bicubic"))
    return res.audit.to_dict()


def _strip(d: dict) -> dict:
    prov = {k: v for k, v in d["provenance"].items() if k != "measured"}
    return {**d, "provenance": prov}


def test_process_and_thread_give_the_same_audit(fixture_path, tmp_path, monkeypatch):
    series = fixture_path("basic")
    calls = []
    real = beside.Beside.submit

    def spy(self, fn, *a, **kw):
        fut = real(self, fn, *a, **kw)
        calls.append(self.kind)
        return fut

    monkeypatch.setattr(beside.Beside, "submit", spy)
    on_process = _audit(series, tmp_path / "p.medsr.h5", monkeypatch, "1")
    on_thread = _audit(series, tmp_path / "t.medsr.h5", monkeypatch, "0")
    assert calls == ["process", "thread"]  # the child really ran, then the thread
    assert _strip(on_process) == _strip(on_thread)
    assert on_process["provenance"]["jpeg2000_bytes"] > 0


def test_children_only_where_safe(monkeypatch):
    monkeypatch.delenv("MEDSR_AUDIT_PROCESS", raising=False)
    big = beside.PROCESS_MIN_PIXELS
    monkeypatch.setattr(beside, "_cpus", lambda: 2)
    beside.allow_processes(False)
    try:
        assert not beside.process_allowed(big)  # a library call: the caller's main module may be unguarded
        beside.allow_processes()
        assert beside.process_allowed(big)  # the CLI allowed it
        assert not beside.process_allowed(big - 1)  # too small to pay for an interpreter
        monkeypatch.setattr(beside, "_cpus", lambda: 1)
        assert not beside.process_allowed(big)  # no second core to overlap on
        monkeypatch.setattr(beside, "_cpus", lambda: 2)
        monkeypatch.setattr(multiprocessing.current_process(), "_config",
                            {**multiprocessing.current_process()._config, "daemon": True})
        assert not beside.process_allowed(big)  # a daemonic pool worker may not have children
        monkeypatch.undo()
        monkeypatch.setattr(beside, "_cpus", lambda: 2)
        monkeypatch.setattr(beside.sys, "executable", "/usr/sbin/Orthanc")
        assert not beside.process_allowed(big)  # embedded: sys.executable is not an interpreter
        monkeypatch.setenv("MEDSR_AUDIT_PROCESS", "0")
        monkeypatch.setattr(beside.sys, "executable", "/usr/bin/python3")
        assert not beside.process_allowed(big)  # switched off
    finally:
        beside.allow_processes(False)


def _dies_in_a_child(x):
    if multiprocessing.parent_process() is not None:
        os._exit(3)  # the child process dies without a word
    return x * 2


def test_a_dead_child_falls_back_to_coding_here(monkeypatch):
    monkeypatch.setenv("MEDSR_AUDIT_PROCESS", "1")
    with beside.Beside(beside.PROCESS_MIN_PIXELS) as b:
        fut = b.submit(_dies_in_a_child, 21)
        assert b.kind == "process"
        assert fut.result() == 42
        later = b.submit(_dies_in_a_child, 4)  # the child is gone: what is sent next is coded on a thread
        assert later.result() == 8 and b.kind == "thread"


def test_every_batch_goes_to_the_same_one_child_in_order(monkeypatch):
    monkeypatch.setenv("MEDSR_AUDIT_PROCESS", "1")
    with beside.Beside(beside.PROCESS_MIN_PIXELS) as b:
        futs = [b.submit(os.getpid) for _ in range(3)]
        assert b.kind == "process"
        pids = {f.result() for f in futs}
    assert len(pids) == 1 and os.getpid() not in pids


def test_errors_of_the_coder_itself_come_through(monkeypatch):
    monkeypatch.setenv("MEDSR_AUDIT_PROCESS", "1")
    from medsr.audit import jpeg2000_baseline

    with beside.Beside(beside.PROCESS_MIN_PIXELS) as b:
        fut = b.submit(jpeg2000_baseline, np.zeros((1, 8, 8), np.float32), 12, 10.0)
        with pytest.raises(ValueError, match="integer"):
            fut.result()


class _CountingBeside:
    """A stand-in for ``Beside`` that codes on the spot and records which batches were sent."""

    def __init__(self):
        self.sent = []

    def submit(self, fn, *args):
        from concurrent.futures import Future

        self.sent.append(len(self.sent))
        f = Future()
        f.set_result(fn(*args))
        return f


def _stack_series(n=37, size=32):
    from types import SimpleNamespace

    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 4096, (n, size, size), dtype=np.uint16)
    return SimpleNamespace(pixels=pixels, bits_stored=12, shape=(size, size))


def test_the_baseline_coded_batch_by_batch_is_the_whole_stacks_first_try():
    from medsr.audit.baselines import decode_codestreams, encode_slices, first_ratio
    from medsr.flow.audit import _J2KFirstTry

    s = _stack_series()
    first = _J2KFirstTry(_CountingBeside(), s, 40.0, 8)
    whole = encode_slices(s.pixels, 12, first_ratio(s.pixels, 12, 40.0))
    for k in range(0, s.pixels.shape[0], 8):
        np.testing.assert_array_equal(first.decoded(slice(k, k + 8)),
                                      decode_codestreams(whole[k:k + 8], s.shape, s.pixels.dtype))
    assert first.codestreams() == whole
    np.testing.assert_array_equal(first.decoded(slice(None)), decode_codestreams(whole, s.shape, s.pixels.dtype))
