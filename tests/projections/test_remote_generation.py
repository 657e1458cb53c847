"""Another zone's generated MeshService follows its zone's rules in every log
(projections.remote with projections.generation's `winner` and `orphaned`): the existing
ports win while one of its Dataplanes has them, and it outlives its last Dataplane by its own
zone's grace period (that zone's `GracePeriodConfigured`, synced with its subjects), in a
zone's log and on global, the same on replay."""

from __future__ import annotations

from collections.abc import Sequence

from events import (
    GLOBAL_ZONE,
    ClockTicked,
    DataplaneDeregistered,
    DataplaneRegistered,
    GracePeriodConfigured,
    Mesh,
    MeshApplied,
    MeshServiceApplied,
    MeshServiceDeleted,
    ZoneApplied,
    clock_subject,
    grace_period_subject,
    resource_subject,
)
from events.kds_hash import hashed_name
from projections.generation import DEFAULT_GRACE_PERIOD_MS
from projections.state import ProjectionState
from projections.views import MeshServiceRow
from tests.projections._histories import (
    Logged,
    dataplane,
    fold_logged,
    inbound,
    meshservice,
    meshservice_row,
    ms_port,
)

REDIS = hashed_name("default", "redis", "west")
MINUTE = 60_000


def _mesh() -> Logged:
    return resource_subject("Mesh", None, "default", zone=GLOBAL_ZONE), MeshApplied(
        at=1, mesh=Mesh(name="default"))


def _register(name: str, *ports: int, at: int, zone: str = "west") -> Logged:
    dp = dataplane("default", name, "10.2.0.1", *(inbound(p, "redis") for p in ports))
    return (resource_subject("Dataplane", "default", name, zone=zone),
            DataplaneRegistered(at=at, dataplane=dp))


def _deregister(name: str, *, at: int, zone: str = "west") -> Logged:
    return (resource_subject("Dataplane", "default", name, zone=zone),
            DataplaneDeregistered(at=at, mesh="default", name=name))


def _grace(ms: int, *, zone: str = "west", at: int = 1) -> Logged:
    return grace_period_subject("MeshService", zone), GracePeriodConfigured(
        at=at, grace_period_ms=ms)


def _tick(at: int, *, zone: str = "east") -> Logged:
    return clock_subject(at, zone), ClockTicked(at=at)


_fold = fold_logged


def _in(zone: str, logged: Sequence[Logged]) -> ProjectionState:
    return _fold(logged, ProjectionState(zone))


def _redis(state: ProjectionState) -> MeshServiceRow | None:
    """west's redis as `state`'s log shows it: under its own name in west, else synced."""
    return meshservice_row(state, "default", "redis" if state.local_zone == "west" else REDIS)


def _ports(state: ProjectionState) -> list[int]:
    row = _redis(state)
    assert row is not None
    return [p.port for p in row.spec.ports]


def test_a_remote_service_keeps_its_ports_when_a_newer_dataplane_has_others() -> None:
    logged = [_mesh(), _register("redis-1", 6379, at=2), _register("redis-2", 6379, at=3),
              _register("redis-1", 7000, at=4),  # the oldest one changes its ports
              _register("redis-3", 8000, at=5)]
    for zone in ("west", "east", ""):  # its own zone, another zone, global
        assert _ports(_in(zone, logged)) == [6379], zone
    # the last Dataplane with the existing ports goes: the oldest one's, everywhere
    logged.append(_deregister("redis-2", at=6))
    for zone in ("west", "east", ""):
        assert _ports(_in(zone, logged)) == [7000], zone


def test_a_remote_service_takes_the_oldest_dataplanes_ports_after_its_explicit_one_goes(
) -> None:
    explicit = meshservice("default", "redis", ms_port(9000))
    logged = [_mesh(), _register("redis-1", 6379, at=2), _register("redis-2", 7000, at=3),
              (resource_subject("MeshService", "default", "redis", zone="west"),
               MeshServiceApplied(at=4, meshservice=explicit))]
    assert _ports(_in("east", logged)) == [9000]
    logged.append((resource_subject("MeshService", "default", "redis", zone="west"),
                   MeshServiceDeleted(at=5, mesh="default", name="redis")))
    for zone in ("west", "east"):
        assert _ports(_in(zone, logged)) == [6379], zone


