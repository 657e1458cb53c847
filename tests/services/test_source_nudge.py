"""Restarting stream sources (services.runtime._source_nudge, events.bus.sources) on a real
nats-server (JetStream domain `hub`) with another (`leaf`) joined as a leafnode, a stream `DOWN`
on the hub sourcing the leaf's streams `UP1` and `UP2` through `$JS.leaf.API`, as a control
plane sources another's: a restart resumes after the
last origin sequence `DOWN` holds (the upstream messages carry no Msg-Id, so nothing but that
keeps them from being stored twice); the nudger restarts only a source silent for longer than
nats-server's health check whose upstream's API answers, and a source at most once per 30 s
(its clock is the test's)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import nats.js.errors
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    ExternalStream,
    StreamConfig,
    StreamSource,
)

from events import connect_nats
from events.bus.sources import SourceSpec, restart_sources, source_states, upstream_answers
from events.bus.zone_insights import (
    ZONE_INSIGHTS_BUCKET,
    ZONE_INSIGHTS_STREAM,
    ensure_zone_insight_sources,
)
from services.runtime._source_nudge import NUDGE_EVERY_S, STALLED_MS, SourceNudger
from services.runtime.embedded_nats import run_nats_server
from tests.harness import free_port

T = TypeVar("T")

API = "$JS.leaf.API"
UP1, UP2, NOWHERE = (SourceSpec("up1.>", API), SourceSpec("up2.>", API),
                     SourceSpec("far.>", "$JS.nowhere.API"))


@pytest.fixture
async def hub(servers: tuple[NATS, NATS]) -> NATS:
    """A connection to the hub's nats-server (`servers`)."""
    return servers[0]


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[tuple[NATS, NATS]]:
    """Connections to the hub's nats-server (domain `hub`) and to the leaf's (domain `leaf`,
    holding the upstreams), once the leaf is joined to the hub as a leafnode, as a zone joins
    global."""
    port = free_port()
    (tmp_path / "hub.conf").write_text(
        f"jetstream {{ domain: hub }}\nleafnodes {{ host: 127.0.0.1, port: {port} }}\n")
    (tmp_path / "leaf.conf").write_text(
        "jetstream { domain: leaf }\n"
        f"leafnodes {{ remotes: [{{ url: \"nats-leaf://127.0.0.1:{port}\" }}] }}\n")
    async with run_nats_server(tmp_path / "hub", config=tmp_path / "hub.conf",
                               server_name="hub") as url, \
            run_nats_server(tmp_path / "leaf", config=tmp_path / "leaf.conf",
                            server_name="leaf") as leaf_url:
        nc = await connect_nats(url, name="test")
        leaf = await connect_nats(leaf_url, name="test-leaf")
        try:
            await _eventually(lambda: upstream_answers(nc, API, "UP1"), what="the leafnode")
            yield nc, leaf
        finally:
            await leaf.close()
            await nc.close()


async def _eventually(check: Callable[[], Awaitable[T | None]], *, what: str) -> T:
    """Poll `check` until it returns something truthy, for up to 30 s."""
    deadline = time.monotonic() + 30
    while True:
        if result := await check():
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def _source(upstream: str, spec: SourceSpec) -> StreamSource:
    return StreamSource(name=upstream, filter_subject=spec.filter_subject,
                        external=ExternalStream(api=spec.api))


async def _down(nc: NATS) -> list[str]:
    """The bodies `DOWN` holds, in its order."""
    js = nc.jetstream()
    total = (await js.stream_info("DOWN")).state.messages
    sub = await js.pull_subscribe("", stream="DOWN", config=ConsumerConfig(
        ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL))
    bodies: list[str] = []
    while len(bodies) < total:
        bodies += [m.data.decode() for m in await sub.fetch(total - len(bodies), timeout=5)]
    await sub.unsubscribe()
    return bodies


async def _publish(nc: NATS, *subjects: str) -> None:
    js = nc.jetstream(domain="leaf")
    for subject in subjects:
        await js.publish(subject, subject.encode())  # no Msg-Id: no dedup to hide a repeat


async def _holds(nc: NATS, last: str) -> list[str]:
    async def ready() -> list[str] | None:
        bodies = await _down(nc)
        return bodies if bodies and last in bodies else None
    return await _eventually(ready, what=f"{last} sourced")


