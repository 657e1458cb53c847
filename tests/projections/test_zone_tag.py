"""The `kuma.io/zone` tag of a Dataplane's inbounds (projections._provenance.zone_tagged):
Kuma's zone control plane puts its zone there (a standalone one too, as `default`), over a
user's value, and global pins it to the zone the Dataplane came from. The fold takes it from
the event's provenance, so every log shows the same tags; selectors and certificates then see
it like any tag."""

from __future__ import annotations

from typing import Any

import msgspec

from events import (
    GLOBAL_ZONE,
    DataplaneRegistered,
    Mesh,
    MeshApplied,
    MeshServiceApplied,
    Provenance,
    resource_subject,
)
from events.kds_hash import hashed_name
from events.labels import ZONE_LABEL, without_computed
from projections.state import ProjectionState
from projections.views import DataplaneRow
from tests.projections._histories import (
    SERVICE_TAG,
    Logged,
    dataplane,
    endpoints_row,
    fold_logged,
    inbound,
    meshservice,
    meshservice_row,
    ms_port,
    persisted,
)


def _mesh() -> Logged:
    return resource_subject("Mesh", None, "default", zone=GLOBAL_ZONE), MeshApplied(
        at=1, mesh=Mesh(name="default"))


def _register(zone: str, name: str, *inbounds: dict[str, Any], at: int = 2) -> Logged:
    dp = dataplane("default", name, "10.0.0.1", *inbounds)
    return (resource_subject("Dataplane", "default", name, zone=zone),
            DataplaneRegistered(at=at, dataplane=dp))


def _tags(row: object) -> list[dict[str, str]]:
    assert isinstance(row, DataplaneRow), row
    return [dict(i.tags) for i in row.dataplane.networking.inbound]


INBOUNDS = (inbound(8080, "web", tags={ZONE_LABEL: "spoofed", "version": "v1"}),
            inbound(8081, "web"), {"port": 8082})
"""A user's zone tag, none, and an inbound without tags."""


def test_a_zones_dataplane_has_its_zone_on_every_inbound_with_tags() -> None:
    logged = [_mesh(), _register("east", "web-1", *INBOUNDS)]
    state = fold_logged(logged, ProjectionState("east"))
    assert _tags(persisted(state, "dataplane", "default/web-1")) == [
        {SERVICE_TAG: "web", ZONE_LABEL: "east", "version": "v1"},  # the user's is overwritten
        {SERVICE_TAG: "web", ZONE_LABEL: "east"},
        {}]  # no tags, none added (Kuma's meshServices mode Exclusive)
    _subject, event = logged[1]
    assert isinstance(event, DataplaneRegistered)  # the log keeps what was written
    assert event.dataplane.networking.inbound[1].tags == {SERVICE_TAG: "web"}


def test_a_standalone_control_planes_dataplane_is_tagged_default() -> None:
    """Kuma's zone name defaults to `default` and its zone CP tags whether federated or not."""
    state = fold_logged([(resource_subject("Mesh", None, "default"),
                          MeshApplied(at=1, mesh=Mesh(name="default"))),
                         _register("default", "web-1", inbound(8080, "web"))],
                        ProjectionState("default"))
    assert _tags(persisted(state, "dataplane", "default/web-1")) == [
        {SERVICE_TAG: "web", ZONE_LABEL: "default"}]


def test_every_log_shows_the_tag_of_the_zone_that_wrote_the_dataplane() -> None:
    """Global pins a synced Dataplane's tag to the zone it came from; another zone's log (and
    the projector's own zone) change nothing: the event's subject says who wrote it."""
    logged = [_mesh(), _register("west", "redis-1", inbound(6379, "redis",
                                                            tags={ZONE_LABEL: "east"}))]
    synced = f"default/{hashed_name('default', 'redis-1', 'west')}"
    own = _tags(persisted(fold_logged(logged, ProjectionState("west")), "dataplane",
                          "default/redis-1"))
    on_global = _tags(persisted(fold_logged(logged, ProjectionState("")), "remotedataplane",
                                synced))
    in_east = _tags(persisted(fold_logged(logged, ProjectionState("east")), "remotedataplane",
                              synced))
    assert own == on_global == in_east == [{SERVICE_TAG: "redis", ZONE_LABEL: "west"}]


