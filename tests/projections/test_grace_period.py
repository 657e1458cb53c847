"""A generated MeshService outlives its last Dataplane by the grace period, deterministically:
the fold takes time from events only, and the live projector appends `ClockTicked` when an
expiry falls due on a quiet log."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from events import (
    AnyEvent,
    DataplaneDeregistered,
    DataplaneRegistered,
    GracePeriodConfigured,
    JetStreamEventLog,
    Mesh,
    MeshApplied,
    clock_subject,
    decode_event,
    grace_period_subject,
    resource_subject,
)
from projections import Projector, decode_row, open_store, rebuild
from projections.ticker import Ticker
from projections.views import MeshServiceRow
from tests.projections._histories import (
    History,
    dataplane,
    endpoints_row,
    fold,
    fold_all,
    inbound,
    meshservice,
    meshservice_row,
    ms_port,
    restart,
    vip,
    vip_rows,
)

HOUR = 3_600_000


def _orphaned(h: History) -> tuple[History, int]:
    """web's only Dataplane registered then gone; returns the expiry time."""
    h.mesh("default").register(dataplane("default", "web-1", "10.0.0.1", inbound(80, "web")))
    h.deregister("default", "web-1")
    return h, h.events[-1].at + HOUR


def test_the_meshservice_stays_for_the_grace_period_and_says_so() -> None:
    h, expiry = _orphaned(History())
    h.wait(HOUR - 10_000).mesh("other")  # an event just before the expiry
    state = fold_all(h.events)
    row = meshservice_row(state, "default", "web")
    assert row is not None
    assert row.expires_at == expiry
    assert (row.status.state, row.status.dataplane_proxies.total) == ("Unavailable", 0)
    assert [a.hostname for a in row.status.addresses] == ["web.svc.mesh.local"]
    [condition] = [c for c in row.status.conditions if c.type == "Expiring"]
    assert (condition.status, condition.reason) == ("True", "NoDataplanes")
    assert "2023-11-14T23:13:23Z" in condition.message  # the expiry, from the log's times
    assert vip(state, "default", "web") is not None


def test_a_tick_at_the_expiry_removes_it_but_keeps_its_vip() -> None:
    h, expiry = _orphaned(History())
    before = vip(fold_all(h.events), "default", "web")
    h.wait(HOUR - 1000).tick()
    assert h.events[-1].at == expiry
    state = fold_all(h.events)
    assert meshservice_row(state, "default", "web") is None
    assert endpoints_row(state, "default", "web") is None
    assert vip_rows(state)["default/MeshService/web"] == before


def test_any_event_past_the_expiry_removes_it_before_it_is_applied() -> None:
    h, _ = _orphaned(History())
    # web-2 comes back after the grace period: a new MeshService, with the old VIP
    first = vip(fold_all(h.events), "default", "web")
    created = meshservice_row(fold_all(h.events), "default", "web")
    h.wait(HOUR).register(dataplane("default", "web-2", "10.0.0.2", inbound(80, "web")))
    state = fold_all(h.events)
    row = meshservice_row(state, "default", "web")
    assert row is not None and created is not None
    assert row.meta.creation_time == h.events[-1].at != created.meta.creation_time
    assert (row.expires_at, vip(state, "default", "web")) == (None, first)


def test_one_millisecond_before_the_expiry_it_stays() -> None:
    h, _ = _orphaned(History())
    h.wait(HOUR - 1001).tick()
    assert meshservice_row(fold_all(h.events), "default", "web") is not None


