"""xDS over TLS on the command line, without a control plane: `meshlog gateway` and `meshlog
up` refuse bad certificate files at start with an error naming the file (before they connect
to anything; a key of another certificate and an expired certificate are in
tests/services/test_api_tls_cli.py, beside the API's), and `meshlog dataplane bootstrap
--ca-cert-file` gives Envoy a valid TLS ADS cluster."""

from __future__ import annotations

import base64
import datetime
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from services.runtime.xds_certificate import XdsCertificate, ensure_xds_certificate
from tests.harness import VENV_BIN, envoy_binary

NOWHERE = "nats://127.0.0.1:9"  # nothing listens on the discard port


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / "meshlog"), *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})})


def _pair(folder: Path, *, now: datetime.datetime | None = None) -> XdsCertificate:
    return ensure_xds_certificate(folder, ["localhost", "127.0.0.1"], now=now)


def test_a_gateway_needs_both_files(tmp_path: Path) -> None:
    pair = _pair(tmp_path)
    result = _run("gateway", "--nats-url", NOWHERE, "--tls-cert-file", str(pair.cert_file))
    assert result.returncode == 2, result.stderr
    assert (f"error: --tls-cert-file {pair.cert_file}: give --tls-key-file too (env "
            f"MESHLOG_TLS_KEY_FILE)") in result.stderr


def test_the_files_come_from_the_environment_too(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("nope\n")
    result = _run("gateway", "--nats-url", NOWHERE, env={
        "MESHLOG_TLS_CERT_FILE": str(garbage), "MESHLOG_TLS_KEY_FILE": str(garbage)})
    assert result.returncode == 2, result.stderr
    assert f"error: --tls-cert-file {garbage}: not a PEM certificate" in result.stderr


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["sidecar", "zone-ingress"])
def test_a_bootstrap_with_a_ca_has_kumas_tls_ads_cluster(tmp_path: Path, kind: str) -> None:
    pair = _pair(tmp_path)
    who = ["--name", "web-1"] if kind == "sidecar" else ["--zone-ingress", "ingress-1"]
    result = _run("dataplane", "bootstrap", *who, "--xds-address", "localhost:5678",
                  "--ca-cert-file", str(pair.ca_file))
    assert result.returncode == 0, result.stderr
    doc = yaml.safe_load(result.stdout)
    [cluster] = doc["staticResources"]["clusters"]
    tls = cluster["transportSocket"]["typedConfig"]
    assert tls["@type"].endswith("transport_sockets.tls.v3.UpstreamTlsContext")
    assert tls["sni"] == "localhost"
    assert tls["commonTlsContext"]["validationContextSdsSecretConfig"] == {
        "name": "cp_validation_ctx"}
    [secret] = doc["staticResources"]["secrets"]
    context = secret["validationContext"]
    assert base64.b64decode(context["trustedCa"]["inlineBytes"]) == pair.ca_file.read_bytes()
    assert context["matchTypedSubjectAltNames"] == [
        {"sanType": "DNS", "matcher": {"exact": "localhost"}},
        {"sanType": "IP_ADDRESS", "matcher": {"exact": "localhost"}}]
    envoy = subprocess.run([envoy_binary(), "--mode", "validate", "--config-yaml", result.stdout],
                           capture_output=True, text=True, timeout=60)
    assert envoy.returncode == 0, envoy.stdout + envoy.stderr


def test_a_bootstrap_ca_file_must_be_a_certificate(tmp_path: Path) -> None:
    pair = _pair(tmp_path)
    result = _run("dataplane", "bootstrap", "--name", "web-1", "--ca-cert-file",
                  str(pair.key_file))
    assert result.returncode == 2
    assert f"error: --ca-cert-file {pair.key_file}: not a PEM certificate" in result.stderr
    missing = _run("dataplane", "bootstrap", "--name", "web-1", "--ca-cert-file",
                   str(tmp_path / "nope.crt"))
    assert missing.returncode == 2
    assert f"--ca-cert-file {tmp_path / 'nope.crt'}: cannot read it" in missing.stderr
