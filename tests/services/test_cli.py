"""The `meshlog` CLI as a user runs it, against a real `meshlog up`."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from services.runtime.config import parse_dns_server
from services.runtime.spawn import popen
from tests.harness import VENV_BIN, envoy_binary, free_port, meshlog_up, stop_process, wait_for

pytestmark = pytest.mark.integration
DEMO = Path(__file__).parents[2] / "examples" / "demo.yaml"


def _meshlog(api: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / "meshlog"), "--api", api, *args], capture_output=True,
                          text=True, timeout=60, check=check)


def test_demo_gives_a_generated_backend_with_vip_and_hostname(tmp_path: Path) -> None:
    with meshlog_up(tmp_path / "cp") as cp:
        applied = _meshlog(cp.where["api"], "apply", "-f", str(DEMO))
        assert "dataplane 'backend-2' created" in applied.stdout
        out = json.loads(_meshlog(cp.where["api"], "get", "meshservices", "-m", "default",
                                  "-o", "json").stdout)
        backend = next(i for i in out["items"] if i["name"] == "backend")
        assert backend["labels"]["kuma.io/managed-by"] == "meshservice-generator"
        vip = backend["status"]["vips"][0]["ip"]
        assert ipaddress.ip_address(vip) in ipaddress.ip_network("241.0.0.0/8")
        assert [a["hostname"] for a in backend["status"]["addresses"]] == [
            "backend.svc.mesh.local"]
        assert backend["status"]["dataplaneProxies"] == {"total": 2, "connected": 0, "healthy": 2}

        table = _meshlog(cp.where["api"], "get", "meshservices").stdout
        assert "backend.svc.mesh.local" in table and vip in table

        one = yaml.safe_load(_meshlog(cp.where["api"], "get", "dataplane", "web-1").stdout)
        assert one["name"] == "web-1" and one["type"] == "Dataplane"

        again = _meshlog(cp.where["api"], "apply", "-f", str(DEMO))
        assert again.stdout.count("unchanged") == 4

        deleted = _meshlog(cp.where["api"], "delete", "dataplane", "backend-2")
        assert "deleted" in deleted.stdout
        missing = _meshlog(cp.where["api"], "get", "dataplane", "backend-2", check=False)
        assert missing.returncode == 1 and "not found" in missing.stderr


def test_apply_reports_each_invalid_document_and_fails(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("type: Mesh\nname: default\n---\ntype: Dataplane\nmesh: default\nname: x\n"
                   "networking: {address: 10.0.0.1, inbound: [{port: 0}]}\n---\ntype: Gadget\n")
    with meshlog_up(tmp_path / "cp") as cp:
        result = _meshlog(cp.where["api"], "apply", "-f", str(bad), check=False)
    assert result.returncode == 1
    assert "mesh 'default' created" in result.stdout
    assert "networking.inbound[0].port: 0 is not in 1..65535" in result.stderr
    assert "'type' is 'Gadget'" in result.stderr


def test_apply_takes_several_files_in_order(tmp_path: Path) -> None:
    """examples/hostnames.yaml needs the mesh of examples/demo.yaml: one command, in order."""
    hostnames = DEMO.parent / "hostnames.yaml"
    with meshlog_up(tmp_path / "cp") as cp:
        applied = _meshlog(cp.where["api"], "apply", "-f", str(DEMO), "-f", str(hostnames))
        assert applied.stdout.splitlines()[0].startswith("mesh 'default' created")
        assert "meshservice 'payments' created" in applied.stdout.splitlines()[-1]
        payments = json.loads(_meshlog(cp.where["api"], "get", "meshservice", "payments",
                                       "-m", "default", "-o", "json").stdout)
    assert sorted(a["hostname"] for a in payments["status"]["addresses"]) == [
        "payments.blue.mesh", "payments.svc.mesh.local"]


def test_unreachable_api_is_a_clear_error() -> None:
    result = _meshlog("http://127.0.0.1:9", "get", "meshes", check=False)
    assert result.returncode == 1
    assert "cannot reach the meshlog API at http://127.0.0.1:9" in result.stderr


def test_dataplane_bootstrap_is_a_valid_envoy_config() -> None:
    """ADS and HDS (inbound health from the proxy) both point at the xDS cluster."""
    result = subprocess.run(
        [str(VENV_BIN / "meshlog"), "dataplane", "bootstrap", "--mesh", "default",
         "--name", "web-1", "--xds-address", "127.0.0.1:5678"],
        capture_output=True, text=True, timeout=60, check=True)
    doc = yaml.safe_load(result.stdout)
    assert doc["node"]["id"] == "default.web-1"
    assert doc["dynamicResources"]["adsConfig"]["apiType"] == "GRPC"
    hds = doc["hdsConfig"]
    assert (hds["apiType"], hds["transportApiVersion"]) == ("GRPC", "V3")
    assert hds["grpcServices"] == [{"envoyGrpc": {"clusterName": "meshlog_xds"}}]
    assert [c["name"] for c in doc["staticResources"]["clusters"]] == ["meshlog_xds"]
    envoy = subprocess.run([envoy_binary(), "--mode", "validate", "--config-yaml", result.stdout],
                           capture_output=True, text=True, timeout=60)
    assert envoy.returncode == 0, envoy.stdout + envoy.stderr


@pytest.mark.parametrize(("who", "kind"), [(["--name", "web-1"], "dataplane"),
                                           (["--zone-ingress", "west-ingress"], "zone")])
def test_a_bootstrap_without_a_token_warns_that_gateways_refuse_it(who: list[str],
                                                                   kind: str) -> None:
    """The README's self-registered sidecar once came without a token: Envoy's log said why
    only after it ran. The bootstrap still prints (a --no-auth gateway takes it)."""
    result = subprocess.run([str(VENV_BIN / "meshlog"), "dataplane", "bootstrap", *who],
                            capture_output=True, text=True, timeout=60,
                            env={k: v for k, v in os.environ.items()
                                 if k != "MESHLOG_DATAPLANE_TOKEN_FILE"})
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["node"]["id"]
    assert result.stderr.startswith(
        f"warning: no --token-file: this bootstrap sends no {kind} token, so a gateway that "
        f"requires tokens (the default; all but --no-auth) ends its proxy's stream"), (
        result.stderr)
    if kind == "zone":  # asked of global's API, as the README's zone ingress does
        assert "meshlog --api GLOBAL_API generate zone-token --zone ZONE" in result.stderr


@pytest.mark.parametrize("flag", ["--drain-grace", "--deregistration-delay",
                                  "--max-connection-age", "--dns-cache-ttl"])
def test_gateway_durations_take_units_and_name_a_bad_value(flag: str) -> None:
    bad = subprocess.run([str(VENV_BIN / "meshlog"), "gateway", flag, "soon",
                          "--nats-url", "nats://127.0.0.1:9"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert f"{flag}: 'soon' is not a duration" in bad.stderr


@pytest.mark.parametrize(("value", "said"), [
    ("dns.internal", "--dns-server: 'dns.internal' is not IP, IP:PORT or [IPv6]:PORT (the DNS "
                     "server's address, not its name)"),
    ("10.0.0.2:99999", "--dns-server: '10.0.0.2:99999' has no port in 1..65535"),
    ("[fd00::53", "--dns-server: '[fd00::53' is not IP, IP:PORT or [IPv6]:PORT")])
def test_gateway_dns_server_names_a_bad_value(value: str, said: str) -> None:
    bad = subprocess.run([str(VENV_BIN / "meshlog"), "gateway", "--dns-server", value,
                          "--nats-url", "nats://127.0.0.1:9"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2, bad.stderr
    assert said in bad.stderr


@pytest.mark.parametrize(("value", "server"), [
    ("10.0.0.2", ("10.0.0.2", 53)), ("127.0.0.1:5353", ("127.0.0.1", 5353)),
    ("fd00::53", ("fd00::53", 53)), ("[fd00::53]:8600", ("fd00::53", 8600))])
def test_dns_server_takes_an_ip_and_a_port(value: str, server: tuple[str, int]) -> None:
    assert parse_dns_server("--dns-server", value) == server


@pytest.mark.parametrize(("value", "said"), [("0", "--max-batch: 0 must be at least 1"),
                                             ("lots", "--max-batch: 'lots' is not a whole number")])
def test_projector_max_batch_names_a_bad_value(value: str, said: str) -> None:
    bad = subprocess.run([str(VENV_BIN / "meshlog"), "projector", "--max-batch", value,
                          "--nats-url", "nats://127.0.0.1:9"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2, bad.stderr
    assert said in bad.stderr


@pytest.mark.parametrize(("flag", "seed", "whose"), [
    ("--sync-creds", "sync.nk", "the multi-zone sync's user"),
    # a standalone projector runs no source keeper: an admin seed given to it (the flag, or
    # MESHLOG_ADMIN_CREDS left in its environment) would sit on its host for nothing
    ("--admin-creds", "admin.nk", "the source keeper's user"),
])
def test_a_standalone_projector_refuses_multi_zone_credentials(
        flag: str, seed: str, whose: str) -> None:
    bad = _run("projector", flag, seed, "--nats-url", "nats://127.0.0.1:9")
    assert bad.returncode == 2, bad.stderr
    assert bad.stderr.strip().splitlines()[-1] == (
        f"error: {flag} {seed}: only with --mode global or zone ({whose}; a standalone "
        "control plane has no sync)")


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / "meshlog"), *args], capture_output=True, text=True,
                          timeout=timeout)


NOWHERE = "http://127.0.0.1:9"  # nothing listens on the discard port


@pytest.mark.parametrize("args", [
    ["quarantine", "--api", NOWHERE],
    ["get", "meshes", "--api", NOWHERE],
    ["--api", "http://127.0.0.1:7", "get", "meshes", "--api", NOWHERE],  # the later one wins
    ["--api", NOWHERE, "get", "meshes", "-v"],  # not overwritten by the subcommand's default
])
def test_api_flag_goes_before_or_after_the_subcommand(args: list[str]) -> None:
    result = _run(*args)
    assert result.returncode == 1, result.stderr
    assert f"cannot reach the meshlog API at {NOWHERE}" in result.stderr


@pytest.mark.parametrize("args", [["-v", "quarantine", "--api", NOWHERE],
                                  ["quarantine", "-v", "--api", NOWHERE],
                                  ["quarantine", "--api", NOWHERE, "--verbose"]])
def test_verbose_flag_goes_before_or_after_the_subcommand(args: list[str]) -> None:
    result = _run(*args)
    assert result.returncode == 1, result.stderr
    assert " DEBUG httpcore" in result.stderr  # debug logging is on


def test_global_flags_are_taken_by_nested_subcommands() -> None:
    result = _run("dataplane", "bootstrap", "--name", "web-1", "-v", "--api", NOWHERE)
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["node"]["id"] == "default.web-1"


@pytest.mark.parametrize("text", ["", "\n", "---\n---\n", "# nothing here\n---\n# nor here\n",
                                  "[]\n"])
def test_apply_of_a_file_without_resources_fails(text: str, tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text(text)
    result = _run("--api", NOWHERE, "apply", "-f", str(empty))  # refused before any request
    assert result.returncode == 1
    assert result.stderr == f"error: no resources in {empty}\n"
    assert result.stdout == ""


def test_apply_of_empty_stdin_fails() -> None:
    result = subprocess.run([str(VENV_BIN / "meshlog"), "--api", NOWHERE, "apply", "-f", "-"],
                            input="---\n", capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr == "error: no resources in stdin\n"


def test_a_projector_waiting_for_nats_logs_one_line_per_attempt(tmp_path: Path) -> None:
    """A long-running process waits for its NATS (compose may start it first), without a
    traceback every 2 s."""
    port = free_port()
    log_path = tmp_path / "projector.log"
    with open(log_path, "wb") as log:
        proc = popen([str(VENV_BIN / "meshlog"), "projector", "--nats-url",
                      f"nats://127.0.0.1:{port}", "--database",
                      f"sqlite:///{tmp_path / 'rm.db'}"],
                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for(lambda: log_path.read_text().count("Connect call failed") >= 2,
                     timeout=60, what="two failed connects")
        finally:
            stop_process(proc, signal.SIGTERM)
    text = log_path.read_text()
    assert "Traceback" not in text, text
    assert f"ConnectionRefusedError: [Errno 111] Connect call failed ('127.0.0.1', {port})" in text
