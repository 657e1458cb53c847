"""`/ready` of `meshlog projector` processes under a lease: 200 (role active, with its
fencing token) for the one that holds the lease, 503 (role standby, naming the leader) for
the other; `/live` 200 for both. SIGKILL the active one: the standby's `/ready` turns 200
within a few lease TTLs."""

from __future__ import annotations

import re
import signal
import subprocess
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.runtime.spawn import popen
from tests.harness import VENV_BIN, stop_process, wait_for

pytestmark = pytest.mark.integration
_HEALTH = re.compile(rb"projector health on (http://\S+) ")


def _start(nats_url: str, database: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return popen(
            [str(VENV_BIN / "meshlog"), "projector", "--nats-url", nats_url,
             "--database", database, "--lease-ttl", "1s", "--metrics-port", "0"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _health_url(log: Path) -> str | None:
    match = _HEALTH.search(log.read_bytes())
    return match.group(1).decode() if match else None


def _ready(url: str) -> tuple[int, dict[str, Any]]:
    response = httpx.get(f"{url}/ready", timeout=5)
    return response.status_code, response.json()


def test_only_the_lease_holder_is_ready_and_a_standby_takes_over(nats_url: str,
                                                                  tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'live.db'}"
    logs = [tmp_path / f"projector-{i}.log" for i in range(2)]
    procs = [_start(nats_url, database, log) for log in logs]
    try:
        urls = [wait_for(partial(_health_url, log), timeout=60,
                         what=f"{log.name}'s health port")
                for log in logs]
        for url in urls:
            assert httpx.get(f"{url}/live", timeout=5).status_code == 200

        def one_active() -> list[tuple[int, dict[str, Any]]] | None:
            answers = [_ready(url) for url in urls]
            return answers if sorted(s for s, _ in answers) == [200, 503] \
                and all(body.get("leader") for _, body in answers) else None

        answers = wait_for(one_active, timeout=60, what="one active, one standby")
        active = next(i for i, (s, _) in enumerate(answers) if s == 200)
        standby = 1 - active
        body = answers[active][1]
        assert body["role"] == "active" and body["fencingToken"] > 0
        assert body["leader"] == body["holder"] and body["holder"].endswith(
            f":{procs[active].pid}")
        body = answers[standby][1]
        assert body["role"] == "standby"
        assert body["leader"] == answers[active][1]["holder"]
        token = answers[active][1]["fencingToken"]
        assert httpx.get(f"{urls[standby]}/live", timeout=5).status_code == 200

        procs[active].send_signal(signal.SIGKILL)
        procs[active].wait(timeout=10)

        def took_over() -> dict[str, Any] | None:
            status, body = _ready(urls[standby])
            return body if status == 200 else None

        body = wait_for(took_over, timeout=30, what="the standby's /ready to turn 200")
        assert body["role"] == "active" and body["fencingToken"] > token
        assert body["holder"].endswith(f":{procs[standby].pid}")
    finally:
        for proc in procs:
            stop_process(proc, signal.SIGTERM)
