"""The projector lease on a real nats-server: one holder at a time, renewals keep it, a silent
holder is replaced after the TTL, and a superseded holder's publish and commit are refused."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from events import LeaseLost
from events.bus.lease import FencedProjectionBus, JetStreamLease
from events.bus.projection_bus import CHECKPOINT_KEY, JetStreamProjectionBus
from projections import Change
from projections.errors import Fenced
from projections.leadership import FencedStore, Leadership
from tests.stores import BACKENDS, open_test_store

TTL_S = 1.0


async def _lease(nc: NATS, holder: str) -> JetStreamLease:
    bus = await JetStreamProjectionBus.open(nc)
    return await JetStreamLease.open(bus, name="main", holder=holder, ttl_s=TTL_S)


async def test_one_of_two_contenders_holds_and_renewals_keep_it(nc: NATS) -> None:
    a, b = await _lease(nc, "a"), await _lease(nc, "b")
    first = await asyncio.wait_for(a.acquire(), 5)
    contending = asyncio.ensure_future(b.acquire())
    keeping = asyncio.ensure_future(a.keep())
    try:
        deadline = time.monotonic() + 3 * TTL_S
        while time.monotonic() < deadline:  # three TTLs of renewals: b never gets it
            assert not contending.done()
            assert await a.current_holder() == "a"
            await asyncio.sleep(0.1)
        assert a.revision > first  # renewed
    finally:
        contending.cancel()
        keeping.cancel()
        await asyncio.wait([contending, keeping])


async def test_a_silent_holder_is_replaced_after_the_ttl(nc: NATS) -> None:
    a, b = await _lease(nc, "a"), await _lease(nc, "b")
    token_a = await a.acquire()  # and never renewed
    stopped_at = time.monotonic()
    token_b = await asyncio.wait_for(b.acquire(), 10 * TTL_S)
    assert time.monotonic() - stopped_at >= TTL_S
    assert token_b > token_a
    assert await b.current_holder() == "b"
    # the old holder learns it at its next renewal
    await asyncio.wait_for(a.keep(), 5 * TTL_S)
    assert a.token == 0


async def test_a_superseded_holders_publish_is_refused(nc: NATS) -> None:
    bus = await JetStreamProjectionBus.open(nc)
    a, b = await _lease(nc, "a"), await _lease(nc, "b")
    await a.acquire()
    stale_revision = a.revision
    await FencedProjectionBus(bus, a).publish([(CHECKPOINT_KEY, b"1")])
    await b.acquire()
    # a paused ex-leader still believes its revision is current
    a.revision = stale_revision
    with pytest.raises(LeaseLost):
        await FencedProjectionBus(bus, a).publish([("mesh/x", b"{}"), (CHECKPOINT_KEY, b"2")])
    await FencedProjectionBus(bus, b).publish([(CHECKPOINT_KEY, b"3")])
    current = await bus.current()
    assert current == {CHECKPOINT_KEY: b"3"}  # nothing of a's late batch, no lease key


async def test_a_stopped_leader_renews_its_lease_until_its_last_publish(
        nc: NATS, tmp_path: Path) -> None:
    """A stop cancels the fold; a commit in flight then finishes and publishes (the projector
    shields it). The lease is renewed until the fold has ended: a standby waiting meanwhile
    does not take over, and the last publish is not refused."""
    bus = await JetStreamProjectionBus.open(nc)
    a, b = await _lease(nc, "a"), await _lease(nc, "b")
    folding = asyncio.Event()
    published: list[bytes] = []

    async def fold(store: FencedStore) -> None:
        folding.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(3 * TTL_S)  # a slow commit, outlasting the lease's TTL
            await FencedProjectionBus(bus, a).publish([(CHECKPOINT_KEY, b"7")])
            published.append(b"7")
            raise

    async with open_test_store("sqlite", tmp_path) as store:
        leading = asyncio.ensure_future(Leadership(a, store).run(fold))
        await asyncio.wait_for(folding.wait(), 5)
        contending = asyncio.ensure_future(b.acquire())
        try:
            await asyncio.sleep(0.1)
            leading.cancel()
            await asyncio.wait([leading])
            assert published == [b"7"]
            assert not contending.done()  # renewed all along; released only now
            await asyncio.wait_for(contending, TTL_S)  # at once, not after a TTL
        finally:
            leading.cancel()
            contending.cancel()
            await asyncio.wait([leading, contending])
    assert (await bus.current())[CHECKPOINT_KEY] == b"7"


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_stale_tokens_commit_is_refused(backend: str, tmp_path: Path) -> None:
    async with open_test_store(backend, tmp_path) as store:
        row = Change("mesh", "default", b"{}")
        await store.claim("main", 5)
        await store.commit([row], 1, "main", fence=5)
        await store.claim("main", 9)  # a new leader
        with pytest.raises(Fenced):
            await store.commit([Change("mesh", "late", b"{}")], 2, "main", fence=5)
        with pytest.raises(Fenced):
            await store.claim("main", 7)
        assert await store.checkpoint("main") == 1
        assert await store.get("mesh", "late") is None
        await store.commit([], 2, "main", fence=9)
        assert await store.checkpoint("main") == 2


def test_who_leads_is_a_metric() -> None:
    """`meshlog_projector_leader` and `meshlog_projector_fencing_token` follow the role."""
    from prometheus_client import REGISTRY

    from projections.metrics import leadership_changed

    leadership_changed("metric-test", 7)
    assert REGISTRY.get_sample_value("meshlog_projector_leader",
                                     {"projector": "metric-test"}) == 1
    assert REGISTRY.get_sample_value("meshlog_projector_fencing_token",
                                     {"projector": "metric-test"}) == 7
    leadership_changed("metric-test", 0)
    assert REGISTRY.get_sample_value("meshlog_projector_leader",
                                     {"projector": "metric-test"}) == 0
