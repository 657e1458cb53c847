"""The API's access log (docs/operations.md, Access log): one line per HTTP request.

ASGI middleware around the whole server (`services.runtime.api_server` puts it outside the
metrics and the drain, so a request no route matched, a refusal, an error and a 503 of the
drain each get their line too). The line goes to the logger `meshlog.api.access` at INFO,
through the process's logging setup (stderr; `services.cli.main`), as `key=value` pairs
(logfmt); a value with anything but `[A-Za-z0-9_.:/{}@+,%~-]` is a JSON string, so a line is
always one line and no request can forge a field:

    method=PUT path=/meshes/default route=/meshes/{mesh} status=401 duration_ms=1.3 bytes=187
    client=127.0.0.1 refusal=expired idempotency_key=true

Fields, in this order, each absent when it does not apply: `method`; `path` (as sent,
percent-encoded, without the query string, at most `MAX_PATH` characters and then `...`);
`route` (the matched route's template, to group by); `status`; `duration_ms` (from the
request to its response's last byte handed to the server); `bytes` (of the response body);
`client` (the socket's peer); `forwarded_for` (the `X-Forwarded-For` header, only when the
operator says a trusted proxy is in front: `forwarded_for=True`); `user` (an authenticated
caller's name: a user token's `Name`, or `mesh-system:admin` for a loopback client), `auth`
(`token` or `loopback`) and `admin` (`true` when in `mesh-system:admin`); `refusal` (a 401's
or 403's reason, the words of `meshlog_api_auth_refusals_total{reason}`); `request_id` (the
caller's `X-Request-Id`); `idempotency_key` (`true` when the request has one: never its
value); `trace_id` (with tracing on, `services.api.tracing`).

Never logged: a body, a query string, a header's value but those two (never
`Authorization`, so never a token or any part of it).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import MutableMapping
from typing import Any, Final, cast

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from services.api.auth import User

__all__ = ["ACCESS_LOGGER", "MAX_PATH", "AccessLog", "note_refusal", "note_trace"]

ACCESS_LOGGER: Final = "meshlog.api.access"
MAX_PATH: Final = 256
"""Characters of a path logged; a longer one ends in `...`."""
_MAX_HEADER: Final = 128
"""Characters of `X-Request-Id` and `X-Forwarded-For` logged."""

log = logging.getLogger(ACCESS_LOGGER)

_REFUSAL: Final = "meshlog.refusal"
_TRACE: Final = "meshlog.trace_id"
_BARE = re.compile(r"[A-Za-z0-9_.:/{}@+,%~-]+")


def _extensions(scope: Scope) -> MutableMapping[str, Any]:
    return cast("MutableMapping[str, Any]", scope)


def note_refusal(scope: Scope, reason: str) -> None:
    """The request of `scope` is refused (401 or 403) for `reason` (services.api.problems)."""
    _extensions(scope)[_REFUSAL] = reason


def note_trace(scope: Scope, trace_id: int) -> None:
    """The request of `scope` runs in trace `trace_id` (services.api.tracing)."""
    _extensions(scope)[_TRACE] = format(trace_id, "032x")


def _value(text: str, limit: int) -> str:
    if len(text) > limit:
        text = text[:limit] + "..."
    return text if _BARE.fullmatch(text) else json.dumps(text)


class AccessLog:
    """`forwarded_for`: log `X-Forwarded-For` too (the API is behind a proxy the operator
    trusts to set it; otherwise any client could write it)."""

    def __init__(self, app: ASGIApp, *, forwarded_for: bool = False) -> None:
        self._app = app
        self._forwarded_for = forwarded_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or not log.isEnabledFor(logging.INFO):
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers if the app raises before responding
        sent = 0
        logged = False

        async def sending(message: Message) -> None:
            nonlocal status, sent, logged
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
                if not message.get("more_body", False) and not logged:
                    # before the last byte goes: once a client has its answer, the line is out
                    logged = True
                    self._log(scope, status, sent, started)
            await send(message)

        try:
            await self._app(scope, receive, sending)
        finally:
            if not logged:
                self._log(scope, status, sent, started)

    def _log(self, scope: Scope, status: int, sent: int, started: float) -> None:
        try:
            log.info(self._line(scope, status, sent, time.perf_counter() - started))
        except Exception:  # a log line never fails a request
            log.exception("no access log line for a request")

    def _line(self, scope: Scope, status: int, sent: int, elapsed_s: float) -> str:
        raw = scope.get("raw_path")
        path = raw.decode("latin-1") if isinstance(raw, bytes) else scope.get("path", "")
        fields = [f"method={_value(str(scope.get('method', '')), 16)}",
                  f"path={_value(path, MAX_PATH)}"]
        route = scope.get("path_template")
        if route:
            fields.append(f"route={_value(str(route), MAX_PATH)}")
        fields += [f"status={status}", f"duration_ms={elapsed_s * 1000:.1f}", f"bytes={sent}"]
        client = scope.get("client")
        if client:
            fields.append(f"client={_value(str(client[0]), 64)}")
        headers = {name: value for name, value in scope.get("headers", ())
                   if name in (b"authorization", b"x-request-id", b"idempotency-key",
                               b"x-forwarded-for")}
        forwarded = headers.get(b"x-forwarded-for")
        if self._forwarded_for and forwarded is not None:
            fields.append(f"forwarded_for={_value(forwarded.decode('latin-1'), _MAX_HEADER)}")
        user = scope.get("user")
        if isinstance(user, User) and user.is_authenticated:
            via = "token" if b"authorization" in headers else "loopback"
            fields += [f"user={_value(user.name, _MAX_HEADER)}", f"auth={via}"]
            if user.is_admin:
                fields.append("admin=true")
        extensions = _extensions(scope)
        refusal = extensions.get(_REFUSAL)
        if refusal is not None:
            fields.append(f"refusal={_value(refusal, 32)}")
        request_id = headers.get(b"x-request-id")
        if request_id is not None:
            fields.append(f"request_id={_value(request_id.decode('latin-1'), _MAX_HEADER)}")
        if b"idempotency-key" in headers:
            fields.append("idempotency_key=true")
        trace_id = extensions.get(_TRACE)
        if trace_id is not None:
            fields.append(f"trace_id={trace_id}")
        return " ".join(fields)
