"""Read-model stores for tests: SQLite in a temp dir, PostgreSQL in a database of its own.

PostgreSQL is part of this machine kind (127.0.0.1:5432, trust auth). Where it is not
reachable the PostgreSQL cases skip with the reason, except in CI (`CI` set), where they fail:
CI must run them.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from projections import ReadModelStore, open_store

PG_ADMIN_URL = os.environ.get("MESHLOG_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ["sqlite", "postgres"]


async def _admin() -> asyncpg.Connection:
    try:
        return await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        message = f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc}"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI must run the PostgreSQL cases)")
        pytest.skip(message)


@contextlib.asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """A fresh database; its URL; dropped afterwards."""
    name = f"meshlog_test_{uuid.uuid4().hex[:12]}"
    admin = await _admin()
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        base = PG_ADMIN_URL.rsplit("/", 1)[0]
        yield f"{base}/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@contextlib.asynccontextmanager
async def store_url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / f'rm-{uuid.uuid4().hex[:8]}.db'}"
    else:
        async with postgres_database() as url:
            yield url


@contextlib.asynccontextmanager
async def open_test_store(backend: str, tmp_path: Path) -> AsyncIterator[ReadModelStore]:
    async with store_url(backend, tmp_path) as url:
        store = await open_store(url)
        try:
            yield store
        finally:
            await store.close()
