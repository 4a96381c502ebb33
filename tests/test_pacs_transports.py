"""Any PACS over the standard protocols, against Debian's real Orthanc (+ orthanc-dicomweb).

One Orthanc per module (HTTP basic authentication on, the DICOMweb plugin loaded, its DICOM
port open, medsr's AE title known) runs in a private network namespace holding only
loopback (tests/orthanc_util.py). A series travels as a DICOMweb URL
``http://127.0.0.1:P/dicom-web/studies/<StudyUID>/series/<SeriesUID>`` into ``medsr archive``
and back with ``medsr restore --to`` (STOW-RS); ``archive-batch --dicomweb`` selects series by
QIDO-RS. Skipped with a reason when orthanc, orthanc-python or orthanc-dicomweb is missing.
"""
from __future__ import annotations

import hashlib
import io
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

import medsr
from medsr import cli
from medsr.pacs import launcher
from orthanc_util import enter_private_netns, find_dicomweb_plugin, free_port, start_orthanc, stop, wait_for_http

requests = pytest.importorskip("requests")
pytest.importorskip("dicomweb_client")

ORTHANC, PLUGIN, DICOMWEB = launcher.find_orthanc(), launcher.find_python_plugin(), find_dicomweb_plugin()
USER, PASSWORD = "medsr", "pw-dicomweb-test"
pytestmark = [pytest.mark.orthanc, pytest.mark.skipif(
    ORTHANC is None or PLUGIN is None or DICOMWEB is None,
    reason="needs Debian's orthanc, orthanc-python and orthanc-dicomweb (make system-deps)")]


class _Pacs:
    def __init__(self, url: str, dicom_port: int, aet: str, auth_file: Path, isolated: bool):
        self.url, self.dicom_port, self.aet, self.auth_file, self.isolated = url, dicom_port, aet, auth_file, isolated
        self.dicomweb = url + "/dicom-web"
        self.http = requests.Session()
        self.http.trust_env = False  # no proxies for loopback
        self.http.auth = (USER, PASSWORD)

    def get(self, path, **kw):
        return self.http.get(self.url + path, timeout=60, **kw)

    def upload(self, folder: Path) -> dict[str, str]:
        """POST every file; -> {SeriesInstanceUID: Orthanc series id}."""
        out = {}
        for f in sorted(Path(folder).rglob("*.dcm")):
            r = self.http.post(self.url + "/instances", data=f.read_bytes(), timeout=60)
            assert r.status_code == 200, r.text
            sid = r.json()["ParentSeries"]
            out[self.get(f"/series/{sid}").json()["MainDicomTags"]["SeriesInstanceUID"]] = sid
        return out

    def series_url(self, study_uid: str, series_uid: str) -> str:
        return f"{self.dicomweb}/studies/{study_uid}/series/{series_uid}"

    def files(self, series_id: str) -> dict[str, bytes]:
        """Orthanc's stored files of a series: {instance id: bytes}."""
        return {i: self.get(f"/instances/{i}/file").content for i in self.get(f"/series/{series_id}").json()["Instances"]}

    def series_id_of(self, series_uid: str) -> str | None:
        r = self.http.post(self.url + "/tools/lookup", data=series_uid, timeout=60).json()
        ids = [x["ID"] for x in r if x["Type"] == "Series"]
        return ids[0] if ids else None


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    base = tmp_path_factory.mktemp("pacs")
    undo_netns = enter_private_netns()
    if undo_netns is None:
        pytest.skip("the DICOM port listens on every interface: these tests run only inside a private network "
                    "namespace (needs CAP_SYS_ADMIN)")
    proc = None
    try:
        http_port, dicom_port = free_port(), free_port()
        aet = "ORTHANC"
        extra = {"AuthenticationEnabled": True, "RegisteredUsers": {USER: PASSWORD},
                 "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
                 "DicomCheckCalledAet": True, "DicomAlwaysAllowStore": True, "DicomAlwaysAllowFind": True,
                 "DicomAlwaysAllowGet": True, "DicomAlwaysAllowMove": True,
                 "DicomModalities": {"medsr": ["MEDSR", "127.0.0.1", free_port()]}}
        auth_file = base / "auth"
        auth_file.write_text(f"{USER}:{PASSWORD}\n")
        auth_file.chmod(0o600)
        server = _Pacs(f"http://127.0.0.1:{http_port}", dicom_port, aet, auth_file, True)
        server.modality_port = extra["DicomModalities"]["medsr"][2]
        server.store = base / "store"

        def start():
            nonlocal proc
            proc, log = start_orthanc(base, http_port=http_port, dicom_port=dicom_port, extra=extra,
                                      plugins=[DICOMWEB], aet=aet)
            server.proc = proc
            try:
                wait_for_http(proc, server.http, server.dicomweb + "/studies", log)
            except RuntimeError as e:
                pytest.fail(str(e))

        server.start = start
        start()
        yield server
    finally:
        if proc is not None:
            stop(proc)
        undo_netns()


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    from dicom_fixtures import build_all

    return build_all(tmp_path_factory.mktemp("transport_cases"), ["basic", "two_series", "ct", "rescale", "large_256"])


