"""Errors as RFC 7807 problem documents: each of meshlog's exceptions has its status."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Response
from litestar.exceptions import HTTPException

from events import (
    Conflict,
    IdempotencyKeyReused,
    InvalidResource,
    JetStreamUnavailable,
    NotFound,
    TooLarge,
    TransientError,
)
from events.commands import NoSecretKey
from events.documents import MAX_DOCUMENT_BYTES
from projections import StoreError, StoreUnavailable
from services.api._state import ApiRequest
from services.api.access_log import note_refusal
from services.api.auth import Forbidden, NotAuthenticated
from services.api.metrics import refused

__all__ = ["on_error"]

log = logging.getLogger("meshlog.api")


_RETRY_AFTER_S = 2
"""Seconds a client is asked to wait before retrying a write JetStream did not take."""


def _problem(status: int, title: str, detail: str, **extra: Any) -> Response[dict[str, Any]]:
    return Response({"type": "about:blank", "status": status, "title": title, "detail": detail,
                     **extra}, status_code=status, media_type="application/problem+json")


def on_error(request: ApiRequest, exc: Exception) -> Response[dict[str, Any]]:
    match exc:
        case NotAuthenticated():
            refused(exc.reason)
            note_refusal(request.scope, exc.reason)
            response = _problem(401, "Unauthorized", str(exc))
            response.headers["WWW-Authenticate"] = 'Bearer realm="meshlog"'
            return response
        case Forbidden():
            refused(exc.reason)
            note_refusal(request.scope, exc.reason)
            return _problem(403, "Forbidden", str(exc))
        case InvalidResource():
            return _problem(400, "Invalid resource", str(exc), invalid_parameters=[
                {"field": v.path, "reason": v.message} for v in exc.violations])
        case NotFound():
            return _problem(404, "Not found", str(exc))
        case Conflict():
            return _problem(409, "Conflict", str(exc))
        case TooLarge():
            return _problem(413, "Payload too large", str(exc), limit=exc.limit, size=exc.size)
        case IdempotencyKeyReused():
            return _problem(422, "Idempotency-Key reused", str(exc))
        case StoreError() if not isinstance(exc, StoreUnavailable):
            return _problem(409, "Conflict", str(exc))
        case JetStreamUnavailable():
            # RFC 7807 with RFC 9110's Retry-After: a write may be retried as it is
            response = _problem(503, "JetStream unavailable", str(exc))
            response.headers["Retry-After"] = str(_RETRY_AFTER_S)
            return response
        case TransientError() | StoreUnavailable() | NoSecretKey():
            return _problem(503, "Unavailable", str(exc))
        case HTTPException() if exc.status_code == 413:  # Litestar's request_max_body_size
            return _problem(413, "Payload too large", f"the body is more than "
                            f"{MAX_DOCUMENT_BYTES} bytes", limit=MAX_DOCUMENT_BYTES)
        case HTTPException():
            return _problem(exc.status_code, "Request failed", exc.detail)
        case _:
            log.exception("unexpected error in the API", exc_info=exc)
            return _problem(500, "Internal error", f"{type(exc).__name__}: {exc}")
