"""HTTP plumbing of the /medsr routes: the :class:`Request` a route sees, the :class:`Response` it
answers, strict JSON bodies (``json_safe``: NaN/inf -> null) and the ``timeout`` argument's check."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from .errors import BadRequest


@dataclass(frozen=True)
class Request:
    """What a route sees. Orthanc gives plugins query arguments for GET only, so POST routes
    also read ``wait``/``timeout`` from the JSON body and the ``Prefer`` header (RFC 7240)."""

    query: dict
    body: bytes
    headers: dict


@dataclass(frozen=True)
class Response:
    status: int
    body: str
    content_type: str = "application/json"
    allow: str = ""  # for 405: the allowed methods


def seconds_arg(value, limit: float) -> float:
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise BadRequest("timeout must be a number of seconds") from None
    if not (0 <= t <= limit):
        raise BadRequest(f"timeout must be between 0 and {limit:g} seconds")
    return t


def json_safe(obj: Any) -> Any:
    """NaN/inf -> null (strict JSON), tuples -> lists, recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def json_response(obj: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(json_safe(obj), default=str, allow_nan=False))


__all__ = ["Request", "Response", "json_response", "json_safe", "seconds_arg"]