def _uids(folder: Path) -> tuple[str, str]:
    import pydicom

    ds = pydicom.dcmread(next(iter(sorted(Path(folder).rglob("*.dcm")))), stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _archived_sha256(archive: Path) -> set[str]:
    from medsr.archive import read_archive

    return set(read_archive(archive).source_sha256)  # any archive format


def _run(argv, capsys) -> tuple[int, str, str]:
    rc = cli.main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def _no_temp_left(folder: Path) -> None:
    assert not [p for p in Path(folder).iterdir() if p.name.startswith(".medsr-tmp")], list(Path(folder).iterdir())


# --------------------------------------------------------------------------- DICOMweb: archive, restore by STOW-RS

@pytest.fixture(scope="module")
def basic_archive(pacs, cases, tmp_path_factory):
    """`medsr archive <DICOMweb series URL>`: the basic series, fetched as stored, archived."""
    series_id = pacs.upload(cases["basic"])[_uids(cases["basic"])[1]]
    out = tmp_path_factory.mktemp("dw_archive")
    archive = out / "basic.medsr.h5"
    rc = cli.main(["archive", pacs.series_url(*_uids(cases["basic"])), "-o", str(archive), "--method", "bicubic",
                   "--no-j2k", "--auth-file", str(pacs.auth_file), "--json", "--quiet"])
    assert rc == 0
    return archive, series_id, out


def test_dicomweb_archive_keeps_the_pacs_bytes(pacs, basic_archive):
    archive, series_id, out = basic_archive
    stored = pacs.files(series_id)
    assert len(stored) == 12
    assert _archived_sha256(archive) == {_sha(b) for b in stored.values()}  # byte for byte as the PACS holds them
    assert medsr.verify_archive(archive).ok and medsr.open_archive(archive).n_slices == 12
    assert pacs.get(f"/series/{series_id}").status_code == 200  # not asked to delete: still there
    _no_temp_left(out)  # the private fetch folder is gone


def test_dicomweb_restore_stores_a_derived_series_in_the_same_study(pacs, cases, basic_archive, tmp_path, capsys):
    archive, series_id, _ = basic_archive
    rc, out, err = _run(["restore", str(archive), "--to", pacs.dicomweb, "--auth-file", str(pacs.auth_file),
                         "--json", "--quiet"], capsys)
    assert rc == 0, err
    s = json.loads(out)
    assert s["stored"] == 12 and PASSWORD not in out + err
    new_id = pacs.series_id_of(s["series_instance_uid"])
    assert new_id and new_id != series_id
    new, old = pacs.get(f"/series/{new_id}").json(), pacs.get(f"/series/{series_id}").json()
    assert new["ParentStudy"] == old["ParentStudy"] and len(new["Instances"]) == 12  # same study, every slice

    import pydicom

    restored = [pydicom.dcmread(io.BytesIO(b)) for b in pacs.files(new_id).values()]
    originals = {str(ds.SOPInstanceUID): ds for ds in (pydicom.dcmread(io.BytesIO(b))
                                                       for b in pacs.files(series_id).values())}
    local = medsr.restore_archive(archive, tmp_path / "local")
    local_px = {str(ds.SourceImageSequence[0].ReferencedSOPInstanceUID): ds.pixel_array
                for ds in (pydicom.dcmread(f) for f in local.files)}
    for ds in restored:
        src = originals[str(ds.SourceImageSequence[0].ReferencedSOPInstanceUID)]  # links back to its original
        assert ds.ImageType[0] == "DERIVED" and ds.LossyImageCompression == "01"
        assert (ds.Rows, ds.Columns) == (src.Rows, src.Columns)
        assert ds.StudyInstanceUID == src.StudyInstanceUID and ds.SeriesInstanceUID != src.SeriesInstanceUID
        assert ds.SOPInstanceUID != src.SOPInstanceUID
        assert np.array_equal(ds.pixel_array, local_px[str(src.SOPInstanceUID)])  # what a local restore gives


def test_dicomweb_python_api_and_delete_refused_by_the_server(pacs, cases, tmp_path):
    """The Python API; Orthanc's DICOMweb has no DELETE, so --delete-original keeps the original and says so."""
    from medsr.pacs import Connection, archive_remote

    series_id = pacs.upload(cases["rescale"])[_uids(cases["rescale"])[1]]
    res = archive_remote(pacs.series_url(*_uids(cases["rescale"])), tmp_path / "r.medsr.h5",
                         medsr.ArchiveOptions(method="bicubic", baselines=False),
                         connection=Connection(auth_file=pacs.auth_file), delete_original=True)
    s = res.summary()
    assert s["fetched_instances"] == 12 and s["fetched_bytes"] == sum(map(len, pacs.files(series_id).values()))
    assert s["deleted_from_pacs"] is False and s["freed_bytes"] == 0
    assert pacs.get(f"/series/{series_id}").status_code == 200
    assert medsr.verify_archive(tmp_path / "r.medsr.h5").ok
    _no_temp_left(tmp_path)


# --------------------------------------------------------------------------- QIDO-RS batch

def _copy_into_new_study(folder: Path, out: Path, study_date: str) -> Path:
    """A copy of a case with new Study/Series/SOP UIDs and another StudyDate (a second visit)."""
    import pydicom
    from pydicom.uid import generate_uid

    study, series, out = generate_uid(), {}, Path(out)
    out.mkdir(parents=True)
    for f in sorted(Path(folder).rglob("*.dcm")):
        ds = pydicom.dcmread(f)
        ds.StudyInstanceUID, ds.StudyDate = study, study_date
        ds.SeriesInstanceUID = series.setdefault(str(ds.SeriesInstanceUID), generate_uid())
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(out / f.name, enforce_file_format=True)
    return out


def test_dicomweb_batch_selects_series_by_qido(pacs, cases, tmp_path, capsys):
    visit = _copy_into_new_study(cases["two_series"], tmp_path / "visit", "20190301")
    uploaded = pacs.upload(visit)
    assert len(uploaded) == 2
    out = tmp_path / "batch"
    rc, stdout, err = _run(["archive-batch", "--dicomweb", pacs.dicomweb, "--query", "Modality=MR",
                            "--query", "StudyDate=20190101-20201231", "-o", str(out), "--workers", "1",
                            "--method", "bicubic", "--no-j2k", "--auth-file", str(pacs.auth_file), "--json",
                            "--quiet"], capsys)
    assert rc == 0, err
    summary = json.loads(stdout)
    assert summary["ok"] == 2 and summary["failed"] == 0, summary
    archives = sorted(out.rglob("*.medsr.h5"))
    assert len(archives) == 2
    fetched = {medsr.open_archive(a).series_uid for a in archives}
    assert fetched == set(uploaded)  # exactly the two series of the 2019 visit
    for a in archives:
        sid = uploaded[medsr.open_archive(a).series_uid]
        assert _archived_sha256(a) == {_sha(b) for b in pacs.files(sid).values()}
    rc, stdout, err = _run(["jobs", str(out), "--json"], capsys)  # the batch's job ledger
    assert rc == 0 and sorted((j["state"], j["target"]) for j in json.loads(stdout)["jobs"]) == [
        ("done", uid) for uid in sorted(uploaded)]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".medsr-tmp")]  # fetched copies removed


