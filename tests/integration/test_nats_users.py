"""`meshlog nats-users` on real nats-servers: compose.yaml's own command line and server
configuration (its `include`) on a 3-node JetStream cluster, where `meshlog api`,
`meshlog projector` and `meshlog gateway` processes run with their generated seeds, a
gateway's seed may not append a Mesh and a connection without credentials is refused; and
the multi-zone leafnode link the command prints, between a global's and a zone's servers."""

from __future__ import annotations

import contextlib
import json
import posixpath
import signal
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nats.errors
import nats.js.errors
import pytest

from events import JetStreamEventLog, Mesh, MeshApplied, resource_subject
from events.bus.connection import connect_nats
from events.bus.nats_access import NatsPermissionDenied
from events.bus.permissions import ROLES, Role
from services.runtime.embedded_nats import run_nats_server
from services.runtime.nats_cluster import NatsCluster, run_nats_cluster
from services.runtime.nats_users import leafnode_listener, leafnode_remote
from tests.harness import VENV_BIN, eventually, free_port, stop_process
from tests.integration.test_nats_permissions import Plane, _checkpoint, _process
from tests.services.test_compose_nats_users import COMPOSE, SERVICES, one_shot_steps

pytestmark = pytest.mark.integration

MESH = resource_subject("Mesh", None, "evil")


def _nats_users(*argv: str) -> None:
    result = subprocess.run([str(VENV_BIN / "meshlog"), "nats-users", *argv],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@dataclass
class Compose:
    """compose.yaml's NATS cluster on loopback: its containers' paths under `root`."""

    cluster: NatsCluster
    root: Path
    seeds: dict[Role, Path]


@pytest.fixture
async def compose(tmp_path: Path) -> AsyncIterator[Compose]:
    root = tmp_path / "root"
    # the one-shot's `meshlog nats-users`, its --out under root
    argv = one_shot_steps()[0][2:]
    out = argv[argv.index("--out") + 1]
    argv[argv.index("--out") + 1] = str(root / out.lstrip("/"))
    _nats_users(*argv)
    # a nats-server's configuration file, where compose mounts it
    server = SERVICES["nats-1"]
    config_file = server["command"][1]
    (mount,) = [c for c in server["configs"] if c["target"] == config_file]
    config = root / config_file.lstrip("/")
    config.write_text(COMPOSE["configs"][mount["source"]]["content"])
    async with run_nats_cluster(tmp_path / "nats", config=config) as cluster:
        yield Compose(cluster, root,
                      {role: root / posixpath.join(out, f"{role}.nk").lstrip("/")
                       for role in ROLES})


async def test_compose_processes_run_as_their_roles_on_a_cluster(compose: Compose,
                                                                 tmp_path: Path) -> None:
    plane = Plane(compose.cluster.urls, compose.seeds)
    database = f"sqlite:///{tmp_path / 'rm.db'}"
    logs = {role: tmp_path / f"{role}.log" for role in ("api", "projector", "gateway")}
    data_dir = str(tmp_path / "data")
    replicas = ("--stream-replicas", "3")
    # started together, as compose starts them on a new cluster: whichever makes a stream,
    # the others may ask it before its group has a leader, and wait that out (processes'
    # `_at_start`), none exits
    api = _process("api", plane, logs["api"], "--database", database, "--api-port", "0",
                   "--data-dir", data_dir, *replicas)
    projector = _process("projector", plane, logs["projector"], "--database", database,
                         "--data-dir", data_dir, *replicas)
    gateway = _process("gateway", plane, logs["gateway"], "--xds-port", "0",
                       "--health-port", "0", *replicas)
    processes = [api, projector, gateway]
    try:
        url = await _printed(api, logs["api"], "API listening on ")
        async with httpx.AsyncClient(timeout=30) as client:
            async def stored() -> httpx.Response | None:
                # the R3 stream just made may still change leader on a loaded machine (a
                # 503): tried again with an Idempotency-Key, as a client does, stored once
                response = await client.put(f"{url}/meshes/default",
                                            json={"type": "Mesh", "name": "default"},
                                            headers={"Idempotency-Key": "mesh-default"})
                return None if response.status_code == 503 else response

            response = await eventually(stored, "the Mesh stored", within=60)
            # 200: an attempt that answered 503 was stored after all
            assert response.status_code in (200, 201), response.text
            nc = await plane.nc("admin")
            head = await (await JetStreamEventLog.open(nc)).last_seq()

            async def projected() -> bool:
                assert projector.poll() is None, _tail(logs["projector"])
                return await _checkpoint(database) >= head

            await eventually(projected, "the projector to project the Mesh", within=60)
            ready = await _printed(gateway, logs["gateway"], "gateway readiness on ")

            async def gateway_ready() -> bool:
                assert gateway.poll() is None, _tail(logs["gateway"])
                return (await client.get(ready)).status_code == 200

            await eventually(gateway_ready, "the gateway's /ready", within=60)

        # the gateway's seed may not append a Mesh; no credentials, no connection
        gateway_log = await JetStreamEventLog.open(await plane.nc("gateway"))
        with pytest.raises(NatsPermissionDenied) as refused:
            await gateway_log.append(MESH, MeshApplied(at=1, mesh=Mesh(name="evil")),
                                     expected_last_subject_seq=0, msg_id="evil-1")
        assert refused.value.subject == MESH
        with pytest.raises(NatsPermissionDenied, match="credentials \\(none given"):
            await connect_nats(compose.cluster.urls, name="anonymous", reconnect=False)
        info = await nc.jetstream().stream_info("MESHLOG_EVENTS")
        assert info.config.num_replicas == 3 and info.state.last_seq >= head
    finally:
        for process in processes:
            stop_process(process, signal.SIGTERM)
        for connection in plane.connections.values():
            await connection.close()
    assert [process.returncode for process in processes] == [0, 0, 0]
    assert "NATS permissions" not in "".join(log.read_text() for log in logs.values())
    for node in compose.cluster.nodes:  # each role had what it needed: no refusal but ours
        assert [line for line in node.log_file.read_text().splitlines()
                if "Violation" in line and "evil" not in line] == [], node.name


async def _printed(process: subprocess.Popen[bytes], log: Path, prefix: str) -> str:
    """What a process printed after `prefix`, once it has; its log if it exits first or
    never prints it."""

    async def check() -> str | None:
        assert process.poll() is None, f"{log.name}: exited\n{_tail(log)}"
        return _line(log, prefix)

    try:
        return await eventually(check, f"{log.name}: {prefix}...", within=60)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_tail(log)}") from None


