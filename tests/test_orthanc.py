"""medsr in a real PACS: the Orthanc plugin routes, the launcher, and the REST client.

The Orthanc tests start Debian's Orthanc (with orthanc-python and the medsr plugin) through
``python -m medsr orthanc serve``, on loopback, with a temporary storage/index/store.
Orthanc 1.10 cannot bind to one address (it listens on 0.0.0.0), so when the kernel allows
it the test thread first moves into a fresh network namespace holding only loopback (the
``unshare -n`` system call); Orthanc, started from that thread, inherits it, and nothing
outside this process can reach it. Without that permission Orthanc runs on random loopback
ports with RemoteAccessAllowed false and its DICOM listener disabled.

Skipped with a reason when Orthanc or orthanc-python is not installed; launcher and
service-level tests run everywhere (fake Orthanc binary / fake plugin / fake PACS access).
"""
from __future__ import annotations

import argparse
import atexit
import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import medsr
from medsr.errors import InputError, MedsrError
from medsr.cli import orthanc as orthanc_cli
from medsr.pacs import launcher
from medsr.pacs.archive_store import ArchiveStore
from medsr.pacs.errors import UnknownResource
from medsr.pacs.orthanc_access import is_orthanc_id
from medsr.pacs.service import MedsrService, ServiceConfig
from orthanc_util import enter_private_netns, free_port, loopback_up, stop  # tests/orthanc_util.py

requests = pytest.importorskip("requests")

REPO_ROOT = Path(__file__).resolve().parents[1]
ORTHANC = launcher.find_orthanc()
PLUGIN = launcher.find_python_plugin()
_SKIP_NO_ORTHANC = pytest.mark.skipif(
    ORTHANC is None or PLUGIN is None,
    reason="needs Debian's orthanc and orthanc-python (apt-get install orthanc orthanc-python)")


def needs_orthanc(fn):
    """Marked ``orthanc`` (see pyproject markers) and skipped without Orthanc + orthanc-python."""
    return pytest.mark.orthanc(_SKIP_NO_ORTHANC(fn))
PSNR_FLOOR_DB = 18.0  # the bicubic restore of the textured 64x64 fixture measures ~21 dB


# --------------------------------------------------------------------------- helpers

def _series_pixels(datasets) -> dict[str, np.ndarray]:
    return {str(ds.SOPInstanceUID): ds.pixel_array.astype(np.float64) for ds in datasets}


def _psnr(reference: np.ndarray, test: np.ndarray) -> float:
    data_range = float(reference.max() - reference.min())
    mse = float(np.mean((reference - test) ** 2))
    return 10 * np.log10(data_range ** 2 / mse)


def _read_folder(folder: Path):
    import pydicom

    return [pydicom.dcmread(f) for f in sorted(Path(folder).rglob("*.dcm"))]


def _fake_plugin(tmp_path: Path, version: tuple[int, int] = sys.version_info[:2]) -> Path:
    p = tmp_path / "libOrthancPython.so"
    p.write_bytes(b"\x7fELF fake\x00" + f"libpython{version[0]}.{version[1]}.so.1.0".encode() + b"\x00")
    return p


def _fake_orthanc(tmp_path: Path) -> Path:
    p = tmp_path / "Orthanc"
    p.write_text("#!/bin/sh\nexit 0\n")
    p.chmod(0o755)
    return p


# --------------------------------------------------------------------------- launcher (no Orthanc needed)

def test_launcher_refuses_remote_without_auth(tmp_path, capsys):
    root = tmp_path / "pacs"
    assert orthanc_cli.main(["serve", "--root", str(root), "--remote", "--orthanc", str(_fake_orthanc(tmp_path)),
                          "--plugin", str(_fake_plugin(tmp_path)), "--dry-run"]) == InputError.exit_code
    assert "--remote needs --user and --password-file" in capsys.readouterr().err
    assert not (root / "orthanc.json").exists()
    # a user without a password file is refused too
    assert orthanc_cli.main(["serve", "--root", str(root), "--remote", "--user", "admin", "--dry-run"]) == 2
    with pytest.raises(InputError, match="--remote needs"):
        launcher.build_config(root, remote=True, plugin=_fake_plugin(tmp_path))


