"""Tokens end to end (issue 11) with real parts: `meshlog up`, the `meshlog` CLI as an operator
runs it, and a real Envoy bootstrapped with `--token-file`.

- a sidecar with its token gets its config; one without is refused; revoking its token with
  the CLI ends its open stream;
- the admin token and the secret key are private files of the data dir; the CLI finds the
  admin token there; a restart keeps every key, so tokens issued before still work
  (kuma#3762);
- from a non-loopback address (a real socket), writes need a token;
- `meshlog generate dataplane-token` without `--name` (Kuma's token for every replica of a
  service) opens both replicas' streams and not another service's;
- `meshlog signing-key rotate|retire|list`: the next serial signs, the old tokens work until
  retired; the data dir's admin token follows a user-token key rotation.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import socket
import stat
import subprocess
from pathlib import Path
from typing import Any, cast

import grpc
import httpx
import pytest

from events import (
    EVENTS_STREAM,
    TokenRevoked,
    connect_nats,
    decode_event,
    revocation_subject,
    rfc3339,
)
from events.identity import UserClaims, read_header, unverified_claims
from tests.harness import (
    VENV_BIN,
    ControlPlane,
    Envoy,
    free_port,
    meshlog_up,
    run_envoy,
    wait_for,
)
from tests.harness import eventually as async_eventually
from tests.xds_gateway._ads import AdsClient
from xds_gateway.type_urls import CLUSTER

pytestmark = pytest.mark.integration


def _meshlog(cp: ControlPlane, *args: str, data_dir: Path | None = None,
             check: bool = True) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "MESHLOG_DATA_DIR": str(data_dir or cp.data_dir)}
    environment.pop("MESHLOG_TOKEN", None)
    return subprocess.run([str(VENV_BIN / "meshlog"), "--api", cp.where["api"], *args],
                          capture_output=True, text=True, timeout=60, check=check,
                          env=environment)


def _dataplane(name: str, port: int) -> dict[str, Any]:
    return {"type": "Dataplane", "mesh": "default", "name": name, "networking": {
        "address": "127.0.0.4", "inbound": [{"port": port, "tags": {"kuma.io/service": name}}]}}


def _bootstrap(cp: ControlPlane, *args: str) -> dict[str, Any]:
    out = _meshlog(cp, "dataplane", "bootstrap", "--xds-address", f"127.0.0.1:{cp.xds_port}",
                   "--admin-port", "0", "-o", "json", *args)
    return cast("dict[str, Any]", json.loads(out.stdout))


def _connected(envoy: Envoy) -> bool:
    return envoy.stats("control_plane.connected_state").get(
        "control_plane.connected_state") == 1


def _log(cp: ControlPlane) -> str:
    return (cp.data_dir / "up.log").read_text()


def test_a_sidecar_needs_its_token_and_loses_its_stream_when_it_is_revoked(
        tmp_path: Path) -> None:
    with meshlog_up(tmp_path / "cp") as cp:
        cp.apply({"type": "Mesh", "name": "default"})
        port = free_port("127.0.0.4")
        cp.apply(_dataplane("web-1", port))
        cp.apply(_dataplane("web-2", free_port("127.0.0.4")))
        generated = _meshlog(cp, "generate", "dataplane-token", "--mesh", "default",
                             "--name", "web-1", "--valid-for", "1h")
        token_file = tmp_path / "web-1.token"
        token_file.write_text(generated.stdout)
        assert "dataplane token" in generated.stderr and "valid until" in generated.stderr

        # without a token: refused, never connected
        with run_envoy(_bootstrap(cp, "--name", "web-2"), tmp_path / "envoy", "web-2"):
            wait_for(lambda: "no dataplane token" in _log(cp),
                     what="the gateway refusing the sidecar without a token")

        with run_envoy(_bootstrap(cp, "--token-file", str(token_file)), tmp_path / "envoy",
                       "web-1") as envoy:
            wait_for(lambda: f"inbound:127.0.0.4:{port}" in envoy.listeners(), timeout=60,
                     what="web-1's inbound listener from the gateway")
            assert _connected(envoy)

            revoked = _meshlog(cp, "revoke", "dataplane-token", "--token-file",
                               str(token_file))
            assert revoked.stdout.strip().endswith("of mesh default revoked")
            wait_for(lambda: not _connected(envoy), timeout=60,
                     what="the revoked sidecar's stream to end")
            assert "was revoked" in _log(cp)
            # its config stays (Envoy keeps what it has), its reconnects are refused
            assert f"inbound:127.0.0.4:{port}" in envoy.listeners()


def test_the_admin_token_is_a_private_file_the_cli_finds(tmp_path: Path) -> None:
    data = tmp_path / "cp"
    with meshlog_up(data, "--no-localhost-admin") as cp:
        for name in ("admin-token", "secret.key"):
            assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name
        admin_token = (data / "admin-token").read_text()
        assert admin_token not in _log(cp) and admin_token not in (data / "up.json").read_text()

        # loopback is no admin here: an anonymous write is refused...
        refused = cp.api.put("/meshes/default", json={"type": "Mesh", "name": "default"})
        assert refused.status_code == 401
        # ...the CLI, with the data dir's admin token, may
        created = subprocess.run(
            [str(VENV_BIN / "meshlog"), "--api", cp.where["api"], "apply", "-f", "-"],
            input="type: Mesh\nname: default\n", capture_output=True, text=True, timeout=60,
            env={**os.environ, "MESHLOG_DATA_DIR": str(data)})
        assert created.returncode == 0, created.stderr
        user = _meshlog(cp, "generate", "user-token", "--name", "jane", "--group", "ops").stdout
        # another data dir has no token for this API
        other = _meshlog(cp, "generate", "user-token", "--name", "joe",
                         data_dir=tmp_path / "elsewhere", check=False)
        assert other.returncode == 1
        assert "HTTP 401: POST /tokens/user needs group mesh-system:admin" in other.stderr

    with meshlog_up(data, "--no-localhost-admin") as cp:  # a restart keeps every key
        assert (data / "admin-token").read_text() == admin_token
        headers = {"Authorization": f"Bearer {user.strip()}"}
        assert cp.api.put("/meshes/other", json={"type": "Mesh", "name": "other"},
                          headers=headers).status_code == 201


def _local_address() -> str | None:
    """A non-loopback address of this machine (no packet is sent), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
            address: str = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_from_the_network_writes_need_a_token(tmp_path: Path) -> None:
    address = _local_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to call the API from")
    with meshlog_up(tmp_path / "cp", "--api-host", "0.0.0.0") as cp:
        port = cp.where["api"].rpartition(":")[2]
        url = f"http://{address}:{port}"
        transport = httpx.HTTPTransport(local_address=address)  # not from 127.0.0.1
        with httpx.Client(base_url=url, transport=transport, timeout=10) as remote:
            assert remote.get("/meshes").status_code == 200
            refused = remote.put("/meshes/default", json={"type": "Mesh", "name": "default"},
                                 headers={"X-Forwarded-For": "127.0.0.1"})
            assert refused.status_code == 401
            assert refused.headers["www-authenticate"].startswith("Bearer")
            assert refused.headers["content-type"].startswith("application/problem+json")
            token = _meshlog(cp, "generate", "user-token", "--name", "ci").stdout.strip()
            allowed = remote.put("/meshes/default", json={"type": "Mesh", "name": "default"},
                                 headers={"Authorization": f"Bearer {token}"})
            assert allowed.status_code == 201, allowed.text


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token.strip()}"}


