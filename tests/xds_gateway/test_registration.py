"""Self-registration from node metadata, and deregistration after a delay decided from the
shared insights: in-process gateways on a real nats-server, raw ADS clients."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest
from envoy.config.core.v3.base_pb2 import Node
from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest
from nats.aio.client import Client as NATS

from events import (
    GLOBAL_ZONE,
    Dataplane,
    DataplaneDeregistered,
    DataplaneRegistered,
    JetStreamEventLog,
    connect_nats,
    decode_resource,
    now_ms,
)
from events.bus.insights import JetStreamInsights
from events.commands import Commands
from tests.harness import eventually
from tests.xds_gateway._gateways import (
    DELAY_S,
    ProxyClient,
    channel_to,
    dataplane_doc,
    last_event,
    running_gateway,
    with_mesh,
)
from xds_gateway import Gateway
from xds_gateway.proxies.registration import DATAPLANE_KEY
from xds_gateway.resources.node import DNS_PORT_KEY
from xds_gateway.type_urls import CLUSTER


async def _connect(gateway: Gateway, channel: grpc.aio.Channel,
                   doc: dict[str, Any] | str | None = None) -> ProxyClient:
    client = ProxyClient(channel)
    client.hello(CLUSTER, "default.web-1", dataplane=dataplane_doc() if doc is None else doc)
    await client.recv()  # the stream is past its first request
    return client


async def _registered(event_log: JetStreamEventLog, origin: str = "proxy") -> Any:
    got = await last_event(event_log)
    event = got[0] if got else None
    return got if isinstance(event, DataplaneRegistered) and event.origin == origin else None


async def _reapers_looked_after(gateways: list[Gateway], when_ms: int) -> bool:
    """Every gateway completed a sweep that started past `when_ms`: had the proxy been gone,
    it would have been reaped by then."""
    return all(g.lifecycle.reaper is not None and g.lifecycle.reaper.last_sweep_at > when_ms
               for g in gateways)


async def test_a_proxy_registers_the_dataplane_in_its_node_metadata(nc: NATS) -> None:
    event_log = await with_mesh(nc)
    insights = await JetStreamInsights.open(nc)
    async with running_gateway(nc) as gw, channel_to(gw) as channel:
        client = await _connect(gw, channel)
        event, _ = await eventually(lambda: _registered(event_log), what="the registration")
        assert event.dataplane == decode_resource(dataplane_doc())

        async def self_registered() -> bool:
            got = await insights.proxy("default", "web-1")
            return got is not None and got[0].self_registered

        await eventually(self_registered, what="the insight to say self_registered")
        client.close()


async def test_a_reconnect_with_the_same_dataplane_appends_nothing(nc: NATS) -> None:
    event_log = await with_mesh(nc)
    async with running_gateway(nc, deregistration_delay_s=30) as gw, \
            channel_to(gw) as channel:
        (await _connect(gw, channel)).close()
        _, seq = await eventually(lambda: _registered(event_log), what="the registration")
        again = await _connect(gw, channel)
        assert (await last_event(event_log))[1] == seq
        again.close()


async def test_a_changed_dataplane_is_registered_again(nc: NATS) -> None:
    event_log = await with_mesh(nc)
    async with running_gateway(nc) as gw, channel_to(gw) as channel:
        (await _connect(gw, channel)).close()
        _, seq = await eventually(lambda: _registered(event_log), what="the registration")
        changed = await _connect(gw, channel, dataplane_doc(port=7071))
        event, new_seq = await last_event(event_log)
        assert new_seq > seq and event.dataplane.networking.inbound[0].port == 7071
        changed.close()


@pytest.mark.parametrize(("doc", "expected"), [
    (dataplane_doc(port=70000), "networking.inbound[0].port: 70000 is not in 1..65535"),
    (dataplane_doc(name="db-1"), "name 'db-1' does not match node.id default.web-1"),
    ("{not: [valid", "is neither JSON nor YAML"),
    ("a: &x [1]\nb: *x", "YAML aliases are not allowed"),
    ("[" * 20_000 + "]" * 20_000, "nested too deeply"),
])
async def test_an_invalid_dataplane_ends_the_stream_naming_field_and_value(
        nc: NATS, doc: dict[str, Any] | str, expected: str) -> None:
    event_log = await with_mesh(nc)
    async with running_gateway(nc) as gw, channel_to(gw) as channel:
        client = ProxyClient(channel)
        client.hello(CLUSTER, "default.web-1", dataplane=doc)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await client.recv()
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "node.metadata['dataplane.resource']" in (raised.value.details() or "")
        assert expected in (raised.value.details() or "")
        assert await last_event(event_log) is None
        # the server goes on serving other streams
        ok = await _connect(gw, channel)
        ok.close()


async def test_a_dataplane_of_a_missing_mesh_is_refused_until_the_mesh_exists(nc: NATS) -> None:
    async with running_gateway(nc) as gw, channel_to(gw) as channel:
        client = ProxyClient(channel)
        client.hello(CLUSTER, "default.web-1", dataplane=dataplane_doc())
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await client.recv()
        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "mesh 'default' does not exist" in (raised.value.details() or "")


async def test_the_global_control_plane_refuses_a_self_registering_proxy(nc: NATS) -> None:
    """Kuma's rule, as global's API refuses a Dataplane: a proxy registers in its zone."""
    event_log = await with_mesh(nc)
    before = await event_log.last_seq()
    async with running_gateway(nc, zone=GLOBAL_ZONE) as gw, channel_to(gw) as channel:
        client = ProxyClient(channel)
        client.hello(CLUSTER, "default.web-1", dataplane=dataplane_doc())
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await client.recv()
        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert ("Dataplane default.web-1: Dataplanes register in their zone's control plane, "
                "not on global" in (raised.value.details() or ""))
    assert await event_log.last_seq() == before  # nothing appended


async def test_a_self_registered_proxy_is_deregistered_after_the_delay(nc: NATS) -> None:
    event_log = await with_mesh(nc)
    insights = await JetStreamInsights.open(nc)
    async with running_gateway(nc) as gw, channel_to(gw) as channel:
        client = await _connect(gw, channel)
        await eventually(lambda: _registered(event_log), what="the registration")
        client.close()
        gone_at = now_ms()

        async def deregistered() -> Any:
            got = await last_event(event_log)
            return got if got and isinstance(got[0], DataplaneDeregistered) else None

        event, _ = await eventually(deregistered, what="the deregistration")
        assert event.at - gone_at >= DELAY_S * 1000 - 50  # not before the delay
        assert await insights.proxy("default", "web-1") is None  # the insight is forgotten


RECONNECT_DELAY_S = 2.0


@pytest.mark.parametrize("elsewhere", [False, True], ids=["same gateway", "another gateway"])
async def test_a_reconnect_within_the_delay_keeps_the_dataplane(nc: NATS, elsewhere: bool
                                                                ) -> None:
    event_log = await with_mesh(nc)
    # the reconnect must come within the delay: 0.5 s (DELAY_S) is a few hundred ms of a
    # loaded machine's scheduling between the close and the new stream's insight
    async with running_gateway(nc, deregistration_delay_s=RECONNECT_DELAY_S) as gw_a, \
            running_gateway(nc, deregistration_delay_s=RECONNECT_DELAY_S) as gw_b, \
            channel_to(gw_a) as ch_a, channel_to(gw_b) as ch_b:
        client = await _connect(gw_a, ch_a)
        _, seq = await eventually(lambda: _registered(event_log), what="the registration")
        client.close()
        await eventually(lambda: _no_sessions(gw_a), what="A to finish with the stream")
        back = await _connect(gw_b if elsewhere else gw_a, ch_b if elsewhere else ch_a)
        past_delay = now_ms() + int(RECONNECT_DELAY_S * 1000)
        await eventually(lambda: _reapers_looked_after([gw_a, gw_b], past_delay),
                         what="both reapers to look past the delay")
        assert (await last_event(event_log))[1] == seq  # no deregistration, nothing appended
        back.close()


async def _no_sessions(gateway: Gateway) -> bool:
    return not gateway.lifecycle.publisher.sessions


async def test_a_dead_gateways_proxies_are_reaped_by_another(nats_url: str, nc: NATS
                                                             ) -> None:
    event_log = await with_mesh(nc)
    insights = await JetStreamInsights.open(nc)
    a_insights = await connect_nats(nats_url, name="gateway a insights")
    async with running_gateway(nc) as gw_b:
        async with running_gateway(nc, insights_nc=a_insights) as gw_a, \
                channel_to(gw_a) as channel:
            dead = gw_a.lifecycle.instance
            await _connect(gw_a, channel)
            await eventually(lambda: _registered(event_log), what="the registration")
            await eventually(lambda: _on(insights, dead), what="A's connect insight")
            await a_insights.close()  # A loses the bucket, then stops: no final write
        got = await insights.proxy("default", "web-1")
        assert got is not None and got[0].connected and got[0].gateway == dead

        async def deregistered() -> Any:
            got = await last_event(event_log)
            return got if got and isinstance(got[0], DataplaneDeregistered) else None

        await eventually(deregistered, what="B to reap A's proxy")
        assert gw_b.lifecycle.reaper is not None

        async def forgotten() -> bool:  # the reaper deregisters, then forgets the insight
            return await insights.proxy("default", "web-1") is None

        await eventually(forgotten, what="B to forget A's proxy's insight")


async def _on(insights: JetStreamInsights, gateway: str) -> bool:
    got = await insights.proxy("default", "web-1")
    return got is not None and got[0].gateway == gateway


async def test_api_registered_dataplanes_are_never_reaped(nc: NATS) -> None:
    event_log = await with_mesh(nc)
    commands = Commands(event_log, zone="default")
    api_dp = decode_resource(dataplane_doc())
    assert isinstance(api_dp, Dataplane)
    await commands.apply(api_dp)
    async with running_gateway(nc) as gw, channel_to(gw) as channel:
        client = await _connect(gw, channel)  # the same Dataplane: the API keeps it
        _, seq = await _registered(event_log, origin="api")
        client.close()
        past_delay = now_ms() + int(DELAY_S * 1000)
        await eventually(lambda: _reapers_looked_after([gw], past_delay),
                         what="the reaper to look past the delay")
        assert (await last_event(event_log))[1] == seq


async def test_a_proxy_never_takes_over_an_api_registered_dataplane(nc: NATS) -> None:
    """The proxy's metadata differs from what the API registered: the API's Dataplane stays as
    it is (nothing appended) and is not reaped after the proxy disconnects."""
    event_log = await with_mesh(nc)
    api_doc = dataplane_doc()
    api_doc["labels"] = {"owner": "api"}
    api_dp = decode_resource(api_doc)
    assert isinstance(api_dp, Dataplane)
    await Commands(event_log, zone="default").apply(api_dp)
    _, seq = await _registered(event_log, origin="api")
    async with running_gateway(nc) as gw, channel_to(gw) as channel:
        client = await _connect(gw, channel)  # its own copy, without the label
        client.close()
        past_delay = now_ms() + int(DELAY_S * 1000)
        await eventually(lambda: _reapers_looked_after([gw], past_delay),
                         what="the reaper to look past the delay")
        assert (await last_event(event_log))[1] == seq


async def test_a_node_the_stream_refuses_registers_nothing(nc: NATS) -> None:
    """Node metadata the stream cannot use (here a DNS port) ends it before the Dataplane in
    the same node is registered: a refused proxy is never in the log."""
    event_log = await with_mesh(nc)
    async with running_gateway(nc) as gw, channel_to(gw) as channel:
        client = ProxyClient(channel)
        node = Node(id="default.web-1", user_agent_name="envoy")
        node.metadata.fields[DATAPLANE_KEY].string_value = json.dumps(dataplane_doc())
        node.metadata.fields[DNS_PORT_KEY].string_value = "99999"
        client._requests.put_nowait(DiscoveryRequest(type_url=CLUSTER, node=node))
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await client.recv()
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "'99999' is not a port" in (raised.value.details() or "")
        assert await last_event(event_log) is None
