"""A zone control plane installed afresh under the same name (its data dir wiped: a new event
stream whose sequences start at 1) must not corrupt global's view. Global's source of the
zone resumes after the last origin sequence it holds of the old install, so the new
install's first events up to that number would be skipped silently and the old install's
resources would stay on global. Until global can resync a new install from its start, it
refuses it: the zone's registration names its event stream (its creation time), global's
log records the refused install (`ZoneApplied.refused_install`), the fold hides every
resource of the zone, the sync stops sourcing it and says so, and `/zones/west` names the
refusal. A real global and two installs of zone `west`, each a `meshlog up` with its own
nats-server and data dir."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest

from tests.harness import ControlPlane, meshlog_up, wait_for
from tests.integration._multizone import _dataplane, _meshlog
from tests.integration.test_multizone_rejoin import (
    _meshservice,
    _names,
    _replays_to_live,
    _synced,
    _wait_synced,
)

pytestmark = pytest.mark.integration


def _none_of_west(central: ControlPlane) -> bool:
    return not any(name.endswith(tuple(_synced("redis-1", "web-1", "api-1")))
                   for name in _names(central, "dataplanes")) and not _synced(
        "redis", "web", "cache", "api") & _names(central, "meshservices")


def _logged_refusal(plane: ControlPlane) -> bool:
    return "zone 'west' was installed afresh under its name" in (
        plane.data_dir / "up.log").read_text()


def _refused(central: ControlPlane) -> bool:
    response = central.api.get("/zones/west")
    return response.status_code == 200 and bool(response.json().get("refusedInstall"))


@pytest.mark.parametrize("deleted_first", [False, True])
def test_a_zone_installed_afresh_under_its_name_is_refused_not_mixed_in(
        tmp_path: Path, deleted_first: bool) -> None:
    with meshlog_up(tmp_path / "global", "--mode", "global", "--leaf-port", "0") as central:
        url = central.where["global_url"]
        central.apply({"type": "Mesh", "name": "default"})
        with meshlog_up(tmp_path / "west-1", "--zone", "west", "--global", url) as west:
            wait_for(lambda: west.api.get("/meshes/default").status_code == 200, timeout=60,
                     what="west's Mesh")
            west.apply(_dataplane("redis-1", "redis", "10.2.0.1"))
            west.apply(_dataplane("web-1", "web", "10.2.0.2"))
            west.apply(_meshservice("cache"))
            _wait_synced(central, dataplanes=_synced("redis-1", "web-1"),
                         meshservices=_synced("redis", "web", "cache"),
                         what="the old install's resources on global")
        if deleted_first:
            wait_for(lambda: central.api.delete("/zones/west").status_code == 200,
                     timeout=60, what="west deleted on global")
        # west's data dir wiped: a new install, same name, same global
        with meshlog_up(tmp_path / "west-2", "--zone", "west", "--global", url) as fresh:
            wait_for(lambda: fresh.api.get("/meshes/default").status_code == 200, timeout=60,
                     what="the fresh west's Mesh")
            fresh.apply(_dataplane("api-1", "api", "10.2.0.3"))
            # none of the old install's resources (nor any of the new one's) on global
            wait_for(lambda: _none_of_west(central), timeout=60,
                     what="none of west's resources on global")
            wait_for(lambda: _refused(central), timeout=60,
                     what="global refusing west's new install")
            doc = central.api.get("/zones/west").json()
            assert doc["refusedInstall"] != doc["install"], doc
            overview = central.api.get("/zones/west/_overview").json()
            assert "installed afresh" in overview["zoneInsight"]["reason"], overview
            for plane in (central, fresh):  # both syncs say so, naming the zone
                wait_for(partial(_logged_refusal, plane), timeout=30,
                         what=f"the refusal in {plane.data_dir.name}'s log")
            table = _meshlog("--api", central.where["api"], "get", "zones")
            assert [line.split()[:2] for line in table.splitlines()[1:]] == [
                ["west", "refused"]], table
            assert not _names(fresh, "dataplanes") - {"api-1"}, "the fresh zone's own view"
        _replays_to_live(central, tmp_path / "refused.db")
