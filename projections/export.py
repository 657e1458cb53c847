"""Canonical export of read models: sorted, stable JSON, so two states compare byte for byte."""

from __future__ import annotations

import json

from projections.store import ReadModelStore

__all__ = ["export_store"]


async def export_store(store: ReadModelStore, projector: str = "main") -> bytes:
    """`{"checkpoint": N, "rows": {collection: {key: row}}}` with sorted keys, one layout."""
    rows: dict[str, dict[str, object]] = {}
    for collection, key, body in await store.rows():
        rows.setdefault(collection, {})[key] = json.loads(body)
    doc = {"checkpoint": await store.checkpoint(projector), "rows": rows}
    return (json.dumps(doc, sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode()