def test_launcher_config_is_local_only_by_default(tmp_path, capsys):
    root, store = tmp_path / "pacs", tmp_path / "store"
    plugin = _fake_plugin(tmp_path)
    rc = orthanc_cli.main(["serve", "--root", str(root), "--http-port", "18123", "--dicom-port", "14123",
                        "--archive-store", str(store), "--orthanc", str(_fake_orthanc(tmp_path)),
                        "--plugin", str(plugin), "--dry-run", "--json"])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    cfg_path = root / "orthanc.json"
    cfg = json.loads(cfg_path.read_text())
    assert cfg["RemoteAccessAllowed"] is False
    assert cfg["AuthenticationEnabled"] is False and "RegisteredUsers" not in cfg
    assert cfg["MaximumStorageCacheSize"] == 0
    assert cfg["HttpPort"] == 18123 and cfg["DicomPort"] == 14123 and cfg["DicomServerEnabled"] is True
    assert Path(cfg["StorageDirectory"]).parent == root.resolve()
    assert Path(cfg["IndexDirectory"]).parent == root.resolve()
    assert cfg["Plugins"] == [str(plugin)]
    assert Path(cfg["PythonScript"]) == launcher.plugin_script() and launcher.plugin_script().is_file()
    assert cfg["Medsr"]["ArchiveStore"] == str(store.resolve())
    assert cfg_path.stat().st_mode & 0o777 == 0o600
    # the embedded interpreter must find this environment's packages and the medsr sources
    pythonpath = printed["PYTHONPATH"].split(os.pathsep)
    import sysconfig

    assert sysconfig.get_paths()["purelib"] in pythonpath
    assert str(Path(medsr.__file__).resolve().parents[1]) in pythonpath
    assert printed["command"] == [str(tmp_path / "Orthanc"), str(cfg_path)]


