"""SIGKILL a projector process at many points of a long run: after a restart its read models
equal a clean rebuild byte for byte, and the rows published for gateways equal the store's
(nothing lost; re-publishing only rewrote the same values). On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from events import JetStreamEventLog, connect_nats
from events.bus.projection_bus import CHECKPOINT_KEY, JetStreamProjectionBus
from projections import PUBLISHED, export_store, open_store, rebuild
from services.bench._env import seed_log
from services.bench.history import logged, synthetic_history
from services.runtime.spawn import popen
from tests.harness import VENV_BIN
from tests.stores import BACKENDS, store_url

pytestmark = pytest.mark.integration
EVENTS = 20_000
KILLS = 12


def _start(nats_url: str, database: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return popen(
            [str(VENV_BIN / "meshlog"), "projector", "--nats-url", nats_url,
             "--database", database, "--lease-ttl", "1s",
             # batches of 1,000 (not 10,000): many commits to kill it after, in 20,000 events
             "--max-batch", "1000"], stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)


async def _published_checkpoint(nats_url: str) -> int:
    nc = await connect_nats(nats_url, name="test")
    try:
        bus = await JetStreamProjectionBus.open(nc)
        return int((await bus.current()).get(CHECKPOINT_KEY, b"0"))
    finally:
        await nc.close()


async def _checkpoint(database: str) -> int:
    store = await open_store(database)
    try:
        return await store.checkpoint()
    finally:
        await store.close()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_killed_projector_converges_to_a_clean_rebuild(
        backend: str, nats_url: str, tmp_path: Path) -> None:
    await seed_log(nats_url, logged(synthetic_history(EVENTS)))
    rng = random.Random(20261120)
    async with store_url(backend, tmp_path) as live, store_url(backend, tmp_path) as clean:
        checkpoints = [0]
        for _ in range(KILLS):
            proc = _start(nats_url, live, tmp_path / "projector.log")
            try:
                # let it commit something new, then kill it at a random moment after that
                deadline = time.monotonic() + 120
                while await _checkpoint(live) <= checkpoints[-1]:
                    assert proc.poll() is None, (tmp_path / "projector.log").read_text()[-2000:]
                    assert time.monotonic() < deadline, "the projector made no progress"
                    await asyncio.sleep(0.02)
                await asyncio.sleep(rng.uniform(0, 0.3))
            finally:  # also when the test fails: no projector left folding into later tests
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            checkpoints.append(await _checkpoint(live))
            if checkpoints[-1] >= EVENTS:
                break
        assert len(checkpoints) > 5, f"too few kills landed mid-run: {checkpoints}"

        proc = _start(nats_url, live, tmp_path / "projector.log")
        try:
            deadline = time.monotonic() + 300
            # the store's checkpoint and the published one: a kill between a commit and its
            # publish (the last one, say) is mended by the next projector's start, which
            # republishes what the store holds; stopped before it, the bucket stays behind
            while (await _checkpoint(live) < EVENTS
                   or await _published_checkpoint(nats_url) < EVENTS):
                assert proc.poll() is None, (tmp_path / "projector.log").read_text()[-2000:]
                assert time.monotonic() < deadline, "the projector did not catch up"
                await asyncio.sleep(0.2)
        finally:
            with contextlib.suppress(ProcessLookupError):  # a projector that died says why
                os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)

        nc = await connect_nats(nats_url, name="test")
        try:
            log = await JetStreamEventLog.open(nc)
            clean_store = await open_store(clean)
            live_store = await open_store(live)
            try:
                await rebuild(log, clean_store, zone="default")
                assert await export_store(live_store) == await export_store(clean_store)

                published = await (await JetStreamProjectionBus.open(nc)).current()
                expected = {f"{c}/{k}": body for c, k, body in await live_store.rows()
                            if c in PUBLISHED}
                assert published.pop(CHECKPOINT_KEY) == str(EVENTS).encode()
                assert published == expected
            finally:
                await clean_store.close()
                await live_store.close()
        finally:
            await nc.close()
