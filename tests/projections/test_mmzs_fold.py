"""MeshMultiZoneServices in each control plane's fold: a VIP from 243/8, a hostname from
`synced-mesh-multi-zone-service`, Kuma's status (`meshServices`, `MeshServicesMatched`) and the
backends a gateway serves them from (local at priority 0, available remote ones at 1), derived
as events arrive whatever the batches, restarts or replays (invariant 4).

Events here come from several control planes: each is folded with its own provenance (the
zone that wrote it), into the state of zone `east`. Local and remote MeshServices have
different names until synced names land (a remote `redis` would collide with east's)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events import (
    AnyEvent,
    DataplaneRegistered,
    HostnameGeneratorApplied,
    HostnameGeneratorDeleted,
    IpamConfigured,
    MeshApplied,
    MeshMultiZoneServiceApplied,
    MeshMultiZoneServiceDeleted,
    MeshServiceApplied,
    MeshServiceDeleted,
    Provenance,
    decode_event,
    decode_resource,
    encode_event,
)
from events.kds_hash import hashed_name
from events.resources import Mesh, MeshService
from projections.derive import derive_stale
from projections.fold import apply_event
from projections.state import ProjectionState
from projections.views import (
    MatchedMeshService,
    MeshMultiZoneServiceRow,
    MeshServiceRow,
    MzsBackend,
    decode_row,
)
from tests.projections._histories import (
    SECRET_KEY,
    dataplane,
    generator,
    inbound,
    multizone_service,
)

REDIS_WEST = hashed_name("default", "redis", "west")
"""West's `redis` under its synced name (Kuma's), as every other control plane shows it."""
EAST = Provenance(zone="east", origin="zone")
WEST = Provenance(zone="west", origin="zone")
NORTH = Provenance(zone="north", origin="zone")
GLOBAL = Provenance(zone="", origin="global")
Step = tuple[AnyEvent, Provenance]


class Log:
    """Events of several control planes, as a zone's log holds them (its own and sourced)."""

    def __init__(self) -> None:
        self.steps: list[Step] = []
        self._at = 1_700_000_000_000

    def add(self, event_of: Any, provenance: Provenance, **fields: Any) -> Log:
        self._at += 1000
        self.steps.append((event_of(at=self._at, **fields), provenance))
        return self

    def mesh(self, name: str = "default") -> Log:
        mesh = decode_resource({"type": "Mesh", "name": name})
        assert isinstance(mesh, Mesh)
        return self.add(MeshApplied, GLOBAL, mesh=mesh)

    def service(self, name: str, provenance: Provenance, *, labels: dict[str, str],
                state: str | None = None, port: int = 6379, mesh: str = "default") -> Log:
        """A MeshService `name` written by `provenance`'s zone. `state`: for another zone's,
        whether a Dataplane of that zone it selects is healthy (Available), or not
        (Unavailable): its zone's Dataplanes are what `spec.state` is folded from."""
        spec: dict[str, Any] = {"selector": {"dataplaneTags": {"kuma.io/service": name}},
                                "ports": [{"port": port}]}
        ms = decode_resource({"type": "MeshService", "mesh": mesh, "name": name,
                              "labels": labels, "spec": spec})
        assert isinstance(ms, MeshService)
        self.add(MeshServiceApplied, provenance, meshservice=ms)
        if state is not None:
            self.add(DataplaneRegistered, provenance, dataplane=dataplane(
                mesh, f"{name}-{provenance.zone}-1", "10.0.0.9",
                inbound(port, name, ready=state == "Available")))
        return self

    def mmzs(self, name: str = "redis", match: dict[str, str] | None = None, *ports: int,
             labels: dict[str, str] | None = None, provenance: Provenance = GLOBAL) -> Log:
        return self.add(MeshMultiZoneServiceApplied, provenance,
                        meshmultizoneservice=multizone_service(
                            "default", name, match or {"app": "redis"}, *ports,
                            labels=labels))


