"""DIMSE transport (``pynetdicom``): C-FIND + C-GET (or C-MOVE to medsr's own storage SCP), C-STORE.

Addresses::

    dimse://AET@host:port                              a node (restore --to: C-STORE)
    dimse://AET@host:port/<StudyUID>/<SeriesUID>       one series (archive SERIES)
    dimse://AET@host:port/<SeriesUID>                  one series; its study is found by C-FIND

``AET`` is the PACS's (called) AE title; medsr's own (calling) AE title is
:attr:`DimseOptions.calling_aet`. C-FIND at SERIES level checks that the series exists and
is MR, C-FIND at IMAGE level lists its instances, then C-GET (default) or C-MOVE
(``move_port``: medsr listens there on loopback, and the PACS must know ``calling_aet`` at
that address) brings every instance; each is written as received (``event.encoded_dataset``,
no decoding) with its sha256. A transfer that delivers fewer instances than C-FIND listed
fails with one line, and nothing is archived. Association problems (unreachable, rejected
AE title, timeouts) are one-line :class:`TransportError` s.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..errors import InputError, SeriesError
from .transport import (FetchedInstances, NotASeries, TransportError, TransportRefused, TransportRejected, check_uid,
                        write_private)

log = logging.getLogger("medsr")

_AET_RE = re.compile(r"^[A-Za-z0-9 _.+-]{1,16}$")
_NODE_RE = re.compile(r"^dimse://(?P<aet>[^@/]{1,16})@(?P<host>\[[0-9A-Fa-f:]+\]|[A-Za-z0-9.-]{1,253}):(?P<port>[0-9]{1,5})"
                      r"(?P<path>(?:/[^/]+){0,2})/?$", re.IGNORECASE)
#: the image storage classes medsr asks for in C-GET (MR; the modality check refuses anything else first)
_STORAGE_CLASSES = ("MRImageStorage", "EnhancedMRImageStorage", "LegacyConvertedEnhancedMRImageStorage")


@dataclass(frozen=True)
class DimseOptions:
    """medsr's side of an association: its AE title, timeouts (s), and C-MOVE port (None: C-GET)."""

    calling_aet: str = "MEDSR"
    timeout: float = 60.0
    move_port: int | None = None

    def __post_init__(self):
        if not _AET_RE.match(self.calling_aet or "") or self.calling_aet.strip() != self.calling_aet:
            raise InputError(f"calling AE title {self.calling_aet[:20]!r} must be 1-16 letters, digits, space . _ + -")
        if not self.timeout > 0:
            raise InputError("the DIMSE timeout must be positive")
        if self.move_port is not None and not 1 <= int(self.move_port) <= 65535:
            raise InputError(f"--dimse-port must be 1..65535, not {self.move_port}")


@dataclass(frozen=True)
class DimseNode:
    aet: str
    host: str
    port: int

    @property
    def shown(self) -> str:
        return f"dimse://{self.aet}@{self.host}:{self.port}"


@dataclass(frozen=True)
class DimseSeriesRef:
    node: DimseNode
    series_uid: str
    study_uid: str = ""

    @property
    def shown(self) -> str:
        return f"{self.node.shown}/{self.study_uid + '/' if self.study_uid else ''}{self.series_uid}"


def _parse(address: str):
    m = _NODE_RE.match(str(address))
    if m is None:
        raise InputError(f"not a DIMSE address (expected dimse://AET@host:port[/<StudyUID>]/<SeriesUID>): "
                         f"{str(address)[:100]!r}")
    aet, port = m["aet"], int(m["port"])
    if not _AET_RE.match(aet) or aet.strip() != aet:
        raise InputError(f"AE title {aet!r} must be 1-16 letters, digits, space . _ + -")
    if not 1 <= port <= 65535:
        raise InputError(f"port {port} is not 1..65535")
    path = [p for p in m["path"].split("/") if p]
    return DimseNode(aet=aet, host=m["host"].strip("[]"), port=port), path


