"""``medsr orthanc serve|env``: argparse over :mod:`medsr.pacs.launcher` (docs/orthanc.md)."""
from __future__ import annotations

import argparse
import sys

from ..errors import MedsrError
from ..pacs.launcher import cmd_env, cmd_serve
from .common import add_common_args as _common


def register_cli(subparsers) -> argparse.ArgumentParser:
    """Add ``orthanc serve`` and ``orthanc env`` to medsr's argparse sub-commands."""

    o = subparsers.add_parser("orthanc", help="run Orthanc with the medsr plugin (see docs/orthanc.md)",
                              description="Run a local Orthanc PACS with the medsr REST routes "
                              "(/medsr/series/{id}/archive, /medsr/archives/{id}/restore, ...).")
    osub = o.add_subparsers(dest="orthanc_command", metavar="ACTION")
    o.set_defaults(func=lambda args: (o.print_help(), 2)[1], json=False, quiet=False, debug=False)

    s = osub.add_parser("serve", help="write ROOT/orthanc.json and run Orthanc in the foreground",
                        description="Write an Orthanc configuration under ROOT (storage, index, medsr archive "
                        "store) and exec Orthanc with the medsr plugin. Loopback-only unless --remote, which "
                        "requires --user and --password-file (HTTP basic auth; put TLS in front of it).")
    s.add_argument("--root", required=True, help="folder for Orthanc's storage, index and config (created)")
    s.add_argument("--http-port", type=int, default=8042, help="REST/HTTP port (default 8042)")
    s.add_argument("--dicom-port", type=int, default=4242, help="DICOM port (default 4242; 0 disables DICOM)")
    s.add_argument("--aet", default="MEDSR", help="Orthanc's DICOM AE title (default MEDSR)")
    s.add_argument("--remote", action="store_true", help="allow HTTP access from other machines (needs auth)")
    s.add_argument("--user", help="HTTP user name (enables authentication)")
    s.add_argument("--password-file", help="file holding that user's password on one line")
    s.add_argument("--archive-store", help="folder for .medsr.h5 archives (default ROOT/medsr-archives)")
    s.add_argument("--wait-timeout", type=float, default=120.0,
                   help="seconds a POST waits for its job before answering 202 with a job id (default 120)")
    s.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where models run")
    s.add_argument("--orthanc", help="Orthanc binary (default: Orthanc on PATH or /usr/sbin/Orthanc)")
    s.add_argument("--plugin", help="libOrthancPython.so (default: Debian's path)")
    s.add_argument("--skip-python-check", action="store_true",
                   help="start even if the plugin's Python version differs from this one")
    s.add_argument("--dry-run", action="store_true", help="write the config and print the command; do not start")
    _common(s)
    s.set_defaults(func=cmd_serve)

    e = osub.add_parser("env", help="print the plugin script path and PYTHONPATH for an existing Orthanc",
                        description="What to put in an existing Orthanc's configuration and environment "
                        "(exit 3 if orthanc-python embeds another Python version).")
    e.add_argument("--plugin", help="libOrthancPython.so (default: Debian's path)")
    _common(e)
    e.set_defaults(func=cmd_env)
    return o


def main(argv: list[str] | None = None) -> int:
    """``medsr orthanc serve|env ...`` on its own parser (what the tests and ``python -m medsr orthanc`` run)."""
    parser = argparse.ArgumentParser(prog="medsr orthanc")
    sub = parser.add_subparsers(dest="command")
    o = register_cli(sub)
    args = parser.parse_args(["orthanc", *(sys.argv[1:] if argv is None else argv)])
    del o
    try:
        return args.func(args)
    except MedsrError as e:
        print(f"medsr: error: {e}", file=sys.stderr)
        return e.exit_code
