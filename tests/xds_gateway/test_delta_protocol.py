"""Delta (incremental) ADS protocol rules (reference/xds-rules.md), with a raw Delta client.

The gateway serves a view fed with rows produced by the real fold; only the bus is left out.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from envoy.service.discovery.v3.discovery_pb2 import DeltaDiscoveryResponse

from events import ClockTicked, DataplaneDeregistered
from events.bus.projection_bus import CHECKPOINT_KEY
from tests.xds_gateway._ads import (
    V2_CLUSTER,
    DeltaAdsClient,
    Projection,
    dataplane,
    event_for,
    grpc_client_routed_to_v2,
    grpc_route_to,
)
from xds_gateway import Gateway
from xds_gateway.resources import clusters
from xds_gateway.type_urls import CLUSTER, ENDPOINT, LISTENER, ROUTE

WEB = "default.web-1"
BACKEND_CLUSTER = "default_backend___msvc_8080"
_AFTER_GRACE = 10 * 3_600_000  # ms: past the default 1 h MeshService grace period
WEB_CLUSTER = "default_web___msvc_7070"
DB_CLUSTER = "default_db___msvc_5432"
DB_LISTENER = "outbound:241.0.0.3:5432"


def _versions(response: DeltaDiscoveryResponse) -> dict[str, str]:
    return {r.name: r.version for r in response.resources}


def _add_db(gateway: Gateway, projection: Projection) -> None:
    gateway.view.apply(projection.fold([event_for(dataplane("db-1", "10.0.0.5", 5432, "db"))]))


async def _subscribe(client: DeltaAdsClient) -> tuple[
        DeltaDiscoveryResponse, DeltaDiscoveryResponse, DeltaDiscoveryResponse]:
    """Envoy's opening: CDS and LDS wildcard, EDS for the EDS clusters; all ACKed."""
    client.send(CLUSTER, node_id=WEB)
    cds = await client.recv()
    assert cds.type_url == CLUSTER
    client.ack(cds)
    client.send(ENDPOINT, subscribe=[n for n in _versions(cds) if "_msvc_" in n])
    eds = await client.recv()
    assert eds.type_url == ENDPOINT
    client.ack(eds)
    client.send(LISTENER)
    lds = await client.recv()
    assert lds.type_url == LISTENER
    client.ack(lds)
    return cds, eds, lds


async def test_first_request_without_node_ends_only_that_stream(channel: grpc.aio.Channel) -> None:
    """Rule 1."""
    bad = DeltaAdsClient(channel)
    bad.send(CLUSTER)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await bad.recv()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "node.id" in (info.value.details() or "")
    good = DeltaAdsClient(channel)
    good.send(CLUSTER, node_id=WEB)
    assert (await good.recv()).type_url == CLUSTER  # the server still serves
    good.close()


async def test_later_requests_may_omit_the_node(channel: grpc.aio.Channel) -> None:
    """Rule 1: only the first request names the node."""
    client = DeltaAdsClient(channel)
    cds, eds, lds = await _subscribe(client)
    assert BACKEND_CLUSTER in _versions(cds)
    assert sorted(_versions(eds)) == [BACKEND_CLUSTER, WEB_CLUSTER]
    assert "outbound:241.0.0.1:8080" in _versions(lds)
    client.close()


async def test_nonces_are_unique_within_a_stream(channel: grpc.aio.Channel) -> None:
    """Rule 2."""
    client = DeltaAdsClient(channel)
    cds, eds, lds = await _subscribe(client)
    assert len({cds.nonce, eds.nonce, lds.nonce}) == 3
    client.close()


async def test_stale_nonce_still_applies_subscription_changes(
        channel: grpc.aio.Channel, gateway: Gateway, projection: Projection) -> None:
    """Rule 2 (Delta): unlike SotW, subscribe/unsubscribe count whatever the nonce."""
    _add_db(gateway, projection)
    client = DeltaAdsClient(channel)
    await _subscribe(client)
    client.send(ENDPOINT, subscribe=[DB_CLUSTER], unsubscribe=[WEB_CLUSTER], nonce="999")
    eds = await client.recv()
    assert list(_versions(eds)) == [DB_CLUSTER]
    stream = next(iter(gateway.streams))
    assert stream.types[ENDPOINT].names == {BACKEND_CLUSTER, DB_CLUSTER}
    assert stream.types[ENDPOINT].acks == 1  # a stale nonce ACKs nothing
    client.close()


