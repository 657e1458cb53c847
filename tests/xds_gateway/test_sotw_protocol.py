"""SotW ADS protocol rules (reference/xds-rules.md), with a raw client against a real server.

The gateway serves a view fed with rows produced by the real fold; only the bus is left out.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.service.discovery.v3.discovery_pb2 import DiscoveryResponse

from events import ClockTicked, DataplaneDeregistered
from events.bus.projection_bus import ProjectionUpdate
from services.cli.bootstrap import sidecar_bootstrap
from tests.harness import Envoy, run_envoy
from tests.xds_gateway._ads import (
    V2_CLUSTER,
    AdsClient,
    Projection,
    dataplane,
    event_for,
    grpc_client_routed_to_v2,
    grpc_route_to,
)
from xds_gateway import Gateway
from xds_gateway.server.subscription import TypeState
from xds_gateway.type_urls import CLUSTER, ENDPOINT, LISTENER, ROUTE

WEB = "default.web-1"
BACKEND_CLUSTER = "default_backend___msvc_8080"
_AFTER_GRACE = 10 * 3_600_000  # ms: past the default 1 h MeshService grace period


def _names(response: DiscoveryResponse, cls: type[Any]) -> list[str]:
    out = []
    for any_ in response.resources:
        message = cls()
        any_.Unpack(message)
        out.append(message.name if hasattr(message, "name") and message.name
                   else message.cluster_name)
    return out


async def _subscribe(
        client: AdsClient) -> tuple[DiscoveryResponse, DiscoveryResponse, DiscoveryResponse]:
    """Envoy's opening: CDS and LDS wildcard; answer CDS, then EDS for its clusters."""
    client.send(CLUSTER, node_id=WEB)
    cds = await client.recv()
    assert cds.type_url == CLUSTER
    client.send(LISTENER)
    eds_names = [n for n in _names(cds, Cluster) if "_msvc_" in n]
    client.ack(cds)
    client.send(ENDPOINT, names=eds_names)
    responses = {}
    for _ in range(2):
        r = await client.recv()
        responses[r.type_url] = r
    return cds, responses[ENDPOINT], responses[LISTENER]


async def test_first_request_without_node_ends_only_that_stream(
        channel: grpc.aio.Channel, gateway: Gateway) -> None:
    """Rule 1: a stream must start with the node; a bad stream ends alone."""
    bad = AdsClient(channel)
    bad.send(CLUSTER)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await bad.recv()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "node.id" in (info.value.details() or "")
    good = AdsClient(channel)
    good.send(CLUSTER, node_id=WEB)
    assert (await good.recv()).type_url == CLUSTER  # the server still serves
    good.close()


async def test_malformed_node_id_is_rejected_with_a_clear_error(channel: grpc.aio.Channel) -> None:
    """Rule 1: the node id names the Dataplane as <mesh>.<name>."""
    client = AdsClient(channel)
    client.send(CLUSTER, node_id="no-dot")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.recv()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'no-dot' is not <mesh>.<dataplane name>" in (info.value.details() or "")


async def test_later_requests_may_omit_the_node(channel: grpc.aio.Channel) -> None:
    """Rule 1: the node is cached from the first request."""
    client = AdsClient(channel)
    cds, eds, lds = await _subscribe(client)
    assert BACKEND_CLUSTER in _names(cds, Cluster)
    assert "outbound:241.0.0.1:8080" in _names(lds, Listener)
    assert _names(eds, ClusterLoadAssignment) == [BACKEND_CLUSTER, "default_web___msvc_7070"]
    client.close()


async def test_nonces_are_unique_within_a_stream(channel: grpc.aio.Channel) -> None:
    """Rule 2."""
    client = AdsClient(channel)
    cds, eds, lds = await _subscribe(client)
    assert len({cds.nonce, eds.nonce, lds.nonce}) == 3
    client.close()


async def test_ack_gets_no_identical_response(channel: grpc.aio.Channel) -> None:
    """Rule 4: never send a response identical to the one ACKed."""
    client = AdsClient(channel)
    _cds, eds, lds = await _subscribe(client)
    client.ack(eds, names=_names(eds, ClusterLoadAssignment))
    client.ack(lds)
    await client.nothing()
    client.close()