# --------------------------------------------------------------------------- bad input: one line, nothing written

def _one_line_error(rc, err, expect_rc, *needles):
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == expect_rc, err
    assert len(lines) == 1 and lines[0].startswith("medsr: error:"), err
    assert "Traceback" not in err and PASSWORD not in err
    for n in needles:
        assert n in lines[0], lines[0]


def test_dicomweb_bad_input_is_one_line_and_writes_nothing(pacs, cases, tmp_path, capsys):
    study, series = _uids(cases["basic"])
    archive = tmp_path / "x.medsr.h5"
    auth = ["--auth-file", str(pacs.auth_file)]

    def archive_cmd(url, *extra):
        rc, _, err = _run(["archive", url, "-o", str(archive), "--method", "bicubic", "--no-j2k", *extra], capsys)
        return rc, err

    closed = free_port()  # nothing listens there
    _one_line_error(*archive_cmd(f"http://127.0.0.1:{closed}/dicom-web/studies/{study}/series/{series}", *auth), 1,
                    "cannot reach")
    wrong = tmp_path / "wrong-auth"
    wrong.write_text(f"{USER}:not-the-password\n")
    rc, err = archive_cmd(pacs.series_url(study, series), "--auth-file", str(wrong))
    _one_line_error(rc, err, 1, "HTTP 401")
    assert "not-the-password" not in err
    _one_line_error(*archive_cmd(f"{pacs.dicomweb}/studies/{study}", *auth), 2, "not a DICOMweb series URL")
    _one_line_error(*archive_cmd(pacs.series_url(study, "1.2.3.4.5.6.7"), *auth), 2, "no series 1.2.3.4.5.6.7")
    _one_line_error(*archive_cmd(f"http://{USER}:{PASSWORD}@127.0.0.1/dicom-web/studies/{study}/series/{series}"),
                    2, "credentials in a URL are refused")
    _one_line_error(*archive_cmd(pacs.series_url(study, series), *auth, "--ca-bundle", str(tmp_path / "none.pem")),
                    2, "no such CA bundle")
    ct = pacs.upload(cases["ct"])
    assert len(ct) == 1
    _one_line_error(*archive_cmd(pacs.series_url(*_uids(cases["ct"])), *auth), 3, "is CT, not MR")
    assert not archive.exists()
    _no_temp_left(tmp_path)
    archive.write_bytes(b"an existing file")  # refused before anything is fetched (the URL is unreachable)
    _one_line_error(*archive_cmd(f"http://127.0.0.1:{closed}/dicom-web/studies/{study}/series/{series}", *auth), 5,
                    "already exists")
    assert archive.read_bytes() == b"an existing file"


