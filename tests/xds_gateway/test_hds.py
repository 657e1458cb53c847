"""Inbound health from the proxy through HDS: a raw HDS client (grpc.aio) against an in-process
gateway on a real nats-server, with the real projector filling the gateway's view."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypeAlias

import grpc
import pytest
from envoy.config.core.v3.base_pb2 import Node
from envoy.config.core.v3.health_check_pb2 import HealthStatus
from envoy.service.health.v3.hds_pb2 import (
    HealthCheckRequestOrEndpointHealthResponse,
    HealthCheckSpecifier,
)
from nats.aio.client import Client as NATS

from events import DataplaneRegistered, JetStreamEventLog, decode_resource
from events.bus.projection_bus import JetStreamProjectionBus
from events.commands import Commands
from projections import Projector, open_store
from tests.harness import eventually
from tests.xds_gateway._gateways import channel_to, last_event, running_gateway
from xds_gateway import Gateway

METHOD = "/envoy.service.health.v3.HealthDiscoveryService/StreamHealthCheck"
Message: TypeAlias = HealthCheckRequestOrEndpointHealthResponse


def _dataplane() -> dict[str, Any]:
    return {"type": "Dataplane", "mesh": "default", "name": "web-1", "networking": {
        "address": "10.0.0.9", "inbound": [
            {"port": 7070, "servicePort": 8080, "tags": {"kuma.io/service": "web"},
             "serviceProbe": {"interval": "0.5s", "timeout": "1.5s", "unhealthyThreshold": 2,
                              "healthyThreshold": 3, "tcp": {}}},
            {"port": 7071, "tags": {"kuma.io/service": "admin"}},
            {"port": 7072, "serviceAddress": "10.1.0.1", "servicePort": 9090,
             "tags": {"kuma.io/service": "api"}, "serviceProbe": {"tcp": {}}}]}}


class HdsClient:
    """One HDS stream: requests from a queue, specifiers as they come."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._requests: asyncio.Queue[Message | None] = asyncio.Queue()
        self.call = channel.stream_stream(
            METHOD, request_serializer=Message.SerializeToString,
            response_deserializer=HealthCheckSpecifier.FromString)(self._iterate())

    async def _iterate(self) -> AsyncIterator[Message]:
        while (message := await self._requests.get()) is not None:
            yield message

    def hello(self, node_id: str) -> None:
        message = Message()
        message.health_check_request.node.CopyFrom(Node(id=node_id))
        self._requests.put_nowait(message)

    def report(self, status: int, address: str = "127.0.0.1", port: int = 8080) -> None:
        message = Message()
        cluster = message.endpoint_health_response.cluster_endpoints_health.add(
            cluster_name="localhost:8080")
        health = cluster.locality_endpoints_health.add().endpoints_health.add(
            health_status=status)
        health.endpoint.address.socket_address.address = address
        health.endpoint.address.socket_address.port_value = port
        self._requests.put_nowait(message)

    async def specifier(self) -> HealthCheckSpecifier:
        return await asyncio.wait_for(self.call.read(), 10)

    def close(self) -> None:
        self._requests.put_nowait(None)


@pytest.fixture
async def event_log(nc: NATS, tmp_path: Path) -> AsyncIterator[JetStreamEventLog]:
    """The mesh and web-1 (registered through the API), folded by a real projector."""
    event_log = await JetStreamEventLog.open(nc)
    commands = Commands(event_log, zone="default")
    await commands.apply(decode_resource({"type": "Mesh", "name": "default"}))
    await commands.apply(decode_resource(_dataplane()))
    store = await open_store(f"sqlite:///{tmp_path / 'rm.db'}")
    projector = asyncio.create_task(Projector(
        event_log, store, await JetStreamProjectionBus.open(nc), zone="default").run())
    try:
        yield event_log
    finally:
        projector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await projector
        await store.close()


@contextlib.asynccontextmanager
async def _gateway(nc: NATS) -> AsyncIterator[Gateway]:
    async with running_gateway(nc) as gw:
        await eventually(lambda: _in_view(gw), what="web-1 in the gateway's view")
        yield gw