async def test_nack_is_counted_and_not_resent(
        channel: grpc.aio.Channel, gateway: Gateway, projection: Projection) -> None:
    """Rule 3: counted with its message; the rejected resources are not sent again, also
    when an unrelated change follows."""
    client = DeltaAdsClient(channel)
    await _subscribe(client)
    _add_db(gateway, projection)
    cds2 = await client.recv()
    assert list(_versions(cds2)) == [DB_CLUSTER]
    client.ack(await client.recv())  # the db listener
    client.send(CLUSTER, nonce=cds2.nonce, error="cluster rejected")
    await client.nothing()
    stream = next(iter(gateway.streams))
    assert stream.types[CLUSTER].nacks == 1
    assert stream.types[CLUSTER].last_nack == "cluster rejected"
    gateway.view.apply(projection.fold([event_for(dataplane("backend-2", "10.0.0.2", 8080,
                                                            "backend"))]))
    eds = await client.recv()  # only the changed endpoints; no CDS with the rejected cluster
    assert eds.type_url == ENDPOINT and list(_versions(eds)) == [BACKEND_CLUSTER]
    await client.nothing()
    client.close()


async def test_ack_gets_no_response(channel: grpc.aio.Channel) -> None:
    """Rule 4: nothing changed, nothing sent."""
    client = DeltaAdsClient(channel)
    await _subscribe(client)
    await client.nothing()
    client.close()


async def test_only_changed_resources_are_sent(
        channel: grpc.aio.Channel, gateway: Gateway, projection: Projection) -> None:
    """Rule 4 (Delta): a new service sends its cluster, not the ones the client holds."""
    client = DeltaAdsClient(channel)
    await _subscribe(client)
    _add_db(gateway, projection)
    cds = await client.recv()
    assert cds.type_url == CLUSTER and list(_versions(cds)) == [DB_CLUSTER]
    assert not cds.removed_resources
    lds = await client.recv()
    assert lds.type_url == LISTENER and list(_versions(lds)) == [DB_LISTENER]
    client.close()


async def test_empty_first_subscribe_is_a_wildcard(channel: grpc.aio.Channel) -> None:
    """Rule 5: LDS/CDS with no names is the legacy wildcard; `*` is the explicit one."""
    legacy = DeltaAdsClient(channel)
    legacy.send(LISTENER, node_id=WEB)
    explicit = DeltaAdsClient(channel)
    explicit.send(LISTENER, node_id=WEB, subscribe=["*"])
    one, two = await legacy.recv(), await explicit.recv()
    assert _versions(one) == _versions(two)
    assert {"inbound:10.0.0.9:7070", "outbound:241.0.0.1:8080"} <= _versions(one).keys()
    legacy.close()
    explicit.close()


async def test_eds_holds_only_subscribed_names(channel: grpc.aio.Channel) -> None:
    """Rule 5: EDS is always named, never a wildcard."""
    client = DeltaAdsClient(channel)
    client.send(ENDPOINT, node_id=WEB, subscribe=[BACKEND_CLUSTER])
    eds = await client.recv()
    assert list(_versions(eds)) == [BACKEND_CLUSTER]
    client.close()


async def test_no_duplicate_names_in_a_response(
        channel: grpc.aio.Channel, gateway: Gateway, projection: Projection) -> None:
    """Rule 7, also with a name subscribed twice."""
    client = DeltaAdsClient(channel)
    client.send(ENDPOINT, node_id=WEB, subscribe=[BACKEND_CLUSTER, BACKEND_CLUSTER, "*"])
    eds = await client.recv()
    assert [r.name for r in eds.resources] == [BACKEND_CLUSTER]
    client.close()


async def test_unknown_name_is_removed_then_pushed_when_it_appears(
        channel: grpc.aio.Channel, gateway: Gateway, projection: Projection) -> None:
    """Rules 8 and 11: answered at once in removed_resources, sent when it exists."""
    client = DeltaAdsClient(channel)
    client.send(ENDPOINT, node_id=WEB, subscribe=[DB_CLUSTER])
    eds = await client.recv()
    assert list(eds.removed_resources) == [DB_CLUSTER] and not eds.resources
    client.ack(eds)
    await client.nothing()
    _add_db(gateway, projection)
    eds = await client.recv()
    assert list(_versions(eds)) == [DB_CLUSTER]
    client.close()


