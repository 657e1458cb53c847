"""Canonical export of read models: sorted, stable JSON, so two states compare byte for byte.

Private keys (workload keys, sealed CA keys) are exported as their SHA-256: two exports still
compare byte for byte, and an export never shows a key."""

from __future__ import annotations

import hashlib
import json

from projections.store import ReadModelStore

__all__ = ["export_store"]

_WITH_KEYS = frozenset({"ca", "identity"})


async def export_store(store: ReadModelStore, projector: str = "main") -> bytes:
    """`{"checkpoint": N, "rows": {collection: {key: row}}}` with sorted keys, one layout."""
    rows: dict[str, dict[str, object]] = {}
    for collection, key, body in await store.rows():
        row = json.loads(body)
        if collection in _WITH_KEYS:
            row["key"] = "sha256:" + hashlib.sha256(row["key"].encode()).hexdigest()
        rows.setdefault(collection, {})[key] = row
    doc = {"checkpoint": await store.checkpoint(projector), "rows": rows}
    return (json.dumps(doc, sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode()
