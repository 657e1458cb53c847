"""Shared fixtures: a real nats-server per test, on an ephemeral port with a temp store dir."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from events import JetStreamEventLog, connect_nats
from services.runtime.embedded_nats import run_nats_server


@pytest.fixture
async def nats_url(tmp_path: Path) -> AsyncIterator[str]:
    async with run_nats_server(tmp_path / "nats") as url:
        yield url


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NATS]:
    client = await connect_nats(nats_url, name="test")
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def event_log(nc: NATS) -> JetStreamEventLog:
    return await JetStreamEventLog.open(nc)