def test_launcher_remote_with_auth(tmp_path, capsys):
    root = tmp_path / "pacs"
    pw = tmp_path / "pw"
    pw.write_text("s3cret-pw\n")
    rc = orthanc_cli.main(["serve", "--root", str(root), "--remote", "--user", "admin", "--password-file", str(pw),
                        "--dicom-port", "0", "--orthanc", str(_fake_orthanc(tmp_path)),
                        "--plugin", str(_fake_plugin(tmp_path)), "--dry-run", "--json"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "s3cret" not in out  # the password goes to the 0600 config only
    cfg = json.loads((root / "orthanc.json").read_text())
    assert cfg["RemoteAccessAllowed"] is True and cfg["AuthenticationEnabled"] is True
    assert cfg["RegisteredUsers"] == {"admin": "s3cret-pw"}
    assert cfg["DicomServerEnabled"] is False


def test_launcher_checks_the_embedded_python_version(tmp_path):
    other = (sys.version_info[0], sys.version_info[1] - 1)
    with pytest.raises(InputError, match="embeds Python"):
        launcher.check_python_match(_fake_plugin(tmp_path, other))
    assert launcher.check_python_match(_fake_plugin(tmp_path)) == sys.version_info[:2]


@needs_orthanc
def test_installed_plugin_embeds_this_python():
    assert launcher.embedded_python_version(PLUGIN) == sys.version_info[:2], (
        "orthanc-python embeds another Python than this venv: numpy/torch would not import inside Orthanc")


def test_cli_hook(tmp_path, capsys):
    from medsr import cli

    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert "orthanc" in commands  # medsr.cli registers `medsr orthanc serve|env`
    assert cli.main(["orthanc", "serve", "--root", str(tmp_path / "r"), "--remote"]) == 2
    assert "--remote needs" in capsys.readouterr().err


# --------------------------------------------------------------------------- service (fake PACS, no Orthanc)

class _FakeAccess:
    def __init__(self):
        self.calls = []

    def get_json(self, path):
        self.calls.append(path)
        raise UnknownResource(f"Orthanc has no {path}")

    get_bytes = get_json

    def post_instance(self, data):
        raise AssertionError("no upload expected")

    def delete(self, path):
        raise AssertionError("no delete expected")


def test_service_rejects_bad_ids_without_touching_orthanc_or_disk(tmp_path):
    access = _FakeAccess()
    svc = MedsrService(access, ServiceConfig(archive_store=tmp_path / "store"))
    (tmp_path / "secret.medsr.h5").write_bytes(b"x")
    for method, uri, status in [
        ("GET", "/medsr/archives/..%2Fsecret", 400), ("GET", "/medsr/archives/....secret", 400),
        ("GET", "/medsr/archives/20990101T000000Z-00000000000", 400),  # one hex digit short
        ("GET", "/medsr/archives/20990101T000000Z-000000000000", 404),
        ("POST", "/medsr/archives/../secret/restore", 404),  # no such route
        ("POST", "/medsr/archives/20990101T000000Z-000000000000/restore", 404),
        ("GET", "/medsr/archives/20990101T000000Z-000000000000/report", 404),
        ("POST", "/medsr/series/not-an-id/archive", 400), ("POST", "/medsr/series/" + "A" * 44 + "/archive", 400),
        ("GET", "/medsr/jobs/xyz", 400), ("GET", "/medsr/jobs/" + "0" * 32, 404), ("GET", "/medsr/nowhere", 404),
        ("DELETE", "/medsr/archives", 405),
    ]:
        r = svc.handle(method, uri)
        assert r.status == status, (method, uri, r)
        if status != 405:
            assert "error" in json.loads(r.body)
    assert access.calls == []  # ids were refused before any Orthanc call
    sid = "0" * 8 + "-00000000" * 4
    assert is_orthanc_id(sid)
    r = svc.handle("POST", f"/medsr/series/{sid}/archive", body=b'{"min_psnr": 30}')
    assert r.status == 404 and json.loads(r.body)["type"] == "UnknownResource"
    for body in (b"not json", b"[1]", b'{"bogus": 1}', b'{"model": "../../w.safetensors"}', b'{"min_psnr": "x"}',
                 b'{"delete_original": "yes"}', b'{"timeout": 1e9}', b'{"base": "jpeg-xl"}',
                 b'{"base": "lossy", "base_near": 2.5}', b'{"base_near": 3}', b'{"floor_psnr_fg": -1}',
                 b'{"floor_ssim": 2}', b'{"floor_fallback": "lossless"}', b'{"floor_psnr_fg": 40, "floor_fallback": "x"}',
                 b'{"ensemble": 3}', b'{"ratio": 1}', b'{"ratio": 100, "base": "lossy"}',
                 b'{"ratio": 100, "ratio_search": "most"}', b'{"ratio": 100, "ratio_search": 1}'):
        r = svc.handle("POST", f"/medsr/series/{sid}/archive", body=body)
        assert r.status == 400, (body, r)
    assert [p.name for p in (tmp_path / "store").iterdir()] == [".work"]


def test_archive_store_paths_stay_inside(tmp_path):
    store = ArchiveStore(tmp_path / "s")
    aid = store.new_id()
    assert store.archive_path(aid).parent == store.root
    for bad in ("../x", "/etc/passwd", "", aid + "/..", aid.upper()):
        with pytest.raises(MedsrError):
            store.archive_path(bad)


# --------------------------------------------------------------------------- a real Orthanc

_loopback_up, _enter_private_netns, _free_port = loopback_up, enter_private_netns, free_port


class _Orthanc:
    def __init__(self, url, store, proc, log, isolated):
        self.url, self.store, self.proc, self.log, self.isolated = url, store, proc, log, isolated
        self.http = requests.Session()
        self.http.trust_env = False  # no proxies for loopback

    def get(self, path, **kw):
        return self.http.get(self.url + path, timeout=120, **kw)

    def post(self, path, **kw):
        return self.http.post(self.url + path, timeout=120, **kw)

    def series_files(self, series_id):
        import pydicom

        ids = self.get(f"/series/{series_id}").json()["Instances"]
        return [pydicom.dcmread(io.BytesIO(self.get(f"/instances/{i}/file").content)) for i in ids]

    def log_tail(self, n=40):
        try:
            return "\n".join(Path(self.log).read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


_stop = stop


def _wait_until_up(server: _Orthanc, timeout: float = 60) -> bool:
    """True once this Orthanc answers /system; False if it exited first (e.g. its port was taken)."""
    deadline = time.monotonic() + timeout
    while server.proc.poll() is None:
        try:
            if server.get("/system").status_code == 200 and server.proc.poll() is None:
                return True
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"Orthanc did not answer /system within {timeout:.0f} s:\n{server.log_tail()}")
        time.sleep(0.1)
    return False


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    if ORTHANC is None or PLUGIN is None:
        pytest.skip("needs Debian's orthanc and orthanc-python (apt-get install orthanc orthanc-python)")
    base = tmp_path_factory.mktemp("orthanc")
    undo_netns = _enter_private_netns()
    proc = None
    try:
        # Orthanc binds its ports itself, so a port found free may be taken before it binds
        # (never inside the private namespace, where nothing else runs): start again on new ports
        for attempt in range(3):
            http_port = _free_port()
            # DICOM listens on every interface too: only inside the private namespace
            dicom_port = _free_port() if undo_netns else 0
            log = base / f"orthanc-{attempt}.log"
            with open(log, "wb") as log_file:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "medsr", "orthanc", "serve", "--root", str(base / "root"),
                     "--http-port", str(http_port), "--dicom-port", str(dicom_port),
                     "--archive-store", str(base / "store"), "--device", "cpu", "--quiet"],
                    stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=base,
                    start_new_session=True)
            atexit.register(_stop, proc)  # even if the session is torn down abruptly
            server = _Orthanc(f"http://127.0.0.1:{http_port}", base / "store", proc, log, bool(undo_netns))
            if _wait_until_up(server):
                break
            if "port" not in server.log_tail().lower() or attempt == 2:
                pytest.fail(f"Orthanc exited with {proc.returncode}:\n{server.log_tail()}")
        yield server
    finally:
        if proc is not None:
            _stop(proc)
        if undo_netns:
            undo_netns()


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    from dicom_fixtures import build_all

    return build_all(tmp_path_factory.mktemp("orthanc_cases"), ["basic", "rescale", "signed"])


