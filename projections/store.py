"""The `ReadModelStore` role and how to open one from a URL.

A store keeps rows `(collection, key) -> canonical JSON` and, per projector, a checkpoint: the
stream sequence its rows reflect. `commit` writes both in one transaction (invariant 5).

Per projector it also keeps a fence: the highest fencing token (the lease revision of
projections.leadership) a leader has claimed. A commit that carries a token below it is refused
(`Fenced`) in the same transaction, so a paused ex-leader's late commit cannot land.

An event a projector could not apply is recorded in the collection `quarantine`, under
`quarantine_key(projector, seq)`, outside any commit (the checkpoint stays in front of it). A
commit whose checkpoint reaches it removes it in its own transaction: the projector got past
that sequence (a release that reads it, or an operator's skip), so the quarantine, `/ready`
and the metric never count an event that is no longer in the way, and a crash cannot leave
one counted behind a checkpoint that passed it.

And per projector, the fold version its rows were folded with (projections.foldversion):
recorded by its first commit only, so a store keeps the version of the fold that started it
from sequence 0, whatever release continues it. A store written before stores recorded one
(whose tables each store adds where missing when it opens) reads as version 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from projections.state import Change

__all__ = ["ReadModelStore", "open_store", "quarantine_key", "quarantined_up_to", "redacted_url",
           "sqlite_path"]


class ReadModelStore(Protocol):
    async def checkpoint(self, projector: str = "main") -> int:
        """The last stream sequence committed by `projector`; 0 if none."""
        ...

    async def fold_version(self, projector: str = "main") -> int | None:
        """The fold version `projector`'s rows were folded with: the one its first commit
        recorded; 1 (`UNRECORDED_FOLD_VERSION`) if it committed without recording one (a
        store written before fold versions); None while it has committed nothing."""
        ...

    async def commit(self, changes: Sequence[Change], checkpoint: int,
                     projector: str = "main", *, fence: int | None = None,
                     fold_version: int | None = None) -> None:
        """Apply `changes` and set the checkpoint, atomically. The checkpoint only moves
        forward; a commit with a checkpoint not above the current one raises StoreCorrupt.
        The quarantine rows of `projector` at or below the checkpoint go in the same
        transaction (`quarantined_up_to`).
        With `fence`, the commit is refused (`Fenced`, nothing written) if a higher token
        has been claimed for `projector`. With `fold_version` (the committing fold's), a
        first commit of `projector` (its checkpoint 0) records it, a later one leaves the
        recorded version as it is, and a commit whose fold version is below the recorded
        one is refused (`NewerFoldVersion`, nothing written): it would mix two releases'
        rules."""
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
        """Record an event the projector could not apply (collection `quarantine`, key
        `quarantine_key`), without moving any checkpoint: the projector halts there and
        resumes at the same event. The first commit past it removes it."""
        ...

    async def rows(self) -> list[tuple[str, str, bytes]]:
        """Every row, sorted by (collection, key)."""
        ...

    async def close(self) -> None: ...


_SEQ_DIGITS = 12


def quarantine_key(projector: str, seq: int) -> str:
    """The key of `projector`'s quarantine row for sequence `seq`: keys sort by sequence."""
    return f"{projector}/{seq:0{_SEQ_DIGITS}d}"


def quarantined_up_to(projector: str, checkpoint: int) -> tuple[str, str, int]:
    """`(after, up_to, length)`: a key `k` of the collection `quarantine` is one of
    `projector`'s at or below `checkpoint` when `after < k <= up_to` and `len(k) == length`
    (the length keeps out the keys of a projector whose name starts with `projector/`)."""
    up_to = quarantine_key(projector, checkpoint)
    return f"{projector}/", up_to, len(up_to)


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite store's URL (`sqlite:///path/to/file.db` or a bare path); None
    for PostgreSQL."""
    if url.startswith(("postgresql://", "postgres://")):
        return None
    return Path(url.removeprefix("sqlite:///").removeprefix("sqlite://"))


async def open_store(url: str) -> ReadModelStore:
    """`sqlite:///path/to/file.db` (or a bare path) or `postgresql://...`."""
    path = sqlite_path(url)
    if path is None:
        from projections.postgres import PostgresReadModelStore

        return await PostgresReadModelStore.open(url)
    from projections.sqlite import SqliteReadModelStore

    return await SqliteReadModelStore.open(path)


def redacted_url(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else f"{scheme}://{user}@{host}"
