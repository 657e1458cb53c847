"""`meshlog up` stopping on SIGTERM or SIGINT: writes in flight are answered (2xx, or 503 past
the grace), never 500 or dropped; what was acknowledged is in the log after a restart; SIGINT
stops it even when its parent started it with SIGINT ignored (a shell's background job)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.runtime.spawn import popen
from services.runtime.up import UP_GRACE_S
from tests.harness import VENV_BIN, ControlPlane, Exited, meshlog_up, stop_process, wait_for

pytestmark = pytest.mark.integration
BURST = 50


def _dataplane(name: str) -> dict[str, Any]:
    return {"type": "Dataplane", "mesh": "default", "name": name,
            "networking": {"address": "10.0.0.1", "inbound": [
                {"port": 8080, "tags": {"kuma.io/service": "web"}}]}}


class _Burst:
    """Concurrent PUTs, each on its own connection, which the server has accepted (it answered
    a GET on it); SIGTERM as soon as every PUT is sent, so all of them are in flight."""

    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp
        self.connected = 0
        self.sent = 0
        self.answered = 0
        self.answered_at_signal: int | None = None
        self.all_connected = asyncio.Event()
        self.all_sent = asyncio.Event()

    async def put(self, name: str) -> httpx.Response | Exception:
        async def trace(event: str, info: dict[str, Any]) -> None:
            if event == "http11.send_request_body.complete":
                self.sent += 1
                if self.sent == BURST:
                    self.all_sent.set()

        async with httpx.AsyncClient(base_url=self.cp.where["api"], timeout=60) as client:
            assert (await client.get("/ready")).status_code == 200
            self.connected += 1
            if self.connected == BURST:
                self.all_connected.set()
            await self.all_connected.wait()
            try:
                response = await client.put(f"/meshes/default/dataplanes/{name}",
                                            json=_dataplane(name), extensions={"trace": trace})
            except httpx.HTTPError as exc:
                return exc
        self.answered += 1
        return response

    async def terminate(self) -> None:
        await asyncio.wait_for(self.all_sent.wait(), timeout=60)
        self.answered_at_signal = self.answered
        os.kill(self.cp.proc.pid, signal.SIGTERM)

    async def run(self) -> list[httpx.Response | Exception]:
        async with asyncio.TaskGroup() as tg:
            puts = [tg.create_task(self.put(f"dp-{i}")) for i in range(BURST)]
            tg.create_task(self.terminate())
        return [p.result() for p in puts]


def test_sigterm_answers_writes_in_flight_and_keeps_every_acknowledged_one(
        tmp_path: Path) -> None:
    data_dir = tmp_path / "cp"
    with meshlog_up(data_dir) as cp:
        cp.apply({"type": "Mesh", "name": "default"})
        burst = _Burst(cp)
        results = asyncio.run(burst.run())
        assert cp.proc.wait(timeout=60) == 0, (data_dir / "up.log").read_text()[-3000:]

    assert burst.answered_at_signal is not None and burst.answered_at_signal < BURST, (
        "every write was answered before SIGTERM: nothing was in flight")
    dropped = [(i, r) for i, r in enumerate(results) if isinstance(r, Exception)]
    assert not dropped, f"connections dropped by the server: {dropped}"
    responses = [r for r in results if isinstance(r, httpx.Response)]
    wrong = [(r.status_code, r.text) for r in responses
             if not (200 <= r.status_code < 300 or r.status_code == 503)]
    assert not wrong, f"answers other than 2xx or 503: {wrong}"

    acknowledged = {f"dp-{i}": r.json()["version"] for i, r in enumerate(responses)
                    if 200 <= r.status_code < 300}
    assert acknowledged, "no write was acknowledged"
    with meshlog_up(data_dir) as again:
        for name, version in acknowledged.items():
            got = wait_for(partial(_found, again, name), timeout=30,
                           what=f"{name} after the restart")
            assert got.headers["ETag"] == f'"{version}"'


def _found(cp: ControlPlane, name: str) -> httpx.Response | None:
    response = cp.api.get(f"/meshes/default/dataplanes/{name}")
    return response if response.status_code == 200 else None


def test_sigint_stops_meshlog_up_started_with_sigint_ignored(tmp_path: Path) -> None:
    data_dir = tmp_path / "cp"
    data_dir.mkdir()
    with open(data_dir / "up.log", "ab") as log:
        # what a shell does for a background job (`make up &`): SIGINT ignored, then exec
        proc = popen(["sh", "-c", 'trap "" INT; exec "$0" "$@"', str(VENV_BIN / "meshlog"),
                      "up", "--data-dir", str(data_dir), "--api-port", "0", "--xds-port", "0"],
                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def up() -> dict[str, str] | None:
            if proc.poll() is not None:
                raise Exited(f"meshlog up exited {proc.returncode}: "
                                   + (data_dir / "up.log").read_text()[-3000:])
            path = data_dir / "up.json"
            return json.loads(path.read_text()) if path.exists() else None

        where = wait_for(up, timeout=60, what="meshlog up")
        assert httpx.get(f"{where['api']}/ready", timeout=10).status_code == 200
        os.kill(proc.pid, signal.SIGINT)
        # ignored, SIGINT would never stop it; handled, it drains within its grace period
        # (services.runtime.shutdown: then cancels, and exits 1 if still stuck). Waited for
        # longer than that: how long a stop takes depends on the machine's load
        try:
            code = proc.wait(timeout=UP_GRACE_S + 30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"SIGINT did not stop meshlog up within {UP_GRACE_S + 30:g} s: "
                        + (data_dir / "up.log").read_text()[-3000:])
        assert code == 0, (data_dir / "up.log").read_text()[-3000:]
    finally:
        stop_process(proc, signal.SIGTERM)
