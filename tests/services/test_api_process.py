"""`meshlog api` processes (compose.yaml's replicas) on a real nats-server: each writes its admin
token, replicas that share the secret key share the signing keys in the log (a token one
signs, the other accepts), and a replica with another secret key is refused at start. Each
keeps its own data dir's admin token signed with the newest user-token key, whichever replica
rotates it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from events.identity import SecretKey, read_header
from services.runtime.spawn import popen
from tests._tcp_proxy import tcp_proxy
from tests.harness import VENV_BIN, Exited, free_port, stop_process, wait_for

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def _api(nats_url: str, data_dir: Path, secret_key: Path, *extra: str) -> Iterator[str]:
    """`meshlog api` on a free port; yields its URL once it listens."""
    with _api_process(nats_url, data_dir, secret_key, *extra) as (_, url):
        yield url


@contextlib.contextmanager
def _api_process(nats_url: str, data_dir: Path, secret_key: Path, *extra: str
                 ) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`_api`, yielding the process too."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "api.log"
    with open(log_path, "ab") as log:
        proc = popen([str(VENV_BIN / "meshlog"), "api", "--nats-url", nats_url,
                      "--data-dir", str(data_dir), "--api-port", "0",
                      "--secret-key-file", str(secret_key), *extra],
                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def listening() -> str | None:
            text = log_path.read_text()
            if proc.poll() is not None:
                raise Exited(f"meshlog api exited {proc.returncode}: {text[-2000:]}")
            prefix = "API listening on "
            return next((line[len(prefix):] for line in text.splitlines()
                         if line.startswith(prefix)), None)

        yield proc, wait_for(listening, timeout=30, what="meshlog api")
    finally:
        stop_process(proc)


def _replicas(nats_url: str, tmp_path: Path) -> None:
    secret = tmp_path / "shared" / "secret.key"
    SecretKey.load_or_create(secret)  # the operator's: one file for every replica
    with _api(nats_url, tmp_path / "a", secret) as a, _api(nats_url, tmp_path / "b", secret) as b:
        for replica in ("a", "b"):
            token = tmp_path / replica / "admin-token"
            assert stat.S_IMODE(token.stat().st_mode) == 0o600
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        admin = {"Authorization": f"Bearer {(tmp_path / 'a' / 'admin-token').read_text().strip()}"}
        made = httpx.post(f"{a}/tokens/user", json={"name": "jane", "groups": ["ops"]},
                          headers=admin, timeout=10)
        assert made.status_code == 200, made.text
        # b accepts a's token: one user-token key in the log, made once by whichever started first
        user = {"Authorization": f"Bearer {made.text}"}
        assert httpx.get(f"{b}/meshes", headers=user, timeout=10).status_code == 200

    # another replica, whose data dir has no secret key: it makes one, which opens nothing
    other = subprocess.run(
        [str(VENV_BIN / "meshlog"), "api", "--nats-url", nats_url, "--data-dir",
         str(tmp_path / "c"), "--api-port", "0"], capture_output=True, text=True, timeout=60)
    assert other.returncode == 2, other.stdout + other.stderr
    assert "--secret-key-file: the signingkey:user-token/_/1 was sealed with secret key" in (
        other.stderr)


def _api_json(nats_url: str, tmp_path: Path) -> None:
    secret = tmp_path / "secret.key"
    SecretKey.load_or_create(secret)
    first = tmp_path / "first"
    with _api(nats_url, first, secret) as url:
        named = first / "api.json"
        assert stat.S_IMODE(named.stat().st_mode) == 0o600
        doc = json.loads(named.read_text())
        assert doc["api"] == url and {"pid", "host", "started"} <= doc.keys()
        listed = _cli(url, first, "get", "meshes")
        assert listed.returncode == 0 and listed.stderr == "", listed.stderr
    assert not named.exists()  # SIGINT: removed, as SIGTERM does (the same `finally`)

    port = str(free_port())
    (first / "api.log").unlink()  # its "API listening on" line is the first run's
    with _api_process(nats_url, first, secret, "--api-port", port) as (proc, url):
        stop_process(proc, signal.SIGKILL)
    crashed = json.loads(named.read_text())
    assert crashed["pid"] == str(proc.pid)
    # another control plane on the address, with its own admin token: the CLI of the first
    # data dir sends it none (before, the left file named it: 401), and says why
    with _api(nats_url, tmp_path / "second", secret, "--api-port", port) as url:
        listed = _cli(url, first, "get", "meshes")
        assert listed.returncode == 0, listed.stderr
        assert listed.stderr == (f"note: ignoring {named}: process {proc.pid}, which wrote "
                                 f"it, is no longer running; a crash left it (remove it)\n")


async def test_meshlog_api_removes_its_api_json_and_the_cli_ignores_one_a_crash_left(
        nats_url: str, tmp_path: Path) -> None:
    """api.json says which process wrote it (services.runtime.up_file): removed on a clean
    stop; after SIGKILL the CLI sends the data dir's token to no later API on that address."""
    await asyncio.to_thread(_api_json, nats_url, tmp_path)


