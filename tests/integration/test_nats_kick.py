"""One task of `meshlog up` loses its NATS connection, the others do not notice: the server
drops exactly that connection (its KICK API, as an operator, a slow-consumer disconnect or a
blip would), the task's connection is re-established by nats-py and the task resumes (the
projector with a new reader, the gateway's projection watch and config responder, the API's
appends and requests), and what was applied before, during and after is all projected and in
the gateway's view.

`meshlog up --nats-url` runs against a nats-server this test configures with a system account,
whose user may list connections (`$SYS.REQ.SERVER.PING.CONNZ`, where each task's connection
shows under its own name, `services.runtime.up.nats_connection`) and kick one
(`$SYS.REQ.SERVER.<id>.KICK`, nats-server >= 2.10). meshlog's connections go, as
`no_auth_user`, into an account of their own with JetStream.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from services.runtime.embedded_nats import run_nats_server
from tests.harness import ControlPlane, Exited, meshlog_up, wait_for
from tests.services._scrape import scrape, value

pytestmark = pytest.mark.integration

CONNECTIONS = ("meshlog-api", "meshlog-projector", "meshlog-gateway")
"""The NATS connections of `meshlog up` (standalone, one projector): one per task."""
_SYS_USER = "sys"


class _Server:
    def __init__(self, url: str, sys_password: str) -> None:
        self.url = url
        self._sys_password = sys_password

    async def connections(self) -> tuple[str, list[dict[str, Any]]]:
        """The server's id and its client connections, every account's (as the system
        account sees them)."""
        nc = await nats.connect(self.url, user=_SYS_USER, password=self._sys_password,
                                name="test-system", allow_reconnect=False)
        try:
            reply = await nc.request("$SYS.REQ.SERVER.PING.CONNZ", b"{}", timeout=5)
        finally:
            await nc.close()
        connz = json.loads(reply.data)
        return connz["server"]["id"], connz["data"]["connections"]

    async def kick(self, name: str) -> int:
        """Drop the one client connection called `name`, from the server's side; its id."""
        server_id, connections = await self.connections()
        named = [c for c in connections if c.get("name") == name]
        assert len(named) == 1, f"connections named {name!r}: {named}"
        cid: int = named[0]["cid"]
        nc = await nats.connect(self.url, user=_SYS_USER, password=self._sys_password,
                                name="test-system", allow_reconnect=False)
        try:
            reply = await nc.request(f"$SYS.REQ.SERVER.{server_id}.KICK",
                                     json.dumps({"cid": cid}).encode(), timeout=5)
        finally:
            await nc.close()
        assert "error" not in json.loads(reply.data), reply.data
        return cid


@asynccontextmanager
async def _server_with_system_account(directory: Path) -> AsyncIterator[_Server]:
    password = secrets.token_urlsafe(16)
    config = directory / "sys.conf"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps({
        "accounts": {
            "MESHLOG": {"jetstream": "enabled",
                        "users": [{"user": "meshlog", "password": secrets.token_urlsafe(16)}]},
            "SYS": {"users": [{"user": _SYS_USER, "password": password}]},
        },
        "system_account": "SYS",
        "no_auth_user": "meshlog",  # meshlog up --nats-url without credentials
    }))
    async with run_nats_server(directory, config=config) as url:
        yield _Server(url, password)


def _dataplane(name: str) -> dict[str, Any]:
    return {"type": "Dataplane", "mesh": "default", "name": name,
            "networking": {"address": "10.0.0.1", "inbound": [
                {"port": 8080, "tags": {"kuma.io/service": f"svc-{name}"}}]}}


class _Api:
    """The API of a `meshlog up`, remembering every status it answered."""

    def __init__(self, cp: ControlPlane, connections: tuple[str, ...] = CONNECTIONS) -> None:
        self.cp = cp
        self.connections = connections
        self.statuses: list[tuple[str, int]] = []

    def alive(self) -> None:
        if self.cp.proc.poll() is not None:
            raise Exited(f"meshlog up exited {self.cp.proc.returncode}: "
                               + (self.cp.data_dir / "up.log").read_text()[-3000:])

    def get(self, path: str) -> httpx.Response:
        self.alive()
        response = self.cp.api.get(path)
        self.statuses.append((f"GET {path}", response.status_code))
        return response

    def unexpected(self, *allowed: int) -> list[tuple[str, int]]:
        """The answers with a status not in `allowed`; a 404 of `_config` is expected (the
        gateway's view follows the read models by a moment)."""
        return [(what, status) for what, status in self.statuses if status not in allowed
                and not (status == 404 and what.endswith("/_config"))]

    def applied(self, name: str) -> int | None:
        """The sequence of Dataplane `name`'s write, once the API accepted it (an API whose
        own connection was dropped answers 503 until it is back)."""
        self.alive()
        response = self.cp.api.put(f"/meshes/default/dataplanes/{name}",
                                   json=_dataplane(name))
        self.statuses.append((f"PUT {name}", response.status_code))
        if response.status_code not in (200, 201):
            return None
        return int(response.headers["ETag"].strip('"'))

    def projected(self, seq: int) -> bool:
        """The API's read models (the projector's checkpoint) include `seq`."""
        response = self.get("/ready")
        return response.status_code == 200 and response.json()["projectedSequence"] >= seq

    def in_gateway_view(self, name: str, seq: int) -> bool:
        """The gateway computes Dataplane `name`'s config from a view at `seq` or later."""
        response = self.get(f"/meshes/default/dataplanes/{name}/_config")
        return response.status_code == 200 and response.json()["projectedSequence"] >= seq

    def reconnects(self) -> dict[str, float]:
        samples = scrape(self.cp.where["api"] + "/metrics")
        return {name: value(samples, "meshlog_nats_reconnects_total", connection=name)
                for name in self.connections}

    def reconnected(self, name: str) -> bool:
        """Connection `name` re-established once, and up (in the metrics and the log)."""
        samples = scrape(self.cp.where["api"] + "/metrics")
        return (value(samples, "meshlog_nats_reconnects_total", connection=name) == 1
                and value(samples, "meshlog_nats_connected", connection=name) == 1
                and f"NATS connection {name} re-established"
                in (self.cp.data_dir / "up.log").read_text())

    def all_served(self, seqs: dict[str, int]) -> None:
        """Every Dataplane of `seqs` (name: the sequence of its write) is projected (with the
        MeshService generated from it) and in the gateway's view, at the last of them."""
        last = max(seqs.values())
        wait_for(lambda: self.projected(last), timeout=30,
                 what=f"the read models at sequence {last}")
        for name in seqs:
            assert self.get(f"/meshes/default/dataplanes/{name}").status_code == 200
            assert self.get(f"/meshes/default/meshservices/svc-{name}").status_code == 200
            wait_for(partial(self.in_gateway_view, name, last), timeout=30,
                     what=f"the gateway's config of {name} at sequence {last}")


