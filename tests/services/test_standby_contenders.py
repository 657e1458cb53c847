"""Two `StandbyProjector`s in one process (what `meshlog up --projectors 2` runs), each on its
own NATS connection: one is active; cancel its task (or close its connection) and the other
turns active with a higher fencing token. The leader gauge counts the process's active
contenders."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from events import JetStreamEventLog, Mesh, MeshApplied, connect_nats, resource_subject
from events.bus.projection_bus import JetStreamProjectionBus
from projections import open_store
from projections.metrics import leadership_changed, refresh
from services.runtime.standby import StandbyProjector
from tests.harness import cancel_until_done, eventually

pytestmark = pytest.mark.integration


async def _active(contenders: list[StandbyProjector], within_s: float) -> StandbyProjector:
    deadline = time.monotonic() + within_s
    while True:
        roles = [c.leadership.role for c in contenders]
        if roles.count("active") == 1:
            return contenders[roles.index("active")]
        assert time.monotonic() < deadline, f"no single active contender: {roles}"
        await asyncio.sleep(0.05)


async def test_the_standby_task_takes_over_when_the_active_task_dies(
        nats_url: str, tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'live.db'}"
    ncs = [await connect_nats(nats_url, name=f"projector-{i}") for i in (1, 2)]
    stores = [await open_store(database) for _ in ncs]
    contenders = [StandbyProjector(await JetStreamEventLog.open(nc), store,
                                   await JetStreamProjectionBus.open(nc), zone="default",
                                   secret_key=None, reconnected=None, lease_ttl_s=0.5,
                                   holder=f"test/{i}")
                  for i, (nc, store) in enumerate(zip(ncs, stores, strict=True), 1)]
    tasks = [asyncio.create_task(c.run()) for c in contenders]
    try:
        first = await _active(contenders, within_s=30)
        token = first.leadership.token
        standby = next(c for c in contenders if c is not first)
        status, body = await standby.readiness()
        assert (status, body["role"], body["leader"]) == (503, "standby", first.lease.holder)
        await cancel_until_done(tasks[contenders.index(first)])
        second = await _active([standby], within_s=30)
        assert second.leadership.token > token
        assert (await second.readiness())[0] == 200
    finally:
        for task in tasks:
            await cancel_until_done(task)
        for store in stores:
            await store.close()
        for nc in ncs:
            await nc.close()


def test_the_leader_gauge_counts_a_processs_active_contenders() -> None:
    def leader() -> float | None:
        return REGISTRY.get_sample_value("meshlog_projector_leader", {"projector": "gauge-test"})

    leadership_changed("gauge-test", 0, "a")
    leadership_changed("gauge-test", 5, "b")
    assert leader() == 1
    leadership_changed("gauge-test", 0, "a")  # a standby's update leaves the leader counted
    assert leader() == 1
    assert REGISTRY.get_sample_value("meshlog_projector_fencing_token",
                                     {"projector": "gauge-test"}) == 5
    leadership_changed("gauge-test", 0, "b")
    assert leader() == 0


async def test_a_projector_that_stood_down_reports_no_lag(nats_url: str, tmp_path: Path) -> None:
    """A term's projector, once its term is over, is no longer read for the lag: frozen at
    its last position, its lag grew for ever beside the new leader's (an alert on the lag
    then fired for a healthy standby)."""
    def lag() -> float | None:
        return REGISTRY.get_sample_value("meshlog_projector_lag_events",
                                         {"projector": "lag-test"})

    nc = await connect_nats(nats_url, name="projector-lag")
    store = await open_store(f"sqlite:///{tmp_path / 'live.db'}")
    event_log = await JetStreamEventLog.open(nc)
    contender = StandbyProjector(event_log, store, await JetStreamProjectionBus.open(nc),
                                 zone="default", secret_key=None, reconnected=None,
                                 lease_ttl_s=0.5, name="lag-test", holder="test/lag")

    async def append(name: str) -> int:
        appended = await event_log.append(
            resource_subject("Mesh", None, name), MeshApplied(at=1_000, mesh=Mesh(name=name)),
            expected_last_subject_seq=0, msg_id=name)
        return appended.seq

    task = asyncio.create_task(contender.run())
    try:
        await _active([contender], within_s=30)
        head = await append("one")
        async def caught_up() -> bool:
            return contender.projector is not None and contender.projector.position == head

        await eventually(caught_up, "the projector folding the event")
        await refresh()
        assert lag() == 0
        await cancel_until_done(task)
        await append("two")  # folded by no one here
        await refresh()
        assert lag() is None  # not 1, and not growing with the log
    finally:
        await cancel_until_done(task)
        await store.close()
        await nc.close()