async def test_an_ack_with_the_names_in_another_order_is_a_plain_ack(
        channel: grpc.aio.Channel, gateway: Gateway) -> None:
    """Rule 4: the same names in another order are the same subscription: nothing is sent."""
    client = AdsClient(channel)
    _cds, eds, lds = await _subscribe(client)
    client.ack(lds)
    client.ack(eds, names=list(reversed(_names(eds, ClusterLoadAssignment))))
    await client.nothing()
    stream = next(iter(gateway.streams))
    assert stream.types[ENDPOINT].acks == 1
    assert stream.types[ENDPOINT].acked_version == eds.version_info
    client.close()


async def test_stale_nonce_is_ignored(channel: grpc.aio.Channel, gateway: Gateway,
                                      projection: Projection) -> None:
    """Rule 2 (SotW): a request with an old nonce changes nothing."""
    client = AdsClient(channel)
    _cds, eds, lds = await _subscribe(client)
    client.ack(eds, names=_names(eds, ClusterLoadAssignment))
    client.ack(lds)
    # a request carrying an old nonce and new names must not change the subscription
    client.send(ENDPOINT, names=["default_unknown___msvc_1"], nonce="999")
    await client.nothing()
    client.close()


async def test_nack_is_counted_and_not_resent(channel: grpc.aio.Channel, gateway: Gateway) -> None:
    """Rule 3."""
    client = AdsClient(channel)
    _cds, _eds, lds = await _subscribe(client)
    client.send(LISTENER, version="", nonce=lds.nonce, error="bind: address in use")
    await client.nothing()
    stream = next(iter(gateway.streams))
    assert stream.types[LISTENER].nacks == 1
    assert stream.types[LISTENER].last_nack == "bind: address in use"
    client.close()


async def test_a_huge_nack_message_is_kept_cut(channel: grpc.aio.Channel, gateway: Gateway) -> None:
    """Rule 3: the message is kept, but a client's megabytes are not (memory, logs)."""
    client = AdsClient(channel)
    _cds, _eds, lds = await _subscribe(client)
    client.send(LISTENER, version="", nonce=lds.nonce, error="x" * 1_000_000)
    await client.nothing()
    stream = next(iter(gateway.streams))
    assert stream.types[LISTENER].nacks == 1
    kept = stream.types[LISTENER].last_nack
    assert kept.startswith("x" * 4096) and kept.endswith("(1000000 characters)")
    assert len(kept) < 5000
    client.close()


async def test_eds_only_holds_requested_names(
        channel: grpc.aio.Channel, gateway: Gateway, projection: Projection) -> None:
    """Rules 5 and 6: EDS is always named and holds only the requested names."""
    gateway.view.apply(projection.fold([event_for(dataplane("db-1", "10.0.0.5", 5432, "db"))]))
    client = AdsClient(channel)
    client.send(CLUSTER, node_id=WEB)
    cds = await client.recv()
    assert "default_db___msvc_5432" in _names(cds, Cluster)
    client.send(ENDPOINT, names=[BACKEND_CLUSTER])
    eds = await client.recv()
    assert _names(eds, ClusterLoadAssignment) == [BACKEND_CLUSTER]
    client.close()


async def test_requested_name_is_sent_when_it_appears(
        channel: grpc.aio.Channel, gateway: Gateway, projection: Projection) -> None:
    """Rule 8."""
    client = AdsClient(channel)
    client.send(ENDPOINT, node_id=WEB, names=["default_db___msvc_5432"])
    await client.nothing()
    gateway.view.apply(projection.fold([event_for(dataplane("db-1", "10.0.0.5", 5432, "db"))]))
    eds = await client.recv()
    assert _names(eds, ClusterLoadAssignment) == ["default_db___msvc_5432"]
    client.close()


