"""Insight publication: each stream's insight and each gateway's heartbeat in the shared bucket,
written by in-process gateways on a real nats-server, driven by raw ADS clients."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import grpc
import pytest
from envoy.config.core.v3.base_pb2 import Node
from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest
from nats.aio.client import Client as NATS

from events import connect_nats
from events.bus.insights import JetStreamInsights, ProxyInsight
from tests.harness import eventually
from tests.xds_gateway._ads import DeltaAdsClient
from tests.xds_gateway._gateways import ProxyClient, channel_to, running_gateway
from xds_gateway.resources.node import DNS_PORT_KEY, IDENTITY_AGENT
from xds_gateway.type_urls import CLUSTER, LISTENER, SECRET


async def _insight(insights: JetStreamInsights, name: str = "web-1") -> ProxyInsight | None:
    got = await insights.proxy("default", name)
    return got[0] if got else None


async def test_a_stream_publishes_its_insight_from_connect_to_disconnect(nc: NATS) -> None:
    insights = await JetStreamInsights.open(nc)
    async with running_gateway(nc) as gw, channel_to(gw) as channel:
        client = ProxyClient(channel)
        client.hello(CLUSTER, "default.web-1", user_agent="envoy")
        cds = await client.recv()

        async def connected() -> ProxyInsight | None:
            insight = await _insight(insights)
            return insight if insight and CLUSTER in insight.types else None

        first = await eventually(connected, what="the connect insight")
        assert first.gateway == gw.lifecycle.instance and first.connected
        assert first.protocol == "sotw" and first.user_agent == "envoy"
        assert not first.self_registered

        client.ack(cds)

        async def acked() -> ProxyInsight | None:
            insight = await _insight(insights)
            return insight if insight and insight.types[CLUSTER].acks == 1 else None

        counted = await eventually(acked, what="the ACK counted in the insight")
        assert counted.types[CLUSTER].responses_sent == 1
        assert counted.types[CLUSTER].last_acked_version == cds.version_info
        assert counted.session == first.session

        client.close()

        async def disconnected() -> ProxyInsight | None:
            insight = await _insight(insights)
            return insight if insight and not insight.connected else None

        final = await eventually(disconnected, what="the final insight")
        assert final.session == first.session
        assert final.disconnected_at is not None and final.disconnected_at >= final.connected_at


async def test_a_delta_stream_publishes_its_insight_too(nc: NATS) -> None:
    insights = await JetStreamInsights.open(nc)
    async with running_gateway(nc) as gw, channel_to(gw) as channel:
        client = DeltaAdsClient(channel)
        client.send(CLUSTER, node_id="default.web-1", subscribe=["*"])
        client.ack(await client.recv())

        async def acked() -> ProxyInsight | None:
            insight = await _insight(insights)
            types = insight.types if insight else {}
            return insight if CLUSTER in types and types[CLUSTER].acks == 1 else None

        insight = await eventually(acked, what="the delta stream's insight")
        assert insight.protocol == "delta" and insight.gateway == gw.lifecycle.instance
        client.close()


async def test_a_nack_is_counted_with_its_message(nc: NATS) -> None:
    insights = await JetStreamInsights.open(nc)
    async with running_gateway(nc) as gw, channel_to(gw) as channel:
        client = ProxyClient(channel)
        client.hello(CLUSTER, "default.web-1")
        cds = await client.recv()
        client.send(CLUSTER, version="", nonce=cds.nonce, error="cluster rejected")

        async def nacked() -> ProxyInsight | None:
            insight = await _insight(insights)
            types = insight.types if insight else {}
            return insight if CLUSTER in types and types[CLUSTER].nacks == 1 else None

        insight = await eventually(nacked, what="the NACK in the insight")
        assert insight.types[CLUSTER].last_nack_message == "cluster rejected"
        client.close()


async def test_busy_streams_collapse_to_about_one_write_per_interval(nc: NATS) -> None:
    """40 responses in a burst give about one write per interval, and the last write holds
    the latest counters."""
    insights = await JetStreamInsights.open(nc)
    writes: list[object] = []

    async def count(msg: object) -> None:
        writes.append(msg)

    sub = await nc.subscribe("$KV.meshlog_insights.proxy.default.web-1", cb=count)
    interval = 0.3
    async with running_gateway(nc, insight_interval_s=interval) as gw, \
            channel_to(gw) as channel:
        client = ProxyClient(channel)
        client.hello(CLUSTER, "default.web-1")
        started = time.monotonic()
        response = await client.recv()
        for i in range(40):  # an ACK naming new clusters: counted, and answered at once
            client.send(CLUSTER, names=[f"c{i}"], version=response.version_info,
                        nonce=response.nonce)
            response = await client.recv()
        client.close()

        async def final() -> ProxyInsight | None:
            insight = await _insight(insights)
            return insight if insight and not insight.connected else None

        insight = await eventually(final, what="the final insight")
        elapsed = time.monotonic() - started
    await sub.unsubscribe()
    assert insight.types[CLUSTER].responses_sent == 41 and insight.types[CLUSTER].acks == 40
    # connect + final + at most one per interval in between (never one per response)
    assert 2 <= len(writes) <= 3 + elapsed / interval, (len(writes), elapsed)
    assert len(writes) < 41


async def _truthy(value: bool) -> bool:
    return value


async def test_a_gateway_that_lost_the_proxy_leaves_the_newer_insight(nc: NATS) -> None:
    insights = await JetStreamInsights.open(nc)
    async with running_gateway(nc) as gw_a, running_gateway(nc) as gw_b, \
            channel_to(gw_a) as ch_a, channel_to(gw_b) as ch_b:
        old = ProxyClient(ch_a)
        old.hello(CLUSTER, "default.web-1")
        await old.recv()
        await eventually(lambda: _on(insights, gw_a.lifecycle.instance), what="A's insight")
        new = ProxyClient(ch_b)
        new.hello(CLUSTER, "default.web-1")
        await new.recv()
        await eventually(lambda: _on(insights, gw_b.lifecycle.instance), what="B's insight")
        old.close()  # A's final write must not replace B's newer insight
        await eventually(lambda: _truthy(not gw_a.lifecycle.publisher.sessions),
                         what="A to finish with its stream")
        insight = await _insight(insights)
        assert insight is not None and insight.gateway == gw_b.lifecycle.instance
        assert insight.connected
        new.close()


async def _on(insights: JetStreamInsights, gateway: str) -> bool:
    insight = await _insight(insights)
    return insight is not None and insight.gateway == gateway and insight.connected


async def test_each_gateway_beats_with_its_address(nc: NATS) -> None:
    insights = await JetStreamInsights.open(nc)
    async with running_gateway(nc) as gw:
        instance = gw.lifecycle.instance
        assert instance.startswith("gw-")

        async def beats() -> list[int]:
            _, gateways = await insights.snapshot()
            beat = gateways.get(instance)
            return [beat.beat_at] if beat else []

        first = (await eventually(beats, what="a heartbeat"))[0]
        await eventually(lambda: _later(beats, first), what="a second heartbeat")

        async def address() -> str | None:
            # a scan that meets the key while a newer beat replaces it may miss it once
            # (docs/status.md): read until it is there
            _, gateways = await insights.snapshot()
            beat = gateways.get(instance)
            return beat.address if beat else None

        assert await eventually(address, what="the beat's address") == f"127.0.0.1:{gw.port}"

        async def swept() -> bool:  # the beat also says the reaper is alive
            _, gateways = await insights.snapshot()
            beat = gateways.get(instance)
            return beat is not None and beat.swept_at > first

        await eventually(swept, what="a heartbeat reporting a reaper sweep")


async def _later(beats: Callable[[], Awaitable[list[int]]], first: int) -> bool:
    now = await beats()
    return bool(now) and now[0] > first


async def test_streams_go_on_when_insights_cannot_be_written(nats_url: str, nc: NATS) -> None:
    """The bucket's connection dies: writes fail and are logged; streams are unaffected."""
    insights_nc = await connect_nats(nats_url, name="insights")
    async with running_gateway(nc, insights_nc=insights_nc) as gw, channel_to(gw) as channel:
        await insights_nc.close()
        client = ProxyClient(channel)
        client.hello(CLUSTER, "default.web-1")
        cds = await client.recv()
        client.ack(cds)
        client.send(LISTENER)
        assert (await client.recv()).type_url == LISTENER
        session = next(iter(gw.lifecycle.publisher.sessions.values()))
        await eventually(lambda: _truthy(session.failures >= 1), what="a failed write")
        assert session.revision is None  # nothing was written, and the stream still serves
        client.close()