async def test_api_replicas_share_the_keys_of_the_log(nats_url: str, tmp_path: Path) -> None:
    await asyncio.to_thread(_replicas, nats_url, tmp_path)


@contextlib.contextmanager
def _projector(nats_url: str, database: str, data_dir: Path) -> Iterator[None]:
    """`meshlog projector` folding into `database`, which the API replicas read."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / "projector.log", "ab") as log:
        proc = popen([str(VENV_BIN / "meshlog"), "projector", "--nats-url", nats_url,
                      "--database", database, "--data-dir", str(data_dir)],
                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield
    finally:
        stop_process(proc, signal.SIGTERM)


def _cli(api: str, data_dir: Path, *args: str, stdin: str | None = None
         ) -> subprocess.CompletedProcess[str]:
    """The `meshlog` CLI run with `data_dir` (no --token, no MESHLOG_TOKEN)."""
    environment = {k: v for k, v in os.environ.items() if k != "MESHLOG_TOKEN"}
    environment["MESHLOG_DATA_DIR"] = str(data_dir)
    return subprocess.run([str(VENV_BIN / "meshlog"), "--api", api, *args], input=stdin,
                          capture_output=True, text=True, timeout=60, env=environment)


def _kid(path: Path) -> str:
    return str(read_header(path.read_text().strip()))


@contextlib.contextmanager
def _replicas_with_a_projector(nats_url: str, tmp_path: Path, *, b_nats_url: str | None = None
                               ) -> Iterator[tuple[str, str]]:
    """Replicas a and b (data dirs `tmp_path/a`, `tmp_path/b`, one secret key, loopback not
    admin) and a projector, all on one read-model store: (a's URL, b's URL)."""
    shared = tmp_path / "shared"
    secret = shared / "secret.key"
    SecretKey.load_or_create(secret)
    database = f"sqlite:///{shared / 'readmodels.db'}"
    flags = ("--database", database, "--no-localhost-admin")
    with _projector(nats_url, database, tmp_path / "projector"), \
            _api(nats_url, tmp_path / "a", secret, *flags) as a, \
            _api(b_nats_url or nats_url, tmp_path / "b", secret, *flags) as b:
        yield a, b


def _keeps_its_admin_token(nats_url: str, tmp_path: Path) -> None:
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    b_token = b_dir / "admin-token"
    with _replicas_with_a_projector(nats_url, tmp_path) as (a, b):
        old_token = b_token.read_text().strip()
        assert _kid(b_token) == "user-token/_/1"
        # loopback is no admin here: the CLI of b's data dir is admin by b's admin token
        created = _cli(b, b_dir, "apply", "-f", "-", stdin="type: Mesh\nname: default\n")
        assert created.returncode == 0, created.stderr

        rotated = _cli(a, a_dir, "signing-key", "rotate", "user-token")
        assert "signing key user-token/_/2 created" in rotated.stdout, rotated.stderr
        assert _kid(a_dir / "admin-token") == "user-token/_/2"  # a renews before it answers
        # b follows the log: its token is renewed while it runs, no restart
        wait_for(lambda: _kid(b_token) == "user-token/_/2" or None, timeout=60,
                 what="b's admin token signed with the new serial")
        assert stat.S_IMODE(b_token.stat().st_mode) == 0o600
        assert ("it is signed with the key user-token/_/1, not the newest user-token key "
                "user-token/_/2") in (b_dir / "api.log").read_text()

        retired = _cli(a, a_dir, "signing-key", "retire", "user-token", "--serial", "1")
        assert "signing key user-token/_/1 retired" in retired.stdout, retired.stderr
        refused = httpx.get(f"{b}/meshes", headers={"Authorization": f"Bearer {old_token}"},
                            timeout=10)
        assert refused.status_code == 401, refused.text  # the retirement is in force on b
        listed = _cli(b, b_dir, "signing-key", "list", "user-token", "-o", "json")
        assert listed.returncode == 0, listed.stderr
        assert [(k["kid"], k["signs"]) for k in json.loads(listed.stdout)] == [
            ("user-token/_/2", True)]
        other = _cli(b, b_dir, "apply", "-f", "-", stdin="type: Mesh\nname: other\n")
        assert other.returncode == 0, other.stderr

        # a token of the retired serial put back in the file (a backup restored): b renews
        # it when it refuses it, and the CLI sends the new one once more
        b_token.write_text(old_token + "\n")
        again = _cli(b, b_dir, "signing-key", "list", "user-token")
        assert again.returncode == 0, again.stderr
        assert _kid(b_token) == "user-token/_/2"
        assert "was refused: renewing the admin token in" in (b_dir / "api.log").read_text()

        # b's admin token revoked by an operator: b renews it when it refuses it as revoked
        revoked_token = b_token.read_text().strip()
        revoked = _cli(a, a_dir, "revoke", "user-token", "--token-file", str(b_token))
        assert revoked.returncode == 0, revoked.stderr
        wait_for(lambda: httpx.get(f"{b}/meshes", timeout=10, headers={
            "Authorization": f"Bearer {revoked_token}"}).status_code == 401 or None,
                 timeout=60, what="the revocation in force on b")
        after = _cli(b, b_dir, "signing-key", "list", "user-token")
        assert after.returncode == 0, after.stderr
        assert b_token.read_text().strip() != revoked_token
        assert "refused as revoked: renewing the admin token" in (b_dir / "api.log").read_text()


async def test_every_api_replica_renews_its_admin_token_when_the_user_token_key_rotates(
        nats_url: str, tmp_path: Path) -> None:
    """Two replicas with data dirs of their own: rotating the user-token key on one renews
    the other's admin token too, while it runs, so its CLI keeps working once the old serial
    is retired."""
    await asyncio.to_thread(_keeps_its_admin_token, nats_url, tmp_path)


def _cut_off_while_rotated(nats_url: str, tmp_path: Path) -> None:
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    b_token = b_dir / "admin-token"
    host, port = nats_url.removeprefix("nats://").rsplit(":", 1)
    with tcp_proxy((host, int(port))) as link, \
            _replicas_with_a_projector(nats_url, tmp_path,
                                       b_nats_url=f"nats://127.0.0.1:{link.port}") as (a, b):
        link.cut()  # b is cut off from NATS; the read models it reads stay up to date
        assert "created" in _cli(a, a_dir, "signing-key", "rotate", "user-token").stdout
        assert "retired" in _cli(a, a_dir, "signing-key", "retire", "user-token", "--serial",
                                 "1").stdout
        refused = _cli(b, b_dir, "signing-key", "list")
        assert refused.returncode == 1
        assert refused.stderr.startswith(
            "error: HTTP 401: invalid user token: its signing key user-token/_/1 is not one "
            "of this control plane's"), refused.stderr
        assert (f"The admin token in {b_token} (signed with user-token/_/1) was refused"
                in refused.stderr), refused.stderr
        assert f"`meshlog api --data-dir {b_dir} ...` or `meshlog up --data-dir {b_dir}`" in (
            refused.stderr)
        assert "`meshlog generate user-token --name NAME --group mesh-system:admin`" in (
            refused.stderr)
        assert "cannot renew the admin token in" in (b_dir / "api.log").read_text()

        link.restore()  # b catches up with the log: the rotation renews its token
        wait_for(lambda: _kid(b_token) == "user-token/_/2" or None, timeout=60,
                 what="b's admin token renewed once NATS is back")
        listed = _cli(b, b_dir, "signing-key", "list")
        assert listed.returncode == 0, listed.stderr


async def test_a_replica_cut_off_from_nats_renews_its_admin_token_when_it_is_back(
        nats_url: str, tmp_path: Path) -> None:
    """While b cannot reach NATS it cannot renew: its CLI is told which file was refused and
    what renews it; once NATS is back, b renews it without a restart."""
    await asyncio.to_thread(_cut_off_while_rotated, nats_url, tmp_path)
