"""PACS credentials come from files or the environment, never the command line, and never show in messages."""
from __future__ import annotations

import pytest

from medsr.errors import InputError
from medsr.pacs.credentials import Connection, basic_auth, bearer_token, tls_verify
from medsr.pacs.dicomweb import DicomwebServer, parse_series_url, shown, split_multipart
from medsr.pacs.transport import NotASeries, TransportError

pytest.importorskip("dicomweb_client")


def test_credentials_from_files_and_environment(tmp_path):
    auth, token = tmp_path / "auth", tmp_path / "token"
    auth.write_text("pacs-user:s3cret:with:colons\n")
    token.write_text("\n  tok-123  \n")
    conn = Connection.from_env(environ={"MEDSR_PACS_AUTH_FILE": str(auth)})
    assert basic_auth(conn) == ("pacs-user", "s3cret:with:colons") and bearer_token(conn, environ={}) is None
    conn = Connection.from_env(token_file=token, environ={})
    assert bearer_token(conn) == "tok-123" and basic_auth(conn) is None
    assert bearer_token(Connection(), environ={"MEDSR_PACS_TOKEN": "env-tok"}) == "env-tok"
    assert "s3cret" not in repr(Connection(auth_file=auth))  # a Connection holds file names, not secrets
    with pytest.raises(InputError, match="not both"):
        Connection.from_env(auth_file=auth, token_file=token, environ={})
    (tmp_path / "bad").write_text("no-colon\n")
    with pytest.raises(InputError, match="user:password") as e:
        basic_auth(Connection(auth_file=tmp_path / "bad"))
    assert "no-colon" not in str(e.value)
    (tmp_path / "two").write_text("a:b\nc:d\n")
    with pytest.raises(InputError, match="exactly one"):
        basic_auth(Connection(auth_file=tmp_path / "two"))


def test_the_session_carries_the_credentials_and_verifies_tls(tmp_path):
    token = tmp_path / "token"
    token.write_text("tok-abc\n")
    s = DicomwebServer("https://pacs.invalid/dicom-web", Connection(token_file=token))
    assert s.session.headers["Authorization"] == "Bearer tok-abc" and s.session.auth is None
    assert s.session.verify is not False and s.session.trust_env is False
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    assert tls_verify(Connection(ca_bundle=ca), environ={"REQUESTS_CA_BUNDLE": "/other.pem"}) == str(ca)
    assert tls_verify(Connection(), environ={"REQUESTS_CA_BUNDLE": "/sys.pem"}) == "/sys.pem"
    assert tls_verify(Connection(), environ={}) is True


def test_series_urls():
    ref = parse_series_url("https://h:8443/pacs/dicom-web/studies/1.2.3/series/1.2.3.4/")
    assert (ref.base, ref.study_uid, ref.series_uid) == ("https://h:8443/pacs/dicom-web", "1.2.3", "1.2.3.4")
    for bad, err in [("https://h/dicom-web/studies/1.2.3", NotASeries), ("https://h/studies/1.2/series/x.y", NotASeries),
                     ("https://h/studies/1.2/series/1.3?x=1", NotASeries), ("ftp://h/studies/1/series/2", InputError),
                     ("https://u:pw@h/studies/1/series/2", InputError)]:
        with pytest.raises(err) as e:
            parse_series_url(bad)
        assert "pw@" not in str(e.value)
    assert shown("https://u:pw@h:1/x?token=1") == "https://h:1/x"


def test_multipart_parts_are_kept_byte_for_byte():
    part = b"\r\n\r\nDICM--b\r\n--not-the-boundary\x00\xff\r\n"  # CRLFs and '--b' inside, kept as they are
    body = b"--b\r\nContent-Type: application/dicom\r\n\r\n" + part + b"\r\n--b--\r\n"
    assert split_multipart('multipart/related; type="application/dicom"; boundary="b"', body) == [part]
    assert split_multipart("application/dicom", b"raw") == [b"raw"]
    with pytest.raises(TransportError, match="closing boundary"):
        split_multipart("multipart/related; boundary=b", body[:-9])
