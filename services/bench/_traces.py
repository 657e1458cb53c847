"""Benchmarks with tracing on (README, Tracing): a root span per write, as the API makes.

The benchmarks append without the API, so with `OTEL_TRACES_EXPORTER` set each write gets
the span an API request would give it (`meshlog.bench.write`, sampled by the process's
sampler), and a sampled one's context travels on the append: the projector and the gateways
(child processes, same variables) continue its trace. Without tracing, nothing is done.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
from opentelemetry.trace import Span, SpanKind

from events import PendingAppend
from events.bus.trace_context import tracer, with_trace

__all__ = ["end_all", "traced"]


def traced(appends: Sequence[PendingAppend]) -> tuple[Sequence[PendingAppend], list[Span]]:
    """`appends`, each with a write span's context when sampled; the spans to end."""
    traces = tracer()
    if traces is None:
        return appends, []
    spans = [traces.start_span("meshlog.bench.write", kind=SpanKind.SERVER) for _ in appends]
    return [msgspec.structs.replace(item, trace=with_trace(None, span)) if span.is_recording()
            else item for item, span in zip(appends, spans, strict=True)], spans


def end_all(spans: list[Span]) -> None:
    for span in spans:
        span.end()
