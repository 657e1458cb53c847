"""A proxy's life as the gateways see it: `ProxyLifecycle`, one per gateway.

- `proxy_stream(...)`: the per-stream hook both ADS variants (SotW, Delta) wrap a stream in.
  It watches the stream's requests for the first one (the node is only known then, xds-rules
  #1), self-registers the Dataplane the node carries (`registration`), and has the stream's
  insight published (`insights`) from then until the stream ends.
- `run()`: heartbeats, insight writes and the reaper (`reaper.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Protocol

import grpc
from envoy.config.core.v3.base_pb2 import Node
from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest

from events import EventLog, is_resource_name, now_ms
from xds_gateway.proxies.insight_publisher import Insights, InsightsPublisher, Session
from xds_gateway.proxies.reaper import Reaper
from xds_gateway.proxies.registration import (
    RegistrationUnavailable,
    SelfRegistration,
    dataplane_from_node,
)
from xds_gateway.resources.names import parse_node_id
from xds_gateway.resources.node import DEFAULT_DNS_PORT, InvalidNode, proxy_node
from xds_gateway.server.subscription import InvalidStream, TypeState

__all__ = ["ProxyLifecycle"]

log = logging.getLogger("meshlog.xds.lifecycle")

_MAX_USER_AGENT = 256
"""Kept in the insight: a node may say megabytes, an insight must fit a NATS message."""


class _Stream(Protocol):
    types: Mapping[str, TypeState]


class ProxyLifecycle:
    def __init__(self, *, event_log: EventLog | None, insights: Insights | None, zone: str,
                 address: Callable[[], str], deregistration_delay_s: float = 10.0,
                 heartbeat_s: float = 5.0, insight_interval_s: float = 1.0) -> None:
        self.publisher = InsightsPublisher(insights, address=address,
                                           interval_s=insight_interval_s,
                                           heartbeat_s=heartbeat_s)
        self.registration = (SelfRegistration(event_log, zone=zone)
                             if event_log is not None else None)
        self.reaper = (Reaper(insights, self.registration, self.publisher,
                              delay_s=deregistration_delay_s, margin_s=2 * heartbeat_s)
                       if insights is not None and self.registration is not None else None)
        if self.reaper is not None:
            reaper = self.reaper
            self.publisher.swept_at = lambda: reaper.last_sweep_at

    @property
    def instance(self) -> str:
        return self.publisher.instance

    async def run(self, serving: asyncio.Event) -> None:
        """Once the gateway serves (its address is known): publish and reap until cancelled."""
        await serving.wait()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.publisher.run(), name="insights")
            if self.reaper is not None:
                tg.create_task(self.reaper.run(), name="reaper")

    @contextlib.asynccontextmanager
    async def proxy_stream(self, stream: _Stream, requests: AsyncIterator[DiscoveryRequest],
                           context: grpc.aio.ServicerContext, protocol: str
                           ) -> AsyncIterator[AsyncIterator[DiscoveryRequest]]:
        """Wrap one ADS stream: yields the request iterator to feed the stream with.

        An invalid Dataplane in the node raises `InvalidStream` (INVALID_ARGUMENT) from the
        iterator; a registration the log cannot take now ends the stream UNAVAILABLE (or
        FAILED_PRECONDITION without its mesh), and the proxy retries."""
        opened: list[Session] = []
        refused: list[Exception] = []

        async def watched() -> AsyncIterator[DiscoveryRequest]:
            first = True
            async for request in requests:
                if first:
                    first = False
                    try:
                        await self._on_first(request.node, stream, protocol, opened)
                    except (InvalidStream, RegistrationUnavailable) as exc:
                        # end the feed here and raise after the stream's task group, so the
                        # handler sees this error itself, not nested in the group's
                        refused.append(exc)
                        return
                yield request

        try:
            yield watched()
            for error in refused:
                if isinstance(error, RegistrationUnavailable):
                    log.warning("ending stream of %s: %s", context.peer(), error)
                    await context.abort(grpc.StatusCode.FAILED_PRECONDITION if error.precondition
                                        else grpc.StatusCode.UNAVAILABLE, str(error))
                raise error
        finally:
            for session in opened:
                self.publisher.close(session)
                if session.self_registered and self.reaper is not None:
                    self.reaper.schedule(session.mesh, session.name)

    async def _on_first(self, node: Node, stream: _Stream, protocol: str,
                        opened: list[Session]) -> None:
        parsed = parse_node_id(node.id)
        if parsed is None:
            return  # the stream rejects the node id itself (xds-rules #1)
        mesh, name = parsed
        for what, value in (("mesh", mesh), ("Dataplane", name)):
            if not is_resource_name(value):
                # no Dataplane can have it, and it is no bucket key: its insight would be
                # retried forever, holding back the writes of every other stream
                raise InvalidStream(f"node.id {node.id!r}: {value!r} is not a {what} name "
                                    "(lower-case letters, digits, '-' and '.')")
        try:
            parsed_node = proxy_node(node)  # what the stream refuses is never registered
        except InvalidNode as exc:
            raise InvalidStream(str(exc)) from exc
        dataplane = dataplane_from_node(node, mesh, name)
        session = Session(mesh=mesh, name=name, protocol=protocol,
                          user_agent=node.user_agent_name[:_MAX_USER_AGENT], types=stream.types,
                          dns_port=(parsed_node.dns_port
                                    if parsed_node.dns_port != DEFAULT_DNS_PORT else None),
                          self_registered=dataplane is not None)
        opened.append(session)
        if dataplane is None or self.registration is None:
            session.self_registered = False
            self.publisher.open(session)
            return
        # The connect insight goes out before the log is checked: a reaper that decided on
        # the previous (disconnected) insight then fails its revision-checked delete and
        # restores the Dataplane, or this check sees its deregistration and registers again.
        if not await self.publisher.write_now(session):
            # without it a reaper may act on the previous, disconnected insight and remove the
            # Dataplane of a connected proxy: the proxy retries, as for a log outage
            raise RegistrationUnavailable(
                f"Dataplane {mesh}.{name} not registered: the insights bucket is unavailable")
        session.self_registered = await self.registration.register(dataplane, now_ms())


