"""MeshMultiZoneServices in a proxy's config: Kuma's cluster name, a ClusterLoadAssignment
with the local MeshServices' endpoints at priority 0 and other zones' available ones at
priority 1 (locality = their zone), an outbound listener on its VIP, a DNS record, and a
config that a real Envoy accepts (`envoy --mode validate`).

Rows come from the real fold of zone `east`'s log, holding what the sync brings: the Mesh
(with mTLS, its CA created on global) and the MeshMultiZoneService from global, west's and
north's MeshServices, Dataplanes and ZoneIngresses from their zones (their provenance). In
east those are Kuma's synced MeshServices (`<name>-<hash>`, availability from their zone's
Dataplanes), reached through their zone's ingress, never at their Dataplanes' addresses."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, cast

import pytest
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.extensions.filters.udp.dns_filter.v3.dns_filter_pb2 import DnsFilterConfig
from google.protobuf import any_pb2

from events import (
    AnyEvent,
    Dataplane,
    DataplaneDeregistered,
    DataplaneRegistered,
    Mesh,
    MeshApplied,
    MeshMultiZoneService,
    MeshMultiZoneServiceApplied,
    MeshService,
    MeshServiceApplied,
    Provenance,
    ZoneIngress,
    ZoneIngressRegistered,
    decode_resource,
)
from events.bus.projection_bus import CHECKPOINT_KEY
from events.kds_hash import hashed_name
from projections import PUBLISHED, Endpoint, ProjectionState, apply_event
from projections.derive import derive_stale
from tests.harness import envoy_binary
from tests.projections._histories import SECRET_KEY, History
from tests.xds_gateway._bootstrap import static_bootstrap
from xds_gateway.resources.cache import ResourceCache
from xds_gateway.resources.config_dump import config_json
from xds_gateway.resources.endpoints import prioritized_load_assignment
from xds_gateway.resources.node import ProxyNode
from xds_gateway.resources.snapshot import build_snapshot
from xds_gateway.type_urls import LISTENER
from xds_gateway.view import ProjectionView

EAST = Provenance(zone="east", origin="zone")
WEST = Provenance(zone="west", origin="zone")
NORTH = Provenance(zone="north", origin="zone")
GLOBAL = Provenance(zone="", origin="global")
CLUSTER = "default_redis___mzsvc_6379"
WEST_REDIS = hashed_name("default", "redis", "west")
"""West's MeshService `redis` as east names it."""
WEST_INGRESS = "203.0.113.7:443"
"""West's ingress's advertised address: how east reaches west's services."""


class Zone:
    """A zone's projector (east's unless told) and one gateway's view of what it publishes."""

    def __init__(self, local_zone: str = "east") -> None:
        self.state = ProjectionState.load([], secret_key=SECRET_KEY, local_zone=local_zone)
        self.view = ProjectionView()
        self.seq = 0
        self.at = 1_700_000_000_000

    def fold(self, *steps: tuple[AnyEvent, Provenance]) -> Zone:
        for event, provenance in steps:
            self.seq += 1
            apply_event(self.state, self.seq, event, provenance)
        derive_stale(self.state)
        self.view.apply([*((f"{c.collection}/{c.key}", c.body)
                           for c in self.state.take_changes() if c.collection in PUBLISHED),
                         (CHECKPOINT_KEY, str(self.seq).encode())])
        return self

    def _at(self) -> int:
        self.at += 1000
        return self.at

    def doc(self, doc: dict[str, Any], provenance: Provenance) -> Zone:
        event: AnyEvent
        match decode_resource(doc):
            case Mesh() as mesh:
                event = MeshApplied(at=self._at(), mesh=mesh)
            case Dataplane() as dp:
                event = DataplaneRegistered(at=self._at(), dataplane=dp)
            case MeshService() as ms:
                event = MeshServiceApplied(at=self._at(), meshservice=ms)
            case MeshMultiZoneService() as mmzs:
                event = MeshMultiZoneServiceApplied(at=self._at(), meshmultizoneservice=mmzs)
            case other:
                raise AssertionError(f"no event for a {type(other).__name__}")
        return self.fold((event, provenance))

    def config(self, proxy: str = "web-1", node: ProxyNode | None = None) -> dict[str, Any]:
        return config_json(self.view, "default", proxy, ResourceCache(), node=node)


