"""Zone tokens through the API (`POST /tokens/zone`, `/tokens/zone/revocations`): admin
only, Kuma's request shape, the zone must be the API's own on a standalone control plane
(global's API signs for its registered zones: tests/events/test_global_zone_tokens.py; a zone
of a multi-zone deployment signs none: tests/integration/test_multizone_zone_tokens.py), every
violation listed."""

from __future__ import annotations

import time

from events import now_ms
from events.identity import ZONE_TOKEN, ZoneClaims, unverified_claims, verify
from services.api.auth import ADMIN_GROUP
from tests.services.test_api_auth import Api, _problem, api, pytestmark

__all__ = ["api", "pytestmark"]  # the fixture and marks, shared with test_api_auth


async def test_an_admin_generates_a_zone_token_for_the_apis_zone(api: Api) -> None:
    async with api.client(token=await api.user_token(ADMIN_GROUP)) as admin:
        response = await admin.post("/tokens/zone", json={"zone": "default",
                                                          "validFor": "2h"})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/plain")
    key = await api.tokens.signing_key(ZONE_TOKEN, None, now_ms())
    claims = verify(response.text, key.public_key, ZoneClaims, now_s=time.time())
    assert (claims.zone, claims.scope, claims.exp - claims.iat) == ("default", ["ingress"],
                                                                    7200)


async def test_a_zone_token_request_lists_every_violation(api: Api) -> None:
    async with api.client(token=await api.user_token(ADMIN_GROUP)) as admin:
        body = _problem(await admin.post("/tokens/zone", json={
            "scope": "ingress", "validFor": "3d", "name": "x"}), 400)
        assert body["invalid_parameters"] == [
            {"field": "name", "reason": "unknown field (expected scope, validFor, zone)"},
            {"field": "zone", "reason": "is required"},
            {"field": "scope", "reason": "'ingress' is not a list of non-empty strings"},
            {"field": "validFor", "reason": "'3d' is not a duration (e.g. 24h, 30m, 1h30m, "
                                            "8760h)"},
        ]
        other = _problem(await admin.post("/tokens/zone", json={"zone": "west"}), 400)
        assert other["invalid_parameters"] == [{"field": "zone", "reason": (
            "'west' is not this control plane's zone ('default'): a standalone control plane "
            "signs zone tokens of its own zone only (in a multi-zone deployment, global's API "
            "signs them for every registered zone)")}]


async def test_zone_tokens_are_admin_only(api: Api) -> None:
    async with api.client(token=await api.user_token("team-a")) as user, \
            api.client() as stranger:
        assert "needs group mesh-system:admin" in _problem(await user.post(
            "/tokens/zone", json={"zone": "default"}), 403)["detail"]
        _problem(await stranger.post("/tokens/zone/revocations", json={"jti": "x"}), 401)


async def test_an_admin_revokes_a_zone_token_once(api: Api) -> None:
    async with api.client(token=await api.user_token(ADMIN_GROUP)) as admin:
        token = (await admin.post("/tokens/zone", json={"zone": "default"})).text
        claims = unverified_claims(token, ZoneClaims)
        body = {"jti": claims.jti, "expiresAt": claims.exp}
        first = await admin.post("/tokens/zone/revocations", json=body)
        again = await admin.post("/tokens/zone/revocations", json=body)
    assert (first.status_code, first.json()["unchanged"]) == (201, False), first.text
    assert (again.status_code, again.json()["unchanged"]) == (200, True)
    assert await api.tokens.is_revoked(None, claims.jti)
