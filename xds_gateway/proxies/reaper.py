"""The reaper: deregisters self-registered proxies gone everywhere for the deregistration delay.

Kuma's delay is 10 s. "Gone" is read from the shared insights, never from one gateway's memory:
a proxy that reconnected to any gateway has a newer, connected insight. A proxy whose gateway
stopped beating for longer than the delay plus a margin counts as disconnected since the last
beat, so a gateway that died without its final writes is covered by the others. Every gateway
runs the reaper; the log's optimistic concurrency makes two of them append one deregistration,
and the insight is then deleted at the revision the decision was taken on.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections.abc import Mapping

import msgspec

from events import now_ms, rfc3339
from events.bus.insights import GatewayHeartbeat, ProxyInsight
from xds_gateway.proxies.insight_publisher import Insights, InsightsPublisher
from xds_gateway.proxies.registration import Deregistered, SelfRegistration

__all__ = ["RETAIN_S", "Reaper"]

log = logging.getLogger("meshlog.xds.reaper")

RETAIN_S = 3600.0
"""How long the insight of a proxy gone (not self-registered), or the heartbeat of a gateway
gone, stays in the bucket for `_overview` to show."""


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
        # a scan can miss a heartbeat being replaced at that very moment (a KV watch): read
        # each gateway the scan did not show directly before deciding its proxies are gone
        for gateway in sorted({i.gateway for i in proxies.values()} - beats.keys()
                              - {self._publisher.instance}):
            beat = await self._insights.gateway(gateway)
            if beat is not None:
                beats[gateway] = beat
        for (mesh, name), insight in sorted(proxies.items()):
            if insight.self_registered:
                if self._due_since(insight, beats, started) is not None:
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
        since = self._due_since(insight, beats or {}, now_ms())
        if since is None:
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
                 rfc3339(since), self._delay_ms / 1000)
        if await self._insights.delete_proxy(mesh, name, revision):
            return
        # The insight moved since we read it: the proxy may have come back meanwhile.
        again = await self._insights.proxy(mesh, name)
        if again is not None and again[0].connected and again[0].session != insight.session:
            if await self._registration.restore(outcome, now_ms()):
                log.info("restored %s.%s: it reconnected while being deregistered", mesh, name)

    def _due_since(self, insight: ProxyInsight, beats: Mapping[str, GatewayHeartbeat],
                   now: int) -> int | None:
        """When the proxy went, if that is long enough ago to deregister it; else None."""
        since = self._gone_since(insight, beats, now)
        return since if since is not None and now - since >= self._delay_ms else None

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
