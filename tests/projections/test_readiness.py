"""Readiness changes a later event of the batch replaces, folded from the Dataplane's row
(projections.readiness): the rows are those of folding every event one per batch, and each
way the shortcut may not hold folds the event in full instead, or gives the row its
readiness before the batch is derived: the last change of a subject, a row another event
wrote, another zone's event, another schema version, a replacing event an operator skipped
or that cannot be read (then a real projector stops in front of it with the same rows
committed as one folding event by event)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nats.aio.client import Client as NATS
from nats.js.api import StorageType, StreamConfig

from events import (
    AnyEvent,
    DataplaneRegistered,
    JetStreamEventLog,
    Mesh,
    MeshApplied,
    Record,
    decode_event,
    decode_resource,
    encode_event,
    resource_subject,
)
from events.commands import Commands, ProxyCommands
from events.readiness import READINESS_HEADER
from events.resources import Dataplane
from projections import Projector, ProjectorHalted, SequenceGap, export_store, open_store
from projections.derive import derive_stale
from projections.fold import apply_event
from projections.readiness import BatchReadiness
from projections.state import ProjectionState
from tests.projections._histories import (
    PROVENANCE,
    SECRET_KEY,
    ZONE,
    History,
    as_record,
    dataplane,
    flappy_histories,
    fold,
    inbound,
    meshservice_row,
    rows,
)

WEB = dataplane("default", "web-1", "10.0.0.1", inbound(80, "web"), inbound(81, "admin"))


def _flips(count: int) -> list[AnyEvent]:
    """A Mesh, web-1 registered, then `count` readiness changes of it."""
    h = History().mesh("default").register(WEB)
    for i in range(count):
        h.flip(0, i % 2 == 1, "Ready")
    return h.events


def _records(events: Sequence[AnyEvent]) -> list[Record]:
    said: dict[str, tuple[int, AnyEvent]] = {}
    return [as_record(seq, event, said) for seq, event in enumerate(events, start=1)]


def _state() -> ProjectionState:
    return ProjectionState.load([], secret_key=SECRET_KEY, local_zone=ZONE)


def _fold(state: ProjectionState, records: Sequence[Record], readiness: BatchReadiness,
          *, leave_out: int = 0) -> int:
    """Fold `records` as the projector does, leaving the record at `leave_out` unfolded (as
    one it stops in front of); how many were folded from rows."""
    from_rows = 0
    for record in records:
        if record.seq == leave_out:
            continue
        if readiness.fold(state, record):
            from_rows += 1
        else:
            event = decode_event(record.data, seq=record.seq, subject=record.subject)
            apply_event(state, record.seq, event, PROVENANCE)
            readiness.folded(record, event, PROVENANCE)
    return from_rows


def _one_by_one(events: Sequence[AnyEvent]) -> list[tuple[str, str, bytes]]:
    return rows(fold([[e] for e in events]))


def _settled(state: ProjectionState, readiness: BatchReadiness
             ) -> list[tuple[str, str, bytes]]:
    readiness.settle(state)
    derive_stale(state)
    state.take_changes()
    return rows(state)


def test_replaced_changes_fold_from_rows_and_give_the_same_rows() -> None:
    events = _flips(6)
    records = _records(events)
    assert [r.readiness_of for r in records] == [0, 0, 2, 3, 4, 5, 6, 7]
    state, readiness = _state(), BatchReadiness(records)
    assert _fold(state, records, readiness) == 5  # every change but the subject's last
    assert _settled(state, readiness) == _one_by_one(events)


def test_a_replaced_change_still_brings_its_time() -> None:
    """Writers' clocks differ: a change stamped later than the events after it still makes
    what falls due by its time go before them, as folding it in full does."""
    old = dataplane("default", "old-1", "10.0.0.3", inbound(80, "old"))
    h = History(gap=100).mesh("default").grace(1500).register(WEB).register(old)
    h.deregister("default", "old-1")  # `old` waits out its grace period
    expires = h.events[-1].at + 1500
    h.events.append(DataplaneRegistered(at=expires + 500, dataplane=WEB))  # by a clock ahead
    back = dataplane("default", "old-2", "10.0.0.4", inbound(80, "old"))
    h.events.append(DataplaneRegistered(at=expires - 200, dataplane=back))  # one behind
    h.events.append(DataplaneRegistered(at=expires - 100, dataplane=WEB))
    records = _records(h.events)
    assert records[5].readiness_of == 3
    state, readiness = _state(), BatchReadiness(records)
    assert _fold(state, records, readiness) == 1
    assert _settled(state, readiness) == _one_by_one(h.events)
    # `old` went at the change's time and came back with old-2: made anew
    row = meshservice_row(state, "default", "old")
    assert row is not None and row.meta.creation_time == expires - 200


def test_changes_no_later_event_replaces_are_folded_in_full() -> None:
    events = _flips(2)
    records = _records(events)
    # each change the last of its subject in its batch
    for batch in ([records[2]], [records[0], records[3]]):
        assert BatchReadiness(batch).replaced == frozenset()
    # another subject's later event replaces nothing
    other = dataplane("default", "web-2", "10.0.0.2", inbound(80, "web"))
    more = _records([*events, DataplaneRegistered(at=9, dataplane=other)])
    assert BatchReadiness([more[2], more[4]]).replaced == frozenset()


def test_a_row_another_event_wrote_is_not_folded_from() -> None:
    events = _flips(3)
    records = _records(events)
    # the change says it is one of sequence 2, but its row is 3's (the batch starts after
    # 3, as if another writer had written the row in between)
    lying = msgspec.structs.replace(records[3], readiness_of=2)
    state = fold([events[:3]])
    readiness = BatchReadiness([lying, records[4]])
    assert _fold(state, [lying, records[4]], readiness) == 0
    assert _settled(state, readiness) == _one_by_one(events[:5])


def test_another_zones_change_is_folded_in_full() -> None:
    events = _flips(2)
    records = _records(events)
    subject = resource_subject("Dataplane", "default", "web-1", "other-zone")
    theirs = [msgspec.structs.replace(r, subject=subject) for r in records[2:]]
    state = fold([events[:2]])
    assert BatchReadiness(theirs).replaced == {3}
    assert not BatchReadiness(theirs).fold(state, theirs[0])


def test_another_schema_version_is_folded_in_full() -> None:
    events = _flips(2)
    records = _records(events)
    older = [msgspec.structs.replace(r, schema_version=0) for r in records[2:]]
    state = fold([events[:2]])
    assert not BatchReadiness(older).fold(state, older[0])


def test_an_event_an_operator_skips_replaces_nothing() -> None:
    records = _records(_flips(2))
    assert BatchReadiness(records).replaced == {3}
    assert BatchReadiness(records, skipped={4}).replaced == frozenset()


def test_a_change_the_replacing_event_did_not_replace_gets_its_readiness() -> None:
    """What the projector does in front of an event it cannot read: the change folded from
    the row is given its own readiness, so what it commits is what folding one by one up to
    there gives."""
    events = _flips(4)  # web-1 ready, then not ready (3), ready (4), not ready (5), ready
    records = _records(events)
    state = fold([events[:2]])  # web-1 derived, ready, in an earlier batch
    batch = records[2:]
    readiness = BatchReadiness(batch)
    assert _fold(state, batch, readiness, leave_out=6) == 3  # 3, 4 and 5; 6 is left out
    settled = _settled(state, readiness)
    assert settled == _one_by_one(events[:5])
    web = meshservice_row(state, "default", "web")
    assert web is not None and web.status.dataplane_proxies.healthy == 0  # as 5 says


@settings(max_examples=100, deadline=None)
@given(flappy_histories(), st.data())
def test_random_histories_with_flapping_health_give_identical_rows_whatever_the_batches(
        events: list[AnyEvent], data: st.DataObject) -> None:
    picked = sorted(set(data.draw(st.lists(st.integers(1, len(events)), max_size=8))))
    bounds = [0, *picked, len(events)]
    batches = [events[a:b] for a, b in itertools.pairwise(bounds) if b > a]
    assert rows(fold(batches)) == _one_by_one(events)


# --- a real projector on a real nats-server ------------------------------------------------


async def test_a_projector_stopping_in_front_of_an_unreadable_event_commits_exact_rows(
        event_log: JetStreamEventLog, nc: NATS, tmp_path: Path) -> None:
    commands = Commands(event_log, zone="default")
    proxies = ProxyCommands(event_log, zone="default")
    await commands.apply(Mesh(name="default"))
    probed = decode_resource({
        "type": "Dataplane", "mesh": "default", "name": "p-1", "networking": {
            "address": "127.0.0.1", "inbound": [{
                "port": 80, "tags": {"kuma.io/service": "web"}, "serviceProbe": {"tcp": {}}}]}})
    assert isinstance(probed, Dataplane)
    assert await proxies.register(probed, at=1)
    for at, ready in ((2, False), (3, True), (4, False)):
        assert await proxies.report_readiness("default", "p-1", {("127.0.0.1", 80): ready},
                                              at=at)
    subject = resource_subject("Dataplane", "default", "p-1")
    # a writer past the API puts what no release reads on the Dataplane's subject
    ack = await nc.jetstream().publish(subject, b"not an event",
                                       headers={"Meshlog-Schema": "1"})
    bad = ack.seq
    stores = {size: await open_store(f"sqlite:///{tmp_path / f'{size}.db'}")
              for size in (1, 1000)}
    try:
        for size, store in stores.items():
            with pytest.raises(ProjectorHalted, match=f"skip --seq {bad} "):
                await Projector(event_log, store, None, zone="default",
                                max_batch=size).run(until_seq=bad)
            assert await store.checkpoint() == bad - 1
        # the batch of 1,000 folded 3 and 4 from the row, then gave it 5's readiness
        assert await export_store(stores[1000]) == await export_store(stores[1])
        row = dict(await stores[1000].scan("dataplane"))["default/p-1"]
        assert b'"ready":false' in row
    finally:
        for store in stores.values():
            await store.close()


# --- review: what the shortcut must not take on trust ----------------------------------------


def _fold_records(batches: Sequence[Sequence[Record]]) -> ProjectionState:
    """`fold` of records as they are (headers included), batch by batch."""
    state = _state()
    for batch in batches:
        readiness = BatchReadiness(batch)
        for record in batch:
            if not readiness.fold(state, record):
                event = decode_event(record.data, seq=record.seq, subject=record.subject)
                apply_event(state, record.seq, event, PROVENANCE)
                readiness.folded(record, event, PROVENANCE)
        readiness.settle(state)
        derive_stale(state)
        state.take_changes()
    return state


def test_an_undecodable_change_a_later_event_replaces_is_not_passed_over() -> None:
    """Invariant 10: what does not decode is quarantined, whatever the batch: one by one the
    projector stops in front of it, so in a batch it must not be folded as its time."""
    events = _flips(2)
    records = _records(events)
    broken = msgspec.json.decode(records[2].data)
    del broken["dataplane"]["networking"]  # its time and names decode, the rest does not
    bad = msgspec.structs.replace(records[2], data=msgspec.json.encode(broken))
    batch = [*records[:2], bad, records[3]]
    state, readiness = _state(), BatchReadiness(batch)
    assert readiness.replaced == {3}
    for record in batch[:2]:
        apply_event(state, record.seq, decode_event(
            record.data, seq=record.seq, subject=record.subject), PROVENANCE)
    assert not readiness.fold(state, bad)  # the full path: UndecodableEvent, quarantined


def test_a_header_that_is_not_true_does_not_change_the_rows() -> None:
    """The header is a claim of the writer's: one that says a registration with a new
    service is a readiness change must not make the rows depend on the batch (one by one,
    the service's MeshService is generated, gets a VIP, and waits out its grace period)."""
    more = dataplane("default", "web-1", "10.0.0.1", inbound(80, "web"), inbound(81, "admin"),
                     inbound(82, "extra"))
    h = History().mesh("default").register(WEB)
    h.events.append(DataplaneRegistered(at=h.events[-1].at + 1, dataplane=more))
    h.events.append(DataplaneRegistered(at=h.events[-1].at + 2, dataplane=WEB))
    records = _records(h.events)
    assert records[2].readiness_of == 0
    lying = [*records[:2], msgspec.structs.replace(records[2], readiness_of=2), records[3]]
    one_by_one = _fold_records([[r] for r in lying])
    assert meshservice_row(one_by_one, "default", "extra") is not None
    assert rows(_fold_records([lying])) == rows(one_by_one)


def test_a_change_from_another_origin_is_folded_in_full() -> None:
    """A header on a registration by another origin (the row's `origin` and the Dataplane's
    labels change): not a readiness change, whatever it says."""
    h = History().mesh("default").register(WEB)
    h.events.append(DataplaneRegistered(at=h.events[-1].at + 1, dataplane=WEB, origin="proxy"))
    h.events.append(DataplaneRegistered(at=h.events[-1].at + 2, dataplane=WEB, origin="proxy"))
    records = _records(h.events)
    lying = [*records[:2], msgspec.structs.replace(records[2], readiness_of=2), records[3]]
    one_by_one = _fold_records([[r] for r in lying])
    assert rows(_fold_records([lying])) == rows(one_by_one)


async def test_a_projector_stopping_at_a_gap_commits_exact_rows(
        nc: NATS, tmp_path: Path) -> None:
    """What is committed in front of a gap (invariant 5) is the fold up to there: a change
    folded as its time, whose replacing event comes after the gap, gets its readiness."""
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="GAPPYREADY", subjects=["meshlog.ev.>"],
                                     storage=StorageType.FILE))
    log = JetStreamEventLog(nc, js, "GAPPYREADY")  # open() would refuse this stream
    mesh, web, flip, again = _flips(2)  # web-1 ready, then a change (3), then another (5)
    subject = resource_subject("Dataplane", "default", "web-1")
    await log.append(resource_subject("Mesh", None, "default"), mesh,
                     expected_last_subject_seq=0, msg_id="1")
    await log.append(subject, web, expected_last_subject_seq=0, msg_id="2")
    await log.append(subject, flip, expected_last_subject_seq=2, msg_id="3",
                     headers={READINESS_HEADER: "2"})
    await log.append(resource_subject("Mesh", None, "gone"),
                     MeshApplied(at=flip.at, mesh=Mesh(name="gone")),
                     expected_last_subject_seq=0, msg_id="4")
    await log.append(subject, again, expected_last_subject_seq=3, msg_id="5",
                     headers={READINESS_HEADER: "3"})
    await js.delete_msg("GAPPYREADY", 4)
    stores = {size: await open_store(f"sqlite:///{tmp_path / f'{size}.db'}")
              for size in (1, 1000)}
    try:
        for size, store in stores.items():
            with pytest.raises(SequenceGap):
                await Projector(log, store, None, zone="default", max_batch=size).run()
            assert await store.checkpoint() == 3
        assert await export_store(stores[1000]) == await export_store(stores[1])
    finally:
        for store in stores.values():
            await store.close()


