"""NATS permissions per role (README, NATS permissions), against a real nats-server run with
the configuration `meshlog up` writes: a gateway's credentials cannot append a Mesh event or
touch the stream's rules, the projector's cannot append a Mesh, the API's can."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import nats.js.errors
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import StorageType, StreamConfig

from events import (
    Conflict,
    Dataplane,
    JetStreamEventLog,
    Mesh,
    MeshApplied,
    SequenceSkipped,
    decode_resource,
    resource_subject,
    skip_subject,
)
from events.bus import _leader_reads
from events.bus.connection import connect_nats
from events.bus.insights import JetStreamInsights, ProxyInsight
from events.bus.nats_access import NatsPermissionDenied, credential_options, refusals_of
from events.bus.permissions import Role
from events.bus.projection_bus import JetStreamProjectionBus
from events.commands import ClockCommands, Commands, ProxyCommands
from events.subjects import EVENTS_STREAM, events_wildcard
from projections import open_store
from services.runtime.embedded_nats import run_nats_server
from services.runtime.nats_users import ensure_seeds, write_server_config
from services.runtime.spawn import popen
from tests.harness import VENV_BIN, meshlog_up, stop_process, wait_for

pytestmark = pytest.mark.integration

MESH = resource_subject("Mesh", None, "evil")
_APPEND_TIMEOUT_S = 5.0
"""JetStreamEventLog's own wait for an acknowledgement: a refusal must not wait for it."""


class Plane:
    def __init__(self, url: str, seeds: dict[Role, Path]) -> None:
        self.url = url
        self.seeds = seeds
        self.connections: dict[Role, NATS] = {}

    async def nc(self, role: Role) -> NATS:
        if role not in self.connections:
            self.connections[role] = await connect_nats(
                self.url, name=f"meshlog-{role}", credentials=self.seeds[role])
        return self.connections[role]

    async def log(self, role: Role) -> JetStreamEventLog:
        return await JetStreamEventLog.open(await self.nc(role))


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[Plane]:
    seeds = ensure_seeds(tmp_path)
    config = write_server_config(tmp_path, seeds, "default")
    async with run_nats_server(tmp_path / "nats", config=config) as url:
        plane = Plane(url, seeds)
        try:
            await plane.log("api")  # the command side creates the stream
            yield plane
        finally:
            for nc in plane.connections.values():
                await nc.close()


def _mesh(name: str = "evil") -> MeshApplied:
    return MeshApplied(at=1, mesh=Mesh(name=name))


async def _head(plane: Plane) -> int:
    return await (await plane.log("admin")).last_seq()


async def test_a_gateway_cannot_append_a_mesh_event(plane: Plane) -> None:
    gateway = await plane.log("gateway")
    before = await _head(plane)
    started = time.monotonic()
    with pytest.raises(NatsPermissionDenied) as refused:
        await gateway.append(MESH, _mesh(), expected_last_subject_seq=0, msg_id="evil-1")
    assert time.monotonic() - started < _APPEND_TIMEOUT_S  # refused, not timed out
    assert refused.value.subject == MESH
    assert str(refused.value).startswith(f"NATS permissions: meshlog-gateway may not publish "
                                         f"to {MESH} ")
    assert await _head(plane) == before


async def test_a_gateway_cannot_purge_delete_or_loosen_the_stream(plane: Plane) -> None:
    await (await plane.log("api")).append(resource_subject("Mesh", None, "default"),
                                          _mesh("default"), expected_last_subject_seq=0,
                                          msg_id="m-1")
    nc = await plane.nc("gateway")
    js = nc.jetstream(timeout=_APPEND_TIMEOUT_S)
    for action, call in (("PURGE", js.purge_stream), ("DELETE", js.delete_stream)):
        with pytest.raises(NatsPermissionDenied):
            async with refusals_of(nc).guard(f"$JS.API.STREAM.{action}.{EVENTS_STREAM}"):
                await call(EVENTS_STREAM)
    loose = StreamConfig(name=EVENTS_STREAM, subjects=[events_wildcard()],
                         storage=StorageType.FILE, allow_direct=True)
    with pytest.raises(NatsPermissionDenied):
        async with refusals_of(nc).guard(f"$JS.API.STREAM.UPDATE.{EVENTS_STREAM}"):
            await js.update_stream(loose)
    # creating it again is allowed (processes start in any order), but never changes it
    with pytest.raises(nats.js.errors.BadRequestError) as changed:
        await js.add_stream(loose)
    assert changed.value.err_code == 10058  # stream name already in use, other config
    info = await (await plane.nc("admin")).jetstream().stream_info(EVENTS_STREAM)
    assert info.config.deny_purge and info.config.deny_delete and info.state.messages == 1