async def test_eds_is_answered_again_after_a_cds_update(
        channel: grpc.aio.Channel, gateway: Gateway, projection: Projection) -> None:
    """Rule 9: Envoy re-requests EDS with the same version and nonce to warm a changed cluster."""
    client = AdsClient(channel)
    cds, eds, lds = await _subscribe(client)
    client.ack(eds, names=_names(eds, ClusterLoadAssignment))
    client.ack(lds)
    await client.nothing()
    gateway.view.apply(projection.fold([event_for(dataplane("db-1", "10.0.0.5", 5432, "db"))]))
    cds2 = await client.recv()
    assert cds2.type_url == CLUSTER and cds2.version_info != cds.version_info
    lds2 = await client.recv()
    assert lds2.type_url == LISTENER
    client.ack(cds2)
    client.send(ENDPOINT, names=_names(eds, ClusterLoadAssignment), version=eds.version_info,
                nonce=eds.nonce)
    again = await client.recv()
    assert again.type_url == ENDPOINT
    assert _names(again, ClusterLoadAssignment) == _names(eds, ClusterLoadAssignment)
    client.close()


def _hosts(response: DiscoveryResponse) -> dict[str, set[str]]:
    out = {}
    for any_ in response.resources:
        cla = ClusterLoadAssignment()
        any_.Unpack(cla)
        out[cla.cluster_name] = {lb.endpoint.address.socket_address.address
                                 for locality in cla.endpoints for lb in locality.lb_endpoints}
    return out


async def _settled(client: AdsClient) -> list[str]:
    """Subscribe like Envoy and ACK everything; return the EDS names."""
    _cds, eds, lds = await _subscribe(client)
    names = _names(eds, ClusterLoadAssignment)
    client.ack(eds, names=names)
    client.ack(lds)
    await client.nothing()
    return names


async def test_a_view_change_sends_only_the_changed_load_assignment(
        channel: grpc.aio.Channel, gateway: Gateway, projection: Projection) -> None:
    """Rule 6: EDS holds only requested names and one left out is unchanged for the client,
    so a change to one service's endpoints sends that ClusterLoadAssignment alone."""
    client = AdsClient(channel)
    names = await _settled(client)
    assert names == [BACKEND_CLUSTER, "default_web___msvc_7070"]
    gateway.view.apply(projection.fold([
        event_for(dataplane("backend-2", "10.0.0.2", 8080, "backend"))]))
    eds = await client.recv()
    assert eds.type_url == ENDPOINT
    assert _hosts(eds) == {BACKEND_CLUSTER: {"10.0.0.1", "10.0.0.2"}}
    client.ack(eds, names=names)
    await client.nothing()  # rule 4: nothing else changed
    stream = next(iter(gateway.streams))
    assert stream.types[ENDPOINT].resources_sent == 3  # 2 at the start, then 1
    client.close()


def _cluster_hosts(envoy: Envoy, cluster: str) -> set[str]:
    """Hosts of `cluster` in /clusters (`<cluster>::<host>::health_flags::<flags>` lines)."""
    parts = (line.split("::") for line in envoy.admin.get("/clusters").text.splitlines())
    return {p[1] for p in parts if len(p) == 4 and p[0] == cluster and p[2] == "health_flags"}


async def _eventually(check: Callable[[], bool], what: str, within: float = 30.0) -> None:
    """Poll `check` (blocking admin calls, run in a thread) until it holds or time is up."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await asyncio.to_thread(check):
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def _eds_of_the_one_stream(gateway: Gateway, within: float = 30.0) -> TypeState:
    """The EDS state of the gateway's one stream subscribed to EDS, once its responses are all
    counted and ACKed (read on the loop: the gateway adds and drops streams there)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        streams = [s for s in gateway.streams if ENDPOINT in s.types]
        # every response counted and ACKed: a response is counted once its write returns
        if len(streams) == 1 and 0 < (state := streams[0].types[ENDPOINT]).responses == (
                state.acks):
            return state
        if loop.time() > deadline:
            raise AssertionError(f"{len(streams)} streams subscribed to EDS, not one settled")
        await asyncio.sleep(0.05)


