"""The API's TLS on the command line, without a control plane: `meshlog api` and `meshlog up`
refuse bad certificate files at start with an error naming the flag and the file (before they
connect to anything; the checks it shares with the gateway's `--tls-*` flags, for both); the
CLI's `--ca-cert-file` must be a readable PEM certificate; and the CLI finds the https API and
CA of its data dir (services.cli.client)."""

from __future__ import annotations

import datetime
import json
import os
import socket
import ssl
import stat
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from services.cli.client import api_of, api_trust
from services.runtime.api_tls import ApiTls, _folder_files, _pair_files
from services.runtime.xds_certificate import XdsCertificate, ensure_xds_certificate
from tests.harness import VENV_BIN
from xds_gateway.server.serving_tls import read_key_pair

NOWHERE = "nats://127.0.0.1:9"  # nothing listens on the discard port
DEFAULT = "http://127.0.0.1:5681"


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MESHLOG_")}
    return subprocess.run([str(VENV_BIN / "meshlog"), *args], capture_output=True, text=True,
                          timeout=60, env={**environment, **(env or {})})


def _pair(folder: Path, *, now: datetime.datetime | None = None) -> XdsCertificate:
    return ensure_xds_certificate(folder, ["localhost", "127.0.0.1"], now=now)


def test_an_api_needs_both_files(tmp_path: Path) -> None:
    pair = _pair(tmp_path)
    result = _run("api", "--nats-url", NOWHERE, "--data-dir", str(tmp_path / "d"),
                  "--api-tls-key-file", str(pair.key_file))
    assert result.returncode == 2, result.stderr
    assert (f"error: --api-tls-key-file {pair.key_file}: give --api-tls-cert-file too (env "
            f"MESHLOG_API_TLS_CERT_FILE)") in result.stderr


@pytest.mark.parametrize(("command", "prefix"), [("gateway", ""), ("api", "api-")])
def test_a_key_of_another_certificate_is_refused_before_it_connects(
        tmp_path: Path, command: str, prefix: str) -> None:
    pair, other = _pair(tmp_path / "a"), _pair(tmp_path / "b")
    result = _run(command, "--nats-url", NOWHERE, f"--{prefix}tls-cert-file",
                  str(pair.cert_file), f"--{prefix}tls-key-file", str(other.key_file))
    assert result.returncode == 2, result.stderr
    assert (f"error: --{prefix}tls-key-file {other.key_file}: the key does not belong to the "
            f"certificate in {pair.cert_file}") in result.stderr
    assert "nats" not in result.stderr.lower()  # refused before any connection attempt


def test_the_api_files_come_from_the_environment_too(tmp_path: Path) -> None:
    garbage, missing = tmp_path / "garbage.pem", tmp_path / "missing.key"
    garbage.write_text("nope\n")
    result = _run("api", "--nats-url", NOWHERE, "--data-dir", str(tmp_path / "d"), env={
        "MESHLOG_API_TLS_CERT_FILE": str(garbage), "MESHLOG_API_TLS_KEY_FILE": str(missing)})
    assert result.returncode == 2, result.stderr
    assert f"error: --api-tls-cert-file {garbage}: not a PEM certificate" in result.stderr
    pair = _pair(tmp_path / "cp")
    result = _run("api", "--nats-url", NOWHERE, "--data-dir", str(tmp_path / "d"), env={
        "MESHLOG_API_TLS_CERT_FILE": str(pair.cert_file),
        "MESHLOG_API_TLS_KEY_FILE": str(missing)})
    assert result.returncode == 2, result.stderr
    assert (f"error: --api-tls-key-file {missing}: cannot read it (No such file or "
            f"directory)") in result.stderr


@pytest.mark.parametrize("prefix", ["", "api-"])
def test_up_refuses_an_expired_certificate_at_start(tmp_path: Path, prefix: str) -> None:
    expired = _pair(tmp_path / "old", now=datetime.datetime.now(datetime.UTC)
                    - datetime.timedelta(days=365 * 11))
    result = _run("up", "--data-dir", str(tmp_path / "cp"), "--api-port", "0", "--xds-port",
                  "0", f"--{prefix}tls-cert-file", str(expired.cert_file),
                  f"--{prefix}tls-key-file", str(expired.key_file))
    assert result.returncode == 2, result.stderr
    assert (f"error: --{prefix}tls-cert-file {expired.cert_file}: the certificate has expired"
            in result.stderr)
    assert not (tmp_path / "cp" / "nats").exists()  # nothing was started


def test_up_refuses_an_api_ca_without_its_key(tmp_path: Path) -> None:
    data_dir = tmp_path / "cp"
    (data_dir / "api-tls").mkdir(parents=True)
    ca = _pair(tmp_path / "other").ca_file
    (data_dir / "api-tls" / "ca.crt").write_bytes(ca.read_bytes())
    result = _run("up", "--data-dir", str(data_dir), "--api-port", "0", "--xds-port", "0",
                  "--api-tls")
    assert result.returncode == 2, result.stderr
    assert (f"error: --api-tls: {data_dir / 'api-tls' / 'ca.crt'} is there but "
            f"{data_dir / 'api-tls' / 'ca.key'} is missing") in result.stderr
    assert "--api-tls-cert-file and --api-tls-key-file" in result.stderr
    assert not (data_dir / "nats").exists()