def test_stow_rejection_is_one_line(pacs, cases, basic_archive, tmp_path):
    """Orthanc refuses instances whose StudyInstanceUID differs from the study URL they are posted to."""
    from medsr.pacs.credentials import Connection
    from medsr.pacs.dicomweb import DicomwebServer
    from medsr.pacs.transport import TransportRejected

    server = DicomwebServer(pacs.dicomweb, Connection(auth_file=pacs.auth_file))
    files = sorted(Path(cases["basic"]).glob("*.dcm"))[:2]
    with pytest.raises(TransportRejected, match="rejected") as e:
        server.store(files, study_uid="1.2.3.999")
    assert "\n" not in str(e.value)


class _CuttingProxy(BaseHTTPRequestHandler):
    """Forwards GETs to Orthanc; the third instance retrieved is cut in half (the connection then closes)."""

    upstream = ""
    retrieved = 0
    lock = threading.Lock()

    def do_GET(self):  # noqa: N802 - http.server's name
        r = requests.get(self.upstream + self.path, headers={k: v for k, v in self.headers.items()
                                                             if k.lower() in ("accept", "authorization")},
                         timeout=60)
        body = r.content
        cut = False
        if "/instances/" in self.path:
            with self.lock:
                type(self).retrieved += 1
                cut = type(self).retrieved == 3
        self.send_response(r.status_code)
        self.send_header("Content-Type", r.headers.get("Content-Type", "application/octet-stream"))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if cut else body)
        if cut:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)

    def log_message(self, *args):
        pass


def test_transfer_cut_mid_series_is_one_line_and_writes_nothing(pacs, cases, basic_archive, tmp_path, capsys):
    _CuttingProxy.upstream, _CuttingProxy.retrieved = pacs.url, 0
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), _CuttingProxy)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{proxy.server_address[1]}/dicom-web/studies/{'/series/'.join(_uids(cases['basic']))}"
        archive = tmp_path / "cut.medsr.h5"
        rc, out, err = _run(["archive", url, "-o", str(archive), "--auth-file", str(pacs.auth_file), "--method",
                             "bicubic", "--no-j2k"], capsys)
        _one_line_error(rc, err, 1, "cut")
        assert _CuttingProxy.retrieved == 3  # it stopped at the broken instance
        assert not archive.exists()
        _no_temp_left(tmp_path)
    finally:
        proxy.shutdown()
        proxy.server_close()


