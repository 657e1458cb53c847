"""The projector's spans (README, Tracing), on the OpenTelemetry API only.

One batch serves many writes, so its span (`meshlog.projector.fold`, covering the fold, the
commit and the publish) links to every traced write of the batch (the `traceparent` of each
record's headers; only sampled writes carry one). Its parent is the first of them: a lone
`apply` is then one trace from the API request to the proxies' ACKs. A batch without a
traced write makes no span. The headers are read here only, never by the fold.

Without tracing in the process (`events.bus.trace_context.tracer()` is None) nothing here
does any work.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from opentelemetry import trace
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind

from events import Record
from events.bus.trace_context import span_context_of, tracer

__all__ = ["MAX_LINKS", "batch_span", "step_span"]

MAX_LINKS = 128
"""Writes linked per batch (the SDK's default span link limit): a rebuild's batch of 1,000
records reads at most this many headers."""


def _writes(batch: Sequence[Record]) -> list[SpanContext]:
    """The sampled writes' contexts (only those are carried: `trace_context.with_trace`)."""
    found: list[SpanContext] = []
    for record in batch:
        span_context = span_context_of(record.headers)
        if span_context is not None and span_context.trace_flags.sampled:
            found.append(span_context)
            if len(found) == MAX_LINKS:
                break
    return found


@contextlib.contextmanager
def batch_span(batch: Sequence[Record], projector: str) -> Iterator[None]:
    """The span of one batch, current inside the block."""
    traced = tracer()
    if traced is None or not batch:
        yield
        return
    writes = _writes(batch)
    if not writes:  # no sampled write in it: no span (head sampling, README, Tracing)
        yield
        return
    context = trace.set_span_in_context(NonRecordingSpan(writes[0]))
    with traced.start_as_current_span(
            "meshlog.projector.fold", context=context, kind=SpanKind.CONSUMER,
            links=[Link(w) for w in writes], attributes={
                "meshlog.projector": projector, "meshlog.batch.events": len(batch),
                "meshlog.batch.first_seq": batch[0].seq,
                "meshlog.batch.last_seq": batch[-1].seq,
                "meshlog.batch.traced_writes": len(writes)}):
        yield


@contextlib.contextmanager
def step_span(name: str, **attributes: int) -> Iterator[None]:
    """A child of the batch's span (commit, publish), made only when that one records."""
    traced = tracer()
    if traced is None or not trace.get_current_span().is_recording():
        yield
        return
    with traced.start_as_current_span(name, attributes=attributes):
        yield