def parse_dimse_node(address: str) -> DimseNode:
    node, path = _parse(address)
    if path:
        raise InputError(f"--to takes a DIMSE node dimse://AET@host:port without a series: {address[:100]!r}")
    return node


def parse_dimse_series(address: str) -> DimseSeriesRef:
    node, path = _parse(address)
    if not path:
        raise NotASeries(f"{node.shown} names no series (append /<StudyUID>/<SeriesUID>)")
    uids = [check_uid(p, "UID") for p in path]
    return DimseSeriesRef(node=node, series_uid=uids[-1], study_uid=uids[0] if len(uids) == 2 else "")


# --------------------------------------------------------------------------- associations

def _quiet_pynetdicom() -> None:
    """pynetdicom logs every association event; our errors say it in one line (shown with --debug)."""
    logging.getLogger("pynetdicom").setLevel(logging.DEBUG if log.isEnabledFor(logging.DEBUG) else logging.CRITICAL)


def _ae(opts: DimseOptions):
    from pynetdicom import AE

    _quiet_pynetdicom()
    ae = AE(ae_title=opts.calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = opts.timeout
    return ae


ABORT_RETRIES = 2  # a refusal can arrive as an abort: see _associate


def _associate(ae, node: DimseNode, what: str, **kw):
    for attempt in range(1 + ABORT_RETRIES):
        assoc = ae.associate(node.host, node.port, ae_title=node.aet, **kw)
        # a PACS that refuses (A-ASSOCIATE-RJ) and closes at once can reset the connection before the
        # refusal is read (seen with Orthanc on a loaded machine): pynetdicom then reports an abort. An abort
        # from a reachable node is retried, so a refusal is reported as one
        if not (assoc.is_aborted and attempt < ABORT_RETRIES and _reachable(node, ae.connection_timeout)):
            break
        log.debug("%s: %s aborted the association; retrying (%d)", what, node.shown, attempt + 1)
        time.sleep(0.2 * (attempt + 1))
    if assoc.is_established:
        return assoc
    if assoc.is_rejected:
        raise TransportRefused(f"{what}: {node.shown} rejected the association (called AE title {node.aet!r}, "
                               f"calling AE title {ae.ae_title!r}: check both are configured on the PACS)")
    # pynetdicom also says aborted when the TCP connection failed: only a reachable node aborted
    if assoc.is_aborted and _reachable(node, ae.connection_timeout):
        raise TransportError(f"{what}: {node.shown} aborted the association ({1 + ABORT_RETRIES} tries; check "
                             f"that the called AE title {node.aet!r} and calling AE title {ae.ae_title!r} are "
                             "configured on the PACS)")
    raise TransportError(f"{what}: cannot reach {node.shown} (no association within {ae.connection_timeout:g} s)")


def _reachable(node: DimseNode, timeout: float) -> bool:
    import socket

    try:
        socket.create_connection((node.host, node.port), timeout=min(timeout, 10.0)).close()
        return True
    except OSError:
        return False


def _status(ds) -> int:
    return int(getattr(ds, "Status", -1)) if ds is not None else -1


def _find(ae, node: DimseNode, query, what: str) -> list:
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = _associate(ae, node, what)
    out = []
    try:
        for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
            code = _status(status)
            if code in (0xFF00, 0xFF01):
                out.append(identifier)
            elif code != 0x0000:
                raise TransportError(f"{what}: {node.shown} answered C-FIND status "
                                     f"{'none (association lost or timed out)' if code < 0 else hex(code)}")
    finally:
        assoc.release()
    return out


def find_series(ref: DimseSeriesRef, opts: DimseOptions) -> tuple[str, str]:
    """C-FIND at SERIES level -> (StudyInstanceUID, Modality); NotASeries if the PACS has no such series."""
    from pydicom import Dataset

    q = Dataset()
    q.QueryRetrieveLevel = "SERIES"
    q.StudyInstanceUID = ref.study_uid or ""
    q.SeriesInstanceUID = ref.series_uid
    q.Modality = ""
    hits = [h for h in _find(_ae(opts), ref.node, q, f"C-FIND of series {ref.series_uid}")
            if h is not None and str(getattr(h, "SeriesInstanceUID", "")) == ref.series_uid]
    if not hits:
        raise NotASeries(f"{ref.node.shown} holds no series {ref.series_uid}"
                         + (f" in study {ref.study_uid}" if ref.study_uid else ""))
    return str(hits[0].StudyInstanceUID), str(getattr(hits[0], "Modality", ""))


def find_instances(ref: DimseSeriesRef, study_uid: str, opts: DimseOptions) -> list[str]:
    from pydicom import Dataset

    q = Dataset()
    q.QueryRetrieveLevel = "IMAGE"
    q.StudyInstanceUID, q.SeriesInstanceUID, q.SOPInstanceUID = study_uid, ref.series_uid, ""
    return sorted({check_uid(str(h.SOPInstanceUID), "SOP instance UID")
                   for h in _find(_ae(opts), ref.node, q, f"C-FIND of the instances of series {ref.series_uid}")
                   if h is not None and getattr(h, "SOPInstanceUID", None)})


class _Receiver:
    """EVT_C_STORE handler: write each received instance unchanged into ``folder`` (once per SOP UID)."""

    def __init__(self, folder: Path, expected: set[str]):
        self.folder, self.expected = folder, expected
        self.files: dict[str, tuple[Path, str, int]] = {}
        self.error = ""
        self.lock = threading.Lock()

    def __call__(self, event) -> int:
        try:
            sop = str(event.request.AffectedSOPInstanceUID)
            with self.lock:
                if sop not in self.expected or sop in self.files:
                    self.error = self.error or f"the PACS sent an unexpected instance {sop[:64]}"
                    return 0xA900  # dataset does not match SOP class (refused, not stored)
                data = event.encoded_dataset(include_meta=True)
                path, digest = write_private(self.folder, f"{check_uid(sop, 'SOP instance UID')}.dcm", data)
                self.files[sop] = (path, digest, len(data))
            return 0x0000
        except Exception as e:  # noqa: BLE001 - a refused sub-operation; reported after the transfer
            self.error = self.error or f"{type(e).__name__}: {str(e)[:120]}"
            return 0xA700  # out of resources


def _storage_contexts():
    from pydicom.uid import AllTransferSyntaxes
    from pynetdicom import build_context, build_role, sop_class

    contexts, roles = [], []
    for name in _STORAGE_CLASSES:
        uid = getattr(sop_class, name)
        contexts.append(build_context(uid, list(AllTransferSyntaxes)))
        roles.append(build_role(uid, scp_role=True))
    return contexts, roles


def _retrieve_status(responses, node: DimseNode, what: str) -> None:
    final = None
    for status, _identifier in responses:
        code = _status(status)
        if code < 0:
            raise TransportError(f"{what}: the association with {node.shown} was lost or timed out (transfer cut)")
        if code not in (0xFF00,):
            final = (code, status)
    if final is None:
        raise TransportError(f"{what}: {node.shown} sent no final status (transfer cut)")
    code, status = final
    if code != 0x0000:
        failed = int(getattr(status, "NumberOfFailedSuboperations", 0) or 0)
        raise TransportError(f"{what}: {node.shown} answered status {hex(code)}"
                             + (f" ({failed} sub-operations failed)" if failed else ""))


def fetch_dimse_series(ref: DimseSeriesRef, folder: Path, opts: DimseOptions, *,
                       allow_modalities: Iterable[str] | None = ("MR",)) -> FetchedInstances:
    """C-FIND, then C-GET (or C-MOVE) every instance of the series into ``folder`` (0700; files 0600)."""
    from pydicom import Dataset
    from pynetdicom import evt

    study_uid, modality = find_series(ref, opts)
    if allow_modalities is not None and modality.upper() not in {m.upper() for m in allow_modalities}:
        raise SeriesError(f"series {ref.series_uid} at {ref.node.shown} is {modality or 'of unknown modality'}, "
                          "not MR: not fetched")
    sops = find_instances(ref, study_uid, opts)
    if not sops:
        raise NotASeries(f"{ref.node.shown} lists no instances in series {ref.series_uid}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    receiver = _Receiver(folder, set(sops))
    q = Dataset()
    q.QueryRetrieveLevel = "SERIES"
    q.StudyInstanceUID, q.SeriesInstanceUID = study_uid, ref.series_uid
    ae = _ae(opts)
    handlers = [(evt.EVT_C_STORE, receiver)]
    if opts.move_port is None:
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet

        what = f"C-GET of series {ref.series_uid}"
        contexts, roles = _storage_contexts()
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        for cx in contexts:
            ae.add_requested_context(cx.abstract_syntax, cx.transfer_syntax)
        assoc = _associate(ae, ref.node, what, ext_neg=roles, evt_handlers=handlers)
        try:
            _retrieve_status(assoc.send_c_get(q, StudyRootQueryRetrieveInformationModelGet), ref.node, what)
        finally:
            assoc.release()
    else:
        from pydicom.uid import AllTransferSyntaxes
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove

        what = f"C-MOVE of series {ref.series_uid} to {opts.calling_aet}"
        for name in _STORAGE_CLASSES:
            from pynetdicom import sop_class

            ae.add_supported_context(getattr(sop_class, name), list(AllTransferSyntaxes))
        try:
            server = ae.start_server(("127.0.0.1", int(opts.move_port)), block=False, evt_handlers=handlers)
        except OSError as e:
            raise TransportError(f"{what}: cannot listen on port {opts.move_port} ({e.strerror})") from None
        try:
            ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
            assoc = _associate(ae, ref.node, what)
            try:
                _retrieve_status(assoc.send_c_move(q, opts.calling_aet, StudyRootQueryRetrieveInformationModelMove),
                                 ref.node, what)
            finally:
                assoc.release()
        finally:
            server.shutdown()
    if receiver.error:
        raise TransportError(f"{what}: {receiver.error}")
    if len(receiver.files) != len(sops):
        raise TransportError(f"{what}: received {len(receiver.files)} of {len(sops)} instances (transfer cut)")
    rows = [receiver.files[s] for s in sops]
    return FetchedInstances(folder=folder, study_uid=study_uid, series_uid=ref.series_uid,
                            files=tuple(r[0] for r in rows), sha256=tuple(r[1] for r in rows),
                            bytes=sum(r[2] for r in rows), modality=modality)


def store_files(node: DimseNode, files: Iterable[Path], opts: DimseOptions) -> dict:
    """C-STORE every file in one association; any non-success status -> :class:`TransportRejected`."""
    import pydicom

    datasets = [pydicom.dcmread(str(f)) for f in files]
    if not datasets:
        raise InputError("nothing to store")
    what = f"C-STORE of {len(datasets)} instances"
    ae = _ae(opts)
    for cls_uid, ts in sorted({(str(d.SOPClassUID), str(d.file_meta.TransferSyntaxUID)) for d in datasets}):
        ae.add_requested_context(cls_uid, [ts])
    assoc = _associate(ae, node, what)
    stored = 0
    try:
        for ds in datasets:
            code = _status(assoc.send_c_store(ds))
            if code < 0:
                raise TransportError(f"{what}: the association with {node.shown} was lost or timed out "
                                     f"after {stored} instances")
            if code != 0x0000 and not 0xB000 <= code <= 0xBFFF:
                raise TransportRejected(f"{what}: {node.shown} refused instance {ds.SOPInstanceUID} "
                                        f"(status {hex(code)}) after storing {stored}")
            stored += 1
    finally:
        assoc.release()
    return {"stored": stored, "target": node.shown, "study_uid": str(datasets[0].StudyInstanceUID)}


__all__ = ["DimseNode", "DimseOptions", "DimseSeriesRef", "fetch_dimse_series", "find_instances", "find_series",
           "parse_dimse_node", "parse_dimse_series", "store_files"]
