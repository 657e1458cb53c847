"""Fold versions (projections.foldversion): a store records the fold version of the fold that
started it; one of an older fold is outdated (said so, and folded on), one of a newer fold is
refused; stores of the release before (no record, no table) are migrated in place."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import asyncpg
import pytest
from prometheus_client import REGISTRY

from events import (
    JetStreamEventLog,
    Mesh,
    MeshApplied,
    MeshDeleted,
    SigningKeyCreated,
    resource_subject,
    signing_key_subject,
)
from events.identity import SecretKey
from events.identity.tokens import generate_key_pair
from projections import (
    FOLD_VERSION,
    FoldVersions,
    NewerFoldVersion,
    Projector,
    open_store,
    rebuild,
)
from projections.metrics import LAST_FOLDED
from projections.postgres import PostgresReadModelStore
from projections.sqlite import SqliteReadModelStore
from services.runtime.standby import single_projector_readiness
from tests.stores import postgres_database

# The schema of the release before fold versions, as it made its stores.
_SQLITE_SCHEMA_BEFORE = """
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
"""
_POSTGRES_SCHEMA_BEFORE = """
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
"""


# --- migration of a store of the release before ----------------------------------------------


async def test_a_sqlite_file_of_the_release_before_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "before.db"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(_SQLITE_SCHEMA_BEFORE)
        db.execute("INSERT INTO rows VALUES ('mesh', 'default', X'7B7D')")
        db.execute("INSERT INTO checkpoints VALUES ('main', 42)")
        db.execute("INSERT INTO fences VALUES ('main', 3)")
    db.close()
    store = await SqliteReadModelStore.open(path)
    try:
        assert await store.rows() == [("mesh", "default", b"{}")]
        assert await store.checkpoint() == 42
        assert await store.fold_version() == 1  # no record: the release before folded it
        await store.commit([], 43, fence=3, fold_version=FOLD_VERSION)
        assert await store.fold_version() == 1  # continued, not started, by this release
        with pytest.raises(Exception, match="fenced off by 3"):
            await store.commit([], 44, fence=2)  # the fence came through
    finally:
        await store.close()
    # the release before opens the migrated file as it did: its tables are all there
    with sqlite3.connect(path) as db:
        db.executescript(_SQLITE_SCHEMA_BEFORE)
        assert db.execute("SELECT seq FROM checkpoints").fetchall() == [(43,)]
    db.close()


async def _postgres_before(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(_POSTGRES_SCHEMA_BEFORE)
        await conn.execute("INSERT INTO meshlog_rows VALUES ('mesh', 'default', '\\x7b7d')")
        await conn.execute("INSERT INTO meshlog_checkpoints VALUES ('main', 42)")
        await conn.execute("INSERT INTO meshlog_fences VALUES ('main', 3)")
    finally:
        await conn.close()


async def test_a_postgres_database_of_the_release_before_is_migrated_in_place() -> None:
    async with postgres_database() as url:
        await _postgres_before(url)
        store = await PostgresReadModelStore.open(url)
        try:
            assert await store.rows() == [("mesh", "default", b"{}")]
            assert await store.checkpoint() == 42
            assert await store.fold_version() == 1
            await store.commit([], 43, fence=3, fold_version=FOLD_VERSION)
            assert await store.fold_version() == 1
        finally:
            await store.close()


async def test_processes_of_a_new_release_started_together_migrate_one_postgres_database(
        ) -> None:
    """API replicas and projectors upgraded at once all open the database of the release
    before: each makes the new table if missing, and none fails for another's doing so."""
    async with postgres_database() as url:
        for _ in range(3):
            await _postgres_before(url)
            stores = await asyncio.gather(*(PostgresReadModelStore.open(url) for _ in range(8)))
            try:
                assert {await s.fold_version() for s in stores} == {1}
            finally:
                await asyncio.gather(*(s.close() for s in stores))
            conn = await asyncpg.connect(url)
            try:  # back to the release before, for the next round
                await conn.execute("DROP TABLE meshlog_fold_versions, meshlog_rows, "
                                   "meshlog_checkpoints, meshlog_fences")
            finally:
                await conn.close()


# --- the projector --------------------------------------------------------------------------


async def _mesh_key_and_deletion(event_log: JetStreamEventLog) -> None:
    """A Mesh, its dataplane-token key, the Mesh deleted: fold version 2 removes the key's
    row at the deletion, fold version 1 kept it."""
    await event_log.append(resource_subject("Mesh", None, "default"),
                           MeshApplied(at=1, mesh=Mesh(name="default")),
                           expected_last_subject_seq=0, msg_id="mesh")
    private, public = generate_key_pair()
    await event_log.append(
        signing_key_subject("dataplane-token", "default", 1),
        SigningKeyCreated(at=2, purpose="dataplane-token", mesh="default", serial=1,
                          public_key=public, private_key=SecretKey.generate().seal(
                              private, purpose="signingkey:dataplane-token/default/1")),
        expected_last_subject_seq=0, msg_id="key")
    await event_log.append(resource_subject("Mesh", None, "default"), MeshDeleted(
        at=3, name="default"), expected_last_subject_seq=1, msg_id="deleted")


async def _more(event_log: JetStreamEventLog, n: int) -> None:
    for i in range(n):
        await event_log.append(resource_subject("Mesh", None, f"m{i}"),
                               MeshApplied(at=10 + i, mesh=Mesh(name=f"m{i}")),
                               expected_last_subject_seq=0, msg_id=f"m{i}")