async def test_a_gateway_registers_dataplanes_and_writes_insights(plane: Plane) -> None:
    await Commands(await plane.log("api"), zone="default").apply(
        decode_resource({"type": "Mesh", "name": "default"}))
    dataplane = decode_resource({
        "type": "Dataplane", "mesh": "default", "name": "web-1",
        "networking": {"address": "10.0.0.9", "inbound": [
            {"port": 7070, "tags": {"kuma.io/service": "web"}}]}})
    assert isinstance(dataplane, Dataplane)
    proxies = ProxyCommands(await plane.log("gateway"), zone="default")
    assert await proxies.register(dataplane, at=1_000)
    assert not isinstance(await proxies.deregister("default", "web-1", at=2_000), str)

    nc = await plane.nc("gateway")
    insights = await JetStreamInsights.open(nc)
    await insights.put(ProxyInsight(mesh="default", name="web-1", gateway="gw", session="s",
                                    connected_at=1_000))
    assert await insights.proxy("default", "web-1") is not None
    # reads the projections every gateway serves, but cannot write them
    bus = await JetStreamProjectionBus.open(nc)
    assert await bus.current() == {}
    kv = await nc.jetstream(timeout=_APPEND_TIMEOUT_S).key_value("meshlog_projections")
    with pytest.raises(NatsPermissionDenied):
        async with refusals_of(nc).guard("$KV.meshlog_projections.meta/checkpoint"):
            await kv.put("meta/checkpoint", b"999")


async def test_the_projector_ticks_the_clock_but_cannot_append_a_mesh(plane: Plane) -> None:
    projector = await plane.log("projector")
    assert await ClockCommands(projector, zone="default").tick(60_000)
    await (await JetStreamProjectionBus.open(await plane.nc("projector"))).publish(
        [("meta/checkpoint", b"1")])
    with pytest.raises(NatsPermissionDenied):
        await projector.append(MESH, _mesh(), expected_last_subject_seq=0, msg_id="evil-2")


async def test_the_api_appends_a_mesh_of_its_zone_only(plane: Plane) -> None:
    api = await plane.log("api")
    appended = await api.append(MESH, _mesh(), expected_last_subject_seq=0, msg_id="mesh-1")
    assert appended.seq == await _head(plane)
    other_zone = resource_subject("Mesh", None, "evil", zone="east")
    with pytest.raises(NatsPermissionDenied):
        await api.append(other_zone, _mesh(), expected_last_subject_seq=0, msg_id="mesh-2")


async def test_the_api_appends_a_skip_decision_the_projector_reads(plane: Plane) -> None:
    """`meshlog quarantine skip`: the API's user appends the decision on the sequence's own
    subject; the projector reads it from the stream leader (what a halted projector polls and
    a replay asks); neither the projector nor a gateway may append one."""
    api = await plane.log("api")
    mesh = await api.append(MESH, _mesh(), expected_last_subject_seq=0, msg_id="mesh-1")
    decision = SequenceSkipped(at=1, seq=mesh.seq, subject=MESH, reason="test", by="admin")
    appended = await api.append(skip_subject(mesh.seq), decision, expected_last_subject_seq=0,
                                msg_id="skip-1")
    nc = await plane.nc("projector")
    projector = JetStreamEventLog(nc, nc.jetstream(timeout=_APPEND_TIMEOUT_S), EVENTS_STREAM)
    record = await projector.last(skip_subject(mesh.seq), consistent=True)
    assert record is not None and record.seq == appended.seq
    for role in ("projector", "gateway"):
        with pytest.raises(NatsPermissionDenied):
            await (await plane.log(role)).append(skip_subject(9), decision,
                                                 expected_last_subject_seq=0,
                                                 msg_id=f"skip-{role}")
    assert await _head(plane) == appended.seq


async def test_the_roles_that_append_may_read_from_the_stream_leader(plane: Plane) -> None:
    """On a replicated stream a write decision reads the subject's last event from the
    stream leader (`STREAM.MSG.GET`), as do the check after a refused append and a read of a
    sequence a follower does not have yet: every role that appends may ask. (A log that does
    not know its replica count reads as on R3.)"""
    await (await plane.log("api")).append(MESH, _mesh(), expected_last_subject_seq=0,
                                          msg_id="mesh-1")
    for role in ("api", "projector", "gateway"):
        nc = await plane.nc(role)
        log = JetStreamEventLog(nc, nc.jetstream(timeout=_APPEND_TIMEOUT_S), EVENTS_STREAM)
        started = time.monotonic()
        record = await log.last(MESH, consistent=True)
        assert record is not None and record.seq == 1, role
        assert await log.at(2) is None, role
        assert time.monotonic() - started < _APPEND_TIMEOUT_S, role  # answered, not timed out


