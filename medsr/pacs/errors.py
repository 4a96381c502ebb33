"""The pacs room's errors and how they answer over HTTP: the PacsError family (each with the status the
plugin answers with), ``http_status_for`` any exception, and the one-line JSON ``error_payload``."""
from __future__ import annotations

import re
from typing import Iterable

from ..errors import (ArchiveError, DicomError, InputError, MedsrError, ModelError, OutputError, QualityGateError,
                      SeriesError)


class PacsError(MedsrError):
    """A PACS-side problem; ``http_status`` is what the plugin answers with."""

    exit_code = 1
    http_status = 500


class BadRequest(PacsError):
    """A malformed id, query argument or JSON body."""

    http_status = 400


class UnknownResource(PacsError):
    """No such series / instance in Orthanc, or no such archive / job in medsr."""

    exit_code = 2
    http_status = 404


class OrthancCallError(PacsError):
    """Orthanc refused or failed a REST call (or could not be reached)."""

    http_status = 502


class JobConflict(PacsError):
    """The job is not in a state that allows this (e.g. resuming a job that finished)."""

    http_status = 409


class Busy(PacsError):
    """Too many queued jobs."""

    http_status = 503


def http_status_for(exc: BaseException) -> int:
    """HTTP status the plugin answers for an exception raised by a job or a route."""
    if isinstance(exc, PacsError):
        return exc.http_status
    if isinstance(exc, (QualityGateError, SeriesError, InputError)):
        return 422  # the series exists but is not something medsr archives (or misses the gate)
    if isinstance(exc, OutputError):
        return 409
    if isinstance(exc, ModelError):
        return 400
    if isinstance(exc, (ArchiveError, DicomError)):
        return 500
    if isinstance(exc, MedsrError):
        return 400
    return 500


def error_payload(exc: BaseException, *, scrub: Iterable[tuple[str, str]] = ()) -> dict:
    """JSON body for an error: one line, no traceback; ``scrub`` is (regex, replacement) pairs
    that shorten server paths."""
    if isinstance(exc, MedsrError):
        message = str(exc)
    else:
        first = str(exc).splitlines()[0][:300] if str(exc) else ""
        message = f"internal error: {type(exc).__name__}: {first}".rstrip(": ")
    for pattern, new in scrub:
        message = re.sub(pattern, new, message)
    body = {"error": message, "type": type(exc).__name__, "status": http_status_for(exc)}
    if isinstance(exc, MedsrError):
        body["exit_code"] = exc.exit_code
    return body


__all__ = ["BadRequest", "Busy", "JobConflict", "OrthancCallError", "PacsError", "UnknownResource", "error_payload",
           "http_status_for"]
