"""The labels the control plane computes, and a resource without them.

The fold (`projections.fold` and the modules it calls) labels what it folds as Kuma does
(kumahq/kuma v2.14 `pkg/core/resources/model/resource.go` ComputeLabels): with the provenance
of the event (`kuma.io/origin`, and for a zone's `kuma.io/zone` and `kuma.io/env`), the mesh
(`kuma.io/mesh`), a Dataplane's `kuma.io/proxy-type` and `meshlog.io/registered-by`, all over
a user label of the same key; and `kuma.io/display-name`, the name, unless the user set it.
A Mesh gets only `kuma.io/origin: global`, and only from global (`mesh_labels`). A zone's
Dataplane also gets its zone as the `kuma.io/zone` tag of its inbounds that have tags
(`projections._provenance.zone_tagged`), over a user's tag of that key.

A GET shows them among the user's labels, so applying back what it returned (`meshlog get -o
yaml | meshlog apply -f -`, a GitOps loop) hands them in as user labels. Kuma takes that as a
no-op; so does meshlog: the command path drops them (`without_computed`) before it compares
and stores, as the fold gives them their computed values whatever the event says. Only new
commands are changed: old events keep the labels they were written with, and fold as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple, TypeVar, assert_never

import msgspec

from events.policy_kinds import kind_of_policy
from events.resources import (
    Dataplane,
    HostnameGenerator,
    Mesh,
    MeshMultiZoneService,
    MeshService,
    Resource,
    ZoneIngress,
)
from events.subjects import Provenance

__all__ = [
    "DISPLAY_NAME_LABEL",
    "ENV_LABEL",
    "MESH_LABEL",
    "ORIGIN_LABEL",
    "PROXY_TYPE_LABEL",
    "REGISTERED_BY_LABEL",
    "ZONE_LABEL",
    "ComputedLabels",
    "computed_labels",
    "mesh_labels",
    "provenance_labels",
    "without_computed",
]

ORIGIN_LABEL = "kuma.io/origin"
ZONE_LABEL = "kuma.io/zone"
ENV_LABEL = "kuma.io/env"
MESH_LABEL = "kuma.io/mesh"
DISPLAY_NAME_LABEL = "kuma.io/display-name"
PROXY_TYPE_LABEL = "kuma.io/proxy-type"
REGISTERED_BY_LABEL = "meshlog.io/registered-by"


def provenance_labels(provenance: Provenance) -> dict[str, str]:
    """The labels of a resource written by the control plane `provenance` names: a resource
    of origin `zone` gets `kuma.io/zone` and `kuma.io/env` (meshlog's zones are universal
    zones); one of origin `global` gets neither."""
    match provenance.origin:
        case "zone":
            return {ORIGIN_LABEL: "zone", ZONE_LABEL: provenance.zone, ENV_LABEL: "universal"}
        case "global":
            return {ORIGIN_LABEL: "global"}
        case _:
            assert_never(provenance.origin)


def mesh_labels(provenance: Provenance) -> dict[str, str]:
    """The labels of a Mesh written by the control plane `provenance` names. A Mesh belongs
    to global: Kuma's global-to-zone sync labels it `kuma.io/origin: global` in every zone
    (its mapper relabels all it sends, reference/multizone.md §1), and global's own resources
    carry that origin in meshlog, the Mesh now too. A Mesh of a standalone control plane gets
    none, as Kuma's ComputeLabels gives none to a kind a zone cannot create ("there is no
    point in adding 'kuma.io/zone', 'kuma.io/origin' and 'kuma.io/env' labels even if the zone
    is non-federated"); nor does it get `kuma.io/zone` or `kuma.io/env` anywhere."""
    return provenance_labels(provenance) if provenance.origin == "global" else {}


class ComputedLabels(NamedTuple):
    """What the fold does to a resource's labels: `{**defaults, **labels, <overridden>}`."""

    overridden: frozenset[str]
    """Keys the fold sets whatever the resource says."""
    defaults: Mapping[str, str]
    """Values the fold sets when the resource does not say otherwise (a user's label wins)."""


R = TypeVar("R", bound=Resource)


def computed_labels(resource: Resource, provenance: Provenance) -> ComputedLabels:
    """The labels the fold computes for `resource`, written by the control plane `provenance`
    names. Kept in step with the fold by tests/projections/test_computed_labels.py, which folds
    resources with and without them and compares the rows."""
    provenance_keys = provenance_labels(provenance).keys()
    match resource:
        case Mesh():
            return ComputedLabels(frozenset(mesh_labels(provenance)), {})
        case Dataplane():
            return ComputedLabels(
                frozenset({MESH_LABEL, PROXY_TYPE_LABEL, REGISTERED_BY_LABEL, *provenance_keys}),
                {DISPLAY_NAME_LABEL: resource.name})
        case _ if (isinstance(resource, MeshService | MeshMultiZoneService)
                   or kind_of_policy(resource) is not None):  # every policy kind too
            return ComputedLabels(frozenset({MESH_LABEL, *provenance_keys}),
                                  {DISPLAY_NAME_LABEL: resource.name})
        case ZoneIngress():
            # no mesh; its name in its zone, which another log's synced name hides
            return ComputedLabels(frozenset(provenance_keys), {DISPLAY_NAME_LABEL: resource.name})
        case HostnameGenerator():
            # no mesh, and no display name: one a user gives is theirs, whatever its value
            return ComputedLabels(frozenset(provenance_keys), {})
        case _:
            raise TypeError(f"no computed labels known for {type(resource).__name__}")


def without_computed(resource: R, provenance: Provenance) -> R:
    """`resource` without what the fold computes for it anyway: the labels it overrides, a
    label equal to the default it would give (`kuma.io/display-name` equal to the name), a
    ZoneIngress's `zone` (pinned to the writer's), and a zone's Dataplane's inbound
    `kuma.io/zone` tags (the fold tags every inbound that has tags with the writer's zone,
    `projections._provenance.zone_tagged`). Every other label is the user's and stays, a
    computed key the fold lets the user set included (a display name other than the name;
    `kuma.io/zone` on a resource of global, whose provenance has no zone). The fold gives
    both the same row, so a command compares and stores this one."""
    computed = computed_labels(resource, provenance)
    kept = {key: value for key, value in resource.labels.items()
            if key not in computed.overridden and computed.defaults.get(key) != value}
    if isinstance(resource, ZoneIngress) and resource.zone is not None:
        return msgspec.structs.replace(resource, labels=kept, zone=None)
    if provenance.origin == "zone":
        resource = _without_zone_tags(resource)
    if len(kept) == len(resource.labels):
        return resource
    return msgspec.structs.replace(resource, labels=kept)


def _without_zone_tags(resource: R) -> R:
    """A Dataplane without the `kuma.io/zone` tag of its inbounds that have other tags (the
    fold puts the writer's zone there whatever they say; one with that tag alone would be
    left without any, which the fold does not tag); any other resource as it is."""
    if not isinstance(resource, Dataplane):
        return resource
    inbounds = resource.networking.inbound
    if not any(ZONE_LABEL in i.tags and len(i.tags) > 1 for i in inbounds):
        return resource
    kept = [msgspec.structs.replace(i, tags={k: v for k, v in i.tags.items() if k != ZONE_LABEL})
            if ZONE_LABEL in i.tags and len(i.tags) > 1 else i for i in inbounds]
    return msgspec.structs.replace(
        resource, networking=msgspec.structs.replace(resource.networking, inbound=kept))
