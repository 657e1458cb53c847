"""The insights bucket: shared per-proxy observations with revision-checked writes."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from events.bus.insights import GatewayHeartbeat, JetStreamInsights, ProxyInsight, TypeInsight
from events.errors import EventLogUnavailable


def _insight(gateway: str, session: str, **kw: Any) -> ProxyInsight:
    return ProxyInsight(mesh="default", name="web-1", gateway=gateway, session=session,
                        connected_at=1_000, **kw)


async def test_an_insight_round_trips(nc: NATS) -> None:
    insights = await JetStreamInsights.open(nc)
    sent = _insight("gw-a", "s1", types={"t": TypeInsight(responses_sent=2, nacks=1,
                                                          last_nack_message="bad")})
    await insights.put(sent)
    got = await insights.proxy("default", "web-1")
    assert got is not None and got[0] == sent and got[0].connected


async def test_a_gateway_that_lost_the_proxy_cannot_overwrite_it(nc: NATS) -> None:
    insights = await JetStreamInsights.open(nc)
    rev_a = await insights.put(_insight("gw-a", "s1"))
    await insights.put(_insight("gw-b", "s2"))  # the proxy reconnected to gateway b
    assert await insights.update(_insight("gw-a", "s1", disconnected_at=2_000), rev_a) is None
    got = await insights.proxy("default", "web-1")
    assert got is not None and got[0].gateway == "gw-b" and got[0].connected
    assert not await insights.delete_proxy("default", "web-1", rev_a)


async def test_snapshot_lists_proxies_and_gateways(nc: NATS) -> None:
    insights = await JetStreamInsights.open(nc)
    rev = await insights.put(_insight("gw-a", "s1"))
    await insights.beat(GatewayHeartbeat(instance="gw-a", address="127.0.0.1:1",
                                         started_at=1, beat_at=2, streams=1))
    proxies, gateways = await insights.snapshot()
    assert list(proxies) == [("default", "web-1")] and list(gateways) == ["gw-a"]
    assert await insights.delete_proxy("default", "web-1", rev)
    assert await insights.proxy("default", "web-1") is None
    assert (await insights.snapshot())[0] == {}



class _StopsTheServer(logging.Handler):
    """Stops the test's nats-server (SIGSTOP) when the scan logs its first skipped entry:
    the bus then stops answering in the middle of a scan, for real."""

    def __init__(self, pid: int) -> None:
        super().__init__()
        self.pid = pid
        self.stopped = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.stopped:
            self.stopped = True
            os.kill(self.pid, signal.SIGSTOP)


async def test_a_scan_the_bus_stops_answering_ends_unavailable(nc: NATS, tmp_path: Path
                                                               ) -> None:
    """The reaper's sweep waits on this scan: a stopped nats-server must not hold it."""
    insights = await JetStreamInsights.open(nc, scan_timeout_s=1.0)
    kv = await nc.jetstream().key_value("meshlog_insights")
    await kv.put("proxy.default.aaa", b"not json")  # the first entry the scan meets
    noise = {f"t{i}": TypeInsight(last_nack_message="x" * 2000) for i in range(4)}
    for i in range(3_000):  # more than a socket holds: the rest waits on the server
        await insights.put(ProxyInsight(mesh="default", name=f"p{i}", gateway="gw-a",
                                        session="s", connected_at=1, types=noise))
    [ports] = (tmp_path / "nats" / "ports").glob("*.ports")
    stopper = _StopsTheServer(int(ports.stem.rpartition("_")[2]))
    logger = logging.getLogger("meshlog.insights")
    logger.addHandler(stopper)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        with pytest.raises(EventLogUnavailable):
            async with asyncio.timeout(10):  # the test's own bound, past the scan's
                await insights.snapshot()
        assert stopper.stopped and loop.time() - started < 6
    finally:
        logger.removeHandler(stopper)
        os.kill(stopper.pid, signal.SIGCONT)


async def test_a_scan_misses_no_proxy_rewritten_while_it_runs(nc: NATS) -> None:
    """Gateways rewrite insights all the time: a key rewritten during a scan must still be in
    it (before, ~1 scan in 6 of this load missed one, and the reaper or an overview took that
    proxy, or a gateway's heartbeat, for gone)."""
    insights = await JetStreamInsights.open(nc)
    names = [f"web-{i}" for i in range(300)]
    for name in names:
        await insights.put(ProxyInsight(mesh="default", name=name, gateway="gw-a",
                                        session="s", connected_at=1_000))
    await insights.delete_proxy("default", "web-0", (await insights.proxy("default", "web-0")
                                                     or (None, 0))[1])
    rewritten = 0
    writing = True

    async def rewrite(offset: int) -> None:
        nonlocal rewritten
        while writing:
            for name in names[1 + offset::4]:  # never web-0: deleted, it stays gone
                await insights.put(ProxyInsight(mesh="default", name=name, gateway="gw-a",
                                                session="s", connected_at=1_000 + rewritten))
                rewritten += 1

    writers = [asyncio.create_task(rewrite(offset)) for offset in range(4)]
    try:
        for _ in range(60):
            proxies, _ = await insights.snapshot()
            assert sorted(name for _, name in proxies) == sorted(names[1:])
    finally:
        writing = False
        await asyncio.gather(*writers)
    assert rewritten > len(names)  # the scans did run while keys were being written


async def test_a_scan_stamps_every_heartbeat_also_one_rewritten_while_it_runs(
        nc: NATS) -> None:
    """Global's clock offset of a zone is sampled from the scans' stamps of its heartbeats
    (services.api._clock_offsets): a heartbeat the watcher missed (rewritten while the scan
    ran) and read alone must be stamped too, from the same read (before, such a heartbeat had
    no stamp, and a zone whose first synced heartbeat came in during a scan showed no offset)."""
    insights = await JetStreamInsights.open(nc)
    instances = [f"gw-{i}" for i in range(300)]
    for instance in instances:
        await insights.beat(GatewayHeartbeat(instance=instance, address="127.0.0.1:1",
                                             started_at=1, beat_at=2))
    rewritten = 0
    writing = True

    async def rewrite(offset: int) -> None:
        nonlocal rewritten
        while writing:
            for instance in instances[offset::4]:
                await insights.beat(GatewayHeartbeat(instance=instance, address="127.0.0.1:1",
                                                     started_at=1, beat_at=3 + rewritten))
                rewritten += 1

    writers = [asyncio.create_task(rewrite(offset)) for offset in range(4)]
    try:
        for _ in range(60):
            zones, stamps = await insights.stamped_zoned_snapshot(zoned=False)
            assert sorted(zones[""][1]) == sorted(instances)
            assert sorted(i for _, i in stamps) == sorted(instances)
    finally:
        writing = False
        await asyncio.gather(*writers)
    assert rewritten > len(instances)  # the scans did run while keys were being written
