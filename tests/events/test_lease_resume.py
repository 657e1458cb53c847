"""A lease holder whose term ended because no renewal got through (NATS, or the bucket's
quorum, away for a TTL) takes the lease again at once when the key still names it, with a
higher fencing token; a key naming another holder is still waited out."""

from __future__ import annotations

import asyncio
import time

from nats.aio.client import Client as NATS

from events.bus.lease import JetStreamLease
from events.bus.projection_bus import JetStreamProjectionBus

TTL_S = 30.0
"""Long: taking the lease back must not wait for it."""


async def test_a_holder_takes_its_own_unchanged_lease_back_at_once(nc: NATS) -> None:
    bus = await JetStreamProjectionBus.open(nc)
    first = await JetStreamLease.open(bus, name="main", holder="a", ttl_s=TTL_S)
    token = await first.acquire()
    again = await JetStreamLease.open(bus, name="main", holder="a", ttl_s=TTL_S)
    started = time.monotonic()
    new_token = await asyncio.wait_for(again.acquire(), 10)
    assert time.monotonic() - started < TTL_S / 3
    assert new_token > token

    other = await JetStreamLease.open(bus, name="main", holder="b", ttl_s=TTL_S)
    contending = asyncio.ensure_future(other.acquire())
    await asyncio.sleep(1)  # b must wait out a's TTL: it has not taken it within a second
    assert not contending.done()
    contending.cancel()
    await asyncio.wait([contending])
    assert await again.current_holder() == "a"