def test_the_cli_rotates_and_retires_signing_keys_and_keeps_its_admin_token(
        tmp_path: Path) -> None:
    """Kuma's rotation with `meshlog signing-key`: the next serial signs, the old tokens work
    until their serial is retired. Rotating the user-token key renews the data dir's admin
    token, so the CLI that finds it there still works once the old serial is retired."""
    data = tmp_path / "cp"
    with meshlog_up(data, "--no-localhost-admin") as cp:
        admin_1 = (data / "admin-token").read_text()
        user_1 = _meshlog(cp, "generate", "user-token", "--name", "jane").stdout
        assert cp.api.put("/meshes/default", json={"type": "Mesh", "name": "default"},
                          headers=_bearer(user_1)).status_code == 201

        rotated = _meshlog(cp, "signing-key", "rotate", "user-token").stdout
        assert "signing key user-token/_/2 created: it signs every new user-token" in rotated
        assert "meshlog signing-key retire user-token --serial 1" in rotated
        admin_2 = (data / "admin-token").read_text()
        assert str(read_header(admin_2.strip())) == "user-token/_/2"
        assert stat.S_IMODE((data / "admin-token").stat().st_mode) == 0o600
        assert cp.api.get("/meshes", headers=_bearer(user_1)).status_code == 200

        retired = _meshlog(cp, "signing-key", "retire", "user-token", "--serial", "1").stdout
        assert retired.strip() == ("signing key user-token/_/1 retired: every token it "
                                   "signed is refused")
        for old in (user_1, admin_1):
            assert cp.api.get("/meshes", headers=_bearer(old)).status_code == 401
        listed = json.loads(_meshlog(cp, "signing-key", "list", "user-token", "-o",
                                     "json").stdout)  # the CLI, with the renewed admin token
        assert [(k["kid"], k["signs"]) for k in listed] == [("user-token/_/2", True)]
        newest = _meshlog(cp, "signing-key", "retire", "user-token", "--serial", "2",
                          check=False)
        assert newest.returncode == 1
        assert "HTTP 409: signing key user-token/_/2 is the newest" in newest.stderr
        unknown = _meshlog(cp, "signing-key", "retire", "user-token", "--serial", "5",
                           check=False)
        assert "HTTP 404: signing key user-token/_/5 does not exist" in unknown.stderr

        _meshlog(cp, "generate", "dataplane-token", "--name", "web-1")  # serial 1
        assert "dataplane-token/default/2 created" in _meshlog(
            cp, "signing-key", "rotate", "dataplane-token", "--mesh", "default").stdout
        assert "dataplane-token/default/1 retired" in _meshlog(
            cp, "signing-key", "retire", "dataplane-token", "--serial", "1").stdout
        table = _meshlog(cp, "signing-key", "list").stdout.splitlines()
        assert table[0].split() == ["KID", "PURPOSE", "MESH", "SERIAL", "SIGNS", "AGE"]
        assert [line.split()[:5] for line in table[1:]] == [
            ["dataplane-token/default/2", "dataplane-token", "default", "2", "yes"],
            ["user-token/_/2", "user-token", "-", "2", "yes"]]
    assert "retired the signing key user-token/_/1" in (data / "up.log").read_text()


