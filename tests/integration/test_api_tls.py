"""The HTTP API over TLS with real processes and real handshakes (services.runtime.api_tls):

- `meshlog up --api-tls` serves HTTPS with the CA it made in its data dir; up.json names the
  https URL and the CA; the CLI applies a resource through it, trusting that CA by itself (the
  data dir's) or with `--ca-cert-file`;
- a client that trusts another CA is refused (the CLI says which flag to give), and so is
  plaintext HTTP on the TLS port;
- `meshlog api` serves an operator's certificate files, and a renewed pair reaches new
  connections without a restart; half a rotation (a new certificate beside the old key) is
  not served.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from events.identity import SecretKey
from services.runtime.xds_certificate import XdsCertificate, ensure_xds_certificate
from tests.harness import VENV_BIN, ControlPlane, meshlog_up, wait_for
from tests.services.test_api_process import _api

pytestmark = pytest.mark.integration

HOSTS = ["localhost", "127.0.0.1"]


def _meshlog(*args: str, cwd: Path, env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it, from `cwd` (whose .meshlog is no data dir of a test)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MESHLOG_")}
    return subprocess.run([str(VENV_BIN / "meshlog"), *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd, env={**environment, **(env or {})})


def _trusting(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file)


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """One `meshlog up --api-tls` for the module's tests (each only reads, or applies a mesh
    of its own)."""
    with meshlog_up(tmp_path_factory.mktemp("api-tls") / "cp", "--api-tls") as control_plane:
        yield control_plane


def test_up_names_the_https_url_and_its_ca(cp: ControlPlane) -> None:
    assert cp.where["api"].startswith("https://127.0.0.1:")
    ca_file = Path(cp.where["api_ca_cert"])
    assert ca_file.is_absolute() and ca_file == (cp.data_dir / "api-tls" / "ca.crt").resolve()
    with httpx.Client(verify=_trusting(ca_file), timeout=10) as client:
        assert client.get(cp.where["api"] + "/meshes").status_code == 200


def test_the_cli_of_the_data_dir_applies_through_https_with_its_ca(
        cp: ControlPlane, tmp_path: Path) -> None:
    mesh = tmp_path / "mesh.yaml"
    mesh.write_text("type: Mesh\nname: over-tls\n")
    # no flag: the data dir's up.json names this API and its CA (and its admin token)
    applied = _meshlog("--api", cp.where["api"], "apply", "-f", str(mesh), cwd=tmp_path,
                       env={"MESHLOG_DATA_DIR": str(cp.data_dir)})
    assert applied.returncode == 0, applied.stderr
    assert "mesh 'over-tls' created" in applied.stdout
    # elsewhere, without the data dir: --ca-cert-file, or its variable
    listed = _meshlog("--api", cp.where["api"], "get", "meshes", "--ca-cert-file",
                      cp.where["api_ca_cert"], cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "over-tls" in listed.stdout
    shown = _meshlog("--api", cp.where["api"], "get", "mesh", "over-tls", cwd=tmp_path,
                     env={"MESHLOG_API_CA_CERT_FILE": cp.where["api_ca_cert"]})
    assert shown.returncode == 0, shown.stderr


def test_a_client_that_trusts_another_ca_is_refused(cp: ControlPlane, tmp_path: Path) -> None:
    stranger = ensure_xds_certificate(tmp_path / "stranger", HOSTS)
    with httpx.Client(verify=_trusting(stranger.ca_file), timeout=10) as client, \
            pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        client.get(cp.where["api"] + "/meshes")
    refused = _meshlog("--api", cp.where["api"], "get", "meshes", "--ca-cert-file",
                       str(stranger.ca_file), cwd=tmp_path)
    assert refused.returncode == 1
    assert "certificate verify failed" in refused.stderr
    assert "give the CA that issued it with --ca-cert-file" in refused.stderr
    # nor does the system's trust store know the data dir's CA
    untrusted = _meshlog("--api", cp.where["api"], "get", "meshes", cwd=tmp_path)
    assert untrusted.returncode == 1
    assert "certificate verify failed" in untrusted.stderr


def test_plaintext_on_the_tls_port_gets_no_answer(cp: ControlPlane, tmp_path: Path) -> None:
    plain = cp.where["api"].replace("https://", "http://")
    with pytest.raises(httpx.TransportError):
        httpx.get(plain + "/meshes", timeout=10)
    host, port = plain.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /meshes HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):  # the server closes the connection
            answer += chunk
    assert not answer.startswith(b"HTTP/"), answer
    said = _meshlog("--api", plain, "get", "meshes", cwd=tmp_path)
    assert said.returncode == 1
    assert "If it serves HTTPS (--api-tls, --api-tls-cert-file), use https://" in said.stderr


# --- meshlog api with an operator's files -----------------------------------------------------


def _replace(*, pair_file: Path, at: Path) -> None:
    """Rename a new file over `at`, as a certificate manager does (a new inode)."""
    staged = at.with_name(f".{at.name}.new")
    shutil.copy(pair_file, staged)
    staged.replace(at)


def _served_by(url: str, ca: XdsCertificate) -> bool:
    """A new connection to `url` trusting only `ca` is answered."""
    try:
        with httpx.Client(verify=_trusting(ca.ca_file), timeout=10) as client:
            return client.get(url + "/meshes").status_code == 200
    except httpx.ConnectError as exc:
        assert "CERTIFICATE_VERIFY_FAILED" in str(exc), exc
        return False


def test_meshlog_api_serves_given_files_and_a_renewed_pair_without_restart(
        nats_url: str, tmp_path: Path) -> None:
    old, new = (ensure_xds_certificate(tmp_path / name, HOSTS) for name in ("old", "new"))
    cert, key = tmp_path / "api.crt", tmp_path / "api.key"
    shutil.copy(old.cert_file, cert)
    shutil.copy(old.key_file, key)
    secret = tmp_path / "secret.key"
    SecretKey.load_or_create(secret)
    with _api(nats_url, tmp_path / "data", secret, "--api-tls-cert-file", str(cert),
              "--api-tls-key-file", str(key)) as url:
        assert url.startswith("https://")
        assert _served_by(url, old) and not _served_by(url, new)

        # half a rotation: the new certificate beside the old key is not served
        _replace(pair_file=new.cert_file, at=cert)
        assert _served_by(url, old)
        log = tmp_path / "data" / "api.log"
        wait_for(lambda: f"--api-tls-key-file {key}: the key does not belong to the "
                         f"certificate" in log.read_text() or None, what="the warning")

        _replace(pair_file=new.key_file, at=key)  # the rotation completes
        assert _served_by(url, new)
        assert not _served_by(url, old)
        assert "API TLS: serving the certificate of" in log.read_text()