async def test_the_roles_that_append_may_check_an_r1_streams_replica_count(
        plane: Plane, monkeypatch: pytest.MonkeyPatch) -> None:
    """A log on an R1 stream reads its replica count again before a consistent read once it
    is a second old (`STREAM.INFO`: a stream scaled up under the process); here at once:
    every role that decides may ask, and reads on."""
    monkeypatch.setattr(_leader_reads, "REPLICAS_TTL_S", 0.0)
    await (await plane.log("api")).append(MESH, _mesh(), expected_last_subject_seq=0,
                                          msg_id="mesh-1")
    for role in ("api", "projector", "gateway"):
        log = await plane.log(role)
        started = time.monotonic()
        record = await log.last(MESH, consistent=True)
        assert record is not None and record.seq == 1, role
        assert time.monotonic() - started < _APPEND_TIMEOUT_S, role


async def test_the_api_may_fence_its_guards_reads_by_the_stream_leader(plane: Plane) -> None:
    """A delete's guard reads other subjects through a consumer, on a replicated stream
    fenced by the stream leader's last record among them (`STREAM.MSG.GET` with the filter as
    `last_by_subj`): the API's user may ask, and gets the guard's Conflict, not a 503.
    (A log that does not know its replica count reads as on R3.)"""
    nc = await plane.nc("api")
    api = Commands(JetStreamEventLog(nc, nc.jetstream(timeout=_APPEND_TIMEOUT_S),
                                     EVENTS_STREAM), zone="default")
    await api.apply(Mesh(name="busy"))
    dataplane = decode_resource({
        "type": "Dataplane", "mesh": "busy", "name": "web-1",
        "networking": {"address": "10.0.0.9", "inbound": [
            {"port": 7070, "tags": {"kuma.io/service": "web"}}]}})
    assert isinstance(dataplane, Dataplane)
    await api.apply(dataplane)
    started = time.monotonic()
    with pytest.raises(Conflict, match="still has 1 dataplanes"):
        await api.delete("Mesh", None, "busy")
    assert time.monotonic() - started < _APPEND_TIMEOUT_S  # answered, not timed out


async def test_the_api_deletes_its_guards_consumers(plane: Plane) -> None:
    """A guard's read across subjects deletes its consumer when done (`CONSUMER.DELETE`, not
    waited for: refused, the consumer would stay for the inactivity threshold, 120 s)."""
    api = await plane.log("api")
    await api.append(MESH, _mesh(), expected_last_subject_seq=0, msg_id="mesh-1")
    for _ in range(3):
        assert len(await api.latest(events_wildcard())) == 1
    admin = (await plane.nc("admin")).jetstream()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while (await admin.stream_info(EVENTS_STREAM)).state.consumer_count:
        assert loop.time() < deadline, "the API's guard reads left their consumers"
        await asyncio.sleep(0.05)


async def test_a_connection_without_credentials_is_refused(plane: Plane) -> None:
    with pytest.raises(NatsPermissionDenied) as refused:
        await connect_nats(plane.url, name="meshlog-replay", reconnect=False)
    assert "refused meshlog-replay's credentials (none given" in str(refused.value)


async def test_an_unknown_user_is_refused(plane: Plane, tmp_path: Path) -> None:
    stranger = ensure_seeds(tmp_path / "elsewhere")["admin"]
    with pytest.raises(NatsPermissionDenied) as refused:
        await connect_nats(plane.url, name="meshlog-replay", reconnect=False,
                           credentials=stranger)
    assert str(stranger) in str(refused.value)


def test_credentials_are_told_apart_by_content(tmp_path: Path) -> None:
    seed = ensure_seeds(tmp_path)["gateway"]
    assert credential_options(seed) == {"nkeys_seed": str(seed)}
    creds = tmp_path / "user.creds"
    creds.write_text("-----BEGIN NATS USER JWT-----\neyJ0eXAiOiJKV1QifQ.e30.sig\n"
                     "------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\n"
                     "SUAAAA\n------END USER NKEY SEED------\n")
    assert credential_options(creds) == {"user_credentials": str(creds)}
    junk = tmp_path / "junk"
    junk.write_text("password=hunter2\n")
    with pytest.raises(NatsPermissionDenied, match=r"neither a \.creds file"):
        credential_options(junk)
    with pytest.raises(NatsPermissionDenied, match="cannot read it"):
        credential_options(tmp_path / "missing")


def test_seeds_are_private_and_kept(tmp_path: Path) -> None:
    first = ensure_seeds(tmp_path)
    contents = {role: path.read_bytes() for role, path in first.items()}
    (tmp_path / "nats-creds" / "api.nk").chmod(0o644)
    again = ensure_seeds(tmp_path)
    assert {role: path.read_bytes() for role, path in again.items()} == contents
    assert stat.S_IMODE(os.stat(tmp_path / "nats-creds").st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in again.values()} == {0o600}
    assert len(set(contents.values())) == len(contents)  # one user per role


