"""Cross-zone traffic through zone ingress, from the fold to Envoy config.

Zone east's log (the real fold, `local_zone="east"`) holds west's MeshServices, Dataplanes and
ZoneIngresses folded with west's provenance, as stream sources bring them (under Kuma's synced
names, `<name>-<hash>`), and the Mesh with its CA from global. Checked: a remote
MeshService's endpoints are its zone's ingresses (one per distinct advertised address:port,
only with mTLS: `EndpointsRow.through_ingress`); the client's cluster originates mTLS with
Kuma's SNI of the service's display name; a MeshMultiZoneService's priority-1 group is the
ingress. West's log (`local_zone="west"`), where west's ingress Envoy gets its config, gives
the ingress an SNI listener (`tls_inspector`, a passthrough chain per SNI) to its zone's
services' own endpoints. Envoy accepts both configs (`envoy --mode validate`).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from events import Mesh, MeshApplied, Provenance, ZoneIngressDeleted, decode_resource
from events.kds_hash import hashed_name
from projections import Endpoint
from tests.harness import envoy_binary
from tests.xds_gateway._bootstrap import static_bootstrap
from tests.xds_gateway.test_mmzs_config import (
    EAST,
    GLOBAL,
    MMZS,
    WEST,
    WEST_REDIS,
    Zone,
    _dp,
    _ingress,
    _mesh,
    _ms,
    _named,
)
from xds_gateway.resources import tls
from xds_gateway.resources.cache import ResourceCache
from xds_gateway.resources.config_dump import config_json
from xds_gateway.resources.ingress import ZONE_INGRESS_NODE

NORTH = Provenance(zone="north", origin="zone")
SNI_WEST = tls.sni("default", "redis", 6379)
"""What a client sends for west's `redis` (named `redis-<hash>` in east)."""


def _synced(name: str, zone: str = "west") -> str:
    """Zone `zone`'s ZoneIngress `name` as other zones name it (not mesh-scoped)."""
    return hashed_name("", name, zone)


def _history(zone: Zone, *, mtls: bool = True) -> Zone:
    """What east's and west's logs both hold: the Mesh (CA on global), each zone's redis,
    east's web, west's ingresses, east's ingress, a north ingress, the MMZS from global."""
    _mesh(zone, mtls=mtls)
    zone.doc(_dp("web-1", "10.0.0.9", "web", 7070), EAST)
    zone.doc(_ms("redis"), EAST).doc(_dp("redis-1", "10.0.0.1", "redis"), EAST)
    zone.doc(_ms("redis"), WEST).doc(_dp("redis-1", "10.0.1.1", "redis"), WEST)
    zone.fold(
        (_ingress("west-a", "10.0.1.5", 10001, advertised=("203.0.113.7", 443)), WEST),
        (_ingress("west-b", "10.0.1.6", 10001, advertised=("203.0.113.7", 443)), WEST),
        (_ingress("west-c", "10.0.1.7", 10001, advertised=("203.0.113.5", 10443)), WEST),
        (_ingress("west-hidden", "10.0.1.8", 10001, advertised=None), WEST),
        (_ingress("east-1", "10.0.0.5", 10001, advertised=("198.51.100.1", 443),
                  zone="west"), EAST),  # `zone` is pinned to the writer's
        (_ingress("north-1", "10.0.2.5", 10001, advertised=("192.0.2.1", 443)), NORTH))
    return zone.doc(MMZS, GLOBAL)


def _zone(*, mtls: bool = True) -> Zone:
    """East's log."""
    return _history(Zone(), mtls=mtls)


def _west(*, mtls: bool = True) -> Zone:
    """West's log: the same events, seen from west."""
    return _history(Zone(local_zone="west"), mtls=mtls)


def _through(zone: Zone, name: str) -> list[Endpoint] | None:
    return zone.view.endpoints["default"][name].through_ingress


WEST_INGRESSES = [Endpoint(address="203.0.113.5", port=10443, dataplane=_synced("west-c")),
                  Endpoint(address="203.0.113.7", port=443, dataplane=_synced("west-a"))]
WEST_CLUSTER = f"default_{WEST_REDIS}___msvc_6379"


# --- the fold -----------------------------------------------------------------------------------


