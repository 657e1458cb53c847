"""xDS over TLS with real parts, tokens on: `meshlog up --xds-tls` (its own CA, in the data
dir), a `meshlog gateway` serving an operator's certificate files, real Envoys bootstrapped
by the CLI with `--ca-cert-file` and `--token-file`, and real grpcio clients.

- an Envoy that trusts the control plane's CA gets its config and its traffic flows;
- an Envoy that trusts another CA gets nothing (its handshakes fail), a plaintext client's
  stream fails, and the gateway goes on serving the first Envoy;
- a restart keeps the CA: the Envoy reconnects with the CA file it was given;
- a gateway process given `--tls-cert-file` and `--tls-key-file` serves an Envoy that trusts
  the operator's CA.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, cast

import grpc
import pytest

from services.runtime.xds_certificate import ensure_xds_certificate
from tests.harness import (
    VENV_BIN,
    ControlPlane,
    Envoy,
    fetch,
    free_port,
    http_backend,
    meshlog_up,
    run_envoy,
    run_gateway_process,
    wait_for,
)
from tests.xds_gateway._ads import ADS

pytestmark = pytest.mark.integration

BACKEND = "127.0.0.2"


def _dataplane(name: str, address: str, port: int, service: str) -> dict[str, Any]:
    return {"type": "Dataplane", "mesh": "default", "name": name,
            "networking": {"address": address, "inbound": [
                {"port": port, "name": "http", "protocol": "http",
                 "tags": {"kuma.io/service": service}}]}}


def _bootstrap(cp: ControlPlane, name: str, xds_port: int, ca_file: Path,
               workdir: Path) -> dict[str, Any]:
    """`meshlog dataplane bootstrap --ca-cert-file --token-file`, as an operator runs it."""
    token_file = cp.token_file(name, workdir)
    out = subprocess.run(
        [str(VENV_BIN / "meshlog"), "dataplane", "bootstrap", "--token-file", str(token_file),
         "--ca-cert-file", str(ca_file), "--xds-address", f"127.0.0.1:{xds_port}",
         "--admin-port", "0", "-o", "json"],
        check=True, capture_output=True, text=True, timeout=60)
    return cast("dict[str, Any]", json.loads(out.stdout))


def _connected(envoy: Envoy) -> int:
    return envoy.stats("control_plane.connected_state").get("control_plane.connected_state", 0)


def _verify_failures(envoy: Envoy) -> int:
    return sum(envoy.stats("cluster.meshlog_xds.ssl.fail_verify").values())


def _dumped_clusters(envoy: Envoy) -> set[str]:
    dump = envoy.config_dump("dynamic_active_clusters")
    return {c["cluster"]["name"] for c in dump.get("configs", [])}


def test_envoy_gets_its_config_over_tls_and_strangers_get_nothing(tmp_path: Path) -> None:
    data, xds_port = tmp_path / "cp", free_port()
    port = free_port(BACKEND)
    up = ("--xds-tls", "--xds-port", str(xds_port), "--vip-cidr", "127.100.0.0/16")
    with meshlog_up(data, *up) as cp, http_backend(BACKEND, port, "backend-1"):
        ca_file = Path(cp.where["xds_ca_cert"])
        assert ca_file == data / "xds-tls" / "ca.crt"
        ca = ca_file.read_bytes()
        cp.apply({"type": "Mesh", "name": "default"})
        cp.apply(_dataplane("backend-1", BACKEND, port, "backend"))
        cp.apply(_dataplane("web-1", "127.0.0.4", free_port("127.0.0.4"), "web"))
        cp.apply(_dataplane("web-2", "127.0.0.5", free_port("127.0.0.5"), "web"))
        vip = cp.meshservice("backend")["status"]["vips"][0]["ip"]
        other_ca = ensure_xds_certificate(tmp_path / "other", ["127.0.0.1"]).ca_file

        envoys = tmp_path / "envoy"
        with run_envoy(_bootstrap(cp, "web-1", xds_port, ca_file, envoys), envoys,
                       "web-1") as web_1:
            wait_for(lambda: f"outbound:{vip}:{port}" in web_1.listeners(), timeout=60,
                     what="web-1's outbound listener over TLS")
            assert wait_for(lambda: fetch(f"http://{vip}:{port}/"), timeout=60,
                            what="traffic through web-1's config") == "backend-1"
            assert any("backend" in name for name in _dumped_clusters(web_1))

            # an Envoy that trusts another CA: its handshakes fail, it never connects
            with run_envoy(_bootstrap(cp, "web-2", xds_port, other_ca, envoys), envoys,
                           "web-2") as web_2:
                wait_for(lambda: _verify_failures(web_2) >= 2, timeout=60,
                         what="web-2's failed certificate checks")
                assert _connected(web_2) == 0
                assert not _dumped_clusters(web_2)

            # a plaintext client: its stream fails, nothing is served to it
            with grpc.insecure_channel(f"127.0.0.1:{xds_port}") as plaintext:
                ads: grpc.StreamStreamMultiCallable[bytes, bytes] = plaintext.stream_stream(ADS)
                with pytest.raises(grpc.RpcError) as failed:
                    next(ads(iter([b""]), timeout=30))  # past it: DEADLINE_EXCEEDED
                assert failed.value.code() == grpc.StatusCode.UNAVAILABLE

            # the gateway goes on serving web-1
            cp.apply({"type": "MeshService", "mesh": "default", "name": "backend-api",
                      "spec": {"selector": {"dataplaneTags": {"kuma.io/service": "backend"}},
                               "ports": [{"port": 9090, "targetPort": "http",
                                          "appProtocol": "http"}]}})
            api_vip = cp.meshservice("backend-api")["status"]["vips"][0]["ip"]
            wait_for(lambda: f"outbound:{api_vip}:9090" in web_1.listeners(), timeout=60,
                     what="the MeshService applied later, in web-1")
            assert _connected(web_1) == 1

        # a restart keeps the CA: web-1, given its file once, connects again
        with run_envoy(_bootstrap(cp, "web-1", xds_port, ca_file, envoys), envoys,
                       "web-1-again") as web_1:
            wait_for(lambda: _connected(web_1) == 1, timeout=60, what="web-1 connected")
            cp.proc.terminate()
            cp.proc.wait(timeout=30)
            wait_for(lambda: _connected(web_1) == 0, timeout=60, what="web-1 disconnected")
            with meshlog_up(data, *up) as restarted:
                assert Path(restarted.where["xds_ca_cert"]).read_bytes() == ca
                # Envoy retried while the control plane was down, backing off up to 30 s
                # (jittered): its next attempt may be that far away
                wait_for(lambda: _connected(web_1) == 1, timeout=90,
                         what="web-1 reconnected to the restarted control plane")
                assert _verify_failures(web_1) == 0
    log = (data / "up.log").read_text()
    assert "PLAINTEXT" not in log
    assert "over TLS (certificate" in log


def test_a_gateway_process_serves_an_operators_certificate(tmp_path: Path) -> None:
    operator = ensure_xds_certificate(tmp_path / "pki", ["127.0.0.1"])
    with meshlog_up(tmp_path / "cp") as cp:
        cp.apply({"type": "Mesh", "name": "default"})
        inbound = free_port("127.0.0.4")
        cp.apply(_dataplane("web-1", "127.0.0.4", inbound, "web"))
        with run_gateway_process(cp.where["nats"], tmp_path / "gw", "gw-tls", "--nats-creds",
                                 str(cp.creds("gateway")), "--tls-cert-file",
                                 str(operator.cert_file), "--tls-key-file",
                                 str(operator.key_file)) as gateway:
            bootstrap = _bootstrap(cp, "web-1", gateway.port, operator.ca_file, tmp_path)
            with run_envoy(bootstrap, tmp_path / "envoy", "web-1") as envoy:
                wait_for(lambda: f"inbound:127.0.0.4:{inbound}" in envoy.listeners(),
                         timeout=60, what="web-1's inbound listener from the TLS gateway")
        log = gateway.log.read_text()
        assert f"xDS gateway serves TLS only, with {operator.cert_file}" in log
        assert "PLAINTEXT" not in log
    # meshlog up itself served plaintext with tokens on: it said so
    assert "requires dataplane tokens but serves PLAINTEXT" in (
        tmp_path / "cp" / "up.log").read_text()
