"""`meshlog up --nats-url` outlives its nats-server: killed, the API answers 503 for what needs
NATS (and still serves the read models); started again on the same port and store, writes are
appended and projected again, without restarting meshlog, which then stops cleanly."""

from __future__ import annotations

import os
import signal
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.runtime.embedded_nats import run_nats_server
from tests.harness import ControlPlane, Exited, free_port, meshlog_up, wait_for

pytestmark = pytest.mark.integration


def _dataplane(name: str) -> dict[str, Any]:
    return {"type": "Dataplane", "mesh": "default", "name": name,
            "networking": {"address": "10.0.0.1", "inbound": [
                {"port": 8080, "tags": {"kuma.io/service": "web"}}]}}


def _kill_nats_server(nats_dir: Path) -> None:
    """SIGKILL the nats-server of `nats_dir` (its pid names its ports file)."""
    [ports] = (nats_dir / "ports").glob("*.ports")
    os.kill(int(ports.stem.rpartition("_")[2]), signal.SIGKILL)


class _Api:
    """The API of a `meshlog up`, remembering every status it answered."""

    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp
        self.statuses: list[tuple[str, int]] = []

    def alive(self) -> None:
        if self.cp.proc.poll() is not None:
            raise Exited(f"meshlog up exited {self.cp.proc.returncode}: "
                               + (self.cp.data_dir / "up.log").read_text()[-3000:])

    def put(self, name: str) -> httpx.Response:
        self.alive()
        response = self.cp.api.put(f"/meshes/default/dataplanes/{name}", json=_dataplane(name))
        self.statuses.append((f"PUT {name}", response.status_code))
        return response

    def get(self, path: str) -> httpx.Response:
        self.alive()
        response = self.cp.api.get(path)
        self.statuses.append((f"GET {path}", response.status_code))
        return response

    def status(self, path: str) -> int:
        return self.get(path).status_code

    def projected_write(self, name: str) -> httpx.Response | None:
        """The write, once it is appended and folded (read-your-writes works again)."""
        response = self.put(name)
        if response.status_code in (200, 201) and "Meshlog-Projection" not in response.headers:
            return response
        return None


async def test_meshlog_up_rides_out_its_nats_server_going_away(tmp_path: Path) -> None:
    nats_dir, port = tmp_path / "nats", free_port()
    async with AsyncExitStack() as nats_servers:  # left after meshlog up stopped
        first_life, second_life = AsyncExitStack(), AsyncExitStack()
        nats_servers.push_async_callback(first_life.aclose)
        nats_servers.push_async_callback(second_life.aclose)
        url = await first_life.enter_async_context(run_nats_server(nats_dir, port=port))
        with meshlog_up(tmp_path / "cp", "--nats-url", url) as cp:
            api = _Api(cp)
            cp.apply({"type": "Mesh", "name": "default"})
            cp.apply(_dataplane("before"))
            config = "/meshes/default/dataplanes/before/_config"
            wait_for(lambda: api.status(config) == 200, timeout=30,
                     what="the gateway computing a config")

            _kill_nats_server(nats_dir)
            await first_life.aclose()

            assert api.put("during").status_code == 503
            assert api.status(config) == 503
            assert api.status("/meshes/default/dataplanes/before") == 200  # the read models
            api.alive()

            await second_life.enter_async_context(run_nats_server(nats_dir, port=port))
            wait_for(lambda: api.projected_write("after"), timeout=60,
                     what="a write appended and projected once NATS is back")
            assert api.status("/meshes/default/dataplanes/after") == 200
            wait_for(lambda: api.status("/meshes/default/dataplanes/after/_config") == 200,
                     timeout=60, what="the gateway's config of a Dataplane written after")
            api.alive()
        assert cp.proc.returncode == 0, (cp.data_dir / "up.log").read_text()[-3000:]
    wrong = [(what, status) for what, status in api.statuses if status not in (200, 201, 503)]
    assert not wrong, f"answers other than 200, 201 or 503: {wrong}"
