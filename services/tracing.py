"""Tracing set-up for one process, from the standard OpenTelemetry variables (README, Tracing).

    OTEL_TRACES_EXPORTER        unset: tracing off (meshlog's default, nothing is set up);
                                `otlp` (OTLP over HTTP/protobuf), `console` (JSON lines on
                                stderr), `none` (spans made, sampled and propagated, exported
                                nowhere)
    OTEL_EXPORTER_OTLP_ENDPOINT (and OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, _HEADERS, _TIMEOUT):
                                read by the OTLP exporter itself; default http://localhost:4318
    OTEL_EXPORTER_OTLP_PROTOCOL (or _TRACES_PROTOCOL): `http/protobuf` only
    OTEL_SERVICE_NAME           default: the process's role (meshlog-api, meshlog-projector,
                                meshlog-gateway, meshlog for `meshlog up`)
    OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG: read by the SDK (default parentbased_always_on)

Only this module imports the SDK; events, projections and xds_gateway use the API
(`events.bus.trace_context`), which makes nothing until `setup_tracing` installs a provider.
Spans are exported in batches on the SDK's own thread, off the event loop.
"""

from __future__ import annotations

import atexit
import os
import sys
from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from services.errors import ConfigError

__all__ = ["EXPORTERS", "setup_tracing"]

EXPORTERS = ("otlp", "console", "none")
_PROTOCOLS = ("http/protobuf",)


def setup_tracing(service: str) -> TracerProvider | None:
    """Install this process's tracer provider as `OTEL_TRACES_EXPORTER` says, or nothing
    (None) when it is unset. `service`: the default `service.name`. Raises ConfigError
    naming the variable for a value meshlog does not support."""
    env = os.environ
    exporter_name = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if not exporter_name:
        return None
    if exporter_name not in EXPORTERS:
        raise ConfigError(f"OTEL_TRACES_EXPORTER={exporter_name!r}: meshlog supports "
                          f"{', '.join(EXPORTERS)} (or unset: tracing off)")
    exporter = _exporter(exporter_name, env)
    named = env.get("OTEL_SERVICE_NAME") or "service.name=" in env.get(
        "OTEL_RESOURCE_ATTRIBUTES", "")
    # the SDK reads OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES and the sampler variables
    provider = TracerProvider(resource=Resource.create({} if named else {SERVICE_NAME: service}))
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    atexit.register(provider.shutdown)  # flush what is queued
    return provider


def _exporter(name: str, env: Mapping[str, str]) -> SpanExporter | None:
    if name == "none":
        return None
    if name == "console":
        return ConsoleSpanExporter(out=sys.stderr)
    protocol = (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf")
    if protocol not in _PROTOCOLS:
        raise ConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: meshlog exports OTLP "
                          f"over {', '.join(_PROTOCOLS)} (a collector listens on 4318)")
    # imported only when used: it brings requests and the OTLP protobuf classes
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()
