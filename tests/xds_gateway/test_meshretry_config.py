"""What MeshRetries do to a proxy's outbounds (xds_gateway.resources.retries): tcp_proxy's
connect attempts on L4, the route's retry policy on http/http2 (the `http` section) and grpc
(the `grpc` section) ports, Kuma's order, and nothing at all without a MeshRetry."""

from __future__ import annotations

from typing import Any

import pytest

from tests.projections._histories import retry
from tests.xds_gateway._ads import Projection, event_for
from tests.xds_gateway._outbound import apply as _apply
from tests.xds_gateway._outbound import dataplane as _dataplane
from tests.xds_gateway._outbound import view_of
from xds_gateway.resources import retries
from xds_gateway.resources.cache import ResourceCache
from xds_gateway.resources.config_dump import config_json
from xds_gateway.view import ProjectionView

Config = dict[str, list[dict[str, Any]]]
_PORTS = {"backend": 8080, "api": 9090, "db": 5432}


def _view() -> tuple[ProjectionView, Projection]:
    return view_of(_dataplane("backend-1", "10.0.0.1", 8080, "backend", "http"),
                   _dataplane("api-1", "10.0.0.2", 9090, "api", "grpc"),
                   _dataplane("db-1", "10.0.0.3", 5432, "db", "tcp"),
                   _dataplane("web-1", "10.0.0.9", 7070, "web", "http"))


def _filter(config: Config, service: str) -> dict[str, Any]:
    for entry in config["listeners"]:
        (chain,) = entry["resource"]["filterChains"]
        typed: dict[str, Any] = chain["filters"][0]["typedConfig"]
        if typed.get("statPrefix") == f"default_{service}___msvc_{_PORTS[service]}":
            return typed
    raise AssertionError(f"no outbound to {service}")


def _retry_policy(config: Config, service: str) -> dict[str, Any] | None:
    routes = _filter(config, service)["routeConfig"]["virtualHosts"][0]["routes"]
    policies = [r["route"].get("retryPolicy") for r in routes]
    assert all(p == policies[0] for p in policies)  # every route of the outbound alike
    policy: dict[str, Any] | None = policies[0]
    return policy


def test_each_section_goes_to_the_outbounds_of_its_protocol() -> None:
    view, projection = _view()
    before = config_json(view, "default", "web-1", ResourceCache())
    _apply(view, projection, retry("default", "r", ({"kind": "Mesh"}, {
        "tcp": {"maxConnectAttempt": 3},
        "http": {"numRetries": 2, "perTryTimeout": "1s", "retryOn": ["5xx", "503"],
                 "backOff": {"baseInterval": "100ms", "maxInterval": "1s"}},
        "grpc": {"numRetries": 4, "retryOn": ["unavailable"]}})))

    config = config_json(view, "default", "web-1", ResourceCache())

    assert _retry_policy(before, "backend") is None
    assert "maxConnectAttempts" not in _filter(before, "db")
    assert _retry_policy(config, "backend") == {
        "retryOn": "5xx,retriable-status-codes", "numRetries": 2, "perTryTimeout": "1s",
        "retryBackOff": {"baseInterval": "0.100s", "maxInterval": "1s"},
        "retriableStatusCodes": [503]}
    assert _retry_policy(config, "api") == {"retryOn": "unavailable", "numRetries": 4}
    assert _filter(config, "db")["maxConnectAttempts"] == 3
    # nothing else changed: the clusters are the same
    assert config["clusters"] == before["clusters"]


def test_the_more_specific_policy_wins_then_the_first_name_field_by_field() -> None:
    view, projection = _view()
    _apply(view, projection,
           retry("default", "z", ({"kind": "MeshService", "name": "backend"},
                                  {"http": {"numRetries": 9, "perTryTimeout": "9s"}})),
           retry("default", "y", ({"kind": "MeshService", "name": "backend"},
                                  {"http": {"numRetries": 8}})),
           retry("default", "dp", ({"kind": "Mesh"}, {"http": {"retryOn": ["reset"]}}),
                 target={"kind": "Dataplane", "name": "web-1"}))

    policy = _retry_policy(config_json(view, "default", "web-1", ResourceCache()), "backend")

    # y's count over z's, z's perTryTimeout kept, the Dataplane policy's retryOn
    assert policy == {"retryOn": "reset", "numRetries": 8, "perTryTimeout": "9s"}
    other = _retry_policy(config_json(view, "default", "api-1", ResourceCache()), "backend")
    assert other == {"retryOn": "gateway-error,connect-failure,refused-stream",
                     "numRetries": 8, "perTryTimeout": "9s"}


def test_kumas_api_spelling_is_envoys_value_and_zero_retries_is_no_policy() -> None:
    view, projection = _view()
    _apply(view, projection, retry("default", "r",
                                   ({"kind": "Mesh"}, {"http": {"retryOn": ["All5xx", "Reset"]},
                                                       "grpc": {"numRetries": 0}})))

    config = config_json(view, "default", "web-1", ResourceCache())

    assert _retry_policy(config, "backend") == {"retryOn": "5xx,reset"}
    assert _retry_policy(config, "api") is None  # Kuma: numRetries 0, no retries


