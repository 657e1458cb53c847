"""Provenance labels: the `kuma.io/origin`, `kuma.io/zone` and `kuma.io/env` labels the fold
puts on what it folds, from the provenance of the event (`events.provenance_of`), which
derived rows inherit from the row they were derived from, and the labels and inbound
`kuma.io/zone` tags of a Dataplane, the same in its zone's `dataplane` row and in another
log's `remotedataplane` row.

The labels themselves (Kuma's ComputeLabels) are defined in `events.labels`, which the command
path shares: it drops them from what a user applies, as the fold sets them anyway.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import msgspec

from events import Dataplane, Inbound, Provenance
from events import labels as computed
from events.labels import ENV_LABEL, ORIGIN_LABEL, ZONE_LABEL, mesh_labels, provenance_labels
from events.resources import DataplaneNetworking

__all__ = [
    "ENV_LABEL",
    "ORIGIN_LABEL",
    "ZONE_LABEL",
    "dataplane_labels",
    "inherited_labels",
    "mesh_labels",
    "provenance_labels",
    "same_provenance",
    "zone_of",
    "zone_tagged",
]

_PROVENANCE_LABELS = (ORIGIN_LABEL, ZONE_LABEL, ENV_LABEL)


def dataplane_labels(dp: Dataplane, provenance: Provenance, registered_by: str
                     ) -> dict[str, str]:
    """The labels of Dataplane `dp` registered by `registered_by` (`api` or `proxy`) in the
    zone `provenance` names (Kuma's, universal zone): its display name unless the user gave
    one, the user's, then the control plane's over a user label of the same key. Another
    log shows the same labels under the synced name, as Kuma's KDS carries the zone's
    labels to global (reference/multizone.md §1)."""
    return {computed.DISPLAY_NAME_LABEL: dp.name, **dp.labels,
            **_control_plane_labels(dp.mesh, provenance, registered_by)}


@functools.lru_cache(maxsize=1024)
def _control_plane_labels(mesh: str, provenance: Provenance, registered_by: str
                          ) -> dict[str, str]:
    """Shared between calls (a Dataplane's registration is most of a log): to merge, never to
    change."""
    return {computed.MESH_LABEL: mesh, **provenance_labels(provenance),
            computed.PROXY_TYPE_LABEL: "sidecar", computed.REGISTERED_BY_LABEL: registered_by}


def zone_tagged(networking: DataplaneNetworking, provenance: Provenance
                ) -> DataplaneNetworking:
    """A Dataplane's `networking` with the `kuma.io/zone` tag Kuma's zone control plane puts
    on its inbounds (kumahq/kuma v2.14 `dataplane_manager.go` setInboundsClusterTag: in every
    zone, a standalone one too, whose name is `default`): the zone of the control plane that
    wrote the event, over a value the user gave. Global pins the tag of a synced Dataplane to
    the zone it came from (`kds/v2/store/sync.go` pinZoneTag), which is this same zone, so
    every log shows the same tags. An inbound without tags keeps none, as in Kuma with
    `meshServices.mode: Exclusive` (meshlog's semantics whatever the mode). A Dataplane of
    global (none is registered there) gets no tag. Runs for every Dataplane event: one pass,
    nothing copied that keeps its tags."""
    if provenance.origin != "zone":
        return networking
    zone = provenance.zone
    inbounds = networking.inbound
    tagged: list[Inbound] | None = None
    for n, inbound in enumerate(inbounds):
        tags = inbound.tags
        if tags and tags.get(ZONE_LABEL) != zone:
            if tagged is None:
                tagged = list(inbounds)
            tagged[n] = msgspec.structs.replace(inbound, tags={**tags, ZONE_LABEL: zone})
    if tagged is None:
        return networking  # an event whose tags say so already (or without inbounds)
    return msgspec.structs.replace(networking, inbound=tagged)


def inherited_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """The provenance labels of a row, for a row derived from it (a generated MeshService
    from its Dataplane)."""
    return {key: labels[key] for key in _PROVENANCE_LABELS if key in labels}


def same_provenance(a: Mapping[str, str], b: Mapping[str, str]) -> bool:
    """`inherited_labels(a) == inherited_labels(b)`, without building them."""
    return (a.get(ORIGIN_LABEL) == b.get(ORIGIN_LABEL) and a.get(ZONE_LABEL) == b.get(ZONE_LABEL)
            and a.get(ENV_LABEL) == b.get(ENV_LABEL))  # spelt out: it runs for every event


def zone_of(labels: Mapping[str, str]) -> str:
    """The zone a row was written in; "" for one from the global control plane."""
    return labels.get(ZONE_LABEL, "")
