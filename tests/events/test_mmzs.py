"""MeshMultiZoneService documents (Kuma's universal format, every violation with its path and
value, deprecation warnings) and its commands on the one command path, against a real
nats-server."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from events import (
    GLOBAL_ZONE,
    Conflict,
    InvalidResource,
    JetStreamEventLog,
    Mesh,
    MeshMultiZoneService,
    MeshMultiZoneServiceApplied,
    MeshMultiZoneServiceDeleted,
    NotFound,
    decode_event,
    decode_resource,
    deprecations,
    encode_event,
    resource_subject,
)
from events.commands import Commands, current_of, live_resource


def _doc(name: str = "redis", *, labels: dict[str, str] | None = None,
         ports: list[dict[str, Any]] | None = None, mesh: str = "default") -> dict[str, Any]:
    return {"type": "MeshMultiZoneService", "mesh": mesh, "name": name,
            "spec": {"selector": {"meshService": {"matchLabels": (
                {"kuma.io/display-name": "redis"} if labels is None else labels)}},
                     "ports": [{"port": 6379, "appProtocol": "tcp"}] if ports is None
                     else ports}}


def mmzs(name: str = "redis", mesh: str = "default", port: int = 6379) -> MeshMultiZoneService:
    resource = decode_resource(_doc(name, mesh=mesh, ports=[{"port": port}]))
    assert isinstance(resource, MeshMultiZoneService)
    return resource


def _violations(raw: Any) -> list[str]:
    with pytest.raises(InvalidResource) as info:
        decode_resource(raw)
    return [str(v) for v in info.value.violations]


# --- the document -----------------------------------------------------------------------------


def test_kumas_universal_example_decodes_with_tcp_as_the_default_protocol() -> None:
    resource = decode_resource(_doc(ports=[{"port": 6379}, {"name": "tls", "port": 16379,
                                                            "appProtocol": "tls"}]))

    assert isinstance(resource, MeshMultiZoneService)
    assert resource.spec.selector.mesh_service.match_labels == {"kuma.io/display-name": "redis"}
    assert [(p.port, p.name, p.app_protocol) for p in resource.spec.ports] == [
        (6379, None, "tcp"), (16379, "tls", "tls")]


def test_an_empty_selector_is_refused_naming_the_field_and_value() -> None:
    assert _violations(_doc(labels={})) == [
        "spec.selector.meshService.matchLabels: {} must not be empty: a MeshMultiZoneService "
        "selects MeshServices by at least one label (e.g. kuma.io/display-name)"]


def test_a_missing_selector_and_missing_ports_are_named() -> None:
    no_selector = {"type": "MeshMultiZoneService", "mesh": "default", "name": "redis",
                   "spec": {"selector": {}, "ports": [{"port": 1}]}}
    no_ports = {"type": "MeshMultiZoneService", "mesh": "default", "name": "redis",
                "spec": {"selector": {"meshService": {"matchLabels": {"a": "b"}}}}}
    assert _violations(no_selector) == ["spec.selector.meshService: is required"]
    assert _violations(no_ports) == ["spec.ports: is required"]


def test_no_ports_is_refused() -> None:
    assert _violations(_doc(ports=[])) == ["spec.ports: [] must list at least one port"]


def test_every_port_violation_names_its_path_and_value_in_one_answer() -> None:
    violations = _violations(_doc(labels={"team": "bad value"}, ports=[
        {"port": 0}, {"port": 6379, "name": ""}, {"port": 6379, "appProtocol": "udp"},
        {"port": "http"}]))

    assert "spec.ports[0].port: 0 is not in 1..65535" in violations
    assert "spec.ports[1].name: '' must not be empty (leave it out for an unnamed port)" in (
        violations)
    assert any(v.startswith("spec.ports[2].appProtocol: 'udp' is not one of grpc, http, ")
               for v in violations)
    assert "spec.ports[3].port: expected an integer, got 'http'" in violations
    assert any(v.startswith('spec.selector.meshService.matchLabels["team"]: \'bad value\'')
               for v in violations)


def test_a_port_listed_twice_is_refused() -> None:
    assert _violations(_doc(ports=[{"port": 6379}, {"port": 6379, "name": "again"}])) == [
        "spec.ports[1].port: 6379 is listed twice"]


def test_unknown_fields_are_named() -> None:
    raw = _doc()
    raw["spec"]["selector"]["meshService"]["matchExpressions"] = []
    assert _violations(raw) == ["spec.selector.meshService.matchExpressions: unknown field"]


@pytest.mark.parametrize("name", ["redis.cache", "9redis"])
def test_a_name_that_is_not_a_dns1035_label_is_accepted_with_a_deprecation(name: str) -> None:
    resource = decode_resource(_doc(name))

    [warning] = deprecations(resource)
    assert warning.startswith(f"Invalid name: {name!r}. It does not conform to the DNS format")
    assert deprecations(mmzs("redis")) == []


def test_the_status_of_a_document_read_back_is_ignored() -> None:
    raw = _doc()
    raw["status"] = {"vips": [{"ip": "243.0.0.1"}]}
    assert decode_resource(raw) == mmzs()


def test_events_round_trip_with_their_permanent_tags() -> None:
    applied = MeshMultiZoneServiceApplied(at=1, meshmultizoneservice=mmzs())
    deleted = MeshMultiZoneServiceDeleted(at=2, mesh="default", name="redis")

    assert msgspec.json.decode(encode_event(applied))["event"] == "meshmultizoneservice.applied"
    assert msgspec.json.decode(encode_event(deleted))["event"] == "meshmultizoneservice.deleted"
    assert decode_event(encode_event(applied), seq=1, subject="s") == applied
    assert decode_event(encode_event(deleted), seq=2, subject="s") == deleted


def test_each_mmzs_has_its_own_subject() -> None:
    assert resource_subject("MeshMultiZoneService", "default", "redis.cache", GLOBAL_ZONE) == (
        "meshlog.ev._global.meshmultizoneservice.default.redis_cache")


# --- commands ---------------------------------------------------------------------------------


@pytest.mark.parametrize("zone", [GLOBAL_ZONE, "default"])
async def test_global_and_standalone_take_it(event_log: JetStreamEventLog, zone: str) -> None:
    commands = Commands(event_log, zone=zone)
    await commands.apply(Mesh(name="default"))

    created = await commands.apply(mmzs())
    again = await commands.apply(mmzs())
    changed = await commands.apply(mmzs(port=6380))

    assert created.created and again.unchanged and changed.seq > created.seq
    record = await event_log.last(resource_subject("MeshMultiZoneService", "default", "redis",
                                                   zone))
    assert record is not None
    event = current_of(record).event
    assert isinstance(event, MeshMultiZoneServiceApplied)
    assert live_resource(event) == mmzs(port=6380)


async def test_a_zone_refuses_it_saying_where_to_apply_it(event_log: JetStreamEventLog) -> None:
    await Commands(event_log, zone="east").apply(Mesh(name="default"))
    commands = Commands(event_log, zone="east", deployment="zone")

    with pytest.raises(Conflict, match=r"MeshMultiZoneService 'redis' belongs to the global "
                                       r"control plane: apply it there"):
        await commands.apply(mmzs())
    with pytest.raises(Conflict, match="belongs to the global control plane"):
        await commands.delete("MeshMultiZoneService", "default", "redis")
    assert await event_log.last(resource_subject("MeshMultiZoneService", "default", "redis",
                                                 "east")) is None


async def test_it_needs_its_mesh(event_log: JetStreamEventLog) -> None:
    with pytest.raises(NotFound, match="mesh 'nowhere' does not exist"):
        await Commands(event_log, zone=GLOBAL_ZONE).apply(mmzs(mesh="nowhere"))


async def test_delete_then_gone_and_a_mesh_with_one_cannot_be_deleted(
        event_log: JetStreamEventLog) -> None:
    commands = Commands(event_log, zone="default")
    await commands.apply(Mesh(name="guarded"))
    await commands.apply(mmzs(mesh="guarded"))

    with pytest.raises(Conflict, match="still has 1 meshmultizoneservices"):
        await commands.delete("Mesh", None, "guarded")
    await commands.delete("MeshMultiZoneService", "guarded", "redis")

    record = await event_log.last(resource_subject("MeshMultiZoneService", "guarded", "redis"))
    assert record is not None
    assert isinstance(current_of(record).event, MeshMultiZoneServiceDeleted)
    with pytest.raises(NotFound, match="MeshMultiZoneService 'redis' in mesh 'guarded' does "
                                       "not exist"):
        await commands.delete("MeshMultiZoneService", "guarded", "redis")
    assert (await commands.delete("Mesh", None, "guarded")).seq > 0


async def test_the_mmzs_cidr_is_recorded_only_when_it_differs_from_the_log(
        event_log: JetStreamEventLog) -> None:
    commands = Commands(event_log, zone="default")

    default = await commands.configure_ipam("MeshMultiZoneService", "243.0.0.0/8",
                                            default="243.0.0.0/8")
    chosen = await commands.configure_ipam("MeshMultiZoneService", "10.43.0.0/16",
                                           default="243.0.0.0/8")
    back = await commands.configure_ipam("MeshMultiZoneService", "243.0.0.0/8",
                                         default="243.0.0.0/8")

    assert default.unchanged and default.seq == 0
    assert chosen.created and back.seq > chosen.seq
