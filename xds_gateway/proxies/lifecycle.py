"""A proxy's life as the gateways see it: `ProxyLifecycle`, one per gateway.

- Stream callbacks (`xds_gateway.server.callbacks`): when an ADS stream opens (its first
  request carries the node, xds-rules #1) it self-registers the Dataplane the node carries
  (`registration`) and has the stream's insight published (`insight_publisher`) from then until
  the stream closes.
- `run()`: heartbeats, insight writes and the reaper (`reaper.py`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import grpc
from envoy.config.core.v3.base_pb2 import Node

from events import EventLog, is_resource_name, now_ms
from xds_gateway.proxies.insight_publisher import Insights, InsightsPublisher, Session
from xds_gateway.proxies.reaper import Reaper
from xds_gateway.proxies.registration import (
    RegistrationUnavailable,
    SelfRegistration,
    dataplane_from_node,
)
from xds_gateway.resources.ingress import ZONE_INGRESS_NODE
from xds_gateway.resources.names import parse_node_id
from xds_gateway.resources.node import (
    DEFAULT_DNS_PORT,
    IDENTITY_AGENT,
    InvalidNode,
    proxy_node,
)
from xds_gateway.server.callbacks import NoCallbacks, StreamInfo, StreamRefused
from xds_gateway.server.subscription import InvalidStream
from xds_gateway.type_urls import SECRET

__all__ = ["ProxyLifecycle"]

log = logging.getLogger("meshlog.xds.lifecycle")

_MAX_USER_AGENT = 256
"""Kept in the insight: a node may say megabytes, an insight must fit a NATS message."""


class ProxyLifecycle(NoCallbacks):
    """Requests and responses are not its concern: insights read the stream's counters
    (`Session.types`) at each round."""

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
        self._sessions: dict[StreamInfo, Session] = {}
        """The insight sessions of the ADS streams open here."""
        self._agents: set[StreamInfo] = set()
        """The streams of `meshlog grpc-identity` (no insight): Secrets only."""

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

    # --- StreamCallbacks (xds_gateway.server.callbacks) ---------------------------------------

    async def on_stream_open(self, stream: StreamInfo) -> None:
        """Publish the stream's insight and register the Dataplane its node carries. An invalid
        Dataplane refuses the stream INVALID_ARGUMENT; a registration the log cannot take now
        UNAVAILABLE (FAILED_PRECONDITION without its mesh), and the proxy retries."""
        if stream.protocol == "hds" or stream.node is None:
            return  # the proxy's ADS stream carries its insight and registration
        try:
            await self._on_first(stream, stream.node)
        except InvalidStream as exc:
            raise StreamRefused(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from exc
        except RegistrationUnavailable as exc:
            log.warning("ending stream of %s: %s", stream.peer, exc)
            raise StreamRefused(grpc.StatusCode.FAILED_PRECONDITION if exc.precondition
                                else grpc.StatusCode.UNAVAILABLE, str(exc)) from exc

    async def on_stream_request(self, stream: StreamInfo, request: object) -> None:
        if stream in self._agents:
            _secrets_only(getattr(request, "type_url", ""))

    async def on_stream_closed(self, stream: StreamInfo) -> None:
        self._agents.discard(stream)
        session = self._sessions.pop(stream, None)
        if session is None:
            return
        self.publisher.close(session)
        if session.self_registered and self.reaper is not None:
            self.reaper.schedule(session.mesh, session.name)

    async def _on_first(self, stream: StreamInfo, node: Node) -> None:
        parsed = parse_node_id(node.id)
        if parsed is None:
            return  # the stream rejects the node id itself (xds-rules #1)
        mesh, name = parsed
        checks = ((("ZoneIngress", name),) if mesh == ZONE_INGRESS_NODE
                  else (("mesh", mesh), ("Dataplane", name)))
        for what, value in checks:
            if not is_resource_name(value):
                # no Dataplane can have it, and it is no bucket key: its insight would be
                # retried forever, holding back the writes of every other stream
                raise InvalidStream(f"node.id {node.id!r}: {value!r} is not a {what} name "
                                    "(lower-case letters, digits, '-' and '.')")
        try:
            parsed_node = proxy_node(node)  # what the stream refuses is never registered
        except InvalidNode as exc:
            raise InvalidStream(str(exc)) from exc
        if node.user_agent_name == IDENTITY_AGENT:
            # a gRPC client's secrets only: its own stream is the proxy's insight. Any other
            # type would be a config stream no insight shows: refused
            _secrets_only(stream.type_url)
            self._agents.add(stream)
            return
        dataplane = dataplane_from_node(node, mesh, name)
        session = Session(mesh=mesh, name=name, protocol=stream.protocol,
                          user_agent=node.user_agent_name[:_MAX_USER_AGENT], types=stream.types,
                          dns_port=(parsed_node.dns_port
                                    if parsed_node.dns_port != DEFAULT_DNS_PORT else None),
                          self_registered=dataplane is not None)
        self._sessions[stream] = session
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


def _secrets_only(type_url: str) -> None:
    if type_url != SECRET:
        raise StreamRefused(grpc.StatusCode.INVALID_ARGUMENT,
                            f"node.user_agent_name {IDENTITY_AGENT!r} asks for Secrets only, "
                            f"not type_url {type_url!r}")
