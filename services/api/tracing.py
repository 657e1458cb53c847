"""The API's span per request (README, Tracing): the first span of a write's trace.

ASGI middleware on the routes (`create_app` adds it only when the process has tracing,
`services.tracing`): a server span `<METHOD> <route template>` whose context is current
while the handler runs, so the append it makes is its child (`events.bus.jetstream`) and
the trace follows the event through the projector to the gateways. A caller's W3C
`traceparent` header is continued.
"""

from __future__ import annotations

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from events.bus.trace_context import tracer
from services.api.access_log import note_trace

__all__ = ["RequestTracing"]

_PROPAGATOR = TraceContextTextMapPropagator()


class RequestTracing:
    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        traced = tracer()
        if traced is None or scope["type"] != ScopeType.HTTP:
            await self._app(scope, receive, send)
            return
        method = scope.get("method", "")
        route = scope.get("path_template") or "unmatched"
        carrier = {k.decode("latin-1"): v.decode("latin-1")
                   for k, v in scope.get("headers", ()) if k in (b"traceparent", b"tracestate")}
        parent = _PROPAGATOR.extract(carrier, context=Context()) if carrier else Context()
        with traced.start_as_current_span(
                f"{method} {route}", context=parent, kind=SpanKind.SERVER,
                attributes={"http.request.method": method, "http.route": route,
                            "url.path": scope.get("path", "")}) as span:
            if span.get_span_context().is_valid:
                note_trace(scope, span.get_span_context().trace_id)  # the access log's

            async def sending(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = message["status"]
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(Status(StatusCode.ERROR))
                await send(message)

            await self._app(scope, receive, sending)