def test_a_remote_service_is_reached_through_each_distinct_advertised_ingress_of_its_zone(
        ) -> None:
    zone = _zone()

    assert _through(zone, WEST_REDIS) == WEST_INGRESSES
    assert _through(zone, "redis") is None  # local: its own endpoints
    assert [e.address for p in zone.view.endpoints["default"][WEST_REDIS].ports
            for e in p.endpoints] == []  # never west's Dataplane
    assert zone.view.zoneingresses[_synced("west-a")].zoneingress.zone == "west"
    assert zone.view.zoneingresses["east-1"].zoneingress.zone == "east"
    assert zone.view.zoneingresses["east-1"].zoneingress.labels["kuma.io/zone"] == "east"


def test_without_mtls_no_ingress_is_used() -> None:
    zone = _zone(mtls=False)

    assert _through(zone, WEST_REDIS) is None


def test_ingresses_and_mtls_coming_and_going_move_the_endpoints() -> None:
    zone = _zone()
    zone.fold((ZoneIngressDeleted(at=1_700_000_200_000, name="west-c"), WEST))
    assert _through(zone, WEST_REDIS) == WEST_INGRESSES[1:]

    zone.fold((ZoneIngressDeleted(at=1_700_000_200_000, name="west-a"), WEST),
              (ZoneIngressDeleted(at=1_700_000_200_000, name="west-b"), WEST))
    assert _through(zone, WEST_REDIS) == []  # Kuma: no ingress, no way in

    zone.fold((_ingress("west-c", "10.0.1.7", 10001, advertised=("203.0.113.5", 10443)),
               WEST))
    mesh = decode_resource({"type": "Mesh", "name": "default"})
    assert isinstance(mesh, Mesh)
    zone.fold((MeshApplied(at=1_700_000_300_000, mesh=mesh), GLOBAL))
    assert _through(zone, WEST_REDIS) is None  # mTLS off


# --- a client's Envoy ---------------------------------------------------------------------------


def _cla(config: dict[str, Any], cluster: str) -> list[tuple[int, str, list[str]]]:
    cla = _named(config, "endpoints", cluster)
    return [(group.get("priority", 0), group["locality"]["zone"],
             [f"{e['endpoint']['address']['socketAddress']['address']}:"
              f"{e['endpoint']['address']['socketAddress']['portValue']}"
              for e in group["lbEndpoints"]])
            for group in cla.get("endpoints", [])]


def _upstream(cluster: dict[str, Any]) -> dict[str, Any]:
    context: dict[str, Any] = cluster["transportSocket"]["typedConfig"]
    return context


def test_the_client_originates_mtls_with_the_sni_of_the_display_name_to_the_ingresses(
        ) -> None:
    config = _zone().config()

    cluster = _named(config, "clusters", WEST_CLUSTER)
    assert _upstream(cluster)["sni"] == SNI_WEST
    assert SNI_WEST.endswith(".redis.6379.default.ms")  # west's name for it, not ours
    assert _cla(config, WEST_CLUSTER) == [
        (0, "west", ["203.0.113.5:10443", "203.0.113.7:443"])]
    # a local service keeps its own endpoints and its own SNI
    assert _cla(config, "default_redis___msvc_6379") == [(0, "east", ["10.0.0.1:6379"])]


def test_kumas_sni_vector() -> None:
    assert tls.sni("demo", "backend", 8080) == "ae10a8071b8a8eeb8.backend.8080.demo.ms"


def test_a_mmzs_fails_over_to_the_remote_zone_through_its_ingresses() -> None:
    config = _zone().config()

    assert _cla(config, "default_redis___mzsvc_6379") == [
        (0, "east", ["10.0.0.1:6379"]),
        (1, "west", ["203.0.113.5:10443", "203.0.113.7:443"])]
    cluster = _named(config, "clusters", "default_redis___mzsvc_6379")
    assert _upstream(cluster)["sni"] == tls.sni("default", "redis", 6379, "mzms")


# --- the zone ingress's Envoy -------------------------------------------------------------------


def _ingress_config(zone: Zone, name: str) -> dict[str, Any]:
    return config_json(zone.view, ZONE_INGRESS_NODE, name, ResourceCache())


