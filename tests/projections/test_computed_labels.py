"""`events.labels.without_computed` drops only what the fold computes anyway: a resource folds
to the same rows with and without the labels it drops, seen from the control plane that wrote
it and from the others that fold its events. That is what lets the command path compare and
store a resource without them (applying back what a GET returned is `unchanged`)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from events import (
    POLICY_KINDS,
    AnyEvent,
    Dataplane,
    DataplaneRegistered,
    HostnameGenerator,
    HostnameGeneratorApplied,
    Mesh,
    MeshApplied,
    MeshMultiZoneService,
    MeshMultiZoneServiceApplied,
    MeshService,
    MeshServiceApplied,
    Provenance,
    Resource,
    ZoneIngress,
    ZoneIngressRegistered,
    decode_event,
    decode_resource,
    encode_event,
    kind_of_policy,
)
from events.labels import (
    DISPLAY_NAME_LABEL,
    ENV_LABEL,
    MESH_LABEL,
    ORIGIN_LABEL,
    PROXY_TYPE_LABEL,
    REGISTERED_BY_LABEL,
    ZONE_LABEL,
    without_computed,
)
from projections.derive import derive_stale
from projections.fold import apply_event
from projections.state import ProjectionState
from tests._policy_samples import resource as policy_sample
from tests.projections._histories import (
    SERVICE_TAG,
    dataplane,
    generator,
    inbound,
    meshservice,
    ms_port,
    multizone_service,
)

EAST = Provenance(zone="east", origin="zone")
GLOBAL = Provenance(zone="", origin="global")
SPOOFED = {MESH_LABEL: "other-mesh", ORIGIN_LABEL: "spoofed", ZONE_LABEL: "spoofed",
           ENV_LABEL: "kubernetes", PROXY_TYPE_LABEL: "gateway", REGISTERED_BY_LABEL: "proxy",
           "team": "blue"}


def _with_labels(resource: Resource, labels: dict[str, str]) -> Resource:
    """`resource` as a user would apply it with `labels` (decoded, as the API does)."""
    document: dict[str, Any] = msgspec.to_builtins(resource)
    document["labels"] = labels
    return decode_resource(document)


def _resources(display_name: str | None) -> list[Resource]:
    """One resource of each kind with every computed key spoofed; `display_name`: the value
    of `kuma.io/display-name` ("=name": the resource's name)."""
    plain: list[Resource] = [
        Mesh(name="default"),
        # a spoofed inbound zone tag (the fold pins it), one without, one without tags
        dataplane("default", "web-1", "10.0.0.1",
                  inbound(8080, "web", tags={ZONE_LABEL: "spoofed"}), inbound(8081, "web"),
                  {"port": 8082}),
        meshservice("default", "web", ms_port(8080), selector={SERVICE_TAG: "web"}),
        generator("internal", "{{ .Name }}.internal", {"team": "blue"}),
        *(policy_sample(kind, kind.singular) for kind in POLICY_KINDS),  # every policy kind
        multizone_service("default", "redis", {"team": "blue"}, 6379),
        decode_resource({"type": "ZoneIngress", "name": "ingress-1", "zone": "east",
                         "networking": {"address": "10.0.0.5", "port": 10001}}),
    ]
    out = []
    for resource in plain:
        labels = dict(SPOOFED)
        if display_name is not None:
            labels[DISPLAY_NAME_LABEL] = resource.name if display_name == "=name" else display_name
        out.append(_with_labels(resource, labels))
    return out


def _event(resource: Resource) -> AnyEvent:
    """The event the command path appends for `resource`."""
    match resource:
        case Mesh():
            return MeshApplied(at=1, mesh=resource)
        case Dataplane():
            return DataplaneRegistered(at=1, dataplane=resource)
        case MeshService():
            return MeshServiceApplied(at=1, meshservice=resource)
        case HostnameGenerator():
            return HostnameGeneratorApplied(at=1, hostname_generator=resource)
        case MeshMultiZoneService():
            return MeshMultiZoneServiceApplied(at=1, meshmultizoneservice=resource)
        case ZoneIngress():
            return ZoneIngressRegistered(at=1, zoneingress=resource)
        case _:
            kind = kind_of_policy(resource)
            if kind is None:
                raise TypeError(type(resource).__name__)
            return kind.applied_event(resource, 1)


def _rows(resource: Resource, writer: Provenance, local_zone: str) -> list[tuple[str, str, bytes]]:
    """The rows of a log (of the control plane of `local_zone`) holding the mesh, then
    `resource`, both written by `writer`, folded as the projector folds them."""
    state = ProjectionState.load([], local_zone=local_zone)
    for seq, event in enumerate((MeshApplied(at=1, mesh=Mesh(name="default")),
                                 _event(resource)), start=1):
        wire = decode_event(encode_event(event), seq=seq, subject="test")
        apply_event(state, seq, wire, writer)
    derive_stale(state)
    state.take_changes()
    return list(state.persisted())


OWN = {
    "a zone's, in that zone": (EAST, "east"),
    "global's, on global": (GLOBAL, ""),
    "global's, in a zone": (GLOBAL, "east"),  # not remote: folded as global's own events are
}
REMOTE = {
    "a zone's, on global": (EAST, ""),
    "a zone's, in another zone": (EAST, "west"),
}
def _cases(writer: Provenance, display_name: str | None) -> list[Resource]:
    return [resource for resource in _resources(display_name)
            # global has no ZoneIngress (the command path refuses it)
            if not (isinstance(resource, ZoneIngress) and writer.origin == "global")]


@pytest.mark.parametrize("display_name", [None, "=name", "shown"])
@pytest.mark.parametrize("vantage", OWN)
def test_the_writers_rows_are_the_same_without_what_is_dropped(
        vantage: str, display_name: str | None) -> None:
    writer, local_zone = OWN[vantage]
    for resource in _cases(writer, display_name):
        dropped = without_computed(resource, writer)
        assert _rows(dropped, writer, local_zone) == _rows(resource, writer, local_zone), (
            type(resource).__name__)


@pytest.mark.parametrize("display_name", [None, "=name", "shown"])
@pytest.mark.parametrize("vantage", REMOTE)
def test_other_zones_rows_are_the_same_without_what_is_dropped(
        vantage: str, display_name: str | None) -> None:
    writer, local_zone = REMOTE[vantage]
    for resource in _cases(writer, display_name):
        with_them = _rows(resource, writer, local_zone)
        without = _rows(without_computed(resource, writer), writer, local_zone)
        assert without == with_them, type(resource).__name__


def _kept(resource: Resource, writer: Provenance) -> dict[str, str]:
    return without_computed(resource, writer).labels


def test_a_zones_resource_keeps_only_its_users_labels() -> None:
    kept = {type(r).__name__: _kept(r, EAST) for r in _resources("=name")}
    assert kept == {
        "Mesh": {**SPOOFED, DISPLAY_NAME_LABEL: "default"},  # the fold computes none
        "Dataplane": {"team": "blue"},
        "MeshService": {PROXY_TYPE_LABEL: "gateway", REGISTERED_BY_LABEL: "proxy",
                        "team": "blue"},
        # no mesh, no display name computed: those are the user's
        "HostnameGenerator": {MESH_LABEL: "other-mesh", PROXY_TYPE_LABEL: "gateway",
                              REGISTERED_BY_LABEL: "proxy", "team": "blue",
                              DISPLAY_NAME_LABEL: "internal"},
        **{kind.type_name: {PROXY_TYPE_LABEL: "gateway", REGISTERED_BY_LABEL: "proxy",
                            "team": "blue"} for kind in POLICY_KINDS},
        "MeshMultiZoneService": {PROXY_TYPE_LABEL: "gateway", REGISTERED_BY_LABEL: "proxy",
                                 "team": "blue"},
        # no mesh; a display name equal to its name is computed (fold version 6)
        "ZoneIngress": {MESH_LABEL: "other-mesh", PROXY_TYPE_LABEL: "gateway",
                        REGISTERED_BY_LABEL: "proxy", "team": "blue"},
    }


def test_globals_mesh_keeps_all_its_users_labels_but_its_origin() -> None:
    mesh = next(r for r in _resources("=name") if isinstance(r, Mesh))
    kept = _kept(mesh, GLOBAL)
    assert ORIGIN_LABEL not in kept
    assert kept == {k: v for k, v in mesh.labels.items() if k != ORIGIN_LABEL}


def test_a_display_name_other_than_the_name_is_the_users() -> None:
    for resource in _resources("shown"):
        assert _kept(resource, EAST)[DISPLAY_NAME_LABEL] == "shown", type(resource).__name__


def test_global_computes_no_zone_so_a_zone_label_on_its_resource_is_the_users() -> None:
    service = next(r for r in _resources(None) if isinstance(r, MeshService))
    assert _kept(service, GLOBAL) == {ZONE_LABEL: "spoofed", ENV_LABEL: "kubernetes",
                                      PROXY_TYPE_LABEL: "gateway", REGISTERED_BY_LABEL: "proxy",
                                      "team": "blue"}


def test_a_zone_ingress_is_stored_without_its_zone_which_the_fold_pins() -> None:
    ingress = next(r for r in _resources(None) if isinstance(r, ZoneIngress))
    assert ingress.zone == "east"
    dropped = without_computed(ingress, EAST)
    assert isinstance(dropped, ZoneIngress) and dropped.zone is None


def test_a_resource_with_nothing_to_drop_is_returned_as_it_is() -> None:
    service = meshservice("default", "web", ms_port(8080), labels={"team": "blue"})
    assert without_computed(service, EAST) is service
