"""MeshMultiZoneServices through the HTTP API and the CLI, against a real `meshlog up`:
standalone (zone `default`) takes them, a zone's control plane refuses them."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import VENV_BIN, ControlPlane, meshlog_up

pytestmark = pytest.mark.integration

BASE = "/meshes/default/meshmultizoneservices"
CIDR = "10.243.0.0/16"


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with meshlog_up(tmp_path_factory.mktemp("mmzs"), "--mmzs-vip-cidr", CIDR) as plane:
        plane.apply({"type": "Mesh", "name": "default"})
        plane.apply({"type": "MeshService", "mesh": "default", "name": "redis",
                     "labels": {"app": "redis"},
                     "spec": {"selector": {"dataplaneTags": {"kuma.io/service": "redis"}},
                              "ports": [{"port": 6379}]}})
        yield plane


def _mmzs(name: str, app: str = "redis", **extra: Any) -> dict[str, Any]:
    return {"type": "MeshMultiZoneService", "mesh": "default", "name": name,
            "spec": {"selector": {"meshService": {"matchLabels": {"app": app}}},
                     "ports": [{"port": 6379}]}, **extra}


def _meshlog(cp: ControlPlane, *args: str, check: bool = True,
             stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / "meshlog"), "--api", cp.where["api"], *args],
                          capture_output=True, text=True, timeout=60, check=check, input=stdin)


# --- API ----------------------------------------------------------------------------------------


def test_put_then_get_shows_its_vip_hostname_and_matches(cp: ControlPlane) -> None:
    created = cp.api.put(f"{BASE}/redis-mz", json=_mmzs("redis-mz"))
    assert created.status_code == 201, created.text
    assert "warnings" not in created.json()

    got = cp.api.get(f"{BASE}/redis-mz")
    assert got.headers["etag"] == f'"{created.json()["version"]}"'
    body = got.json()
    assert body["spec"] == {"selector": {"meshService": {"matchLabels": {"app": "redis"}}},
                            "ports": [{"port": 6379, "appProtocol": "tcp"}]}
    assert body["labels"]["kuma.io/origin"] == "zone"  # a standalone control plane's
    status = body["status"]
    [vip] = status["vips"]
    assert ipaddress.ip_address(vip["ip"]) in ipaddress.ip_network(CIDR)  # --mmzs-vip-cidr
    assert [a["hostname"] for a in status["addresses"]] == ["redis-mz.mzsvc.mesh.local"]
    assert status["meshServices"] == [
        {"name": "redis", "namespace": "", "zone": "default", "mesh": "default"}]
    assert status["conditions"] == [{"type": "MeshServicesMatched", "status": "True",
                                     "reason": "MatchesFound",
                                     "message": "Matched 1 MeshService(s)"}]
    assert "backends" not in body
    assert "redis-mz" in [i["name"] for i in cp.api.get(BASE).json()["items"]]


def test_a_name_that_is_not_a_dns1035_label_is_created_with_a_warning(cp: ControlPlane) -> None:
    response = cp.api.put(f"{BASE}/redis.v2", json=_mmzs("redis.v2"))

    assert response.status_code == 201, response.text
    [warning] = response.json()["warnings"]
    assert warning.startswith("Invalid name: 'redis.v2'. It does not conform to the DNS format")


def test_an_invalid_one_is_a_400_naming_every_field(cp: ControlPlane) -> None:
    doc = _mmzs("bad")
    doc["spec"]["selector"]["meshService"]["matchLabels"] = {}
    doc["spec"]["ports"] = [{"port": 70000, "appProtocol": "udp"}]

    response = cp.api.put(f"{BASE}/bad", json=doc)

    assert response.status_code == 400
    fields = {p["field"]: p["reason"] for p in response.json()["invalid_parameters"]}
    assert fields["spec.ports[0].port"] == "70000 is not in 1..65535"
    assert fields["spec.ports[0].appProtocol"].startswith("'udp' is not one of ")
    assert fields["spec.selector.meshService.matchLabels"].startswith("{} must not be empty")
    assert cp.api.get(f"{BASE}/bad").status_code == 404


def test_no_match_then_delete(cp: ControlPlane) -> None:
    cp.apply(_mmzs("nothing", app="none", labels={"team": "x"}))

    body = cp.api.get(f"{BASE}/nothing").json()
    assert body["status"]["conditions"][0]["reason"] == "NoMatchesFound"
    page = cp.api.get(BASE, params={"filter[labels.team]": "x"}).json()
    assert [item["name"] for item in page["items"]] == ["nothing"]

    assert cp.api.delete(f"{BASE}/nothing").status_code == 200
    assert cp.api.get(f"{BASE}/nothing").status_code == 404
    assert cp.api.delete(f"{BASE}/nothing").status_code == 404


# --- CLI ----------------------------------------------------------------------------------------


def test_cli_apply_get_delete(cp: ControlPlane, tmp_path: Path) -> None:
    path = tmp_path / "mmzs.yaml"
    path.write_text(yaml.safe_dump(_mmzs("cli-redis")))

    applied = _meshlog(cp, "apply", "-f", str(path))
    assert applied.stdout.startswith("meshmultizoneservice 'cli-redis' created (version ")

    table = _meshlog(cp, "get", "meshmultizoneservices").stdout
    [header] = [line for line in table.splitlines() if line.split()[0] == "MESH"]
    assert header.split() == ["MESH", "NAME", "VIP", "HOSTNAMES", "PORTS", "SELECTOR",
                              "MESHSERVICES", "AGE"]
    [row] = [line for line in table.splitlines() if " cli-redis " in line]
    assert "cli-redis.mzsvc.mesh.local" in row and "6379/tcp" in row
    assert "app=redis" in row and "redis@default" in row

    one = yaml.safe_load(_meshlog(cp, "get", "meshmultizoneservice", "cli-redis").stdout)
    assert one["type"] == "MeshMultiZoneService" and one["status"]["vips"]
    listed = json.loads(_meshlog(cp, "get", "mmzs", "-o", "json").stdout)
    assert "cli-redis" in [item["name"] for item in listed["items"]]
    # what `get -o yaml` prints applies again (its status ignored)
    again = _meshlog(cp, "apply", "-f", "-", stdin=yaml.safe_dump(one))
    assert again.stdout.startswith("meshmultizoneservice 'cli-redis' ")
    assert cp.api.get(f"{BASE}/cli-redis").json()["status"]["vips"] == one["status"]["vips"]

    deleted = _meshlog(cp, "delete", "meshmultizoneservice", "cli-redis")
    assert deleted.stdout.startswith("meshmultizoneservice 'cli-redis' deleted (version ")


def test_cli_apply_prints_the_deprecation_warning(cp: ControlPlane) -> None:
    result = _meshlog(cp, "apply", "-f", "-", stdin=yaml.safe_dump(_mmzs("Redis-Upper.x")),
                      check=False)

    # not a resource name at all (upper case): refused; a dotted lower-case one only warned
    assert result.returncode == 1
    warned = _meshlog(cp, "apply", "-f", "-", stdin=yaml.safe_dump(_mmzs("cli.dotted")))
    assert "created" in warned.stdout
    assert "warning: MeshMultiZoneService 'cli.dotted': Invalid name: 'cli.dotted'" in (
        warned.stderr)
