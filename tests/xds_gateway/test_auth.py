"""Dataplane tokens on xDS (issue 11): real gRPC ADS and HDS streams against an in-process
gateway on a real nats-server, its view filled by the real projector; tokens issued and
revoked through the command path, as the API does.

Refused on open: no token, a garbage one, a token of another control plane, another proxy's,
an expired one, a revoked one (also once its revocation went, an hour after it expired), one
of a retired key, one of a mesh deleted and created again. Ended while open: a token revoked,
a token that expires, a token whose key is retired or whose mesh is deleted, a node id that
changes. Served: the right token, raw or `Bearer`, of the old key and of the new one after a
rotation, and of the new key of a mesh created again."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypeAlias

import grpc
import pytest
from envoy.config.core.v3.base_pb2 import Node
from envoy.service.health.v3.hds_pb2 import (
    HealthCheckRequestOrEndpointHealthResponse,
    HealthCheckSpecifier,
)
from nats.aio.client import Client as NATS

from events import DataplaneRegistered, JetStreamEventLog, decode_resource, now_ms
from events.bus.projection_bus import JetStreamProjectionBus
from events.commands import ClockCommands, Commands, TokenCommands
from events.identity import (
    DATAPLANE_TOKEN,
    REVOCATION_KEPT_AFTER_EXPIRY_MS,
    DataplaneClaims,
    SecretKey,
    read_header,
    unverified_claims,
)
from events.identity.tokens import (
    KeyId,
    SigningKey,
    dataplane_claims,
    generate_key_pair,
    load_private_key,
)
from projections import Projector, ReadModelStore, open_store, rebuild
from services.runtime.xds_certificate import ensure_xds_certificate
from tests.harness import cancel_until_done, eventually
from tests.xds_gateway._ads import AdsClient, DeltaAdsClient
from tests.xds_gateway._gateways import (
    ProxyClient,
    channel_to,
    dataplane_doc,
    last_event,
    refusals_counted,
    running_gateway,
)
from xds_gateway import Gateway
from xds_gateway.server.serving_tls import ServingTls
from xds_gateway.type_urls import CLUSTER

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED
HDS = "/envoy.service.health.v3.HealthDiscoveryService/StreamHealthCheck"
HdsMessage: TypeAlias = HealthCheckRequestOrEndpointHealthResponse


class Plane:
    def __init__(self, event_log: JetStreamEventLog, tokens: TokenCommands,
                 store: ReadModelStore) -> None:
        self.event_log = event_log
        self.tokens = tokens
        self.store = store
        """The projector's read models."""

    async def token(self, name: str = "web-1", *, valid_for_s: int = 3600,
                    issued_ms: int | None = None, tags: dict[str, list[str]] | None = None
                    ) -> str:
        token, _ = await self.tokens.issue_dataplane_token(
            mesh="default", name=name, tags=tags or {}, valid_for_s=valid_for_s,
            now_ms=now_ms() if issued_ms is None else issued_ms)
        return token

    async def revoke(self, token: str) -> None:
        claims = unverified_claims(token, DataplaneClaims)
        await self.tokens.revoke(DATAPLANE_TOKEN, "default", claims.jti,
                                 expires_at_ms=claims.exp * 1000, at=now_ms())


@pytest.fixture
async def plane(nc: NATS, tmp_path: Path) -> AsyncIterator[Plane]:
    """A mesh, web-1 and web-2 registered through the API, the mesh's signing key, and a
    projector publishing it all for gateways."""
    event_log = await JetStreamEventLog.open(nc)
    commands = Commands(event_log, zone="default")
    await commands.apply(decode_resource({"type": "Mesh", "name": "default"}))
    for name in ("web-1", "web-2"):
        await commands.apply(decode_resource(dataplane_doc(name)))
    tokens = TokenCommands(event_log, zone="default", secret_key=SecretKey.generate())
    await tokens.signing_key(DATAPLANE_TOKEN, "default", now_ms())
    store = await open_store(f"sqlite:///{tmp_path / 'rm.db'}")
    projector = asyncio.create_task(Projector(
        event_log, store, await JetStreamProjectionBus.open(nc), zone="default").run())
    try:
        yield Plane(event_log, tokens, store)
    finally:
        await cancel_until_done(projector)
        await store.close()