def fold(batches: Sequence[Sequence[Step]], *, state: ProjectionState | None = None,
         first_seq: int = 1, local_zone: str = "east") -> ProjectionState:
    state = state or ProjectionState.load([], secret_key=SECRET_KEY, local_zone=local_zone)
    seq = first_seq
    for batch in batches:
        for event, provenance in batch:
            apply_event(state, seq, decode_event(encode_event(event), seq=seq, subject="t"),
                        provenance)
            seq += 1
        derive_stale(state)
        state.take_changes()
    return state


def rows(state: ProjectionState) -> list[tuple[str, str, bytes]]:
    return list(state.persisted())


def mmzs_row(state: ProjectionState, name: str = "redis") -> MeshMultiZoneServiceRow:
    for collection, key, body in state.persisted():
        if (collection, key) == ("meshmultizoneservice", f"default/{name}"):
            row = decode_row(collection, body)
            assert isinstance(row, MeshMultiZoneServiceRow)
            return row
    raise AssertionError(f"no MeshMultiZoneService {name}")


def _redis_everywhere(west_state: str | None = "Available") -> Log:
    """east's own redis (from a Dataplane of east), west's (synced, Available) and north's."""
    log = Log().mesh()
    log.service("redis", EAST, labels={"app": "redis"})
    log.service("redis", WEST, labels={"app": "redis"}, state=west_state)
    log.service("redis", NORTH, labels={"app": "redis"}, state="Unavailable")
    log.service("cache", EAST, labels={"app": "cache"})
    return log.mmzs()


# --- one MeshMultiZoneService -----------------------------------------------------------------


def test_it_gets_a_vip_from_243_and_a_mzsvc_hostname() -> None:
    row = mmzs_row(fold([Log().mesh().mmzs().steps]))

    assert [v.ip for v in row.status.vips] == ["243.0.0.1"]
    assert [a.hostname for a in row.status.addresses] == ["redis.mzsvc.mesh.local"]
    [generated] = row.status.hostname_generators
    assert generated.hostname_generator_ref.core_name == "synced-mesh-multi-zone-service"
    assert [(c.status, c.reason) for c in generated.conditions] == [("True", "Generated")]


def test_its_labels_say_it_came_from_global() -> None:
    row = mmzs_row(fold([Log().mesh().mmzs(labels={"team": "db"}).steps]))

    assert row.labels == {"kuma.io/display-name": "redis", "team": "db",
                          "kuma.io/mesh": "default", "kuma.io/origin": "global"}


def test_nothing_matched_is_a_false_condition() -> None:
    row = mmzs_row(fold([Log().mesh().mmzs().steps]))

    assert row.status.mesh_services == [] and row.backends == []
    assert [(c.type, c.status, c.reason, c.message) for c in row.status.conditions] == [
        ("MeshServicesMatched", "False", "NoMatchesFound",
         "Selector does not match any MeshService in this zone")]


def test_status_lists_every_match_and_backends_are_local_first_then_available_remote() -> None:
    row = mmzs_row(fold([_redis_everywhere().steps]))

    assert row.status.mesh_services == [  # sorted by name, namespace, zone, mesh
        MatchedMeshService(name="redis", namespace="", zone="east", mesh="default"),
        MatchedMeshService(name="redis", namespace="", zone="north", mesh="default"),
        MatchedMeshService(name="redis", namespace="", zone="west", mesh="default")]
    assert [(c.type, c.status, c.reason, c.message) for c in row.status.conditions] == [
        ("MeshServicesMatched", "True", "MatchesFound", "Matched 3 MeshService(s)")]
    # north's is not Available: listed, but it serves nothing
    assert row.backends == [MzsBackend(name="redis", zone="east", priority=0),
                            MzsBackend(name=REDIS_WEST, zone="west", priority=1)]