def _dp(name: str, address: str, service: str, port: int = 6379, *,
        tp: dict[str, Any] | None = None, ready: bool = True) -> dict[str, Any]:
    networking: dict[str, Any] = {"address": address, "inbound": [
        {"port": port, "tags": {"kuma.io/service": service},
         **({} if ready else {"health": {"ready": False}})}]}
    if tp is not None:
        networking["transparentProxying"] = tp
    return {"type": "Dataplane", "mesh": "default", "name": name, "networking": networking}


def _ms(name: str, *, port: int = 6379) -> dict[str, Any]:
    spec: dict[str, Any] = {"selector": {"dataplaneTags": {"kuma.io/service": name}},
                            "ports": [{"port": port}]}
    return {"type": "MeshService", "mesh": "default", "name": name,
            "labels": {"app": "redis"}, "spec": spec}


def _ingress(name: str, address: str, port: int, *, advertised: tuple[str, int] | None,
             zone: str | None = None) -> ZoneIngressRegistered:
    networking: dict[str, Any] = {"address": address, "port": port}
    if advertised is not None:
        networking["advertisedAddress"], networking["advertisedPort"] = advertised
    doc: dict[str, Any] = {"type": "ZoneIngress", "name": name, "networking": networking}
    if zone is not None:
        doc["zone"] = zone
    ingress = decode_resource(doc)
    assert isinstance(ingress, ZoneIngress)
    return ZoneIngressRegistered(at=1_700_000_100_000, zoneingress=ingress)


def _mesh(zone: Zone, *, mtls: bool) -> Zone:
    """The Mesh from global, with its CA created there when `mtls`."""
    if not mtls:
        return zone.doc({"type": "Mesh", "name": "default"}, GLOBAL)
    return zone.fold(*((e, GLOBAL) for e in History().mtls(
        "default", "ca-1", enabled="ca-1", expiration="24h").events))


MMZS = {"type": "MeshMultiZoneService", "mesh": "default", "name": "redis",
        "spec": {"selector": {"meshService": {"matchLabels": {"app": "redis"}}},
                 "ports": [{"port": 6379}]}}


def _zone(*, refs: list[dict[str, Any]] | None = None, mtls: bool = True) -> Zone:
    """East's log: its own `redis` and `web-1`; west's `redis` (healthy) and `cache` (labelled
    app=redis, no port 6379); north's `redis` (its one Dataplane not ready: Unavailable);
    west's and north's ingresses; the MeshMultiZoneService `redis` from global."""
    zone = _mesh(Zone(), mtls=mtls)
    zone.doc(_dp("web-1", "10.0.0.9", "web", 7070, tp={} if refs is None else {
        "reachableBackends": {"refs": refs}}), EAST)
    zone.doc(_ms("redis"), EAST).doc(_dp("redis-1", "10.0.0.1", "redis"), EAST)
    zone.doc(_ms("redis"), WEST).doc(_dp("redis-1", "10.0.1.1", "redis"), WEST)
    zone.doc(_ms("redis"), NORTH).doc(_dp("redis-1", "10.0.2.1", "redis", ready=False), NORTH)
    zone.doc(_ms("cache", port=6380), WEST).doc(_dp("cache-1", "10.0.3.1", "cache", 6380), WEST)
    zone.fold((_ingress("ingress", "10.0.1.5", 10001, advertised=("203.0.113.7", 443)), WEST),
              (_ingress("ingress", "10.0.2.5", 10001, advertised=("192.0.2.1", 443)), NORTH))
    return zone.doc(MMZS, GLOBAL)


def _named(config: dict[str, Any], section: str, name: str) -> dict[str, Any]:
    [entry] = [e["resource"] for e in config[section] if e["name"] == name]
    return cast("dict[str, Any]", entry)


