"""`meshlog bench rebuild`: how fast the log is folded into read models, against the raw rate
at which nats-py reads the same stream with an ordered consumer, in one run."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from events import JetStreamEventLog
from events.subjects import EVENTS_STREAM, events_wildcard
from projections import open_store, rebuild
from projections.rebuild import REBUILD_BATCH, Progress
from services.bench._env import BenchNats, bench_nats, machine, report, seed_log
from services.bench.history import logged, synthetic_history

__all__ = ["bench_rebuild"]


async def bench_rebuild(events: int, database: str, *, nats_url: str | None = None,
                        nats_creds: Path | None = None,
                        postgres_admin_url: str = "postgresql://postgres@127.0.0.1:5432/test",
                        max_batch: int = REBUILD_BATCH) -> dict[str, Any]:
    async with bench_nats(nats_url, nats_creds) as nats:
        print(f"seeding {events:,} events ...", flush=True)
        pairs = logged(synthetic_history(events))
        seed_started = time.perf_counter()
        await seed_log(nats.url, pairs, nats=nats)
        seed_s = time.perf_counter() - seed_started
        payload = sum(len(d) for _, d, _ in pairs) / len(pairs)
        del pairs

        raw_rate = await _raw_ordered_read(nats, events)
        async with _fresh_store(database, postgres_admin_url) as store_url:
            nc = await nats.connect("meshlog-bench")
            try:
                log = await JetStreamEventLog.open(nc)
                store = await open_store(store_url)
                try:
                    measured = _reset_peak_rss()
                    started, cpu_started = time.perf_counter(), time.process_time()
                    seen: list[Progress] = []
                    await rebuild(log, store, zone="default", max_batch=max_batch,
                                  on_progress=seen.append, interval_s=1.0)
                    rebuild_s = time.perf_counter() - started
                    cpu_s = time.process_time() - cpu_started
                    peak_mb = _peak_rss_mb() if measured else None
                    stored = await store.rows()
                    rows = len(stored)
                    digest = hashlib.sha256(b"".join(
                        b"%s\0%s\0%s\n" % (c.encode(), k.encode(), body)
                        for c, k, body in sorted(stored))).hexdigest()[:16]
                finally:
                    await store.close()
            finally:
                await nc.close()
    figures = {
        "events": events,
        "database": database,
        "avg_event_bytes": round(payload, 1),
        "seed_events_per_s": round(events / seed_s),
        "raw_ordered_read_events_per_s": round(raw_rate),
        "rebuild_events_per_s": round(events / rebuild_s),
        "rebuild_s": round(rebuild_s, 2),
        "rebuild_to_raw_ratio": round(events / rebuild_s / raw_rate, 3),
        # the process's CPU (fold, reader, store client): moved less than the wall time by
        # other work on a shared machine
        "rebuild_cpu_s": round(cpu_s, 2),
        "max_batch": max_batch,
        # readiness changes a later event of their batch replaced, folded as their time only
        "folded_as_time_events": seen[-1].folded_as_time if seen else 0,
        "rebuild_peak_rss_mb": peak_mb,
        "read_model_rows": rows,
        "read_model_sha256": digest,
        **machine(),
    }
    report("meshlog bench rebuild", figures)
    return figures


async def _raw_ordered_read(nats: BenchNats, events: int) -> float:
    """Messages/s of a plain nats-py ordered push consumer over the whole stream."""
    nc = await nats.connect("meshlog-bench-raw")
    done = asyncio.Event()
    count = 0

    async def on_msg(_msg: object) -> None:
        nonlocal count
        count += 1
        if count >= events:
            done.set()

    try:
        started = time.perf_counter()
        sub = await nc.jetstream().subscribe(events_wildcard(), stream=EVENTS_STREAM,
                                             ordered_consumer=True, idle_heartbeat=1.0,
                                             cb=on_msg)
        await asyncio.wait_for(done.wait(), timeout=600)
        elapsed = time.perf_counter() - started
        await sub.unsubscribe()
    finally:
        await nc.close()
    return events / elapsed


def _reset_peak_rss() -> bool:
    """Start this process's peak RSS (VmHWM) afresh, so that it measures the rebuild, not the
    seeding before it (Linux: `/proc/self/clear_refs`); False where it cannot be."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _peak_rss_mb() -> int | None:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024)
    return None


@contextlib.asynccontextmanager
async def _fresh_store(database: str, admin_url: str) -> AsyncIterator[str]:
    if database == "sqlite":
        with tempfile.TemporaryDirectory(prefix="meshlog-bench-") as tmp:
            yield f"sqlite:///{Path(tmp) / 'rebuild.db'}"
        return
    if database != "postgres":
        yield database
        return
    import uuid

    import asyncpg

    name = f"meshlog_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(admin_url, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
