"""MeshRetries through the HTTP API and the CLI, against a real `meshlog up` (as
MeshTimeouts: tests/services/test_meshtimeout_api_cli.py)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import VENV_BIN, ControlPlane, meshlog_up

pytestmark = pytest.mark.integration

BASE = "/meshes/default/meshretries"


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with meshlog_up(tmp_path_factory.mktemp("mr")) as plane:
        plane.apply({"type": "Mesh", "name": "default"})
        yield plane


def _mr(name: str, retry_on: str = "5xx") -> dict[str, Any]:
    return {"type": "MeshRetry", "mesh": "default", "name": name, "spec": {
        "targetRef": {"kind": "MeshSubset", "tags": {"kuma.io/service": "web"}},
        "to": [{"targetRef": {"kind": "MeshService", "name": "backend"},
                "default": {"tcp": {"maxConnectAttempt": 3},
                            "http": {"numRetries": 2, "retryOn": [retry_on, "503"]}}}]}}


def _meshlog(cp: ControlPlane, *args: str, check: bool = True,
             stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / "meshlog"), "--api", cp.where["api"], *args],
                          capture_output=True, text=True, timeout=60, check=check, input=stdin)


def test_put_get_delete_and_an_invalid_one_is_a_400(cp: ControlPlane) -> None:
    doc = _mr("web-to-backend")

    created = cp.api.put(f"{BASE}/web-to-backend", json=doc)
    assert created.status_code == 201, created.text
    got = cp.api.get(f"{BASE}/web-to-backend")
    assert got.json()["spec"] == doc["spec"]
    assert got.json()["labels"]["kuma.io/mesh"] == "default"
    assert cp.api.delete(f"{BASE}/web-to-backend").status_code == 200
    assert cp.api.get(f"{BASE}/web-to-backend").status_code == 404

    response = cp.api.put(f"{BASE}/bad", json=_mr("bad", retry_on="teapot"))
    assert response.status_code == 400
    [violation] = response.json()["invalid_parameters"]
    assert violation["field"] == "spec.to[0].default.http.retryOn[0]"
    assert violation["reason"].startswith("'teapot' is not one of 5xx, gateway-error")


def test_a_megabyte_value_is_refused_in_a_small_answer_naming_its_field(
        cp: ControlPlane) -> None:
    response = cp.api.put(f"{BASE}/huge", json=_mr("huge", retry_on="x" * 900_000))
    assert response.status_code == 400, response.text[:200]
    assert len(response.content) < 8_192  # the 900 KB value is not echoed (twice) back
    [violation] = response.json()["invalid_parameters"]
    assert violation["field"] == "spec.to[0].default.http.retryOn[0]"
    assert "characters left out" in violation["reason"]
    # cut in the middle: the value's start, and the rule at its end, are still there
    assert violation["reason"].startswith("'xxx")
    assert violation["reason"].endswith("or an HTTP status code as a string (e.g. '503')")
    assert cp.api.get(f"{BASE}/huge").status_code == 404


def test_cli_apply_get_delete(cp: ControlPlane, tmp_path: Path) -> None:
    path = tmp_path / "mr.yaml"
    path.write_text(yaml.safe_dump(_mr("cli-mr")))

    applied = _meshlog(cp, "apply", "-f", str(path))
    assert applied.stdout.startswith("meshretry 'cli-mr' created (version ")

    table = _meshlog(cp, "get", "meshretries").stdout
    [header] = [line for line in table.splitlines() if line.split()[0] == "MESH"]
    assert header.split() == ["MESH", "NAME", "TARGETREF", "TO", "AGE"]
    [row] = [line for line in table.splitlines() if " cli-mr " in line]
    assert ("MeshService/backend: tcp.maxConnectAttempt=3 http.numRetries=2 "
            "http.retryOn=5xx,503") in row

    one = yaml.safe_load(_meshlog(cp, "get", "meshretry", "cli-mr").stdout)
    assert one["type"] == "MeshRetry" and one["spec"] == _mr("cli-mr")["spec"]

    deleted = _meshlog(cp, "delete", "mr", "cli-mr")
    assert deleted.stdout.startswith("meshretry 'cli-mr' deleted (version ")


def test_a_mesh_with_meshretries_cannot_be_deleted(cp: ControlPlane) -> None:
    cp.apply({"type": "Mesh", "name": "guarded"})
    cp.apply({**_mr("keep"), "mesh": "guarded"})

    response = cp.api.delete("/meshes/guarded")

    assert response.status_code == 409
    assert "still has 1 meshretries (e.g. 'keep')" in response.json()["detail"]
