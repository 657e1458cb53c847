"""The fold labels what it folds with the zone and origin of the event's own subject, never
with the zone its projector runs in (DESIGN.md, Multi-zone); an event whose subject has no
provenance is quarantined, like an undecodable one (invariant 10)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import msgspec
import pytest
from nats.aio.client import Client as NATS

from events import (
    GLOBAL_ZONE,
    AnyEvent,
    DataplaneRegistered,
    HostnameGeneratorApplied,
    HostnameGeneratorDeleted,
    JetStreamEventLog,
    Mesh,
    MeshApplied,
    MeshServiceApplied,
    encode_event,
    provenance_of,
    resource_subject,
)
from events.kds_hash import hashed_name
from projections import Projector, ProjectorHalted, decode_row, open_store
from projections.derive import derive_stale
from projections.fold import apply_event
from projections.state import ProjectionState
from projections.views import (
    DataplaneRow,
    EndpointsRow,
    HostnameGeneratorRow,
    MeshServiceRow,
    QuarantinedEvent,
)
from tests.projections._histories import (
    dataplane,
    endpoints_row,
    generator,
    inbound,
    meshservice,
    meshservice_row,
    ms_port,
    persisted,
)

DEFAULT_GENERATOR = "local-universal-mesh-service"
Logged = tuple[str, AnyEvent]  # (subject, event)


def _mesh(zone: str = "default") -> Logged:
    return resource_subject("Mesh", None, "default", zone=zone), MeshApplied(
        at=1, mesh=Mesh(name="default"))


def _register(zone: str, name: str, address: str, service: str = "web", at: int = 2) -> Logged:
    dp = dataplane("default", name, address, inbound(80, service))
    return (resource_subject("Dataplane", "default", name, zone=zone),
            DataplaneRegistered(at=at, dataplane=dp))


def _fold(logged: Sequence[Logged], state: ProjectionState | None = None, *,
          first_seq: int = 1) -> ProjectionState:
    """Fold one batch as the projector does: each event with the provenance of its subject."""
    state = ProjectionState() if state is None else state
    for seq, (subject, event) in enumerate(logged, start=first_seq):
        apply_event(state, seq, event, provenance_of(subject))
    derive_stale(state)
    state.take_changes()
    return state


def _labels(row: object) -> dict[str, str]:
    assert isinstance(row, DataplaneRow | MeshServiceRow | HostnameGeneratorRow)
    if isinstance(row, DataplaneRow):
        return row.dataplane.labels
    if isinstance(row, HostnameGeneratorRow):
        return row.generator.labels
    return row.labels


async def _append(log: JetStreamEventLog, logged: Sequence[Logged]) -> None:
    for subject, event in logged:
        await log.append(subject, event, expected_last_subject_seq=0, msg_id=subject)


async def test_a_dataplane_on_another_zones_subject_folds_with_that_zone(
        event_log: JetStreamEventLog, tmp_path: Path) -> None:
    await _append(event_log, [_mesh(), _register("east", "web-1", "10.1.0.1"),
                              _register("default", "api-1", "10.0.0.1", service="api")])
    store = await open_store(f"sqlite:///{tmp_path / 'read.db'}")
    try:
        # the projector of zone east: east's Dataplane is local, zone default's remote
        await Projector(event_log, store, None, zone="east").run(until_seq=3)

        async def row(collection: str, key: str) -> object:
            body = await store.get(collection, key)
            assert body is not None, f"{collection}/{key} is missing"
            return decode_row(collection, body)

        dp = await row("dataplane", "default/web-1")
        ms = await row("meshservice", "default/web")
        endpoints = await row("endpoints", "default/web")
        remote = await row("meshservice", f"default/{hashed_name('default', 'api', 'default')}")
    finally:
        await store.close()
    assert {k: _labels(dp)[k] for k in ("kuma.io/zone", "kuma.io/origin")} == {
        "kuma.io/zone": "east", "kuma.io/origin": "zone"}
    assert _labels(ms)["kuma.io/zone"] == "east"
    assert isinstance(endpoints, EndpointsRow) and endpoints.zone == "east"
    assert [e.address for p in endpoints.ports for e in p.endpoints] == ["10.1.0.1"]
    assert _labels(remote)["kuma.io/zone"] == "default"


async def test_an_event_on_a_malformed_subject_is_quarantined_not_a_crash(
        nc: NATS, event_log: JetStreamEventLog, tmp_path: Path) -> None:
    await _append(event_log, [_mesh()])
    bad = "meshlog.ev.default.mesh.other"  # five tokens: no <name>
    await nc.jetstream().publish(bad, encode_event(MeshApplied(at=2, mesh=Mesh(name="other"))),
                                 headers={"Meshlog-Schema": "1"})
    store = await open_store(f"sqlite:///{tmp_path / 'read.db'}")
    try:
        with pytest.raises(ProjectorHalted, match=bad):
            await Projector(event_log, store, None, zone="default").run(until_seq=2)
        assert await store.checkpoint() == 1
        [(_, body)] = await store.scan("quarantine")
    finally:
        await store.close()
    quarantined = msgspec.json.decode(body, type=QuarantinedEvent)
    assert quarantined.seq == 2 and quarantined.subject == bad
    assert repr(bad) in quarantined.reason


def test_a_meshservice_from_another_zone_has_the_endpoints_of_its_zone() -> None:
    ms = meshservice("default", "web", ms_port(80))
    state = _fold([_mesh(), _register("default", "web-1", "10.0.0.1"),
                   (resource_subject("MeshService", "default", "web", zone="west"),
                    MeshServiceApplied(at=3, meshservice=ms))])
    name = hashed_name("default", "web", "west")
    row = meshservice_row(state, "default", name)
    endpoints = endpoints_row(state, "default", name)
    assert row is not None and row.labels["kuma.io/zone"] == "west"
    assert endpoints is not None and endpoints.zone == "west"
    # the local Dataplane of the same service is not an endpoint of the remote MeshService
    assert [e for p in endpoints.ports for e in p.endpoints] == []


def test_a_resource_from_the_global_control_plane_has_origin_global_and_no_zone() -> None:
    hg = generator("synced-universal-mesh-service", "{{ .DisplayName }}.svc.{{ .Zone }}.mesh.local",
                   {"kuma.io/origin": "zone"})
    state = _fold([_mesh(GLOBAL_ZONE),
                   (resource_subject("HostnameGenerator", None, hg.name, zone=GLOBAL_ZONE),
                    HostnameGeneratorApplied(at=2, hostname_generator=hg)),
                   _register("east", "web-1", "10.1.0.1", at=3)], ProjectionState("east"))
    labels = _labels(persisted(state, "hostnamegenerator", hg.name))
    assert labels["kuma.io/origin"] == "global"
    assert "kuma.io/zone" not in labels and "kuma.io/env" not in labels
    row = meshservice_row(state, "default", "web")
    assert row is not None
    assert "web.svc.east.mesh.local" in [a.hostname for a in row.status.addresses]


def test_the_default_generators_belong_to_the_control_plane_of_the_log() -> None:
    state = _fold([_mesh(GLOBAL_ZONE)], ProjectionState("east"))
    assert _labels(persisted(state, "hostnamegenerator", DEFAULT_GENERATOR))[
        "kuma.io/zone"] == "east"
    override = generator(DEFAULT_GENERATOR, "{{ .DisplayName }}.mesh")
    _fold([(resource_subject("HostnameGenerator", None, DEFAULT_GENERATOR, zone="east"),
            HostnameGeneratorApplied(at=2, hostname_generator=override)),
           (resource_subject("HostnameGenerator", None, DEFAULT_GENERATOR, zone=GLOBAL_ZONE),
            HostnameGeneratorDeleted(at=3, name=DEFAULT_GENERATOR))], state, first_seq=2)
    restored = persisted(state, "hostnamegenerator", DEFAULT_GENERATOR)
    assert isinstance(restored, HostnameGeneratorRow) and restored.origin == "default"
    assert restored.generator.labels["kuma.io/origin"] == "zone"
    assert restored.generator.labels["kuma.io/zone"] == "east"


def test_globals_mesh_has_origin_global_on_global_and_in_every_zone() -> None:
    """Kuma's global-to-zone sync labels the Mesh `kuma.io/origin: global` in zones; global's
    own resources carry that origin too. No zone or env: a Mesh is no zone's."""
    mesh = Mesh(name="default", labels={"team": "core", "kuma.io/origin": "zone"})
    logged = [(resource_subject("Mesh", None, "default", zone=GLOBAL_ZONE),
               MeshApplied(at=1, mesh=mesh))]
    for local_zone in ("", "east"):
        row = persisted(_fold(logged, ProjectionState(local_zone)), "mesh", "default")
        assert row.mesh.labels == {"team": "core", "kuma.io/origin": "global"}, local_zone


def test_a_standalone_mesh_has_no_provenance_labels() -> None:
    """A standalone control plane's Mesh is as applied: Kuma's ComputeLabels gives no origin,
    zone or env to a kind a zone cannot create."""
    row = persisted(_fold([_mesh()]), "mesh", "default")
    assert row.mesh.labels == {}
