"""API authentication and authorization (issue 11), in process on a real nats-server with the
real projector: requests go through the ASGI app with the client address a test chooses, so
both a stranger on the network and a loopback client are real cases of the same code.

Reads are open; writes need a user token (or a loopback client, unless that is turned off);
`_config`, tokens, revocations and signing keys need admin. Refusals are RFC 7807: 401 with
`WWW-Authenticate: Bearer`, 403. A rotated user-token key signs the next tokens while the old
ones work; once the old serial is retired, its tokens are refused from the next request on."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from nats.aio.client import Client as NATS

from events import JetStreamEventLog, now_ms
from events.bus.projection_bus import JetStreamProjectionBus
from events.commands import Commands, TokenCommands
from events.identity import (
    DATAPLANE_TOKEN,
    DataplaneClaims,
    SecretKey,
    UserClaims,
    read_header,
    unverified_claims,
    verify,
)
from projections import Projector, open_store
from services.api.app import create_app
from services.api.auth import ADMIN_GROUP, ApiAuth
from tests.harness import cancel_until_done, eventually

pytestmark = [
    pytest.mark.integration,
    # services/api.py's list routes use litestar's inferred query style; not this test's topic
    pytest.mark.filterwarnings("ignore::litestar.exceptions.LitestarDeprecationWarning"),
]

STRANGER = ("192.0.2.7", 40000)
LOOPBACK = ("127.0.0.1", 40000)
MESH = {"type": "Mesh", "name": "other"}


class Api:
    def __init__(self, app: Any, tokens: TokenCommands) -> None:
        self.app = app
        self.tokens = tokens

    def client(self, address: tuple[str, int] = STRANGER, token: str | None = None,
               **headers: str) -> httpx.AsyncClient:
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app, client=address),
                                 base_url="http://api", headers=headers)

    async def user_token(self, *groups: str, valid_for_s: int = 3600,
                         issued_ms: int | None = None) -> str:
        token, _ = await self.tokens.issue_user_token(
            name="jane", groups=list(groups), valid_for_s=valid_for_s,
            now_ms=now_ms() if issued_ms is None else issued_ms)
        return token


@contextlib.asynccontextmanager
async def _api(nc: NATS, tmp_path: Path, *, localhost_is_admin: bool = True
               ) -> AsyncIterator[Api]:
    event_log = await JetStreamEventLog.open(nc)
    db = f"sqlite:///{tmp_path / f'rm-{localhost_is_admin}.db'}"
    writer, reader = await open_store(db), await open_store(db)
    tokens = TokenCommands(event_log, zone="default", secret_key=SecretKey.generate())
    app = create_app(Commands(event_log, zone="default"), reader,
                     auth=ApiAuth(localhost_is_admin=localhost_is_admin, tokens=tokens))
    projector = asyncio.create_task(Projector(event_log, writer,
                                              await JetStreamProjectionBus.open(nc),
                                              zone="default").run())
    try:
        yield Api(app, tokens)
    finally:
        await cancel_until_done(projector)
        await reader.close()
        await writer.close()


@pytest.fixture
async def api(nc: NATS, tmp_path: Path) -> AsyncIterator[Api]:
    async with _api(nc, tmp_path) as a:
        async with a.client(LOOPBACK) as local:
            assert (await local.put("/meshes/default", json={"type": "Mesh", "name": "default"})
                    ).status_code == 201
        yield a


def _problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert (body["status"], body["type"]) == (status, "about:blank")
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")
    return body


# --- a stranger on the network ----------------------------------------------------------------


async def test_a_stranger_reads_but_cannot_write(api: Api) -> None:
    async with api.client() as stranger:
        assert (await stranger.get("/meshes")).status_code == 200
        assert (await stranger.get("/meshes/default")).status_code == 200
        body = _problem(await stranger.put("/meshes/other", json=MESH), 401)
        assert body["title"] == "Unauthorized"
        assert body["detail"].startswith("PUT /meshes/other needs an authenticated user")
        _problem(await stranger.delete("/meshes/default"), 401)
        assert (await stranger.get("/meshes/other")).status_code == 404  # nothing written


async def test_a_user_token_may_write(api: Api) -> None:
    async with api.client(token=await api.user_token("team-a")) as user:
        assert (await user.put("/meshes/other", json=MESH)).status_code == 201


async def test_a_non_admin_gets_403_for_config_and_tokens(api: Api) -> None:
    async with api.client(token=await api.user_token("team-a")) as user:
        body = _problem(await user.get("/meshes/default/dataplanes/web-1/_config"), 403)
        assert body["detail"] == ("user 'jane' (groups mesh-system:authenticated, team-a) may "
                                  "not GET /meshes/default/dataplanes/web-1/_config: it needs "
                                  "group mesh-system:admin")
        for path, doc in (("/tokens/dataplane", {"name": "web-1"}),
                          ("/tokens/user", {"name": "joe"}),
                          ("/tokens/user/revocations", {"jti": "x"}),
                          ("/_quarantine/skips", {"seq": 1, "reason": "x"})):
            assert "needs group mesh-system:admin" in _problem(
                await user.post(path, json=doc), 403)["detail"]
        _problem(await user.post("/_admin/read-models", json={"database": "x"}), 403)


async def test_a_stranger_gets_401_for_admin_routes(api: Api) -> None:
    async with api.client() as stranger:
        body = _problem(await stranger.post("/tokens/dataplane", json={"name": "web-1"}), 401)
        assert body["detail"].startswith("POST /tokens/dataplane needs group mesh-system:admin")
        _problem(await stranger.get("/meshes/default/dataplanes/web-1/_config"), 401)


async def test_an_admin_token_generates_tokens(api: Api) -> None:
    async with api.client(token=await api.user_token(ADMIN_GROUP)) as admin:
        response = await admin.post("/tokens/dataplane", json={
            "mesh": "default", "name": "web-1", "tags": {"kuma.io/service": ["web"]},
            "validFor": "1h"})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/plain")
        key = await api.tokens.signing_key(DATAPLANE_TOKEN, "default", now_ms())
        claims = verify(response.text, key.public_key, DataplaneClaims, now_s=time.time())
        assert (claims.mesh, claims.name, claims.tags) == ("default", "web-1",
                                                           {"kuma.io/service": ["web"]})
        assert claims.exp - claims.iat == 3600

        user = await admin.post("/tokens/user", json={"name": "joe", "groups": ["ops"]})
        assert user.status_code == 200
        assert unverified_claims(user.text, UserClaims).groups == ["ops"]
        assert (unverified_claims(user.text, UserClaims).exp
                - unverified_claims(user.text, UserClaims).iat) == 24 * 3600  # the default
        config = await admin.get("/meshes/default/dataplanes/web-1/_config")
        assert config.status_code not in (401, 403)  # past the guard (no such Dataplane)


async def test_token_requests_list_every_violation(api: Api) -> None:
    async with api.client(token=await api.user_token(ADMIN_GROUP)) as admin:
        body = _problem(await admin.post("/tokens/dataplane", json={
            "name": "Web_1", "mesh": "default", "tags": {"kuma.io/service": "web"},
            "validFor": "3d", "colour": "blue"}), 400)
        assert body["invalid_parameters"] == [
            {"field": "colour", "reason": "unknown field (expected mesh, name, tags, type, "
                                          "validFor, workload)"},
            {"field": "name", "reason": "'Web_1' is not a Dataplane name (lower-case "
                                        "letters, digits, '-' and '.')"},
            {"field": "tags['kuma.io/service']", "reason": "'web' is not a list of non-empty "
                                                           "strings"},
            {"field": "validFor", "reason": "'3d' is not a duration (e.g. 24h, 30m, 1h30m, "
                                            "8760h)"},
        ]
        missing = _problem(await admin.post("/tokens/dataplane", json={"mesh": "nope",
                                                                       "name": "x"}), 404)
        assert missing["detail"] == "mesh 'nope' does not exist: create it before its tokens"


# --- what a token may be ----------------------------------------------------------------------


async def test_a_bad_token_is_401_even_for_a_read(api: Api) -> None:
    async with api.client(token="garbage") as client:
        body = _problem(await client.get("/meshes"), 401)
    assert body["detail"] == ("invalid user token: the token is not a JWT "
                              "(header.payload.signature, base64url)")


async def test_an_authorization_header_that_is_not_bearer_is_401(api: Api) -> None:
    async with api.client(Authorization="Basic amFuZTpwdw==") as client:
        body = _problem(await client.get("/meshes"), 401)
    assert body["detail"] == "the Authorization header is not `Bearer <user token>`"


async def test_an_expired_user_token_is_401(api: Api) -> None:
    expired = await api.user_token(valid_for_s=60, issued_ms=now_ms() - 3_600_000)
    async with api.client(token=expired) as client:
        assert _problem(await client.put("/meshes/other", json=MESH), 401)["detail"].startswith(
            "expired user token: the token ")


async def test_a_dataplane_token_is_no_user_token(api: Api) -> None:
    token, _ = await api.tokens.issue_dataplane_token(mesh="default", name="web-1", tags={},
                                                      valid_for_s=60, now_ms=now_ms())
    async with api.client(token=token) as client:
        assert "it is a dataplane-token" in _problem(await client.get("/meshes"), 401)["detail"]


async def test_a_revoked_user_token_is_refused_at_once(api: Api) -> None:
    token = await api.user_token("team-a")
    async with api.client(token=token) as user, \
            api.client(token=await api.user_token(ADMIN_GROUP)) as admin:
        assert (await user.put("/meshes/other", json=MESH)).status_code == 201
        claims = unverified_claims(token, UserClaims)
        revoked = await admin.post("/tokens/user/revocations",
                                   json={"jti": claims.jti, "expiresAt": claims.exp})
        assert revoked.status_code == 201, revoked.text
        assert revoked.json()["unchanged"] is False
        again = await admin.post("/tokens/user/revocations", json={"jti": claims.jti})
        assert again.status_code == 200 and again.json()["unchanged"] is True
        body = _problem(await user.get("/meshes"), 401)  # the very next request
        assert body["detail"] == f"the user token {claims.jti} was revoked"


# --- loopback ---------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"])
async def test_loopback_is_admin_by_default(api: Api, host: str) -> None:
    async with api.client((host, 40000)) as local:
        response = await local.post("/tokens/user", json={"name": "joe"})
        assert response.status_code == 200, response.text


async def test_loopback_behind_a_proxy_is_a_stranger(api: Api) -> None:
    """A reverse proxy on the same machine says so in a header: its clients are not local."""
    async with api.client(LOOPBACK, **{"X-Forwarded-For": "203.0.113.9"}) as proxied:
        _problem(await proxied.post("/tokens/user", json={"name": "joe"}), 401)
        _problem(await proxied.put("/meshes/other", json=MESH), 401)


async def test_loopback_admin_can_be_turned_off(nc: NATS, tmp_path: Path) -> None:
    async with _api(nc, tmp_path, localhost_is_admin=False) as api:
        async with api.client(LOOPBACK) as local:
            _problem(await local.put("/meshes/default", json={"type": "Mesh",
                                                              "name": "default"}), 401)
            assert (await local.get("/meshes")).status_code == 200
        async with api.client(LOOPBACK, token=await api.user_token(ADMIN_GROUP)) as admin:
            assert (await admin.post("/tokens/user", json={"name": "joe"})).status_code == 200


# --- signing keys: rotate, retire -------------------------------------------------------------


async def test_a_rotated_user_key_signs_new_tokens_and_the_old_ones_work_until_retired(
        api: Api) -> None:
    old = await api.user_token("team-a")  # serial 1, made when the API's tokens first signed
    async with api.client(token=await api.user_token(ADMIN_GROUP)) as admin_1, \
            api.client(token=old) as old_user:
        rotated = await admin_1.post("/tokens/user/signing-keys")
        assert rotated.status_code == 201, rotated.text
        assert {k: rotated.json()[k] for k in ("kid", "serial", "unchanged")} == {
            "kid": "user-token/_/2", "serial": 2, "unchanged": False}
        new = await api.user_token("team-a")
        assert str(read_header(new)) == "user-token/_/2"
        async with api.client(token=new) as new_user:
            assert (await old_user.get("/meshes")).status_code == 200  # still verifies
            assert (await new_user.put("/meshes/other", json=MESH)).status_code == 201
            listed = (await admin_1.get("/tokens/user/signing-keys")).json()
            assert [(k["kid"], k["signs"]) for k in listed["items"]] == [
                ("user-token/_/1", False), ("user-token/_/2", True)]

            retired = await admin_1.delete("/tokens/user/signing-keys/1")
            assert retired.status_code == 200, retired.text
            assert retired.json()["unchanged"] is False
            body = _problem(await old_user.get("/meshes"), 401)  # the very next request
            assert body["detail"] == ("invalid user token: its signing key user-token/_/1 is "
                                      "not one of this control plane's (retired, or of "
                                      "another control plane)")
            assert (await new_user.get("/meshes")).status_code == 200
            _problem(await admin_1.get("/meshes"), 401)  # an admin token of serial 1 too
        async with api.client(token=await api.user_token(ADMIN_GROUP)) as admin_2:
            again = await admin_2.delete("/tokens/user/signing-keys/1")
            assert again.status_code == 200 and again.json()["unchanged"] is True
            assert [k["kid"] for k in (await admin_2.get("/tokens/user/signing-keys")
                                       ).json()["items"]] == ["user-token/_/2"]


async def test_the_newest_key_cannot_be_retired_and_an_unknown_serial_is_404(api: Api) -> None:
    async with api.client(token=await api.user_token(ADMIN_GROUP)) as admin:
        newest = _problem(await admin.delete("/tokens/user/signing-keys/1"), 409)
        assert newest["detail"].startswith("signing key user-token/_/1 is the newest of the "
                                           "user-token keys: it signs every new token")
        unknown = _problem(await admin.delete("/tokens/user/signing-keys/9"), 404)
        assert unknown["detail"] == ("signing key user-token/_/9 does not exist (the serials "
                                     "of the user-token keys: 1)")
        invalid = _problem(await admin.delete("/tokens/user/signing-keys/x"), 400)
        assert invalid["invalid_parameters"] == [
            {"field": "serial", "reason": "'x' is not a key serial (1, 2, ...)"}]
        assert "no tokens of kind 'api'" in _problem(
            await admin.post("/tokens/api/signing-keys"), 404)["detail"]


async def test_a_dataplane_key_is_rotated_and_retired_per_mesh(api: Api) -> None:
    async with api.client(token=await api.user_token(ADMIN_GROUP)) as admin:
        first = await admin.post("/tokens/dataplane/signing-keys", json={"mesh": "default"})
        assert (first.status_code, first.json()["kid"]) == (201, "dataplane-token/default/1")
        second = await admin.post("/tokens/dataplane/signing-keys", json={})  # default mesh
        assert second.json()["kid"] == "dataplane-token/default/2"
        token, _ = await api.tokens.issue_dataplane_token(mesh="default", name="web-1", tags={},
                                                          valid_for_s=60, now_ms=now_ms())
        assert str(read_header(token)) == "dataplane-token/default/2"
        missing = _problem(await admin.post("/tokens/dataplane/signing-keys",
                                            json={"mesh": "nope"}), 404)
        assert missing["detail"].startswith("mesh 'nope' does not exist")
        assert (await admin.delete("/tokens/dataplane/signing-keys/1?mesh=default")
                ).status_code == 200
        listed = (await admin.get("/tokens/dataplane/signing-keys?mesh=default")).json()
        assert [(k["kid"], k["mesh"], k["signs"]) for k in listed["items"]] == [
            ("dataplane-token/default/2", "default", True)]


async def test_a_mesh_deleted_and_created_again_has_a_new_dataplane_key(api: Api) -> None:
    """Kuma deletes a mesh's signing keys with the mesh: the API lists none of the earlier
    life's, cannot retire them, and the first token of the new mesh makes the next serial.
    (The API takes no dataplane token itself: gateways refuse the old ones,
    tests/xds_gateway/test_auth.py.)"""
    listing = "/tokens/dataplane/signing-keys?mesh=default"
    async with api.client(token=await api.user_token(ADMIN_GROUP)) as admin:

        async def listed(kids: list[tuple[str, bool]]) -> bool:
            items = (await admin.get(listing)).json()["items"]
            return [(k["kid"], k["signs"]) for k in items] == kids

        old = await admin.post("/tokens/dataplane", json={"mesh": "default", "name": "web-1"})
        assert str(read_header(old.text)) == "dataplane-token/default/1"
        await eventually(lambda: listed([("dataplane-token/default/1", True)]),
                         what="serial 1 listed")
        assert (await admin.delete("/meshes/default")).status_code == 200
        await eventually(lambda: listed([]), what="no key of the deleted mesh listed")
        gone = _problem(await admin.delete("/tokens/dataplane/signing-keys/1?mesh=default"), 404)
        assert gone["detail"] == ("mesh 'default' does not exist: the signing keys of a "
                                  "deleted mesh went with it")

        assert (await admin.put("/meshes/default", json={"type": "Mesh", "name": "default"})
                ).status_code == 201
        new = await admin.post("/tokens/dataplane", json={"mesh": "default", "name": "web-1"})
        assert str(read_header(new.text)) == "dataplane-token/default/2"
        await eventually(lambda: listed([("dataplane-token/default/2", True)]),
                         what="the new mesh's key listed alone")
        earlier = _problem(await admin.delete("/tokens/dataplane/signing-keys/1?mesh=default"),
                           404)
        assert earlier["detail"] == (
            "signing key dataplane-token/default/1 does not exist (the serials of the "
            "dataplane-token keys of mesh default: 2); it went with mesh default, deleted "
            "since it was created")


async def test_only_an_admin_rotates_or_retires(api: Api) -> None:
    async with api.client(token=await api.user_token("team-a")) as user, \
            api.client() as stranger:
        for client, status in ((user, 403), (stranger, 401)):
            _problem(await client.post("/tokens/user/signing-keys"), status)
            _problem(await client.delete("/tokens/user/signing-keys/1"), status)
            _problem(await client.get("/tokens/user/signing-keys"), status)
