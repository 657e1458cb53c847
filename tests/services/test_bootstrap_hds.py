"""`meshlog dataplane bootstrap` points Envoy's Health Discovery Service at the gateway."""

from __future__ import annotations

import subprocess

import yaml

from tests.harness import VENV_BIN, envoy_binary


def test_bootstrap_has_hds_config_on_the_xds_cluster_and_envoy_accepts_it() -> None:
    result = subprocess.run(
        [str(VENV_BIN / "meshlog"), "dataplane", "bootstrap", "--mesh", "default",
         "--name", "web-1", "--xds-address", "127.0.0.1:5678"],
        capture_output=True, text=True, timeout=60, check=True)
    doc = yaml.safe_load(result.stdout)
    hds = doc["hdsConfig"]
    assert (hds["apiType"], hds["transportApiVersion"]) == ("GRPC", "V3")
    assert hds["grpcServices"] == [{"envoyGrpc": {"clusterName": "meshlog_xds"}}]
    assert [c["name"] for c in doc["staticResources"]["clusters"]] == ["meshlog_xds"]
    envoy = subprocess.run([envoy_binary(), "--mode", "validate", "--config-yaml", result.stdout],
                           capture_output=True, text=True, timeout=60)
    assert envoy.returncode == 0, envoy.stdout + envoy.stderr
