"""Provenance labels: the `kuma.io/origin`, `kuma.io/zone` and `kuma.io/env` labels the fold
puts on what it folds, from the provenance of the event (`events.provenance_of`), and which
derived rows inherit from the row they were derived from.

Kuma's computed labels (kumahq/kuma v2.14 `pkg/core/resources/model/resource.go`
ComputeLabels): a resource of origin `zone` gets `kuma.io/zone` and `kuma.io/env`; one of
origin `global` gets neither. meshlog's zones are universal zones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import assert_never

from events import Provenance

__all__ = [
    "ENV_LABEL",
    "ORIGIN_LABEL",
    "ZONE_LABEL",
    "inherited_labels",
    "provenance_labels",
    "same_provenance",
    "zone_of",
]

ORIGIN_LABEL = "kuma.io/origin"
ZONE_LABEL = "kuma.io/zone"
ENV_LABEL = "kuma.io/env"
_PROVENANCE_LABELS = (ORIGIN_LABEL, ZONE_LABEL, ENV_LABEL)


def provenance_labels(provenance: Provenance) -> dict[str, str]:
    """The labels of a resource written by the control plane `provenance` names."""
    match provenance.origin:
        case "zone":
            return {ORIGIN_LABEL: "zone", ZONE_LABEL: provenance.zone, ENV_LABEL: "universal"}
        case "global":
            return {ORIGIN_LABEL: "global"}
        case _:
            assert_never(provenance.origin)


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