@pytest.mark.integration
async def test_envoy_keeps_the_services_left_out_of_an_eds_response(
        gateway: Gateway, projection: Projection, tmp_path: Path) -> None:
    """A real Envoy applies each ClusterLoadAssignment on its own: after an EDS response with
    only the changed service, /clusters still shows the other service's hosts."""
    assert gateway.port is not None
    bootstrap = sidecar_bootstrap(mesh="default", name="web-1", xds_host="127.0.0.1",
                                  xds_port=gateway.port, admin_port=0)
    with contextlib.ExitStack() as stack:
        envoy = await asyncio.to_thread(stack.enter_context,
                                        run_envoy(bootstrap, tmp_path / "envoy", "web-1"))
        web = "default_web___msvc_7070"
        await _eventually(lambda: _cluster_hosts(envoy, BACKEND_CLUSTER) == {"10.0.0.1:8080"}
                          and _cluster_hosts(envoy, web) == {"10.0.0.9:7070"}, "first EDS")
        eds = await _eds_of_the_one_stream(gateway)
        sent, responses = eds.resources_sent, eds.responses
        gateway.view.apply(projection.fold([
            event_for(dataplane("backend-2", "10.0.0.2", 8080, "backend"))]))
        await _eventually(lambda: _cluster_hosts(envoy, BACKEND_CLUSTER) == {
            "10.0.0.1:8080", "10.0.0.2:8080"}, "the changed service's hosts")
        # the gateway counts a response once its write returns, which under load can be
        # after Envoy has applied it
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while eds.responses == responses:
            assert loop.time() < deadline, "the EDS response was never counted"
            await asyncio.sleep(0.05)
        assert eds.resources_sent == sent + 1  # the response held the backend's CLA alone
        assert await asyncio.to_thread(_cluster_hosts, envoy, web) == {"10.0.0.9:7070"}
        assert eds.nacks == 0


async def test_asking_again_gets_every_requested_name(
        channel: grpc.aio.Channel, gateway: Gateway, projection: Projection) -> None:
    """A client that asks (here: a new name) gets all requested names, not only changes."""
    client = AdsClient(channel)
    _cds, eds, lds = await _subscribe(client)
    names = _names(eds, ClusterLoadAssignment)
    client.ack(eds, names=names)
    client.ack(lds)
    await client.nothing()
    gateway.view.apply(projection.fold([event_for(dataplane("db-1", "10.0.0.5", 5432, "db"))]))
    for _ in range(2):  # the new cluster and listener
        client.ack(await client.recv())
    more = [*names, "default_db___msvc_5432"]
    client.ack(eds, names=more)  # Envoy names the new cluster's EDS
    eds = await client.recv()
    assert eds.type_url == ENDPOINT
    assert sorted(_names(eds, ClusterLoadAssignment)) == sorted(more)
    client.close()


async def test_a_nacked_change_is_resent_with_the_next_change_only(
        channel: grpc.aio.Channel, gateway: Gateway, projection: Projection) -> None:
    """Rule 3: Envoy rejects a whole response; the rejected change is not resent in a loop,
    but the next change comes with it, since the client still holds the version before."""
    client = AdsClient(channel)
    names = await _settled(client)
    gateway.view.apply(projection.fold([
        event_for(dataplane("backend-2", "10.0.0.2", 8080, "backend"))]))
    rejected = await client.recv()
    assert _names(rejected, ClusterLoadAssignment) == [BACKEND_CLUSTER]
    client.send(ENDPOINT, names=names, nonce=rejected.nonce, error="bad endpoint")
    await client.nothing()
    gateway.view.apply(projection.fold([
        event_for(dataplane("web-2", "10.0.0.10", 7070, "web"))]))
    eds = await client.recv()
    assert _hosts(eds) == {BACKEND_CLUSTER: {"10.0.0.1", "10.0.0.2"},
                           "default_web___msvc_7070": {"10.0.0.9", "10.0.0.10"}}
    client.close()


async def test_streams_with_equal_responses_share_the_bytes_but_not_the_nonce(
        channel: grpc.aio.Channel, gateway: Gateway, projection: Projection) -> None:
    """Invariant 9: a response body is encoded once; each stream adds its own nonce."""
    gateway.view.apply(projection.fold([event_for(dataplane("web-2", "10.0.0.10", 7070, "web"))]))
    one, two = AdsClient(channel), AdsClient(channel)
    names = await _settled(one)
    two.send(ENDPOINT, node_id="default.web-2", names=names)
    eds_two = await two.recv()
    two.ack(eds_two, names=names)
    gateway.view.apply(projection.fold([
        event_for(dataplane("backend-2", "10.0.0.2", 8080, "backend"))]))
    first, second = await one.recv(), await two.recv()
    assert first.version_info == second.version_info
    assert list(first.resources) == list(second.resources)
    assert _names(first, ClusterLoadAssignment) == [BACKEND_CLUSTER]
    one.close()
    two.close()


