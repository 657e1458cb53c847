"""Read-model rows to Kuma's REST/YAML resource format (`type`, `mesh`, `name`, ...)."""

from __future__ import annotations

from typing import Any

import msgspec

from events import POLICY_KINDS, rfc3339
from events.bus.insights import ProxyInsight
from projections import (
    DataplaneRow,
    HostnameGeneratorRow,
    MeshMultiZoneServiceRow,
    MeshRow,
    MeshServiceRow,
    PolicyRow,
    ZoneIngressRow,
)

__all__ = ["GLOBAL_KINDS", "PLURALS", "render_insight", "render_row"]

PLURALS = {"meshes": "Mesh", "dataplanes": "Dataplane", "meshservices": "MeshService",
           "hostnamegenerators": "HostnameGenerator",
           **{kind.plural: kind.type_name for kind in POLICY_KINDS},
           "meshmultizoneservices": "MeshMultiZoneService",
           "zoneingresses": "ZoneIngress"}
"""URL plural -> resource type. Every kind but the GLOBAL_KINDS is mesh-scoped."""
GLOBAL_KINDS = frozenset({"Mesh", "HostnameGenerator", "ZoneIngress"})
"""At `/meshes/{name}`, `/hostnamegenerators/{name}` and `/zoneingresses/{name}`, as in
Kuma."""


def render_row(row: object) -> dict[str, Any]:
    """A decoded read-model row (`projections.decode_row`) as a Kuma resource document."""
    doc: dict[str, Any]  # `to_builtins` of a Struct: a JSON object
    match row:
        case MeshRow(mesh=mesh, meta=meta):
            doc = msgspec.to_builtins(mesh)
        case DataplaneRow(dataplane=dp, meta=meta):
            doc = msgspec.to_builtins(dp)
            if row.conditions:
                doc["status"] = {"conditions": msgspec.to_builtins(row.conditions)}
        case HostnameGeneratorRow(generator=generator, meta=meta):
            doc = msgspec.to_builtins(generator)
        case PolicyRow(policy=policy, meta=meta):  # every kind (`events.policy_kinds`)
            doc = msgspec.to_builtins(policy)
        case ZoneIngressRow(zoneingress=zoneingress, meta=meta):
            doc = msgspec.to_builtins(zoneingress)
        case MeshServiceRow(meta=meta):
            status = msgspec.to_builtins(row.status)
            # the row omits its default; a user reads the state either way (Kuma shows it)
            status.setdefault("state", row.status.state)
            spec = msgspec.to_builtins(row.spec)
            for port, shown in zip(row.spec.ports, spec["ports"], strict=True):
                # omitted as a default in the row; Kuma shows it (`appProtocol: tcp`)
                shown.setdefault("appProtocol", port.app_protocol)
            doc = {"type": "MeshService", "mesh": row.mesh, "name": row.name,
                   "labels": row.labels, "spec": spec, "status": status}
        case MeshMultiZoneServiceRow(meta=meta):
            # `backends` is the gateways' business, not Kuma's status
            spec = msgspec.to_builtins(row.spec)
            for mz_port, shown in zip(row.spec.ports, spec["ports"], strict=True):
                shown.setdefault("appProtocol", mz_port.app_protocol)
            doc = {"type": "MeshMultiZoneService", "mesh": row.mesh, "name": row.name,
                   "labels": row.labels, "spec": spec,
                   "status": msgspec.to_builtins(row.status)}
        case _:
            raise TypeError(f"cannot render {type(row).__name__}")
    doc["creationTime"] = rfc3339(meta.creation_time)
    doc["modificationTime"] = rfc3339(meta.modification_time)
    return doc


# --- insights (`_overview`) -------------------------------------------------------------------

_XDS_SHORT = {"Cluster": "cds", "ClusterLoadAssignment": "eds", "Listener": "lds",
              "RouteConfiguration": "rds", "Secret": "sds"}
"""Kuma's short names of the xDS types in a subscription's status (and in Envoy's stats:
`sds` for secrets); a type not listed keeps its type URL."""


def render_insight(insight: ProxyInsight, *, connected: bool, disconnected_at: int | None
                   ) -> dict[str, Any]:
    """An `events.bus.insights.ProxyInsight` as Kuma's `dataplaneInsight` (one subscription, the
    latest). `connected` and `disconnected_at` are the caller's verdict: a stream whose gateway
    stopped beating counts as gone since the last beat."""
    per_type: dict[str, dict[str, Any]] = {}
    total = {"responsesSent": 0, "responsesAcknowledged": 0, "responsesRejected": 0}
    for type_url, counters in sorted(insight.types.items()):
        counts = {"responsesSent": counters.responses_sent,
                  "responsesAcknowledged": counters.acks,
                  "responsesRejected": counters.nacks}
        for key in total:
            total[key] += counts[key]
        stats: dict[str, int | str] = {**counts}
        if counters.last_acked_version:
            stats["lastAckedVersion"] = counters.last_acked_version
        if counters.last_nack_message:
            stats["lastNackMessage"] = counters.last_nack_message
        short = _XDS_SHORT.get(type_url.rpartition(".")[2], type_url)
        per_type[short] = stats
    subscription: dict[str, Any] = {
        "id": insight.session,
        "controlPlaneInstanceId": insight.gateway,
        "connectTime": rfc3339(insight.connected_at),
        "protocol": insight.protocol,
        "status": {"total": total, **per_type},
    }
    if disconnected_at is not None:
        subscription["disconnectTime"] = rfc3339(disconnected_at)
    if insight.user_agent:
        subscription["userAgent"] = insight.user_agent
    if insight.self_registered:
        subscription["selfRegistered"] = True
    return {"connected": connected, "subscriptions": [subscription]}