async def test_deleted_resources_are_in_removed_resources(
        channel: grpc.aio.Channel, gateway: Gateway, projection: Projection) -> None:
    """Rule 8/10: a deleted service's listener goes, then (after the LDS ACK) its cluster."""
    _add_db(gateway, projection)
    client = DeltaAdsClient(channel)
    await _subscribe(client)
    gateway.view.apply(projection.fold([
        DataplaneDeregistered(at=2, mesh="default", name="db-1"),
        ClockTicked(at=_AFTER_GRACE),  # the generated MeshService outlives its Dataplane
    ]))
    seen = []
    response = await client.recv()
    while response.type_url != LISTENER:  # EDS may say the endpoints went first
        assert response.type_url == ENDPOINT, "no cluster may leave before its listener"
        seen.append(response)
        response = await client.recv()
    assert list(response.removed_resources) == [DB_LISTENER] and not response.resources
    client.ack(response)
    cds = await client.recv()
    assert cds.type_url == CLUSTER and list(cds.removed_resources) == [DB_CLUSTER]
    client.close()


async def test_push_order_is_cds_eds_lds(
        channel: grpc.aio.Channel, gateway: Gateway, projection: Projection) -> None:
    """Rule 10: on one change, clusters before endpoints before listeners."""
    client = DeltaAdsClient(channel)
    await _subscribe(client)
    client.send(ENDPOINT, subscribe=[DB_CLUSTER])
    client.ack(await client.recv())  # "db does not exist yet"
    _add_db(gateway, projection)
    order = [(await client.recv()).type_url for _ in range(3)]
    assert order == [CLUSTER, ENDPOINT, LISTENER]
    client.close()


async def test_subscribe_is_answered_even_if_sent_before(channel: grpc.aio.Channel) -> None:
    """Rules 9 and 11: Envoy re-subscribes to warm a cluster; the CLA must come again."""
    client = DeltaAdsClient(channel)
    _cds, eds, _lds = await _subscribe(client)
    client.send(ENDPOINT, subscribe=[BACKEND_CLUSTER])
    again = await client.recv()
    assert _versions(again) == {BACKEND_CLUSTER: _versions(eds)[BACKEND_CLUSTER]}
    client.close()