async def test_a_restarted_source_resumes_after_what_the_stream_holds(hub: NATS) -> None:
    js, leaf = hub.jetstream(), hub.jetstream(domain="leaf")
    await leaf.add_stream(StreamConfig(name="UP1", subjects=["up1.>"]))
    await leaf.add_stream(StreamConfig(name="UP2", subjects=["up2.>"]))
    await js.add_stream(StreamConfig(name="DOWN", subjects=["down.>"], sources=[
        _source("UP1", UP1), _source("UP2", UP2)]))
    await _publish(hub, "up1.a", "up1.b", "up2.a")
    await _holds(hub, "up1.b")
    await _holds(hub, "up2.a")

    # one of two sources (the other keeps its consumer), then both (none left between)
    assert await restart_sources(hub, [UP1], zone="hub", stream="DOWN") == [UP1]
    await _publish(hub, "up1.c", "up2.b")
    assert await restart_sources(hub, [UP1, UP2, NOWHERE], zone="hub", stream="DOWN") == [UP1, UP2]
    await _publish(hub, "up1.d", "up2.c")
    bodies = await _holds(hub, "up1.d")
    bodies = await _holds(hub, "up2.c")
    assert [b for b in bodies if b.startswith("up1")] == ["up1.a", "up1.b", "up1.c", "up1.d"]
    assert [b for b in bodies if b.startswith("up2")] == ["up2.a", "up2.b", "up2.c"]
    assert sorted({(s.filter_subject, s.api) for s in await source_states(hub, stream="DOWN")}
                  ) == [("up1.>", API), ("up2.>", API)]
    assert await restart_sources(hub, [NOWHERE], zone="hub", stream="DOWN") == []


async def test_a_restarted_zone_insights_source_resumes_after_what_the_bucket_holds(
        servers: tuple[NATS, NATS]) -> None:
    """Global's zone-insights bucket (one value per key, keys prefixed with the zone by a
    subject transform) sources a zone's insights bucket as the event stream sources its log:
    restarted, it resumes after the last value it holds, nothing sourced twice."""
    hub, zone = servers
    leaf = zone.jetstream()  # the zone writes its own bucket on its own server
    await leaf.create_key_value(bucket="meshlog_insights")
    assert await ensure_zone_insight_sources(hub, ["leaf"])
    kv = await hub.jetstream().key_value(ZONE_INSIGHTS_BUCKET)

    async def value(key: str, want: bytes | None) -> bool:
        try:
            got = (await kv.get(key)).value
        except nats.js.errors.KeyNotFoundError:  # absent, or deleted
            got = None
        return got == want

    async def wait(key: str, want: bytes | None) -> None:
        await _eventually(lambda: value(key, want), what=f"{key} = {want!r}")

    await leaf.publish("$KV.meshlog_insights.a", b"1")
    await leaf.publish("$KV.meshlog_insights.b", b"1")
    await wait("leaf.b", b"1")
    spec = SourceSpec("", API)
    assert await restart_sources(hub, [spec], zone="hub", stream=ZONE_INSIGHTS_STREAM) == [spec]
    await leaf.publish("$KV.meshlog_insights.a", b"2")
    await leaf.publish("$KV.meshlog_insights.b", b"", headers={"KV-Operation": "DEL"})
    await wait("leaf.a", b"2")
    await wait("leaf.b", None)
    # four writes upstream, four stored here: none sourced again after the restart
    assert (await hub.jetstream().stream_info(ZONE_INSIGHTS_STREAM)).state.last_seq == 4


async def test_the_nudger_restarts_a_silent_source_whose_upstream_answers_backing_off(
        hub: NATS) -> None:
    now = [0.0]
    nudger = SourceNudger(hub, zone="hub", stream="DOWN", clock=lambda: now[0])
    js = hub.jetstream()
    # UP1 does not exist yet (its API answers: no such stream), $JS.nowhere.API has no server
    await js.add_stream(StreamConfig(name="DOWN", subjects=["down.>"], sources=[
        _source("UP1", UP1), _source("FAR", NOWHERE)]))
    assert await nudger.step() == []  # first seen now
    now[0] = STALLED_MS / 1000 - 1
    assert await nudger.step() == []  # not silent for long enough yet
    now[0] = STALLED_MS / 1000 + 1
    assert await nudger.step() == [UP1]  # nowhere's API does not answer: left alone
    now[0] += NUDGE_EVERY_S - 1
    assert await nudger.step() == []  # still silent, but restarted less than 30 s ago
    now[0] += 1
    assert await nudger.step() == [UP1]
    now[0] += NUDGE_EVERY_S
    assert await nudger.step() == []  # silent after a restart: twice the interval now
    await hub.jetstream(domain="leaf").add_stream(StreamConfig(name="UP1", subjects=["up1.>"]))
    await _publish(hub, "up1.a")
    now[0] += NUDGE_EVERY_S
    assert await nudger.step() == [UP1]  # 60 s after the last
    assert await _holds(hub, "up1.a") == ["up1.a"]
    now[0] += NUDGE_EVERY_S
    # heard from (a message or a heartbeat a second): not restarted
    await _eventually(lambda: _heard_from(hub), what="UP1's source heard from")
    assert await nudger.step() == []


async def _heard_from(nc: NATS) -> bool:
    states = {s.filter_subject: s for s in await source_states(nc, stream="DOWN")}
    active = states["up1.>"].active_ms
    return active is not None and active < STALLED_MS
