"""The insights bucket: shared per-proxy observations with revision-checked writes."""

from __future__ import annotations

from nats.aio.client import Client as NATS

from events.insights import GatewayHeartbeat, JetStreamInsights, ProxyInsight, TypeInsight


def _insight(gateway: str, session: str, **kw) -> ProxyInsight:
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