def _revocation(cp: ControlPlane, jti: str) -> TokenRevoked:
    """The event that revoked the user token `jti`, read from the log."""
    async def read() -> TokenRevoked:
        nc = await connect_nats(cp.where["nats"], name="test", credentials=cp.nats_creds)
        try:
            subject = revocation_subject(None, jti)
            msg = await nc.jetstream().get_last_msg(EVENTS_STREAM, subject)
            event = decode_event(msg.data or b"", seq=msg.seq or 0, subject=subject)
            assert isinstance(event, TokenRevoked)
            return event
        finally:
            await nc.close()

    return asyncio.run(read())


def test_the_revoke_command_printed_at_generation_knows_the_tokens_expiry(
        tmp_path: Path) -> None:
    """Run as printed, it records the token's `exp`, so that the revocation is forgotten an
    hour after it (a `--jti` alone is kept for ever)."""
    with meshlog_up(tmp_path / "cp") as cp:
        generated = _meshlog(cp, "generate", "user-token", "--name", "jane",
                             "--valid-for", "2h")
        claims = unverified_claims(generated.stdout.strip(), UserClaims)
        printed = generated.stderr.split("revoke: ", 1)[1].strip()
        assert printed.endswith(f"--expires-at {rfc3339(claims.exp * 1000)}"), printed
        revoked = _meshlog(cp, *shlex.split(printed)[1:])
        assert revoked.stdout.strip() == f"user-token {claims.jti} revoked"
        assert _revocation(cp, claims.jti).expires_at == claims.exp * 1000

        bad = _meshlog(cp, "revoke", "user-token", "--jti", claims.jti, "--expires-at",
                       "tomorrow", check=False)
        assert bad.returncode != 0
        assert "--expires-at 'tomorrow': not an RFC 3339 time" in bad.stderr