async def test_a_huge_nack_message_is_cut_so_the_insight_is_still_written(nc: NATS) -> None:
    """A NACK may carry megabytes (gRPC allows 16 MB here); the insight keeps its start, or
    it would outgrow a NATS message and no write of the stream would go through."""
    insights = await JetStreamInsights.open(nc)
    async with running_gateway(nc) as gw, channel_to(gw) as channel:
        client = ProxyClient(channel)
        client.hello(CLUSTER, "default.web-1")
        cds = await client.recv()
        client.send(CLUSTER, version="", nonce=cds.nonce, error="bad cluster " + "x" * 2_000_000)

        async def nacked() -> ProxyInsight | None:
            insight = await _insight(insights)
            types = insight.types if insight else {}
            return insight if CLUSTER in types and types[CLUSTER].nacks == 1 else None

        insight = await eventually(nacked, within=30, what="the NACK in the insight")
        message = insight.types[CLUSTER].last_nack_message
        assert message.startswith("bad cluster xxx") and len(message) < 10_000
        client.close()


async def test_a_node_id_no_dataplane_can_have_ends_the_stream(nc: NATS) -> None:
    """Its insight could never be written (not a bucket key): the gateway would retry it
    forever, delaying every other stream's writes. No Dataplane has that name anyway."""
    async with running_gateway(nc) as gw, channel_to(gw) as channel:
        client = ProxyClient(channel)
        client.hello(CLUSTER, "default.Web 1")
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await client.recv()
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "node.id 'default.Web 1': 'Web 1' is not a Dataplane name" in (
            raised.value.details() or "")
        assert not gw.lifecycle.publisher.sessions


