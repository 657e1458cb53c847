"""Read-model rows to Kuma's REST/YAML resource format (`type`, `mesh`, `name`, ...)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from projections import DataplaneRow, MeshRow, MeshServiceRow

__all__ = ["PLURALS", "render_row", "rfc3339"]

PLURALS = {"meshes": "Mesh", "dataplanes": "Dataplane", "meshservices": "MeshService"}
"""URL plural -> resource type. Every kind but Mesh is mesh-scoped."""


def rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def render_row(row: object) -> dict[str, Any]:
    """A decoded read-model row (`projections.decode_row`) as a Kuma resource document."""
    match row:
        case MeshRow(mesh=mesh, meta=meta):
            doc = msgspec.to_builtins(mesh)
        case DataplaneRow(dataplane=dp, meta=meta):
            doc = msgspec.to_builtins(dp)
        case MeshServiceRow(meta=meta):
            doc = {"type": "MeshService", "mesh": row.mesh, "name": row.name,
                   "labels": row.labels, "spec": msgspec.to_builtins(row.spec),
                   "status": msgspec.to_builtins(row.status)}
        case _:
            raise TypeError(f"cannot render {type(row).__name__}")
    doc["creationTime"] = rfc3339(meta.creation_time)
    doc["modificationTime"] = rfc3339(meta.modification_time)
    return doc
