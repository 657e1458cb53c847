"""`services.tracing.setup_tracing`: the standard OTEL_* variables, off when unset."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.resources import SERVICE_NAME

from events.bus.trace_context import tracer
from services.errors import ConfigError
from services.tracing import setup_tracing
from tests.tracing import restoring_globals

_VARIABLES = ("OTEL_TRACES_EXPORTER", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG",
              "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_EXPORTER_OTLP_PROTOCOL",
              "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_ENDPOINT")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_unset_exporter_leaves_tracing_off() -> None:
    with restoring_globals():
        assert setup_tracing("meshlog-api") is None
        assert tracer() is None


def test_sampler_and_service_name_come_from_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.1")
    with restoring_globals():
        provider = setup_tracing("meshlog-api")
        assert provider is not None and tracer() is not None
        assert provider.resource.attributes[SERVICE_NAME] == "meshlog-api"
        assert "TraceIdRatioBased{0.1}" in provider.sampler.get_description()
        assert provider.sampler.get_description().startswith("ParentBased")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "cp-eu-1")
    with restoring_globals():
        provider = setup_tracing("meshlog-api")
        assert provider is not None
        assert provider.resource.attributes[SERVICE_NAME] == "cp-eu-1"


@pytest.mark.parametrize("exporter", ["otlp", "console"])
def test_exporters_are_set_up(monkeypatch: pytest.MonkeyPatch, exporter: str) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", exporter)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")  # never reached
    with restoring_globals():
        assert setup_tracing("meshlog") is not None
        assert tracer() is not None


@pytest.mark.parametrize(("variable", "value"), [
    ("OTEL_TRACES_EXPORTER", "zipkin"),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
])
def test_unsupported_values_are_config_errors_naming_the_variable(
        monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv(variable, value)
    with restoring_globals(), pytest.raises(ConfigError, match=variable):
        setup_tracing("meshlog")