def test_a_remote_service_serves_once_its_state_becomes_available() -> None:
    log = _redis_everywhere(west_state="Unavailable")
    state = fold([log.steps])
    before = mmzs_row(state).backends
    log.add(DataplaneRegistered, WEST, dataplane=dataplane(
        "default", "redis-west-1", "10.0.0.9", inbound(6379, "redis", ready=True)))
    after = fold([log.steps[-1:]], state=state, first_seq=len(log.steps))

    assert [b.name for b in before] == ["redis"]
    assert [b.name for b in mmzs_row(after).backends] == ["redis", REDIS_WEST]


def test_a_meshservice_that_loses_the_label_or_goes_leaves_the_status() -> None:
    log = _redis_everywhere()
    state = fold([log.steps])
    log.service("redis", WEST, labels={"app": "other"})
    log.add(MeshServiceDeleted, NORTH, mesh="default", name="redis")

    row = mmzs_row(fold([log.steps[-2:-1], log.steps[-1:]], state=state,
                        first_seq=len(log.steps) - 1))

    assert [(m.name, m.zone) for m in row.status.mesh_services] == [("redis", "east")]
    assert [b.name for b in row.backends] == ["redis"]


def test_the_global_control_plane_has_no_local_services() -> None:
    """On global (local zone ""), every zone's MeshService is remote: east's, which no
    Dataplane of east serves, is not Available there, and west's is a remote backend."""
    row = mmzs_row(fold([_redis_everywhere().steps], local_zone=""))

    assert len(row.status.mesh_services) == 3
    assert [(b.name, b.priority) for b in row.backends] == [(REDIS_WEST, 1)]


def test_a_generated_meshservice_of_this_zone_is_matched_by_its_display_name() -> None:
    log = Log().mesh()
    log.add(DataplaneRegistered, EAST,
            dataplane=dataplane("default", "redis-1", "10.0.0.1", inbound(6379, "redis")))
    row = mmzs_row(fold([log.mmzs("redis", {"kuma.io/display-name": "redis"}).steps]))

    assert row.status.mesh_services == [
        MatchedMeshService(name="redis", namespace="", zone="east", mesh="default")]
    assert row.backends == [MzsBackend(name="redis", zone="east", priority=0)]


# --- VIPs and hostnames ----------------------------------------------------------------------


def test_the_vip_is_sticky_across_delete_and_recreate() -> None:
    log = Log().mesh().mmzs("redis").mmzs("cache")
    log.add(MeshMultiZoneServiceDeleted, GLOBAL, mesh="default", name="redis")
    log.mmzs("other").mmzs("redis")

    state = fold([log.steps])

    assert mmzs_row(state, "redis").status.vips[0].ip == "243.0.0.1"
    assert mmzs_row(state, "cache").status.vips[0].ip == "243.0.0.2"
    assert mmzs_row(state, "other").status.vips[0].ip == "243.0.0.3"


def test_the_cidr_comes_from_the_log_and_exhaustion_is_a_condition_until_widened() -> None:
    log = Log().mesh()
    log.add(IpamConfigured, EAST, kind="MeshMultiZoneService", cidr="10.43.0.0/30")
    log.mmzs("a").mmzs("b").mmzs("c")
    exhausted = fold([log.steps])
    log.add(IpamConfigured, EAST, kind="MeshMultiZoneService", cidr="10.44.0.0/24")
    widened = fold([log.steps])

    assert [v.ip for v in mmzs_row(exhausted, "a").status.vips] == ["10.43.0.1"]
    assert mmzs_row(exhausted, "c").status.vips == []
    assert ("VIPAllocated", "False", "Exhausted") in [
        (c.type, c.status, c.reason) for c in mmzs_row(exhausted, "c").status.conditions]
    assert [v.ip for v in mmzs_row(widened, "c").status.vips] == ["10.44.0.1"]
    assert [c.type for c in mmzs_row(widened, "c").status.conditions] == [
        "MeshServicesMatched"]