async def _held_then_removed(client: AdsClient, gateway: Gateway,
                             projection: Projection) -> DiscoveryResponse:
    """A `db` service the client holds (CDS, EDS, LDS ACKed) whose MeshService then goes
    (its Dataplane gone, past the grace period); the CDS response the client held."""
    gateway.view.apply(projection.fold([event_for(dataplane("db-1", "10.0.0.5", 5432, "db"))]))
    cds, eds, lds = await _subscribe(client)
    client.ack(eds, names=_names(eds, ClusterLoadAssignment))
    client.ack(lds)
    await client.nothing()
    gateway.view.apply(projection.fold([
        DataplaneDeregistered(at=2, mesh="default", name="db-1"),
        ClockTicked(at=_AFTER_GRACE),  # the generated MeshService outlives its Dataplane
    ]))
    return cds


async def test_clusters_leave_only_after_listeners_no_longer_use_them(
        channel: grpc.aio.Channel, gateway: Gateway, projection: Projection) -> None:
    """Rule 10: CDS -> EDS -> LDS order; a removed cluster outlives the listener using it."""
    client = AdsClient(channel)
    await _held_then_removed(client, gateway, projection)
    first = await client.recv()
    while first.type_url != LISTENER:  # CDS and EDS may come first, never a CDS without db
        assert first.type_url in (CLUSTER, ENDPOINT)
        if first.type_url == CLUSTER:
            assert "default_db___msvc_5432" in _names(first, Cluster)
        first = await client.recv()
    assert "outbound:241.0.0.3:5432" not in _names(first, Listener)
    client.ack(first)
    cds3 = await client.recv()
    assert cds3.type_url == CLUSTER
    assert "default_db___msvc_5432" not in _names(cds3, Cluster)
    client.close()


DB_CLUSTER = "default_db___msvc_5432"
DB_LISTENER = "outbound:241.0.0.3:5432"
_DB_GONE = (DataplaneDeregistered(at=2, mesh="default", name="db-1"),
            ClockTicked(at=_AFTER_GRACE))  # the generated MeshService outlives its Dataplane


async def _held_then_away(
        client: AdsClient) -> tuple[DiscoveryResponse, DiscoveryResponse, DiscoveryResponse]:
    """A client that holds (has ACKed) its CDS, EDS and LDS, then goes away; what it holds."""
    cds, eds, lds = await _subscribe(client)
    client.ack(eds, names=_names(eds, ClusterLoadAssignment))
    client.ack(lds)
    await client.nothing()
    client.close()
    return cds, eds, lds


async def _resumed(client: AdsClient, cds: DiscoveryResponse, eds: DiscoveryResponse,
                   lds: DiscoveryResponse) -> list[DiscoveryResponse]:
    """Reconnect like Envoy (each first request carries the version it last accepted); every
    response up to and with the first LDS one, which is then ACKed."""
    names = _names(eds, ClusterLoadAssignment)
    client.send(CLUSTER, node_id=WEB, version=cds.version_info)
    seen = [await client.recv()]  # before the client even says which listeners it holds
    client.ack(seen[0])
    client.send(ENDPOINT, names=names, version=eds.version_info)
    seen.append(await client.recv())
    client.ack(seen[-1], names=names)
    client.send(LISTENER, version=lds.version_info)
    seen.append(await client.recv())
    await client.nothing()  # sent is not ACKed: the client may still hold its old listeners
    client.ack(seen[-1])
    return seen


def _removed_only_after_the_new_listeners(
        seen: list[DiscoveryResponse], after: DiscoveryResponse) -> None:
    for response in seen[:-1]:
        assert response.type_url in (CLUSTER, ENDPOINT)
        if response.type_url == CLUSTER:
            assert DB_CLUSTER in _names(response, Cluster), "db's cluster left before its listener"
    assert DB_LISTENER not in _names(seen[-1], Listener)
    assert after.type_url == CLUSTER and DB_CLUSTER not in _names(after, Cluster)


