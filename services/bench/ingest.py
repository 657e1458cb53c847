"""`meshlog bench ingest`: the project's append path (pipelined, with optimistic concurrency
and Msg-Id) against raw `js.publish_async` of the same payloads, in one run."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS
from nats.js.api import PubAck

from events import DataplaneRegistered, JetStreamEventLog, PendingAppend, encode_event
from events.bus.trace_context import tracer
from services.bench._env import bench_nats, machine, raw_stream, report
from services.bench._traces import end_all, traced
from services.bench.history import synthetic_history

__all__ = ["bench_ingest"]


async def bench_ingest(events: int, *, nats_url: str | None = None,
                       nats_creds: Path | None = None, window: int = 1000) -> dict[str, Any]:
    # A fleet registering: every append creates a resource (expected subject sequence 0).
    appends = []
    for subject, event in synthetic_history(events + 1, services=max(events // 10, 1),
                                            dataplanes=events + 1):
        if isinstance(event, DataplaneRegistered):
            msg_id = hashlib.sha256(encode_event(event)).hexdigest()[:32]
            appends.append(PendingAppend(subject, event, 0, msg_id))
    appends = appends[:events]
    async with bench_nats(nats_url, nats_creds) as nats:
        nc = await nats.connect("meshlog-bench-ingest")
        try:
            await raw_stream(nc, "BENCH_RAW", ["bench.raw.>"])
            raw_rate = await _raw(nc, appends, window)
            log = await JetStreamEventLog.open(nc)
            # With tracing on, each write gets the root span an API request would give it.
            # That span is the request's (a request takes milliseconds); the append path's own
            # tracing is carrying a sampled write's context and its append span. The two are
            # timed apart, and the append path's rate is the append alone.
            started = time.perf_counter()
            writes, spans = traced(appends)
            appending = time.perf_counter()
            results = await log.append_many(writes, window=window)
            own_s = time.perf_counter() - appending
            ending = time.perf_counter()
            end_all(spans)
            root_spans_s = appending - started + time.perf_counter() - ending
        finally:
            await nc.close()
    conflicts = sum(1 for r in results if not hasattr(r, "seq"))
    figures = {
        "events": len(appends),
        "window": window,
        "raw_publish_async_events_per_s": round(raw_rate),
        "append_path_events_per_s": round(len(appends) / own_s),
        "append_to_raw_ratio": round(len(appends) / own_s / raw_rate, 3),
        "conflicts": conflicts,
        "traced": tracer() is not None,
        "root_span_us_per_write": round(root_spans_s / len(appends) * 1e6, 1),
        **machine(),
    }
    report("meshlog bench ingest", figures)
    return figures


async def _raw(nc: NATS, appends: list[PendingAppend], window: int) -> float:
    js = nc.jetstream()
    payloads = [("bench.raw." + a.subject.split(".", 2)[2], encode_event(a.event))
                for a in appends]
    started = time.perf_counter()
    pending: list[asyncio.Future[PubAck]] = []
    for subject, data in payloads:
        pending.append(await js.publish_async(subject, data))
        if len(pending) >= window:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)
    return len(payloads) / (time.perf_counter() - started)