def _localities(config: dict[str, Any]) -> list[tuple[int, str, list[str]]]:
    cla = _named(config, "endpoints", CLUSTER)
    return [(group.get("priority", 0), group["locality"]["zone"],
             [f"{e['endpoint']['address']['socketAddress']['address']}:"
              f"{e['endpoint']['address']['socketAddress']['portValue']}"
              for e in group["lbEndpoints"]])
            for group in cla.get("endpoints", [])]


# --- the config ---------------------------------------------------------------------------------


def test_kumas_cluster_with_local_endpoints_first_and_available_remote_ones_at_priority_1(
        ) -> None:
    config = _zone().config()

    cluster = _named(config, "clusters", CLUSTER)
    assert cluster["type"] == "EDS" and cluster["name"] == CLUSTER
    # north's is not Available; west's cache has no port 6379; west's redis is reached
    # through west's ingress, never at its Dataplane's address
    assert _localities(config) == [(0, "east", ["10.0.0.1:6379"]),
                                   (1, "west", [WEST_INGRESS])]
    zone = _zone()
    assert zone.view.meshservices["default"][WEST_REDIS].spec.state == "Available"
    north = zone.view.meshservices["default"][hashed_name("default", "redis", "north")]
    assert north.spec.state == "Unavailable"


def test_an_outbound_listener_on_its_vip_and_a_dns_record_for_its_hostname() -> None:
    zone = _zone()
    [vip] = [v.ip for v in zone.view.meshmultizoneservices["default"]["redis"].status.vips]
    assert vip.startswith("243.")
    config = zone.config()

    listener = _named(config, "listeners", f"outbound:{vip}:6379")
    [chain] = listener["filterChains"]
    assert chain["filters"][0]["typedConfig"]["cluster"] == CLUSTER
    snapshot = build_snapshot(zone.view, "default", "web-1", ResourceCache())
    dns = Listener.FromString(any_pb2.Any.FromString(
        snapshot.resources[LISTENER]["meshlog:dns"].any).value)
    table = DnsFilterConfig()
    dns.listener_filters[0].typed_config.Unpack(table)
    records = {d.name: list(d.endpoint.address_list.address)
               for d in table.server_config.inline_dns_table.virtual_domains}
    assert records["redis.mzsvc.mesh.local"] == [vip]
    assert records["redis.svc.mesh.local"] != [vip]  # the local MeshService keeps its own


def test_when_the_local_endpoints_go_the_remote_ones_take_all_the_traffic_and_come_back(
        ) -> None:
    zone = _zone()
    zone.fold((DataplaneDeregistered(at=zone._at(), mesh="default", name="redis-1"), EAST))
    assert _localities(zone.config()) == [(0, "west", [WEST_INGRESS])]

    zone.doc(_dp("redis-1", "10.0.0.1", "redis"), EAST)
    assert _localities(zone.config()) == [(0, "east", ["10.0.0.1:6379"]),
                                          (1, "west", [WEST_INGRESS])]


def test_a_remote_service_that_becomes_unavailable_leaves_the_endpoints() -> None:
    zone = _zone()
    zone.doc(_dp("redis-1", "10.0.1.1", "redis", ready=False), WEST)  # in west
    assert zone.view.meshservices["default"][WEST_REDIS].spec.state == "Unavailable"
    assert _localities(zone.config()) == [(0, "east", ["10.0.0.1:6379"])]

    zone.doc(_dp("redis-1", "10.0.1.1", "redis"), WEST)
    assert _localities(zone.config()) == [(0, "east", ["10.0.0.1:6379"]),
                                          (1, "west", [WEST_INGRESS])]


def test_reachable_backends_name_it_by_its_kind() -> None:
    only_ms = _zone(refs=[{"kind": "MeshService", "name": "redis"}]).config()
    named = _zone(refs=[{"kind": "MeshMultiZoneService", "name": "redis"}]).config()

    assert CLUSTER not in [c["name"] for c in only_ms["clusters"]]
    assert [c["name"] for c in named["clusters"] if "mzsvc" in c["name"] or "msvc" in c[
        "name"]] == [CLUSTER]


