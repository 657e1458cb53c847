"""Zone tokens issued on global (Kuma's `kumactl generate zone-token` against global): a real
global and a real zone west, each a `meshlog up` with its own nats-server joined by the
leafnode link. Global signs a zone token for west with its own `zone-token` key (kid
`_global/zone-token/_/1`), which reaches west's log through the sync of global's subjects and
is folded there beside west's own zone-token key; real gRPC ADS streams from a
`_zoneingress.<name>` node on west's gateway are then served with it, and refused with a
token of another zone, an expired one, one global revoked (the revocation synced the same
way), or one whose key global retired. West's own API signs none (Kuma's zone control plane
generates no zone token: 409 naming global's command, the CLI showing it), while a token west
signed with its own key under an earlier release keeps working; global refuses a zone it does
not know, naming it."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import grpc
import pytest

from events import JetStreamEventLog, connect_nats, now_ms
from events.bus.sources import zone_filter
from events.commands import TokenCommands
from events.commands.zones import ZoneCommands
from events.identity import ZONE_TOKEN, SecretKey, ZoneClaims, read_header, unverified_claims
from events.identity.tokens import zone_claims
from events.subjects import signing_keys_filter
from services.runtime.config import SECRET_KEY_FILE
from tests.harness import VENV_BIN, ControlPlane, eventually, global_and_zone
from tests.xds_gateway._ads import AdsClient
from tests.xds_gateway.test_auth import _ended, _open
from xds_gateway.type_urls import CLUSTER

pytestmark = pytest.mark.integration

INGRESS = "_zoneingress.west-ingress"
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED


@pytest.fixture(scope="module")
def planes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ControlPlane,
                                                                        ControlPlane]]:
    with global_and_zone(tmp_path_factory.mktemp("planes"), "west") as both:
        yield both


def _generate(cp: ControlPlane, zone: str, valid_for: str = "1h"
              ) -> subprocess.CompletedProcess[str]:
    """`meshlog generate zone-token` against `cp`'s API (a loopback client is admin)."""
    return subprocess.run([str(VENV_BIN / "meshlog"), "--api", cp.where["api"], "generate",
                           "zone-token", "--zone", zone, "--valid-for", valid_for],
                          capture_output=True, text=True, timeout=60)


def _token(cp: ControlPlane, zone: str, valid_for: str = "1h") -> str:
    response = cp.api.post("/tokens/zone", json={"zone": zone, "scope": ["ingress"],
                                                 "validFor": valid_for})
    assert response.status_code == 200, response.text
    return response.text


@asynccontextmanager
async def _wests_log(west: ControlPlane) -> AsyncIterator[JetStreamEventLog]:
    """West's own event stream, reached as a maintenance command does (its admin user)."""
    nc = await connect_nats(west.where["nats"], name="test", credentials=west.nats_creds)
    try:
        yield await JetStreamEventLog.open(nc, subjects=[zone_filter("west")])
    finally:
        await nc.close()


