"""Dataplane tokens naming no Dataplane (Kuma's token for a group: `kumactl generate
dataplane-token --mesh M --tag kuma.io/service=web`, one token for every replica of a
service; with neither tags nor workload, for the whole mesh) and the `Workload` claim: real
gRPC ADS streams against an in-process gateway on a real nats-server, its view filled by the
real projector; tokens issued and revoked through the command path, as the API does."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from nats.aio.client import Client as NATS

from events import DataplaneRegistered, JetStreamEventLog, decode_resource, now_ms
from events.bus.projection_bus import JetStreamProjectionBus
from events.commands import Commands, TokenCommands
from events.identity import DATAPLANE_TOKEN, DataplaneClaims, SecretKey, unverified_claims
from projections import Projector, open_store
from tests.harness import cancel_until_done, eventually
from tests.xds_gateway._gateways import (
    ProxyClient,
    channel_to,
    dataplane_doc,
    last_event,
    refusals_counted,
    running_gateway,
)
from tests.xds_gateway.test_auth import _auth, _ended, _open
from xds_gateway import Gateway
from xds_gateway.type_urls import CLUSTER

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED
WORKLOAD = "kuma.io/workload"


def _doc(name: str, service: str, workload: str | None = None) -> dict[str, Any]:
    doc = dataplane_doc(name)
    doc["networking"]["inbound"][0]["tags"]["kuma.io/service"] = service
    if workload is not None:
        doc["labels"] = {WORKLOAD: workload}
    return doc


REGISTERED = {"web-1": _doc("web-1", "web", "web"), "web-2": _doc("web-2", "web", "web"),
              "db-1": _doc("db-1", "db", "db"), "web-9": _doc("web-9", "web")}
"""Registered through the API: two replicas of web, one of db (each with its workload
label) and a web replica without a workload label."""


@pytest.fixture
async def tokens(nc: NATS, tmp_path: Path) -> AsyncIterator[TokenCommands]:
    event_log = await JetStreamEventLog.open(nc)
    commands = Commands(event_log, zone="default")
    await commands.apply(decode_resource({"type": "Mesh", "name": "default"}))
    for doc in REGISTERED.values():
        await commands.apply(decode_resource(doc))
    issuer = TokenCommands(event_log, zone="default", secret_key=SecretKey.generate())
    await issuer.signing_key(DATAPLANE_TOKEN, "default", now_ms())
    store = await open_store(f"sqlite:///{tmp_path / 'rm.db'}")
    projector = asyncio.create_task(Projector(
        event_log, store, await JetStreamProjectionBus.open(nc), zone="default").run())
    try:
        yield issuer
    finally:
        await cancel_until_done(projector)
        await store.close()


async def _token(tokens: TokenCommands, *, tags: dict[str, list[str]] | None = None,
                 workload: str = "") -> str:
    """A token naming no Dataplane."""
    token, _ = await tokens.issue_dataplane_token(
        mesh="default", name="", tags=tags or {}, workload=workload, valid_for_s=3600,
        now_ms=now_ms())
    return token


@contextlib.asynccontextmanager
async def _gateway(nc: NATS) -> AsyncIterator[Gateway]:
    async with running_gateway(nc, no_auth=False) as gw:
        async def ready() -> bool:
            return ("dataplane-token/default/1" in gw.view.signing_keys
                    and all(("default", name) in gw.view.dataplanes for name in REGISTERED))

        await eventually(ready, what="the key and the Dataplanes in the gateway's view")
        yield gw


async def _refused(channel: grpc.aio.Channel, token: str, node_id: str, reason: str
                   ) -> grpc.aio.AioRpcError:
    with refusals_counted(reason):
        error = await _ended(await _open(channel, token, node_id))
    assert error.code() == DENIED, error.details()
    return error


async def test_two_replicas_of_a_service_share_one_name_less_token(
        nc: NATS, tokens: TokenCommands) -> None:
    token = await _token(tokens, tags={"kuma.io/service": ["web"]})
    claims = unverified_claims(token, DataplaneClaims)
    assert (claims.name, claims.tags) == ("", {"kuma.io/service": ["web"]})
    async with _gateway(nc) as gw, channel_to(gw) as channel:
        replicas = [await _open(channel, token, f"default.{name}") for name in ("web-1", "web-2")]
        for replica in replicas:
            assert (await replica.recv()).type_url == CLUSTER
        # revoked by its jti, as any token: every stream that uses it ends
        await tokens.revoke(DATAPLANE_TOKEN, "default", claims.jti,
                            expires_at_ms=claims.exp * 1000, at=now_ms())
        for replica in replicas:
            error = await _ended(replica)
            assert error.code() == UNAUTHENTICATED
            assert f"the dataplane token {claims.jti} was revoked" in (error.details() or "")


async def test_a_name_less_token_refuses_a_dataplane_of_another_service(
        nc: NATS, tokens: TokenCommands) -> None:
    token = await _token(tokens, tags={"kuma.io/service": ["web"]})
    jti = unverified_claims(token, DataplaneClaims).jti
    async with _gateway(nc) as gw, channel_to(gw) as channel:
        error = await _refused(channel, token, "default.db-1", "tags_not_allowed")
        assert error.details() == (
            f"the dataplane token {jti} does not allow Dataplane default.db-1: its tag "
            "'kuma.io/service' has the value 'db'; the token allows ['web']")
        # nor by carrying a Dataplane of its service under db-1's name: the registered
        # db-1 (whose config and certificate the stream would get) must be allowed too
        impostor = ProxyClient(channel, _auth(token))
        impostor.hello(CLUSTER, "default.db-1", dataplane=_doc("db-1", "web", "web"))
        with refusals_counted("tags_not_allowed"):
            error = await _ended(impostor)
        assert error.code() == DENIED
        assert error.details() == (
            f"the dataplane token {jti} does not allow Dataplane default.db-1 as registered: "
            "its tag 'kuma.io/service' has the value 'db'; the token allows ['web']")
        # nor a Dataplane of another mesh, nor one that does not exist
        error = await _refused(channel, token, "other.web-1", "wrong_mesh")
        assert ("is for any Dataplane of mesh 'default' it allows, not for node "
                "'other.web-1'") in (error.details() or "")
        error = await _refused(channel, token, "default.web-7", "unknown_dataplane")
        assert ("requires tags {'kuma.io/service': ['web']} and Dataplane default.web-7 is not "
                "registered") in (error.details() or "")


async def test_a_workload_token_opens_only_its_workloads_streams(
        nc: NATS, tokens: TokenCommands) -> None:
    token = await _token(tokens, workload="web")
    jti = unverified_claims(token, DataplaneClaims).jti
    async with _gateway(nc) as gw, channel_to(gw) as channel:
        served = await _open(channel, token, "default.web-2")
        assert (await served.recv()).type_url == CLUSTER
        served.close()
        error = await _refused(channel, token, "default.db-1", "wrong_workload")
        assert error.details() == (
            f"the dataplane token {jti} does not allow Dataplane default.db-1: its label "
            "'kuma.io/workload' is 'db'; the token requires workload 'web'")
        error = await _refused(channel, token, "default.web-9", "wrong_workload")
        assert ("does not allow Dataplane default.web-9: it has no label 'kuma.io/workload'; "
                "the token requires workload 'web'") in (error.details() or "")


async def test_a_named_token_with_a_workload_needs_both(nc: NATS, tokens: TokenCommands
                                                        ) -> None:
    token, _ = await tokens.issue_dataplane_token(
        mesh="default", name="web-1", tags={}, workload="db", valid_for_s=3600,
        now_ms=now_ms())
    async with _gateway(nc) as gw, channel_to(gw) as channel:
        error = await _refused(channel, token, "default.web-1", "wrong_workload")
        assert "its label 'kuma.io/workload' is 'web'" in (error.details() or "")


async def _registered(event_log: JetStreamEventLog, name: str) -> Any:
    got = await last_event(event_log, name)
    return got if got and isinstance(got[0], DataplaneRegistered) else None


async def test_replicas_register_themselves_with_a_name_less_token(
        nc: NATS, tokens: TokenCommands) -> None:
    event_log = await JetStreamEventLog.open(nc)
    token = await _token(tokens, tags={"kuma.io/service": ["web"]}, workload="web")
    async with _gateway(nc) as gw, channel_to(gw) as channel:
        for name in ("web-3", "web-4"):
            client = ProxyClient(channel, _auth(token))
            client.hello(CLUSTER, f"default.{name}", dataplane=_doc(name, "web", "web"))
            assert (await client.recv()).type_url == CLUSTER
            await eventually(functools.partial(_registered, event_log, name),
                             what=f"{name} registered")
            client.close()
        client = ProxyClient(channel, _auth(token))
        client.hello(CLUSTER, "default.db-3", dataplane=_doc("db-3", "db", "web"))
        with refusals_counted("tags_not_allowed"):
            error = await _ended(client)
        assert error.code() == DENIED
        assert await _registered(event_log, "db-3") is None


async def test_a_mesh_wide_token_opens_any_dataplane_of_its_mesh(
        nc: NATS, tokens: TokenCommands) -> None:
    """Kuma's token bound by mesh only: the broadest token, for Dataplanes that exist."""
    token = await _token(tokens)
    jti = unverified_claims(token, DataplaneClaims).jti
    async with _gateway(nc) as gw, channel_to(gw) as channel:
        for name in ("web-1", "db-1", "web-9"):
            client = await _open(channel, token, f"default.{name}")
            assert (await client.recv()).type_url == CLUSTER
            client.close()
        error = await _refused(channel, token, "default.nobody", "unknown_dataplane")
        assert error.details() == (
            f"the dataplane token {jti} names no Dataplane and Dataplane default.nobody is "
            "not registered (register it, or carry it in the node metadata)")
        await _refused(channel, token, "other.web-1", "wrong_mesh")
