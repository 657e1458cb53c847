"""W3C trace context (`traceparent`, `tracestate`) in NATS message headers.

The log and the projection bus carry a write's trace from the API to the gateways' pushes
(README, Tracing). This module uses the OpenTelemetry *API* only (`opentelemetry-api`, which
the SDK brings), like any instrumented library: the SDK, its exporters and samplers are set
up per process by `services.tracing`, from the standard `OTEL_*` variables. Without that
set-up the API's global provider is a proxy that makes nothing, and `tracer()` says so with
None: the callers' hot paths then do no tracing work at all (not even a no-op span).

Trace headers are never input to a fold: the projector reads them only to link its batch
span, so read models are the same with tracing on or off, and on replay.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import NoOpTracerProvider, ProxyTracerProvider, Span, SpanContext
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = ["TRACEPARENT", "current_trace_headers", "span_context_of", "trace_headers",
           "tracer", "with_trace"]

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
_PROPAGATOR = TraceContextTextMapPropagator()
_INSTRUMENTATION = "meshlog"

_cached: tuple[trace.TracerProvider, trace.Tracer] | None = None


def tracer() -> trace.Tracer | None:
    """meshlog's tracer, or None when this process has no tracing (no SDK provider was set
    up: the default, see services.tracing)."""
    global _cached
    provider = trace.get_tracer_provider()
    if isinstance(provider, (ProxyTracerProvider, NoOpTracerProvider)):
        return None
    if _cached is None or _cached[0] is not provider:
        _cached = (provider, provider.get_tracer(_INSTRUMENTATION))
    return _cached[1]


def with_trace(headers: Mapping[str, str] | None, span: Span) -> dict[str, str]:
    """`headers` plus `span`'s trace context if it is sampled (recording). An unsampled
    trace is not carried on (W3C would allow it): the writes sampling left out then cost the
    projector and the gateways nothing, and a batch without a sampled write makes no span."""
    out = dict(headers or {})
    if span.is_recording():
        _PROPAGATOR.inject(out, context=trace.set_span_in_context(span))
    return out


def current_trace_headers() -> dict[str, str]:
    """The current span's trace context as headers; empty without tracing, without a span
    or when it is not sampled."""
    if tracer() is None:
        return {}
    return with_trace(None, trace.get_current_span())


def trace_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The trace context headers among `headers` (empty if none)."""
    if TRACEPARENT not in headers:
        return {}
    return {k: headers[k] for k in (TRACEPARENT, TRACESTATE) if k in headers}


def span_context_of(headers: Mapping[str, str]) -> SpanContext | None:
    """The remote span context a message's headers carry, or None."""
    if TRACEPARENT not in headers:
        return None
    context = _PROPAGATOR.extract(headers, context=Context())
    span_context = trace.get_current_span(context).get_span_context()
    return span_context if span_context.is_valid else None
