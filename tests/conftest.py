"""Shared fixtures: a real nats-server per test, on an ephemeral port with a temp store dir;
and a report of where a test that runs far too long is waiting."""

from __future__ import annotations

import asyncio
import faulthandler
import sys
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


HANG_REPORT_S = 300.0
"""A test still running after this long gets every thread's stack printed (`faulthandler`,
synchronous tests too) and, if its event loop is idle in an await, every asyncio task's
stack: its failure shows them. The suite's longest test takes a small fraction of it, and
pytest-timeout (pyproject.toml, `timeout`) ends the test a while later. A loop blocked in a
call is shown by the threads' stacks and by pytest-timeout's own traceback."""


def _report_tasks(test: str) -> None:
    out = sys.stderr
    print(f"\n=== {test} still running after {HANG_REPORT_S:.0f} s: where its tasks wait ===",
          file=out)
    for task in asyncio.all_tasks():
        print(f"--- {task!r}", file=out)
        task.print_stack(limit=30, file=out)
    out.flush()


@pytest.fixture(autouse=True)
async def _hang_report(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    faulthandler.dump_traceback_later(HANG_REPORT_S, exit=False)
    handle = asyncio.get_running_loop().call_later(HANG_REPORT_S, _report_tasks,
                                                   request.node.nodeid)
    try:
        yield
    finally:
        handle.cancel()
        faulthandler.cancel_dump_traceback_later()
