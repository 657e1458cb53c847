"""`build_snapshot` per proxy: DNS for transparent proxies, api_listeners for gRPC nodes only,
reachableBackends applied to listeners, clusters and DNS, encode once; node parsing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from envoy.config.core.v3.base_pb2 import Node
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.extensions.filters.udp.dns_filter.v3.dns_filter_pb2 import DnsFilterConfig
from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest, DiscoveryResponse
from google.protobuf import any_pb2

from tests.xds_gateway._ads import ADS, Projection, dataplane, event_for
from xds_gateway import Gateway
from xds_gateway.resources.cache import ResourceCache
from xds_gateway.resources.node import DEFAULT_DNS_PORT, InvalidNode, ProxyNode, proxy_node
from xds_gateway.resources.snapshot import Snapshot, build_snapshot
from xds_gateway.type_urls import CLUSTER, ENDPOINT, LISTENER, ROUTE
from xds_gateway.view import ProjectionView

GRPC = ProxyNode(user_agent_name="gRPC C-core linux")


def _view(*docs: dict[str, Any]) -> ProjectionView:
    view = ProjectionView()
    view.apply(Projection().fold(event_for(d, at=i + 1) for i, d in enumerate(docs)))
    return view


def _tp(doc: dict[str, Any], refs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    doc["networking"]["transparentProxying"] = (
        {} if refs is None else {"reachableBackends": {"refs": refs}})
    return doc


MESH = {"type": "Mesh", "name": "default"}
BACKENDS = [dataplane("backend-1", "10.0.0.1", 8080, "backend"),
            dataplane("db-1", "10.0.0.2", 5432, "db")]


def _dns_records(snapshot: Snapshot) -> dict[str, list[str]]:
    listener = Listener.FromString(
        any_pb2.Any.FromString(snapshot.resources[LISTENER]["meshlog:dns"].any).value)
    config = DnsFilterConfig()
    listener.listener_filters[0].typed_config.Unpack(config)
    return {d.name: list(d.endpoint.address_list.address)
            for d in config.server_config.inline_dns_table.virtual_domains}


def test_transparent_proxy_gets_a_dns_listener_with_every_reachable_hostname() -> None:
    view = _view(MESH, *BACKENDS, _tp(dataplane("web-1", "10.0.0.9", 7070, "web")))
    snapshot = build_snapshot(view, "default", "web-1", ResourceCache())
    vips = {n: ms.status.vips[0].ip for n, ms in view.meshservices["default"].items()}
    assert _dns_records(snapshot) == {f"{n}.svc.mesh.local": [vip] for n, vip in vips.items()}
    listener = Listener.FromString(
        any_pb2.Any.FromString(snapshot.resources[LISTENER]["meshlog:dns"].any).value)
    address = listener.address.socket_address
    assert (address.protocol, address.address, address.port_value) == (
        address.UDP, "127.0.0.1", DEFAULT_DNS_PORT)


def test_the_dns_port_comes_from_the_node() -> None:
    view = _view(MESH, *BACKENDS, _tp(dataplane("web-1", "10.0.0.9", 7070, "web")))
    snapshot = build_snapshot(view, "default", "web-1", ResourceCache(),
                              node=ProxyNode(dns_port=25053))
    listener = Listener.FromString(
        any_pb2.Any.FromString(snapshot.resources[LISTENER]["meshlog:dns"].any).value)
    assert listener.address.socket_address.port_value == 25053


def test_no_dns_listener_without_transparent_proxying() -> None:
    view = _view(MESH, *BACKENDS, dataplane("web-1", "10.0.0.9", 7070, "web"))
    assert "meshlog:dns" not in build_snapshot(view, "default", "web-1",
                                               ResourceCache()).resources[LISTENER]


def test_reachable_backends_limit_listeners_clusters_endpoints_and_dns() -> None:
    web = _tp(dataplane("web-1", "10.0.0.9", 7070, "web"),
              refs=[{"kind": "MeshService", "name": "db"}])
    view = _view(MESH, *BACKENDS, web)
    snapshot = build_snapshot(view, "default", "web-1", ResourceCache())
    db_vip = view.meshservices["default"]["db"].status.vips[0].ip
    assert set(snapshot.resources[CLUSTER]) == {"default_db___msvc_5432", "localhost:7070"}
    assert set(snapshot.resources[ENDPOINT]) == {"default_db___msvc_5432"}
    assert set(snapshot.resources[LISTENER]) == {
        "inbound:10.0.0.9:7070", f"outbound:{db_vip}:5432", "meshlog:dns"}
    assert _dns_records(snapshot) == {"db.svc.mesh.local": [db_vip]}


def test_dns_listener_is_encoded_once_for_equal_content() -> None:
    view = _view(MESH, *BACKENDS, _tp(dataplane("web-1", "10.0.0.9", 7070, "web")),
                 _tp(dataplane("web-2", "10.0.0.10", 7070, "web")))
    cache = ResourceCache()
    first = build_snapshot(view, "default", "web-1", cache).resources[LISTENER]["meshlog:dns"]
    builds = cache.builds
    second = build_snapshot(view, "default", "web-2", cache).resources[LISTENER]["meshlog:dns"]
    assert second is first
    assert cache.builds == builds + 1  # only web-2's own inbound listener is new


def test_api_listeners_and_routes_only_for_grpc_nodes() -> None:
    view = _view(MESH, *BACKENDS, dataplane("client-1", "10.0.0.9", 7070, "client"))
    envoy = build_snapshot(view, "default", "client-1", ResourceCache())
    assert "backend:8080" not in envoy.resources[LISTENER]
    assert envoy.resources[ROUTE] == {}
    grpc_ = build_snapshot(view, "default", "client-1", ResourceCache(), node=GRPC)
    targets = {"backend:8080", "backend.svc.mesh.local:8080", "db:5432",
               "db.svc.mesh.local:5432", "client:7070", "client.svc.mesh.local:7070"}
    assert targets <= set(grpc_.resources[LISTENER])
    assert set(grpc_.resources[ROUTE]) == targets
    assert grpc_.resources[ROUTE]["backend:8080"].refs == {"default_backend___msvc_8080"}


def test_proxy_node_reads_user_agent_and_dns_port() -> None:
    node = Node(id="default.web-1", user_agent_name="gRPC Python")
    node.metadata.update({"dataplane.dns.port": "25053"})
    assert proxy_node(node) == ProxyNode(user_agent_name="gRPC Python", dns_port=25053)
    assert proxy_node(node).is_grpc
    assert not proxy_node(Node(id="a.b", user_agent_name="envoy")).is_grpc
    assert proxy_node(Node(id="a.b")).dns_port == DEFAULT_DNS_PORT
    numeric = Node(id="a.b")
    numeric.metadata.update({"dataplane.dns.port": 5353})
    assert proxy_node(numeric).dns_port == 5353


@pytest.mark.parametrize("value", ["abc", "70000", 0.0, 53.5, True])
def test_an_unusable_dns_port_names_the_key_and_value(value: object) -> None:
    node = Node(id="a.b")
    node.metadata.update({"dataplane.dns.port": value})
    with pytest.raises(InvalidNode) as info:
        proxy_node(node)
    assert str(info.value) == (
        f"node.metadata['dataplane.dns.port']: {value!r} is not a port in 1..65535")


async def test_an_unusable_dns_port_ends_only_that_stream() -> None:
    gw = Gateway(None, port=0, no_auth=True)
    gw.view.apply(Projection().fold([event_for(MESH), event_for(BACKENDS[0])]))
    hold = asyncio.Event()

    async def opening(request: DiscoveryRequest) -> AsyncIterator[DiscoveryRequest]:
        yield request
        await hold.wait()  # keep the stream open: the server must answer, not see a half-close

    task = asyncio.create_task(gw.serve())
    await gw.serving.wait()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as channel:
            ads = channel.stream_stream(ADS, request_serializer=DiscoveryRequest.SerializeToString,
                                        response_deserializer=DiscoveryResponse.FromString)
            bad = DiscoveryRequest(type_url=CLUSTER, node=Node(id="default.backend-1"))
            bad.node.metadata.update({"dataplane.dns.port": "abc"})
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in ads(opening(bad)):
                    pass
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "node.metadata['dataplane.dns.port']: 'abc'" in (info.value.details() or "")
            good = DiscoveryRequest(type_url=CLUSTER, node=Node(id="default.backend-1"))
            call = ads(opening(good))
            response: DiscoveryResponse = await asyncio.wait_for(call.read(), 5)
            assert response.type_url == CLUSTER  # the server still serves
            call.cancel()
    finally:
        hold.set()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_proxies_of_a_mesh_share_one_build_of_the_mesh_part_per_generation() -> None:
    view = _view(MESH, *BACKENDS, dataplane("web-1", "10.0.0.9", 7070, "web"),
                 dataplane("web-2", "10.0.0.10", 7070, "web"))
    cache = ResourceCache()
    one = build_snapshot(view, "default", "web-1", cache)
    two = build_snapshot(view, "default", "web-2", cache)
    assert cache.shared_builds == 1
    assert one.of(ENDPOINT) is two.of(ENDPOINT)  # the same mapping, not a copy
    # each keeps its own inbound listener
    assert "inbound:10.0.0.9:7070" in one.of(LISTENER)
    assert "inbound:10.0.0.9:7070" not in two.of(LISTENER)
    assert "inbound:10.0.0.10:7070" in two.of(LISTENER)
    assert one.version(ENDPOINT) == two.version(ENDPOINT)
    assert one.version(LISTENER) != two.version(LISTENER)
    view.apply([])  # a new generation builds the shared part again
    build_snapshot(view, "default", "web-1", cache)
    assert cache.shared_builds == 2


def test_proxies_that_reach_different_services_do_not_share() -> None:
    limited = _tp(dataplane("web-1", "10.0.0.9", 7070, "web"),
                  refs=[{"kind": "MeshService", "name": "db"}])
    view = _view(MESH, *BACKENDS, limited, dataplane("web-2", "10.0.0.10", 7070, "web"))
    cache = ResourceCache()
    one = build_snapshot(view, "default", "web-1", cache)
    two = build_snapshot(view, "default", "web-2", cache)
    assert set(one.of(ENDPOINT)) == {"default_db___msvc_5432"}
    assert set(two.of(ENDPOINT)) == {"default_backend___msvc_8080", "default_db___msvc_5432",
                                     "default_web___msvc_7070"}
    assert "meshlog:dns" in one.of(LISTENER) and "meshlog:dns" not in two.of(LISTENER)
    assert cache.shared_builds == 2


def test_a_mesh_service_listener_wins_a_name_clash_with_an_explicit_outbound() -> None:
    """As when every resource was added in order, first one kept (xds-rules.md #7)."""
    web = dataplane("web-1", "10.0.0.9", 7070, "web")
    view = _view(MESH, *BACKENDS, web)
    vip = view.meshservices["default"]["backend"].status.vips[0].ip
    web["networking"]["outbound"] = [
        {"address": vip, "port": 8080, "tags": {"kuma.io/service": "db"}},
        {"port": 9000, "tags": {"kuma.io/service": "db"}}]
    view = _view(MESH, *BACKENDS, web)
    snapshot = build_snapshot(view, "default", "web-1", ResourceCache())
    listeners = snapshot.of(LISTENER)
    assert listeners[f"outbound:{vip}:8080"].refs == {"default_backend___msvc_8080"}
    assert listeners["outbound:127.0.0.1:9000"].refs == {"default_db___msvc_5432"}
    assert set(snapshot.of(CLUSTER)) == {"default_backend___msvc_8080", "default_db___msvc_5432",
                                         "default_web___msvc_7070", "localhost:7070"}


def test_versions_are_content_derived_and_equal_across_caches() -> None:
    """xds-rules.md #12: two gateways (caches) give equal versions for equal state."""
    docs = (MESH, *BACKENDS, _tp(dataplane("web-1", "10.0.0.9", 7070, "web")))
    one = build_snapshot(_view(*docs), "default", "web-1", ResourceCache())
    two = build_snapshot(_view(*docs), "default", "web-1", ResourceCache())
    for type_url in (CLUSTER, ENDPOINT, LISTENER, ROUTE):
        assert one.version(type_url) == two.version(type_url)
    assert one.version(CLUSTER) != one.version(LISTENER)


def test_remembered_sets_are_bounded_and_the_recent_ones_kept(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`ResourceCache.remember_set` (SotW rule 10 across a reconnect) keeps the most recently
    sent sets within its budget of names; a set sent again counts as recent."""
    from xds_gateway.resources import cache as cache_module

    monkeypatch.setattr(cache_module, "_SENT_SET_NAMES", 4)
    cache = ResourceCache()
    snapshot = build_snapshot(_view(MESH, *BACKENDS, dataplane("web-1", "10.0.0.9", 7070, "web")),
                              "default", "web-1", cache)
    clusters = dict(snapshot.of(CLUSTER))
    pairs = {f"v{i}": {name: clusters[name]} for i, name in enumerate(sorted(clusters))}
    assert len(pairs) == 4  # backend, db, web and the local inbound cluster
    for version, held in pairs.items():
        cache.remember_set("default", CLUSTER, version, held)
    cache.remember_set("default", CLUSTER, "v0", pairs["v0"])  # sent again: the most recent now
    cache.remember_set("default", CLUSTER, "big", {**pairs["v1"], **pairs["v2"]})
    assert cache.sent_set("default", CLUSTER, "big") == {**pairs["v1"], **pairs["v2"]}
    assert cache.sent_set("default", CLUSTER, "v0") is pairs["v0"]
    remembered = [v for v in pairs if cache.sent_set("default", CLUSTER, v) is not None]
    assert remembered == ["v0", f"v{len(pairs) - 1}"]
    assert cache.sent_set("default", LISTENER, "v0") is None  # per type
    assert cache.sent_set("other", CLUSTER, "v0") is None  # per mesh