async def test_a_reconnect_removes_held_clusters_only_after_the_new_listeners(
        channel: grpc.aio.Channel, gateway: Gateway, projection: Projection) -> None:
    """Rule 10 across a reconnect: the client held db's cluster and listener, db went while
    it was away; its CDS version says what it holds (this gateway sent it), so db's cluster
    stays until the LDS response without db's listener is ACKed."""
    gateway.view.apply(projection.fold([event_for(dataplane("db-1", "10.0.0.5", 5432, "db"))]))
    cds, eds, lds = await _held_then_away(AdsClient(channel))
    assert DB_CLUSTER in _names(cds, Cluster) and DB_LISTENER in _names(lds, Listener)
    gateway.view.apply(projection.fold(_DB_GONE))
    again = AdsClient(channel)
    seen = await _resumed(again, cds, eds, lds)
    _removed_only_after_the_new_listeners(seen, await again.recv())
    await again.nothing()
    again.close()


@contextlib.asynccontextmanager
async def _serving(rows: list[ProjectionUpdate]) -> AsyncIterator[tuple[Gateway, grpc.aio.Channel]]:
    """Another gateway serving `rows`, and a channel to it."""
    gw = Gateway(None, port=0, no_auth=True)
    gw.view.apply(rows)
    task = asyncio.create_task(gw.serve())
    await gw.serving.wait()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as channel:
            yield gw, channel
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_another_gateway_knows_a_version_it_sent_to_an_identical_proxy(
        projection: Projection) -> None:
    """The same across gateways: versions are content-derived, so a gateway that sent the
    same CDS set to another proxy (web-2: same inbound port, so the same clusters) knows
    what web-1, reconnecting to it from another gateway, holds."""
    rows = projection.fold([
        event_for({"type": "Mesh", "name": "default"}),
        event_for(dataplane("backend-1", "10.0.0.1", 8080, "backend")),
        event_for(dataplane("web-1", "10.0.0.9", 7070, "web")),
        event_for(dataplane("web-2", "10.0.0.10", 7070, "web")),
        event_for(dataplane("db-1", "10.0.0.5", 5432, "db")),
    ])
    async with _serving(rows) as (one, to_one), _serving(rows) as (two, to_two):
        cds, eds, lds = await _held_then_away(AdsClient(to_one))
        twin = AdsClient(to_two)
        twin.send(CLUSTER, node_id="default.web-2")
        assert (await twin.recv()).version_info == cds.version_info
        twin.close()
        gone = projection.fold(_DB_GONE)
        one.view.apply(gone)
        two.view.apply(gone)
        again = AdsClient(to_two)
        seen = await _resumed(again, cds, eds, lds)
        _removed_only_after_the_new_listeners(seen, await again.recv())
        again.close()


async def test_a_version_of_another_mesh_gets_none_of_its_clusters(
        channel: grpc.aio.Channel, gateway: Gateway, projection: Projection) -> None:
    """A CDS version is no secret (a proxy's overview shows the last one it ACKed): a proxy of
    another mesh that reconnects claiming it is not handed that mesh's clusters."""
    gateway.view.apply(projection.fold([
        event_for({"type": "Mesh", "name": "other"}),
        event_for({**dataplane("spy-1", "10.1.0.1", 9090, "spy"), "mesh": "other"}),
    ]))
    cds, _eds, _lds = await _held_then_away(AdsClient(channel))
    assert any(name.startswith("default_") for name in _names(cds, Cluster))
    spy = AdsClient(channel)
    spy.send(CLUSTER, node_id="other.spy-1", version=cds.version_info)
    first = await spy.recv()
    assert first.type_url == CLUSTER
    assert not [name for name in _names(first, Cluster) if name.startswith("default_")]
    spy.close()


async def test_cds_and_lds_are_wildcard_without_names_or_with_a_star(
        channel: grpc.aio.Channel) -> None:
    """Rule 5: an empty request (legacy) and `*` (explicit) both mean all of the node's."""
    legacy, explicit = AdsClient(channel), AdsClient(channel)
    legacy.send(LISTENER, node_id=WEB)
    explicit.send(LISTENER, node_id=WEB, names=["*"])
    one, two = await legacy.recv(), await explicit.recv()
    assert _names(one, Listener) == _names(two, Listener)
    assert {"inbound:10.0.0.9:7070", "outbound:241.0.0.1:8080"} <= set(_names(one, Listener))
    legacy.close()
    explicit.close()


