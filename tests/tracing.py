"""In-memory tracing for tests: the process's global tracer provider, set for one test only.

OpenTelemetry lets a process set its global provider once; these helpers put the API's
globals back afterwards (as opentelemetry's own test utilities do), so a test with tracing
leaves later tests without it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Sampler

__all__ = ["in_memory_tracing", "restoring_globals", "spans_named"]


def _reset_globals() -> None:
    # private to opentelemetry-api; what its test utilities (`reset_trace_globals`) reset
    trace._TRACER_PROVIDER_SET_ONCE._done = False  # type: ignore[attr-defined]
    trace._TRACER_PROVIDER = None  # type: ignore[attr-defined]


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
