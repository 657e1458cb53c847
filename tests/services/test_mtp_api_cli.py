"""MeshTrafficPermissions through the HTTP API and the CLI, against a real `meshlog up`."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import VENV_BIN, ControlPlane, meshlog_up

pytestmark = pytest.mark.integration

BASE = "/meshes/default/meshtrafficpermissions"
DP_APP = {"kind": "Dataplane", "labels": {"app": "backend"}}


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


def test_put_get_list_delete(cp: ControlPlane) -> None:
    doc = _mtp("allow-web", target={"kind": "MeshService", "name": "backend"})

    created = cp.api.put(f"{BASE}/allow-web", json=doc)
    assert created.status_code == 201, created.text
    got = cp.api.get(f"{BASE}/allow-web")
    assert got.headers["etag"] == f'"{created.json()["version"]}"'
    body = got.json()
    assert body["spec"] == doc["spec"]
    assert body["labels"]["kuma.io/mesh"] == "default"
    assert body["labels"]["kuma.io/origin"] == "zone"
    assert {"creationTime", "modificationTime"} <= set(body)
    page = cp.api.get(BASE).json()
    assert "allow-web" in [item["name"] for item in page["items"]]

    assert cp.api.delete(f"{BASE}/allow-web").status_code == 200
    assert cp.api.get(f"{BASE}/allow-web").status_code == 404
    assert cp.api.delete(f"{BASE}/allow-web").status_code == 404


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


def test_a_mesh_with_policies_cannot_be_deleted(cp: ControlPlane) -> None:
    cp.apply({"type": "Mesh", "name": "guarded"})
    cp.apply({**_mtp("keep"), "mesh": "guarded"})

    response = cp.api.delete("/meshes/guarded")

    assert response.status_code == 409
    assert "still has 1 meshtrafficpermissions (e.g. 'keep')" in response.json()["detail"]


# --- CLI ----------------------------------------------------------------------------------------


def test_cli_apply_get_delete(cp: ControlPlane, tmp_path: Path) -> None:
    path = tmp_path / "mtp.yaml"
    path.write_text(yaml.safe_dump(_mtp("cli-web", target=DP_APP)))

    applied = _meshlog(cp, "apply", "-f", str(path))
    assert applied.stdout.startswith("meshtrafficpermission 'cli-web' created (version ")

    table = _meshlog(cp, "get", "meshtrafficpermissions", "--mesh", "default").stdout
    [header] = [line for line in table.splitlines() if line.split()[0] == "MESH"]
    assert header.split() == ["MESH", "NAME", "TARGETREF", "FROM", "AGE"]
    [row] = [line for line in table.splitlines() if " cli-web " in line]
    assert "Dataplane{app=backend}" in row
    assert "MeshSubset{kuma.io/service=web}: Allow, Mesh: Deny" in row

    one = yaml.safe_load(_meshlog(cp, "get", "meshtrafficpermission", "cli-web").stdout)
    assert one["type"] == "MeshTrafficPermission" and one["spec"] == _mtp(
        "cli-web", target=DP_APP)["spec"]
    listed = json.loads(_meshlog(cp, "get", "mtp", "-o", "json").stdout)
    assert "cli-web" in [item["name"] for item in listed["items"]]

    # what `get -o yaml` prints applies again
    reapplied = _meshlog(cp, "apply", "-f", "-", stdin=yaml.safe_dump(one))
    assert "meshtrafficpermission 'cli-web'" in reapplied.stdout

    deleted = _meshlog(cp, "delete", "meshtrafficpermission", "cli-web", "--mesh", "default")
    assert deleted.stdout.startswith("meshtrafficpermission 'cli-web' deleted (version ")
    missing = _meshlog(cp, "get", "meshtrafficpermission", "cli-web", check=False)
    assert missing.returncode == 1 and "not found" in missing.stderr


def test_cli_apply_reports_an_invalid_policy_by_field(cp: ControlPlane) -> None:
    doc = _mtp("cli-bad")
    doc["spec"]["from"] = []

    result = _meshlog(cp, "apply", "-f", "-", stdin=yaml.safe_dump(doc), check=False)

    assert result.returncode == 1
    assert "spec.from: must have at least one entry" in result.stderr