def test_a_dataplane_back_within_the_grace_period_keeps_the_meshservice() -> None:
    h, _ = _orphaned(History())
    created = meshservice_row(fold_all(h.events), "default", "web")
    h.wait(HOUR // 2).register(dataplane("default", "web-1", "10.0.0.1", inbound(80, "web")))
    h.wait(HOUR).tick()
    row = meshservice_row(fold_all(h.events), "default", "web")
    assert row is not None and created is not None
    assert row.expires_at is None
    assert row.meta.creation_time == created.meta.creation_time
    assert row.status.state == "Available"
    assert all(c.type != "Expiring" for c in row.status.conditions)


def test_the_grace_period_comes_from_the_log() -> None:
    h = History().grace(5000)
    h.mesh("default").register(dataplane("default", "web-1", "10.0.0.1", inbound(80, "web")))
    h.deregister("default", "web-1")
    row = meshservice_row(fold_all(h.events), "default", "web")
    assert row is not None and row.expires_at == h.events[-1].at + 5000
    h.wait(4000).tick()
    assert meshservice_row(fold_all(h.events), "default", "web") is None


def test_a_zero_grace_period_removes_it_with_its_last_dataplane() -> None:
    h = History().grace(0)
    h.mesh("default").register(dataplane("default", "web-1", "10.0.0.1", inbound(80, "web")))
    h.deregister("default", "web-1")
    assert meshservice_row(fold_all(h.events), "default", "web") is None


def test_a_user_meshservice_takes_over_a_waiting_one_and_never_expires() -> None:
    h, _ = _orphaned(History())
    h.apply(meshservice("default", "web", ms_port(80)))
    h.wait(2 * HOUR).tick()
    row = meshservice_row(fold_all(h.events), "default", "web")
    assert row is not None and (row.origin, row.expires_at) == ("user", None)


def test_expiry_is_the_same_across_batches_and_restarts() -> None:
    h, _ = _orphaned(History())
    h.register(dataplane("default", "api-1", "10.0.0.2", inbound(80, "api")))
    h.deregister("default", "api-1").wait(HOUR - 3000).tick()  # web goes, api still waits
    h.wait(5000).tick()  # api goes too
    whole = fold_all(h.events)
    halves = fold([h.events[:4]])
    halves = fold([h.events[4:]], state=restart(halves), first_seq=5)
    assert list(halves.persisted()) == list(whole.persisted())
    assert meshservice_row(whole, "default", "api") is None


# --- the live projector keeps the log's clock ------------------------------------------------


T = TypeVar("T")


async def _poll(check: Callable[[], Awaitable[T | None]], *, within_s: float = 15.0,
                what: str) -> T:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {within_s}s waiting for {what}")


async def test_two_live_projectors_append_one_tick_and_the_meshservice_goes(
        event_log: JetStreamEventLog, tmp_path: Path) -> None:
    now = time.time_ns() // 1_000_000
    dp = dataplane("default", "web-1", "10.0.0.1", inbound(80, "web"))
    appends: list[tuple[str, AnyEvent]] = [
        (resource_subject("Mesh", None, "default"),
         MeshApplied(at=now, mesh=Mesh(name="default"))),
        (grace_period_subject("MeshService"), GracePeriodConfigured(at=now, grace_period_ms=300)),
        (resource_subject("Dataplane", "default", "web-1"),
         DataplaneRegistered(at=now, dataplane=dp)),
    ]
    for subject, event in appends:
        await event_log.append(subject, event, expected_last_subject_seq=0, msg_id=subject)
    stores = [await open_store(f"sqlite:///{tmp_path / f'p{i}.db'}") for i in range(2)]
    projectors = [Projector(event_log, store, None, zone="default", name=f"p{i}")
                  for i, store in enumerate(stores)]
    tasks = [asyncio.create_task(p.run()) for p in projectors]
    try:
        gone_at = time.time_ns() // 1_000_000
        await event_log.append(
            resource_subject("Dataplane", "default", "web-1"),
            DataplaneDeregistered(at=gone_at, mesh="default", name="web-1"),
            expected_last_subject_seq=3, msg_id="dereg")

        async def waiting() -> MeshServiceRow | None:
            body = await stores[0].get("meshservice", "default/web")
            row = decode_row("meshservice", body) if body else None
            return row if isinstance(row, MeshServiceRow) and row.expires_at else None

        expiry = (await _poll(waiting, what="web waiting out its grace period")).expires_at
        assert expiry == gone_at + 300

        async def gone() -> bool:
            return all([await s.get("meshservice", "default/web") is None for s in stores])

        await _poll(gone, what="both projectors to fold the tick")
        tick = await event_log.last(clock_subject(expiry))
        assert tick is not None
        assert tick.seq == 5 == await event_log.last_seq()  # one tick, whoever appended it
        assert decode_event(tick.data, seq=tick.seq, subject=tick.subject).at == expiry
        assert [await s.checkpoint(f"p{i}") for i, s in enumerate(stores)] == [5, 5]
        replayed = await open_store(f"sqlite:///{tmp_path / 'replay.db'}")
        try:  # replay folds the tick from the log: the same rows as live
            assert await rebuild(event_log, replayed, zone="default") == 5
            assert await replayed.rows() == await stores[0].rows()
        finally:
            await replayed.close()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for store in stores:
            await store.close()


async def test_the_ticker_stops_when_cancelled_as_its_schedule_changes(
        event_log: JetStreamEventLog) -> None:
    """A cancel that lands while a new schedule wakes the ticker ends it (a 3.11 wait_for
    returned the wake-up instead, and the projector's stop then waited forever)."""
    far = time.time_ns() // 1_000_000 + HOUR
    for steps in range(6):  # wherever in the wake-up the cancel lands
        ticker = Ticker(event_log, zone="default", position=lambda: 0)
        ticker.schedule(far)
        task = asyncio.create_task(ticker.run())
        for _ in range(3):
            await asyncio.sleep(0)  # waiting for `far` now
        ticker.schedule(far + 1)
        for _ in range(steps):
            await asyncio.sleep(0)
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=2)
        if not done:
            task.cancel()
        assert done and task.cancelled(), f"cancel after {steps} steps was swallowed"
