"""An event's provenance (zone and origin) is read back from its subject (events.subjects)."""

from __future__ import annotations

import re

import pytest

from events import (
    GLOBAL_ZONE,
    MalformedSubject,
    Provenance,
    clock_subject,
    grace_period_subject,
    ipam_subject,
    provenance_of,
    resource_subject,
)


@pytest.mark.parametrize("zone", ["default", "east", "zone-2", "1a"])
@pytest.mark.parametrize(("kind", "mesh", "name"), [
    ("Dataplane", "default", "web-1"),
    ("Dataplane", "prod.eu", "web.v1.default.svc"),
    ("MeshService", "a.b", "backend.ns"),
    ("Mesh", None, "my.mesh"),
    ("HostnameGenerator", None, "local.universal.mesh.service"),
])
def test_provenance_of_round_trips_with_resource_subject_for_names_with_dots(
        zone: str, kind: str, mesh: str | None, name: str) -> None:
    subject = resource_subject(kind, mesh, name, zone=zone)
    assert provenance_of(subject) == Provenance(zone=zone, origin="zone")


def test_the_global_zone_token_gives_origin_global_and_no_zone() -> None:
    subject = resource_subject("HostnameGenerator", None, "synced.mesh.service", zone=GLOBAL_ZONE)
    assert provenance_of(subject) == Provenance(zone="", origin="global")


def test_every_kind_of_subject_the_log_holds_has_a_provenance() -> None:
    east = Provenance(zone="east", origin="zone")
    assert provenance_of(ipam_subject("MeshService", zone="east")) == east
    assert provenance_of(grace_period_subject("MeshService", zone="east")) == east
    assert provenance_of(clock_subject(1_700_000_000_000, zone="east")) == east


@pytest.mark.parametrize("subject", [
    "test",
    "meshlog.ev.default.mesh",
    "meshlog.ev.default.dataplane.default.web.1",  # a dot of the name left unmapped
    "other.ev.default.mesh._.default",
    "meshlog.ev..mesh._.default",
    "meshlog.ev.default.mesh._.",
    "meshlog.ev.East.mesh._.default",
    "meshlog.ev.us_east.mesh._.default",
    "meshlog.ev._.mesh._.default",
    "meshlog.ev.-east.mesh._.default",
])
def test_a_malformed_subject_is_refused_with_a_message_naming_it(subject: str) -> None:
    with pytest.raises(MalformedSubject, match=re.escape(repr(subject))) as refused:
        provenance_of(subject)
    assert refused.value.subject == subject
    assert "meshlog.ev.<zone>.<kind>.<mesh|_>.<name>" in str(refused.value)
