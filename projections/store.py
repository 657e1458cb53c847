"""The `ReadModelStore` role and how to open one from a URL.

A store keeps rows `(collection, key) -> canonical JSON` and, per projector, a checkpoint: the
stream sequence its rows reflect. `commit` writes both in one transaction (invariant 5).

Per projector it also keeps a fence: the highest fencing token (the lease revision of
projections.leadership) a leader has claimed. A commit that carries a token below it is refused
(`Fenced`) in the same transaction, so a paused ex-leader's late commit cannot land.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from projections.state import Change

__all__ = ["ReadModelStore", "open_store"]


class ReadModelStore(Protocol):
    async def checkpoint(self, projector: str = "main") -> int:
        """The last stream sequence committed by `projector`; 0 if none."""
        ...

    async def commit(self, changes: Sequence[Change], checkpoint: int,
                     projector: str = "main", *, fence: int | None = None) -> None:
        """Apply `changes` and set the checkpoint, atomically. The checkpoint only moves
        forward; a commit with a checkpoint not above the current one raises StoreCorrupt.
        With `fence`, the commit is refused (`Fenced`, nothing written) if a higher token
        has been claimed for `projector`."""
        ...

    async def claim(self, projector: str, fence: int) -> None:
        """Raise the fence of `projector` to `fence`, so commits with lower tokens are
        refused from now on; `Fenced` if a higher one is already claimed."""
        ...

    async def get(self, collection: str, key: str) -> bytes | None: ...

    async def scan(self, collection: str, prefix: str = "") -> list[tuple[str, bytes]]:
        """Rows of `collection` whose key starts with `prefix`, sorted by key."""
        ...

    async def quarantine(self, key: str, body: bytes) -> None:
        """Record an event the projector could not apply (collection `quarantine`), without
        moving any checkpoint: the projector halts there and resumes at the same event."""
        ...

    async def rows(self) -> list[tuple[str, str, bytes]]:
        """Every row, sorted by (collection, key)."""
        ...

    async def close(self) -> None: ...


async def open_store(url: str) -> ReadModelStore:
    """`sqlite:///path/to/file.db` (or a bare path) or `postgresql://...`."""
    if url.startswith(("postgresql://", "postgres://")):
        from projections.postgres import PostgresReadModelStore

        return await PostgresReadModelStore.open(url)
    path = url.removeprefix("sqlite:///").removeprefix("sqlite://")
    from projections.sqlite import SqliteReadModelStore

    return await SqliteReadModelStore.open(Path(path))
