"""`meshlog bench ... --nats-url URL --nats-creds FILE` against a nats-server with meshlog's
users (the configuration `meshlog up` writes): with the admin user's seed every connection
the bench makes, and every process it starts, gets in and the bench reports; without
credentials it ends with the refusal, naming its connection, not a traceback. The smallest
runs: behaviour, never the rates."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from events.bus.permissions import Role
from services.runtime.embedded_nats import run_nats_server
from services.runtime.nats_users import ensure_seeds, write_server_config
from tests.harness import VENV_BIN

pytestmark = pytest.mark.integration


@pytest.fixture
async def nats_with_users(tmp_path: Path) -> AsyncIterator[tuple[str, dict[Role, Path]]]:
    seeds = ensure_seeds(tmp_path)
    config = write_server_config(tmp_path, seeds, "default")
    async with run_nats_server(tmp_path / "nats", config=config) as url:
        yield url, seeds


async def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, [str(VENV_BIN / "meshlog"), "bench", *args], capture_output=True,
        text=True, timeout=300)


@pytest.mark.parametrize("bench", [("ingest", "--events", "20"),
                                   ("rebuild", "--events", "20"),
                                   ("propagation", "--proxies", "2", "--rounds", "1")],
                         ids=lambda bench: bench[0])
async def test_a_bench_runs_as_the_admin_user(nats_with_users: tuple[str, dict[Role, Path]],
                                              bench: tuple[str, ...]) -> None:
    url, seeds = nats_with_users
    done = await _bench(*bench, "--nats-url", url, "--nats-creds", str(seeds["admin"]))
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures.get("events", figures.get("proxies")) in (20, 2), figures


async def test_a_bench_without_credentials_says_nats_refused_it(
        nats_with_users: tuple[str, dict[Role, Path]]) -> None:
    url, _ = nats_with_users
    done = await _bench("ingest", "--events", "20", "--nats-url", url)
    assert done.returncode == 2, done.stdout + done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "refused meshlog-bench-ingest's credentials (none " \
        "given" in last, done.stderr[-3000:]
    assert "Traceback" not in done.stderr


async def test_bench_credentials_need_a_nats_url(tmp_path: Path) -> None:
    done = await _bench("ingest", "--events", "20", "--nats-creds", str(tmp_path / "admin.nk"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: --nats-creds {tmp_path / 'admin.nk'}: only with --nats-url (the bench's own "
        f"nats-server has no users)")