async def _in_view(gw: Gateway) -> bool:
    return ("default", "web-1") in gw.view.dataplanes


def _ready(event: Any) -> list[bool | None]:
    return [None if i.health is None else i.health.ready
            for i in event.dataplane.networking.inbound]


async def test_the_specifier_lists_the_probed_inbounds(nc: NATS,
                                                      event_log: JetStreamEventLog) -> None:
    async with _gateway(nc) as gw, channel_to(gw) as channel:
        client = HdsClient(channel)
        client.hello("default.web-1")
        spec = await client.specifier()
        client.close()

    assert spec.interval.seconds == 5
    checks = {c.cluster_name: c for c in spec.cluster_health_checks}
    assert sorted(checks) == ["localhost:8080", "localhost:9090@10.1.0.1"]
    web = checks["localhost:8080"]
    (check,) = web.health_checks
    assert check.HasField("tcp_health_check")
    assert (check.interval.ToMilliseconds(), check.timeout.ToMilliseconds()) == (500, 1500)
    assert check.no_traffic_interval.ToMilliseconds() == 500  # else Envoy waits 60 s
    assert (check.unhealthy_threshold.value, check.healthy_threshold.value) == (2, 3)
    (socket,) = [e.address.socket_address for e in web.locality_endpoints[0].endpoints]
    assert (socket.address, socket.port_value) == ("127.0.0.1", 8080)
    api = checks["localhost:9090@10.1.0.1"].health_checks[0]
    assert (api.interval.ToMilliseconds(), api.timeout.ToMilliseconds()) == (1000, 2000)


async def test_reports_change_readiness_once_per_change(nc: NATS,
                                                       event_log: JetStreamEventLog) -> None:
    _, registered_at = await last_event(event_log)
    async with _gateway(nc) as gw, channel_to(gw) as channel:
        client = HdsClient(channel)
        client.hello("default.web-1")
        await client.specifier()

        client.report(HealthStatus.UNHEALTHY)

        async def moved(after: int) -> Any:
            got = await last_event(event_log)
            return got if got and got[1] > after else None

        event, seq = await eventually(lambda: moved(registered_at), what="the unhealthy event")
        assert isinstance(event, DataplaneRegistered) and event.origin == "api"  # kept
        assert _ready(event) == [False, None, None]  # only the reported address changed

        # the same report again, before and after the view has the change: nothing appended
        client.report(HealthStatus.UNHEALTHY)

        async def view_unready() -> bool:
            inbound = gw.view.dataplanes[("default", "web-1")].dataplane.networking.inbound[0]
            return inbound.health is not None and not inbound.health.ready

        await eventually(view_unready, what="the view to see ready: false")
        for _ in range(3):
            client.report(HealthStatus.UNHEALTHY)
        client.report(HealthStatus.UNKNOWN)  # says nothing about the service

        client.report(HealthStatus.HEALTHY)
        event, healthy_seq = await eventually(lambda: moved(seq), what="the healthy event")
        # the stream handles reports in order: the repeats before it appended nothing
        assert healthy_seq == seq + 1
        assert _ready(event) == [True, None, None] and event.origin == "api"
        client.close()


@pytest.mark.parametrize("first", ["bad node id", "a report first"])
async def test_a_malformed_stream_ends_invalid_argument_and_the_server_goes_on(
        nc: NATS, event_log: JetStreamEventLog, first: str) -> None:
    async with _gateway(nc) as gw, channel_to(gw) as channel:
        bad = HdsClient(channel)
        if first == "bad node id":
            bad.hello("no-dot")
        else:
            bad.report(HealthStatus.HEALTHY)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await bad.specifier()
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert ("node.id 'no-dot'" if first == "bad node id" else "health_check_request") \
            in (info.value.details() or "")

        good = HdsClient(channel)
        good.hello("default.web-1")
        assert len((await good.specifier()).cluster_health_checks) == 2
        good.close()
