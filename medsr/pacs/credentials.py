"""Who medsr is to a remote PACS: HTTP credentials and TLS settings, from files or the environment.

Secrets never come from the command line (they would show in ``ps`` and shell history)
and never appear in messages: an error names the file that held them, not its content.

=============================  ==============================================================
``auth_file``                  one line ``user:password`` -> HTTP basic authentication
``token_file``                 one line, a bearer token -> ``Authorization: Bearer ...``
``MEDSR_PACS_AUTH_FILE``       the same as ``auth_file`` when none is given
``MEDSR_PACS_TOKEN_FILE``      the same as ``token_file`` when none is given
``MEDSR_PACS_TOKEN``           a bearer token in the environment (when no file names one)
``ca_bundle`` /                a PEM file of CA certificates that sign the server's certificate
``MEDSR_PACS_CA_BUNDLE``       (TLS verification is always on; this only says whom to trust)
=============================  ==============================================================
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

ENV_AUTH_FILE = "MEDSR_PACS_AUTH_FILE"
ENV_BEARER_FILE = "MEDSR_PACS_TOKEN_FILE"
ENV_BEARER = "MEDSR_PACS_TOKEN"
ENV_CA_BUNDLE = "MEDSR_PACS_CA_BUNDLE"


@dataclass(frozen=True)
class Connection:
    """How to reach a DICOMweb server: credential files, CA bundle, timeout (seconds per request)."""

    auth_file: Path | None = None
    token_file: Path | None = None
    ca_bundle: Path | None = None
    timeout: float = 60.0

    @classmethod
    def from_env(cls, *, auth_file=None, token_file=None, ca_bundle=None, timeout: float | None = None,
                 environ: dict | None = None) -> "Connection":
        """Explicit arguments first, then ``MEDSR_PACS_*`` environment variables."""
        env = os.environ if environ is None else environ
        auth_file = auth_file or env.get(ENV_AUTH_FILE) or None
        token_file = token_file or env.get(ENV_BEARER_FILE) or None
        ca_bundle = ca_bundle or env.get(ENV_CA_BUNDLE) or None
        if auth_file and token_file:
            raise InputError("give either an auth file (user:password) or a token file, not both")
        if timeout is not None and not timeout > 0:
            raise InputError(f"the timeout must be a positive number of seconds, not {timeout!r}")
        return cls(auth_file=Path(auth_file) if auth_file else None, token_file=Path(token_file) if token_file else None,
                   ca_bundle=Path(ca_bundle) if ca_bundle else None, timeout=float(timeout or 60.0))


def _one_line(path: Path, what: str) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read the {what} file ({getattr(e, 'strerror', None) or 'not UTF-8'})",
                         path=path) from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) != 1:
        raise InputError(f"the {what} file must hold exactly one non-empty line", path=path)
    return lines[0]


def basic_auth(conn: Connection) -> tuple[str, str] | None:
    """(user, password) from ``conn.auth_file``, or None."""
    if conn.auth_file is None:
        return None
    line = _one_line(conn.auth_file, "auth")
    user, sep, password = line.partition(":")
    if not sep or not user or not password:
        raise InputError("the auth file must hold one line user:password", path=conn.auth_file)
    return user, password


def bearer_token(conn: Connection, environ: dict | None = None) -> str | None:
    """The bearer token from ``conn.token_file``, else ``$MEDSR_PACS_TOKEN`` (unless basic auth is set)."""
    if conn.token_file is not None:
        return _one_line(conn.token_file, "token")
    env = os.environ if environ is None else environ
    token = (env.get(ENV_BEARER) or "").strip()
    if token and conn.auth_file is None:
        if "\n" in token or " " in token:
            raise InputError(f"${ENV_BEARER} must be one token without spaces")
        return token
    return None


def tls_verify(conn: Connection, environ: dict | None = None) -> bool | str:
    """``requests``' ``verify``: the CA bundle given, else ``$REQUESTS_CA_BUNDLE``/``$CURL_CA_BUNDLE`` (what
    requests itself would use), else True (requests' own CA list); never False."""
    if conn.ca_bundle is None:
        env = os.environ if environ is None else environ
        return env.get("REQUESTS_CA_BUNDLE") or env.get("CURL_CA_BUNDLE") or True
    if not Path(conn.ca_bundle).is_file():
        raise InputError("no such CA bundle file", path=conn.ca_bundle)
    return str(conn.ca_bundle)


__all__ = ["Connection", "basic_auth", "bearer_token", "tls_verify"]
