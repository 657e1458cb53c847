"""MeshTimeouts through the HTTP API and the CLI, against a real `meshlog up` (as
MeshTrafficPermissions: tests/services/test_mtp_api_cli.py)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import VENV_BIN, ControlPlane, meshlog_up

pytestmark = pytest.mark.integration

BASE = "/meshes/default/meshtimeouts"


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with meshlog_up(tmp_path_factory.mktemp("mt")) as plane:
        plane.apply({"type": "Mesh", "name": "default"})
        yield plane


def _mt(name: str, request_timeout: str = "5s") -> dict[str, Any]:
    return {"type": "MeshTimeout", "mesh": "default", "name": name, "spec": {
        "targetRef": {"kind": "MeshSubset", "tags": {"kuma.io/service": "web"}},
        "to": [{"targetRef": {"kind": "MeshService", "name": "backend"},
                "default": {"connectionTimeout": "2s",
                            "http": {"requestTimeout": request_timeout}}}]}}


def _meshlog(cp: ControlPlane, *args: str, check: bool = True,
             stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / "meshlog"), "--api", cp.where["api"], *args],
                          capture_output=True, text=True, timeout=60, check=check, input=stdin)


def test_put_get_list_delete(cp: ControlPlane) -> None:
    doc = _mt("web-to-backend")

    created = cp.api.put(f"{BASE}/web-to-backend", json=doc)
    assert created.status_code == 201, created.text
    got = cp.api.get(f"{BASE}/web-to-backend")
    assert got.headers["etag"] == f'"{created.json()["version"]}"'
    assert got.json()["spec"] == doc["spec"]
    assert got.json()["labels"]["kuma.io/mesh"] == "default"
    assert "web-to-backend" in [i["name"] for i in cp.api.get(BASE).json()["items"]]

    assert cp.api.delete(f"{BASE}/web-to-backend").status_code == 200
    assert cp.api.get(f"{BASE}/web-to-backend").status_code == 404


def test_an_invalid_meshtimeout_is_a_400_naming_field_and_value(cp: ControlPlane) -> None:
    doc = _mt("bad", request_timeout="15")
    doc["spec"]["to"][0]["default"]["connectionTimeout"] = "0s"

    response = cp.api.put(f"{BASE}/bad", json=doc)

    assert response.status_code == 400
    assert response.json()["invalid_parameters"] == [
        {"field": "spec.to[0].default.connectionTimeout", "reason": "'0s' must be greater than 0s"},
        {"field": "spec.to[0].default.http.requestTimeout",
         "reason": "'15' is not a duration (Go's format: a number and a unit of ns, us, ms, s, "
                   "m, h, e.g. 500ms, 15s, 1h30m)"},
    ]


def test_a_mesh_with_meshtimeouts_cannot_be_deleted(cp: ControlPlane) -> None:
    cp.apply({"type": "Mesh", "name": "guarded"})
    cp.apply({**_mt("keep"), "mesh": "guarded"})

    response = cp.api.delete("/meshes/guarded")

    assert response.status_code == 409
    assert "still has 1 meshtimeouts (e.g. 'keep')" in response.json()["detail"]


def test_cli_apply_get_delete(cp: ControlPlane, tmp_path: Path) -> None:
    path = tmp_path / "mt.yaml"
    path.write_text(yaml.safe_dump(_mt("cli-mt")))

    applied = _meshlog(cp, "apply", "-f", str(path))
    assert applied.stdout.startswith("meshtimeout 'cli-mt' created (version ")

    table = _meshlog(cp, "get", "meshtimeouts").stdout
    [header] = [line for line in table.splitlines() if line.split()[0] == "MESH"]
    assert header.split() == ["MESH", "NAME", "TARGETREF", "TO", "AGE"]
    [row] = [line for line in table.splitlines() if " cli-mt " in line]
    assert "MeshSubset{kuma.io/service=web}" in row
    assert "MeshService/backend: connectionTimeout=2s http.requestTimeout=5s" in row

    one = yaml.safe_load(_meshlog(cp, "get", "meshtimeout", "cli-mt").stdout)
    assert one["type"] == "MeshTimeout" and one["spec"] == _mt("cli-mt")["spec"]
    reapplied = _meshlog(cp, "apply", "-f", "-", stdin=yaml.safe_dump(one))
    assert "meshtimeout 'cli-mt'" in reapplied.stdout

    deleted = _meshlog(cp, "delete", "mt", "cli-mt")
    assert deleted.stdout.startswith("meshtimeout 'cli-mt' deleted (version ")