# --------------------------------------------------------------------------- DIMSE: C-FIND + C-GET / C-MOVE, C-STORE

def _dimse(pacs, *path, aet=None) -> str:
    return f"dimse://{aet or pacs.aet}@127.0.0.1:{pacs.dicom_port}" + "".join(f"/{p}" for p in path)


def test_dimse_c_get_archive_and_c_store_restore(pacs, cases, basic_archive, tmp_path, capsys):
    pytest.importorskip("pynetdicom")
    study, series = _uids(cases["basic"])
    series_id = basic_archive[1]
    archive = tmp_path / "dimse.medsr.h5"
    rc, out, err = _run(["archive", _dimse(pacs, study, series), "-o", str(archive), "--calling-aet", "MEDSR",
                         "--method", "bicubic", "--no-j2k", "--json", "--quiet"], capsys)
    assert rc == 0, err
    s = json.loads(out)
    assert s["fetched_instances"] == 12 and s["source"] == _dimse(pacs, study, series)
    assert medsr.verify_archive(archive).ok
    # the same pixels and headers as the DICOMweb archive of the same series (itself byte-exact to Orthanc's files)
    a, b = medsr.open_archive(archive), medsr.open_archive(basic_archive[0])
    assert a.series_uid == b.series_uid == series and a.n_slices == b.n_slices == 12
    da, db = medsr.restore_archive(archive, tmp_path / "a"), medsr.restore_archive(basic_archive[0], tmp_path / "b")
    import pydicom

    pa = sorted((str(d.SourceImageSequence[0].ReferencedSOPInstanceUID), d.pixel_array.tobytes())
                for d in map(pydicom.dcmread, da.files))
    pb = sorted((str(d.SourceImageSequence[0].ReferencedSOPInstanceUID), d.pixel_array.tobytes())
                for d in map(pydicom.dcmread, db.files))
    assert pa == pb
    _no_temp_left(tmp_path)

    rc, out, err = _run(["restore", str(archive), "--to", _dimse(pacs), "--json", "--quiet"], capsys)
    assert rc == 0, err
    r = json.loads(out)
    assert r["stored"] == 12
    new_id = pacs.series_id_of(r["series_instance_uid"])
    new = pacs.get(f"/series/{new_id}").json()
    assert len(new["Instances"]) == 12 and new["ParentStudy"] == pacs.get(f"/series/{series_id}").json()["ParentStudy"]
    one = pydicom.dcmread(io.BytesIO(pacs.get(f"/instances/{new['Instances'][0]}/file").content))
    assert one.ImageType[0] == "DERIVED" and str(one.SourceImageSequence[0].ReferencedSOPInstanceUID) in {
        str(pydicom.dcmread(f).SOPInstanceUID) for f in Path(cases["basic"]).glob("*.dcm")}


def test_dimse_c_move_to_medsr_storage_scp(pacs, cases, basic_archive, tmp_path):
    """C-MOVE: Orthanc sends the series to medsr's own storage SCP (known to Orthanc as MEDSR)."""
    pytest.importorskip("pynetdicom")
    from medsr.pacs import archive_remote
    from medsr.pacs.dimse import DimseOptions

    study, series = _uids(cases["basic"])
    res = archive_remote(_dimse(pacs, series), tmp_path / "m.medsr.h5",  # the study found by C-FIND
                         medsr.ArchiveOptions(method="bicubic", baselines=False),
                         dimse=DimseOptions(calling_aet="MEDSR", move_port=pacs.modality_port, timeout=30))
    assert res.summary()["fetched_instances"] == 12
    assert medsr.open_archive(tmp_path / "m.medsr.h5").series_uid == series
    _no_temp_left(tmp_path)