def test_with_mtls_the_cluster_originates_it_with_kumas_mzms_sni() -> None:
    zone = _zone(mtls=False)
    assert "transportSocket" not in _named(zone.config(), "clusters", CLUSTER)
    assert _localities(zone.config()) == [(0, "east", ["10.0.0.1:6379"])]  # no ingress w/o it
    _mesh(zone, mtls=True)

    cluster = _named(zone.config(), "clusters", CLUSTER)
    tls = cluster["transportSocket"]["typedConfig"]
    assert tls["sni"].endswith(".redis.6379.default.mzms")
    [san] = tls["commonTlsContext"]["combinedValidationContext"]["defaultValidationContext"][
        "matchTypedSubjectAltNames"]
    assert san["matcher"] == {"prefix": "spiffe://default/"}


def test_a_proxyless_grpc_client_gets_its_hostname_target() -> None:
    config = _zone().config(node=ProxyNode(user_agent_name="gRPC C-core linux"))

    route = _named(config, "routes", "redis.mzsvc.mesh.local:6379")
    assert json.dumps(route).count(CLUSTER) == 1


# --- the ClusterLoadAssignment ------------------------------------------------------------------


def _e(address: str, port: int = 6379) -> Endpoint:
    return Endpoint(address=address, port=port, dataplane="dp")


def test_groups_of_one_priority_and_zone_merge_and_repeated_hosts_are_kept_once() -> None:
    cla = prioritized_load_assignment("c", [
        (0, "east", [_e("10.0.0.2"), _e("10.0.0.1")]), (0, "east", [_e("10.0.0.1")]),
        (1, "west", [_e("10.0.1.1")]), (1, "north", [_e("10.0.2.1"), _e("redis.north")])])

    assert [(g.priority, g.locality.zone,
             [e.endpoint.address.socket_address.address for e in g.lb_endpoints])
            for g in cla.endpoints] == [
        (0, "east", ["10.0.0.1", "10.0.0.2"]), (1, "north", ["10.0.2.1"]),
        (1, "west", ["10.0.1.1"])]


def test_priorities_without_hosts_are_left_out_and_the_rest_renumbered() -> None:
    cla = prioritized_load_assignment("c", [(0, "east", []), (1, "west", [_e("10.0.1.1")])])

    assert [(g.priority, g.locality.zone) for g in cla.endpoints] == [(0, "west")]
    assert prioritized_load_assignment("c", []).endpoints == []


# --- Envoy accepts it ---------------------------------------------------------------------------


@pytest.mark.integration
def test_envoy_validates_the_config(tmp_path: Path) -> None:
    path = tmp_path / "bootstrap.json"
    zone = _zone()
    path.write_text(json.dumps(static_bootstrap(
        zone.config(), private_key=zone.view.identities[("default", "web-1")].key)))

    result = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path)],
                            capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout + result.stderr


# --- explicit outbounds -------------------------------------------------------------------------


def test_an_explicit_outbound_may_name_it_by_its_backend_ref() -> None:
    zone = _zone()
    zone.doc({"type": "Dataplane", "mesh": "default", "name": "app-1", "networking": {
        "address": "10.0.0.8", "inbound": [{"port": 7070, "tags": {"kuma.io/service": "app"}}],
        "outbound": [{"port": 16379, "backendRef": {"kind": "MeshMultiZoneService",
                                                    "name": "redis"}},
                     {"port": 16380, "backendRef": {"kind": "MeshMultiZoneService",
                                                    "name": "redis", "port": 9999}}]}}, EAST)

    config = zone.config("app-1")

    listener = _named(config, "listeners", "outbound:127.0.0.1:16379")
    assert listener["filterChains"][0]["filters"][0]["typedConfig"]["cluster"] == CLUSTER
    assert "outbound:127.0.0.1:16380" not in [e["name"] for e in config["listeners"]]
    assert _localities(config) == [(0, "east", ["10.0.0.1:6379"]),
                                   (1, "west", [WEST_INGRESS])]
