"""MeshTrafficPermissions through the HTTP API and the CLI, against a real `meshlog up`: what
every policy kind does alike is tests/services/test_policy_api_cli.py."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.harness import VENV_BIN, ControlPlane, meshlog_up

pytestmark = pytest.mark.integration

BASE = "/meshes/default/meshtrafficpermissions"


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with meshlog_up(tmp_path_factory.mktemp("mtp")) as plane:
        plane.apply({"type": "Mesh", "name": "default"})
        yield plane


def _mtp(name: str, action: str = "Allow", target: dict[str, Any] | None = None
         ) -> dict[str, Any]:
    spec: dict[str, Any] = {"from": [
        {"targetRef": {"kind": "MeshSubset", "tags": {"kuma.io/service": "web"}},
         "default": {"action": action}},
        {"targetRef": {"kind": "Mesh"}, "default": {"action": "Deny"}}]}
    if target:
        spec["targetRef"] = target
    return {"type": "MeshTrafficPermission", "mesh": "default", "name": name, "spec": spec}


def _meshlog(cp: ControlPlane, *args: str, check: bool = True,
             stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / "meshlog"), "--api", cp.where["api"], *args],
                          capture_output=True, text=True, timeout=60, check=check, input=stdin)


# --- API ----------------------------------------------------------------------------------------


def test_a_yaml_body_is_accepted_and_a_repeat_changes_nothing(cp: ControlPlane) -> None:
    text = yaml.safe_dump(_mtp("from-yaml"))
    headers = {"content-type": "application/yaml"}

    first = cp.api.put(f"{BASE}/from-yaml", content=text, headers=headers)
    again = cp.api.put(f"{BASE}/from-yaml", content=text, headers=headers)

    assert first.status_code == 201, first.text
    assert again.json()["unchanged"] and again.json()["version"] == first.json()["version"]


def test_an_invalid_policy_is_a_400_naming_every_field(cp: ControlPlane) -> None:
    doc = _mtp("bad", target={"kind": "MeshServiceSubset", "name": "web"})
    doc["spec"]["from"][0]["default"]["action"] = "Permit"
    doc["spec"]["from"][1]["targetRef"]["name"] = "x"

    response = cp.api.put(f"{BASE}/bad", json=doc)

    assert response.status_code == 400
    assert response.json()["invalid_parameters"] == [
        {"field": "spec.from[0].default.action",
         "reason": "'Permit' is not one of Allow, AllowWithShadowDeny, Deny"},
        {"field": "spec.targetRef.kind",
         "reason": "'MeshServiceSubset' is not one of Mesh, MeshSubset, MeshService, Dataplane"},
        {"field": "spec.from[1].targetRef.name", "reason": "'x' is not allowed with kind Mesh"},
    ]
    assert cp.api.get(f"{BASE}/bad").status_code == 404


def test_the_url_names_the_policy_and_its_mesh(cp: ControlPlane) -> None:
    response = cp.api.put("/meshes/other/meshtrafficpermissions/p", json=_mtp("q"))

    assert response.status_code == 400
    assert response.json()["invalid_parameters"] == [
        {"field": "name", "reason": "'q' does not match the URL's 'p'"},
        {"field": "mesh", "reason": "'default' does not match the URL's 'other'"}]


def test_a_policy_of_a_missing_mesh_is_a_404(cp: ControlPlane) -> None:
    doc = {**_mtp("p"), "mesh": "nope"}

    response = cp.api.put("/meshes/nope/meshtrafficpermissions/p", json=doc)

    assert response.status_code == 404
    assert "mesh 'nope' does not exist" in response.json()["detail"]


def test_a_stale_if_match_is_a_409(cp: ControlPlane) -> None:
    cp.apply(_mtp("occ"))
    etag = cp.api.get(f"{BASE}/occ").headers["etag"]
    assert cp.api.put(f"{BASE}/occ", json=_mtp("occ", "Deny"),
                      headers={"If-Match": etag}).status_code == 200

    stale = cp.api.put(f"{BASE}/occ", json=_mtp("occ", "Allow"), headers={"If-Match": etag})

    assert stale.status_code == 409
    assert cp.api.get(f"{BASE}/occ").json()["spec"]["from"][0]["default"]["action"] == "Deny"


def test_lists_filter_by_label(cp: ControlPlane) -> None:
    cp.apply({**_mtp("labelled"), "labels": {"team": "payments"}})

    page = cp.api.get(BASE, params={"filter[labels.team]": "payments"}).json()

    assert [item["name"] for item in page["items"]] == ["labelled"]


# --- CLI ----------------------------------------------------------------------------------------


def test_cli_apply_reports_an_invalid_policy_by_field(cp: ControlPlane) -> None:
    doc = _mtp("cli-bad")
    doc["spec"]["from"] = []

    result = _meshlog(cp, "apply", "-f", "-", stdin=yaml.safe_dump(doc), check=False)

    assert result.returncode == 1
    assert "spec.from: must have at least one entry" in result.stderr
