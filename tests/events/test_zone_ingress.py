"""ZoneIngress documents (Kuma's universal format, every violation with its path and value)
and its commands on the one command path, against a real nats-server."""

from __future__ import annotations

from typing import Any

import pytest

from events import (
    GLOBAL_ZONE,
    Conflict,
    InvalidResource,
    JetStreamEventLog,
    ZoneIngress,
    ZoneIngressDeleted,
    ZoneIngressRegistered,
    decode_event,
    decode_resource,
    encode_event,
    provenance_of,
    resource_subject,
)
from events.commands import Commands, current_of, live_resource


def _doc(name: str = "ingress-1", **networking: Any) -> dict[str, Any]:
    return {"type": "ZoneIngress", "name": name, "networking": {
        "address": "10.0.0.5", "port": 10001, "advertisedAddress": "203.0.113.5",
        "advertisedPort": 443, "admin": {"port": 9901}, **networking}}


def ingress(name: str = "ingress-1", **networking: Any) -> ZoneIngress:
    resource = decode_resource(_doc(name, **networking))
    assert isinstance(resource, ZoneIngress)
    return resource


def _violations(raw: Any) -> list[str]:
    with pytest.raises(InvalidResource) as info:
        decode_resource(raw)
    return [str(v) for v in info.value.violations]


def test_kumas_universal_document_decodes() -> None:
    doc = _doc()
    doc["availableServices"] = [{"tags": {"kuma.io/service": "backend"}, "instances": 1,
                                 "mesh": "default"}]
    resource = decode_resource(doc)

    assert isinstance(resource, ZoneIngress)
    assert resource.zone is None
    net = resource.networking
    assert (net.address, net.port, net.advertised_address, net.advertised_port) == (
        "10.0.0.5", 10001, "203.0.113.5", 443)
    assert resource.available_services[0].tags == {"kuma.io/service": "backend"}


def test_every_violation_is_named_with_its_path_and_value() -> None:
    doc = _doc(address="ingress.local", port=70000, advertisedAddress="0.0.0.0")
    del doc["networking"]["advertisedPort"]
    doc["zone"] = "West_1"

    assert _violations(doc) == [
        "networking.port: 70000 is not in 1..65535",
        "networking.address: 'ingress.local' is not an IP address (the ingress Envoy listens "
        "on it; 0.0.0.0 for every address)",
        "networking.advertisedAddress: '0.0.0.0' must not be the unspecified address",
        "networking.advertisedPort: is required with advertisedAddress: other zones reach "
        "the ingress at both (or leave both out)",
        "zone: 'West_1' is not a zone name (an RFC 1123 label)",
    ]


def test_an_advertised_port_without_an_address_and_an_admin_port_clash_are_named() -> None:
    doc = _doc(admin={"port": 10001})
    del doc["networking"]["advertisedAddress"]

    assert _violations(doc) == [
        "networking.advertisedAddress: is required with advertisedPort: other zones reach "
        "the ingress at both (or leave both out)",
        "networking.admin.port: 10001 collides with networking.port",
    ]


def test_without_advertised_address_and_port_it_is_valid() -> None:
    doc = _doc()
    del doc["networking"]["advertisedAddress"], doc["networking"]["advertisedPort"]

    assert isinstance(decode_resource(doc), ZoneIngress)


def test_events_round_trip_and_the_subject_is_the_zones() -> None:
    for event in (ZoneIngressRegistered(at=1, zoneingress=ingress()),
                  ZoneIngressDeleted(at=2, name="ingress-1")):
        assert decode_event(encode_event(event), seq=1, subject="s") == event
    assert b'"event":"zoneingress.registered"' in encode_event(
        ZoneIngressRegistered(at=1, zoneingress=ingress()))
    subject = resource_subject("ZoneIngress", None, "ingress-1", "west")

    assert subject == "meshlog.ev.west.zoneingress._.ingress-1"
    assert provenance_of(subject).zone == "west"


# --- commands ---------------------------------------------------------------------------------


async def test_a_zone_registers_its_own_and_deletes_it(event_log: JetStreamEventLog) -> None:
    commands = Commands(event_log, zone="west")

    created = await commands.apply(ingress())
    again = await commands.apply(ingress())
    named = await commands.apply(ingress(advertisedPort=8443))
    assert created.created and again.unchanged and named.seq > created.seq
    subject = resource_subject("ZoneIngress", None, "ingress-1", "west")
    record = await event_log.last(subject)
    assert record is not None
    assert live_resource(current_of(record).event) == ingress(advertisedPort=8443)

    await commands.delete("ZoneIngress", None, "ingress-1")
    record = await event_log.last(subject)
    assert record is not None and isinstance(current_of(record).event, ZoneIngressDeleted)


async def test_one_naming_another_zone_is_refused(event_log: JetStreamEventLog) -> None:
    doc = _doc()
    doc["zone"] = "east"

    with pytest.raises(InvalidResource, match="'east' is not this control plane's zone 'west'"):
        await Commands(event_log, zone="west").apply(decode_resource(doc))
    assert await event_log.last(resource_subject("ZoneIngress", None, "ingress-1",
                                                 "west")) is None


async def test_global_refuses_it(event_log: JetStreamEventLog) -> None:
    with pytest.raises(Conflict, match="belongs to the zone it routes into"):
        await Commands(event_log, zone=GLOBAL_ZONE).apply(ingress())
