"""The token side of the `meshlog` CLI that needs no control plane: a bootstrap carrying a
token (valid for a real Envoy), and the errors a user gets before any request is sent."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from events.identity.tokens import (
    DATAPLANE_TOKEN,
    USER_TOKEN,
    Claims,
    KeyId,
    SigningKey,
    dataplane_claims,
    generate_key_pair,
    load_private_key,
    user_claims,
)
from tests.harness import VENV_BIN, envoy_binary

NOWHERE = "http://127.0.0.1:9"  # nothing listens on the discard port
NOW = 1_700_000_000


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / "meshlog"), *args], capture_output=True, text=True,
                          timeout=60)


def _token_file(tmp_path: Path, *, user: bool = False, name: str = "web-1") -> Path:
    """A token as the API makes them, signed by a key of its own (the CLI never verifies);
    `name` "": a token for any Dataplane of the mesh with `kuma.io/service: web`."""
    private, _ = generate_key_pair()
    if user:
        kid = KeyId(purpose=USER_TOKEN, mesh=None, serial=1)
        claims: Claims = user_claims(name="jane", groups=[], valid_for_s=60, now_s=NOW)
    else:
        kid = KeyId(purpose=DATAPLANE_TOKEN, mesh="default", serial=1)
        claims = dataplane_claims(mesh="default", name=name, valid_for_s=60, now_s=NOW,
                                  tags={} if name else {"kuma.io/service": ["web"]})
    path = tmp_path / f"{kid.purpose}-{name}.token"
    path.write_text(SigningKey(kid, load_private_key(private)).sign(claims) + "\n")
    return path


@pytest.mark.integration
def test_a_bootstrap_with_a_token_file_is_a_valid_envoy_config(tmp_path: Path) -> None:
    """The token goes in the ADS and HDS streams' metadata; mesh and name come from it."""
    token_file = _token_file(tmp_path)
    result = _run("dataplane", "bootstrap", "--token-file", str(token_file))
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr  # the warning of a bootstrap without a token
    doc = yaml.safe_load(result.stdout)
    assert doc["node"]["id"] == "default.web-1"
    metadata = [{"key": "authorization", "value": token_file.read_text().strip()}]
    assert doc["dynamicResources"]["adsConfig"]["grpcServices"][0]["initialMetadata"] == metadata
    assert doc["hdsConfig"]["grpcServices"][0]["initialMetadata"] == metadata
    envoy = subprocess.run([envoy_binary(), "--mode", "validate", "--config-yaml", result.stdout],
                           capture_output=True, text=True, timeout=60)
    assert envoy.returncode == 0, envoy.stdout + envoy.stderr


def test_a_bootstrap_token_for_another_dataplane_is_refused(tmp_path: Path) -> None:
    result = _run("dataplane", "bootstrap", "--name", "web-2", "--token-file",
                  str(_token_file(tmp_path)))
    assert result.returncode == 2
    assert "the token is for default.web-1, not --name 'web-2'" in result.stderr


def test_a_bootstrap_with_a_token_for_a_group_takes_the_name_from_its_flags(
        tmp_path: Path) -> None:
    token_file = str(_token_file(tmp_path, name=""))
    result = _run("dataplane", "bootstrap", "--name", "web-2", "--token-file", token_file)
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["node"]["id"] == "default.web-2"
    nameless = _run("dataplane", "bootstrap", "--token-file", token_file)
    assert nameless.returncode != 0
    assert ("--name is required (or --dataplane-file, or a --token-file that names its "
            "Dataplane)") in nameless.stderr
    other_mesh = _run("dataplane", "bootstrap", "--mesh", "other", "--name", "web-2",
                      "--token-file", token_file)
    assert other_mesh.returncode == 2
    assert ("the token is for any Dataplane of mesh 'default' with tags kuma.io/service=web, "
            "not --mesh 'other'") in other_mesh.stderr


def test_a_bootstrap_with_a_user_token_is_refused(tmp_path: Path) -> None:
    result = _run("dataplane", "bootstrap", "--token-file",
                  str(_token_file(tmp_path, user=True)))
    assert result.returncode == 2
    assert "not a dataplane token" in result.stderr


def test_a_missing_token_file_names_the_flag(tmp_path: Path) -> None:
    result = _run("dataplane", "bootstrap", "--token-file", str(tmp_path / "nope"))
    assert result.returncode == 2
    assert f"--token-file {tmp_path / 'nope'}: No such file or directory" in result.stderr


def test_a_tag_must_be_key_equals_value() -> None:
    result = _run("--api", NOWHERE, "generate", "dataplane-token", "--name", "web-1",
                  "--tag", "web")
    assert result.returncode == 2
    assert "--tag 'web' is not KEY=VALUE" in result.stderr
    empty = _run("--api", NOWHERE, "generate", "dataplane-token", "--tag",
                 "kuma.io/service=web,")
    assert empty.returncode == 2
    assert "--tag 'kuma.io/service=web,' is not KEY=VALUE[,VALUE...]" in empty.stderr


def test_revoke_takes_an_id_or_a_token_file_not_both(tmp_path: Path) -> None:
    both = _run("--api", NOWHERE, "revoke", "user-token", "--jti", "x", "--token-file", "f")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
    neither = _run("--api", NOWHERE, "revoke", "user-token")
    assert neither.returncode == 2 and "one of the arguments --jti --token-file" in (
        neither.stderr)
    wrong = _run("--api", NOWHERE, "revoke", "dataplane-token", "--mesh", "other",
                 "--token-file", str(_token_file(tmp_path)))
    assert wrong.returncode == 2
    assert "--mesh 'other' differs from the token's mesh 'default'" in wrong.stderr


def test_a_signing_key_command_checks_its_arguments_before_asking() -> None:
    meshless = _run("--api", NOWHERE, "signing-key", "rotate", "user-token", "--mesh", "x")
    assert meshless.returncode == 2
    assert "--mesh: a user-token key belongs to no mesh" in meshless.stderr
    no_serial = _run("--api", NOWHERE, "signing-key", "retire", "zone-token")
    assert no_serial.returncode == 2 and "the following arguments are required: --serial" in (
        no_serial.stderr)
    unknown = _run("--api", NOWHERE, "signing-key", "rotate", "api-token")
    assert unknown.returncode == 2 and "invalid choice: 'api-token'" in unknown.stderr
