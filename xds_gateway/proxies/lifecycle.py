"""A proxy's life as the gateways see it: `ProxyLifecycle`, one per gateway.

- `proxy_stream(...)`: the per-stream hook both ADS variants (SotW, Delta) wrap a stream in.
  It watches the stream's requests for the first one (the node is only known then, xds-rules
  #1), self-registers the Dataplane the node carries (`registration`), and has the stream's
  insight published (`insights`) from then until the stream ends.
- `run()`: heartbeats, insight writes and the reaper.

The reaper deregisters self-registered proxies gone for longer than the deregistration delay
(Kuma: 10 s). "Gone" is read from the shared insights, never from one gateway's memory: a proxy
that reconnected to any gateway has a newer, connected insight. A proxy whose gateway stopped
beating for longer than the delay plus a margin counts as disconnected since the last beat, so
a gateway that died without its final writes is covered by the others. Every gateway runs the
reaper; the log's optimistic concurrency makes two of them append one deregistration, and the
insight is then deleted at the revision the decision was taken on.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Protocol

import grpc
import msgspec
from envoy.config.core.v3.base_pb2 import Node
from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest

from events import EventLog, is_resource_name, now_ms
from events.bus.insights import GatewayHeartbeat, ProxyInsight
from xds_gateway.proxies.insight_publisher import Insights, InsightsPublisher, Session
from xds_gateway.proxies.registration import (
    Deregistered,
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
RETAIN_S = 3600.0
"""How long the insight of a proxy gone (not self-registered), or the heartbeat of a gateway
gone, stays in the bucket for `_overview` to show."""


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


class Reaper:
    """Deregisters self-registered proxies that are gone everywhere for `delay_s`."""

    def __init__(self, insights: Insights, registration: SelfRegistration,
                 publisher: InsightsPublisher, *, delay_s: float, margin_s: float,
                 retain_s: float = RETAIN_S) -> None:
        self._insights = insights
        self._registration = registration
        self._publisher = publisher
        self._delay_ms = int(delay_s * 1000)
        self._margin_ms = int(margin_s * 1000)
        self._sweep_s = min(max(delay_s / 2, 0.1), 5.0)
        self._retain_ms = int(retain_s * 1000)
        self._deadlines: list[tuple[float, str, str]] = []
        """(monotonic time, mesh, name): streams that ended here, checked at their deadline
        rather than at the next sweep."""
        self._wake = asyncio.Event()
        self.last_sweep_at = 0
        """Unix ms at the start of the last completed sweep (tests wait past a deadline)."""

    def schedule(self, mesh: str, name: str) -> None:
        heapq.heappush(self._deadlines,
                       (time.monotonic() + self._delay_ms / 1000 + 0.01, mesh, name))
        self._wake.set()

    async def run(self) -> None:
        next_sweep = time.monotonic() + self._sweep_s
        while True:
            now = time.monotonic()
            until = min(next_sweep, self._deadlines[0][0]) if self._deadlines else next_sweep
            if until > now:
                with contextlib.suppress(TimeoutError):  # not wait_for: see insights.py
                    async with asyncio.timeout(until - now):
                        await self._wake.wait()
                self._wake.clear()
                continue
            try:
                while self._deadlines and self._deadlines[0][0] <= now:
                    _, mesh, name = heapq.heappop(self._deadlines)
                    await self.reap(mesh, name, None)
                if now >= next_sweep:
                    next_sweep = now + self._sweep_s
                    await self.sweep()
            except Exception as exc:  # the bucket or the log is down: try again next round
                log.warning("reaper round failed: %r", exc)

    async def sweep(self) -> None:
        """Look at every insight; reap the proxies gone for longer than the delay, and forget
        what has been silent for `RETAIN_S` (the bucket would otherwise grow with every
        gateway restart and every proxy that ever connected)."""
        started = now_ms()
        proxies, beats = await self._insights.snapshot()
        for (mesh, name), insight in sorted(proxies.items()):
            if insight.self_registered:
                if self._due(insight, beats, started):
                    await self.reap(mesh, name, beats)
            elif self._silent(insight, beats, started):
                await self._forget(mesh, name, insight.session)
        for instance, beat in sorted(beats.items()):
            if started - beat.beat_at > self._retain_ms:
                await self._insights.forget_gateway(instance, beat.beat_at)
        self.last_sweep_at = started

    def _silent(self, insight: ProxyInsight, beats: Mapping[str, GatewayHeartbeat],
                now: int) -> bool:
        last_seen = insight.disconnected_at or insight.last_heard(beats.get(insight.gateway))
        return now - last_seen > self._retain_ms

    async def _forget(self, mesh: str, name: str, session: str) -> None:
        got = await self._insights.proxy(mesh, name)
        if got is not None and got[0].session == session:  # not a newer stream's insight
            await self._insights.delete_proxy(mesh, name, got[1])

    async def reap(self, mesh: str, name: str,
                   beats: Mapping[str, GatewayHeartbeat] | None) -> None:
        """Decide again on the current insight, deregister, then forget the insight at the
        revision the decision was taken on. `beats` None: only this gateway's own streams."""
        got = await self._insights.proxy(mesh, name)
        if got is None:
            return
        insight, revision = got
        if not insight.self_registered:
            return
        if beats is None and insight.gateway != self._publisher.instance:
            return  # another gateway's stream: the sweep decides, with the heartbeats
        if not self._due(insight, beats or {}, now_ms()):
            return
        outcome = await self._registration.deregister(mesh, name, now_ms())
        if outcome == "api":  # the API took the Dataplane over: never reaped
            await self._insights.update(_not_self_registered(insight), revision)
            return
        if not isinstance(outcome, Deregistered):
            if outcome == "absent":
                await self._insights.delete_proxy(mesh, name, revision)
            return
        log.info("deregistered %s.%s: gone since %s for more than %.1f s", mesh, name,
                 insight.disconnected_at, self._delay_ms / 1000)
        if await self._insights.delete_proxy(mesh, name, revision):
            return
        # The insight moved since we read it: the proxy may have come back meanwhile.
        again = await self._insights.proxy(mesh, name)
        if again is not None and again[0].connected and again[0].session != insight.session:
            if await self._registration.restore(outcome, now_ms()):
                log.info("restored %s.%s: it reconnected while being deregistered", mesh, name)

    def _due(self, insight: ProxyInsight, beats: Mapping[str, GatewayHeartbeat],
             now: int) -> bool:
        since = self._gone_since(insight, beats, now)
        return since is not None and now - since >= self._delay_ms

    def _gone_since(self, insight: ProxyInsight, beats: Mapping[str, GatewayHeartbeat],
                    now: int) -> int | None:
        """When the proxy was last known connected, or None while it is."""
        if insight.disconnected_at is not None:
            return insight.disconnected_at
        if insight.gateway == self._publisher.instance:
            return self._publisher.ended_at(insight.session)  # our own streams we know
        last_seen = insight.last_heard(beats.get(insight.gateway))
        return last_seen if now - last_seen > self._delay_ms + self._margin_ms else None


def _not_self_registered(insight: ProxyInsight) -> ProxyInsight:
    return msgspec.structs.replace(insight, self_registered=False)
