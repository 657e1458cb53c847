"""`meshlog up --projectors 2`: two projector tasks contend for the lease, exactly one folds
(what the API applies is projected), who leads is at `GET /_admin/projectors` and in the API's
`/metrics`, and the blue/green swap is refused with a 409 that says why."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import ControlPlane, meshlog_up, wait_for
from tests.services._scrape import scrape, value

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with meshlog_up(tmp_path_factory.mktemp("up-projectors"), "--projectors", "2",
                    "--lease-ttl", "1s") as plane:
        yield plane


def _one_leader(cp: ControlPlane) -> list[dict[str, Any]] | None:
    response = cp.api.get("/_admin/projectors")
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    active = [p for p in items if p["role"] == "active"]
    return items if len(active) == 1 and all(p["leader"] == active[0]["holder"]
                                             for p in items) else None


def test_two_contenders_one_active_naming_the_same_leader(cp: ControlPlane) -> None:
    items = wait_for(lambda: _one_leader(cp), what="one active projector task")
    assert len(items) == 2
    assert sorted(p["role"] for p in items) == ["active", "standby"]
    active = next(p for p in items if p["role"] == "active")
    assert active["fencingToken"] > 0
    assert len({p["holder"] for p in items}) == 2  # each task its own holder


def test_resources_applied_through_the_api_are_projected(cp: ControlPlane) -> None:
    cp.apply({"type": "Mesh", "name": "default"})
    cp.apply({"type": "Dataplane", "mesh": "default", "name": "web-1", "networking": {
        "address": "10.0.0.9", "inbound": [{"port": 7070, "tags": {"kuma.io/service": "web"}}]}})

    def projected() -> bool:
        return cp.api.get("/meshes/default/meshservices/web").status_code == 200

    wait_for(projected, what="the MeshService generated from the Dataplane")
    samples = scrape(cp.where["api"] + "/metrics")
    assert value(samples, "meshlog_projector_leader") == 1
    assert value(samples, "meshlog_projector_fencing_token") > 0
    for i in (1, 2):
        assert value(samples, "meshlog_nats_connected", connection=f"meshlog-projector-{i}") == 1


def test_the_read_model_swap_is_refused_with_why(cp: ControlPlane, tmp_path: Path) -> None:
    response = cp.api.post("/_admin/read-models",
                           json={"database": f"sqlite:///{tmp_path / 'other.db'}"})
    assert response.status_code == 409, response.text
    assert "--projectors 1" in response.text


def test_up_json_says_how_many_projectors(cp: ControlPlane) -> None:
    assert cp.where["projectors"].startswith("2, active/standby")
