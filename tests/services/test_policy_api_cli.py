"""Every policy kind through the HTTP API and the CLI alike (`events.POLICY_KINDS`, one path),
against one real `meshlog up`: its collection, its 400 naming field and value, the mesh
guard, and `meshlog apply/get/delete` by singular, plural and short name. What one kind does
beyond that: tests/services/test_mtp_api_cli.py."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from events import POLICY_KINDS, PolicyKind
from tests._policy_samples import document, sample
from tests.harness import VENV_BIN, ControlPlane, meshlog_up

pytestmark = [pytest.mark.integration,
              pytest.mark.parametrize("kind", POLICY_KINDS, ids=lambda k: k.type_name)]


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with meshlog_up(tmp_path_factory.mktemp("policies")) as plane:
        plane.apply({"type": "Mesh", "name": "default"})
        yield plane


def _meshlog(cp: ControlPlane, *args: str, check: bool = True,
             stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / "meshlog"), "--api", cp.where["api"], *args],
                          capture_output=True, text=True, timeout=60, check=check, input=stdin)


def test_put_get_list_delete(cp: ControlPlane, kind: PolicyKind[Any]) -> None:
    base, doc = f"/meshes/default/{kind.plural}", document(kind, "api-1")

    created = cp.api.put(f"{base}/api-1", json=doc)
    assert created.status_code == 201, created.text
    got = cp.api.get(f"{base}/api-1")
    assert got.headers["etag"] == f'"{created.json()["version"]}"'
    body = got.json()
    assert body["type"] == kind.type_name and body["spec"] == doc["spec"]
    assert body["labels"]["kuma.io/mesh"] == "default"
    assert body["labels"]["kuma.io/origin"] == "zone"
    assert {"creationTime", "modificationTime"} <= set(body)
    assert [i["name"] for i in cp.api.get(base).json()["items"]] == ["api-1"]

    assert cp.api.delete(f"{base}/api-1").status_code == 200
    assert cp.api.get(f"{base}/api-1").status_code == 404
    assert cp.api.delete(f"{base}/api-1").status_code == 404


def test_an_invalid_policy_is_a_400_naming_field_and_value(cp: ControlPlane,
                                                          kind: PolicyKind[Any]) -> None:
    doc = document(kind, "bad", spec=sample(kind).invalid)

    response = cp.api.put(f"/meshes/default/{kind.plural}/bad", json=doc)

    assert response.status_code == 400
    field, reason = sample(kind).violation
    first = response.json()["invalid_parameters"][0]
    assert first["field"] == field and first["reason"].startswith(reason), first


def test_a_mesh_with_policies_cannot_be_deleted(cp: ControlPlane, kind: PolicyKind[Any]
                                                ) -> None:
    mesh = f"guarded-{kind.short}"
    cp.apply({"type": "Mesh", "name": mesh})
    cp.apply(document(kind, "keep", mesh=mesh))

    response = cp.api.delete(f"/meshes/{mesh}")

    assert response.status_code == 409
    assert f"still has 1 {kind.plural} (e.g. 'keep')" in response.json()["detail"]


def test_cli_apply_get_delete(cp: ControlPlane, kind: PolicyKind[Any], tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(document(kind, "cli-1")))

    applied = _meshlog(cp, "apply", "-f", str(path))
    assert applied.stdout.startswith(f"{kind.singular} 'cli-1' created (version ")

    table = _meshlog(cp, "get", kind.plural).stdout
    [header] = [line for line in table.splitlines() if line.split()[0] == "MESH"]
    assert header.split() == ["MESH", "NAME", "TARGETREF",
                              *(s.upper() for s in kind.sections), "AGE"]
    [row] = [line for line in table.splitlines() if " cli-1 " in line]
    for cell in sample(kind).cells:
        assert cell in row

    one = yaml.safe_load(_meshlog(cp, "get", kind.singular, "cli-1").stdout)
    assert one["type"] == kind.type_name and one["spec"] == sample(kind).spec
    listed = json.loads(_meshlog(cp, "get", kind.short, "-o", "json").stdout)
    assert "cli-1" in [item["name"] for item in listed["items"]]
    # what `get -o yaml` prints applies again
    reapplied = _meshlog(cp, "apply", "-f", "-", stdin=yaml.safe_dump(one))
    assert f"{kind.singular} 'cli-1'" in reapplied.stdout

    deleted = _meshlog(cp, "delete", kind.short, "cli-1")
    assert deleted.stdout.startswith(f"{kind.singular} 'cli-1' deleted (version ")
    missing = _meshlog(cp, "get", kind.singular, "cli-1", check=False)
    assert missing.returncode == 1 and "not found" in missing.stderr
