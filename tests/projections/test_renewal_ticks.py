"""The live projector's ticks for workload certificate renewals, counted in a real
nats-server log: only the renewal groups that hold a Dataplane are ticked
(`projections._renewal.RenewalIndex`), and a replay of that log gives the live read models."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

from events import (
    DEFAULT_ZONE,
    AnyEvent,
    CaCreated,
    ClockTicked,
    DataplaneRegistered,
    JetStreamEventLog,
    MeshApplied,
    ca_subject,
    decode_event,
    resource_subject,
)
from projections import Projector, decode_row, open_store, rebuild
from projections.identity import RENEWAL_GROUPS, renewal_group
from projections.views import IdentityRow, TrustRow
from tests.harness import eventually
from tests.projections._histories import SECRET_KEY, History, dataplane, inbound

EXPIRATION_MS = 10_000
"""The shortest a Mesh allows: a renewal period of 8 s."""
PERIOD_MS = EXPIRATION_MS * 4 // 5


def _subject(event: AnyEvent) -> str:
    match event:
        case CaCreated():
            return ca_subject(event.mesh, event.backend)
        case MeshApplied():
            return resource_subject("Mesh", None, event.mesh.name)
        case DataplaneRegistered():
            return resource_subject("Dataplane", event.dataplane.mesh, event.dataplane.name)
    raise AssertionError(f"no subject for {event!r}")


def _two_groups() -> list[str]:
    """Two Dataplane names of mesh default in different renewal groups."""
    first = "web-0"
    for i in itertools.count(1):
        if renewal_group("default", f"web-{i}") != renewal_group("default", first):
            return [first, f"web-{i}"]
    raise AssertionError("unreachable")


def _group_times(anchor: int, name: str, until: int) -> list[int]:
    """When `name`'s renewal group moves to its next window, up to `until`: 4/5 of the life
    after the anchor plus the group's share of an eighth of that, then every 4/5."""
    first = anchor + PERIOD_MS + PERIOD_MS * renewal_group("default", name) // (
        8 * RENEWAL_GROUPS)
    return list(range(first, until, PERIOD_MS))


async def test_a_mesh_of_two_dataplanes_is_ticked_only_at_their_groups_times(
        event_log: JetStreamEventLog, tmp_path: Path) -> None:
    names = _two_groups()
    h = History(start=time.time_ns() // 1_000_000, gap=1)
    h.mtls("default", "ca-1", enabled="ca-1", expiration=f"{EXPIRATION_MS}ms")
    for i, name in enumerate(names):
        h.register(dataplane("default", name, f"10.0.0.{i + 1}", inbound(8080, "web")))
    for event in h.events:
        subject = _subject(event)
        await event_log.append(subject, event, expected_last_subject_seq=0, msg_id=subject)
    store = await open_store(f"sqlite:///{tmp_path / 'live.db'}")
    projector = Projector(event_log, store, None, zone=DEFAULT_ZONE, secret_key=SECRET_KEY)
    live = asyncio.create_task(projector.run())
    try:
        async def anchored() -> int | None:
            body = await store.get("trust", "default")
            row = decode_row("trust", body) if body else None
            return row.anchor if isinstance(row, TrustRow) else None

        anchor = await eventually(anchored, "the mesh's trust")
        # the first renewal period: every group's first time is in it, one tick each if
        # they were all ticked; known complete once a tick at or after its end is in the log
        until = anchor + 2 * PERIOD_MS

        async def ticks() -> list[int] | None:
            records = await event_log.latest(f"meshlog.ev.{DEFAULT_ZONE}.clock.>")
            times = []
            for record in records:
                tick = decode_event(record.data, seq=record.seq, subject=record.subject)
                assert isinstance(tick, ClockTicked)
                times.append(tick.at)
            return times if times and max(times) >= until else None

        counted = [at for at in await eventually(ticks, "a renewal period of ticks", within=60)
                   if at < until]
    finally:
        live.cancel()
        await asyncio.gather(live, return_exceptions=True)
    expected = sorted(t for name in names for t in _group_times(anchor, name, until))
    assert len(expected) == len(names)  # one per group that holds one: not one for each of 16
    assert sorted(counted) == expected
    try:
        last = await event_log.last_seq()
        await Projector(event_log, store, None, zone=DEFAULT_ZONE,
                        secret_key=SECRET_KEY).run(until_seq=last)
        for name in names:  # renewed at its group's times
            body = await store.get("identity", f"default/{name}")
            row = decode_row("identity", body) if body else None
            assert isinstance(row, IdentityRow)
            assert row.not_before + 10_000 in _group_times(anchor, name, until + 100 * PERIOD_MS)
        replayed = await open_store(f"sqlite:///{tmp_path / 'replay.db'}")
        try:  # the ticks are in the log: a replay makes the live rows (invariant 4)
            assert await rebuild(event_log, replayed, zone=DEFAULT_ZONE,
                                 secret_key=SECRET_KEY) == last
            assert await replayed.rows() == await store.rows()
        finally:
            await replayed.close()
    finally:
        await store.close()
