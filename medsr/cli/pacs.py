"""The PACS options of ``medsr archive``/``restore``/``archive-batch`` (argparse), over :mod:`medsr.pacs`.

Kept here so the other CLI modules only add one call each. Secrets are never options:
``--auth-file``/``--token-file`` name files, ``$MEDSR_PACS_TOKEN`` is read from the environment.
"""
from __future__ import annotations

import argparse


def add_connection_args(p: argparse.ArgumentParser, *, dimse: bool = True) -> None:
    g = p.add_argument_group("PACS connection (DICOMweb http(s):// and DIMSE dimse:// addresses; docs/pacs.md)")
    g.add_argument("--auth-file", metavar="FILE",
                   help="DICOMweb: file holding one line user:password (HTTP basic); or $MEDSR_PACS_AUTH_FILE")
    g.add_argument("--token-file", metavar="FILE",
                   help="DICOMweb: file holding a bearer token; or $MEDSR_PACS_TOKEN_FILE / $MEDSR_PACS_TOKEN")
    g.add_argument("--ca-bundle", metavar="PEM",
                   help="DICOMweb over https: CA certificates to trust (verification is always on)")
    g.add_argument("--pacs-timeout", type=float, metavar="S", help="seconds per request / DIMSE reply (default 60)")
    if not dimse:
        return
    g.add_argument("--calling-aet", metavar="AET", help="DIMSE: medsr's own AE title (default MEDSR)")
    g.add_argument("--dimse-port", type=int, metavar="P",
                   help="DIMSE: receive C-MOVE sub-operations on this port (default: C-GET, no port opened)")


def connection_from_args(args):
    from ..pacs.credentials import Connection

    return Connection.from_env(auth_file=getattr(args, "auth_file", None), token_file=getattr(args, "token_file", None),
                               ca_bundle=getattr(args, "ca_bundle", None), timeout=getattr(args, "pacs_timeout", None))


def dimse_from_args(args):
    from ..pacs.dimse import DimseOptions

    kw = {}
    if getattr(args, "calling_aet", None):
        kw["calling_aet"] = args.calling_aet
    if getattr(args, "pacs_timeout", None):
        kw["timeout"] = float(args.pacs_timeout)
    if getattr(args, "dimse_port", None):
        kw["move_port"] = int(args.dimse_port)
    return DimseOptions(**kw)


def _dimse_if(args, address: str):
    return dimse_from_args(args) if str(address).lower().startswith("dimse://") else None


def archive_from_args(args, output, options, progress):
    """``medsr archive <URL>``: fetch, archive, optionally delete the original from the PACS."""
    from dataclasses import replace

    from ..pacs.sources import archive_remote

    return archive_remote(args.series, output, replace(options, delete_original=False),
                          connection=connection_from_args(args), dimse=_dimse_if(args, args.series),
                          delete_original=options.delete_original, progress=progress)


def restore_from_args(args, options) -> tuple[dict, str]:
    """``medsr restore ARCHIVE --to <URL>`` -> (summary, one-line text)."""
    from ..pacs.sources import restore_to

    s = restore_to(args.archive, args.to, options, connection=connection_from_args(args),
                   dimse=_dimse_if(args, args.to))
    text = (f"restored {s['slices']} slices and stored {s['stored']} instances at {s['target']} "
            f"(new series {s['series_instance_uid']}; {s['method']} {s['model_id']} on {s['device']})")
    return s, text


__all__ = ["add_connection_args", "archive_from_args", "connection_from_args", "dimse_from_args",
           "restore_from_args"]
