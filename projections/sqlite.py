"""`SqliteReadModelStore`: read models in SQLite (aiosqlite), WAL mode so readers in other
processes (the API) never block the projector.

The schema is made where missing each time a store opens (`CREATE TABLE IF NOT EXISTS`: a
no-op read of the schema where the table is there), so a file of an earlier release gains
the tables added since (the fold versions) in place, its rows untouched; an earlier release
opening a later file leaves the tables it does not know alone."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import aiosqlite

from projections.errors import Fenced, NewerFoldVersion, StoreCorrupt, StoreUnavailable
from projections.foldversion import UNRECORDED_FOLD_VERSION
from projections.state import Change
from projections.store import quarantined_up_to

__all__ = ["SqliteReadModelStore"]

_OPEN_S = 10.0
"""How long opening waits for another connection's lock (SQLite's busy timeout, and the
retries of `SqliteReadModelStore.open`)."""
_OPEN_RETRY_S = 0.05

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rows (
    collection TEXT NOT NULL,
    key        TEXT NOT NULL,
    body       BLOB NOT NULL,
    PRIMARY KEY (collection, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
    projector TEXT PRIMARY KEY,
    seq       INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS fences (
    projector TEXT PRIMARY KEY,
    token     INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS fold_versions (
    projector TEXT PRIMARY KEY,
    version   INTEGER NOT NULL
);
"""