@contextlib.asynccontextmanager
async def _gateway(nc: NATS, **options: Any) -> AsyncIterator[Gateway]:
    async with running_gateway(nc, no_auth=False, **options) as gw:
        await eventually(lambda: _ready(gw), what="the signing key in the gateway's view")
        yield gw


async def _ready(gw: Gateway) -> bool:
    return ("dataplane-token/default/1" in gw.view.signing_keys
            and ("default", "web-2") in gw.view.dataplanes)


def _auth(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", token),)


async def _ended(client: Any, within: float = 10.0) -> grpc.aio.AioRpcError:
    """The status the server ended the stream with (responses before it are skipped)."""
    deadline = time.monotonic() + within
    try:
        while True:
            try:
                await client.recv(within=max(0.01, deadline - time.monotonic()))
            except grpc.aio.AioRpcError as exc:
                return exc
            except TimeoutError:
                raise AssertionError(f"the stream was not ended within {within}s") from None
    finally:
        client.close()  # the request iterator ends too


async def _open(channel: grpc.aio.Channel, token: str | None, node_id: str = "default.web-1",
                client: type[AdsClient] = AdsClient) -> AdsClient:
    ads = client(channel, _auth(token) if token is not None else ())
    ads.send(CLUSTER, node_id=node_id)
    return ads


# --- refused on open --------------------------------------------------------------------------


async def test_a_stream_without_a_token_is_unauthenticated(nc: NATS, plane: Plane) -> None:
    async with _gateway(nc) as gw, channel_to(gw) as channel:
        error = await _ended(await _open(channel, None))
    assert error.code() == UNAUTHENTICATED
    assert "no dataplane token" in (error.details() or "")
    assert "authorization" in (error.details() or "")


async def test_a_garbage_token_is_unauthenticated(nc: NATS, plane: Plane) -> None:
    async with _gateway(nc) as gw, channel_to(gw) as channel:
        error = await _ended(await _open(channel, "garbage"))
    assert error.code() == UNAUTHENTICATED
    assert error.details() == ("invalid dataplane token: the token is not a JWT "
                               "(header.payload.signature, base64url)")


async def test_a_token_of_another_control_plane_is_unauthenticated(nc: NATS,
                                                                   plane: Plane) -> None:
    """Same kid, another key: a log that was reset, or another control plane's token."""
    private, _ = generate_key_pair()
    forged = SigningKey(KeyId(purpose=DATAPLANE_TOKEN, mesh="default", serial=1),
                        load_private_key(private)).sign(dataplane_claims(
                            mesh="default", name="web-1", tags={}, valid_for_s=60,
                            now_s=int(time.time())))
    async with _gateway(nc) as gw, channel_to(gw) as channel:
        with refusals_counted("bad_signature"):
            error = await _ended(await _open(channel, forged))
    assert error.code() == UNAUTHENTICATED
    assert "signature does not verify" in (error.details() or "")
    assert forged not in (error.details() or "")


async def test_another_proxys_token_is_permission_denied(nc: NATS, plane: Plane) -> None:
    token = await plane.token("web-2")
    async with _gateway(nc) as gw, channel_to(gw) as channel:
        error = await _ended(await _open(channel, token))
    assert error.code() == DENIED
    assert "is for default.web-2, not for node 'default.web-1'" in (error.details() or "")


async def test_an_expired_token_is_unauthenticated(nc: NATS, plane: Plane) -> None:
    token = await plane.token(valid_for_s=60, issued_ms=now_ms() - 3_600_000)
    async with _gateway(nc) as gw, channel_to(gw) as channel:
        with refusals_counted("expired"):
            error = await _ended(await _open(channel, token))
    assert error.code() == UNAUTHENTICATED
    assert (error.details() or "").startswith("expired dataplane token: the token ")


async def test_a_token_of_a_clock_ahead_is_unauthenticated_until_its_nbf(nc: NATS,
                                                                         plane: Plane) -> None:
    token = await plane.token(issued_ms=now_ms() + 3_600_000)  # an issuer an hour ahead
    async with _gateway(nc) as gw, channel_to(gw) as channel:
        with refusals_counted("not_yet_valid"):
            error = await _ended(await _open(channel, token))
    assert error.code() == UNAUTHENTICATED
    assert "is not valid before" in (error.details() or "")


async def test_a_revoked_token_is_unauthenticated(nc: NATS, plane: Plane) -> None:
    token = await plane.token()
    await plane.revoke(token)
    async with _gateway(nc) as gw, channel_to(gw) as channel:
        await eventually(lambda: _has_revocations(gw), what="the revocation in the view")
        error = await _ended(await _open(channel, token))
    assert error.code() == UNAUTHENTICATED
    assert "was revoked" in (error.details() or "")


async def _has_revocations(gw: Gateway) -> bool:
    return bool(gw.view.revocations)


async def test_a_revocation_goes_from_the_view_an_hour_after_its_token_expired(
        nc: NATS, plane: Plane) -> None:
    """The fold drops a revocation at the first event `REVOCATION_KEPT_AFTER_EXPIRY_MS` after
    its token's expiry: on a quiet log, the tick the projector's ticker appends then (here the
    test appends it, as the ticker would, rather than wait an hour). The gateway forgets it,
    and refuses the token all the same, as expired, before and after."""
    token = await plane.token(valid_for_s=60, issued_ms=now_ms() - 120_000)
    claims = unverified_claims(token, DataplaneClaims)
    revocation = ("default", claims.jti)
    async with _gateway(nc) as gw, channel_to(gw) as channel:
        await plane.revoke(token)

        async def held() -> bool:
            return revocation in gw.view.revocations

        await eventually(held, what="the revocation in the view")
        revoked = await _ended(await _open(channel, token))
        await ClockCommands(plane.event_log, zone="default").tick(
            claims.exp * 1000 + REVOCATION_KEPT_AFTER_EXPIRY_MS)

        async def forgotten() -> bool:
            return revocation not in gw.view.revocations

        await eventually(forgotten, what="the revocation gone from the view")
        expired = await _ended(await _open(channel, token))
    for error in (revoked, expired):
        assert error.code() == UNAUTHENTICATED
        assert (error.details() or "").startswith("expired dataplane token: the token ")


async def test_a_user_token_is_no_dataplane_token(nc: NATS, plane: Plane) -> None:
    user_token, _ = await plane.tokens.issue_user_token(name="jane", groups=[],
                                                       valid_for_s=60, now_ms=now_ms())
    async with _gateway(nc) as gw, channel_to(gw) as channel:
        error = await _ended(await _open(channel, user_token))
    assert error.code() == UNAUTHENTICATED
    assert "it is a user-token" in (error.details() or "")


async def test_two_authorization_values_are_refused(nc: NATS, plane: Plane) -> None:
    token = await plane.token()
    async with _gateway(nc) as gw, channel_to(gw) as channel:
        client = AdsClient(channel, (("authorization", token), ("authorization", token)))
        client.send(CLUSTER, node_id="default.web-1")
        error = await _ended(client)
    assert error.code() == UNAUTHENTICATED
    assert "2 `authorization` values" in (error.details() or "")


# --- served -----------------------------------------------------------------------------------


async def test_the_right_token_is_served(nc: NATS, plane: Plane) -> None:
    token = await plane.token()
    async with _gateway(nc) as gw, channel_to(gw) as channel:
        client = await _open(channel, token)
        assert (await client.recv()).type_url == CLUSTER
        client.close()


async def test_a_bearer_token_is_served_on_delta(nc: NATS, plane: Plane) -> None:
    """gRPC call credentials send `Bearer <token>` (gRFC A97)."""
    token = await plane.token()
    async with _gateway(nc) as gw, channel_to(gw) as channel:
        client = DeltaAdsClient(channel, _auth(f"Bearer {token}"))
        client.send(CLUSTER, node_id="default.web-1")
        assert (await client.recv()).type_url == CLUSTER
        client.close()
        unauthenticated = DeltaAdsClient(channel)
        unauthenticated.send(CLUSTER, node_id="default.web-1")
        assert (await _ended(unauthenticated)).code() == UNAUTHENTICATED


async def test_over_tls_call_credentials_carry_the_token_on_ads_delta_and_hds(
        nc: NATS, plane: Plane, tmp_path: Path) -> None:
    """A gateway serving TLS; grpcio clients with composite channel credentials (TLS plus
    the token as call credentials, which grpcio sends as `Bearer <token>` and only over a
    secure channel), as a proxyless client's xDS bootstrap makes them (gRFC A97)."""
    files = ensure_xds_certificate(tmp_path / "cp", ["localhost"])
    token = await plane.token()
    tls = grpc.ssl_channel_credentials(files.ca_file.read_bytes())
    with_token = grpc.composite_channel_credentials(
        tls, grpc.access_token_call_credentials(token))
    async with _gateway(nc, tls=ServingTls(files.cert_file, files.key_file)) as gw:
        async with grpc.aio.secure_channel(f"localhost:{gw.port}", with_token) as channel:
            for client in (AdsClient, DeltaAdsClient):
                served = await _open(channel, None, client=client)
                assert (await served.recv()).type_url == CLUSTER
                served.close()
            hds = _Hds(channel, None)
            assert isinstance(await hds.recv(), HealthCheckSpecifier)
            hds.close()
        async with grpc.aio.secure_channel(f"localhost:{gw.port}", tls) as channel:
            assert (await _ended(await _open(channel, None))).code() == UNAUTHENTICATED


# --- ended while open -------------------------------------------------------------------------


async def test_a_token_revoked_while_its_stream_is_open_ends_it(nc: NATS, plane: Plane) -> None:
    token, other = await plane.token(), await plane.token()
    async with _gateway(nc) as gw, channel_to(gw) as channel:
        client = await _open(channel, token)
        bystander = await _open(channel, other)  # the same proxy, another token: unaffected
        await client.recv()
        await bystander.recv()
        await plane.revoke(token)
        error = await _ended(client)
        assert error.code() == UNAUTHENTICATED
        assert "was revoked" in (error.details() or "")
        bystander.send(CLUSTER, node_id="default.web-1")  # a new subscription: answered
        assert (await bystander.recv()).type_url == CLUSTER
        bystander.close()


async def test_a_token_that_expires_ends_its_stream(nc: NATS, plane: Plane) -> None:
    token = await plane.token(valid_for_s=2)
    async with _gateway(nc) as gw, channel_to(gw) as channel:
        client = await _open(channel, token)
        await client.recv()
        error = await _ended(client, within=10)
    assert error.code() == UNAUTHENTICATED
    assert "expired at" in (error.details() or "")


async def test_a_stream_cannot_change_its_node(nc: NATS, plane: Plane) -> None:
    token = await plane.token()
    async with _gateway(nc) as gw, channel_to(gw) as channel:
        client = await _open(channel, token)
        response = await client.recv()
        client.send(CLUSTER, node_id="default.web-2", version=response.version_info,
                    nonce=response.nonce)
        error = await _ended(client)
    assert error.code() == DENIED
    assert "authenticated for node 'default.web-1'" in (error.details() or "")


# --- HDS --------------------------------------------------------------------------------------


class _Hds:
    def __init__(self, channel: grpc.aio.Channel, token: str | None) -> None:
        self._requests: asyncio.Queue[HdsMessage | None] = asyncio.Queue()
        self.call = channel.stream_stream(
            HDS, request_serializer=HdsMessage.SerializeToString,
            response_deserializer=HealthCheckSpecifier.FromString,
        )(self._iterate(), metadata=_auth(token) if token is not None else None)
        hello = HdsMessage()
        hello.health_check_request.node.CopyFrom(Node(id="default.web-1"))
        self._requests.put_nowait(hello)

    async def _iterate(self) -> AsyncIterator[HdsMessage]:
        while (message := await self._requests.get()) is not None:
            yield message

    async def recv(self, within: float = 5.0) -> HealthCheckSpecifier:
        return await asyncio.wait_for(self.call.read(), within)

    def close(self) -> None:
        self._requests.put_nowait(None)


async def test_hds_streams_are_authenticated_too(nc: NATS, plane: Plane) -> None:
    token = await plane.token()
    async with _gateway(nc) as gw, channel_to(gw) as channel:
        error = await _ended(_Hds(channel, None))
        assert error.code() == UNAUTHENTICATED
        served = _Hds(channel, token)
        assert isinstance(await served.recv(), HealthCheckSpecifier)
        await plane.revoke(token)
        error = await _ended(served)
        assert error.code() == UNAUTHENTICATED
        assert "was revoked" in (error.details() or "")


# --- self-registration ------------------------------------------------------------------------


async def _registered(event_log: JetStreamEventLog, name: str) -> Any:
    got = await last_event(event_log, name)
    return got if got and isinstance(got[0], DataplaneRegistered) else None


async def test_self_registration_needs_a_token(nc: NATS, plane: Plane) -> None:
    async with _gateway(nc) as gw, channel_to(gw) as channel:
        client = ProxyClient(channel)
        client.hello(CLUSTER, "default.web-3", dataplane=dataplane_doc("web-3"))
        error = await _ended(client)
        assert error.code() == UNAUTHENTICATED
        assert await _registered(plane.event_log, "web-3") is None

        client = ProxyClient(channel, _auth(await plane.token("web-3")))
        client.hello(CLUSTER, "default.web-3", dataplane=dataplane_doc("web-3"))
        await client.recv()
        event, _ = await eventually(lambda: _registered(plane.event_log, "web-3"),
                                    what="web-3 registered")
        assert event.origin == "proxy"
        client.close()


async def test_self_registration_needs_a_token_that_names_the_dataplane(
        nc: NATS, plane: Plane) -> None:
    async with _gateway(nc) as gw, channel_to(gw) as channel:
        client = ProxyClient(channel, _auth(await plane.token("web-1")))
        client.hello(CLUSTER, "default.web-3", dataplane=dataplane_doc("web-3"))
        error = await _ended(client)
    assert error.code() == DENIED
    assert await _registered(plane.event_log, "web-3") is None


async def test_token_tags_must_be_on_the_dataplane_it_registers(nc: NATS, plane: Plane) -> None:
    wrong = await plane.token("web-3", tags={"kuma.io/service": ["db"]})
    right = await plane.token("web-3", tags={"kuma.io/service": ["web"]})
    async with _gateway(nc) as gw, channel_to(gw) as channel:
        client = ProxyClient(channel, _auth(wrong))
        client.hello(CLUSTER, "default.web-3", dataplane=dataplane_doc("web-3"))
        with refusals_counted("tags_not_allowed"):
            error = await _ended(client)
        assert error.code() == DENIED
        assert ("does not allow Dataplane default.web-3: its tag 'kuma.io/service' has the "
                "value 'web'; the token allows ['db']") in (error.details() or "")
        assert await _registered(plane.event_log, "web-3") is None

        client = ProxyClient(channel, _auth(right))
        client.hello(CLUSTER, "default.web-3", dataplane=dataplane_doc("web-3"))
        await client.recv()
        await eventually(lambda: _registered(plane.event_log, "web-3"), what="web-3 registered")
        client.close()


# --- signing key rotation -----------------------------------------------------------------------


async def _has_key(gw: Gateway, kid: str) -> bool:
    return kid in gw.view.signing_keys


async def _rotated_and_retired(gw: Gateway) -> bool:
    return set(gw.view.signing_keys) == {"dataplane-token/default/2"}


async def test_a_rotated_key_serves_old_and_new_tokens_until_the_old_one_is_retired(
        nc: NATS, plane: Plane) -> None:
    old = await plane.token()
    rotated = await plane.tokens.rotate_signing_key(DATAPLANE_TOKEN, "default", now_ms())
    assert str(rotated.kid) == "dataplane-token/default/2"
    new = await plane.token()
    assert str(read_header(new)) == "dataplane-token/default/2"
    async with _gateway(nc) as gw, channel_to(gw) as channel:
        await eventually(lambda: _has_key(gw, "dataplane-token/default/2"),
                         what="the new key in the gateway's view")
        old_stream, new_stream = await _open(channel, old), await _open(channel, new)
        assert (await old_stream.recv()).type_url == CLUSTER  # both serials verify
        assert (await new_stream.recv()).type_url == CLUSTER

        with refusals_counted("unknown_key", times=2):  # ended, then refused
            await plane.tokens.retire_signing_key(DATAPLANE_TOKEN, "default", 1, now_ms())
            error = await _ended(old_stream)  # its open stream ends
            refused = await _ended(await _open(channel, old))  # and it opens no other
        assert error.code() == UNAUTHENTICATED
        assert (error.details() or "") == ("the signing key dataplane-token/default/1 of its "
                                           f"token {unverified_claims(old, DataplaneClaims).jti}"
                                           " was retired (or went with its mesh)")
        assert refused.code() == UNAUTHENTICATED
        assert "its signing key dataplane-token/default/1 is unknown to this gateway (a " \
               "retired key" in (refused.details() or "")
        new_stream.send(CLUSTER, node_id="default.web-1")  # the new token's stream lives on
        assert (await new_stream.recv()).type_url == CLUSTER
        new_stream.close()


async def test_a_gateway_started_after_a_retirement_refuses_the_old_tokens(
        nc: NATS, plane: Plane) -> None:
    old = await plane.token()
    await plane.tokens.rotate_signing_key(DATAPLANE_TOKEN, "default", now_ms())
    await plane.tokens.retire_signing_key(DATAPLANE_TOKEN, "default", 1, now_ms())
    new = await plane.token()
    async with running_gateway(nc, no_auth=False) as gw, channel_to(gw) as channel:
        await eventually(lambda: _rotated_and_retired(gw),
                         what="serial 2 alone in the gateway's view")
        assert (await _ended(await _open(channel, old))).code() == UNAUTHENTICATED
        served = await _open(channel, new)
        assert (await served.recv()).type_url == CLUSTER
        served.close()


async def test_a_mesh_deleted_and_created_again_refuses_its_earlier_tokens(
        nc: NATS, plane: Plane, tmp_path: Path) -> None:
    """Kuma deletes a mesh's signing keys with the mesh: the open stream of a token of the
    mesh ends with it, and once a Mesh of that name is created again the token opens no
    stream, while a token the new mesh's key signs does. A replay gives the same rows."""
    old = await plane.token()
    commands = Commands(plane.event_log, zone="default")
    async with _gateway(nc) as gw, channel_to(gw) as channel:
        stream = await _open(channel, old)
        assert (await stream.recv()).type_url == CLUSTER
        for name in ("web-1", "web-2"):
            await commands.delete("Dataplane", "default", name)
        await commands.delete("Mesh", None, "default")
        error = await _ended(stream)
        assert error.code() == UNAUTHENTICATED
        assert (error.details() or "") == (
            "the signing key dataplane-token/default/1 of its token "
            f"{unverified_claims(old, DataplaneClaims).jti} was retired (or went with its mesh)")

        await commands.apply(decode_resource({"type": "Mesh", "name": "default"}))
        await commands.apply(decode_resource(dataplane_doc("web-1")))
        new = await plane.token()
        assert str(read_header(new)) == "dataplane-token/default/2"
        await eventually(lambda: _has_key(gw, "dataplane-token/default/2"),
                         what="the new mesh's key in the gateway's view")
        assert "dataplane-token/default/1" not in gw.view.signing_keys
        refused = await _ended(await _open(channel, old))
        assert refused.code() == UNAUTHENTICATED
        assert ("its signing key dataplane-token/default/1 is unknown to this gateway (a "
                "retired key or one that went with its deleted mesh") in (refused.details() or "")
        served = await _open(channel, new)
        assert (await served.recv()).type_url == CLUSTER
        served.close()

    last = await plane.event_log.last_seq()

    async def folded() -> bool:
        return await plane.store.checkpoint("main") == last

    await eventually(folded, what="the projector to fold the whole log")
    replayed = await open_store(f"sqlite:///{tmp_path / 'replay.db'}")
    try:
        assert await rebuild(plane.event_log, replayed, zone="default") == last
        assert await replayed.rows() == await plane.store.rows()
        keys = [key for collection, key, _ in await replayed.rows() if collection == "signingkey"]
        assert keys == ["default/dataplane-token-2"]
    finally:
        await replayed.close()
