"""Provenance labels: the `kuma.io/origin`, `kuma.io/zone` and `kuma.io/env` labels the fold
puts on what it folds, from the provenance of the event (`events.provenance_of`), and which
derived rows inherit from the row they were derived from.

The labels themselves (Kuma's ComputeLabels) are defined in `events.labels`, which the command
path shares: it drops them from what a user applies, as the fold sets them anyway.
"""

from __future__ import annotations

from collections.abc import Mapping

from events.labels import ENV_LABEL, ORIGIN_LABEL, ZONE_LABEL, provenance_labels

__all__ = [
    "ENV_LABEL",
    "ORIGIN_LABEL",
    "ZONE_LABEL",
    "inherited_labels",
    "provenance_labels",
    "same_provenance",
    "zone_of",
]

_PROVENANCE_LABELS = (ORIGIN_LABEL, ZONE_LABEL, ENV_LABEL)


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
