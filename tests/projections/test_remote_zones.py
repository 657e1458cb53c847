"""Other zones' resources in a log (projections.remote): Kuma's synced names, labels, VIPs from
the zone's own CIDR, hostnames from the synced generator, availability in `spec.state`, no
local endpoints; zones disabled and deleted; replay gives the same rows."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import msgspec

from events import (
    GLOBAL_ZONE,
    DataplaneDeregistered,
    DataplaneRegistered,
    HostnameGeneratorApplied,
    IpamConfigured,
    Mesh,
    MeshApplied,
    MeshServiceApplied,
    ZoneApplied,
    ZoneDeleted,
    ZoneIngress,
    ZoneIngressRegistered,
    decode_resource,
    ipam_subject,
    resource_subject,
)
from events.kds_hash import hashed_name
from projections.state import ProjectionState
from tests.projections._histories import (
    Logged,
    dataplane,
    endpoints_row,
    fold_logged,
    generator,
    inbound,
    meshservice,
    meshservice_row,
    ms_port,
    persisted,
)

SYNCED = generator("synced-universal-mesh-service",
                   "{{ .DisplayName }}.svc.{{ .Zone }}.mesh.local",
                   {"kuma.io/origin": "global", "kuma.io/env": "universal"})


def _mesh() -> Logged:
    return resource_subject("Mesh", None, "default", zone=GLOBAL_ZONE), MeshApplied(
        at=1, mesh=Mesh(name="default"))


def _synced_generator() -> Logged:
    return (resource_subject("HostnameGenerator", None, SYNCED.name, zone=GLOBAL_ZONE),
            HostnameGeneratorApplied(at=1, hostname_generator=SYNCED))


def _register(zone: str, name: str, address: str, service: str = "redis", *, at: int = 2,
              ready: bool | None = None) -> Logged:
    dp = dataplane("default", name, address, inbound(6379, service, ready=ready))
    return (resource_subject("Dataplane", "default", name, zone=zone),
            DataplaneRegistered(at=at, dataplane=dp))


def _zone(name: str, *, enabled: bool = True, at: int = 3) -> Logged:
    return (resource_subject("Zone", None, name, zone=GLOBAL_ZONE),
            ZoneApplied(at=at, name=name, enabled=enabled))


_fold = fold_logged


def _east(logged: Sequence[Logged]) -> ProjectionState:
    return _fold(logged, ProjectionState("east"))


def test_a_dataplane_of_west_yields_in_east_a_meshservice_with_kumas_synced_name() -> None:
    state = _east([_mesh(), _synced_generator(), _register("west", "redis-1", "10.2.0.1")])
    name = hashed_name("default", "redis", "west")
    row = meshservice_row(state, "default", name)
    assert row is not None and row.origin == "generated"
    assert {k: row.labels[k] for k in ("kuma.io/origin", "kuma.io/zone", "kuma.io/display-name",
                                       "kuma.io/env")} == {
        "kuma.io/origin": "global", "kuma.io/zone": "west", "kuma.io/display-name": "redis",
        "kuma.io/env": "universal"}
    assert [p.port for p in row.spec.ports] == [6379]
    assert meshservice_row(state, "default", "redis") is None


def test_a_remote_meshservice_gets_a_vip_of_the_zones_cidr_and_the_synced_hostname() -> None:
    state = _east([(ipam_subject("MeshService", zone="east"),
                    IpamConfigured(at=1, kind="MeshService", cidr="241.7.0.0/16")),
                   _mesh(), _synced_generator(), _register("west", "redis-1", "10.2.0.1")])
    row = meshservice_row(state, "default", hashed_name("default", "redis", "west"))
    assert row is not None
    [vip] = row.status.vips
    assert ipaddress.ip_address(vip.ip) in ipaddress.ip_network("241.7.0.0/16")
    assert [a.hostname for a in row.status.addresses] == ["redis.svc.west.mesh.local"]


def test_another_zones_ipam_setting_does_not_change_this_zones_cidr() -> None:
    state = _east([(ipam_subject("MeshService", zone="west"),
                    IpamConfigured(at=1, kind="MeshService", cidr="251.0.0.0/8")),
                   (ipam_subject("MeshService", zone=GLOBAL_ZONE),
                    IpamConfigured(at=1, kind="MeshService", cidr="252.0.0.0/8")),
                   _mesh(), _register("west", "redis-1", "10.2.0.1")])
    row = meshservice_row(state, "default", hashed_name("default", "redis", "west"))
    assert row is not None
    assert ipaddress.ip_address(row.status.vips[0].ip) in ipaddress.ip_network("241.0.0.0/8")


def test_remote_dataplanes_never_become_local_endpoints_or_dataplanes() -> None:
    state = _east([_mesh(), _register("east", "redis-1", "10.1.0.1"),
                   _register("west", "redis-1", "10.2.0.1", at=3)])
    local = endpoints_row(state, "default", "redis")
    assert local is not None
    assert [e.address for p in local.ports for e in p.endpoints] == ["10.1.0.1"]
    remote = endpoints_row(state, "default", hashed_name("default", "redis", "west"))
    assert remote is not None and remote.zone == "west"
    assert [e for p in remote.ports for e in p.endpoints] == []
    assert persisted(state, "dataplane", "default/redis-1").dataplane.networking.address == (
        "10.1.0.1")
    key = f"default/{hashed_name('default', 'redis-1', 'west')}"
    assert persisted(state, "remotedataplane", key) is not None
    local_ms = meshservice_row(state, "default", "redis")
    assert local_ms is not None and local_ms.labels["kuma.io/zone"] == "east"


def test_a_remote_dataplane_has_its_synced_name_and_the_labels_its_zone_shows() -> None:
    """What global's API lists: west's Dataplane under Kuma's synced name, with the labels
    west's own row has (`kuma.io/origin: zone`, `kuma.io/zone: west`, the display name, the
    proxy type) whatever labels of those keys the event carries."""
    subject, event = _register("west", "redis-1", "10.2.0.1")
    assert isinstance(event, DataplaneRegistered)
    echoed = msgspec.structs.replace(event.dataplane, labels={
        "team": "cache", "kuma.io/proxy-type": "gateway", "kuma.io/zone": "east"})
    logged = [_mesh(), (subject, msgspec.structs.replace(event, dataplane=echoed))]
    on_global = _fold(logged, ProjectionState(""))
    in_west = _fold(logged, ProjectionState("west"))
    synced = persisted(on_global, "remotedataplane",
                       f"default/{hashed_name('default', 'redis-1', 'west')}").dataplane
    own = persisted(in_west, "dataplane", "default/redis-1").dataplane
    assert synced.name == "redis-1-4vd49bdbbz9x8b6x" == hashed_name("default", "redis-1", "west")
    assert synced.labels == own.labels == {
        "team": "cache", "kuma.io/display-name": "redis-1", "kuma.io/mesh": "default",
        "kuma.io/origin": "zone", "kuma.io/zone": "west", "kuma.io/env": "universal",
        "kuma.io/proxy-type": "sidecar", "meshlog.io/registered-by": "api"}
    assert msgspec.structs.replace(synced, name="redis-1") == own


def test_same_named_services_of_two_zones_stay_apart() -> None:
    state = _east([_mesh(), _register("west", "redis-1", "10.2.0.1"),
                   _register("north", "redis-1", "10.3.0.1", at=3)])
    west = meshservice_row(state, "default", hashed_name("default", "redis", "west"))
    north = meshservice_row(state, "default", hashed_name("default", "redis", "north"))
    assert west is not None and north is not None
    assert west.status.vips != north.status.vips
    assert west.status.dataplane_proxies.total == north.status.dataplane_proxies.total == 1


def test_availability_travels_in_spec_state() -> None:
    state = _east([_mesh(), _register("west", "redis-1", "10.2.0.1", ready=False)])
    name = hashed_name("default", "redis", "west")
    row = meshservice_row(state, "default", name)
    assert row is not None and row.spec.state == "Unavailable"
    _fold([_register("west", "redis-1", "10.2.0.1", ready=True, at=4)], state, first_seq=3)
    row = meshservice_row(state, "default", name)
    assert row is not None and row.spec.state == row.status.state == "Available"


def test_an_explicit_meshservice_of_another_zone_keeps_its_spec_under_the_synced_name() -> None:
    ms = meshservice("default", "cache", ms_port(7000), selector={"app": "cache"})
    state = _east([_mesh(), (resource_subject("MeshService", "default", "cache", zone="west"),
                             MeshServiceApplied(at=2, meshservice=ms))])
    row = meshservice_row(state, "default", hashed_name("default", "cache", "west"))
    assert row is not None and row.origin == "user"
    assert row.spec.selector.dataplane_tags == {"app": "cache"}
    assert row.labels["kuma.io/display-name"] == "cache"


def test_the_last_remote_dataplane_leaving_starts_the_remote_meshservices_grace_period(
) -> None:
    state = _east([_mesh(), _register("west", "redis-1", "10.2.0.1")])
    _fold([(resource_subject("Dataplane", "default", "redis-1", zone="west"),
            DataplaneDeregistered(at=5, mesh="default", name="redis-1"))], state, first_seq=3)
    row = meshservice_row(state, "default", hashed_name("default", "redis", "west"))
    assert row is not None and row.expires_at == 5 + 3_600_000  # west's: the default 1 h


def test_a_disabled_zone_is_hidden_and_comes_back_when_enabled() -> None:
    name = hashed_name("default", "redis", "west")
    state = _east([_mesh(), _zone("west"), _register("west", "redis-1", "10.2.0.1", at=4)])
    vip = meshservice_row(state, "default", name)
    assert vip is not None
    _fold([_zone("west", enabled=False, at=5)], state, first_seq=4)
    assert meshservice_row(state, "default", name) is None
    _fold([_zone("west", enabled=True, at=6)], state, first_seq=5)
    back = meshservice_row(state, "default", name)
    assert back is not None and back.status.vips == vip.status.vips  # VIPs are sticky


def _deleted(name: str, *, at: int) -> Logged:
    return (resource_subject("Zone", None, name, zone=GLOBAL_ZONE), ZoneDeleted(at=at, name=name))


def _ingress(zone: str, name: str, *, at: int) -> Logged:
    ingress = decode_resource({"type": "ZoneIngress", "name": name, "networking": {
        "address": "10.2.0.5", "port": 10001, "advertisedAddress": "203.0.113.5",
        "advertisedPort": 443}})
    assert isinstance(ingress, ZoneIngress)
    return (resource_subject("ZoneIngress", None, name, zone=zone),
            ZoneIngressRegistered(at=at, zoneingress=ingress))


def _names(state: ProjectionState, collection: str) -> set[str]:
    return {k for c, k, _ in state.persisted() if c == collection}


def test_a_deleted_zone_takes_its_resources_with_it_and_has_them_back_when_it_registers(
) -> None:
    redis = hashed_name("default", "redis", "west")
    state = _east([_mesh(), _zone("west"), _register("west", "redis-1", "10.2.0.1", at=4),
                   _ingress("west", "ingress-1", at=4)])
    kept = _names(state, "remotedataplane")
    assert kept and _names(state, "zoneingress")
    _fold([_deleted("west", at=5)], state, first_seq=5)
    assert meshservice_row(state, "default", redis) is None
    assert not [k for c, k, _ in state.persisted() if c.startswith("remote")]
    assert not _names(state, "zoneingress")
    # west's events still in flight through global's stream do not bring it back, nor are
    # they lost
    _fold([_register("west", "redis-2", "10.2.0.2", service="cache", at=6)], state,
          first_seq=6)
    assert meshservice_row(state, "default", redis) is None
    assert meshservice_row(state, "default", hashed_name("default", "cache", "west")) is None
    # west registers again: all it synced is back (Kuma's zone resends its full state), also
    # what came in flight, and what it writes afterwards follows
    _fold([_zone("west", at=7)], state, first_seq=7)
    assert meshservice_row(state, "default", redis) is not None
    assert meshservice_row(state, "default", hashed_name("default", "cache", "west"))
    assert _names(state, "remotedataplane") == kept | {
        f"default/{hashed_name('default', 'redis-2', 'west')}"}
    assert _names(state, "zoneingress") == {hashed_name("", "ingress-1", "west")}
    assert not [k for c, k, _ in state.persisted() if c.startswith("parked")]
    _fold([_register("west", "redis-3", "10.2.0.3", service="web", at=8)], state, first_seq=8)
    assert meshservice_row(state, "default", hashed_name("default", "web", "west"))


def test_a_zone_deleted_on_global_keeps_its_own_resources_in_its_own_log() -> None:
    state = _fold([_mesh(), _zone("west"), _register("west", "redis-1", "10.2.0.1", at=4),
                   _ingress("west", "ingress-1", at=4)], ProjectionState("west"))
    before = _names(state, "zoneingress")
    _fold([_deleted("west", at=5), _zone("west", at=6)], state, first_seq=5)
    assert _names(state, "zoneingress") == before == {"ingress-1"}
    assert not [k for c, k, _ in state.persisted() if c.startswith("parked")]


def test_on_global_every_zone_is_remote_without_vips_or_hostnames() -> None:
    state = _fold([_mesh(), _register("east", "redis-1", "10.1.0.1"),
                   _register("west", "redis-1", "10.2.0.1", at=3)], ProjectionState(""))
    for zone in ("east", "west"):
        row = meshservice_row(state, "default", hashed_name("default", "redis", zone))
        assert row is not None
        assert row.labels["kuma.io/origin"] == "zone" and row.labels["kuma.io/zone"] == zone
        assert row.status.vips == [] and row.status.addresses == []
    assert meshservice_row(state, "default", "redis") is None


def test_the_default_generators_belong_to_the_log_of_their_own_control_plane() -> None:
    state = _east([_mesh()])  # the first event is global's
    row = persisted(state, "hostnamegenerator", "local-universal-mesh-service")
    assert row.generator.labels["kuma.io/zone"] == "east"


def test_replay_in_other_batches_gives_the_same_rows() -> None:
    logged = [_mesh(), _synced_generator(), _zone("west"),
              _register("west", "redis-1", "10.2.0.1", at=4),
              _register("east", "redis-1", "10.1.0.1", at=5),
              _register("west", "redis-2", "10.2.0.2", ready=False, at=6),
              _zone("west", enabled=False, at=7), _zone("west", at=8),
              _ingress("west", "ingress-1", at=9), _deleted("west", at=10),
              _register("west", "redis-3", "10.2.0.3", at=11), _zone("west", at=12)]
    whole = _east(logged)
    stepwise = ProjectionState("east")
    for seq, item in enumerate(logged, start=1):
        _fold([item], stepwise, first_seq=seq)
    assert list(whole.persisted()) == list(stepwise.persisted())


def test_a_restart_between_events_gives_the_same_rows() -> None:
    logged = [_mesh(), _synced_generator(), _zone("west"),
              _register("west", "redis-1", "10.2.0.1", at=4),
              _register("west", "redis-2", "10.2.0.2", ready=False, at=5),
              (resource_subject("Dataplane", "default", "redis-1", zone="west"),
               DataplaneDeregistered(at=6, mesh="default", name="redis-1")),
              _zone("west", enabled=False, at=7), _zone("west", at=8),
              _ingress("west", "ingress-1", at=9), _deleted("west", at=10),
              _register("west", "redis-3", "10.2.0.3", at=11), _zone("west", at=12)]
    whole = _east(logged)
    for cut in range(1, len(logged)):
        first = _east(logged[:cut])
        resumed = ProjectionState.load(first.persisted(), local_zone="east")
        _fold(logged[cut:], resumed, first_seq=cut + 1)
        assert list(resumed.persisted()) == list(whole.persisted()), cut


def test_an_explicit_remote_meshservice_is_available_from_its_zones_dataplanes() -> None:
    ms = meshservice("default", "cache", ms_port(7000), selector={"app": "cache"})
    dp = dataplane("default", "cache-1", "10.2.0.7",
                   inbound(7000, "cache-svc", tags={"app": "cache"}))
    state = _east([_mesh(), (resource_subject("MeshService", "default", "cache", zone="west"),
                             MeshServiceApplied(at=2, meshservice=ms)),
                   (resource_subject("Dataplane", "default", "cache-1", zone="west"),
                    DataplaneRegistered(at=3, dataplane=dp))])
    row = meshservice_row(state, "default", hashed_name("default", "cache", "west"))
    assert row is not None and row.spec.state == "Available"
    assert row.status.dataplane_proxies.total == row.status.dataplane_proxies.healthy == 1
    # a Dataplane of east with the same tags is no part of west's service
    local = dataplane("default", "cache-9", "10.1.0.9",
                      inbound(7000, "cache-svc", tags={"app": "cache"}))
    _fold([(resource_subject("Dataplane", "default", "cache-9", zone="east"),
            DataplaneRegistered(at=4, dataplane=local))], state, first_seq=4)
    row = meshservice_row(state, "default", hashed_name("default", "cache", "west"))
    assert row is not None and row.status.dataplane_proxies.total == 1
