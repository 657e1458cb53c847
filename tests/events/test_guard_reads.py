"""Reads across subjects (`JetStreamEventLog.latest`, what the API's delete guards decide on)
against a real nats-server: each deletes its consumer when it is done, whether it read,
failed or was cancelled, instead of leaving it to the server's inactivity threshold (120 s;
nats-server 2.15 refuses a stream's 1,001st consumer)."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from events import (
    JetStreamEventLog,
    JetStreamUnavailable,
    Mesh,
    MeshApplied,
    PendingAppend,
    connect_nats,
    resource_subject,
)
from events.subjects import EVENTS_STREAM, resources_filter
from services.runtime.embedded_nats import run_nats_server

MESHES = resources_filter("Mesh", None)


async def _meshes(log: JetStreamEventLog, count: int) -> None:
    await log.append_many([PendingAppend(resource_subject("Mesh", None, f"m{i}"),
                                         MeshApplied(at=i, mesh=Mesh(name=f"m{i}")), 0, f"m{i}")
                           for i in range(count)])


async def _consumers(js: JetStreamContext) -> int:
    return (await js.stream_info(EVENTS_STREAM)).state.consumer_count


async def _until_consumers(js: JetStreamContext, count: int) -> None:
    """Until the stream has `count` consumers: a read publishes its consumer's delete and does
    not wait for it, so the server may still be deleting when the read returns."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10  # far below the inactivity threshold, 120 s
    while (have := await _consumers(js)) != count:
        assert loop.time() < deadline, f"the stream still has {have} consumers, not {count}"
        await asyncio.sleep(0.05)


async def test_reads_across_subjects_leave_no_consumer_behind(
        nc: NATS, event_log: JetStreamEventLog) -> None:
    await _meshes(event_log, 3)
    js = nc.jetstream()
    before = await _consumers(js)
    for _ in range(20):
        assert [r.subject for r in await event_log.latest(MESHES)] == [
            resource_subject("Mesh", None, f"m{i}") for i in range(3)]
    await _until_consumers(js, before)


async def test_a_cancelled_read_deletes_its_consumer(
        nc: NATS, event_log: JetStreamEventLog, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cancelled once its consumer is made (held where it would ask for its pending count):
    the consumer is deleted all the same, and the read ends at once."""
    await _meshes(event_log, 3)
    made = asyncio.Event()

    async def held(self: JetStreamContext, *args: object, **kwargs: object) -> None:
        made.set()
        await asyncio.Event().wait()  # until cancelled

    monkeypatch.setattr(JetStreamContext, "consumer_info", held)
    js = nc.jetstream()
    reading = asyncio.ensure_future(event_log.latest(MESHES))
    await asyncio.wait_for(made.wait(), 10)
    assert await _consumers(js) == 1
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
    await _until_consumers(js, 0)


async def test_a_read_that_fails_deletes_its_consumer(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A user that may make consumers but not ask for their info: the read's consumer is
    made, asking for its pending count is refused by the server (the request then times
    out), the read fails as JetStream unavailable, and its consumer is deleted all the same."""
    config = tmp_path / "auth.conf"
    config.write_text(json.dumps({"authorization": {"users": [{
        "user": "reader", "password": "secret", "permissions": {
            "publish": {"allow": [">"], "deny": ["$JS.API.CONSUMER.INFO.>"]},
            "subscribe": {"allow": [">"]}}}]}}))
    async with run_nats_server(tmp_path / "nats", config=config) as url:
        nc = await connect_nats(url.replace("nats://", "nats://reader:secret@"), name="reader")
        try:
            await _meshes(await JetStreamEventLog.open(nc), 3)
            # the refused request's timeout: short, but one a loaded machine's consumer
            # creation (the request before it, answered) stays well within
            js = nc.jetstream(timeout=2)
            log = JetStreamEventLog(nc, js, EVENTS_STREAM, replicas=1)
            with caplog.at_level(logging.ERROR, logger="meshlog.nats"), \
                    pytest.raises(JetStreamUnavailable, match="cannot read"):
                await log.latest(MESHES)
            # refused once made (nats-py lowercases the subject it reports)
            assert any("$js.api.consumer.info." in record.getMessage().lower()
                       for record in caplog.records), caplog.records
            await _until_consumers(nc.jetstream(), 0)  # polled with the default timeout
        finally:
            await nc.close()
