"""Cross-zone traffic through zone ingress, from the fold to Envoy config.

Zone east's log (the real fold, `local_zone="east"`) holds west's MeshServices, Dataplanes and
ZoneIngresses folded with west's provenance, as stream sources bring them. Checked: a remote
MeshService's endpoints are its zone's ingresses (one per distinct advertised address:port,
only with mTLS: `EndpointsRow.through_ingress`); the client's cluster originates mTLS with
Kuma's SNI of the service's display name; a MeshMultiZoneService's priority-1 group is the
ingress; a zone ingress gets an SNI listener (`tls_inspector`, a passthrough chain per SNI)
to its zone's services' own endpoints; Envoy accepts both configs (`envoy --mode validate`).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from events import (
    MeshApplied,
    Provenance,
    ZoneIngressDeleted,
    ZoneIngressRegistered,
    decode_resource,
)
from projections import Endpoint
from tests.harness import envoy_binary
from tests.projections._histories import History
from tests.xds_gateway.test_mmzs_config import (
    EAST,
    GLOBAL,
    MMZS,
    WEST,
    Zone,
    _dp,
    _ms,
    _named,
    _static,
)
from xds_gateway.resources import tls
from xds_gateway.resources.cache import ResourceCache
from xds_gateway.resources.config_dump import config_json
from xds_gateway.resources.ingress import ZONE_INGRESS_NODE

NORTH = Provenance(zone="north", origin="zone")
SNI_WEST = tls.sni("default", "redis", 6379)
"""What a client sends for west's `redis-west` (display name `redis`)."""


def _ingress(name: str, address: str, port: int, *, advertised: tuple[str, int] | None,
             zone: str | None = None) -> ZoneIngressRegistered:
    networking: dict[str, Any] = {"address": address, "port": port}
    if advertised is not None:
        networking["advertisedAddress"], networking["advertisedPort"] = advertised
    doc: dict[str, Any] = {"type": "ZoneIngress", "name": name, "networking": networking}
    if zone is not None:
        doc["zone"] = zone
    return ZoneIngressRegistered(at=1_700_000_100_000,
                                 zoneingress=decode_resource(doc))  # type: ignore[arg-type]


def _zone(*, mtls: bool = True) -> Zone:
    zone = Zone()
    if mtls:
        zone.fold(*((e, GLOBAL) for e in History().mtls(
            "default", "ca-1", enabled="ca-1", expiration="24h").events))
    else:
        zone.doc({"type": "Mesh", "name": "default"}, GLOBAL)
    zone.doc(_dp("web-1", "10.0.0.9", "web", 7070), EAST)
    zone.doc(_ms("redis"), EAST).doc(_dp("redis-1", "10.0.0.1", "redis"), EAST)
    zone.doc(_ms("redis-west", state="Available"), WEST)
    zone.doc(_dp("redis-west-1", "10.0.1.1", "redis-west"), WEST)
    zone.fold(
        (_ingress("west-a", "10.0.1.5", 10001, advertised=("203.0.113.7", 443)), WEST),
        (_ingress("west-b", "10.0.1.6", 10001, advertised=("203.0.113.7", 443)), WEST),
        (_ingress("west-c", "10.0.1.7", 10001, advertised=("203.0.113.5", 10443)), WEST),
        (_ingress("west-hidden", "10.0.1.8", 10001, advertised=None), WEST),
        (_ingress("east-1", "10.0.0.5", 10001, advertised=("198.51.100.1", 443),
                  zone="west"), EAST),  # `zone` is pinned to the writer's
        (_ingress("north-1", "10.0.2.5", 10001, advertised=("192.0.2.1", 443)), NORTH))
    return zone.doc(MMZS, GLOBAL)


def _through(zone: Zone, name: str) -> list[Endpoint] | None:
    return zone.view.endpoints["default"][name].through_ingress


WEST_INGRESSES = [Endpoint(address="203.0.113.5", port=10443, dataplane="west-c"),
                  Endpoint(address="203.0.113.7", port=443, dataplane="west-a")]


# --- the fold -----------------------------------------------------------------------------------


def test_a_remote_service_is_reached_through_each_distinct_advertised_ingress_of_its_zone(
        ) -> None:
    zone = _zone()

    assert _through(zone, "redis-west") == WEST_INGRESSES
    assert _through(zone, "redis") is None  # local: its own endpoints
    assert zone.view.zoneingresses["east-1"].zoneingress.zone == "east"
    assert zone.view.zoneingresses["east-1"].zoneingress.labels["kuma.io/zone"] == "east"