@pytest.fixture(scope="module")
def basic_in_orthanc(orthanc, cases):
    from medsr.pacs import upload_series

    sid = upload_series(orthanc.url, cases["basic"], session=orthanc.http)
    assert is_orthanc_id(sid)
    assert len(orthanc.get(f"/series/{sid}").json()["Instances"]) == 12
    return sid


@pytest.fixture(scope="module")
def plugin_archive(orthanc, basic_in_orthanc):
    r = orthanc.post(f"/medsr/series/{basic_in_orthanc}/archive", json={"min_psnr": 10})
    assert r.status_code == 200, r.text
    return r.json()


@needs_orthanc
def test_orthanc_runs_isolated_and_local_only(orthanc):
    system = orthanc.get("/system").json()
    assert system["Version"].startswith("1.")
    cfg = json.loads((Path(orthanc.store).parent / "root" / "orthanc.json").read_text())
    assert cfg["RemoteAccessAllowed"] is False
    status = orthanc.get("/medsr").json()
    assert status["medsr"] == medsr.__version__


@needs_orthanc
def test_orthanc_runs_in_a_private_network_namespace(orthanc):
    """Orthanc 1.10 listens on every interface: the tests keep it in a namespace holding only loopback."""
    if not orthanc.isolated:
        pytest.skip("no private network namespace here (needs CAP_SYS_ADMIN): Orthanc ran on plain loopback")
    # this thread (and Orthanc, started from it) sees loopback only: nothing outside can reach it
    assert [name for _, name in socket.if_nameindex()] == ["lo"]
    assert orthanc.get("/system").status_code == 200


