"""The reaper's races, on a real nats-server: two gateways reaping at once, and a proxy that
reconnects between a reaper's decision and its delete."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client as NATS

from events import (
    Dataplane,
    DataplaneDeregistered,
    DataplaneRegistered,
    decode_resource,
    now_ms,
    rfc3339,
)
from events.bus.insights import GatewayHeartbeat, JetStreamInsights, ProxyInsight
from tests.xds_gateway._gateways import dataplane_doc, last_event, with_mesh
from xds_gateway.proxies.insight_publisher import Insights, InsightsPublisher
from xds_gateway.proxies.reaper import Reaper
from xds_gateway.proxies.registration import SelfRegistration

GONE = ProxyInsight(mesh="default", name="web-1", gateway="gw-old", session="s1",
                    connected_at=1_000, disconnected_at=2_000, self_registered=True)


def _reaper(insights: Insights, registration: SelfRegistration) -> Reaper:
    publisher = InsightsPublisher(insights, address=lambda: "127.0.0.1:0")
    # long enough that the time a loaded machine takes between a test's `now_ms()` and the
    # reaper's own cannot carry a beat across delay + margin (9 s): no wait depends on them
    return Reaper(insights, registration, publisher, delay_s=5, margin_s=4)


async def _registered(nc: NATS) -> tuple[Any, SelfRegistration, JetStreamInsights]:
    event_log = await with_mesh(nc)
    registration = SelfRegistration(event_log, zone="default")
    dataplane = decode_resource(dataplane_doc())
    assert isinstance(dataplane, Dataplane)
    assert await registration.register(dataplane, at=1_000)
    insights = await JetStreamInsights.open(nc)
    await insights.put(GONE)
    return event_log, registration, insights


async def test_two_gateways_reaping_at_once_append_one_deregistration(
        nc: NATS, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="meshlog.xds.reaper")
    event_log, registration, insights = await _registered(nc)
    _, registered_seq = await last_event(event_log)
    await asyncio.gather(_reaper(insights, registration).reap("default", "web-1", {}),
                         _reaper(insights, registration).reap("default", "web-1", {}))
    event, seq = await last_event(event_log)
    assert isinstance(event, DataplaneDeregistered)
    assert seq == registered_seq + 1 == await event_log.last_seq()  # one event, not two
    assert await insights.proxy("default", "web-1") is None
    # like other log lines, the time as RFC 3339, not epoch milliseconds
    assert ("deregistered default.web-1: gone since 1970-01-01T00:00:02Z for more than 5.0 s"
            in caplog.messages)


class _ReconnectsDuringDelete:
    """The real bucket, with the proxy reconnecting elsewhere just before a reaper's delete."""

    def __init__(self, inner: JetStreamInsights) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def delete_proxy(self, mesh: str, name: str, last: int) -> bool:
        await self._inner.put(msgspec.structs.replace(
            GONE, gateway="gw-new", session="s2", connected_at=now_ms(), disconnected_at=None))
        return await self._inner.delete_proxy(mesh, name, last)


async def test_a_proxy_back_while_being_reaped_gets_its_dataplane_back(nc: NATS) -> None:
    event_log, registration, insights = await _registered(nc)
    _, registered_seq = await last_event(event_log)
    racing = _ReconnectsDuringDelete(insights)
    await _reaper(racing, registration).reap("default", "web-1", {})
    event, seq = await last_event(event_log)
    assert isinstance(event, DataplaneRegistered) and event.origin == "proxy"
    assert seq == registered_seq + 2  # deregistered, then restored
    got = await insights.proxy("default", "web-1")
    assert got is not None and got[0].session == "s2" and got[0].connected


async def test_a_connected_proxy_goes_only_when_its_gateway_stops_beating(
        nc: NATS, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="meshlog.xds.reaper")
    event_log, registration, insights = await _registered(nc)
    _, registered_seq = await last_event(event_log)
    await insights.put(msgspec.structs.replace(GONE, disconnected_at=None))  # since long ago
    reaper = _reaper(insights, registration)

    def beat(at: int) -> dict[str, GatewayHeartbeat]:
        return {"gw-old": GatewayHeartbeat(instance="gw-old", address="x", started_at=1,
                                           beat_at=at)}

    await reaper.reap("default", "web-1", beat(now_ms()))  # its gateway is alive
    assert (await last_event(event_log))[1] == registered_seq
    await reaper.reap("default", "web-1", beat(now_ms() - 5_000))  # not past delay + margin
    assert (await last_event(event_log))[1] == registered_seq
    last_beat = now_ms() - 10_000
    await reaper.reap("default", "web-1", beat(last_beat))  # silent for too long
    event, _ = await last_event(event_log)
    assert isinstance(event, DataplaneDeregistered)
    # gone since its gateway's last beat (the insight has no disconnect time)
    assert (f"deregistered default.web-1: gone since {rfc3339(last_beat)} for more than 5.0 s"
            in caplog.messages)


async def test_an_undecodable_insight_does_not_stop_the_sweep(nc: NATS) -> None:
    event_log, registration, insights = await _registered(nc)
    kv = await nc.jetstream().key_value("meshlog_insights")
    await kv.put("proxy.default.aaa", b'{"written": "by another version"}')
    await kv.put("gateway.gw-odd", b"not json")
    await _reaper(insights, registration).sweep()
    event, _ = await last_event(event_log)
    assert isinstance(event, DataplaneDeregistered)  # web-1 is reaped all the same


async def test_a_sweep_forgets_what_has_been_silent_for_the_retention(nc: NATS) -> None:
    """Without it the bucket grows with every gateway restart and every proxy that ever
    connected; what is recent or connected stays."""
    event_log = await with_mesh(nc)
    insights = await JetStreamInsights.open(nc)
    publisher = InsightsPublisher(insights, address=lambda: "127.0.0.1:0")
    reaper = Reaper(insights, SelfRegistration(event_log, zone="default"), publisher,
                    delay_s=0.5, margin_s=0.4, retain_s=60)
    now = now_ms()
    old, recent = now - 120_000, now - 1_000

    def proxy(name: str, gateway: str, disconnected_at: int | None) -> ProxyInsight:
        return ProxyInsight(mesh="default", name=name, gateway=gateway, session=name,
                            connected_at=old, disconnected_at=disconnected_at)

    await insights.put(proxy("gone-long-ago", "gw-live", old))
    await insights.put(proxy("gone-recently", "gw-live", recent))
    await insights.put(proxy("connected", "gw-live", None))
    await insights.put(proxy("on-a-dead-gateway", "gw-dead", None))
    await insights.beat(GatewayHeartbeat(instance="gw-live", address="a", started_at=old,
                                         beat_at=recent))
    await insights.beat(GatewayHeartbeat(instance="gw-dead", address="b", started_at=old,
                                         beat_at=old))
    await reaper.sweep()
    proxies, beats = await insights.snapshot()
    assert sorted(name for _, name in proxies) == ["connected", "gone-recently"]
    assert sorted(beats) == ["gw-live"]
