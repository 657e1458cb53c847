"""An operator's decision to skip an event (`SequenceSkipped`, `meshlog quarantine skip`):
the projector folds that sequence as nothing, also when the event failed half-way through the
fold (the batch is folded again without it), and every replay does the same, whatever its
batch size (invariant 4). A decision for an event that folds changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from events import (
    CaCreated,
    JetStreamEventLog,
    Mesh,
    MeshApplied,
    SequenceSkipped,
    ca_subject,
    resource_subject,
    skip_subject,
)
from events.commands import SkipCommands
from projections import Projector, ProjectorHalted, export_store, open_store

pytestmark = pytest.mark.integration


async def _mesh(log: JetStreamEventLog, name: str) -> int:
    appended = await log.append(resource_subject("Mesh", None, name),
                                MeshApplied(at=1, mesh=Mesh(name=name)),
                                expected_last_subject_seq=0, msg_id=f"mesh-{name}")
    return appended.seq


async def test_an_event_that_failed_half_way_is_skipped_and_replays_the_same(
        event_log: JetStreamEventLog, tmp_path: Path) -> None:
    await _mesh(event_log, "a")
    # decodes, but its fold stops half-way (the CA row is put, then its key cannot be opened:
    # this projector has no secret key): the state is dropped, nothing of the batch committed
    bad = (await event_log.append(
        ca_subject("a", "ca-1"), CaCreated(at=2, mesh="a", backend="ca-1", type="builtin",
                                           cert="not a certificate", key="not sealed"),
        expected_last_subject_seq=0, msg_id="ca")).seq
    last = await _mesh(event_log, "b")
    live = await open_store(f"sqlite:///{tmp_path / 'live.db'}")
    replayed = await open_store(f"sqlite:///{tmp_path / 'replayed.db'}")
    try:
        with pytest.raises(ProjectorHalted, match=f"skip --seq {bad} "):
            await Projector(event_log, live, None, zone="default").run(until_seq=last)
        assert await live.checkpoint() == 0  # the batch [1..3] failed half-way
        assert len(await live.scan("quarantine")) == 1

        skipped = await SkipCommands(event_log, zone="default").skip(
            bad, reason="no secret key for it", by="jane", at=3, quarantined=True)
        assert skipped.appended and skipped.subject == ca_subject("a", "ca-1")
        head = skipped.decision_seq
        await Projector(event_log, live, None, zone="default").run(until_seq=head)
        await Projector(event_log, replayed, None, zone="default",
                        max_batch=1).run(until_seq=head)

        assert await live.scan("quarantine") == []
        assert await live.scan("ca") == []  # what the failed fold put is gone
        assert {key for key, _ in await live.scan("mesh")} == {"a", "b"}
        [(key, _)] = await live.scan("skipped")
        assert key == f"{bad:012d}" and last < head
        assert await export_store(replayed) == await export_store(live)

        # a second record on the decision's subject (a writer past the API, which makes the
        # decision once) changes nothing a later replay folds: the first decision stands
        await event_log.append(skip_subject(bad), SequenceSkipped(
            at=4, seq=bad, subject=ca_subject("a", "ca-1"), reason="other words", by="mallory"),
            expected_last_subject_seq=head, msg_id="again")
        again = await open_store(f"sqlite:///{tmp_path / 'again.db'}")
        try:
            await Projector(event_log, again, None, zone="default").run(until_seq=head)
            assert await again.scan("skipped") == await live.scan("skipped")
        finally:
            await again.close()
    finally:
        await live.close()
        await replayed.close()


async def test_a_decision_for_an_event_that_folds_is_ignored(
        event_log: JetStreamEventLog, tmp_path: Path) -> None:
    seq = await _mesh(event_log, "a")
    # what a writer with admin NATS credentials could append (the API refuses it)
    forged = await event_log.append(
        skip_subject(seq), SequenceSkipped(at=2, seq=seq, subject=resource_subject(
            "Mesh", None, "a"), reason="drop it", by="mallory"),
        expected_last_subject_seq=0, msg_id="forged")
    store = await open_store(f"sqlite:///{tmp_path / 'rm.db'}")
    try:
        await Projector(event_log, store, None, zone="default").run(until_seq=forged.seq)
        assert [key for key, _ in await store.scan("mesh")] == ["a"]
        assert await store.scan("skipped") == []
    finally:
        await store.close()