@needs_orthanc
def test_remote_mode_requires_the_password(orthanc, cases, tmp_path):
    if not orthanc.isolated:
        pytest.skip("--remote listens on every interface: only tried inside a private network namespace")
    pw = tmp_path / "pw"
    pw.write_text("pw-for-test\n")
    port = _free_port()
    with open(tmp_path / "log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "medsr", "orthanc", "serve", "--root", str(tmp_path / "r"),
                                 "--http-port", str(port), "--dicom-port", "0", "--remote", "--user", "pacs",
                                 "--password-file", str(pw), "--quiet"],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=tmp_path,
                                start_new_session=True)
    atexit.register(_stop, proc)
    try:
        s = requests.Session()
        s.trust_env = False
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp_path / "log").read_text()
            try:
                first = s.get(url + "/system", timeout=5)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, (tmp_path / "log").read_text()
                time.sleep(0.1)
        assert first.status_code == 401
        assert s.get(url + "/medsr/archives", timeout=5).status_code == 401
        assert s.get(url + "/medsr/archives", auth=("pacs", "wrong"), timeout=5).status_code == 401
        assert s.get(url + "/medsr/archives", auth=("pacs", "pw-for-test"), timeout=5).json()["count"] == 0
        from medsr.pacs import upload_series
        from medsr.pacs.errors import OrthancCallError

        with pytest.raises(OrthancCallError, match="401"):
            upload_series(url, cases["basic"], session=s)
        assert is_orthanc_id(upload_series(url, cases["basic"], auth=("pacs", "pw-for-test"), session=s))
    finally:
        _stop(proc)


@needs_orthanc
def test_plugin_archive_answers_audit_summary(orthanc, basic_in_orthanc, plugin_archive):
    a = plugin_archive
    for key in ("archive_id", "ratio", "psnr", "ssim", "psnr_fg", "psnr_bicubic", "psnr_j2k"):
        assert a.get(key) is not None, key
    assert a["series_id"] == basic_in_orthanc and a["slices"] == 12 and a["deleted_from_orthanc"] is False
    archive = Path(orthanc.store) / f"{a['archive_id']}.medsr.h5"
    assert medsr.verify_archive(archive).ok
    assert medsr.open_archive(archive).n_slices == 12
    # not asked to delete: the original stays
    assert orthanc.get(f"/series/{basic_in_orthanc}").status_code == 200


@needs_orthanc
def test_plugin_archive_takes_the_base_and_a_floor(orthanc, basic_in_orthanc):
    """Inside Orthanc: the lossy JPEG-LS base and the floor's JPEG 2000 / JPEG-LS coders (CharLS isolated)."""
    r = orthanc.post(f"/medsr/series/{basic_in_orthanc}/archive",
                     json={"method": "bicubic", "baselines": False, "base": "lossy", "floor_psnr_fg": 60,
                           "floor_fallback": "lossless"})
    assert r.status_code == 200, r.text
    archive = Path(orthanc.store) / f"{r.json()['archive_id']}.medsr.h5"
    info = medsr.open_archive(archive)
    assert medsr.verify_archive(archive).ok and info.base == "lossy"
    assert info.floor and sum(v["slices"] for v in info.floor["representations"].values()) == 12
    assert orthanc.post(f"/medsr/series/{basic_in_orthanc}/archive", json={"base": "jpeg"}).status_code == 400
    r = orthanc.post(f"/medsr/series/{basic_in_orthanc}/archive",
                     json={"method": "model", "baselines": False, "ensemble": 2})
    assert r.status_code == 200 and r.json()["ensemble"] == 2, r.text
    assert medsr.open_archive(Path(orthanc.store) / f"{r.json()['archive_id']}.medsr.h5").model_ensemble == 2
    # a byte budget (issue #19): the route takes --ratio's choice, and the archive keeps its promise
    r = orthanc.post(f"/medsr/series/{basic_in_orthanc}/archive", json={"method": "bicubic", "ratio": 40})
    assert r.status_code == 200, r.text
    info = medsr.open_archive(Path(orthanc.store) / f"{r.json()['archive_id']}.medsr.h5")
    assert info.audit["budget"]["target_ratio"] == 40 and info.pixel_ratio >= 40


