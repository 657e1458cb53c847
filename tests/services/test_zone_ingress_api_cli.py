"""ZoneIngresses through the HTTP API and the CLI against a real `meshlog up` (zone
`default`), and `meshlog dataplane bootstrap --zone-ingress`."""

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


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with meshlog_up(tmp_path_factory.mktemp("zoneingress")) as plane:
        yield plane


def _ingress(name: str, **extra: Any) -> dict[str, Any]:
    return {"type": "ZoneIngress", "name": name, "networking": {
        "address": "10.0.0.5", "port": 10001, "advertisedAddress": "203.0.113.5",
        "advertisedPort": 443, "admin": {"port": 9901}}, **extra}


def _meshlog(*args: str, cp: ControlPlane | None = None, check: bool = True,
             stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    api = ["--api", cp.where["api"]] if cp is not None else []
    return subprocess.run([str(VENV_BIN / "meshlog"), *api, *args], capture_output=True,
                          text=True, timeout=60, check=check, input=stdin)


def test_cli_apply_get_and_delete(cp: ControlPlane, tmp_path: Path) -> None:
    path = tmp_path / "ingress.yaml"
    path.write_text(yaml.safe_dump(_ingress("ingress-1")))

    applied = _meshlog("apply", "-f", str(path), cp=cp)
    assert applied.stdout.startswith("zoneingress 'ingress-1' created (version ")

    table = _meshlog("get", "zoneingresses", cp=cp).stdout
    [header] = [line for line in table.splitlines() if line.split()[0] == "NAME"]
    assert header.split() == ["NAME", "ZONE", "ADDRESS", "ADVERTISED", "AGE"]
    [row] = [line for line in table.splitlines() if line.split()[:1] == ["ingress-1"]]
    assert row.split()[:4] == ["ingress-1", "default", "10.0.0.5:10001", "203.0.113.5:443"]

    one = yaml.safe_load(_meshlog("get", "zoneingress", "ingress-1", cp=cp).stdout)
    assert one["zone"] == "default"  # pinned from the writer
    assert one["labels"] == {"kuma.io/origin": "zone", "kuma.io/zone": "default",
                             "kuma.io/env": "universal", "kuma.io/display-name": "ingress-1"}
    again = _meshlog("apply", "-f", "-", cp=cp, stdin=yaml.safe_dump(one))
    assert again.returncode == 0
    listed = json.loads(_meshlog("get", "zi", "-o", "json", cp=cp).stdout)
    assert [item["name"] for item in listed["items"]] == ["ingress-1"]

    deleted = _meshlog("delete", "zoneingress", "ingress-1", cp=cp)
    assert deleted.stdout.startswith("zoneingress 'ingress-1' deleted (version ")
    assert cp.api.get("/zoneingresses/ingress-1").status_code == 404


def test_the_api_names_every_violation_and_refuses_another_zones(cp: ControlPlane) -> None:
    bad = _ingress("bad")
    bad["networking"]["address"] = "ingress.local"
    del bad["networking"]["advertisedPort"]
    response = cp.api.put("/zoneingresses/bad", json=bad)
    assert response.status_code == 400
    assert [p["field"] for p in response.json()["invalid_parameters"]] == [
        "networking.address", "networking.advertisedPort"]

    response = cp.api.put("/zoneingresses/west-1", json=_ingress("west-1", zone="west"))
    assert response.status_code == 400
    assert "'west' is not this control plane's zone 'default'" in response.text


def test_bootstrap_for_a_zone_ingress_envoy() -> None:
    doc = yaml.safe_load(_meshlog("dataplane", "bootstrap", "--zone-ingress", "ingress-1",
                                  "--xds-address", "127.0.0.1:5678").stdout)

    assert doc["node"]["id"] == "_zoneingress.ingress-1"
    assert "hdsConfig" not in doc
    refused = _meshlog("dataplane", "bootstrap", "--zone-ingress", "ingress-1", "--mesh", "x",
                       check=False)
    assert refused.returncode != 0 and "--zone-ingress takes none of" in refused.stderr