def test_a_remote_service_stays_for_its_zones_grace_period_then_goes() -> None:
    # east's own grace period (0) and global's (1 h) are not west's (5 min)
    logged = [_grace(5 * MINUTE), _grace(0, zone="east"), _grace(MINUTE, zone=GLOBAL_ZONE),
              _mesh(), _register("redis-1", 6379, at=2), _deregister("redis-1", at=10)]
    expiry = 10 + 5 * MINUTE
    for zone in ("west", "east", ""):
        state = _in(zone, logged)
        row = _redis(state)
        assert row is not None and row.expires_at == expiry, zone
        assert [c.type for c in row.status.conditions] == ["Expiring"], zone
        assert state.next_expiry() == expiry, zone  # its projector ticks for it
    # the log's next event at the expiry, whoever wrote it, removes it
    east = _in("east", [*logged, _tick(expiry - 1)])
    assert _redis(east) is not None
    east = _in("east", [*logged, _tick(expiry - 1), _tick(expiry)])
    assert _redis(east) is None
    assert _redis(_in("", [*logged, _register("web-1", 80, at=expiry, zone="north")])) is None


def test_without_a_setting_of_its_zone_the_default_grace_period_applies() -> None:
    state = _in("east", [_grace(0, zone="east"), _mesh(), _register("redis-1", 6379, at=2),
                         _deregister("redis-1", at=10)])
    row = _redis(state)
    assert row is not None and row.expires_at == 10 + DEFAULT_GRACE_PERIOD_MS


def test_a_zone_whose_grace_period_is_0_takes_its_remote_service_away_at_once() -> None:
    state = _in("east", [_grace(0), _mesh(), _register("redis-1", 6379, at=2),
                         _deregister("redis-1", at=10)])
    assert _redis(state) is None


def test_a_setting_applies_to_services_that_lose_their_last_dataplane_after_it() -> None:
    logged = [_grace(5 * MINUTE), _mesh(), _register("redis-1", 6379, at=2),
              _deregister("redis-1", at=10), _grace(MINUTE, at=11)]
    row = _redis(_in("east", logged))
    assert row is not None and row.expires_at == 10 + 5 * MINUTE


def test_a_dataplane_back_in_time_keeps_the_remote_service_and_its_vip() -> None:
    logged = [_grace(5 * MINUTE), _mesh(), _register("redis-1", 6379, at=2),
              _deregister("redis-1", at=10)]
    before = _redis(_in("east", logged))
    assert before is not None
    back = _in("east", [*logged, _register("redis-2", 6379, at=20)])
    row = _redis(back)
    assert row is not None and row.expires_at is None and back.next_expiry() is None
    assert row.status.vips == before.status.vips and row.status.conditions == []
    assert row.meta.creation_time == before.meta.creation_time


def test_a_disabled_zones_waiting_service_is_hidden_at_once() -> None:
    state = _in("east", [_grace(5 * MINUTE), _mesh(), _register("redis-1", 6379, at=2),
                         _deregister("redis-1", at=10),
                         (resource_subject("Zone", None, "west", zone=GLOBAL_ZONE),
                          ZoneApplied(at=11, name="west", enabled=False))])
    assert _redis(state) is None and state.next_expiry() is None


_HISTORY = [_grace(5 * MINUTE, at=1), _mesh(), _register("redis-1", 6379, at=2),
            _register("redis-2", 7000, 7001, at=3), _register("east-1", 80, at=4, zone="east"),
            _deregister("redis-1", at=5), _deregister("redis-2", at=6),
            _register("redis-3", 7000, at=7), _deregister("redis-3", at=8),
            _grace(MINUTE, at=9), _tick(8 + 5 * MINUTE - 1), _register("redis-4", 6379, at=10),
            _deregister("redis-4", at=11), _tick(11 + MINUTE)]


def test_replay_in_other_batches_or_after_a_restart_gives_the_same_rows() -> None:
    for zone in ("east", ""):
        whole = _in(zone, _HISTORY)
        stepwise = ProjectionState(zone)
        for seq, item in enumerate(_HISTORY, start=1):
            _fold([item], stepwise, first_seq=seq)
        assert list(stepwise.persisted()) == list(whole.persisted()), zone
        for cut in range(1, len(_HISTORY)):
            first = _in(zone, _HISTORY[:cut])
            resumed = ProjectionState.load(first.persisted(), local_zone=zone)
            _fold(_HISTORY[cut:], resumed, first_seq=cut + 1)
            assert list(resumed.persisted()) == list(whole.persisted()), (zone, cut)


def test_every_log_shows_the_spec_and_expiry_of_the_origin_at_each_step() -> None:
    for end in range(1, len(_HISTORY) + 1):
        origin = _redis(_in("west", _HISTORY[:end]))
        for zone in ("east", ""):
            seen = _redis(_in(zone, _HISTORY[:end]))
            assert (seen is None) == (origin is None), (zone, end)
            if seen is not None and origin is not None:
                assert (seen.spec.ports, seen.expires_at) == (
                    origin.spec.ports, origin.expires_at), (zone, end)
