"""`meshlog up` on read models of an older fold (projections.foldversion): rebuilt beside the
live ones and swapped to by itself when it chose them; reported (log, `/ready`, metrics) when
the operator did (`--database`); a store of a newer fold is refused at start."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from projections import FOLD_VERSION
from projections.sqlite import SqliteReadModelStore
from tests.harness import VENV_BIN, ControlPlane, meshlog_up, wait_for
from tests.services._scrape import Samples, scrape, value

pytestmark = pytest.mark.integration

_KEY = ("signingkey", "demo/dataplane-token-1")


def _meshlog(*args: str) -> str:
    return subprocess.run([str(VENV_BIN / "meshlog"), *args], capture_output=True, text=True,
                          timeout=120, check=True).stdout


def _row(db: Path, collection: str, key: str) -> bytes | None:
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT body FROM rows WHERE collection = ? AND key = ?",
                           (collection, key)).fetchone()
    conn.close()
    return None if row is None else bytes(row[0])


def _history(cp: ControlPlane) -> bytes:
    """A Mesh with a dataplane-token key, then deleted: since fold version 2 the key's row
    goes with it; the release before kept it. Returns the row as it was."""
    cp.apply({"type": "Mesh", "name": "default"})
    cp.apply({"type": "Dataplane", "mesh": "default", "name": "web-1", "networking": {
        "address": "127.0.0.7", "inbound": [{"port": 8080,
                                             "tags": {"kuma.io/service": "web"}}]}})
    cp.apply({"type": "Mesh", "name": "demo"})
    cp.dataplane_token("dp-1", mesh="demo")  # the mesh's first signing key
    db = cp.data_dir / "readmodels.db"
    row = wait_for(lambda: _row(db, *_KEY), what="the demo mesh's key row")
    assert cp.api.delete("/meshes/demo").status_code == 200
    wait_for(lambda: _row(db, *_KEY) is None, what="the key row to go with the mesh")
    return row


@pytest.fixture(scope="module")
def outdated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stopped `meshlog up`'s data dir whose read models are what the release before fold
    versions left: its schema (no fold versions) and its rows (the deleted mesh's key)."""
    data = tmp_path_factory.mktemp("outdated") / "cp"
    with meshlog_up(data) as cp:
        row = _history(cp)
    with sqlite3.connect(data / "readmodels.db") as db:
        db.execute("DROP TABLE fold_versions")
        db.execute("INSERT INTO rows VALUES (?, ?, ?)", (*_KEY, row))
    db.close()
    (data / "up.log").unlink()
    return data


@pytest.fixture
def data_dir(outdated: Path, tmp_path: Path) -> Iterator[Path]:
    copy = tmp_path / "cp"
    shutil.copytree(outdated, copy)
    yield copy


def _ready(cp: ControlPlane) -> dict[str, Any]:
    response = cp.api.get("/ready")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_meshlog_up_rebuilds_outdated_read_models_and_swaps_to_them(data_dir: Path) -> None:
    old = data_dir / "readmodels.db"
    rebuilt = data_dir / f"readmodels-fold{FOLD_VERSION}.db"
    with meshlog_up(data_dir) as cp:
        assert cp.where["database"] == f"sqlite:///{old}"
        wait_for(lambda: not _ready(cp)["foldVersion"]["outdated"], timeout=60,
                 what="the rebuilt read models to be swapped in")
        assert _ready(cp)["foldVersion"] == {"readModels": FOLD_VERSION, "code": FOLD_VERSION,
                                             "outdated": False}
        assert (data_dir / "readmodels.url").read_text().strip() == f"sqlite:///{rebuilt}"
        samples = scrape(cp.where["api"] + "/metrics")
        assert value(samples, "meshlog_read_models_outdated", projector="main") == 0
        assert value(samples, "meshlog_read_models_fold_version",
                     projector="main") == FOLD_VERSION
        # the rebuilt store is a replay's, byte for byte; the old one is kept as it was
        served = _meshlog("export", "--data-dir", str(data_dir))
        replayed = f"sqlite:///{data_dir / 'replayed.db'}"
        _meshlog("replay", "--data-dir", str(data_dir), "--database", replayed, "-q")
        assert _meshlog("export", "--database", replayed) == served
        assert _row(old, *_KEY) is not None
        assert _row(rebuilt, *_KEY) is None
        # projection goes on in the rebuilt store
        cp.apply({"type": "Mesh", "name": "after"})
        assert cp.api.get("/meshes/after").status_code == 200
    log = (data_dir / "up.log").read_text()
    assert "folded with fold version 1, this release folds with" in log
    assert f"rebuilding them from the log into {rebuilt}" in log
    assert f"rebuilding read models into {rebuilt}: sequence" in log
    assert "outdated read models replaced" in log
    with meshlog_up(data_dir) as again:  # a restart stays on the rebuilt store
        assert again.where["database"] == f"sqlite:///{rebuilt}"
        assert _ready(again)["foldVersion"]["outdated"] is False
    assert (data_dir / "up.log").read_text().count("rebuilding them from the log") == 1


def test_read_models_the_operator_chose_are_reported_outdated_not_rebuilt(
        data_dir: Path) -> None:
    database = f"sqlite:///{data_dir / 'readmodels.db'}"
    with meshlog_up(data_dir, "--database", database) as cp:
        def reported() -> Samples | None:
            samples = scrape(cp.where["api"] + "/metrics")
            if value(samples, "meshlog_read_models_outdated", projector="main") != 1:
                return None
            return samples

        samples = wait_for(reported, what="the projector to report its store outdated")
        assert value(samples, "meshlog_read_models_fold_version", projector="main") == 1
        assert _ready(cp)["foldVersion"] == {"readModels": 1, "code": FOLD_VERSION,
                                             "outdated": True}
        cp.apply({"type": "Mesh", "name": "after"})  # folded on meanwhile
        assert cp.api.get("/meshes/after").status_code == 200
    log = (data_dir / "up.log").read_text()
    assert "meshlog replay --database NEW" in log
    assert "rebuilding them" not in log
    assert not (data_dir / f"readmodels-fold{FOLD_VERSION}.db").exists()


def test_meshlog_up_refuses_read_models_of_a_newer_fold(tmp_path: Path) -> None:
    data = tmp_path / "cp"
    data.mkdir()

    async def newer() -> None:
        store = await SqliteReadModelStore.open(data / "readmodels.db")
        try:
            await store.commit([], 1, fold_version=FOLD_VERSION + 1)
        finally:
            await store.close()

    asyncio.run(newer())
    result = subprocess.run(
        [str(VENV_BIN / "meshlog"), "up", "--data-dir", str(data), "--api-port", "0",
         "--xds-port", "0"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert (f"error: the read models at sqlite:///{data / 'readmodels.db'} (projector 'main') "
            f"were folded with fold version {FOLD_VERSION + 1}, newer than this release's "
            f"{FOLD_VERSION}") in result.stderr
    assert not (data / "up.json").exists()  # nothing served