def test_a_dataplane_of_global_gets_no_zone_tag() -> None:
    """Global registers no Dataplane (its API refuses one); should an event of global hold
    one, global has no zone to put there."""
    state = fold_logged([_mesh(), _register(GLOBAL_ZONE, "web-1", inbound(8080, "web"))],
                        ProjectionState(""))
    assert _tags(persisted(state, "dataplane", "default/web-1")) == [{SERVICE_TAG: "web"}]


def test_a_meshservice_selecting_the_zone_tag_selects_the_zones_dataplanes() -> None:
    here = meshservice("default", "web-east", ms_port(8080),
                       selector={SERVICE_TAG: "web", ZONE_LABEL: "east"})
    there = meshservice("default", "web-west", ms_port(8080),
                        selector={SERVICE_TAG: "web", ZONE_LABEL: "west"})
    state = fold_logged([
        _mesh(), _register("east", "web-1", inbound(8080, "web")),
        *[(resource_subject("MeshService", "default", ms.name, zone="east"),
           MeshServiceApplied(at=3, meshservice=ms)) for ms in (here, there)]],
        ProjectionState("east"))
    selected = endpoints_row(state, "default", "web-east")
    assert selected is not None
    assert [e.address for p in selected.ports for e in p.endpoints] == ["10.0.0.1"]
    unselected = endpoints_row(state, "default", "web-west")
    assert unselected is not None and [e for p in unselected.ports for e in p.endpoints] == []


def test_another_zones_meshservice_selecting_its_zone_tag_is_available() -> None:
    """West's explicit MeshService selecting `kuma.io/zone: west` serves from west's
    Dataplanes in every log, as in west (Kuma's global shows it Available too)."""
    ms = meshservice("default", "cache", ms_port(7000),
                     selector={SERVICE_TAG: "cache", ZONE_LABEL: "west"})
    logged = [_mesh(), (resource_subject("MeshService", "default", "cache", zone="west"),
                        MeshServiceApplied(at=2, meshservice=ms)),
              _register("west", "cache-1", inbound(7000, "cache"), at=3)]
    for local_zone in ("", "east"):
        row = meshservice_row(fold_logged(logged, ProjectionState(local_zone)), "default",
                              hashed_name("default", "cache", "west"))
        assert row is not None and row.spec.state == "Available", local_zone
        assert row.status.dataplane_proxies.total == 1, local_zone
    own = meshservice_row(fold_logged(logged, ProjectionState("west")), "default", "cache")
    assert own is not None and own.status.dataplane_proxies.total == 1


def test_the_command_path_stores_a_zones_dataplane_without_the_tag_the_fold_pins() -> None:
    dp = dataplane("default", "web-1", "10.0.0.1", *INBOUNDS,
                   inbound(8083, "web", tags={ZONE_LABEL: "east"}))
    east = without_computed(dp, Provenance(zone="east", origin="zone"))
    assert [i.tags for i in east.networking.inbound] == [
        {SERVICE_TAG: "web", "version": "v1"}, {SERVICE_TAG: "web"}, {}, {SERVICE_TAG: "web"}]
    # global pins nothing of its own: a tag there is the user's (the API refuses the write)
    assert without_computed(dp, Provenance(zone="", origin="global")) == dp
    # a GET's Dataplane applied back is the stored one (`unchanged`)
    tagged = msgspec.structs.replace(dp, networking=msgspec.structs.replace(
        dp.networking, inbound=[msgspec.structs.replace(i, tags={**i.tags, ZONE_LABEL: "east"})
                                if i.tags else i for i in dp.networking.inbound]))
    assert without_computed(tagged, Provenance(zone="east", origin="zone")) == east