class SqliteReadModelStore:
    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path
        # One connection carries one transaction at a time: commits take turns.
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path) -> SqliteReadModelStore:
        """The store at `path`, made if missing. Processes that open a new file at the same
        time (two projectors started together) race to make it a WAL database and its tables;
        SQLite answers the loser "database is locked" at once, without waiting its busy
        timeout (a lock it cannot upgrade), so that is tried again for up to `_OPEN_S`."""
        path.parent.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _OPEN_S
        while True:
            try:
                db = await aiosqlite.connect(path, timeout=_OPEN_S)
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"cannot open SQLite read models at {path}: "
                                       f"{exc}") from exc
            try:
                await db.execute("PRAGMA journal_mode=WAL")
                await db.execute("PRAGMA synchronous=NORMAL")
                await db.executescript(_SCHEMA)
                await db.commit()
                return cls(db, path)
            except sqlite3.Error as exc:
                # closed, or its thread keeps the process from ever exiting
                with contextlib.suppress(sqlite3.Error):
                    await db.close()
                if _busy(exc) and loop.time() < deadline:
                    await asyncio.sleep(_OPEN_RETRY_S)
                    continue
                raise StoreUnavailable(f"cannot open SQLite read models at {path}: "
                                       f"{exc}") from exc

    async def checkpoint(self, projector: str = "main") -> int:
        async with self._db.execute(
            "SELECT seq FROM checkpoints WHERE projector = ?", (projector,)
        ) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def fold_version(self, projector: str = "main") -> int | None:
        async with self._db.execute(
            "SELECT version FROM fold_versions WHERE projector = ?", (projector,)
        ) as cur:
            row = await cur.fetchone()
        if row is not None:
            return int(row[0])
        return UNRECORDED_FOLD_VERSION if await self.checkpoint(projector) else None

    async def commit(self, changes: Sequence[Change], checkpoint: int,
                     projector: str = "main", *, fence: int | None = None,
                     fold_version: int | None = None) -> None:
        async with self._write_lock:
            await self._commit(changes, checkpoint, projector, fence, fold_version)

    async def claim(self, projector: str, fence: int) -> None:
        async with self._write_lock:
            try:
                await self._db.execute("BEGIN IMMEDIATE")
                try:
                    await self._check_fence(projector, fence)
                except BaseException:
                    await self._db.rollback()
                    raise
                await self._db.commit()
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"SQLite write failed at {self.path}: {exc}") from exc

    async def _check_fence(self, projector: str, fence: int) -> None:
        """Inside a write transaction (BEGIN IMMEDIATE: writers take turns across processes):
        refuse a token below the stored fence, else store it."""
        async with self._db.execute(
            "SELECT token FROM fences WHERE projector = ?", (projector,)
        ) as cur:
            row = await cur.fetchone()
        if row is not None and int(row[0]) > fence:
            raise Fenced(f"projector {projector!r}: token {fence} is fenced off by {row[0]}")
        await self._db.execute(
            "INSERT INTO fences (projector, token) VALUES (?, ?) "
            "ON CONFLICT (projector) DO UPDATE SET token = excluded.token", (projector, fence))

    async def _commit(self, changes: Sequence[Change], checkpoint: int, projector: str,
                      fence: int | None, fold_version: int | None) -> None:
        try:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                if fence is not None:
                    await self._check_fence(projector, fence)
                current = await self.checkpoint(projector)
                if checkpoint <= current:
                    raise StoreCorrupt(
                        f"checkpoint of {projector!r} would move from {current} to {checkpoint}"
                    )
                if fold_version is not None:
                    await self._record_fold_version(projector, fold_version, current)
                upserts = [(c.collection, c.key, c.body) for c in changes if c.body is not None]
                deletes = [(c.collection, c.key) for c in changes if c.body is None]
                await self._db.executemany(
                    "INSERT INTO rows (collection, key, body) VALUES (?, ?, ?) "
                    "ON CONFLICT (collection, key) DO UPDATE SET body = excluded.body", upserts)
                await self._db.executemany(
                    "DELETE FROM rows WHERE collection = ? AND key = ?", deletes)
                await self._db.execute(
                    "INSERT INTO checkpoints (projector, seq) VALUES (?, ?) "
                    "ON CONFLICT (projector) DO UPDATE SET seq = excluded.seq",
                    (projector, checkpoint))
                await self._db.execute(
                    "DELETE FROM rows WHERE collection = 'quarantine' AND key > ? "
                    "AND key <= ? AND length(key) = ?",
                    quarantined_up_to(projector, checkpoint))
            except BaseException:
                await self._db.rollback()
                raise
            await self._db.commit()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite commit failed at {self.path}: {exc}") from exc

    async def _record_fold_version(self, projector: str, version: int, current: int) -> None:
        """Inside the commit's transaction, its checkpoint `current` before it: a first
        commit records `version`; a later one checks it is not below the recorded one."""
        if current == 0:
            await self._db.execute(
                "INSERT INTO fold_versions (projector, version) VALUES (?, ?) "
                "ON CONFLICT (projector) DO UPDATE SET version = excluded.version",
                (projector, version))
            return
        recorded = await self.fold_version(projector)
        if recorded is not None and recorded > version:
            raise NewerFoldVersion(
                f"{self.path}: projector {projector!r}'s rows were folded with fold version "
                f"{recorded}, a commit with {version} would mix two releases' rules")

    async def get(self, collection: str, key: str) -> bytes | None:
        async with self._db.execute(
            "SELECT body FROM rows WHERE collection = ? AND key = ?", (collection, key)
        ) as cur:
            row = await cur.fetchone()
        return bytes(row[0]) if row else None

    async def scan(self, collection: str, prefix: str = "") -> list[tuple[str, bytes]]:
        async with self._db.execute(
            "SELECT key, body FROM rows WHERE collection = ? AND substr(key, 1, ?) = ? "
            "ORDER BY key", (collection, len(prefix), prefix)
        ) as cur:
            return [(k, bytes(b)) for k, b in await cur.fetchall()]

    async def quarantine(self, key: str, body: bytes) -> None:
        async with self._write_lock:
            try:
                await self._db.execute(
                    "INSERT INTO rows (collection, key, body) VALUES ('quarantine', ?, ?) "
                    "ON CONFLICT (collection, key) DO UPDATE SET body = excluded.body",
                    (key, body))
                await self._db.commit()
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"SQLite write failed at {self.path}: {exc}") from exc

    async def rows(self) -> list[tuple[str, str, bytes]]:
        async with self._db.execute(
            "SELECT collection, key, body FROM rows ORDER BY collection, key"
        ) as cur:
            return [(c, k, bytes(b)) for c, k, b in await cur.fetchall()]

    async def close(self) -> None:
        await self._db.close()


def _busy(exc: sqlite3.Error) -> bool:
    """Is `exc` another connection's lock (SQLITE_BUSY, SQLITE_LOCKED)?"""
    return getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
