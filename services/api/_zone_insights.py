"""The insights of the zones' proxies, as global's API shows them with the zones' Dataplanes.

Kuma's global shows each synced Dataplane's DataplaneInsight as its zone sent it. Global's
`meshlog_zone_insights` bucket holds each registered zone's insights bucket, sourced over the
leafnode link (events.bus.zone_insights): a zone's Dataplane `<name>` (synced here as
`<name>-<hash>`, `kuma.io/display-name: <name>`, `kuma.io/zone: <zone>`) has its proxy's
insight under `<zone>.proxy.<mesh>.<name>`, its gateway's heartbeat under
`<zone>.gateway.<instance>`.

`connected` is decided as in the zone (`verdict`): the insight has no disconnect time and its
gateway was heard of within the zone's stale time (its heartbeat, synced with the rest). An
insight is an observation: over a cut link the copy here is the zone's last known one, so each
insight says where it comes from and how old it is (`syncedFrom`: the zone, its name there,
`asOf` = when the source last heard from the zone's bucket, `ageSeconds`, `current` while that
was within `CONNECTED_WITHIN_S`, the zone's own `connected` rule). The heartbeats stop coming
over a cut link, so once they are older than the stale time a proxy last known connected is
shown not connected, with no disconnect time (it is not known to have gone) and a `reason`;
never as connected on a link that went silent long ago. A zone never heard from (global
restarted while the link is cut: `asOf` null) has no disconnect time made up either.

Clocks: the heartbeat and connect times are the zone's clock. They are judged in the zone's
time: global's clock minus the zone's offset, estimated from the time global stored each
synced heartbeat against the heartbeat's own (services.api._clock_offsets: the smallest
difference of the recent heartbeats, so the link's smallest delay seen is in it), shown as
`syncedFrom.clockOffsetSeconds`. A zone whose clock is behind or ahead of global's
shows its connected proxies connected, and its proxies go when its gateways stop, as in the
zone.
"""

from __future__ import annotations

from typing import Any

import msgspec

from events import TransientError, now_ms, rfc3339
from events.bus.insights import GatewayHeartbeat, InsightsSnapshot, JetStreamInsights, ProxyInsight
from events.bus.sources import SourceState, source_states
from events.bus.zone_insights import ZONE_INSIGHTS_BUCKET, ZONE_INSIGHTS_STREAM, zone_of_api
from services.api._clock_offsets import ClockOffsets, Offsets
from services.api._ttl_cache import TtlCache
from services.api.zones import CONNECTED_WITHIN_S
from services.render import render_insight

__all__ = ["SyncedInsights", "verdict"]

_Read = tuple[dict[str, InsightsSnapshot], dict[str, SourceState], int, Offsets]
"""Each zone's snapshot, each zone's source, when (Unix ms) the sources were asked (a
source's `active` is measured then, not when a cached read is rendered), and each zone's
clock offset (global's clock minus its, services.api._clock_offsets)."""


def verdict(insight: ProxyInsight, beat: GatewayHeartbeat | None, now: int, stale_ms: int
            ) -> tuple[bool, int | None]:
    """(connected, disconnected_at) of one insight given its gateway's heartbeat, at `now`
    (Unix ms): the rule of the zone's API and of the gateways' reaper."""
    if insight.disconnected_at is not None:
        return False, insight.disconnected_at
    last_heard = insight.last_heard(beat)
    if now - last_heard > stale_ms:
        return False, last_heard
    return True, None


