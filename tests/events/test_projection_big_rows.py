"""Rows bigger than a NATS message on the projection bus, on a real nats-server: the endpoints
of a service with 20,000 Dataplanes reach a watcher whole (stored compressed); a row too big
even so is left out by name while the rest of its batch is published; a compressed value
that does not open is an error naming its key, never a row."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import zlib
from pathlib import Path

import msgspec
import pytest
from nats.aio.client import Client as NATS

from events import (
    AnyEvent,
    DataplaneRegistered,
    EventLogUnavailable,
    JetStreamEventLog,
    Mesh,
    MeshApplied,
    resource_subject,
)
from events.bus import projection_bus
from events.bus.lease import FencedProjectionBus, JetStreamLease
from events.bus.projection_bus import CHECKPOINT_KEY, JetStreamProjectionBus
from projections.worker import Projector
from services.bench._env import seed_log
from services.bench.history import _dataplane, logged
from services.metrics import exposition
from tests.stores import open_test_store

ENDPOINTS = 20_000
KEY = "endpoints/default/big"


async def test_a_service_whose_endpoints_exceed_a_nats_message_reaches_a_watcher_whole(
        nats_url: str, nc: NATS, tmp_path: Path) -> None:
    history: list[tuple[str, AnyEvent]] = [(resource_subject("Mesh", None, "default"),
                                            MeshApplied(at=1, mesh=Mesh(name="default")))]
    history += [(resource_subject("Dataplane", "default", f"big-{i}"), DataplaneRegistered(
        at=2 + i, dataplane=msgspec.structs.replace(
            _dataplane("default", i, "big", 8080, True), name=f"big-{i}")))
        for i in range(ENDPOINTS)]
    await seed_log(nats_url, logged(history))
    log = await JetStreamEventLog.open(nc)
    bus = await JetStreamProjectionBus.open(nc)
    async with open_test_store("sqlite", tmp_path) as store:
        await Projector(log, store, bus, zone="default").run(until_seq=len(history))
        stored = dict((k, body) for c, k, body in await store.rows() if c == "endpoints")

    row = (await bus.current())[KEY]
    assert row == stored["default/big"]  # the store's bytes, as committed
    assert len(row) > nc.max_payload  # which no single NATS message could carry
    endpoints = json.loads(row)["ports"][0]["endpoints"]
    assert len(endpoints) == ENDPOINTS
    # a gateway's watch gets it whole too, in its first batch
    watching = bus.watch_batches()
    first = await asyncio.wait_for(anext(watching), 30)
    await watching.aclose()
    assert dict(first.updates)[KEY] == row
    # and so does a lease holder's fenced publish, of a changed row
    lease = await JetStreamLease.open(bus, name="main", holder="a", ttl_s=5)
    await lease.acquire()
    changed = row.replace(b'"port":8080', b'"port":9090')
    await FencedProjectionBus(bus, lease).publish([(KEY, changed), (CHECKPOINT_KEY, b"9")])
    assert (await bus.current())[KEY] == changed


def _incompressible(size: int) -> bytes:
    noise = random.Random(7).randbytes(size)
    return json.dumps({"noise": base64.b64encode(noise).decode()}).encode()


async def test_a_row_too_big_even_compressed_is_left_out_by_name_and_the_rest_published(
        nc: NATS, caplog: pytest.LogCaptureFixture) -> None:
    bus = await JetStreamProjectionBus.open(nc)
    await bus.publish([(KEY, b'{"v":1}'), (CHECKPOINT_KEY, b"1")])
    huge = _incompressible(nc.max_payload)
    left_out = projection_bus.LEFT_OUT["endpoints"]
    with caplog.at_level(logging.ERROR, logger="meshlog.projection_bus"):
        await bus.publish([(KEY, huge), ("mesh/other", b"{}"), (CHECKPOINT_KEY, b"2")])
    assert (await bus.current()) == {
        KEY: b'{"v":1}',  # its last version stays where gateways read it
        "mesh/other": b"{}",
        CHECKPOINT_KEY: b"2",
    }
    [record] = [r for r in caplog.records if KEY in r.getMessage()]
    assert "max_payload" in record.getMessage()
    assert str(len(huge)) in record.getMessage()
    # and counted where an operator's alert can see it
    exposed = (await exposition()).decode()
    assert f'meshlog_projection_rows_left_out_total{{collection="endpoints"}} {left_out + 1}.0' \
        in exposed, exposed


async def test_a_row_that_fits_a_message_is_stored_as_it_is(nc: NATS) -> None:
    """Only a row too big for a message is compressed: gateways of the release before, which
    read rows as they are, keep reading every other during a rolling upgrade."""
    bus = await JetStreamProjectionBus.open(nc)
    fits = b'{"x":"' + b"a" * (nc.max_payload - 8192) + b'"}'
    await bus.publish([(KEY, fits), (CHECKPOINT_KEY, b"1")])
    entry = await bus.kv.get(KEY)
    assert entry.value == fits


async def test_a_row_bigger_than_a_reader_takes_is_left_out_too(
        nc: NATS, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A row that would compress into a message but give a reader more than it takes
    (`MAX_ROW_BYTES`) is not published: a reader would refuse it, and with it every batch."""
    monkeypatch.setattr(projection_bus, "MAX_ROW_BYTES", 2 << 20)
    bus = await JetStreamProjectionBus.open(nc)
    too_big = b'{"x":"' + b"a" * (3 << 20) + b'"}'  # compresses to a few KB
    with caplog.at_level(logging.ERROR, logger="meshlog.projection_bus"):
        await bus.publish([(KEY, too_big), (CHECKPOINT_KEY, b"1")])
    assert await bus.current() == {CHECKPOINT_KEY: b"1"}
    assert any(KEY in r.getMessage() for r in caplog.records)


async def test_a_compressed_value_that_does_not_open_is_an_error_naming_its_key(
        nc: NATS, monkeypatch: pytest.MonkeyPatch) -> None:
    bus = await JetStreamProjectionBus.open(nc)
    await bus.kv.put(KEY, projection_bus._ZLIB + b"not zlib at all")
    with pytest.raises(EventLogUnavailable, match=KEY):
        await bus.current()

    monkeypatch.setattr(projection_bus, "MAX_ROW_BYTES", 1 << 20)
    bomb = projection_bus._ZLIB + zlib.compress(b"\0" * (2 << 20))  # ~2 KB that gives 2 MiB
    await bus.kv.put(KEY, bomb)
    with pytest.raises(EventLogUnavailable, match="more than 1048576 bytes"):
        await bus.current()