async def test_eds_is_sent_again_after_its_cluster_changes(
        channel: grpc.aio.Channel, gateway: Gateway, projection: Projection,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Rule 9: Envoy re-creates a changed cluster warming and does not re-subscribe to its
    EDS; the ClusterLoadAssignment must follow the CDS update unasked. No read model changes
    an EDS cluster today, so the cluster builder does (as a new cluster option would)."""
    client = DeltaAdsClient(channel)
    _cds, eds, _lds = await _subscribe(client)
    original = clusters.eds_cluster

    def slower(name: str, *args: Any, **kwargs: Any) -> Any:
        cluster = original(name, *args, **kwargs)
        cluster.connect_timeout.FromSeconds(7)
        return cluster

    monkeypatch.setattr(clusters, "eds_cluster", slower)
    gateway.cache._entries.clear()  # forget the encoded clusters: rebuild them
    gateway.view.apply([(CHECKPOINT_KEY, b"1000")])  # a new generation
    cds2 = await client.recv()
    assert cds2.type_url == CLUSTER
    assert sorted(_versions(cds2)) == [BACKEND_CLUSTER, WEB_CLUSTER]
    eds2 = await client.recv()
    assert eds2.type_url == ENDPOINT and _versions(eds2) == _versions(eds)
    client.close()


async def test_initial_resource_versions_are_honoured(
        channel: grpc.aio.Channel, gateway: Gateway) -> None:
    """Rule 11: on reconnect, equal versions are not re-sent, stale ones are, and names the
    server does not know are reported removed (rule 10: once the new listeners are ACKed)."""
    first = DeltaAdsClient(channel)
    cds, _eds, lds = await _subscribe(first)
    first.close()
    held = _versions(cds)
    held[BACKEND_CLUSTER] = "stale"
    held["default_gone___msvc_1"] = "whatever"
    again = DeltaAdsClient(channel)
    again.send(CLUSTER, node_id=WEB, initial=held)
    response = await again.recv()
    assert _versions(response) == {BACKEND_CLUSTER: _versions(cds)[BACKEND_CLUSTER]}
    assert not response.removed_resources
    again.ack(response)
    again.send(LISTENER, initial=_versions(lds))
    listeners = await again.recv()
    assert listeners.type_url == LISTENER and not listeners.resources  # all held already
    again.ack(listeners)
    response = await again.recv()
    assert response.type_url == CLUSTER and not response.resources
    assert list(response.removed_resources) == ["default_gone___msvc_1"]
    again.close()


async def test_a_reconnect_removes_held_clusters_only_after_the_new_listeners(
        channel: grpc.aio.Channel, gateway: Gateway, projection: Projection) -> None:
    """Rule 10 across a reconnect: a proxy held db's cluster and listener; db went while it
    was away. The new stream keeps the cluster (it cannot know which clusters the listeners
    the proxy still holds use) until the LDS response without db's listener is ACKed."""
    _add_db(gateway, projection)
    first = DeltaAdsClient(channel)
    cds, eds, lds = await _subscribe(first)
    assert DB_CLUSTER in _versions(cds) and DB_LISTENER in _versions(lds)
    first.close()
    gateway.view.apply(projection.fold([
        DataplaneDeregistered(at=2, mesh="default", name="db-1"),
        ClockTicked(at=_AFTER_GRACE),  # the generated MeshService outlives its Dataplane
    ]))
    again = DeltaAdsClient(channel)
    again.send(CLUSTER, node_id=WEB, initial=_versions(cds))
    clusters = await again.recv()  # before the client even says which listeners it holds
    assert clusters.type_url == CLUSTER
    assert not clusters.resources and not clusters.removed_resources
    again.ack(clusters)
    again.send(ENDPOINT, subscribe=list(_versions(eds)), initial=_versions(eds))
    endpoints = await again.recv()
    assert list(endpoints.removed_resources) == [DB_CLUSTER]  # db's endpoints went
    again.ack(endpoints)
    again.send(LISTENER, initial=_versions(lds))
    listeners = await again.recv()
    assert listeners.type_url == LISTENER, "no cluster may leave before its listener"
    assert list(listeners.removed_resources) == [DB_LISTENER] and not listeners.resources
    await again.nothing()  # sent is not ACKed: the proxy may still hold db's listener
    again.ack(listeners)
    clusters = await again.recv()
    assert clusters.type_url == CLUSTER and list(clusters.removed_resources) == [DB_CLUSTER]
    await again.nothing()
    again.close()


async def test_resources_share_the_encoded_bytes_with_sotw(
        channel: grpc.aio.Channel, gateway: Gateway) -> None:
    """Invariant 9: a Delta resource carries the same cached Any as the SotW response."""
    client = DeltaAdsClient(channel)
    cds, _eds, _lds = await _subscribe(client)
    builds = gateway.cache.builds
    stream = next(iter(gateway.streams))
    snapshot = stream._current()
    for resource in cds.resources:
        cached = snapshot.resources[CLUSTER][resource.name]
        assert resource.resource.SerializeToString() == cached.any
        assert resource.version == cached.version
    assert gateway.cache.builds == builds
    client.close()


async def test_subscriptions_are_bounded_per_stream(channel: grpc.aio.Channel) -> None:
    """Subscriptions grow over many requests in Delta: their total is bounded, as are the
    names a reconnecting client says it holds."""
    client = DeltaAdsClient(channel)
    client.send(ENDPOINT, node_id=WEB, subscribe=[f"a-{i}" for i in range(15_000)])
    client.send(ENDPOINT, subscribe=[f"b-{i}" for i in range(15_000)])
    with pytest.raises(grpc.aio.AioRpcError) as info:
        while True:
            await client.recv()
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "30000 resource names" in (info.value.details() or "")
    held = DeltaAdsClient(channel)
    held.send(CLUSTER, node_id=WEB, initial={f"c-{i}": "1" for i in range(25_000)})
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await held.recv()
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_a_cluster_only_a_grpc_route_names_leaves_only_after_the_route(
        channel: grpc.aio.Channel, gateway: Gateway, projection: Projection) -> None:
    """Rule 10 for a proxyless gRPC client over Delta, as test_sotw_protocol's: backend-v2,
    named only by its MeshHTTPRoute, is removed only after the client ACKs the new route."""
    gateway.view.apply(projection.fold(grpc_client_routed_to_v2()))
    client = DeltaAdsClient(channel)
    client.send(LISTENER, node_id="default.grpc-1", subscribe=["backend:8080"],
                user_agent="gRPC C-core linux")
    seen = {}
    for type_url, names in ((LISTENER, None), (ROUTE, ["backend:8080"]),
                            (CLUSTER, [BACKEND_CLUSTER, V2_CLUSTER])):
        if names is not None:
            client.send(type_url, subscribe=names)
        response = await client.recv()
        while response.type_url != type_url:  # a re-warm of what came before
            client.ack(response)
            response = await client.recv()
        client.ack(response)
        seen[type_url] = response
    assert V2_CLUSTER in _versions(seen[CLUSTER])
    await client.nothing()

    gateway.view.apply(projection.fold([grpc_route_to("backend", 2)]))

    response = await client.recv()
    while response.type_url != ROUTE:
        if response.type_url == CLUSTER:
            assert V2_CLUSTER not in response.removed_resources, "v2 left before the route"
        client.ack(response)
        response = await client.recv()
    client.ack(response)
    after = await client.recv()
    assert after.type_url == CLUSTER and V2_CLUSTER in after.removed_resources
    client.close()
