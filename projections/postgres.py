"""`PostgresReadModelStore`: read models in PostgreSQL (asyncpg), shared by API replicas.

Same tables and contract as the SQLite store. Keys sort with `COLLATE "C"` so that listing
order is byte order on both backends (exports compare byte for byte). A commit locks the
checkpoint row (`FOR UPDATE`): two projectors racing on one store cannot both move it.

The schema is made where missing each time a store opens (`CREATE TABLE IF NOT EXISTS`), so a
database of an earlier release gains the tables added since (the fold versions) in place, its
rows untouched. PostgreSQL's `IF NOT EXISTS` is not safe against another session creating the
same table at the same moment (one of them fails on a unique index of the catalog), which is
what processes of a new release started together do to a database of the previous one: the
opens take turns on a transaction-scoped advisory lock (`_SCHEMA_LOCK`).
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from projections.errors import Fenced, NewerFoldVersion, StoreCorrupt, StoreUnavailable
from projections.foldversion import UNRECORDED_FOLD_VERSION
from projections.state import Change
from projections.store import quarantined_up_to, redacted_url

__all__ = ["PostgresReadModelStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meshlog_rows (
    collection TEXT COLLATE "C" NOT NULL,
    key        TEXT COLLATE "C" NOT NULL,
    body       BYTEA NOT NULL,
    PRIMARY KEY (collection, key)
);
CREATE TABLE IF NOT EXISTS meshlog_checkpoints (
    projector TEXT PRIMARY KEY,
    seq       BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS meshlog_fences (
    projector TEXT PRIMARY KEY,
    token     BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS meshlog_fold_versions (
    projector TEXT PRIMARY KEY,
    version   BIGINT NOT NULL
);
"""
_SCHEMA_LOCK = 0x6D6573686C6F67
"""The advisory lock key the opens take turns on while they make the schema (b"meshlog")."""
_UNAVAILABLE = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                asyncpg.CannotConnectNowError, TimeoutError)