def test_an_ingress_routes_each_sni_of_its_zone_to_the_services_own_endpoints() -> None:
    config = _ingress_config(_west(), "west-a")  # from west's log, as west's gateway serves it

    listener = _named(config, "listeners", "inbound:10.0.1.5:10001")
    assert [f["name"] for f in listener["listenerFilters"]] == [
        "envoy.filters.listener.tls_inspector"]
    chains = {c["filterChainMatch"]["serverNames"][0]: c["filters"][0]["typedConfig"]["cluster"]
              for c in listener["filterChains"]}
    assert chains == {SNI_WEST: "default_redis___msvc_6379",
                      tls.sni("default", "redis", 6379, "mzms"): "default_redis___mzsvc_6379"}
    assert all("transportSocket" not in c for c in listener["filterChains"])  # passthrough
    for cluster in config["clusters"]:
        assert "transportSocket" not in cluster["resource"]  # the sidecars' mTLS, end to end
    # west's own endpoints, never an ingress's (no loop back into itself)
    assert _cla(config, "default_redis___msvc_6379") == [(0, "west", ["10.0.1.1:6379"])]
    assert _cla(config, "default_redis___mzsvc_6379") == [(0, "west", ["10.0.1.1:6379"])]
    assert config["secrets"] == []


def test_the_local_ingress_routes_the_local_services() -> None:
    config = _ingress_config(_zone(), "east-1")

    listener = _named(config, "listeners", "inbound:10.0.0.5:10001")
    assert sorted(c["filterChainMatch"]["serverNames"][0]
                  for c in listener["filterChains"]) == sorted(
        [tls.sni("default", "redis", 6379), tls.sni("default", "redis", 6379, "mzms"),
         tls.sni("default", "web", 7070)])
    assert _cla(config, "default_redis___msvc_6379") == [(0, "east", ["10.0.0.1:6379"])]


def test_an_ingress_with_nothing_to_route_gets_no_listener() -> None:
    assert _ingress_config(_west(mtls=False), "west-a")["listeners"] == []
    assert _ingress_config(_west(), _synced("north-1", "north"))["listeners"] == []
    assert _ingress_config(_west(), "unknown")["listeners"] == []
    # east's gateway serves no proxy as west's ingress (its synced name in east's log)
    assert _ingress_config(_zone(), _synced("west-a"))["listeners"] == []


# --- Envoy accepts them -------------------------------------------------------------------------


def _validate(tmp_path: Path, config: dict[str, Any]) -> None:
    path = tmp_path / "bootstrap.json"
    static = static_bootstrap(config)
    path.write_text(json.dumps(static))
    result = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.integration
def test_envoy_validates_the_ingress_config(tmp_path: Path) -> None:
    _validate(tmp_path, _ingress_config(_west(), "west-a"))


# --- determinism --------------------------------------------------------------------------------


class _Recording(Zone):
    """A Zone that keeps every (event, provenance) it folds."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[tuple[Any, Provenance]] = []

    def fold(self, *steps: tuple[Any, Provenance]) -> Zone:
        self.steps.extend(steps)
        return super().fold(*steps)


def test_the_rows_do_not_depend_on_batch_boundaries() -> None:
    many = _Recording()
    _mesh(many, mtls=True)
    for doc, provenance in ((_dp("web-1", "10.0.0.9", "web", 7070), EAST), (_ms("redis"), EAST),
                            (_dp("redis-1", "10.0.0.1", "redis"), EAST),
                            (_ms("redis"), WEST), (_dp("redis-1", "10.0.1.1", "redis"), WEST)):
        many.doc(doc, provenance)
    many.fold((_ingress("west-a", "10.0.1.5", 10001, advertised=("203.0.113.7", 443)), WEST))
    many.fold((_ingress("west-c", "10.0.1.7", 10001, advertised=("203.0.113.5", 10443)), WEST),
              (ZoneIngressDeleted(at=1_700_000_200_000, name="west-a"), WEST))
    many.doc(MMZS, GLOBAL)

    one = Zone().fold(*many.steps)

    assert list(one.state.persisted()) == list(many.state.persisted())
    assert one.view.endpoints["default"][WEST_REDIS].through_ingress == WEST_INGRESSES[:1]
