"""Zone tokens on xDS: a zone ingress (node `_zoneingress.<name>`) authenticates with a zone
token of the gateway's zone with scope ingress (Kuma's `generate zone-token --scope ingress`).
Real gRPC ADS streams against an in-process gateway on a real nats-server, its view filled by
the real projector; tokens issued and revoked through the command path, as the API does.

Refused on open: no token, a dataplane token, a zone token of another zone, one without the
ingress scope, an expired one, a revoked one, a zone token for a sidecar. Ended while open:
a zone token revoked, one that expires. Served: the right token, on SotW and Delta."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc
from nats.aio.client import Client as NATS

from events import now_ms
from events.identity import ZONE_TOKEN, ZoneClaims, unverified_claims
from events.identity.tokens import zone_claims
from tests.harness import eventually
from tests.xds_gateway._ads import DeltaAdsClient
from tests.xds_gateway._gateways import channel_to, refusals_counted, running_gateway
from tests.xds_gateway.test_auth import Plane, _auth, _ended, _open, _ready, plane
from xds_gateway import Gateway
from xds_gateway.type_urls import CLUSTER

__all__ = ["plane"]  # the fixture, shared with test_auth

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED
INGRESS = "_zoneingress.ingress-1"


async def _zone_token(plane: Plane, *, zone: str = "default", scope: tuple[str, ...] = (
        "ingress",), valid_for_s: int = 3600, issued_ms: int | None = None) -> str:
    """A zone token signed with this zone's zone-token key; `zone` other than the control
    plane's is signed directly with that key (the API refuses to make one), to show that the
    gateway checks the claim itself."""
    issued = now_ms() if issued_ms is None else issued_ms
    if zone == "default":
        token, _ = await plane.tokens.issue_zone_token(
            zone=zone, scope=list(scope), valid_for_s=valid_for_s, now_ms=issued)
        return token
    key = await plane.tokens.signing_key(ZONE_TOKEN, None, issued)
    return key.sign(zone_claims(zone=zone, scope=list(scope), valid_for_s=valid_for_s,
                                now_s=issued // 1000))


async def _revoke(plane: Plane, token: str) -> None:
    claims = unverified_claims(token, ZoneClaims)
    await plane.tokens.revoke(ZONE_TOKEN, None, claims.jti, expires_at_ms=claims.exp * 1000,
                              at=now_ms())


@contextlib.asynccontextmanager
async def _gateway(nc: NATS, plane: Plane) -> AsyncIterator[Gateway]:
    """A gateway of zone `default` whose view holds the zone-token key (made here)."""
    await plane.tokens.signing_key(ZONE_TOKEN, None, now_ms())
    async with running_gateway(nc, no_auth=False) as gw:
        await eventually(lambda: _zone_key_ready(gw), what="the zone-token key in the view")
        yield gw


async def _zone_key_ready(gw: Gateway) -> bool:
    return "zone-token/_/1" in gw.view.signing_keys and await _ready(gw)


async def _revoked(gw: Gateway) -> bool:
    return bool(gw.view.revocations)


# --- served -----------------------------------------------------------------------------------


async def test_a_zone_token_with_scope_ingress_serves_the_zones_ingress(nc: NATS, plane: Plane
                                                                        ) -> None:
    token = await _zone_token(plane)
    async with _gateway(nc, plane) as gw, channel_to(gw) as channel:
        client = await _open(channel, token, node_id=INGRESS)
        assert (await client.recv()).type_url == CLUSTER
        client.close()
        other = await _open(channel, token, node_id="_zoneingress.ingress-2")  # names none
        assert (await other.recv()).type_url == CLUSTER
        other.close()
        delta = DeltaAdsClient(channel, _auth(f"Bearer {token}"))
        delta.send(CLUSTER, node_id=INGRESS)
        assert (await delta.recv()).type_url == CLUSTER
        delta.close()


# --- refused on open --------------------------------------------------------------------------


async def test_an_ingress_without_a_token_is_unauthenticated(nc: NATS, plane: Plane) -> None:
    async with _gateway(nc, plane) as gw, channel_to(gw) as channel:
        error = await _ended(await _open(channel, None, node_id=INGRESS))
    assert error.code() == UNAUTHENTICATED
    assert "authorization" in (error.details() or "")


async def test_a_dataplane_token_opens_no_ingress_stream(nc: NATS, plane: Plane) -> None:
    token = await plane.token("ingress-1")
    async with _gateway(nc, plane) as gw, channel_to(gw) as channel:
        error = await _ended(await _open(channel, token, node_id=INGRESS))
    assert error.code() == UNAUTHENTICATED
    assert (error.details() or "").startswith("invalid zone token: it is a dataplane-token")
    assert "meshlog generate zone-token" in (error.details() or "")


async def test_a_zone_token_opens_no_sidecar_stream(nc: NATS, plane: Plane) -> None:
    token = await _zone_token(plane)
    async with _gateway(nc, plane) as gw, channel_to(gw) as channel:
        error = await _ended(await _open(channel, token, node_id="default.web-1"))
    assert error.code() == UNAUTHENTICATED
    assert "it is a zone-token" in (error.details() or "")
    assert "zone tokens are for zone ingresses" in (error.details() or "")


async def test_a_zone_token_of_another_zone_is_permission_denied(nc: NATS, plane: Plane
                                                                 ) -> None:
    token = await _zone_token(plane, zone="west")
    async with _gateway(nc, plane) as gw, channel_to(gw) as channel:
        with refusals_counted("wrong_zone"):
            error = await _ended(await _open(channel, token, node_id=INGRESS))
    assert error.code() == DENIED
    assert "is for zone 'west'; this gateway serves zone 'default'" in (error.details() or "")
    assert "point the ingress at zone 'west''s xDS address" in (error.details() or "")


async def test_a_zone_token_without_the_ingress_scope_is_permission_denied(
        nc: NATS, plane: Plane) -> None:
    token = await _zone_token(plane, scope=("egress",))
    async with _gateway(nc, plane) as gw, channel_to(gw) as channel:
        with refusals_counted("wrong_scope"):
            error = await _ended(await _open(channel, token, node_id=INGRESS))
    assert error.code() == DENIED
    assert "has scope ['egress'], not ingress" in (error.details() or "")


async def test_an_expired_zone_token_is_unauthenticated(nc: NATS, plane: Plane) -> None:
    token = await _zone_token(plane, valid_for_s=60, issued_ms=now_ms() - 3_600_000)
    async with _gateway(nc, plane) as gw, channel_to(gw) as channel:
        error = await _ended(await _open(channel, token, node_id=INGRESS))
    assert error.code() == UNAUTHENTICATED
    assert (error.details() or "").startswith("expired zone token: the token ")


async def test_a_revoked_zone_token_is_unauthenticated(nc: NATS, plane: Plane) -> None:
    token = await _zone_token(plane)
    await _revoke(plane, token)
    async with _gateway(nc, plane) as gw, channel_to(gw) as channel:
        await eventually(lambda: _revoked(gw), what="the revocation in the view")
        error = await _ended(await _open(channel, token, node_id=INGRESS))
    assert error.code() == UNAUTHENTICATED
    assert "the zone token" in (error.details() or "")
    assert "was revoked" in (error.details() or "")


# --- ended while open -------------------------------------------------------------------------


async def test_a_zone_token_revoked_while_its_stream_is_open_ends_it(nc: NATS, plane: Plane
                                                                     ) -> None:
    token, other = await _zone_token(plane), await _zone_token(plane)
    async with _gateway(nc, plane) as gw, channel_to(gw) as channel:
        client = await _open(channel, token, node_id=INGRESS)
        bystander = await _open(channel, other, node_id=INGRESS)
        await client.recv()
        await bystander.recv()
        await _revoke(plane, token)
        error = await _ended(client)
        assert error.code() == UNAUTHENTICATED
        assert f"the zone token {unverified_claims(token, ZoneClaims).jti} was revoked" == (
            error.details() or "")
        bystander.send(CLUSTER, node_id=INGRESS)  # the other token's stream lives on
        assert (await bystander.recv()).type_url == CLUSTER
        bystander.close()


async def test_a_zone_token_that_expires_ends_its_stream(nc: NATS, plane: Plane) -> None:
    async with _gateway(nc, plane) as gw, channel_to(gw) as channel:
        token = await _zone_token(plane, valid_for_s=3)  # issued once the gateway is up
        client = await _open(channel, token, node_id=INGRESS)
        await client.recv()  # served first: ended by the timer, not refused on open
        error = await _ended(client, within=10)
    assert error.code() == UNAUTHENTICATED
    assert (error.details() or "").startswith("the zone token ")
    assert "expired at" in (error.details() or "")
