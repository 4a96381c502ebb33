"""Opening a DIMSE association: a PACS that refuses and closes at once can reset the connection before its
A-ASSOCIATE-RJ is read, which pynetdicom reports as an abort (CI met it with Orthanc on a loaded machine).
An abort from a reachable node is retried, so the user reads the refusal and what to check."""
from __future__ import annotations

import pytest

from medsr.pacs import dimse
from medsr.pacs.transport import TransportError, TransportRefused

NODE = dimse.DimseNode("NOT-ORTHANC", "127.0.0.1", 4242)


class _Assoc:
    def __init__(self, outcome):
        self.is_established = outcome == "ok"
        self.is_rejected = outcome == "rejected"
        self.is_aborted = outcome == "aborted"


class _AE:
    ae_title = "MEDSR"
    connection_timeout = 5.0

    def __init__(self, *outcomes):
        self.outcomes = list(outcomes)
        self.calls = 0

    def associate(self, host, port, ae_title, **kw):
        self.calls += 1
        return _Assoc(self.outcomes.pop(0))


@pytest.fixture(autouse=True)
def _fast(monkeypatch):
    monkeypatch.setattr(dimse.time, "sleep", lambda s: None)
    monkeypatch.setattr(dimse, "_reachable", lambda node, timeout: True)


def test_an_abort_followed_by_the_refusal_is_reported_as_the_refusal():
    ae = _AE("aborted", "rejected")
    with pytest.raises(TransportRefused, match="rejected the association .*called AE title 'NOT-ORTHANC'"):
        dimse._associate(ae, NODE, "C-STORE of 12 instances")
    assert ae.calls == 2


def test_an_abort_then_a_success_associates():
    ae = _AE("aborted", "ok")
    assert dimse._associate(ae, NODE, "C-FIND").is_established and ae.calls == 2


def test_aborts_every_time_say_so_with_the_titles_to_check():
    ae = _AE(*["aborted"] * (1 + dimse.ABORT_RETRIES))
    with pytest.raises(TransportError, match=r"aborted the association \(3 tries; check that the called AE title "
                                             r"'NOT-ORTHANC' and calling AE title 'MEDSR'") as e:
        dimse._associate(ae, NODE, "C-FIND")
    assert not isinstance(e.value, TransportRefused) and ae.calls == 1 + dimse.ABORT_RETRIES


def test_an_unreachable_node_is_not_retried(monkeypatch):
    monkeypatch.setattr(dimse, "_reachable", lambda node, timeout: False)
    ae = _AE("aborted")
    with pytest.raises(TransportError, match="cannot reach dimse://NOT-ORTHANC@127.0.0.1:4242"):
        dimse._associate(ae, NODE, "C-FIND")
    assert ae.calls == 1


def test_a_refusal_is_not_retried():
    ae = _AE("rejected")
    with pytest.raises(TransportRefused):
        dimse._associate(ae, NODE, "C-FIND")
    assert ae.calls == 1