def test_dimse_bad_input_is_one_line_and_writes_nothing(pacs, cases, basic_archive, tmp_path, capsys):
    pytest.importorskip("pynetdicom")
    study, series = _uids(cases["basic"])
    archive = tmp_path / "x.medsr.h5"

    def archive_cmd(address, *extra):
        rc, _, err = _run(["archive", address, "-o", str(archive), "--method", "bicubic", "--no-j2k",
                           "--pacs-timeout", "10", *extra], capsys)
        return rc, err

    _one_line_error(*archive_cmd(_dimse(pacs, study, series, aet="NOT-ORTHANC")), 1, "rejected the association")
    closed = free_port()
    _one_line_error(*archive_cmd(f"dimse://ORTHANC@127.0.0.1:{closed}/{study}/{series}"), 1, "cannot reach")
    _one_line_error(*archive_cmd(_dimse(pacs, study, "1.2.3.4.5.6.7")), 2, "holds no series 1.2.3.4.5.6.7")
    pacs.upload(cases["ct"])
    _one_line_error(*archive_cmd(_dimse(pacs, *_uids(cases["ct"]))), 3, "is CT, not MR")
    _one_line_error(*archive_cmd(_dimse(pacs)), 2, "names no series")
    _one_line_error(*archive_cmd(_dimse(pacs, study, series), "--delete-original"), 2, "DIMSE has no delete")
    _one_line_error(*archive_cmd(_dimse(pacs, study, series), "--calling-aet", "MUCH-TOO-LONG-AE-TITLE"), 2,
                    "calling AE title")
    assert not archive.exists()
    _no_temp_left(tmp_path)
    rc, _, err = _run(["restore", str(basic_archive[0]), "--to", _dimse(pacs, aet="NOT-ORTHANC"),
                       "--pacs-timeout", "10"], capsys)
    _one_line_error(rc, err, 1, "rejected the association")



# --------------------------------------------------------------------------- archive and free

def test_plugin_archive_and_free_reports_the_freed_bytes(pacs, cases):
    sid = pacs.upload(cases["rescale"])[_uids(cases["rescale"])[1]]
    size = sum(map(len, pacs.files(sid).values()))
    r = pacs.http.post(f"{pacs.url}/medsr/series/{sid}/archive",
                       json={"delete_original": True, "method": "bicubic", "baselines": False}, timeout=300)
    assert r.status_code == 200, r.text
    a = r.json()
    assert a["deleted_from_orthanc"] is True and a["freed_bytes"] == size
    assert pacs.get(f"/series/{sid}").status_code == 404  # freed, after the archive verified
    assert medsr.verify_archive(pacs.store / f"{a['archive_id']}.medsr.h5").ok
    listing = pacs.get("/medsr/archives").json()
    row = next(x for x in listing["archives"] if x["archive_id"] == a["archive_id"])
    assert row["deleted_from_orthanc"] is True and row["freed_bytes"] == size
    assert listing["freed"]["originals"] >= 1 and listing["freed"]["bytes"] >= size
    pacs.upload(cases["rescale"])  # put it back for the other tests


class _DeletingProxy(BaseHTTPRequestHandler):
    """A DICOMweb server that allows DELETE: Orthanc's DICOMweb for GET, Orthanc's REST for DELETE of a series."""

    upstream = ""
    deleted: list = []

    def _forward_headers(self):
        return {k: v for k, v in self.headers.items() if k.lower() in ("accept", "authorization")}

    def do_GET(self):  # noqa: N802
        r = requests.get(self.upstream + self.path, headers=self._forward_headers(), timeout=60)
        self.send_response(r.status_code)
        self.send_header("Content-Type", r.headers.get("Content-Type", "application/octet-stream"))
        self.send_header("Content-Length", str(len(r.content)))
        self.end_headers()
        self.wfile.write(r.content)

    def do_DELETE(self):  # noqa: N802
        series_uid = self.path.rstrip("/").rsplit("/", 1)[-1]
        h = self._forward_headers()
        ids = [x["ID"] for x in requests.post(self.upstream + "/tools/lookup", data=series_uid, headers=h,
                                              timeout=60).json() if x["Type"] == "Series"]
        status = 404
        if ids:
            status = requests.delete(f"{self.upstream}/series/{ids[0]}", headers=h, timeout=60).status_code
            type(self).deleted.append(series_uid)
        self.send_response(204 if status == 200 else status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_dicomweb_delete_original_only_after_the_archive_verified(pacs, cases, tmp_path, capsys):
    study, series = _uids(cases["rescale"])
    sid = pacs.upload(cases["rescale"])[series]
    size = sum(map(len, pacs.files(sid).values()))
    _DeletingProxy.upstream, _DeletingProxy.deleted = pacs.url, []
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), _DeletingProxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{proxy.server_address[1]}/dicom-web/studies/{study}/series/{series}"
        args = ["--method", "bicubic", "--no-j2k", "--auth-file", str(pacs.auth_file), "--delete-original"]
        # a quality gate that fails: nothing written, nothing deleted
        rc, _, err = _run(["archive", url, "-o", str(tmp_path / "gate.medsr.h5"), "--min-psnr", "99", *args], capsys)
        assert rc == 7 and not (tmp_path / "gate.medsr.h5").exists() and _DeletingProxy.deleted == []
        assert pacs.get(f"/series/{sid}").status_code == 200
        rc, out, err = _run(["archive", url, "-o", str(tmp_path / "r.medsr.h5"), "--json", *args], capsys)
        assert rc == 0, err
        s = json.loads(out)
        assert s["deleted_from_pacs"] is True and s["freed_bytes"] == size and _DeletingProxy.deleted == [series]
        assert pacs.get(f"/series/{sid}").status_code == 404
        assert medsr.verify_archive(tmp_path / "r.medsr.h5").ok
    finally:
        proxy.shutdown()
        proxy.server_close()
        pacs.upload(cases["rescale"])  # put it back for the other tests



