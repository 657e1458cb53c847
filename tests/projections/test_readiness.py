"""Readiness changes a later event of the batch replaces, folded as their time only
(projections.readiness): the rows are those of folding every event one per batch, and each
way the shortcut may not hold folds the event in full instead, or gives the row its
readiness before the batch is derived: the last change of a subject, the first of a batch,
a row another event wrote, another zone's event, another schema version, bytes that are not
the anchor's with another readiness and time (whatever the writer's hint says), a replacing
event an operator skipped or that cannot be read (then a real projector stops in front of it
with the same rows committed as one folding event by event)."""

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
from prometheus_client import REGISTRY

from events import (
    GLOBAL_ZONE,
    SCHEMA_VERSION,
    AnyEvent,
    DataplaneDeregistered,
    DataplaneRegistered,
    JetStreamEventLog,
    Mesh,
    MeshApplied,
    Record,
    UndecodableEvent,
    decode_event,
    decode_resource,
    encode_event,
    resource_subject,
)
from events.commands import Commands, ProxyCommands
from events.kds_hash import hashed_name
from events.readiness import READINESS_HEADER
from events.resources import Dataplane
from projections import Projector, ProjectorHalted, SequenceGap, export_store, open_store
from projections.derive import derive_stale
from projections.fold import apply_event
from projections.readiness import BatchReadiness
from projections.state import ProjectionState
from tests.projections._histories import (
    HINTS,
    PROVENANCE,
    SECRET_KEY,
    ZONE,
    History,
    as_record,
    dataplane,
    flappy_histories,
    fold,
    fold_records,
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


def _fold_records(batches: Sequence[Sequence[Record]], *, by_subject: bool = False
                  ) -> ProjectionState:
    """`fold` of records as they are (bytes and hints included), batch by batch
    (`fold_records`)."""
    state = _state()
    for batch in batches:
        readiness = BatchReadiness(batch)
        fold_records(state, batch, readiness, by_subject=by_subject)
        _settled(state, readiness)
    return state


def _state() -> ProjectionState:
    return ProjectionState.load([], secret_key=SECRET_KEY, local_zone=ZONE)


_fold = fold_records


def _one_by_one(events: Sequence[AnyEvent]) -> list[tuple[str, str, bytes]]:
    return rows(fold([[e] for e in events]))


def _settled(state: ProjectionState, readiness: BatchReadiness
             ) -> list[tuple[str, str, bytes]]:
    readiness.settle(state)
    derive_stale(state)
    state.take_changes()
    return rows(state)


def test_replaced_changes_fold_as_their_time_and_give_the_same_rows() -> None:
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
    state = fold([events[:2]])
    # each change the last of its subject in its batch
    for batch in ([records[2]], [records[3]]):
        assert _fold(state, batch, BatchReadiness(batch)) == 0
    # another subject's later event replaces nothing
    other = dataplane("default", "web-2", "10.0.0.2", inbound(80, "web"))
    more = _records([*events, DataplaneRegistered(at=9, dataplane=other)])
    batch = [more[1], more[2], more[4]]
    assert _fold(_state(), batch, BatchReadiness(batch)) == 0


def test_the_first_change_of_a_batch_is_folded_in_full() -> None:
    """What a change is checked against is a registration folded in full in the same batch:
    the first change of a subject in a batch is that registration."""
    events = _flips(4)
    records = _records(events)
    state = fold([events[:2]])  # web-1 registered in an earlier batch
    batch = records[2:]
    readiness = BatchReadiness(batch)
    assert _fold(state, batch, readiness) == 2  # 4 and 5; 3 is the anchor, 6 the last
    assert _settled(state, readiness) == _one_by_one(events)


def test_a_row_another_event_wrote_is_not_folded_from() -> None:
    """A registration of the same Dataplane on another subject (a writer past the API) wrote
    the row after the anchor: the change is folded in full."""
    events = _flips(3)
    records = _records(events)
    wider = dataplane("default", "web-1", "10.0.0.1", inbound(80, "web"), inbound(82, "new"))
    elsewhere = Record(3, "meshlog.ev.default.dataplane.default.elsewhere",
                       encode_event(DataplaneRegistered(at=2, dataplane=wider)), {},
                       records[2].schema_version)
    batch = [*records[:2], elsewhere,
             *(msgspec.structs.replace(r, seq=r.seq + 1) for r in records[2:])]
    state, readiness = _state(), BatchReadiness(batch)
    _fold(state, batch[:3], readiness)
    assert not readiness.fold(state, batch[3])  # the row is 3's, not the anchor's
    assert rows(_fold_records([batch])) == rows(_fold_records([[r] for r in batch]))


def test_another_zones_change_is_folded_in_full() -> None:
    events = _flips(2)
    records = _records(events)
    state = _state()
    readiness = BatchReadiness(records)
    theirs = msgspec.structs.replace(PROVENANCE, zone="other-zone")
    registered = decode_event(records[1].data, seq=2, subject=records[1].subject)
    apply_event(state, 2, registered, PROVENANCE)
    readiness.folded(records[1], registered, theirs)
    assert not readiness.fold(state, records[2])


def test_another_schema_version_is_folded_in_full() -> None:
    events = _flips(2)
    records = _records(events)
    older = [*records[:2], *(msgspec.structs.replace(r, schema_version=0) for r in records[2:])]
    assert _fold(_state(), older[:2] + older[2:3], BatchReadiness(older)) == 0


def test_an_event_an_operator_skips_replaces_nothing() -> None:
    records = _records(_flips(2))
    assert _fold(_state(), records[:3], BatchReadiness(records)) == 1
    assert _fold(_state(), records[:3], BatchReadiness(records, skipped={4})) == 0


def test_a_change_the_replacing_event_did_not_replace_gets_its_readiness() -> None:
    """What the projector does in front of an event it cannot read: the change folded as its
    time is given its own readiness, so what it commits is what folding one by one up to
    there gives."""
    events = _flips(4)  # web-1 ready (2), then not ready (3), ready (4), not ready (5), ready
    records = _records(events)
    state, readiness = _state(), BatchReadiness(records)
    assert _fold(state, records, readiness, leave_out=6) == 3  # 3, 4 and 5; 6 is left out
    assert _settled(state, readiness) == _one_by_one(events[:5])
    web = meshservice_row(state, "default", "web")
    assert web is not None and web.status.dataplane_proxies.healthy == 0  # as 5 says


@settings(max_examples=100, deadline=None)
@given(flappy_histories(), st.data())
def test_random_histories_with_flapping_health_give_identical_rows_whatever_the_batches(
        events: list[AnyEvent], data: st.DataObject) -> None:
    picked = sorted(set(data.draw(st.lists(st.integers(1, len(events)), max_size=8))))
    bounds = [0, *picked, len(events)]
    batches = [events[a:b] for a, b in itertools.pairwise(bounds) if b > a]
    hints = data.draw(st.sampled_from(HINTS))
    assert rows(fold(batches, hints=hints)) == _one_by_one(events)


# --- the bytes: only the anchor's, with a readiness and a time of their own -----------------


def _spelled(records: Sequence[Record], data: bytes) -> list[Record]:
    """`_flips(2)`'s records with the first change's bytes `data` (its hint kept)."""
    return [*records[:2], msgspec.structs.replace(records[2], data=data), records[3]]


def _respelled(change: bytes) -> dict[str, bytes]:
    at = change[change.rindex(b',"at":') + 6:-1]
    return {
        "spaces": change.replace(b'":', b'": '),
        "ready spelled out": change.replace(b'"health":{"ready":false}',
                                            b'"health":{"ready":true}'),
        "another key order": b'{"at":' + at + b"," + change[1:change.rindex(b',"at":')] + b"}",
        "a leading zero": change.replace(b'"at":', b'"at":0'),
        "a fraction": change[:-1] + b".5}",
        "beyond 64 bits": change.replace(b'"at":', b'"at":99999999999999999999'),
        "the slot twice": change.replace(b'"health":{"ready":false}',
                                         b'"health":{},"health":{"ready":false}'),
        "the slot elsewhere": change.replace(b',"health":{"ready":false}', b"").replace(
            b'"protocol":"http"', b'"protocol":"http","health":{"ready":false}'),
        "trailing bytes": change + b" ",
        "another address": change.replace(b"10.0.0.1", b"10.0.0.9"),
        "another origin": change.replace(b',"at":', b',"origin":"proxy","at":'),
        "not JSON": change[:-1],
        "another state": change.replace(b'"health":{"ready":false}',
                                        b'"health":{"ready":false},"state":"NotReady"'),
    }


def test_the_bytes_of_a_change_are_its_anchors_with_another_readiness_and_time() -> None:
    web = dataplane("default", "web-1", "10.0.0.1",
                    inbound(80, "web", protocol="http"))
    h = History().mesh("default").register(web).flip(0, False, "Ready").flip(0, None, "Ready")
    records = _records(h.events)
    change = records[2].data
    assert b'"health":{"ready":false}' in change and records[2].readiness_of == 2
    assert _fold(_state(), records[:3], BatchReadiness(records)) == 1
    # `Health(ready=True)` as the encoder writes it is a readiness too
    explicit = change.replace(b'"health":{"ready":false}', b'"health":{}')
    assert _fold(_state(), records[:3], BatchReadiness(_spelled(records, explicit))) == 1
    for how, data in _respelled(change).items():
        batch = _spelled(records, data)
        state, readiness = _state(), BatchReadiness(batch)
        _fold(state, batch[:2], readiness)
        assert not readiness.fold(state, batch[2]), how  # folded in full, or quarantined
        try:
            decode_event(data, seq=3, subject=batch[2].subject)
        except UndecodableEvent:
            continue
        assert rows(_fold_records([batch])) == rows(_fold_records([[r] for r in batch])), how


def test_a_dataplane_with_a_status_has_no_changes_folded_as_their_time() -> None:
    """A `status` is free-form (a writer past the API may log one): bytes of its shape could
    decode to another status, so nothing is taken as a change of it."""
    h = History().mesh("default").register(msgspec.structs.replace(
        WEB, status={"a": 1, "health": {"ready": False}})).flip(0, False, "Ready")
    h.flip(0, None, "Ready")
    records = _records(h.events)
    assert records[2].readiness_of == 2
    state, readiness = _state(), BatchReadiness(records)
    assert _fold(state, records, readiness) == 0
    assert _settled(state, readiness) == _one_by_one(h.events)


def test_an_undecodable_change_a_later_event_replaces_is_not_passed_over() -> None:
    """Invariant 10: what does not decode is quarantined, whatever the batch: one by one the
    projector stops in front of it, so in a batch it must not be folded as its time."""
    records = _records(_flips(2))
    broken = msgspec.json.decode(records[2].data)
    del broken["dataplane"]["networking"]  # its time and names decode, the rest does not
    batch = _spelled(records, msgspec.json.encode(broken))
    state, readiness = _state(), BatchReadiness(batch)
    assert _fold(state, batch[:2], readiness) == 0
    assert not readiness.fold(state, batch[2])  # the full path: UndecodableEvent, quarantined


def test_a_hint_that_is_not_true_does_not_change_the_rows() -> None:
    """The hint is a claim of the writer's: one that says a registration with a new service
    is a readiness change must not make the rows depend on the batch (one by one, the
    service's MeshService is generated, gets a VIP, and waits out its grace period)."""
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
    """A hint on a registration by another origin (the row's `origin` and the Dataplane's
    labels change): not a readiness change, whatever it says."""
    h = History().mesh("default").register(WEB)
    h.events.append(DataplaneRegistered(at=h.events[-1].at + 1, dataplane=WEB, origin="proxy"))
    h.events.append(DataplaneRegistered(at=h.events[-1].at + 2, dataplane=WEB, origin="proxy"))
    records = _records(h.events)
    lying = [*records[:2], msgspec.structs.replace(records[2], readiness_of=2), records[3]]
    state, readiness = _state(), BatchReadiness(lying)
    assert _fold(state, lying, readiness) == 0
    assert rows(_fold_records([lying])) == rows(_fold_records([[r] for r in lying]))


# --- a real projector on a real nats-server ------------------------------------------------


async def _probed_proxy(event_log: JetStreamEventLog) -> ProxyCommands:
    """A Mesh and p-1, a Dataplane with a service probe, registered at sequences 1 and 2:
    its readiness reports (`ProxyCommands.report_readiness`) are readiness changes."""
    await Commands(event_log, zone="default").apply(Mesh(name="default"))
    proxies = ProxyCommands(event_log, zone="default")
    probed = decode_resource({
        "type": "Dataplane", "mesh": "default", "name": "p-1", "networking": {
            "address": "127.0.0.1", "inbound": [{
                "port": 80, "tags": {"kuma.io/service": "web"}, "serviceProbe": {"tcp": {}}}]}})
    assert isinstance(probed, Dataplane)
    assert await proxies.register(probed, at=1)
    return proxies


async def test_a_projector_stopping_in_front_of_an_unreadable_event_commits_exact_rows(
        event_log: JetStreamEventLog, nc: NATS, tmp_path: Path) -> None:
    proxies = await _probed_proxy(event_log)
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
        counted = {}
        for size, store in stores.items():
            projector = Projector(event_log, store, None, zone="default", max_batch=size)
            with pytest.raises(ProjectorHalted, match=f"skip --seq {bad} "):
                await projector.run(until_seq=bad)
            assert await store.checkpoint() == bad - 1
            counted[size] = projector.folded_as_time
        # the batch of 1,000 folded 3, 4 and 5 as their time (the unreadable event is on the
        # subject too), then gave the row 5's readiness
        assert counted == {1: 0, 1000: 3}
        assert await export_store(stores[1000]) == await export_store(stores[1])
        row = dict(await stores[1000].scan("dataplane"))["default/p-1"]
        assert b'"ready":false' in row
    finally:
        for store in stores.values():
            await store.close()


async def test_a_projector_counts_the_changes_it_folds_as_their_time(
        event_log: JetStreamEventLog, tmp_path: Path) -> None:
    """A live projector's changes from the command path: folded as their time in a batch
    (counted, and in its metrics), the same rows as one event per batch."""
    proxies = await _probed_proxy(event_log)
    for at in range(2, 6):  # sequences 3 to 6
        assert await proxies.report_readiness("default", "p-1", {("127.0.0.1", 80): at % 2 == 1},
                                              at=at)
    stores = {size: await open_store(f"sqlite:///{tmp_path / f'{size}.db'}")
              for size in (1, 1000)}
    try:
        counted = {}
        for size, store in stores.items():
            projector = Projector(event_log, store, None, zone="default", max_batch=size,
                                  name=f"counted-{size}")
            await projector.run(until_seq=6)
            counted[size] = projector.folded_as_time
        assert counted == {1: 0, 1000: 3}  # 3, 4 and 5; 6 is the last
        assert REGISTRY.get_sample_value("meshlog_projector_readiness_folded_as_time_total",
                                         {"projector": "counted-1000"}) == 3
        assert await export_store(stores[1000]) == await export_store(stores[1])
    finally:
        for store in stores.values():
            await store.close()


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


# --- review: a subject a writer past the API puts two Dataplanes on ------------------------


def test_changes_of_two_dataplanes_on_one_subject_each_keep_their_readiness() -> None:
    """A writer past the API registers web-1, a change of it, then web-2 on web-1's subject,
    a change of web-2, and web-2 again: nothing replaces web-1's row after its change, which
    must get its readiness (as one by one), not be lost when web-2's change comes."""
    other = dataplane("default", "web-2", "10.0.0.2", inbound(80, "web"))
    h = History().mesh("default").register(WEB).flip(0, False, "Ready")
    h.register(other).flip(2, False, "Ready").flip(2, None, "Ready")
    records = _records(h.events)
    subject = records[1].subject
    batch = [msgspec.structs.replace(r, subject=subject, readiness_of=r.seq - 1)
             if r.seq in (3, 4, 5, 6) else r for r in records]
    state, readiness = _state(), BatchReadiness(batch)
    assert _fold(state, batch, readiness) == 2  # 3 (from 2) and 5 (from 4)
    assert _settled(state, readiness) == rows(_fold_records([[r] for r in batch]))


def _fold_by_subject(batches: Sequence[Sequence[Record]]) -> ProjectionState:
    """`_fold_records` with each event's provenance read from its subject (as the projector
    does): a log that also holds another zone's events."""
    return _fold_records(batches, by_subject=True)


def test_a_change_whose_meshservice_waits_out_its_grace_period_is_folded_in_full() -> None:
    """Folding a readiness change regenerates its services' MeshServices: only a mark while
    the MeshService is there and not waiting out a grace period. Here another zone's event
    made it wait (its synced name, `hashed_name`, is a service of a local Dataplane): the
    change takes it back at its own sequence and time, one by one and in a batch alike."""
    synced = hashed_name("default", "redis", "west")
    west = dataplane("default", "r-1", "10.2.0.1", inbound(6379, "redis"))
    local = dataplane("default", "web-1", "10.0.0.1", inbound(6379, synced))
    west_subject = resource_subject("Dataplane", "default", "r-1", zone="west")
    h = History().register(local).flip(0, False, "Ready").flip(0, None, "Ready")
    mesh = MeshApplied(at=1, mesh=Mesh(name="default"))
    logged: list[tuple[str, AnyEvent, int]] = [
        (resource_subject("Mesh", None, "default", zone=GLOBAL_ZONE), mesh, 0),
        (west_subject, DataplaneRegistered(at=2, dataplane=west), 0)]
    subject = resource_subject("Dataplane", "default", "web-1", zone=ZONE)
    logged.append((subject, h.events[0], 0))
    logged.append((west_subject, DataplaneDeregistered(at=h.events[0].at + 1,
                                                       mesh="default", name="r-1"), 0))
    logged += [(subject, h.events[1], 3), (subject, h.events[2], 5)]
    records = [Record(seq, s, encode_event(e), {}, SCHEMA_VERSION, hint)
               for seq, (s, e, hint) in enumerate(logged, start=1)]
    one_by_one = _fold_by_subject([[r] for r in records])
    row = meshservice_row(one_by_one, "default", synced)
    assert row is not None and row.expires_at is None and row.meta.version == 5
    batched = meshservice_row(_fold_by_subject([records]), "default", synced)
    assert batched == row
    assert rows(_fold_by_subject([records])) == rows(one_by_one)


def test_a_replacing_event_of_another_kind_leaves_the_change_its_readiness() -> None:
    """A writer past the API puts a Mesh on web-1's subject after its changes: the last
    change folded as its time gets its readiness when the batch settles, as one by one."""
    h = History().mesh("default").register(WEB).flip(0, False, "Ready")
    h.events.append(MeshApplied(at=h.events[-1].at + 1, mesh=Mesh(name="other")))
    records = _records(h.events)
    batch = [*records[:3], msgspec.structs.replace(records[3], subject=records[2].subject)]
    assert batch[2].readiness_of == 2
    state, readiness = _state(), BatchReadiness(batch)
    assert _fold(state, batch, readiness) == 1
    assert _settled(state, readiness) == rows(_fold_records([[r] for r in batch]))


@settings(max_examples=150, deadline=None)
@given(flappy_histories(), st.data())
def test_random_histories_on_any_subjects_give_identical_rows_whatever_the_batches(
        events: list[AnyEvent], data: st.DataObject) -> None:
    """A writer past the API may put any event on any subject with any hint: the rows of a
    batch are still those of folding one by one."""
    records = [msgspec.structs.replace(r, readiness_of=max(r.seq - 1, 1))
               if r.subject != "test" else r for r in _records(events)]
    subjects = sorted({r.subject for r in records if r.subject != "test"})
    if subjects:
        moved = data.draw(st.lists(st.tuples(st.integers(1, len(records)),
                                             st.sampled_from(subjects)), max_size=12))
        by_seq = dict(moved)
        records = [msgspec.structs.replace(r, subject=by_seq[r.seq],
                                           readiness_of=max(r.seq - 1, 1))
                   if r.seq in by_seq else r for r in records]
    picked = sorted(set(data.draw(st.lists(st.integers(1, len(records)), max_size=4))))
    bounds = [0, *picked, len(records)]
    batches = [records[a:b] for a, b in itertools.pairwise(bounds) if b > a]
    assert rows(_fold_records(batches)) == rows(_fold_records([[r] for r in records]))