class SyncedInsights:
    """Global's reader of the zones' insights: one scan of the bucket and one read of its
    sources per `ttl_s`, however many requests."""

    def __init__(self, nc: Any, *, stale_ms: int, ttl_s: float, timeout_s: float) -> None:
        self._nc = nc
        self._stale_ms = stale_ms
        self._timeout_s = timeout_s
        self._bucket: JetStreamInsights | None = None
        self._reads = TtlCache[_Read](ttl_s=ttl_s, timeout_s=timeout_s, what="zone insights")
        self._offsets = ClockOffsets()

    async def insights_of(self, mesh: str, proxies: list[tuple[str, str]]
                          ) -> dict[tuple[str, str], dict[str, Any]]:
        """The `dataplaneInsight` of each (zone, name in the zone) of `mesh`."""
        try:
            zones, sources, asked, offsets = await self._reads.get(self._scan)
        except (TransientError, msgspec.DecodeError) as exc:
            return {p: {"unavailable": f"zone insights unavailable: {exc}"} for p in proxies}
        now = now_ms()
        return {(zone, name): self._render(zone, mesh, name, zones.get(zone, ({}, {})),
                                           sources.get(zone), asked, now, offsets)
                for zone, name in proxies}

    async def connected(self, mesh: str) -> set[tuple[str, str]]:
        """(zone, name in the zone) of each of `mesh`'s zones' proxies connected now, by the
        zone's rule (`verdict`, from the same read as `insights_of`, in the zone's
        time): over a cut link, a proxy last known connected counts until its gateway's last
        heartbeat that reached global is older than the stale time, then no more. Raises
        `TransientError` (or a decode error) when the bucket cannot be read."""
        zones, _, _, offsets = await self._reads.get(self._scan)
        now = now_ms()
        return {(zone, name) for zone, (proxies, beats) in zones.items()
                for (m, name), insight in proxies.items()
                if m == mesh and verdict(
                    insight, beats.get(insight.gateway),
                    now - offsets.get(zone, 0), self._stale_ms)[0]}

    def _render(self, zone: str, mesh: str, name: str, snapshot: InsightsSnapshot,
                source: SourceState | None, asked: int, now: int, offsets: Offsets | None = None
                ) -> dict[str, Any]:
        heard = (None if source is None or source.active_ms is None
                 else asked - source.active_ms)
        current = (source is not None and source.error is None and heard is not None
                   and now - heard < CONNECTED_WITHIN_S * 1000)
        synced: dict[str, Any] = {
            "zone": zone, "name": name, "current": current,
            "asOf": None if heard is None else rfc3339(heard),
            "ageSeconds": None if heard is None else round((now - heard) / 1000, 3)}
        proxies, beats = snapshot
        insight = proxies.get((mesh, name))
        if insight is None:
            doc: dict[str, Any] = {"connected": False, "subscriptions": []}
        else:
            beat = beats.get(insight.gateway)
            # the zone's "now" (and `heard` in its time): its stamps are in its clock
            offset = (offsets or {}).get(zone, 0)
            if offsets and zone in offsets:
                synced["clockOffsetSeconds"] = round(offset / 1000, 3)
            connected, gone = verdict(insight, beat, now - offset, self._stale_ms)
            if (not connected and not current and insight.disconnected_at is None
                    and (heard is None
                         or verdict(insight, beat, heard - offset, self._stale_ms)[0])):
                gone = None  # connected when last heard of (or never heard from): gone
                # since? not known here
            doc = render_insight(insight, connected=connected, disconnected_at=gone)
        if not current:
            since = "never heard from" if heard is None else (
                f"not heard from since {synced['asOf']} ({synced['ageSeconds']:g} s)")
            synced["reason"] = (f"zone {zone!r}'s insights are {since}: the link to it is "
                                "down or slow, so this is its last known insight, and whether "
                                "the proxy is connected now is not known here")
        doc["syncedFrom"] = synced
        return doc

    async def _scan(self) -> _Read:
        if self._bucket is None:  # made by global's sync at its first step
            self._bucket = await JetStreamInsights.open_existing(
                self._nc, ZONE_INSIGHTS_BUCKET, scan_timeout_s=self._timeout_s)
        zones, stamps = await self._bucket.stamped_zoned_snapshot()
        offsets = self._offsets.observe(zones, stamps)
        asked = now_ms()  # before the answer: `heard` is never later than the truth
        sources: dict[str, SourceState] = {}
        for state in await source_states(self._nc, stream=ZONE_INSIGHTS_STREAM):
            zone = zone_of_api(state.api)
            if zone is not None:
                sources[zone] = state
        return zones, sources, asked, offsets