async def test_a_huge_user_agent_is_cut_so_the_insight_is_still_written(nc: NATS) -> None:
    insights = await JetStreamInsights.open(nc)
    async with running_gateway(nc) as gw, channel_to(gw) as channel:
        client = ProxyClient(channel)
        client.hello(CLUSTER, "default.web-1", user_agent="envoy " + "x" * 2_000_000)
        await client.recv()
        insight = await eventually(lambda: _insight(insights), within=30,
                                   what="the connect insight")
        assert insight.user_agent.startswith("envoy xxx") and len(insight.user_agent) < 1000
        client.close()


async def test_the_insight_keeps_what_the_config_depends_on_in_the_node(nc: NATS) -> None:
    """User agent and DNS port: `_config` computes with them what the stream gets."""
    insights = await JetStreamInsights.open(nc)
    async with running_gateway(nc) as gw, channel_to(gw) as channel:
        client = ProxyClient(channel)
        node = Node(id="default.web-1", user_agent_name="gRPC Python")
        node.metadata.fields[DNS_PORT_KEY].string_value = "25053"
        client._requests.put_nowait(DiscoveryRequest(type_url=CLUSTER, node=node))
        await client.recv()
        insight = await eventually(lambda: _insight(insights), what="the connect insight")
        assert (insight.user_agent, insight.dns_port) == ("gRPC Python", 25053)
        client.close()


async def test_the_identity_agents_stream_leaves_the_clients_insight(nc: NATS) -> None:
    """`meshlog grpc-identity` streams as the gRPC client's Dataplane too: were its insight
    published, the newer one would win and the client's stream would stop writing its own."""
    insights = await JetStreamInsights.open(nc)
    async with running_gateway(nc) as gw, channel_to(gw) as channel, \
            channel_to(gw) as agent_channel:
        client = ProxyClient(channel)
        client.hello(CLUSTER, "default.web-1", user_agent="gRPC Python")
        cds = await client.recv()
        first = await eventually(lambda: _insight(insights), what="the client's insight")
        agent = ProxyClient(agent_channel)
        agent.hello(SECRET, "default.web-1", user_agent=IDENTITY_AGENT)

        async def opened() -> bool | None:  # no secret to answer with: no mTLS in this mesh
            return bool(gw.lifecycle._agents) or None

        await eventually(opened, what="the agent's stream opened")
        client.ack(cds)

        async def acked() -> ProxyInsight | None:
            insight = await _insight(insights)
            return insight if insight and insight.types[CLUSTER].acks == 1 else None

        counted = await eventually(acked, what="the client's ACK in its insight")
        assert (counted.session, counted.user_agent) == (first.session, "gRPC Python")
        agent.close()
        client.close()


async def test_a_stream_naming_itself_the_identity_agent_gets_secrets_only(nc: NATS) -> None:
    """The agent's user agent hides a stream's insight: any other type on it (a token holder's
    client posing as the agent to take the Dataplane's config unseen) ends the stream."""
    async with running_gateway(nc) as gw, channel_to(gw) as channel:
        client = ProxyClient(channel)
        client.hello(CLUSTER, "default.web-1", user_agent=IDENTITY_AGENT)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await client.recv()
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "'meshlog-grpc-identity' asks for Secrets only" in (raised.value.details() or "")
        assert not gw.lifecycle.publisher.sessions
    async with running_gateway(nc) as gw, channel_to(gw) as channel:
        client = ProxyClient(channel)  # Secrets first, then a Listener
        client.hello(SECRET, "default.web-1", user_agent=IDENTITY_AGENT)
        client.send(LISTENER)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await client.recv()
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not type_url 'type.googleapis.com/envoy.config.listener" in (
            raised.value.details() or "")