async def test_cds_and_lds_responses_hold_the_complete_set(
        channel: grpc.aio.Channel, gateway: Gateway, projection: Projection) -> None:
    """Rule 6: a new service's cluster comes with every other cluster (missing = deleted)."""
    client = AdsClient(channel)
    cds, eds, lds = await _subscribe(client)
    client.ack(eds, names=_names(eds, ClusterLoadAssignment))
    client.ack(lds)
    gateway.view.apply(projection.fold([event_for(dataplane("db-1", "10.0.0.5", 5432, "db"))]))
    cds2 = await client.recv()
    assert cds2.type_url == CLUSTER
    assert set(_names(cds2, Cluster)) == set(_names(cds, Cluster)) | {"default_db___msvc_5432"}
    lds2 = await client.recv()
    assert set(_names(lds2, Listener)) == set(_names(lds, Listener)) | {"outbound:241.0.0.3:5432"}
    client.close()


async def test_no_duplicate_names_in_a_response(channel: grpc.aio.Channel) -> None:
    """Rule 7, also when the client names a resource twice."""
    client = AdsClient(channel)
    client.send(ENDPOINT, node_id=WEB, names=[BACKEND_CLUSTER, BACKEND_CLUSTER])
    eds = await client.recv()
    assert _names(eds, ClusterLoadAssignment) == [BACKEND_CLUSTER]
    client.close()


async def test_each_resource_is_encoded_once_for_all_streams(
        channel: grpc.aio.Channel, gateway: Gateway, projection: Projection) -> None:
    gateway.view.apply(projection.fold([event_for(dataplane("web-2", "10.0.0.10", 7070, "web"))]))
    one = AdsClient(channel)
    _, eds_one, _ = await _subscribe(one)
    builds = gateway.cache.builds
    two = AdsClient(channel)
    two.send(CLUSTER, node_id="default.web-2")
    assert (await two.recv()).type_url == CLUSTER
    two.send(ENDPOINT, names=[BACKEND_CLUSTER])
    eds_two = await two.recv()
    shared = {r.value for r in eds_one.resources} & {r.value for r in eds_two.resources}
    assert shared, "the backend ClusterLoadAssignment differs between streams"
    # web-2's own inbound listener and cluster are new; the mesh's resources are not rebuilt
    assert gateway.cache.builds - builds <= 2
    one.close()
    two.close()


async def test_versions_are_content_derived_across_gateways(projection: Projection) -> None:
    """Rule 12: two gateways with the same state give the same versions."""
    rows = projection.fold([
        event_for({"type": "Mesh", "name": "default"}),
        event_for(dataplane("backend-1", "10.0.0.1", 8080, "backend")),
        event_for(dataplane("web-1", "10.0.0.9", 7070, "web")),
    ])
    versions = []
    for _ in range(2):
        gw = Gateway(None, port=0, no_auth=True)
        gw.view.apply(rows)
        task = asyncio.create_task(gw.serve())
        await gw.serving.wait()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as ch:
            client = AdsClient(ch)
            cds, eds, lds = await _subscribe(client)
            versions.append((cds.version_info, eds.version_info, lds.version_info))
            client.close()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert versions[0] == versions[1]


async def test_dns_named_dataplanes_never_reach_envoy_as_addresses(
        channel: grpc.aio.Channel, gateway: Gateway, projection: Projection) -> None:
    """Envoy NACKs a whole EDS/LDS response with one non-IP address in it."""
    from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment as CLA

    gateway.view.apply(projection.fold([
        event_for(dataplane("backend-dns", "backend.example.com", 8080, "backend")),
        event_for({"type": "Dataplane", "mesh": "default", "name": "web-1", "networking": {
            "address": "web.example.com",
            "inbound": [{"port": 7070, "tags": {"kuma.io/service": "web"}}]}}),
    ]))
    client = AdsClient(channel)
    _, eds, lds = await _subscribe(client)
    for any_ in eds.resources:
        cla = CLA()
        any_.Unpack(cla)
        for locality in cla.endpoints:
            for lb in locality.lb_endpoints:
                address = lb.endpoint.address.socket_address.address
                assert address[0].isdigit(), address
    inbound = next(r for r in lds.resources if b"inbound:" in r.value)
    listener = Listener()
    inbound.Unpack(listener)
    assert listener.address.socket_address.address == "0.0.0.0"
    client.close()


