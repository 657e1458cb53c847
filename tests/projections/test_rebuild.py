"""`rebuild` cancelled (Ctrl-C on `meshlog replay`): it returns only once its projector has
stopped, so the caller may close the store at once; what was committed stays, whole."""

from __future__ import annotations

import asyncio
from pathlib import Path

from events import JetStreamEventLog, connect_nats
from projections import rebuild
from projections.rebuild import Progress
from services.bench._env import seed_log
from services.bench.history import logged, synthetic_history
from tests.stores import open_test_store

EVENTS = 20_000


async def test_a_cancelled_rebuild_returns_once_its_projector_has_stopped(
        nats_url: str, tmp_path: Path) -> None:
    await seed_log(nats_url, logged(synthetic_history(EVENTS)))
    nc = await connect_nats(nats_url, name="test")
    try:
        log = await JetStreamEventLog.open(nc)
        async with open_test_store("sqlite", tmp_path) as store:
            committed = asyncio.Event()

            def on_progress(progress: Progress) -> None:
                if progress.position > 0:
                    committed.set()

            rebuilding = asyncio.ensure_future(rebuild(
                log, store, zone="default", max_batch=1000, on_progress=on_progress,
                interval_s=0.01))
            await asyncio.wait_for(committed.wait(), 60)
            rebuilding.cancel()
            await asyncio.wait([rebuilding])
            assert rebuilding.cancelled()
            # its projector (the task "rebuild") ended before it returned, not after
            assert [t for t in asyncio.all_tasks() if t.get_name() == "rebuild"] == []
            checkpoint = await store.checkpoint()
            assert 0 < checkpoint < EVENTS
    finally:
        await nc.close()