def test_without_mtls_no_ingress_is_used() -> None:
    zone = _zone(mtls=False)

    assert _through(zone, "redis-west") is None


def test_ingresses_and_mtls_coming_and_going_move_the_endpoints() -> None:
    zone = _zone()
    zone.fold((ZoneIngressDeleted(at=1_700_000_200_000, name="west-c"), WEST))
    assert _through(zone, "redis-west") == WEST_INGRESSES[1:]

    zone.fold((ZoneIngressDeleted(at=1_700_000_200_000, name="west-a"), WEST),
              (ZoneIngressDeleted(at=1_700_000_200_000, name="west-b"), WEST))
    assert _through(zone, "redis-west") == []  # Kuma: no ingress, no way in

    zone.fold((_ingress("west-c", "10.0.1.7", 10001, advertised=("203.0.113.5", 10443)),
               WEST))
    mesh = decode_resource({"type": "Mesh", "name": "default"})
    zone.fold((MeshApplied(at=1_700_000_300_000, mesh=mesh), GLOBAL))  # type: ignore[arg-type]
    assert _through(zone, "redis-west") is None  # mTLS off


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

    cluster = _named(config, "clusters", "default_redis-west___msvc_6379")
    assert _upstream(cluster)["sni"] == SNI_WEST
    assert SNI_WEST.endswith(".redis.6379.default.ms")  # west's name for it, not ours
    assert _cla(config, "default_redis-west___msvc_6379") == [
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
    zone = _zone()
    config = _ingress_config(zone, "west-a")

    listener = _named(config, "listeners", "inbound:10.0.1.5:10001")
    assert [f["name"] for f in listener["listenerFilters"]] == [
        "envoy.filters.listener.tls_inspector"]
    chains = {c["filterChainMatch"]["serverNames"][0]: c["filters"][0]["typedConfig"]["cluster"]
              for c in listener["filterChains"]}
    assert chains == {SNI_WEST: "default_redis-west___msvc_6379",
                      tls.sni("default", "redis", 6379, "mzms"): "default_redis___mzsvc_6379"}
    assert all("transportSocket" not in c for c in listener["filterChains"])  # passthrough
    for cluster in config["clusters"]:
        assert "transportSocket" not in cluster["resource"]  # the sidecars' mTLS, end to end
    # west's own endpoints, never an ingress's (no loop back into itself)
    assert _cla(config, "default_redis-west___msvc_6379") == [(0, "west", ["10.0.1.1:6379"])]
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
    assert _ingress_config(_zone(mtls=False), "west-a")["listeners"] == []
    assert _ingress_config(_zone(), "north-1")["listeners"] == []
    assert _ingress_config(_zone(), "unknown")["listeners"] == []


# --- Envoy accepts them -------------------------------------------------------------------------


def _validate(tmp_path: Path, config: dict[str, Any]) -> None:
    path = tmp_path / "bootstrap.json"
    static = _static(config)
    path.write_text(json.dumps(static))
    result = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.integration
def test_envoy_validates_the_ingress_config(tmp_path: Path) -> None:
    _validate(tmp_path, _ingress_config(_zone(), "west-a"))


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
    many.fold(*((e, GLOBAL) for e in History().mtls(
        "default", "ca-1", enabled="ca-1", expiration="24h").events))
    for doc, provenance in ((_dp("web-1", "10.0.0.9", "web", 7070), EAST), (_ms("redis"), EAST),
                            (_dp("redis-1", "10.0.0.1", "redis"), EAST),
                            (_ms("redis-west", state="Available"), WEST),
                            (_dp("redis-west-1", "10.0.1.1", "redis-west"), WEST)):
        many.doc(doc, provenance)
    many.fold((_ingress("west-a", "10.0.1.5", 10001, advertised=("203.0.113.7", 443)), WEST))
    many.fold((_ingress("west-c", "10.0.1.7", 10001, advertised=("203.0.113.5", 10443)), WEST),
              (ZoneIngressDeleted(at=1_700_000_200_000, name="west-a"), WEST))
    many.doc(MMZS, GLOBAL)

    one = Zone().fold(*many.steps)

    assert list(one.state.persisted()) == list(many.state.persisted())
    assert one.view.endpoints["default"]["redis-west"].through_ingress == WEST_INGRESSES[:1]