async def _signed_by_west_before(west: ControlPlane) -> str:
    """A zone token of west signed with west's own `zone-token` key, as west's API did before
    zones stopped signing them: the key is made in west's log (`meshlog.ev.west.signingkey.
    _.zone-token-1`, sealed with west's secret key) and folded there, as in a log written by
    an earlier release."""
    secret = SecretKey.load(west.data_dir / SECRET_KEY_FILE)
    async with _wests_log(west) as event_log:
        key = await TokenCommands(event_log, zone="west", secret_key=secret).signing_key(
            ZONE_TOKEN, None, now_ms())
    return key.sign(zone_claims(zone="west", scope=["ingress"], valid_for_s=3600,
                                now_s=now_ms() // 1000))


async def _wests_zone_token_keys(west: ControlPlane) -> list[str]:
    """The subjects of west's own zone-token keys in its log, as written there."""
    async with _wests_log(west) as event_log:
        records = await event_log.latest(signing_keys_filter(None, "west"))
    return sorted(r.subject for r in records if r.subject.rpartition(".")[2].startswith(
        f"{ZONE_TOKEN}-"))


async def _registered(central: ControlPlane) -> bool:
    return central.api.get("/zones/west").status_code == 200


@asynccontextmanager
async def _channel(west: ControlPlane) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{west.xds_port}") as channel:
        yield channel


async def _served(channel: grpc.aio.Channel, token: str) -> AdsClient | None:
    """An ingress stream served with `token` (its first clusters received), or None while
    west's gateway does not know the token's key yet (global's key is on its way)."""
    client = await _open(channel, token, node_id=INGRESS)
    try:
        response = await client.recv(within=30)
    except grpc.aio.AioRpcError as exc:
        client.close()
        if "unknown to this gateway" in (exc.details() or ""):
            return None
        raise AssertionError(f"refused: {exc.code()} {exc.details()}") from None
    assert response.type_url == CLUSTER
    return client


async def _refused(channel: grpc.aio.Channel, token: str) -> grpc.aio.AioRpcError:
    return await _ended(await _open(channel, token, node_id=INGRESS))


async def _serve(channel: grpc.aio.Channel, token: str) -> AdsClient:
    return await eventually(lambda: _served(channel, token),
                            "an ingress stream served on west", within=60)


async def test_a_zone_token_from_global_opens_wests_ingress_stream(
        planes: tuple[ControlPlane, ControlPlane]) -> None:
    central, west = planes
    await eventually(lambda: _registered(central), "west registered on global", within=60)
    generated = _generate(central, "west")
    assert generated.returncode == 0, generated.stderr
    token = generated.stdout.strip()
    assert str(read_header(token)) == "_global/zone-token/_/1"
    assert unverified_claims(token, ZoneClaims).zone == "west"
    own = await _signed_by_west_before(west)  # west's own key, of an earlier release
    assert str(read_header(own)) == "zone-token/_/1"
    async with _channel(west) as channel:
        (await _serve(channel, token)).close()
        (await _serve(channel, own)).close()
    keys = west.api.get("/tokens/zone/signing-keys").json()["items"]
    # neither signs on west: global's signs on global, west's own no longer signs
    assert {(k["kid"], k["signs"], k.get("issuer")) for k in keys} == {
        ("_global/zone-token/_/1", False, "global"), ("zone-token/_/1", False, None)}
    # on global its own keys sign: its zone-token key, and its user-token key (the admin's)
    listed = {kind: {(k["kid"], k["signs"]) for k in central.api.get(
        f"/tokens/{kind}/signing-keys").json()["items"]} for kind in ("zone", "user")}
    assert listed == {"zone": {("_global/zone-token/_/1", True)},
                      "user": {("user-token/_/1", True)}}


async def test_wests_api_refuses_to_issue_zone_tokens_naming_global(
        planes: tuple[ControlPlane, ControlPlane]) -> None:
    central, west = planes
    keys_before = await _wests_zone_token_keys(west)
    refused = _generate(west, "west")
    assert refused.returncode != 0
    assert refused.stdout == ""
    assert ("zone tokens are issued by the global control plane, not by zone 'west': "
            "generate it there (`meshlog --api <global API> generate zone-token --zone west`, "
            "POST /tokens/zone on global's API)") in refused.stderr
    response = west.api.post("/tokens/zone", json={"zone": "west", "scope": ["ingress"]})
    assert response.status_code == 409, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert ("zone tokens are issued by the global control plane, not by zone 'west'"
            in response.json()["detail"])
    rotated = west.api.post("/tokens/zone/signing-keys", json={})
    assert rotated.status_code == 409, rotated.text
    assert ("rotate global's key there (`meshlog --api <global API> signing-key rotate "
            "zone-token`)") in rotated.json()["detail"]
    # the refusals made no key: zones stopped making one (a release before did, at the first
    # token: _signed_by_west_before)
    assert await _wests_zone_token_keys(west) == keys_before
    # issuance is global's (Kuma's `kumactl generate zone-token` against global)
    await eventually(lambda: _registered(central), "west registered on global", within=60)
    generated = _generate(central, "west")
    assert generated.returncode == 0, generated.stderr
    assert unverified_claims(generated.stdout.strip(), ZoneClaims).zone == "west"


async def test_global_refuses_a_zone_it_does_not_know(
        planes: tuple[ControlPlane, ControlPlane]) -> None:
    central, _ = planes
    await eventually(lambda: _registered(central), "west registered on global", within=60)
    refused = _generate(central, "north")
    assert refused.returncode != 0
    assert "'north' is not a zone registered on global (registered: " in refused.stderr
    response = central.api.post("/tokens/zone", json={"zone": "north"})
    assert response.status_code in (400, 422), response.text
    assert "'north' is not a zone registered on global" in response.text


async def test_a_token_for_another_zone_expired_or_revoked_is_refused_on_west(
        planes: tuple[ControlPlane, ControlPlane]) -> None:
    central, west = planes
    await eventually(lambda: _registered(central), "west registered on global", within=60)
    nc = await connect_nats(central.where["nats"], name="test",
                            credentials=central.nats_creds)
    try:  # east: a zone global knows whose control plane is not running
        await ZoneCommands(await JetStreamEventLog.open(nc)).register("east")
    finally:
        await nc.close()
    east = _token(central, "east")
    revoked = _token(central, "west")
    async with _channel(west) as channel:
        (await _serve(channel, _token(central, "west"))).close()  # global's key is in west
        error = await _refused(channel, east)
        assert error.code() == DENIED
        assert "is for zone 'east'; this gateway serves zone 'west'" in (error.details() or "")

        short = _token(central, "west", valid_for="5s")
        client = await _serve(channel, short)
        error = await _ended(client, within=30)  # served, then ended at its expiry
        assert error.code() == UNAUTHENTICATED
        assert "expired at" in (error.details() or "")
        error = await _refused(channel, short)
        assert error.code() == UNAUTHENTICATED
        assert (error.details() or "").startswith("expired zone token")

        client = await _serve(channel, revoked)
        claims = unverified_claims(revoked, ZoneClaims)
        response = central.api.post("/tokens/zone/revocations",
                                    json={"jti": claims.jti, "expiresAt": claims.exp})
        assert response.status_code == 201, response.text
        error = await _ended(client, within=60)  # global's revocation, synced to west
        assert error.code() == UNAUTHENTICATED
        assert error.details() == f"the zone token {claims.jti} was revoked"
        error = await _refused(channel, revoked)
        assert error.code() == UNAUTHENTICATED
        assert "was revoked" in (error.details() or "")


async def test_globals_retired_key_ends_its_tokens_streams_on_west(
        planes: tuple[ControlPlane, ControlPlane]) -> None:
    central, west = planes
    await eventually(lambda: _registered(central), "west registered on global", within=60)
    old, own = _token(central, "west"), await _signed_by_west_before(west)
    async with _channel(west) as channel:
        client = await _serve(channel, old)
        rotated = central.api.post("/tokens/zone/signing-keys", json={})
        assert rotated.status_code in (200, 201), rotated.text
        serial, old_serial = rotated.json()["serial"], read_header(old).serial
        retired = central.api.delete(f"/tokens/zone/signing-keys/{old_serial}")
        assert retired.status_code == 200, retired.text
        assert retired.json()["kid"] == f"_global/zone-token/_/{old_serial}"
        error = await _ended(client, within=60)
        assert error.code() == UNAUTHENTICATED
        assert "was retired" in (error.details() or "")
        new = _token(central, "west")
        assert str(read_header(new)) == f"_global/zone-token/_/{serial}"
        (await _serve(channel, new)).close()
        (await _serve(channel, own)).close()  # west's own key is not global's