async def test_meshlog_up_runs_every_component_as_its_role(tmp_path: Path) -> None:
    with meshlog_up(tmp_path / "cp") as cp:
        assert stat.S_IMODE(cp.nats_creds.stat().st_mode) == 0o600
        assert cp.where["nats_admin_creds"] == str(cp.nats_creds)
        cp.apply({"type": "Mesh", "name": "default"})  # the API's user appends
        nc = await connect_nats(cp.where["nats"], name="meshlog-gateway",
                                credentials=cp.creds("gateway"))
        try:
            with pytest.raises(NatsPermissionDenied):
                await (await JetStreamEventLog.open(nc)).append(
                    MESH, _mesh(), expected_last_subject_seq=0, msg_id="evil-3")
        finally:
            await nc.close()
        with pytest.raises(NatsPermissionDenied):
            await connect_nats(cp.where["nats"], name="anonymous", reconnect=False)
    log = (tmp_path / "cp" / "nats" / "nats-server.log").read_text()
    # every component ran within its permissions: the only refusal is the test's own
    assert [line for line in log.splitlines() if "Violation" in line and "evil" not in line] \
        == [], "a role lacks a permission it needs"
    assert all(seed.read_text().strip() not in (tmp_path / "cp" / "up.log").read_text()
               for seed in (tmp_path / "cp" / "nats-creds").glob("*.nk"))


async def test_a_data_dir_from_before_users_keeps_its_log(tmp_path: Path) -> None:
    """The embedded server's users are in its global account, where a store made without
    users keeps its streams (an account of their own would start with an empty log)."""
    data = tmp_path / "cp"
    async with run_nats_server(data / "nats") as url:  # as `meshlog up` ran before
        nc = await connect_nats(url, name="old meshlog up")
        try:
            await Commands(await JetStreamEventLog.open(nc), zone="default").apply(
                decode_resource({"type": "Mesh", "name": "kept"}))
        finally:
            await nc.close()
    with meshlog_up(data) as cp:
        wait_for(lambda: cp.api.get("/meshes/kept").status_code == 200,
                 what="the Mesh appended before meshlog up had users")


def _process(role: Role, plane: Plane, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return popen([str(VENV_BIN / "meshlog"), role, "--nats-url", plane.url, "--nats-creds",
                      str(plane.seeds[role]), *extra],
                     stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


async def _checkpoint(database: str) -> int:
    store = await open_store(database)
    try:
        return await store.checkpoint()
    finally:
        await store.close()


async def test_api_and_projector_processes_run_as_their_roles(plane: Plane,
                                                              tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'rm.db'}"
    api_log, projector_log = tmp_path / "api.log", tmp_path / "projector.log"
    # their data dir in the test's temp dir: an API makes its secret key and admin token there
    data_dir = str(tmp_path / "data")
    api = _process("api", plane, api_log, "--database", database, "--api-port", "0",
                   "--data-dir", data_dir)
    # a grace period other than the default: the projector records it in the log at start
    projector = _process("projector", plane, projector_log, "--database", database,
                         "--meshservice-grace-period", "5m", "--data-dir", data_dir)
    try:
        prefix = "API listening on "
        url = wait_for(lambda: next((line[len(prefix):] for line in api_log.read_text()
                                     .splitlines() if line.startswith(prefix)), None),
                       timeout=30, what="the API process")
        async with httpx.AsyncClient() as client:
            response = await client.put(f"{url}/meshes/default",
                                        json={"type": "Mesh", "name": "default"})
        assert response.status_code == 201, response.text
        head = await _head(plane)  # the grace period and the Mesh
        deadline = time.monotonic() + 30
        while await _checkpoint(database) < head:
            assert projector.poll() is None, projector_log.read_text()[-2000:]
            assert time.monotonic() < deadline, "the projector did not project the Mesh"
            await asyncio.sleep(0.1)
    finally:
        stop_process(api, signal.SIGTERM)
        stop_process(projector, signal.SIGTERM)
    assert api.returncode == projector.returncode == 0
    assert "NATS permissions" not in api_log.read_text() + projector_log.read_text()


def test_a_process_with_unreadable_credentials_says_so(tmp_path: Path) -> None:
    missing = tmp_path / "gateway.nk"
    result = subprocess.run(
        [str(VENV_BIN / "meshlog"), "gateway", "--nats-url", "nats://127.0.0.1:9",
         "--nats-creds", str(missing), "--xds-port", "0", "--health-port", "0"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: NATS credentials {missing}: cannot read it (No such file or directory)")
