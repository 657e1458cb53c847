"""What benchmarks share: a NATS to run against, the machine's description, the report."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from msgspec import Struct
from nats.aio.client import Client as NATS
from nats.js.api import PubAck, StorageType, StreamConfig

from events import JetStreamEventLog, connect_nats
from events.codec import SCHEMA_HEADER, SCHEMA_VERSION
from events.readiness import READINESS_HEADER
from services.bench.history import Logged
from services.errors import ConfigError
from services.runtime.embedded_nats import run_nats_server

__all__ = ["BenchNats", "bench_nats", "machine", "report", "seed_log"]


class BenchNats(Struct, frozen=True):
    """The NATS a benchmark runs against, and the user it connects as (`--nats-creds`; None:
    a NATS without users). Every connection the benchmark makes, and every `meshlog` process
    it starts, is that user: the admin user on a NATS with meshlog's users (a benchmark
    creates streams and runs every role's process)."""

    url: str
    credentials: Path | None = None

    async def connect(self, name: str) -> NATS:
        """A connection as a command makes one (one attempt, no reconnection): credentials
        NATS refuses end the bench with that error instead of a wait for ever."""
        return await connect_nats(self.url, name=name, credentials=self.credentials,
                                  reconnect=False)

    def flags(self) -> tuple[str, ...]:
        """The flags of a `meshlog` process that connects there as the same user."""
        creds = () if self.credentials is None else ("--nats-creds", str(self.credentials))
        return ("--nats-url", self.url, *creds)


@contextlib.asynccontextmanager
async def bench_nats(nats_url: str | None, credentials: Path | None = None
                     ) -> AsyncIterator[BenchNats]:
    """The given NATS, as the user of `credentials`, or an embedded nats-server without
    users in a temp dir (removed afterwards; `credentials` is then refused, naming the
    flag)."""
    if nats_url:
        yield BenchNats(nats_url, credentials)
        return
    if credentials is not None:
        raise ConfigError(f"--nats-creds {credentials}: only with --nats-url (the bench's own "
                          f"nats-server has no users)")
    with tempfile.TemporaryDirectory(prefix="meshlog-bench-") as tmp:
        async with run_nats_server(Path(tmp) / "nats") as url:
            yield BenchNats(url)


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


async def seed_log(url: str, pairs: Sequence[Logged], *,
                   nats: BenchNats | None = None) -> JetStreamEventLog:
    """Write pre-encoded events (`history.logged`) fast (pipelined, no OCC: this is set-up,
    not measured); through `nats` (a bench's) if given, else to `url` without credentials."""
    nc = await (nats.connect("meshlog-bench-seed") if nats is not None
                else connect_nats(url, name="meshlog-bench-seed"))
    log = await JetStreamEventLog.open(nc)
    js = nc.jetstream()
    window: list[asyncio.Future[PubAck]] = []
    plain = {SCHEMA_HEADER: str(SCHEMA_VERSION)}
    for subject, data, readiness_of in pairs:
        headers = plain if not readiness_of else {**plain, READINESS_HEADER: str(readiness_of)}
        window.append(await js.publish_async(subject, data, headers=headers))
        if len(window) >= 2000:
            await _drain(window)
    await _drain(window)
    await nc.close()
    return log


async def _drain(window: list[asyncio.Future[PubAck]]) -> None:
    await asyncio.gather(*window)
    window.clear()
