"""A zone deleted on global that registers again (a real global and zone `meshlog up`, each
with its own nats-server, the zone joined over a leafnode): global ends up with the zone's
whole current state, as Kuma's does when the zone's KDS resends it on reconnect, not only
what the zone writes afterwards; what the zone writes after it is back arrives too, each of
its events once in global's log; and global's log replays to its live read models, also
while the zone is deleted."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from events.kds_hash import hashed_name
from tests.harness import ControlPlane, meshlog_up, wait_for
from tests.integration._multizone import _dataplane, _meshlog, msg_ids_of

pytestmark = pytest.mark.integration


def _meshservice(name: str) -> dict[str, Any]:
    return {"type": "MeshService", "mesh": "default", "name": name,
            "spec": {"ports": [{"port": 6379, "targetPort": 6379}],
                     "selector": {"dataplaneTags": {"kuma.io/service": name}}}}


def _names(cp: ControlPlane, kind: str) -> set[str]:
    response = cp.api.get(f"/meshes/default/{kind}?size=1000")
    assert response.status_code == 200, response.text
    return {item["name"] for item in response.json()["items"]}


def _synced(*displays: str) -> set[str]:
    return {hashed_name("default", display, "west") for display in displays}


def _wait_synced(central: ControlPlane, *, dataplanes: set[str], meshservices: set[str],
                 what: str) -> None:
    def missing() -> set[str]:
        return (dataplanes - _names(central, "dataplanes")) | (
            meshservices - _names(central, "meshservices"))

    try:
        wait_for(lambda: not missing(), timeout=60, what=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: missing {sorted(missing())}") from None


def _replays_to_live(central: ControlPlane, target: Path) -> None:
    live = _meshlog("export", "--data-dir", str(central.data_dir))
    database = f"sqlite:///{target}"
    _meshlog("replay", "--data-dir", str(central.data_dir), "--database", database, "-q",
             "--mode", "global")
    assert _meshlog("export", "--database", database) == live


def test_a_zone_deleted_on_global_resyncs_its_whole_state_when_it_registers_again(
        tmp_path: Path) -> None:
    with meshlog_up(tmp_path / "global", "--mode", "global", "--leaf-port", "0") as central:
        url = central.where["global_url"]
        central.apply({"type": "Mesh", "name": "default"})
        with meshlog_up(tmp_path / "west", "--zone", "west", "--global", url) as west:
            wait_for(lambda: west.api.get("/meshes/default").status_code == 200, timeout=60,
                     what="west's Mesh")
            west.apply(_dataplane("redis-1", "redis", "10.2.0.1"))
            west.apply(_dataplane("web-1", "web", "10.2.0.2"))
            west.apply(_meshservice("cache"))
            _wait_synced(central, dataplanes=_synced("redis-1", "web-1"),
                         meshservices=_synced("redis", "web", "cache"),
                         what="west's resources on global")
        # west is stopped: global deletes it (only an offline zone can be), with what it
        # synced
        wait_for(lambda: central.api.delete("/zones/west").status_code == 200, timeout=60,
                 what="west deleted on global")
        wait_for(lambda: not _synced("redis-1", "web-1") & _names(central, "dataplanes")
                 and not _synced("redis", "web", "cache") & _names(central, "meshservices"),
                 timeout=60, what="west's resources gone from global")
        _replays_to_live(central, tmp_path / "deleted.db")

        # west comes back (same data dir): it registers again, and global shows everything
        # west has, also what it wrote before the delete
        with meshlog_up(tmp_path / "west", "--zone", "west", "--global", url) as west:
            wait_for(lambda: central.api.get("/zones/west").status_code == 200, timeout=60,
                     what="west registered again")
            west.apply(_dataplane("api-1", "api", "10.2.0.3"))
            _wait_synced(central, dataplanes=_synced("redis-1", "web-1", "api-1"),
                         meshservices=_synced("redis", "web", "cache", "api"),
                         what="west's whole state on global again")
            # and what it deletes afterwards goes
            assert west.api.delete("/meshes/default/dataplanes/web-1").status_code == 200
            wait_for(lambda: not _synced("web-1") & _names(central, "dataplanes"),
                     timeout=60, what="west's later delete on global")
            # each of west's events once in global's log, in west's order: nothing sourced
            # twice, nothing skipped (waited for: west may still write, e.g. its ticker)
            def same_ids() -> bool:
                ids = asyncio.run(msg_ids_of(central, "west"))
                return len(set(ids)) == len(ids) and ids == asyncio.run(
                    msg_ids_of(west, "west"))

            wait_for(same_ids, timeout=60, what="west's events once each in global's log")
        _replays_to_live(central, tmp_path / "again.db")
