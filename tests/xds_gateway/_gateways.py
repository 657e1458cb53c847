"""In-process gateways on a real nats-server, and ADS clients that introduce themselves with
a full `Node` (user agent, metadata), for the insight and registration tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeVar

import grpc
from envoy.config.core.v3.base_pb2 import Node
from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest
from nats.aio.client import Client as NATS
from prometheus_client import REGISTRY

from events import JetStreamEventLog, Mesh, decode_event, resource_subject
from events.bus.insights import JetStreamInsights
from events.bus.projection_bus import JetStreamProjectionBus
from events.commands import Commands
from tests.xds_gateway._ads import AdsClient
from xds_gateway import Gateway
from xds_gateway.proxies.auth import XDS_REFUSALS
from xds_gateway.proxies.registration import DATAPLANE_KEY

T = TypeVar("T")

DELAY_S = 0.5
HEARTBEAT_S = 0.2


def _refusals() -> dict[str, float]:
    return {reason: REGISTRY.get_sample_value("meshlog_xds_token_refusals_total",
                                              {"reason": reason}) or 0.0
            for reason in XDS_REFUSALS}


@contextlib.contextmanager
def refusals_counted(reason: str, times: int = 1) -> Iterator[None]:
    """The block refuses (or ends) `times` streams for their token, all for `reason`: the
    gateway's counter (`meshlog_xds_token_refusals_total`, this process's registry) moves by
    that for `reason` and for no other."""
    before = _refusals()
    yield
    after = _refusals()
    assert {r: after[r] - before[r] for r in after if after[r] != before[r]} == {reason: times}


@contextlib.asynccontextmanager
async def running_gateway(nc: NATS, *, insights_nc: NATS | None = None,
                          **options: Any) -> AsyncIterator[Gateway]:
    gateway = Gateway(
        await JetStreamProjectionBus.open(nc), event_log=await JetStreamEventLog.open(nc),
        insights=await JetStreamInsights.open(insights_nc or nc),
        **{"deregistration_delay_s": DELAY_S, "heartbeat_s": HEARTBEAT_S,
           "insight_interval_s": 0.1, "no_auth": True, **options})
    task = asyncio.create_task(gateway.run())
    try:
        await asyncio.wait_for(gateway.serving.wait(), 10)
        yield gateway
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def with_mesh(nc: NATS) -> JetStreamEventLog:
    event_log = await JetStreamEventLog.open(nc)
    await Commands(event_log, zone="default").apply(Mesh(name="default"))
    return event_log


def dataplane_doc(name: str = "web-1", port: int = 7070, **extra: Any) -> dict[str, Any]:
    return {"type": "Dataplane", "mesh": "default", "name": name,
            "networking": {"address": "10.0.0.9", "inbound": [
                {"port": port, "tags": {"kuma.io/service": "web"}}]}, **extra}


class ProxyClient(AdsClient):
    """An ADS stream whose first request carries a whole Node, as Envoy's does."""

    def hello(self, type_url: str, node_id: str, *, dataplane: dict[str, Any] | str | None = None,
              user_agent: str = "envoy") -> None:
        node = Node(id=node_id, user_agent_name=user_agent)
        if dataplane is not None:
            text = dataplane if isinstance(dataplane, str) else json.dumps(dataplane)
            node.metadata.fields[DATAPLANE_KEY].string_value = text
        self._requests.put_nowait(DiscoveryRequest(type_url=type_url, node=node))


@contextlib.asynccontextmanager
async def channel_to(gateway: Gateway) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        yield channel


async def last_event(event_log: JetStreamEventLog, name: str = "web-1") -> Any:
    record = await event_log.last(resource_subject("Dataplane", "default", name))
    if record is None:
        return None
    return decode_event(record.data, seq=record.seq, subject=record.subject,
                        schema_version=record.schema_version), record.seq
