"""Two `meshlog projector` processes, one active, one standby: SIGKILL the active one at a
random point while events are appended; the standby takes over within the lease TTL and
resumes from the checkpoint. Each run ends with read models equal to a clean rebuild, and
the checkpoint published for gateways never goes backwards."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from events import JetStreamEventLog, connect_nats
from events.bus.projection_bus import CHECKPOINT_KEY, LEASE_PREFIX, JetStreamProjectionBus
from projections import export_store, open_store, rebuild
from services.bench._env import seed_log
from services.bench.history import logged, synthetic_history
from services.runtime.spawn import popen
from tests.harness import VENV_BIN

pytestmark = pytest.mark.integration
EVENTS = 20_000
RUNS = 10


def _start(nats_url: str, database: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return popen(
            [str(VENV_BIN / "meshlog"), "projector", "--nats-url", nats_url,
             "--database", database, "--lease-ttl", "1s",
             # batches of 1,000: a kill lands between many commits, not after one big one
             "--max-batch", "1000"], stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True)


def _tail(log: Path) -> str:
    return log.read_text()[-3000:]


async def _wait(condition: Callable[[], Awaitable[bool]], what: str, within_s: float,
                log: Path) -> None:
    deadline = time.monotonic() + within_s
    while not await condition():
        assert time.monotonic() < deadline, f"{what}\n{_tail(log)}"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("run", range(RUNS))
async def test_killed_leader_is_replaced_and_nothing_is_lost_or_folded_twice(
        run: int, nats_url: str, tmp_path: Path) -> None:
    rng = random.Random(1300 + run)
    history = logged(synthetic_history(EVENTS))
    split = rng.randrange(EVENTS // 4, EVENTS // 2)
    await seed_log(nats_url, history[:split])
    database = f"sqlite:///{tmp_path / 'live.db'}"
    log = tmp_path / "projectors.log"
    nc = await connect_nats(nats_url, name="test")
    bus = await JetStreamProjectionBus.open(nc)
    store = await open_store(database)
    procs = {p.pid: p for p in (_start(nats_url, database, log) for _ in range(2))}
    published: list[int] = []

    async def watch_checkpoints() -> None:
        async for batch in bus.watch():
            published.extend(int(v) for k, v in batch if k == CHECKPOINT_KEY and v)

    watching = asyncio.ensure_future(watch_checkpoints())
    try:
        async def leader() -> int | None:
            entry = (await bus.current_with_leases()).get(f"{LEASE_PREFIX}main")
            return int(json.loads(entry)["holder"].rsplit(":", 1)[1]) if entry else None

        async def folding() -> bool:
            return await leader() is not None and await store.checkpoint() > 0

        await _wait(folding, "no projector took the lease and folded", 30, log)
        # the rest of the history arrives while the leader is killed at a random point
        appending = asyncio.ensure_future(seed_log(nats_url, history[split:]))
        await asyncio.sleep(rng.uniform(0, 0.6))
        victim = await leader()
        assert victim in procs
        os.killpg(victim, signal.SIGKILL)
        procs.pop(victim).wait()
        killed_at = await store.checkpoint()
        assert killed_at < EVENTS, "the kill landed after the fold was done"
        await appending

        async def taken_over() -> bool:
            return await leader() not in (None, victim)

        await _wait(taken_over, "the standby did not take over", 60, log)
        last = EVENTS  # the synthetic history needs no clock ticks: nothing else appends

        async def caught_up() -> bool:
            return await store.checkpoint() >= last

        await _wait(caught_up, "the new leader did not catch up", 60, log)
        assert killed_at <= await store.checkpoint()

        async def seen_by_gateways() -> bool:
            return bool(published) and published[-1] >= last

        await _wait(seen_by_gateways, "the last checkpoint was not published", 60, log)
        assert published == sorted(published), f"the published checkpoint went back: {published}"
    finally:
        for proc in procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        watching.cancel()
        await asyncio.wait([watching])

    clean = await open_store(f"sqlite:///{tmp_path / 'clean.db'}")
    try:
        await rebuild(await JetStreamEventLog.open(nc), clean, zone="default", to_seq=EVENTS)
        assert await export_store(store) == await export_store(clean)
    finally:
        await clean.close()
        await store.close()
        await nc.close()