def test_two_with_one_display_name_collide_and_the_older_keeps_the_hostname() -> None:
    log = Log().mesh().mmzs("a", labels={"kuma.io/display-name": "redis"})
    log.mmzs("b", labels={"kuma.io/display-name": "redis"})
    state = fold([log.steps])

    assert [a.hostname for a in mmzs_row(state, "a").status.addresses] == [
        "redis.mzsvc.mesh.local"]
    [status] = mmzs_row(state, "b").status.hostname_generators
    assert [(c.reason, c.message) for c in status.conditions] == [
        ("Collision", "redis.mzsvc.mesh.local is already used by MeshMultiZoneService a")]
    log.add(MeshMultiZoneServiceDeleted, GLOBAL, mesh="default", name="a")
    assert [a.hostname for a in mmzs_row(fold([log.steps]), "b").status.addresses] == [
        "redis.mzsvc.mesh.local"]


def test_overriding_the_default_generator_renames_and_deleting_it_restores() -> None:
    log = Log().mesh().mmzs()
    override = generator("synced-mesh-multi-zone-service", "{{ .DisplayName }}.global.mesh")
    override = msgspec.structs.replace(override, spec=msgspec.structs.replace(
        override.spec, selector=msgspec.convert(
            {"meshMultiZoneService": {"matchLabels": {}}},
            type(override.spec.selector))))
    log.add(HostnameGeneratorApplied, GLOBAL, hostname_generator=override)
    overridden = fold([log.steps])
    log.add(HostnameGeneratorDeleted, GLOBAL, name="synced-mesh-multi-zone-service")

    assert [a.hostname for a in mmzs_row(overridden).status.addresses] == [
        "redis.global.mesh"]
    assert [a.hostname for a in mmzs_row(fold([log.steps])).status.addresses] == [
        "redis.mzsvc.mesh.local"]


def test_meshservice_generators_do_not_name_it_and_its_do_not_name_meshservices() -> None:
    state = fold([_redis_everywhere().steps])

    assert [g.hostname_generator_ref.core_name
            for g in mmzs_row(state).status.hostname_generators] == [
        "synced-mesh-multi-zone-service"]
    for collection, _, body in state.persisted():
        if collection == "meshservice":
            row = decode_row(collection, body)
            assert isinstance(row, MeshServiceRow)
            assert all(not a.hostname.endswith(".mzsvc.mesh.local")
                       for a in row.status.addresses)


def test_a_store_of_a_release_without_the_default_gets_it_as_a_replay_does() -> None:
    """A standalone control plane's store (its defaults take the provenance of the event that
    restores them: docs/status.md)."""
    log = Log()
    log.add(MeshApplied, EAST, mesh=decode_resource({"type": "Mesh", "name": "default"}))
    log.service("redis", EAST, labels={"app": "redis"})
    log.service("cache", EAST, labels={"app": "cache"})
    log.mmzs(provenance=EAST)
    cut = 2
    old = fold([log.steps[:cut]])
    # what a release without `synced-mesh-multi-zone-service` persisted
    old_rows = [r for r in rows(old) if r[:2] != ("hostnamegenerator",
                                                  "synced-mesh-multi-zone-service")]
    resumed = fold([log.steps[cut:]], first_seq=cut + 1, state=ProjectionState.load(
        old_rows, secret_key=SECRET_KEY, local_zone="east"))

    assert rows(resumed) == rows(fold([log.steps]))


# --- determinism (invariant 4) ---------------------------------------------------------------

_ZONES = (EAST, WEST, NORTH)