def _replica(name: str, service: str, port: int) -> dict[str, Any]:
    doc = _dataplane(name, port)
    doc["networking"]["inbound"][0]["tags"]["kuma.io/service"] = service
    doc["labels"] = {"kuma.io/workload": service}
    return doc


async def _stream(channel: grpc.aio.Channel, token: str, node_id: str
                  ) -> tuple[AdsClient, Any]:
    """An ADS stream of `node_id` with `token` and its first answer: a response or the
    error that ended it."""
    client = AdsClient(channel, (("authorization", token),))
    client.send(CLUSTER, node_id=node_id)
    try:
        return client, await client.recv(within=10)
    except grpc.aio.AioRpcError as exc:
        return client, exc


def test_the_cli_signs_one_token_for_every_replica_of_a_service(tmp_path: Path) -> None:
    """`meshlog generate dataplane-token --tag kuma.io/service=web --workload web` (no
    --name, as kumactl): both web replicas' streams open with it, db's is refused, and
    revoking it (by its jti, from the token file) ends both."""
    with meshlog_up(tmp_path / "cp") as cp:
        cp.apply({"type": "Mesh", "name": "default"})
        for name, service in (("db-1", "db"), ("web-2", "web"), ("web-1", "web")):
            cp.apply(_replica(name, service, free_port("127.0.0.4")))
        generated = _meshlog(cp, "generate", "dataplane-token", "--tag",
                             "kuma.io/service=web", "--workload", "web", "--valid-for", "720h")
        assert ("for any Dataplane of mesh 'default' with tags kuma.io/service=web and "
                "workload web, valid until") in generated.stderr
        token_file = tmp_path / "web.token"
        token_file.write_text(generated.stdout)
        token = generated.stdout.strip()
        bootstrap = _bootstrap(cp, "--token-file", str(token_file), "--name", "web-2")
        assert bootstrap["node"]["id"] == "default.web-2"
        nameless = _meshlog(cp, "dataplane", "bootstrap", "--token-file", str(token_file),
                            check=False)
        assert nameless.returncode != 0 and "--name is required" in nameless.stderr

        async def scenario(channel: grpc.aio.Channel) -> None:
            async def served_web_1() -> tuple[AdsClient, Any] | None:
                client, first = await _stream(channel, token, "default.web-1")
                if isinstance(first, grpc.aio.AioRpcError):  # web-1 not in the view yet
                    return None
                return client, first

            web_1, _ = await async_eventually(served_web_1, what="web-1 served")
            web_2, first = await _stream(channel, token, "default.web-2")
            assert not isinstance(first, grpc.aio.AioRpcError), first.details()
            _, refused = await _stream(channel, token, "default.db-1")
            assert isinstance(refused, grpc.aio.AioRpcError)
            assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
            assert ("does not allow Dataplane default.db-1: its tag 'kuma.io/service' has the "
                    "value 'db'; the token allows ['web']") in (refused.details() or "")

            await asyncio.to_thread(_meshlog, cp, "revoke", "dataplane-token", "--token-file",
                                    str(token_file))
            for replica in (web_1, web_2):
                with pytest.raises(grpc.aio.AioRpcError) as ended:
                    while True:  # a push may come first
                        await replica.recv(within=30)
                assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED
                assert "was revoked" in (ended.value.details() or "")
                replica.close()

        async def main() -> None:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{cp.xds_port}") as channel:
                await scenario(channel)

        asyncio.run(main())
