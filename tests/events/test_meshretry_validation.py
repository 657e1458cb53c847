"""MeshRetry documents: Kuma's universal format and rules, every violation with its path and
value; the events round-trip."""

from __future__ import annotations

from typing import Any

import pytest

from events import (
    InvalidResource,
    MeshRetry,
    MeshRetryApplied,
    decode_event,
    decode_resource,
    encode_event,
)


def _mr(*to: tuple[dict[str, Any], dict[str, Any]], target: dict[str, Any] | None = None
        ) -> dict[str, Any]:
    spec: dict[str, Any] = {"to": [{"targetRef": ref, "default": conf} for ref, conf in to]}
    if target is not None:
        spec["targetRef"] = target
    return {"type": "MeshRetry", "mesh": "default", "name": "retries", "spec": spec}


def _violations(raw: Any) -> list[str]:
    with pytest.raises(InvalidResource) as info:
        decode_resource(raw)
    return [str(v) for v in info.value.violations]


KUMAS_EXAMPLE = _mr(({"kind": "MeshService", "name": "backend"}, {
    "tcp": {"maxConnectAttempt": 5},
    "http": {"numRetries": 10, "perTryTimeout": "16s",
             "backOff": {"baseInterval": "15s", "maxInterval": "20m"},
             "retryOn": ["5xx", "gateway-error", "retriable-4xx", "503"]},
    "grpc": {"numRetries": 5, "perTryTimeout": "2s",
             "retryOn": ["cancelled", "deadline-exceeded", "unavailable"]}}),
    target={"kind": "MeshSubset", "tags": {"team": "a"}})


def test_kumas_example_decodes_and_its_event_round_trips() -> None:
    mr = decode_resource(KUMAS_EXAMPLE)

    assert isinstance(mr, MeshRetry)
    conf = mr.spec.to[0].default
    assert conf.tcp is not None and conf.tcp.max_connect_attempt == 5
    assert conf.http is not None and conf.http.retry_on == ["5xx", "gateway-error",
                                                            "retriable-4xx", "503"]
    event = MeshRetryApplied(at=1, policy=mr)
    assert decode_event(encode_event(event), seq=1, subject="s") == event


def test_the_targetref_kinds_each_place_takes() -> None:
    raw = _mr(({"kind": "MeshSubset", "tags": {"a": "b"}}, {"tcp": {"maxConnectAttempt": 1}}),
              target={"kind": "MeshGateway", "name": "gw"})

    found = _violations(raw)

    assert any("spec.targetRef.kind" in v and "MeshGateway" in v for v in found)
    assert any("spec.to[0].targetRef.kind" in v and "MeshSubset" in v for v in found)


@pytest.mark.parametrize(("conf", "path", "value"), [
    ({}, "spec.to[0].default", "tcp"),
    ({"tcp": {}}, "spec.to[0].default.tcp", "maxConnectAttempt"),
    ({"tcp": {"maxConnectAttempt": 0}}, "spec.to[0].default.tcp.maxConnectAttempt", "0"),
    ({"http": {}}, "spec.to[0].default.http", "numRetries"),
    ({"http": {"numRetries": -1}}, "spec.to[0].default.http.numRetries", "-1"),
    ({"http": {"perTryTimeout": "1d"}}, "spec.to[0].default.http.perTryTimeout", "'1d'"),
    ({"http": {"perTryTimeout": "-1s"}}, "spec.to[0].default.http.perTryTimeout", "'-1s'"),
    ({"grpc": {"perTryTimeout": "9" * 5000 + "s"}}, "spec.to[0].default.grpc.perTryTimeout",
     "is not a duration"),
    ({"http": {"backOff": {"baseInterval": "0s"}}},
     "spec.to[0].default.http.backOff.baseInterval", "'0s'"),
    ({"http": {"backOff": {"baseInterval": "-1s"}}},
     "spec.to[0].default.http.backOff.baseInterval", "'-1s'"),
    ({"http": {"backOff": {"baseInterval": "2s", "maxInterval": "1s"}}},
     "spec.to[0].default.http.backOff.maxInterval", "'1s'"),
    ({"http": {"retryOn": ["5xx", "teapot"]}}, "spec.to[0].default.http.retryOn[1]",
     "'teapot'"),
    ({"http": {"retryOn": ["999"]}}, "spec.to[0].default.http.retryOn[0]", "'999'"),
    ({"grpc": {"retryOn": ["5xx"]}}, "spec.to[0].default.grpc.retryOn[0]", "'5xx'"),
    ({"http": {"retryOn": ["All5xx", "HttpMethodGet"]}}, "spec.to[0].default.http.retryOn[1]",
     "'HttpMethodGet'"),
])
def test_each_violation_names_its_field_and_value(conf: dict[str, Any], path: str,
                                                  value: str) -> None:
    found = _violations(_mr(({"kind": "Mesh"}, conf)))

    assert any(v.startswith(path) and value in v for v in found), found


def test_a_policy_without_entries_is_refused() -> None:
    raw = {"type": "MeshRetry", "mesh": "default", "name": "r", "spec": {}}

    assert any("spec.to" in v for v in _violations(raw))


def test_a_per_try_timeout_of_0s_is_accepted() -> None:
    """Kuma's API: `0s` disables the per-try timeout (Envoy reads 0 as none)."""
    mr = decode_resource(_mr(({"kind": "Mesh"}, {"http": {"perTryTimeout": "0s"},
                                                 "grpc": {"perTryTimeout": "0"}})))

    assert isinstance(mr, MeshRetry)


@pytest.mark.parametrize(("section", "field", "value"), [
    ("http", "retriableRequestHeaders", [{"name": ":method", "value": "GET"}]),
    ("http", "retriableResponseHeaders", [{"name": "x-retry", "value": "yes"}]),
    ("http", "hostSelection", [{"predicate": "OmitPreviousHosts"}]),
    ("http", "hostSelectionRetryMaxAttempts", 3),
    ("grpc", "rateLimitedBackOff", {"resetHeaders": [{"name": "retry-after",
                                                      "format": "Seconds"}]}),
])
def test_kumas_fields_meshlog_does_not_model_are_refused(section: str, field: str,
                                                          value: Any) -> None:
    """Not applied without them: a policy that retries GETs only must not retry a POST."""
    found = _violations(_mr(({"kind": "Mesh"}, {section: {"numRetries": 2, field: value}})))

    assert f"spec.to[0].default.{section}.{field}: unknown field" in found, found