def test_https_is_verified_and_trusts_the_ca_bundle(pacs, cases, tmp_path, capsys):
    """An https DICOMweb server with a private CA: refused without --ca-bundle, archived with it."""
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")
    cert, key = tmp_path / "ca.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    _DeletingProxy.upstream, _DeletingProxy.deleted = pacs.url, []
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), _DeletingProxy)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    proxy.socket = context.wrap_socket(proxy.socket, server_side=True)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        study, series = _uids(cases["basic"])
        pacs.upload(cases["basic"])
        url = f"https://127.0.0.1:{proxy.server_address[1]}/dicom-web/studies/{study}/series/{series}"
        args = ["--method", "bicubic", "--no-j2k", "--auth-file", str(pacs.auth_file)]
        rc, _, err = _run(["archive", url, "-o", str(tmp_path / "t.medsr.h5"), *args], capsys)
        _one_line_error(rc, err, 1, "TLS verification", "--ca-bundle")
        assert not (tmp_path / "t.medsr.h5").exists()
        rc, _, err = _run(["archive", url, "-o", str(tmp_path / "t.medsr.h5"), "--ca-bundle", str(cert), *args],
                          capsys)
        assert rc == 0, err
        assert medsr.open_archive(tmp_path / "t.medsr.h5").series_uid == series
    finally:
        proxy.shutdown()
        proxy.server_close()


# --------------------------------------------------------------------------- plugin jobs survive a restart

def _poll_job(pacs, job_id: str, states: tuple[str, ...], wait_s: float = 120.0) -> dict:
    import time

    deadline = time.monotonic() + wait_s
    while True:
        job = pacs.get(f"/medsr/jobs/{job_id}").json()
        if job.get("state") in states or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


def test_plugin_job_killed_mid_archive_is_interrupted_and_resumes(pacs, cases, tmp_path, capsys):
    """Kill Orthanc while an archive job runs: after the restart the job is listed as interrupted, nothing
    half-written is visible, and resuming it writes a verified archive. (Last: it restarts the module's Orthanc.)"""
    import os
    import signal

    sid = pacs.upload(cases["large_256"])[_uids(cases["large_256"])[1]]
    before = set(pacs.store.glob("*.medsr.h5"))
    r = pacs.http.post(f"{pacs.url}/medsr/series/{sid}/archive", json={"wait": False, "method": "bicubic"},
                       timeout=60)
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    assert _poll_job(pacs, job_id, ("running", "done", "failed"))["state"] == "running"
    os.killpg(pacs.proc.pid, signal.SIGKILL)  # no clean shutdown: as if the machine lost power
    pacs.proc.wait(30)
    pacs.start()

    job = pacs.get(f"/medsr/jobs/{job_id}").json()
    assert job["state"] == "interrupted" and job["resumable"] is True and job["target"] == sid
    assert job_id in [j["job_id"] for j in pacs.get("/medsr/jobs").json()["jobs"]]
    assert set(pacs.store.glob("*.medsr.h5")) == before  # nothing half-written is visible
    assert not [p for p in pacs.store.iterdir() if p.name.startswith(".medsr-tmp")]
    assert not any((pacs.store / ".work").iterdir())  # the killed job's fetched copies are gone
    rc, out, err = _run(["jobs", str(pacs.store), "--json"], capsys)
    assert rc == 0 and {j["job_id"]: j["state"] for j in json.loads(out)["jobs"]}[job_id] == "interrupted"

    r = pacs.http.post(f"{pacs.url}/medsr/jobs/{job_id}/resume", json={"timeout": 300}, timeout=320)
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["series_id"] == sid and result["slices"] == 24
    assert medsr.verify_archive(pacs.store / f"{result['archive_id']}.medsr.h5").ok
    old = pacs.get(f"/medsr/jobs/{job_id}").json()
    assert old["state"] == "resumed" and old["resumed_by"] == result["job_id"]
    assert pacs.get(f"/medsr/jobs/{result['job_id']}").json()["state"] == "done"
    again = pacs.http.post(f"{pacs.url}/medsr/jobs/{job_id}/resume", timeout=60)
    assert again.status_code == 409 and "only interrupted jobs" in again.json()["error"]