async def test_a_cds_equal_to_the_one_the_client_holds_is_not_sent_again(
        channel: grpc.aio.Channel, gateway: Gateway, projection: Projection) -> None:
    """Rule 4: when a service goes, its cluster stays while a listener uses it (rule 10), so
    the CDS set is what the client holds: nothing goes out until the LDS ACK lets it leave."""
    client = AdsClient(channel)
    cds = await _held_then_removed(client, gateway, projection)
    seen = [await client.recv()]
    while seen[-1].type_url != LISTENER:
        seen.append(await client.recv())
    assert CLUSTER not in [r.type_url for r in seen], "a CDS equal to the held one was sent"
    client.ack(seen[-1])
    cds2 = await client.recv()
    assert cds2.type_url == CLUSTER and cds2.version_info != cds.version_info
    assert "default_db___msvc_5432" not in _names(cds2, Cluster)
    client.close()


async def test_a_stream_may_not_subscribe_to_unbounded_names(
        channel: grpc.aio.Channel, gateway: Gateway) -> None:
    """A request naming more resources than a stream may hold ends that stream with
    RESOURCE_EXHAUSTED, naming the limit; the gateway goes on serving others."""
    client = AdsClient(channel)
    client.send(ENDPOINT, node_id=WEB, names=[f"made-up-{i}" for i in range(55_000)])
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.recv()
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "55000 resource names" in (info.value.details() or "")
    assert "20000" in (info.value.details() or "")
    long = AdsClient(channel)
    long.send(ENDPOINT, node_id=WEB, names=["x" * 5000])
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await long.recv()
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "5000 characters" in (info.value.details() or "")
    other = AdsClient(channel)
    other.send(CLUSTER, node_id=WEB)
    assert (await other.recv()).type_url == CLUSTER
    other.close()



async def test_a_cluster_only_a_grpc_route_names_leaves_only_after_the_route(
        channel: grpc.aio.Channel, gateway: Gateway, projection: Projection) -> None:
    """Rule 10 for a proxyless gRPC client, whose RouteConfigurations (RDS) name its
    clusters: backend-v2, which it reaches only through a MeshHTTPRoute, stays in CDS until
    it ACKs the route that no longer names it (gRPC would see the cluster gone, and fail
    the calls the old route sends there, in between)."""
    gateway.view.apply(projection.fold(grpc_client_routed_to_v2()))
    client = AdsClient(channel)
    client.send(LISTENER, node_id="default.grpc-1", names=["backend:8080"],
                user_agent="gRPC C-core linux")
    client.ack(await client.recv(), names=["backend:8080"])
    client.send(ROUTE, names=["backend:8080"])
    client.ack(await client.recv(), names=["backend:8080"])
    client.send(CLUSTER, names=[BACKEND_CLUSTER, V2_CLUSTER])
    cds = await client.recv()
    while cds.type_url == ROUTE:  # the rule-9 re-warm after LDS
        client.ack(cds, names=["backend:8080"])
        cds = await client.recv()
    assert V2_CLUSTER in _names(cds, Cluster)
    client.ack(cds, names=[BACKEND_CLUSTER, V2_CLUSTER])
    await client.nothing()

    gateway.view.apply(projection.fold([grpc_route_to("backend", 2)]))

    response = await client.recv()
    while response.type_url != ROUTE:
        if response.type_url == CLUSTER:
            assert V2_CLUSTER in _names(response, Cluster), "v2 left before the route"
            client.ack(response, names=[BACKEND_CLUSTER, V2_CLUSTER])
        response = await client.recv()
    client.ack(response, names=["backend:8080"])
    after = await client.recv()
    assert after.type_url == CLUSTER and V2_CLUSTER not in _names(after, Cluster)
    client.close()