def _line(log: Path, prefix: str) -> str | None:
    return next((line[len(prefix):].strip() for line in log.read_text().splitlines()
                 if line.startswith(prefix)), None)


def _tail(log: Path) -> str:
    return log.read_text()[-3000:]


_LEAF_PASSWORD = "leaf-secret"


def _server_conf(folder: Path, settings: dict[str, Any]) -> Path:
    """A nats-server configuration in `folder` that includes the `auth.conf` `meshlog
    nats-users --out folder/creds` wrote, with `settings` (a block each), as an operator's."""
    conf = folder / "nats.conf"
    conf.write_text("include ./creds/auth.conf\n" + "".join(
        f"{key}: {json.dumps(value)}\n" for key, value in settings.items()))
    return conf


def _seeds(folder: Path) -> dict[Role, Path]:
    return {role: folder / "creds" / f"{role}.nk" for role in ROLES}


@contextlib.asynccontextmanager
async def _global_and_east(tmp_path: Path) -> AsyncIterator[tuple[Plane, Plane]]:
    """Global's and zone east's nats-servers, each with the users and auth.conf of `meshlog
    nats-users --mode global|zone` and the leafnode blocks it prints (account MESHLOG on both
    sides); a Plane of each (its log: `data/nats-server.log`)."""
    _nats_users("--mode", "global", "--out", str(tmp_path / "global" / "creds"))
    _nats_users("--mode", "zone", "--zone", "east", "--out", str(tmp_path / "east" / "creds"))
    leaf_port = free_port()
    listener = leafnode_listener("127.0.0.1", leaf_port, _LEAF_PASSWORD, "MESHLOG")
    remote = leafnode_remote(f"nats-leaf://zone:{_LEAF_PASSWORD}@127.0.0.1:{leaf_port}",
                             "MESHLOG")
    async with run_nats_server(
            tmp_path / "global" / "data", server_name="global", config=_server_conf(
                tmp_path / "global", {"jetstream": {"domain": "global"},
                                      "leafnodes": listener})) as global_url, \
            run_nats_server(tmp_path / "east" / "data", server_name="east", config=_server_conf(
                tmp_path / "east", {"jetstream": {"domain": "east"},
                                    "leafnodes": remote})) as east_url:
        planes = (Plane(global_url, _seeds(tmp_path / "global")),
                  Plane(east_url, _seeds(tmp_path / "east")))
        try:
            yield planes
        finally:
            for plane in planes:
                for nc in plane.connections.values():
                    await nc.close()


async def test_a_zones_servers_reach_globals_account_over_the_printed_leafnode_link(
        tmp_path: Path) -> None:
    """The leafnode blocks `meshlog nats-users --mode global|zone` prints bind the account on
    both sides: from the zone's account, global's JetStream domain answers."""
    async with _global_and_east(tmp_path) as (central, east):
        await (await central.nc("admin")).jetstream().add_stream(name="PROBE",
                                                                  subjects=["probe.>"])
        east_js = (await east.nc("admin")).jetstream(domain="global", timeout=1)

        async def probe_from_east() -> bool:
            try:
                info = await east_js.stream_info("PROBE")
            except (nats.errors.TimeoutError, nats.js.errors.ServiceUnavailableError):
                return False  # the link is still coming up
            return info.config.name == "PROBE"

        await eventually(probe_from_east, "global's domain to answer east", within=30)
