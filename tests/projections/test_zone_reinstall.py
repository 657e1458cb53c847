"""A zone installed afresh under a registered name (its data dir wiped: another event stream)
is refused (`ZoneApplied.refused_install`): the fold hides what the zone synced, as for a
deleted zone, and drops the zone's events folded meanwhile (either install's, in flight
before the sync removed its source); the old install back (its data dir restored) shows its
rows again. The registration's decisions (events.commands.zones) on a real nats-server."""

from __future__ import annotations

from events import (
    GLOBAL_ZONE,
    JetStreamEventLog,
    ZoneApplied,
    ZoneDeleted,
    decode_event,
    resource_subject,
)
from events.commands.zones import ZoneCommands, zone_subject
from events.kds_hash import hashed_name
from projections.state import ProjectionState
from projections.views import ZoneRow
from tests.projections._histories import Logged, fold_logged, meshservice_row
from tests.projections.test_remote_zones import _mesh, _names, _register, _synced_generator

OLD, NEW = "2026-12-01T08:00:00Z", "2026-12-01T09:00:00Z"


def _zone(*, at: int, install: str = OLD, refused: str = "") -> Logged:
    return (resource_subject("Zone", None, "west", zone=GLOBAL_ZONE),
            ZoneApplied(at=at, name="west", install=install, refused_install=refused))


def _deleted(*, at: int) -> Logged:
    return (resource_subject("Zone", None, "west", zone=GLOBAL_ZONE),
            ZoneDeleted(at=at, name="west", install=OLD))


HISTORY = [_mesh(), _synced_generator(), _zone(at=3),
           _register("west", "redis-1", "10.2.0.1", at=4),
           _zone(at=5, refused=NEW),
           _register("west", "redis-2", "10.2.0.2", service="cache", at=6),
           _deleted(at=7), _zone(at=8, refused=NEW),
           _register("west", "redis-3", "10.2.0.3", service="web", at=9),
           _zone(at=10), _register("west", "redis-4", "10.2.0.4", service="api", at=11)]


def _service(state: ProjectionState, display: str) -> object:
    return meshservice_row(state, "default", hashed_name("default", display, "west"))


def test_a_refused_install_hides_the_zone_and_drops_its_events_until_the_old_one_is_back(
) -> None:
    state = fold_logged(HISTORY[:4], ProjectionState(""))
    kept = _names(state, "remotedataplane")
    assert kept and _service(state, "redis") is not None
    fold_logged(HISTORY[4:6], state, first_seq=5)
    assert not _names(state, "remotedataplane") and _service(state, "redis") is None
    assert _service(state, "cache") is None and _names(state, "parkeddataplane") == kept
    row = state.get("zone", "west")
    assert isinstance(row, ZoneRow) and (row.install, row.refused_install) == (OLD, NEW)
    # deleted and the new install registering again: still refused, nothing comes back
    fold_logged(HISTORY[6:9], state, first_seq=7)
    assert not _names(state, "remotedataplane") and _names(state, "parkeddataplane") == kept
    # the old install back: what it synced, and what it writes next; not what came while
    # refused
    fold_logged(HISTORY[9:], state, first_seq=10)
    assert _names(state, "remotedataplane") == kept | {
        f"default/{hashed_name('default', 'redis-4', 'west')}"}
    assert _service(state, "redis") is not None and _service(state, "api") is not None
    assert _service(state, "cache") is None and _service(state, "web") is None


def test_a_zones_own_log_keeps_its_resources_when_global_refuses_another_install() -> None:
    state = fold_logged(HISTORY[:5], ProjectionState("west"))
    assert _names(state, "dataplane") == {"default/redis-1"}


def test_a_refusal_folds_alike_in_any_batches_and_across_restarts() -> None:
    whole = fold_logged(HISTORY, ProjectionState(""))
    stepwise = ProjectionState("")
    for seq, item in enumerate(HISTORY, start=1):
        fold_logged([item], stepwise, first_seq=seq)
    assert list(stepwise.persisted()) == list(whole.persisted())
    for cut in range(1, len(HISTORY)):
        first = fold_logged(HISTORY[:cut], ProjectionState(""))
        resumed = ProjectionState.load(first.persisted(), local_zone="")
        fold_logged(HISTORY[cut:], resumed, first_seq=cut + 1)
        assert list(resumed.persisted()) == list(whole.persisted()), cut


async def _current(event_log: JetStreamEventLog) -> object:
    [record] = await event_log.latest(zone_subject("west"))
    return decode_event(record.data, seq=record.seq, subject=record.subject,
                        schema_version=record.schema_version)


async def test_the_first_install_is_kept_and_another_refused_until_the_old_one_is_back(
        event_log: JetStreamEventLog) -> None:
    zones = ZoneCommands(event_log)
    assert await zones.register("west", OLD)
    assert not await zones.register("west", OLD)  # each step of its sync: nothing new
    assert await zones.register("west", NEW)
    assert not await zones.register("west", NEW)
    assert not await zones.register("west")  # an install not known changes nothing
    current = await _current(event_log)
    assert isinstance(current, ZoneApplied)
    assert (current.install, current.refused_install) == (OLD, NEW)
    await zones.set_enabled("west", False)  # an operator's change keeps both
    current = await _current(event_log)
    assert isinstance(current, ZoneApplied) and not current.enabled
    assert (current.install, current.refused_install) == (OLD, NEW)
    await zones.delete("west", online=False)
    deleted = await _current(event_log)
    assert isinstance(deleted, ZoneDeleted) and deleted.install == OLD
    assert await zones.register("west", NEW)  # deleted first: still another install
    current = await _current(event_log)
    assert isinstance(current, ZoneApplied) and current.refused_install == NEW
    assert await zones.register("west", OLD)  # the old install's data dir restored
    current = await _current(event_log)
    assert isinstance(current, ZoneApplied)
    assert (current.install, current.refused_install) == (OLD, "")


async def test_a_zone_registered_by_an_earlier_release_takes_the_install_that_registers(
        event_log: JetStreamEventLog) -> None:
    zones = ZoneCommands(event_log)
    assert await zones.register("west")  # no install known (a release before)
    assert await zones.register("west", NEW)
    current = await _current(event_log)
    assert isinstance(current, ZoneApplied)
    assert (current.install, current.refused_install) == (NEW, "")