def _applied(api: _Api, name: str) -> int:
    return wait_for(lambda: api.applied(name), timeout=30, what=f"{name} applied")


@pytest.mark.parametrize("kicked", CONNECTIONS)
async def test_one_task_rides_out_its_nats_connection_dropped(tmp_path: Path,
                                                              kicked: str) -> None:
    async with _server_with_system_account(tmp_path / "nats") as server:
        with meshlog_up(tmp_path / "cp", "--nats-url", server.url) as cp:
            api = _Api(cp)
            cp.apply({"type": "Mesh", "name": "default"})
            seqs = {name: _applied(api, name) for name in ("before-1", "before-2")}
            api.all_served(seqs)
            _, connections = await server.connections()
            assert sorted(c["name"] for c in connections
                          if c.get("name", "").startswith("meshlog-")) == sorted(CONNECTIONS)
            assert api.reconnects() == dict.fromkeys(CONNECTIONS, 0)

            cid = await server.kick(kicked)
            # applied while the task may still be reconnecting
            seqs |= {name: _applied(api, name) for name in ("during-1", "during-2")}
            wait_for(lambda: api.reconnected(kicked), timeout=30,
                     what=f"{kicked} re-established")
            _, connections = await server.connections()
            [again] = [c for c in connections if c.get("name") == kicked]
            assert again["cid"] != cid  # a new connection, as the server sees it too

            seqs["after"] = _applied(api, "after")
            api.all_served(seqs)  # nothing lost, and the task works again
            # the other tasks never noticed
            assert api.reconnects() == {name: 1 if name == kicked else 0
                                        for name in CONNECTIONS}
            api.alive()
        assert cp.proc.returncode == 0, (cp.data_dir / "up.log").read_text()[-3000:]
    wrong = api.unexpected(200, 201, 503)
    assert not wrong, f"answers other than 200, 201 or 503: {wrong}"
    # the API's own connection up, no write was ever refused
    refused = [what for what, status in api.statuses if what.startswith("PUT") and status == 503]
    assert kicked == "meshlog-api" or not refused, refused


def _one_leader(api: _Api) -> dict[str, Any] | None:
    """The active contender of `meshlog up --projectors N`, once exactly one is active and
    every contender names it as the leader."""
    response = api.get("/_admin/projectors")
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    active = [p for p in items if p["role"] == "active"]
    if len(active) == 1 and all(p["leader"] == active[0]["holder"] for p in items):
        return active[0]
    return None


def _connection_of(contender: dict[str, Any]) -> str:
    """The NATS connection of a contender (`<host:pid>/<i>` runs on `meshlog-projector-<i>`)."""
    return f"meshlog-projector-{contender['holder'].rpartition('/')[2]}"


async def test_projector_contenders_ride_out_their_connections_dropped(tmp_path: Path) -> None:
    """`--projectors 2`: the active contender's connection dropped, then the other's. Each
    time the lease is kept, or taken over by the other (which of the two depends on how soon
    nats-py reconnects against the 1 s TTL): one contender ends up active, every contender
    names it, the fencing token never goes back, and what is applied is projected and
    served."""
    contenders = ("meshlog-projector-1", "meshlog-projector-2")
    async with _server_with_system_account(tmp_path / "nats") as server:
        with meshlog_up(tmp_path / "cp", "--nats-url", server.url, "--projectors", "2",
                        "--lease-ttl", "1s") as cp:
            api = _Api(cp, ("meshlog-api", "meshlog-gateway", *contenders))
            cp.apply({"type": "Mesh", "name": "default"})
            seqs = {"before": _applied(api, "before")}
            api.all_served(seqs)
            leader = wait_for(lambda: _one_leader(api), what="one active contender")
            first = _connection_of(leader)
            order = (first, *(c for c in contenders if c != first))
            for kicked in order:
                await server.kick(kicked)
                seqs[f"after-{kicked}"] = _applied(api, f"after-{kicked}")
                wait_for(partial(api.reconnected, kicked), timeout=30,
                         what=f"{kicked} re-established")
                api.all_served(seqs)
                now = wait_for(lambda: _one_leader(api), timeout=30,
                               what="one active contender")
                assert now["fencingToken"] >= leader["fencingToken"], (leader, now)
                leader = now
            assert api.reconnects() == {name: 1 if name in contenders else 0
                                        for name in api.connections}
            api.alive()
        assert cp.proc.returncode == 0, (cp.data_dir / "up.log").read_text()[-3000:]
    wrong = api.unexpected(200, 201)
    assert not wrong, f"answers other than 200 or 201: {wrong}"
