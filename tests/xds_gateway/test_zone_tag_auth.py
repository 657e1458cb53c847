"""A dataplane token requiring `kuma.io/zone` (Kuma signs tokens with tags; the zone control
plane tags every inbound with its zone): the gateway checks the token's tags against the
Dataplane as the fold makes it, so the zone tag of a self-registering proxy is the gateway's
zone, whatever the node's Dataplane says. Real gRPC ADS streams against an in-process
gateway of zone `west` on a real nats-server, its view filled by the real projector; tokens
issued through the command path, as the API does."""

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

from events import JetStreamEventLog, decode_resource, now_ms, resource_subject
from events.bus.projection_bus import JetStreamProjectionBus
from events.commands import Commands, TokenCommands
from events.identity import DATAPLANE_TOKEN, SecretKey
from projections import Projector, open_store
from tests.harness import cancel_until_done, eventually
from tests.xds_gateway._gateways import (
    ProxyClient,
    channel_to,
    dataplane_doc,
    refusals_counted,
    running_gateway,
)
from tests.xds_gateway.test_auth import _auth, _ended
from xds_gateway import Gateway
from xds_gateway.type_urls import CLUSTER

ZONE = "west"
DENIED = grpc.StatusCode.PERMISSION_DENIED


@pytest.fixture
async def tokens(nc: NATS, tmp_path: Path) -> AsyncIterator[TokenCommands]:
    """Zone west's log: a mesh, web-1 registered through the API, the mesh's signing key,
    and west's projector publishing it all for gateways."""
    event_log = await JetStreamEventLog.open(nc)
    commands = Commands(event_log, zone=ZONE)
    await commands.apply(decode_resource({"type": "Mesh", "name": "default"}))
    await commands.apply(decode_resource(dataplane_doc("web-1")))
    issuer = TokenCommands(event_log, zone=ZONE, secret_key=SecretKey.generate())
    await issuer.signing_key(DATAPLANE_TOKEN, "default", now_ms())
    store = await open_store(f"sqlite:///{tmp_path / 'rm.db'}")
    projector = asyncio.create_task(Projector(
        event_log, store, await JetStreamProjectionBus.open(nc), zone=ZONE).run())
    try:
        yield issuer
    finally:
        await cancel_until_done(projector)
        await store.close()


async def _token(tokens: TokenCommands, name: str, zone: str) -> str:
    token, _ = await tokens.issue_dataplane_token(
        mesh="default", name=name, tags={"kuma.io/zone": [zone]}, valid_for_s=3600,
        now_ms=now_ms())
    return token


@contextlib.asynccontextmanager
async def _gateway(nc: NATS) -> AsyncIterator[Gateway]:
    async with running_gateway(nc, no_auth=False, zone=ZONE) as gw:
        async def ready() -> bool:
            row = gw.view.dataplanes.get(("default", "web-1"))
            return ("dataplane-token/default/1" in gw.view.signing_keys and row is not None
                    and row.dataplane.networking.inbound[0].tags.get("kuma.io/zone") == ZONE)

        await eventually(ready, what="the key and west's tagged web-1 in the gateway's view")
        yield gw


async def _registered(nc: NATS, name: str) -> bool:
    """Is there an event of Dataplane `name` on west's subject (its self-registration)?"""
    return await (await JetStreamEventLog.open(nc)).last(
        resource_subject("Dataplane", "default", name, zone=ZONE)) is not None


def _claiming(name: str, zone: str) -> dict[str, Any]:
    """A Dataplane document whose inbound says it is in `zone` (the fold overrides it)."""
    doc = dataplane_doc(name)
    doc["networking"]["inbound"][0]["tags"]["kuma.io/zone"] = zone
    return doc


async def test_a_token_requiring_this_zone_opens_a_self_registering_proxys_stream(
        nc: NATS, tokens: TokenCommands) -> None:
    async with _gateway(nc) as gw, channel_to(gw) as channel:
        for name, doc in (("web-3", dataplane_doc("web-3")), ("web-4", _claiming("web-4", "east"))):
            client = ProxyClient(channel, _auth(await _token(tokens, name, ZONE)))
            client.hello(CLUSTER, f"default.{name}", dataplane=doc)
            assert (await client.recv()).type_url == CLUSTER
            await eventually(functools.partial(_registered, nc, name),
                             what=f"{name} registered in west")
            client.close()
        # and the registered one (no Dataplane in the node), as folded
        client = ProxyClient(channel, _auth(await _token(tokens, "web-1", ZONE)))
        client.hello(CLUSTER, "default.web-1")
        assert (await client.recv()).type_url == CLUSTER
        client.close()


async def test_a_token_requiring_another_zone_is_refused(nc: NATS, tokens: TokenCommands
                                                        ) -> None:
    async with _gateway(nc) as gw, channel_to(gw) as channel:
        # whatever the node's Dataplane says of its zone: the fold will tag it west
        for name, doc in (("web-3", dataplane_doc("web-3")), ("web-4", _claiming("web-4", "east"))):
            client = ProxyClient(channel, _auth(await _token(tokens, name, "east")))
            client.hello(CLUSTER, f"default.{name}", dataplane=doc)
            with refusals_counted("tags_not_allowed"):
                error = await _ended(client)
            assert error.code() == DENIED
            assert (f"does not allow Dataplane default.{name}: its tag 'kuma.io/zone' has the "
                    "value 'west'; the token allows ['east']") in (error.details() or ""), name
            assert not await _registered(nc, name)
        client = ProxyClient(channel, _auth(await _token(tokens, "web-1", "east")))
        client.hello(CLUSTER, "default.web-1")
        with refusals_counted("tags_not_allowed"):
            error = await _ended(client)
        assert error.code() == DENIED
        assert "its tag 'kuma.io/zone' has the value 'west'" in (error.details() or "")