def test_an_explicit_outbound_gets_the_retries_of_its_destination() -> None:
    view, projection = _view()
    explicit = _dataplane("client-1", "10.0.0.20", 7070, "client", "http")
    explicit["networking"]["outbound"] = [
        {"port": 10001, "backendRef": {"kind": "MeshService", "name": "backend", "port": 8080}}]
    view.apply(projection.fold([event_for(explicit, at=2_500_000_000_000)]))
    _apply(view, projection, retry("default", "r", ({"kind": "MeshService", "name": "backend"},
                                                    {"http": {"numRetries": 3}})))

    config = config_json(view, "default", "client-1", ResourceCache())
    listeners = {entry["name"]: entry["resource"] for entry in config["listeners"]}

    hcm = listeners["outbound:127.0.0.1:10001"]["filterChains"][0]["filters"][0]["typedConfig"]
    assert hcm["routeConfig"]["virtualHosts"][0]["routes"][0]["route"]["retryPolicy"] == {
        "retryOn": "gateway-error,connect-failure,refused-stream", "numRetries": 3}


def test_a_multizone_service_takes_the_mesh_entries_only() -> None:
    mesh_wide = retry("default", "a", ({"kind": "Mesh"}, {"tcp": {"maxConnectAttempt": 3}}),
                      ({"kind": "MeshService", "name": "redis"}, {"tcp": {"maxConnectAttempt": 1}}))

    assert retries.for_destination(retries.merged([mesh_wide]), None) == retries.Retries(
        connect_attempts=3)
    assert retries.for_destination(retries.merged([mesh_wide]), "redis") == retries.Retries(
        connect_attempts=1)
    assert retries.for_destination(retries.merged([]), "redis") is None


def test_status_codes_alone_keep_kumas_default_conditions() -> None:
    """Kuma's configurer keeps its default `retry_on` when `retryOn` holds no condition, and
    adds `retriable-status-codes` for the codes."""
    view, projection = _view()
    _apply(view, projection, retry("default", "r", ({"kind": "Mesh"}, {
        "http": {"retryOn": ["503", "409"]}})))

    policy = _retry_policy(config_json(view, "default", "web-1", ResourceCache()), "backend")

    assert policy == {
        "retryOn": "gateway-error,connect-failure,refused-stream,retriable-status-codes",
        "retriableStatusCodes": [503, 409]}


def test_a_per_try_timeout_of_0s_lifts_a_mesh_wide_one() -> None:
    view, projection = _view()
    _apply(view, projection, retry("default", "r", ({"kind": "Mesh"}, {
        "http": {"perTryTimeout": "1s"}}), ({"kind": "MeshService", "name": "backend"}, {
            "http": {"perTryTimeout": "0s"}})))

    policy = _retry_policy(config_json(view, "default", "web-1", ResourceCache()), "backend")

    assert policy is not None and policy["perTryTimeout"] == "0s"


@pytest.mark.parametrize(("mesh", "service", "back_off"), [
    # the MeshService entry comes later: its interval holds
    ({"baseInterval": "1s"}, {"maxInterval": "100ms"},
     {"baseInterval": "0.100s", "maxInterval": "0.100s"}),
    ({"maxInterval": "100ms"}, {"baseInterval": "1s"},
     {"baseInterval": "1s", "maxInterval": "1s"}),
])
def test_merged_intervals_never_put_the_max_below_the_base(
        mesh: dict[str, str], service: dict[str, str], back_off: dict[str, str]) -> None:
    """Each entry is valid; their merge would be a retry_back_off Envoy refuses (and the
    whole listener update with it)."""
    view, projection = _view()
    _apply(view, projection, retry("default", "r", ({"kind": "Mesh"}, {
        "http": {"backOff": mesh}, "grpc": {"backOff": mesh}}), (
            {"kind": "MeshService", "name": "backend"}, {"http": {"backOff": service}}), (
            {"kind": "MeshService", "name": "api"}, {"grpc": {"backOff": service}})))

    config = config_json(view, "default", "web-1", ResourceCache())

    for service_name in ("backend", "api"):
        policy = _retry_policy(config, service_name)
        assert policy is not None and policy["retryBackOff"] == back_off, service_name


def test_an_ignored_inbound_does_not_select_its_dataplane() -> None:
    """Kuma's `inboundsSelectedByTags` skips inbounds whose state is Ignored."""
    view, projection = _view()
    client = _dataplane("client-1", "10.0.0.20", 7070, "client", "http")
    client["networking"]["inbound"].append({"port": 7071, "state": "Ignored", "tags": {
        "kuma.io/service": "client", "team": "a"}})
    view.apply(projection.fold([event_for(client, at=2_500_000_000_000)]))
    _apply(view, projection, retry("default", "r", ({"kind": "Mesh"}, {
        "http": {"numRetries": 3}}), target={"kind": "MeshSubset", "tags": {"team": "a"}}))

    config = config_json(view, "default", "client-1", ResourceCache())

    assert _retry_policy(config, "backend") is None