@needs_orthanc
def test_plugin_restore_makes_a_derived_series(orthanc, cases, basic_in_orthanc, plugin_archive, tmp_path):
    aid = plugin_archive["archive_id"]
    r = orthanc.post(f"/medsr/archives/{aid}/restore")
    assert r.status_code == 200, r.text
    out = r.json()
    new_sid = out["series_id"]
    assert is_orthanc_id(new_sid) and new_sid != basic_in_orthanc
    new_series = orthanc.get(f"/series/{new_sid}").json()
    original = orthanc.get(f"/series/{basic_in_orthanc}").json()
    assert new_series["ParentStudy"] == original["ParentStudy"] and out["same_study"] is True
    assert len(new_series["Instances"]) == len(original["Instances"]) == 12

    restored = orthanc.series_files(new_sid)
    originals = orthanc.series_files(basic_in_orthanc)
    o0 = originals[0]
    assert {ds.SeriesInstanceUID for ds in restored} == {out["series_instance_uid"]} != {o0.SeriesInstanceUID}
    for ds in restored:
        assert (ds.Rows, ds.Columns) == (o0.Rows, o0.Columns)
        assert ds.ImageType[0] == "DERIVED"
        assert ds.StudyInstanceUID == o0.StudyInstanceUID
    # pair each derived image with its source and compare pixels
    by_source = {str(ds.SourceImageSequence[0].ReferencedSOPInstanceUID): ds.pixel_array.astype(np.float64)
                 for ds in restored}
    orig = _series_pixels(originals)
    assert set(by_source) == set(orig)
    keys = sorted(orig)
    ref, got = np.stack([orig[k] for k in keys]), np.stack([by_source[k] for k in keys])
    psnr = _psnr(ref, got)
    assert psnr > PSNR_FLOOR_DB
    from independent import series_psnr  # docs/audit.md's definition (per-slice mean), without medsr's code

    audit_def = series_psnr(ref, got)
    assert abs(audit_def - plugin_archive["psnr"]) < 0.05, (audit_def, plugin_archive["psnr"])  # the audit describes it
    # exactly what a local `medsr restore` of the same archive gives
    local = medsr.restore_archive(Path(orthanc.store) / f"{aid}.medsr.h5", tmp_path / "local")
    local_px = {str(ds.SourceImageSequence[0].ReferencedSOPInstanceUID): ds.pixel_array.astype(np.float64)
                for ds in _read_folder(local.output)}
    assert max(np.abs(local_px[k] - by_source[k]).max() for k in keys) <= 1


@needs_orthanc
def test_plugin_list_info_report(orthanc, plugin_archive):
    aid = plugin_archive["archive_id"]
    listing = orthanc.get("/medsr/archives").json()["archives"]
    assert aid in [a["archive_id"] for a in listing]
    info = orthanc.get(f"/medsr/archives/{aid}?verify=true")
    assert info.status_code == 200
    d = info.json()
    assert d["n_slices"] == 12 and d["verify"]["ok"] is True and str(orthanc.store) not in info.text
    assert d["audit"]["psnr"] == pytest.approx(plugin_archive["psnr"], abs=1e-3)
    assert d["orthanc"]["series_id"] == plugin_archive["series_id"]
    report = orthanc.get(f"/medsr/archives/{aid}/report")
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
    assert "<html" in report.text.lower() and len(report.text) > 1000