def test_the_cli_ca_file_must_be_a_readable_certificate(tmp_path: Path) -> None:
    pair = _pair(tmp_path)
    api = "https://127.0.0.1:9"
    not_pem = _run("--api", api, "get", "meshes", "--ca-cert-file", str(pair.key_file))
    assert not_pem.returncode == 2
    assert (f"error: --ca-cert-file (MESHLOG_API_CA_CERT_FILE) {pair.key_file}: not a PEM "
            f"certificate") in not_pem.stderr
    missing = tmp_path / "nope.crt"
    gone = _run("--api", api, "get", "meshes", env={"MESHLOG_API_CA_CERT_FILE": str(missing)})
    assert gone.returncode == 2
    assert f"{missing}: cannot read it (No such file or directory)" in gone.stderr


def _named(data_dir: Path, name: str, doc: dict[str, str]) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / name).write_text(json.dumps(doc))
    return data_dir


def test_the_default_address_becomes_the_data_dirs_https_one_at_that_address(
        tmp_path: Path) -> None:
    https = "https://127.0.0.1:5681"
    up = _named(tmp_path / "up", "up.json", {"api": https})
    api = _named(tmp_path / "api", "api.json", {"api": https})
    elsewhere = _named(tmp_path / "other", "up.json", {"api": "https://127.0.0.1:40001"})
    assert api_of(None, DEFAULT, up) == https
    assert api_of(None, DEFAULT, api) == https
    assert api_of(None, DEFAULT, elsewhere) == DEFAULT  # another port: not this address's
    assert api_of(None, DEFAULT, tmp_path / "none") == DEFAULT
    assert api_of("http://127.0.0.1:5681", DEFAULT, up) == "http://127.0.0.1:5681"  # given


def test_the_data_dirs_ca_is_trusted_for_the_api_it_names_only(tmp_path: Path) -> None:
    pair = _pair(tmp_path / "tls")
    https = "https://127.0.0.1:40002"
    data_dir = _named(tmp_path / "cp", "up.json", {"api": https,
                                                   "api_ca_cert": str(pair.ca_file)})
    trusted = api_trust(https, data_dir, None)
    assert trusted is not True and trusted is not False
    assert len(trusted.get_ca_certs()) == 1
    assert api_trust("https://127.0.0.1:40003", data_dir, None) is True  # another API
    # an operator's files (api_tls_cert): their CA is not in the data dir
    theirs = _named(tmp_path / "theirs", "up.json", {"api": https,
                                                     "api_tls_cert": str(pair.cert_file)})
    assert api_trust(https, theirs, None) is True


def _handshake(server: ssl.SSLContext, ca_file: Path) -> bytes:
    """A real TLS handshake with `server` over a socket pair: the served certificate (DER), as
    a client trusting `ca_file` gets it."""
    client = ssl.create_default_context(cafile=str(ca_file))
    left, right = socket.socketpair()
    with left, right, server.wrap_socket(right, server_side=True,
                                         do_handshake_on_connect=False) as served:
        accepting = threading.Thread(target=served.do_handshake)
        accepting.start()
        with client.wrap_socket(left, server_hostname="localhost") as tls:
            der = tls.getpeercert(binary_form=True)
        accepting.join()
    assert der is not None
    return der


def test_the_api_key_goes_to_no_temporary_file(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The checked pair reaches OpenSSL as memory files: with no temporary folder to write
    to, the API still serves the pair (a real handshake)."""
    files = _pair(tmp_path / "tls")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-folder"))
    served = ApiTls(files.cert_file, files.key_file)
    serving = served.pair.chain.decode().split("-----END CERTIFICATE-----")[0]
    assert _handshake(served.context, files.ca_file) == ssl.PEM_cert_to_DER_cert(
        serving + "-----END CERTIFICATE-----\n")
    with _pair_files(served.pair) as (chain, key):
        assert chain.startswith("/proc/self/fd/") and key.startswith("/proc/self/fd/")
        assert Path(key).read_bytes() == served.pair.key
        descriptor = int(key.rsplit("/", 1)[1])
    with pytest.raises(OSError):
        os.fstat(descriptor)  # closed when the `with` ends


def test_without_memory_files_the_key_is_private_and_removed(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    files = _pair(tmp_path / "tls")
    pair = read_key_pair(files.cert_file, files.key_file)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with _folder_files(pair) as (chain, key):
        assert stat.S_IMODE(Path(key).parent.stat().st_mode) == 0o700
        assert stat.S_IMODE(Path(key).stat().st_mode) == 0o600
        assert (Path(chain).read_bytes(), Path(key).read_bytes()) == (pair.chain, pair.key)
    assert not Path(key).parent.exists()
    with pytest.raises(ssl.SSLError), _folder_files(pair._replace(key=b"not a key")) as paths:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(*paths)
    assert sorted(tmp_path.iterdir()) == [tmp_path / "tls"]  # removed on an error too