async def test_a_projector_quarantines_an_undecodable_change_whatever_the_batch(
        event_log: JetStreamEventLog, nc: NATS, tmp_path: Path) -> None:
    """Invariant 10 on a real projector: a change that says it is one, whose time and names
    decode and the rest not, is quarantined also in a batch where a later event replaces it."""
    mesh, web, _flip, again = _flips(2)
    subject = resource_subject("Dataplane", "default", "web-1")
    await event_log.append(resource_subject("Mesh", None, "default"), mesh,
                           expected_last_subject_seq=0, msg_id="1")
    await event_log.append(subject, web, expected_last_subject_seq=0, msg_id="2")
    broken = msgspec.json.decode(encode_event(web))
    del broken["dataplane"]["networking"]
    ack = await nc.jetstream().publish(subject, msgspec.json.encode(broken), headers={
        "Meshlog-Schema": "1", READINESS_HEADER: "2"})
    bad = ack.seq
    await event_log.append(subject, again, expected_last_subject_seq=bad, msg_id="4")
    stores = {size: await open_store(f"sqlite:///{tmp_path / f'{size}.db'}")
              for size in (1, 1000)}
    try:
        for size, store in stores.items():
            with pytest.raises(ProjectorHalted, match=f"skip --seq {bad} "):
                await Projector(event_log, store, None, zone="default",
                                max_batch=size).run(until_seq=bad + 1)
            assert await store.checkpoint() == bad - 1
        assert await export_store(stores[1000]) == await export_store(stores[1])
    finally:
        for store in stores.values():
            await store.close()
