"""In-memory tracing for tests: the process's global tracer provider, set for one test only.

OpenTelemetry lets a process set its global provider once; these helpers put the API's
globals back afterwards (as opentelemetry's own test utilities do), so a test with tracing
leaves later tests without it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

from opentelemetry import trace
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Sampler
from opentelemetry.util.types import AnyValue

__all__ = ["attributes", "in_memory_tracing", "int_attribute", "parent_id", "restoring_globals",
           "spans_named"]


def _reset_globals() -> None:
    # private to opentelemetry-api; what its test utilities (`reset_trace_globals`) reset
    trace._TRACER_PROVIDER_SET_ONCE._done = False
    trace._TRACER_PROVIDER = None


@contextlib.contextmanager
def in_memory_tracing(sampler: Sampler = ALWAYS_ON) -> Iterator[InMemorySpanExporter]:
    """Tracing on in this process (every span kept in memory) for the block."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _reset_globals()
    trace.set_tracer_provider(provider)
    try:
        yield exporter
    finally:
        provider.shutdown()
        _reset_globals()


def spans_named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def attributes(item: ReadableSpan | Event) -> Mapping[str, AnyValue]:
    """The attributes of a span or span event (OpenTelemetry's are None when there are none)."""
    return item.attributes or {}


def int_attribute(item: ReadableSpan | Event, name: str) -> int:
    """An attribute that holds a count."""
    value = attributes(item)[name]
    assert isinstance(value, int), f"{item.name}: {name} is {value!r}, not an int"
    return value


def parent_id(span: ReadableSpan) -> int | None:
    """The span id of `span`'s parent; None for a root span."""
    return span.parent.span_id if span.parent is not None else None


@contextlib.contextmanager
def restoring_globals() -> Iterator[None]:
    """Whatever the block sets as the global tracer provider is gone after it."""
    _reset_globals()
    try:
        yield
    finally:
        provider = trace.get_tracer_provider()
        shutdown = getattr(provider, "shutdown", None)
        if shutdown is not None:
            shutdown()
        _reset_globals()