def _gauge(name: str, projector: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"projector": projector})


async def test_a_fresh_fold_records_the_codes_fold_version(
        event_log: JetStreamEventLog, tmp_path: Path) -> None:
    await _more(event_log, 3)
    store = await open_store(f"sqlite:///{tmp_path / 'fresh.db'}")
    try:
        projector = Projector(event_log, store, None, zone="default", name="fv-fresh")
        await projector.run(until_seq=2)
        assert await store.fold_version("fv-fresh") == FOLD_VERSION
        assert projector.fold_versions == FoldVersions(FOLD_VERSION)
        await Projector(event_log, store, None, zone="default", name="fv-fresh").run(
            until_seq=3)
        assert await store.fold_version("fv-fresh") == FOLD_VERSION
        assert _gauge("meshlog_read_models_outdated", "fv-fresh") == 0
        assert _gauge("meshlog_read_models_fold_version", "fv-fresh") == FOLD_VERSION
    finally:
        await store.close()


async def test_a_store_of_the_release_before_is_outdated_said_so_and_folded_on(
        event_log: JetStreamEventLog, tmp_path: Path, caplog: pytest.LogCaptureFixture
        ) -> None:
    """What the release before left: its rows (the deleted mesh's key kept) and its schema,
    without fold versions. This release reads it as fold version 1, warns with what to do,
    reports it (`/ready`, metrics), and folds on; a rebuild makes the rows of today's fold."""
    await _mesh_key_and_deletion(event_log)
    path = tmp_path / "before.db"
    store = await open_store(f"sqlite:///{path}")
    await Projector(event_log, store, None, zone="default").run(until_seq=1)
    await Projector(event_log, store, None, zone="default").run(until_seq=2)
    key_row = await store.get("signingkey", "default/dataplane-token-1")
    assert key_row is not None
    await Projector(event_log, store, None, zone="default").run(until_seq=3)
    await store.close()
    with sqlite3.connect(path) as db:  # as the release before left it
        db.execute("DROP TABLE fold_versions")
        db.execute("INSERT INTO rows VALUES ('signingkey', 'default/dataplane-token-1', ?)",
                   (key_row,))
    db.close()
    await _more(event_log, 2)

    store = await open_store(f"sqlite:///{path}")
    try:
        projector = Projector(event_log, store, None, zone="default")
        with caplog.at_level(logging.WARNING, logger="meshlog.projector"):
            await projector.run(until_seq=5)
        assert projector.fold_versions == FoldVersions(1)
        assert projector.fold_versions.outdated
        warning, = (r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
        assert f"fold version 1, this release folds with {FOLD_VERSION}" in warning
        assert "meshlog replay --database NEW" in warning
        assert single_projector_readiness(projector)[1]["foldVersion"] == {
            "readModels": 1, "code": FOLD_VERSION, "outdated": True}
        assert _gauge("meshlog_read_models_outdated", "main") == 1
        assert _gauge("meshlog_read_models_fold_version", "main") == 1
        assert await store.checkpoint() == 5  # folded on
        assert await store.fold_version() == 1  # and still what the release before began
        replayed = await open_store(f"sqlite:///{tmp_path / 'replayed.db'}")
        try:
            await rebuild(event_log, replayed, zone="default")
            assert await replayed.fold_version() == FOLD_VERSION
            outdated_rows = await store.rows()
            assert ("signingkey", "default/dataplane-token-1", key_row) in outdated_rows
            assert await replayed.rows() == [r for r in outdated_rows if r[0] != "signingkey"]
        finally:
            await replayed.close()
    finally:
        await store.close()


async def test_a_store_of_a_newer_fold_is_refused_before_anything_is_folded(
        event_log: JetStreamEventLog, tmp_path: Path) -> None:
    await _more(event_log, 3)
    path = tmp_path / "newer.db"
    store = await open_store(f"sqlite:///{path}")
    await Projector(event_log, store, None, zone="default").run(until_seq=2)
    await store.close()
    with sqlite3.connect(path) as db:  # as a newer release would have made it
        db.execute("UPDATE fold_versions SET version = ?", (FOLD_VERSION + 1,))
    db.close()
    store = await open_store(f"sqlite:///{path}")
    try:
        with pytest.raises(NewerFoldVersion) as refused:
            await Projector(event_log, store, None, zone="default").run(until_seq=3)
        assert (f"were folded with fold version {FOLD_VERSION + 1}, newer than this "
                f"release's {FOLD_VERSION}") in str(refused.value)
        assert await store.checkpoint() == 2
    finally:
        await store.close()


async def test_a_rebuild_beside_the_live_projector_leaves_its_metrics_alone(
        event_log: JetStreamEventLog, tmp_path: Path) -> None:
    """`meshlog up` rebuilds outdated read models while its live projector of the same name
    folds: the rebuild's positions must not show as the live projector's."""
    await _more(event_log, 3)
    LAST_FOLDED.labels("main").set(-1)  # what the live projector would have said
    new = await open_store(f"sqlite:///{tmp_path / 'new.db'}")
    try:
        assert await rebuild(event_log, new, zone="default") == 3
        assert _gauge("meshlog_projector_last_folded_sequence", "main") == -1
    finally:
        await new.close()