class PostgresReadModelStore:
    def __init__(self, pool: asyncpg.Pool, url: str) -> None:
        self._pool = pool
        self._url = url

    @classmethod
    async def open(cls, url: str) -> PostgresReadModelStore:
        try:
            pool = await asyncpg.create_pool(url, min_size=1, max_size=4, timeout=10,
                                             command_timeout=60)
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
                await conn.execute(_SCHEMA)
        except (*_UNAVAILABLE, asyncpg.PostgresError) as exc:
            raise StoreUnavailable(
                f"cannot open PostgreSQL read models at {redacted_url(url)}: {exc}") from exc
        return cls(pool, url)

    async def checkpoint(self, projector: str = "main") -> int:
        seq = await self._fetchval(
            "SELECT seq FROM meshlog_checkpoints WHERE projector = $1", projector)
        if seq is None:
            return 0
        if not isinstance(seq, int):  # a BIGINT column: asyncpg gives an int
            raise StoreCorrupt(f"checkpoint of {projector!r} is not an integer: {seq!r}")
        return seq

    async def fold_version(self, projector: str = "main") -> int | None:
        version = await self._fetchval(
            "SELECT version FROM meshlog_fold_versions WHERE projector = $1", projector)
        if version is not None:
            if not isinstance(version, int):  # a BIGINT column: asyncpg gives an int
                raise StoreCorrupt(f"fold version of {projector!r} is not an integer: "
                                   f"{version!r}")
            return version
        return UNRECORDED_FOLD_VERSION if await self.checkpoint(projector) else None

    async def claim(self, projector: str, fence: int) -> None:
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                await _check_fence(conn, projector, fence)
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"PostgreSQL claim failed: {exc}") from exc

    async def commit(self, changes: Sequence[Change], checkpoint: int,
                     projector: str = "main", *, fence: int | None = None,
                     fold_version: int | None = None) -> None:
        upserts = [c for c in changes if c.body is not None]
        deletes = [c for c in changes if c.body is None]
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                if fence is not None:
                    await _check_fence(conn, projector, fence)
                await conn.execute(
                    "INSERT INTO meshlog_checkpoints (projector, seq) VALUES ($1, 0) "
                    "ON CONFLICT (projector) DO NOTHING", projector)
                current = await conn.fetchval(
                    "SELECT seq FROM meshlog_checkpoints WHERE projector = $1 FOR UPDATE",
                    projector)
                if checkpoint <= current:
                    raise StoreCorrupt(
                        f"checkpoint of {projector!r} would move from {current} to {checkpoint}")
                if fold_version is not None:
                    await _record_fold_version(conn, projector, fold_version, current)
                if upserts:
                    await conn.execute(
                        "INSERT INTO meshlog_rows (collection, key, body) "
                        "SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[]) "
                        "ON CONFLICT (collection, key) DO UPDATE SET body = excluded.body",
                        [c.collection for c in upserts], [c.key for c in upserts],
                        [c.body for c in upserts])
                if deletes:
                    await conn.execute(
                        "DELETE FROM meshlog_rows r USING unnest($1::text[], $2::text[]) "
                        "AS d(collection, key) WHERE r.collection = d.collection "
                        "AND r.key = d.key",
                        [c.collection for c in deletes], [c.key for c in deletes])
                await conn.execute(
                    "UPDATE meshlog_checkpoints SET seq = $2 WHERE projector = $1",
                    projector, checkpoint)
                await conn.execute(
                    "DELETE FROM meshlog_rows WHERE collection = 'quarantine' AND key > $1 "
                    "AND key <= $2 AND length(key) = $3",
                    *quarantined_up_to(projector, checkpoint))
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"PostgreSQL commit failed: {exc}") from exc

    async def get(self, collection: str, key: str) -> bytes | None:
        body = await self._fetchval(
            "SELECT body FROM meshlog_rows WHERE collection = $1 AND key = $2", collection, key)
        if body is None:
            return None
        if not isinstance(body, bytes):  # a BYTEA column: asyncpg gives bytes
            raise StoreCorrupt(f"row {collection}/{key} has a body of type {type(body).__name__}")
        return body

    async def scan(self, collection: str, prefix: str = "") -> list[tuple[str, bytes]]:
        rows = await self._fetch(
            "SELECT key, body FROM meshlog_rows WHERE collection = $1 "
            "AND left(key, $2) = $3 ORDER BY key", collection, len(prefix), prefix)
        return [(r["key"], bytes(r["body"])) for r in rows]

    async def quarantine(self, key: str, body: bytes) -> None:
        await self._fetchval(
            "INSERT INTO meshlog_rows (collection, key, body) VALUES ('quarantine', $1, $2) "
            "ON CONFLICT (collection, key) DO UPDATE SET body = excluded.body", key, body)

    async def rows(self) -> list[tuple[str, str, bytes]]:
        rows = await self._fetch(
            "SELECT collection, key, body FROM meshlog_rows ORDER BY collection, key")
        return [(r["collection"], r["key"], bytes(r["body"])) for r in rows]

    async def close(self) -> None:
        await self._pool.close()

    async def _fetchval(self, query: str, *args: object) -> object:
        try:
            return await self._pool.fetchval(query, *args)
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"PostgreSQL query failed: {exc}") from exc

    async def _fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        try:
            return await self._pool.fetch(query, *args)
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"PostgreSQL query failed: {exc}") from exc


async def _check_fence(conn: PoolConnectionProxy[asyncpg.Record], projector: str,
                       fence: int) -> None:
    """Inside a transaction: lock the fence row, refuse a token below it, else store it."""
    await conn.execute(
        "INSERT INTO meshlog_fences (projector, token) VALUES ($1, 0) "
        "ON CONFLICT (projector) DO NOTHING", projector)
    stored = await conn.fetchval(
        "SELECT token FROM meshlog_fences WHERE projector = $1 FOR UPDATE", projector)
    if stored > fence:
        raise Fenced(f"projector {projector!r}: token {fence} is fenced off by {stored}")
    await conn.execute(
        "UPDATE meshlog_fences SET token = $2 WHERE projector = $1", projector, fence)


async def _record_fold_version(conn: PoolConnectionProxy[asyncpg.Record], projector: str,
                               version: int, current: int) -> None:
    """Inside the commit's transaction (the checkpoint row locked), its checkpoint `current`
    before it: a first commit records `version`; a later one checks it is not below the
    recorded one."""
    if current == 0:
        await conn.execute(
            "INSERT INTO meshlog_fold_versions (projector, version) VALUES ($1, $2) "
            "ON CONFLICT (projector) DO UPDATE SET version = excluded.version",
            projector, version)
        return
    recorded = await conn.fetchval(
        "SELECT version FROM meshlog_fold_versions WHERE projector = $1", projector)
    recorded = UNRECORDED_FOLD_VERSION if recorded is None else recorded
    if recorded > version:
        raise NewerFoldVersion(
            f"projector {projector!r}'s rows were folded with fold version {recorded}, a "
            f"commit with {version} would mix two releases' rules")
