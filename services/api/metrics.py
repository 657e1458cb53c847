"""The API's Prometheus metrics and the `/metrics` route (services.metrics renders them).

    meshlog_api_requests_total{method,route,status}            counter
    meshlog_api_request_duration_seconds{method,route,status}  histogram
    meshlog_read_model_sequence                                gauge: the read models' checkpoint
    meshlog_quarantined_events                                 gauge: quarantined events in them
    meshlog_skipped_events                                     gauge: events skipped in them
    meshlog_api_auth_refusals_total{reason}                    counter: 401s and 403s

`route` is the route's path template (`/meshes/{mesh}`), so label values stay few;
a request no route matched is `unmatched`. A refusal's `reason` is one of
`services.api.auth.API_REFUSALS`, each present from the start (at 0), so that `rate()` and
`increase()` see a refusal's first occurrence too.
"""

from __future__ import annotations

import time

from litestar import Response, get
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import Counter, Gauge, Histogram

from services.api._state import ApiRequest, api_state
from services.api.auth import API_REFUSALS, ApiRefusal
from services.metrics import CONTENT_TYPE, exposition

__all__ = ["RequestMetrics", "metrics", "refused"]

_LABELS = ["method", "route", "status"]
REQUESTS = Counter("meshlog_api_requests_total", "HTTP API requests answered.", _LABELS)
DURATION = Histogram("meshlog_api_request_duration_seconds",
                     "HTTP API request latency, from the request to the response's start.",
                     _LABELS)
SEQUENCE = Gauge("meshlog_read_model_sequence",
                 "The last event-log sequence in the API's read models.")
QUARANTINED = Gauge("meshlog_quarantined_events",
                    "Events the projector could not apply, in the API's read models.")
SKIPPED = Gauge("meshlog_skipped_events",
                "Events folded as nothing by an operator's decision (meshlog quarantine skip), "
                "in the API's read models.")
AUTH_REFUSALS = Counter("meshlog_api_auth_refusals_total",
                        "Requests the API refused: 401 (no, or an unusable, user token) and "
                        "403 (not admin), by reason.", ["reason"])
for _reason in API_REFUSALS:
    AUTH_REFUSALS.labels(_reason)


def refused(reason: ApiRefusal) -> None:
    """Count a request refused for `reason` (services.api.problems, where every refusal
    becomes its 401 or 403)."""
    AUTH_REFUSALS.labels(reason).inc()


class RequestMetrics:
    """ASGI middleware around the whole app: counts and times every HTTP request, also those
    answered by an exception handler or no route."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers if the app raises before responding

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, sending)
        finally:
            # the router sets the matched route's template in the same scope
            route = scope.get("path_template") or "unmatched"
            labels = (scope.get("method", ""), route, str(status))
            REQUESTS.labels(*labels).inc()
            DURATION.labels(*labels).observe(time.perf_counter() - started)


@get("/metrics", summary="Prometheus metrics (every part of this process)",
     include_in_schema=False)
async def metrics(request: ApiRequest) -> Response[bytes]:
    store = api_state(request.app).store
    SEQUENCE.set(await store.checkpoint())
    QUARANTINED.set(len(await store.scan("quarantine")))
    SKIPPED.set(len(await store.scan("skipped")))
    return Response(await exposition(), media_type=CONTENT_TYPE)