@needs_orthanc
def test_plugin_errors_are_json(orthanc, basic_in_orthanc):
    unknown = "0123abcd-0123abcd-0123abcd-0123abcd-0123abcd"
    r = orthanc.post(f"/medsr/series/{unknown}/archive")
    assert r.status_code == 404 and "error" in r.json()
    r = orthanc.post("/medsr/series/not-a-series/archive")
    assert r.status_code == 400 and "malformed" in r.json()["error"]
    for path in ("/medsr/archives/no-such-archive", "/medsr/archives/no-such-archive/report"):
        r = orthanc.get(path)
        assert r.status_code == 400 and "error" in r.json()
    r = orthanc.get("/medsr/archives/20990101T000000Z-000000000000")
    assert r.status_code == 404 and "error" in r.json()
    r = orthanc.post("/medsr/archives/nope/restore")
    assert r.status_code == 400 and "error" in r.json()
    r = orthanc.post(f"/medsr/series/{basic_in_orthanc}/archive", data=b'{"bogus": true}')
    assert r.status_code == 400 and "bogus" in r.json()["error"]
    # a gate that cannot be met: nothing archived, 422 with the reason
    before = set(Path(orthanc.store).glob("*.medsr.h5"))
    r = orthanc.post(f"/medsr/series/{basic_in_orthanc}/archive", json={"min_psnr": 99})
    assert r.status_code == 422 and r.json()["type"] == "QualityGateError", r.text
    assert set(Path(orthanc.store).glob("*.medsr.h5")) == before
    assert orthanc.get("/system").status_code == 200  # Orthanc is still fine


@needs_orthanc
def test_plugin_async_job_and_delete_original(orthanc, cases):
    from medsr.pacs import upload_series

    sid = upload_series(orthanc.url, cases["rescale"], session=orthanc.http)
    r = orthanc.post(f"/medsr/series/{sid}/archive", json={"delete_original": True, "wait": False})
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    deadline = time.monotonic() + 60
    while True:
        job = orthanc.get(f"/medsr/jobs/{job_id}").json()
        if job["state"] in ("done", "failed") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert job["state"] == "done", job
    result = job["result"]
    assert result["deleted_from_orthanc"] is True and result["series_id"] == sid
    assert orthanc.get(f"/series/{sid}").status_code == 404  # deleted only after the archive verified
    assert medsr.verify_archive(Path(orthanc.store) / f"{result['archive_id']}.medsr.h5").ok
    # the Prefer header asks for the same thing
    r = orthanc.post(f"/medsr/archives/{result['archive_id']}/restore", headers={"Prefer": "respond-async"})
    assert r.status_code == 202 and r.json()["status_url"] == f"/medsr/jobs/{r.json()['job_id']}"


@needs_orthanc
def test_client_archive_and_restore(orthanc, cases, tmp_path):
    import medsr.pacs

    sid = medsr.pacs.upload_series(orthanc.url, cases["signed"], session=orthanc.http)
    with pytest.raises(UnknownResource):
        medsr.pacs.archive_from_orthanc(orthanc.url, "0123abcd-0123abcd-0123abcd-0123abcd-0123abcd",
                                        tmp_path / "x.medsr.h5", session=orthanc.http)
    with pytest.raises(MedsrError, match="delete_original=True"):
        medsr.pacs.archive_from_orthanc(orthanc.url, sid, tmp_path / "x.medsr.h5", session=orthanc.http,
                                        options=medsr.ArchiveOptions(delete_original=True))
    archive = tmp_path / "signed.medsr.h5"
    res = medsr.pacs.archive_from_orthanc(orthanc.url, sid, archive, session=orthanc.http,
                                          options=medsr.ArchiveOptions(device="cpu"), delete_original=True)
    s = res.summary()
    assert s["slices"] == 12 and s["psnr"] > PSNR_FLOOR_DB and s["deleted_from_orthanc"] is True
    assert medsr.verify_archive(archive).ok
    assert orthanc.get(f"/series/{sid}").status_code == 404
    out = medsr.pacs.restore_to_orthanc(orthanc.url, archive, session=orthanc.http,
                                        options=medsr.RestoreOptions(device="cpu"))
    assert is_orthanc_id(out["series_id"]) and len(out["instances"]) == 12
    restored = orthanc.series_files(out["series_id"])
    originals = _read_folder(cases["signed"])
    assert len(restored) == 12
    assert all(ds.ImageType[0] == "DERIVED" and (ds.Rows, ds.Columns) == (originals[0].Rows, originals[0].Columns)
               for ds in restored)
    assert restored[0].SeriesInstanceUID != originals[0].SeriesInstanceUID
    assert out["series_instance_uid"] == restored[0].SeriesInstanceUID