def test_dimse_transfer_cut_mid_series_is_one_line_and_writes_nothing(pacs, cases, tmp_path, capsys):
    """A DIMSE peer that lists 12 instances and aborts the association after sending 5 of them."""
    pytest.importorskip("pynetdicom")
    import pydicom
    from pydicom.uid import AllTransferSyntaxes
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import (MRImageStorage, StudyRootQueryRetrieveInformationModelFind,
                                      StudyRootQueryRetrieveInformationModelGet)

    datasets = [pydicom.dcmread(f) for f in sorted(Path(cases["basic"]).glob("*.dcm"))]
    study, series = _uids(cases["basic"])

    def on_find(event):
        q = event.identifier
        for ds in datasets[:1] if q.QueryRetrieveLevel == "SERIES" else datasets:
            hit = pydicom.Dataset()
            hit.QueryRetrieveLevel = q.QueryRetrieveLevel
            hit.StudyInstanceUID, hit.SeriesInstanceUID, hit.Modality = study, series, "MR"
            if q.QueryRetrieveLevel == "IMAGE":
                hit.SOPInstanceUID = ds.SOPInstanceUID
            yield 0xFF00, hit

    def on_get(event):
        yield len(datasets)
        for k, ds in enumerate(datasets):
            if k == 5:
                event.assoc.abort()  # the cable is pulled
                return
            yield 0xFF00, ds

    ae = AE(ae_title="CUTTER")
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_supported_context(MRImageStorage, list(AllTransferSyntaxes), scu_role=True, scp_role=True)
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False,
                             evt_handlers=[(evt.EVT_C_FIND, on_find), (evt.EVT_C_GET, on_get)])
    try:
        archive = tmp_path / "cut.medsr.h5"
        rc, _, err = _run(["archive", f"dimse://CUTTER@127.0.0.1:{port}/{study}/{series}", "-o", str(archive),
                           "--pacs-timeout", "20", "--method", "bicubic", "--no-j2k"], capsys)
        _one_line_error(rc, err, 1, "C-GET of series", "cut")
        assert not archive.exists()
        _no_temp_left(tmp_path)
    finally:
        server.shutdown()


def test_c_store_rejection_is_one_line(pacs, basic_archive, capsys):
    """A DIMSE peer that answers every C-STORE with 0xA700 (out of resources)."""
    pytest.importorskip("pynetdicom")
    from pydicom.uid import AllTransferSyntaxes
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import MRImageStorage

    received = []
    ae = AE(ae_title="FULLDISK")
    ae.add_supported_context(MRImageStorage, list(AllTransferSyntaxes))
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False,
                             evt_handlers=[(evt.EVT_C_STORE, lambda event: received.append(1) or 0xA700)])
    try:
        rc, _, err = _run(["restore", str(basic_archive[0]), "--to", f"dimse://FULLDISK@127.0.0.1:{port}",
                           "--pacs-timeout", "20"], capsys)
        _one_line_error(rc, err, 1, "refused instance", "0xa700", "after storing 0")
        assert received == [1]  # it stopped at the first refusal
    finally:
        server.shutdown()
