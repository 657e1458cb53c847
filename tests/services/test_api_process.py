"""`meshlog api` processes (compose.yaml's replicas) on a real nats-server: each writes its admin
token, replicas that share the secret key share the signing keys in the log (a token one
signs, the other accepts), and a replica with another secret key is refused at start."""

from __future__ import annotations

import asyncio
import contextlib
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from events.identity import SecretKey
from services.runtime.spawn import popen
from tests.harness import VENV_BIN, stop_process, wait_for

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def _api(nats_url: str, data_dir: Path, secret_key: Path) -> Iterator[str]:
    """`meshlog api` on a free port; yields its URL once it listens."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "api.log"
    with open(log_path, "ab") as log:
        proc = popen([str(VENV_BIN / "meshlog"), "api", "--nats-url", nats_url,
                      "--data-dir", str(data_dir), "--api-port", "0",
                      "--secret-key-file", str(secret_key)],
                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def listening() -> str | None:
            text = log_path.read_text()
            if proc.poll() is not None:
                raise RuntimeError(f"meshlog api exited {proc.returncode}: {text[-2000:]}")
            prefix = "API listening on "
            return next((line[len(prefix):] for line in text.splitlines()
                         if line.startswith(prefix)), None)

        yield wait_for(listening, timeout=30, what="meshlog api")
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


async def test_api_replicas_share_the_keys_of_the_log(nats_url: str, tmp_path: Path) -> None:
    await asyncio.to_thread(_replicas, nats_url, tmp_path)
