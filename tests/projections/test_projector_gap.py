"""The projector halts on a sequence gap rather than skip (DESIGN.md invariant 5).

meshlog's own stream denies deletes, so the gap is made on a stream built without that guard,
read through the same adapter."""

from __future__ import annotations

from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from nats.js.api import StorageType, StreamConfig

from events import JetStreamEventLog, Mesh, MeshApplied, resource_subject
from projections import Projector, SequenceGap, open_store


async def test_projector_halts_on_a_gap_and_commits_nothing_past_it(
        nc: NATS, tmp_path: Path) -> None:
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="GAPPY", subjects=["meshlog.ev.>"],
                                     storage=StorageType.FILE))
    log = JetStreamEventLog(nc, js, "GAPPY")  # bypasses open(): it would refuse this stream
    for i in range(1, 6):
        await log.append(resource_subject("Mesh", None, f"m{i}"),
                         MeshApplied(at=i, mesh=Mesh(name=f"m{i}")),
                         expected_last_subject_seq=0, msg_id=f"m{i}")
    await js.delete_msg("GAPPY", 3)
    store = await open_store(f"sqlite:///{tmp_path / 'gap.db'}")
    try:
        with pytest.raises(SequenceGap, match="expected sequence 3, got 4"):
            await Projector(log, store, None, zone="default").run()
        assert await store.checkpoint() == 2
        assert [k for c, k, _ in await store.rows() if c == "mesh"] == ["m1", "m2"]
    finally:
        await store.close()
