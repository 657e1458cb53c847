"""One contract for every read-model store, run against SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from projections import (
    Change,
    NewerFoldVersion,
    ReadModelStore,
    StoreCorrupt,
    StoreUnavailable,
    open_store,
)
from projections.errors import Fenced
from tests.stores import BACKENDS, open_test_store


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ReadModelStore]:
    async with open_test_store(request.param, tmp_path) as s:
        yield s


def _put(collection: str, key: str, body: str) -> Change:
    return Change(collection, key, body.encode())


async def test_empty_store_has_checkpoint_zero_and_no_rows(store: ReadModelStore) -> None:
    assert await store.checkpoint() == 0
    assert await store.rows() == []
    assert await store.get("dataplane", "default/x") is None


async def test_commit_writes_rows_and_checkpoint(store: ReadModelStore) -> None:
    await store.commit([_put("dataplane", "default/a", "A")], 5)
    assert await store.checkpoint() == 5
    assert await store.get("dataplane", "default/a") == b"A"


async def test_upsert_replaces_and_none_deletes(store: ReadModelStore) -> None:
    await store.commit([_put("mesh", "m", "1"), _put("mesh", "n", "1")], 1)
    await store.commit([_put("mesh", "m", "2"), Change("mesh", "n", None)], 2)
    assert await store.rows() == [("mesh", "m", b"2")]


async def test_rows_and_lists_are_in_byte_order(store: ReadModelStore) -> None:
    keys = ["default/b", "default/B", "default/a-1", "default/a.1", "default2/a", "default/_"]
    await store.commit([_put("dataplane", k, k) for k in keys], 1)
    assert [k for _, k, _ in await store.rows()] == sorted(keys)
    listed = [k for k, _ in await store.scan("dataplane", "default/")]
    assert listed == sorted(k for k in keys if k.startswith("default/"))


async def test_checkpoint_never_moves_back(store: ReadModelStore) -> None:
    await store.commit([], 10)
    with pytest.raises(StoreCorrupt):
        await store.commit([_put("mesh", "late", "x")], 10)
    with pytest.raises(StoreCorrupt):
        await store.commit([], 3)
    assert await store.checkpoint() == 10


async def test_failed_commit_writes_nothing(store: ReadModelStore) -> None:
    await store.commit([_put("mesh", "m", "1")], 4)
    with pytest.raises(StoreCorrupt):
        await store.commit([_put("mesh", "m", "2"), _put("mesh", "x", "2")], 2)
    assert await store.rows() == [("mesh", "m", b"1")]
    assert await store.checkpoint() == 4


async def test_reapplying_the_same_rows_is_idempotent(store: ReadModelStore) -> None:
    batch = [_put("endpoints", "default/b", "E"), _put("vip", "default/MeshService/b", "V")]
    await store.commit(batch, 1)
    first = await store.rows()
    await store.commit(batch, 2)
    assert await store.rows() == first


async def test_checkpoints_are_per_projector(store: ReadModelStore) -> None:
    await store.commit([], 7, projector="a")
    await store.commit([], 3, projector="b")
    assert (await store.checkpoint("a"), await store.checkpoint("b")) == (7, 3)


async def test_concurrent_commits_to_one_checkpoint_do_not_both_win(
        store: ReadModelStore) -> None:
    results = await asyncio.gather(store.commit([_put("mesh", "a", "1")], 1),
                                   store.commit([_put("mesh", "b", "1")], 1),
                                   return_exceptions=True)
    assert sum(isinstance(r, StoreCorrupt) for r in results) == 1
    assert len(await store.rows()) == 1


async def test_a_large_batch_commits_in_one_go(store: ReadModelStore) -> None:
    await store.commit([_put("dataplane", f"m/dp-{i:05}", "x" * 200) for i in range(5000)], 1)
    assert len(await store.scan("dataplane", "m/")) == 5000


async def test_unreachable_postgres_is_store_unavailable() -> None:
    with pytest.raises(StoreUnavailable) as info:
        await open_store("postgresql://postgres:secret@127.0.0.1:9/none")
    assert "secret" not in str(info.value)
    assert "127.0.0.1:9" in str(info.value)


async def test_quarantine_records_without_moving_the_checkpoint(store: ReadModelStore) -> None:
    await store.commit([_put("mesh", "m", "1")], 4)
    await store.quarantine("main/000000000005", b'{"seq": 5}')
    await store.quarantine("main/000000000005", b'{"seq": 5}')  # a restart records it again
    assert await store.checkpoint() == 4
    assert await store.scan("quarantine") == [("main/000000000005", b'{"seq": 5}')]


async def test_a_commit_past_a_quarantined_sequence_removes_it(store: ReadModelStore) -> None:
    """Once the projector gets past a quarantined event (a release that reads it, a skip), the
    row goes in that commit's transaction; another projector's, and a later one, stay."""
    await store.commit([_put("mesh", "m", "1")], 4)
    for key in ("main/000000000005", "main/000000000009", "main/0/000000000005",
                "other/000000000005"):
        await store.quarantine(key, b"{}")
    await store.commit([_put("mesh", "m", "2")], 6)
    assert [k for k, _ in await store.scan("quarantine")] == [
        "main/0/000000000005", "main/000000000009", "other/000000000005"]
    assert await store.get("mesh", "m") == b"2"
    await store.commit([], 9, "other")  # other's checkpoint: main's row is not its own
    assert [k for k, _ in await store.scan("quarantine")] == [
        "main/0/000000000005", "main/000000000009"]



async def test_a_new_sqlite_file_opens_while_another_process_makes_it(tmp_path: Path) -> None:
    """Two projectors started together race to make the same new SQLite file (a CI run:
    one exited with "database is locked"). SQLite answers the loser at once, without its busy
    timeout; the open waits it out. Here another connection holds the write lock for a
    moment while it makes a table, as the winner of the race does."""
    path = tmp_path / "new.db"
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("CREATE TABLE made_by_the_other (a)")

        async def release() -> None:
            await asyncio.sleep(0.5)
            other.execute("COMMIT")

        releasing = asyncio.ensure_future(release())
        store = await open_store(f"sqlite:///{path}")
        await releasing
        try:
            assert await store.checkpoint() == 0
        finally:
            await store.close()
    finally:
        other.close()


# --- fold versions (projections.foldversion) ------------------------------------------------


async def test_a_fresh_store_has_no_fold_version_until_its_first_commit_records_one(
        store: ReadModelStore) -> None:
    assert await store.fold_version() is None
    await store.commit([_put("mesh", "m", "1")], 3, fold_version=7)
    assert await store.fold_version() == 7


async def test_a_store_committed_without_a_fold_version_reads_as_version_1(
        store: ReadModelStore) -> None:
    await store.commit([_put("mesh", "m", "1")], 3)  # as every release before them did
    assert await store.fold_version() == 1


async def test_a_continued_store_keeps_the_fold_version_of_its_first_commit(
        store: ReadModelStore) -> None:
    await store.commit([_put("mesh", "m", "1")], 1, fold_version=2)
    await store.commit([_put("mesh", "m", "2")], 2, fold_version=3)
    assert await store.fold_version() == 2
    await store.commit([], 1, projector="old")  # a store of the release before
    await store.commit([], 2, projector="old", fold_version=3)
    assert await store.fold_version("old") == 1


async def test_a_commit_of_an_older_fold_is_refused_and_writes_nothing(
        store: ReadModelStore) -> None:
    await store.commit([_put("mesh", "m", "1")], 1, fold_version=3)
    with pytest.raises(NewerFoldVersion, match="fold version 3, a commit with 2"):
        await store.commit([_put("mesh", "m", "2")], 2, fold_version=2)
    assert await store.rows() == [("mesh", "m", b"1")]
    assert await store.checkpoint() == 1


async def test_fold_versions_are_per_projector(store: ReadModelStore) -> None:
    await store.commit([], 4, projector="a", fold_version=2)
    await store.commit([], 9, projector="b", fold_version=5)
    assert (await store.fold_version("a"), await store.fold_version("b"),
            await store.fold_version("c")) == (2, 5, None)


async def test_a_refused_first_commit_records_no_fold_version(store: ReadModelStore) -> None:
    await store.claim("main", 5)
    with pytest.raises(Fenced):
        await store.commit([_put("mesh", "m", "1")], 1, fence=4, fold_version=2)
    assert await store.fold_version() is None