@st.composite
def _logs(draw: st.DrawFn) -> list[Step]:
    log = Log().mesh()
    for _ in range(draw(st.integers(1, 25))):
        match draw(st.sampled_from(("ms", "ms", "ms", "delete-ms", "mmzs", "mmzs",
                                    "delete-mmzs", "ipam", "generator", "delete-generator",
                                    "dataplane"))):
            case "ms":
                provenance = draw(st.sampled_from(_ZONES))
                name = draw(st.sampled_from(("redis", "db"))) + (
                    "" if provenance is EAST else f"-{provenance.zone}")
                labels = {"app": draw(st.sampled_from(("redis", "db")))}
                if draw(st.booleans()):
                    labels["kuma.io/display-name"] = "redis"
                log.service(name, provenance, labels=labels,
                            state=draw(st.sampled_from((None, "Available", "Unavailable"))),
                            port=draw(st.sampled_from((6379, 6380))))
            case "delete-ms":
                log.add(MeshServiceDeleted, draw(st.sampled_from(_ZONES)), mesh="default",
                        name=draw(st.sampled_from(("redis", "redis-west", "db-north"))))
            case "mmzs":
                log.mmzs(draw(st.sampled_from(("redis", "all", "x"))),
                         draw(st.sampled_from(({"app": "redis"}, {"app": "db"},
                                               {"kuma.io/display-name": "redis"}))),
                         draw(st.sampled_from((6379, 6380))),
                         labels=draw(st.sampled_from((None, {"kuma.io/display-name": "y"}))))
            case "delete-mmzs":
                log.add(MeshMultiZoneServiceDeleted, GLOBAL, mesh="default",
                        name=draw(st.sampled_from(("redis", "all", "x"))))
            case "ipam":
                log.add(IpamConfigured, EAST, kind="MeshMultiZoneService",
                        cidr=draw(st.sampled_from(("10.43.0.0/30", "243.0.0.0/8"))))
            case "generator":
                raw = {"type": "HostnameGenerator", "name": draw(st.sampled_from((
                    "synced-mesh-multi-zone-service", "g"))),
                       "spec": {"template": draw(st.sampled_from((
                           "{{ .DisplayName }}.a", "same.b", '{{ label "team" }}.c'))),
                                "selector": {"meshMultiZoneService": {"matchLabels": {}}}}}
                log.add(HostnameGeneratorApplied, GLOBAL,
                        hostname_generator=decode_resource(raw))
            case "delete-generator":
                log.add(HostnameGeneratorDeleted, GLOBAL, name=draw(st.sampled_from((
                    "synced-mesh-multi-zone-service", "g"))))
            case _:
                log.add(DataplaneRegistered, EAST,
                        dataplane=dataplane("default", "redis-1", "10.0.0.1",
                                            inbound(6379, draw(st.sampled_from(
                                                ("redis", "db"))))))
    return log.steps


@settings(max_examples=60, deadline=None)
@given(_logs(), st.data())
def test_random_logs_give_identical_rows_whatever_the_batches_and_restarts(
        steps: list[Step], data: st.DataObject) -> None:
    expected = rows(fold([steps]))
    assert rows(fold([[step] for step in steps])) == expected
    sizes = data.draw(st.lists(st.integers(1, 5), max_size=len(steps)), label="batch sizes")
    restarts = data.draw(st.sets(st.integers(0, len(steps))), label="restart before batch")
    state: ProjectionState | None = None
    seq, start = 1, 0
    batches = []
    for size in sizes:
        batches.append(steps[start:start + size])
        start += size
    if start < len(steps):
        batches.append(steps[start:])
    for i, batch in enumerate(b for b in batches if b):
        if state is not None and i in restarts:
            state = ProjectionState.load(rows(state), secret_key=SECRET_KEY, local_zone="east")
        state = fold([batch], state=state, first_seq=seq)
        seq += len(batch)
    assert state is not None
    assert rows(state) == expected


@pytest.mark.parametrize("per_batch", [1, 2, 3])
def test_the_example_log_gives_identical_rows_in_any_batches(per_batch: int) -> None:
    steps = _redis_everywhere().steps
    batches = [steps[i:i + per_batch] for i in range(0, len(steps), per_batch)]
    assert rows(fold(batches)) == rows(fold([steps]))
