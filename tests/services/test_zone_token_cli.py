"""The zone-token side of the `meshlog` CLI that needs no control plane: a zone ingress
bootstrap carrying a zone token (valid for a real Envoy), and what is refused before any
request is sent."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from events.identity.tokens import (
    ZONE_TOKEN,
    KeyId,
    SigningKey,
    generate_key_pair,
    load_private_key,
    zone_claims,
)
from tests.harness import envoy_binary
from tests.services.test_token_cli import NOWHERE, _run, _token_file

NOW = 1_700_000_000


def _zone_token_file(tmp_path: Path, scope: list[str]) -> Path:
    """A zone token as the API makes them, signed by a key of its own (the CLI never
    verifies)."""
    private, _ = generate_key_pair()
    key = SigningKey(KeyId(purpose=ZONE_TOKEN, mesh=None, serial=1), load_private_key(private))
    path = tmp_path / f"zone-{'-'.join(scope)}.token"
    path.write_text(key.sign(zone_claims(zone="west", scope=scope, valid_for_s=60,
                                         now_s=NOW)) + "\n")
    return path


@pytest.mark.integration
def test_a_zone_ingress_bootstrap_carries_its_zone_token(tmp_path: Path) -> None:
    token_file = _zone_token_file(tmp_path, ["ingress"])
    result = _run("dataplane", "bootstrap", "--zone-ingress", "west-ingress", "--token-file",
                  str(token_file))
    assert result.returncode == 0, result.stderr
    doc = yaml.safe_load(result.stdout)
    assert doc["node"]["id"] == "_zoneingress.west-ingress"
    assert doc["dynamicResources"]["adsConfig"]["grpcServices"][0]["initialMetadata"] == [
        {"key": "authorization", "value": token_file.read_text().strip()}]
    assert "hdsConfig" not in doc
    envoy = subprocess.run([envoy_binary(), "--mode", "validate", "--config-yaml", result.stdout],
                           capture_output=True, text=True, timeout=60)
    assert envoy.returncode == 0, envoy.stdout + envoy.stderr


def test_a_zone_ingress_bootstrap_refuses_a_dataplane_token(tmp_path: Path) -> None:
    result = _run("dataplane", "bootstrap", "--zone-ingress", "west-ingress", "--token-file",
                  str(_token_file(tmp_path)))
    assert result.returncode == 2
    assert "not a zone token (meshlog generate zone-token --zone ZONE)" in result.stderr


def test_a_zone_ingress_bootstrap_refuses_a_token_without_the_ingress_scope(
        tmp_path: Path) -> None:
    result = _run("dataplane", "bootstrap", "--zone-ingress", "west-ingress", "--token-file",
                  str(_zone_token_file(tmp_path, ["egress"])))
    assert result.returncode == 2
    assert "the zone token's scope is ['egress'], not ingress" in result.stderr


def test_generate_zone_token_knows_kumas_scopes() -> None:
    result = _run("--api", NOWHERE, "generate", "zone-token", "--zone", "west", "--scope",
                  "sidecar")
    assert result.returncode == 2
    assert "argument --scope: invalid choice: 'sidecar'" in result.stderr
    assert "ingress" in result.stderr.split("invalid choice")[1]
