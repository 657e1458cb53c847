"""What benchmarks share: a NATS to run against, the machine's description, the report."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS
from nats.js.api import PubAck, StorageType, StreamConfig

from events import JetStreamEventLog, connect_nats
from services.runtime.embedded_nats import run_nats_server

__all__ = ["bench_nats", "machine", "report", "seed_log"]


@contextlib.asynccontextmanager
async def bench_nats(nats_url: str | None) -> AsyncIterator[str]:
    """The given NATS, or an embedded nats-server in a temp dir (removed afterwards)."""
    if nats_url:
        yield nats_url
        return
    with tempfile.TemporaryDirectory(prefix="meshlog-bench-") as tmp:
        async with run_nats_server(Path(tmp) / "nats") as url:
            yield url


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform()}


def report(title: str, figures: dict[str, Any]) -> None:
    """Human lines, then one JSON object on the last line."""
    print(f"== {title}")
    for key, value in figures.items():
        shown = f"{value:,.2f}" if isinstance(value, float) else str(value)
        print(f"  {key:<36} {shown}")
    print(json.dumps(figures, sort_keys=True))


async def raw_stream(nc: NATS, name: str, subjects: list[str]) -> None:
    await nc.jetstream().add_stream(StreamConfig(
        name=name, subjects=subjects, storage=StorageType.FILE, duplicate_window=120))


async def seed_log(url: str, pairs: list[tuple[str, bytes]]) -> JetStreamEventLog:
    """Write pre-encoded events fast (pipelined, no OCC: this is set-up, not measured)."""
    nc = await connect_nats(url, name="meshlog-bench-seed")
    log = await JetStreamEventLog.open(nc)
    js = nc.jetstream()
    window: list[asyncio.Future[PubAck]] = []
    for subject, data in pairs:
        window.append(await js.publish_async(subject, data, headers={"Meshlog-Schema": "1"}))
        if len(window) >= 2000:
            await _drain(window)
    await _drain(window)
    await nc.close()
    return log


async def _drain(window: list[asyncio.Future[PubAck]]) -> None:
    await asyncio.gather(*window)
    window.clear()
