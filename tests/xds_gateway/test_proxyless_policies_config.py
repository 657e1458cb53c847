"""What MeshTimeouts and MeshRetries do to a proxyless gRPC client's config
(xds_gateway.resources.proxyless_policies): its targets' routes take what gRPC reads, merged
by the rules every proxy's policies follow; nothing else of its config changes, and without
an entry about a destination its route is the bytes it always was. The full config of one
case: testdata/grpc-policies.*; real grpcio clients: tests/integration/test_proxyless_policies.py.
"""

from __future__ import annotations

from typing import Any

from events import MeshRetry, MeshRetryDeleted, MeshTimeout, MeshTimeoutDeleted
from tests.projections._histories import History, retry, timeout
from tests.xds_gateway._ads import Projection, event_for
from xds_gateway.resources.cache import ResourceCache
from xds_gateway.resources.config_dump import config_json
from xds_gateway.resources.node import ProxyNode
from xds_gateway.view import ProjectionView

Config = dict[str, list[dict[str, Any]]]
_GRPC = ProxyNode(user_agent_name="gRPC C-core linux")


def _dataplane(name: str, address: str, port: int, service: str, protocol: str = "grpc"
               ) -> dict[str, Any]:
    return {"type": "Dataplane", "mesh": "default", "name": name,
            "networking": {"address": address, "inbound": [
                {"port": port, "protocol": protocol, "tags": {"kuma.io/service": service}}]}}


def _view() -> tuple[ProjectionView, Projection]:
    projection, view = Projection(), ProjectionView()
    view.apply(projection.fold([*History().mesh("default").events, *(
        event_for(doc, at=10 + i) for i, doc in enumerate([
            _dataplane("backend-1", "10.0.0.1", 8080, "backend"),
            _dataplane("api-1", "10.0.0.2", 9090, "api", "http"),
            _dataplane("client-1", "10.0.0.9", 7070, "client"),
        ]))]))
    return view, projection


def _apply(view: ProjectionView, projection: Projection,
           *policies: MeshTimeout | MeshRetry) -> None:
    history = History(start=2_000_000_000_000)
    for p in policies:
        if isinstance(p, MeshTimeout):
            history.apply_timeout(p)
        else:
            history.apply_retry(p)
    view.apply(projection.fold(history.events))


def _config(view: ProjectionView, cache: ResourceCache | None = None) -> Config:
    return config_json(view, "default", "client-1", cache or ResourceCache(), node=_GRPC)


def _action(config: Config, target: str) -> dict[str, Any]:
    for entry in config["routes"]:
        if entry["name"] == target:
            (host,) = entry["resource"]["virtualHosts"]
            (route,) = host["routes"]
            action: dict[str, Any] = route["route"]
            return action
    raise AssertionError(f"no route {target}")


def test_a_proxyless_clients_routes_take_the_merged_policies_and_nothing_else_changes() -> None:
    view, projection = _view()
    before = _config(view)
    _apply(view, projection,
           timeout("default", "t", ({"kind": "Mesh"}, {"connectionTimeout": "1s",
                                                       "http": {"requestTimeout": "2s"}})),
           retry("default", "r", ({"kind": "Mesh"}, {"tcp": {"maxConnectAttempt": 2},
                                                     "http": {"numRetries": 4},
                                                     "grpc": {"numRetries": 2}})))

    after = _config(view)

    for section in ("clusters", "endpoints", "listeners", "secrets"):
        assert after[section] == before[section], section
    # api, backend and client, by name and by hostname, whatever the port's protocol
    assert len(after["routes"]) == len(before["routes"]) == 6
    for entry in after["routes"]:
        (host,) = entry["resource"]["virtualHosts"]
        assert host["routes"][0]["route"] == {
            "cluster": _action(before, entry["name"])["cluster"],
            "maxStreamDuration": {"maxStreamDuration": "2s", "grpcTimeoutHeaderMax": "2s"},
            # Kuma's default conditions, those gRPC knows
            "retryPolicy": {"retryOn": "cancelled,resource-exhausted,unavailable",
                            "numRetries": 2}}


def test_the_earlier_of_request_timeout_and_max_stream_duration_caps_the_call() -> None:
    view, projection = _view()
    _apply(view, projection,
           timeout("default", "t", ({"kind": "Mesh"}, {"http": {
               "requestTimeout": "3s", "maxStreamDuration": "500ms"}}),
                   ({"kind": "MeshService", "name": "api"}, {"http": {
                       "maxStreamDuration": "0s"}})))

    config = _config(view)

    assert _action(config, "backend:8080")["maxStreamDuration"]["maxStreamDuration"] == "0.500s"
    # api's entry lifts the Mesh entry's maxStreamDuration: its requestTimeout is left
    assert _action(config, "api:9090")["maxStreamDuration"] == {
        "maxStreamDuration": "3s", "grpcTimeoutHeaderMax": "3s"}


def test_a_meshservice_entrys_zero_lifts_a_mesh_entrys_timeout_and_retries() -> None:
    """The merge is every proxy's (policy_rules): `requestTimeout: 0s` is none, and
    `numRetries: 0` no retry policy (gRPC would NACK a num_retries of 0)."""
    view, projection = _view()
    _apply(view, projection,
           timeout("default", "t", ({"kind": "Mesh"}, {"http": {"requestTimeout": "1s"}}),
                   ({"kind": "MeshService", "name": "backend"},
                    {"http": {"requestTimeout": "0s"}})),
           retry("default", "r", ({"kind": "Mesh"}, {"grpc": {"numRetries": 3}}),
                 ({"kind": "MeshService", "name": "backend"}, {"grpc": {"numRetries": 0}})))

    config = _config(view)

    assert _action(config, "backend:8080") == {"cluster": "default_backend___msvc_8080"}
    assert _action(config, "api:9090")["retryPolicy"]["numRetries"] == 3


def test_policies_that_do_not_select_the_client_or_that_grpc_ignores_change_nothing() -> None:
    view, projection = _view()
    before = _config(view)
    _apply(view, projection,
           timeout("default", "others", ({"kind": "Mesh"}, {"http": {"requestTimeout": "1s"}}),
                   target={"kind": "MeshService", "name": "backend"}),
           timeout("default", "ignored", ({"kind": "Mesh"}, {
               "connectionTimeout": "1s", "idleTimeout": "1s", "http": {
                   "streamIdleTimeout": "1s", "maxConnectionDuration": "1s",
                   "requestHeadersTimeout": "1s"}})),
           retry("default", "ignored", ({"kind": "Mesh"}, {
               "tcp": {"maxConnectAttempt": 2}, "http": {"numRetries": 2}})))

    assert _config(view) == before


def test_deleting_the_policies_brings_back_the_same_bytes_through_one_cache() -> None:
    view, projection = _view()
    cache = ResourceCache()
    before = _config(view, cache)
    _apply(view, projection,
           timeout("default", "t", ({"kind": "Mesh"}, {"http": {"requestTimeout": "1s"}})),
           retry("default", "r", ({"kind": "Mesh"}, {"grpc": {"retryOn": ["Unavailable"]}})))
    assert _action(_config(view, cache), "backend:8080")["retryPolicy"] == {
        "retryOn": "unavailable"}

    view.apply(projection.fold([
        MeshTimeoutDeleted(at=3_000_000_000_000, mesh="default", name="t"),
        MeshRetryDeleted(at=3_000_000_000_001, mesh="default", name="r")]))

    assert _config(view, cache) == before
