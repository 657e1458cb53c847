"""A quarantined event goes from the quarantine once a projector gets past it: here a release
that reads its schema version (a second projector with an upcaster) folds it, and the commit
that passes it removes the row, so `/ready`, the metric and `meshlog quarantine` stop counting
it (they read this collection)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from events import JetStreamEventLog, Mesh, MeshApplied, encode_event, resource_subject
from projections import Projector, ProjectorHalted
from tests.stores import BACKENDS, open_test_store

pytestmark = pytest.mark.integration


async def _publish(nc: NATS, name: str, schema: int) -> int:
    ack = await nc.jetstream().publish(
        resource_subject("Mesh", None, name), encode_event(MeshApplied(at=1, mesh=Mesh(
            name=name))), headers={"Meshlog-Schema": str(schema)})
    return ack.seq


def _unchanged(raw: dict[str, Any]) -> dict[str, Any]:
    return raw  # schema 2 of this test has the shape of 1


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_release_that_reads_the_event_clears_its_quarantine(
        backend: str, nc: NATS, event_log: JetStreamEventLog, tmp_path: Path) -> None:
    await _publish(nc, "before", 1)
    newer = await _publish(nc, "newer", 2)  # written by a release this one precedes
    last = await _publish(nc, "after", 1)
    async with open_test_store(backend, tmp_path) as store:
        with pytest.raises(ProjectorHalted, match=f"sequence {newer}"):
            await Projector(event_log, store, None, zone="default").run(until_seq=last)
        assert [key for key, _ in await store.scan("quarantine")] == [f"main/{newer:012d}"]
        assert await store.checkpoint() == newer - 1

        upgraded = Projector(event_log, store, None, zone="default",
                             upcasters={1: _unchanged}, current_schema=2)
        await upgraded.run(until_seq=last)
        assert await store.checkpoint() == last
        assert await store.scan("quarantine") == []
        assert {key for key, _ in await store.scan("mesh")} == {"before", "newer", "after"}
