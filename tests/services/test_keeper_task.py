"""`meshlog projector --mode global|zone`: a source keeper whose task ends is said, and the
sync waiting for it is not left waiting for ever (services/runtime/processes.py)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from services.runtime.processes import _keeper_ended


async def _ended_with(coro_exc: BaseException | None) -> asyncio.Task[None]:
    async def keeper() -> None:
        if coro_exc is not None:
            raise coro_exc

    task = asyncio.create_task(keeper())
    await asyncio.wait([task])
    return task


async def test_a_keeper_that_fails_is_said_and_the_sync_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    ready = asyncio.Event()
    task = await _ended_with(ConnectionError("subscribe on a closed connection"))
    with caplog.at_level(logging.ERROR, logger="meshlog"):
        _keeper_ended(ready, task)
    assert ready.is_set()
    assert any("source keeper stopped (ConnectionError: subscribe on a closed connection)"
               in r.getMessage() for r in caplog.records), caplog.records


async def test_a_keeper_cancelled_at_the_stop_says_nothing(
        caplog: pytest.LogCaptureFixture) -> None:
    ready = asyncio.Event()
    task = asyncio.create_task(asyncio.sleep(3600))
    task.cancel()
    await asyncio.wait([task])
    with caplog.at_level(logging.ERROR, logger="meshlog"):
        _keeper_ended(ready, task)
    assert not ready.is_set() and not caplog.records
