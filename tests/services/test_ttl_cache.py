"""The API's scan cache (services.api._ttl_cache), shared by the proxy inspector and global's
reader of the zones' insights: reads that queue behind a scan get its answer, and its failure,
without a scan of their own; and a zone never heard from gets no made-up disconnect time."""

from __future__ import annotations

import asyncio

import pytest

from events import EventLogUnavailable, now_ms
from events.bus.insights import GatewayHeartbeat, ProxyInsight
from events.bus.sources import SourceState
from services.api._ttl_cache import TtlCache
from services.api._zone_insights import SyncedInsights


class _Scans:
    """A read that waits until let go, then answers (or fails); counts how often it ran."""

    def __init__(self, *, fail: bool) -> None:
        self.ran = 0
        self.started = asyncio.Event()
        self.go = asyncio.Event()
        self._fail = fail

    async def read(self) -> int:
        self.ran += 1
        self.started.set()
        await self.go.wait()
        if self._fail:
            raise EventLogUnavailable("the bus is down")
        return self.ran


async def _queued(cache: TtlCache[int], scans: _Scans) -> list[int | BaseException]:
    """Five reads at once, the first one's scan let go once the others queue behind it (the
    cache's ttl is 0: only the scan they queued behind answers them)."""
    reads = [asyncio.ensure_future(cache.get(scans.read)) for _ in range(5)]
    await scans.started.wait()  # the four others ran meanwhile, up to the cache's lock
    scans.go.set()
    return list(await asyncio.gather(*reads, return_exceptions=True))


async def test_reads_queued_behind_a_scan_get_its_answer() -> None:
    scans = _Scans(fail=False)
    answers = await _queued(TtlCache(ttl_s=0, timeout_s=5, what="insights"), scans)
    assert answers == [1] * 5 and scans.ran == 1


async def test_reads_queued_behind_a_failed_scan_get_its_failure_at_once() -> None:
    scans = _Scans(fail=True)
    answers = await _queued(TtlCache(ttl_s=0, timeout_s=5, what="insights"), scans)
    assert scans.ran == 1  # not one scan (each up to the timeout) per queued read
    assert all(isinstance(a, EventLogUnavailable) and "the bus is down" in str(a)
               for a in answers), answers


async def test_a_scan_past_its_timeout_fails_naming_what_and_how_long() -> None:
    async def never() -> int:
        await asyncio.Event().wait()
        return 0

    cache: TtlCache[int] = TtlCache(ttl_s=60, timeout_s=0.05, what="zone insights")
    with pytest.raises(EventLogUnavailable, match=r"zone insights not read within 0\.05 s"):
        await cache.get(never)
    with pytest.raises(EventLogUnavailable, match=r"zone insights not read within 0\.05 s"):
        await cache.get(never)  # within the ttl: the failure, without waiting again


def test_a_zone_never_heard_from_gets_no_made_up_disconnect_time() -> None:
    """Global restarted while the link is cut: its source never heard from the zone (`asOf`
    null); a proxy last known connected is not connected here, and not known to have gone."""
    long_ago = now_ms() - 3_600_000
    insight = ProxyInsight(mesh="default", name="redis-1", gateway="gw-1", session="s-1",
                           connected_at=long_ago)
    beat = GatewayHeartbeat(instance="gw-1", address="10.0.0.1", started_at=long_ago,
                            beat_at=long_ago)
    never = SourceState(filter_subject="", api="$JS.west.API", lag=0, active_ms=None)
    doc = SyncedInsights(None, stale_ms=15_000, ttl_s=1, timeout_s=5)._render(
        "west", "default", "redis-1", ({("default", "redis-1"): insight}, {"gw-1": beat}),
        never, now_ms(), now_ms())
    assert doc["connected"] is False
    assert "disconnectTime" not in doc["subscriptions"][0], doc
    assert doc["syncedFrom"]["asOf"] is None and doc["syncedFrom"]["current"] is False
    assert "never heard from" in doc["syncedFrom"]["reason"]
