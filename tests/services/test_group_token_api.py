"""Dataplane tokens naming no Dataplane, and the `workload` field, through the API (`POST
/tokens/dataplane`, Kuma's request `{name, mesh, tags, type, workload, validFor}`): `name`
empty or left out gives Kuma's token for a group of Dataplanes (or, with neither tags nor
workload, for the whole mesh); a bad `workload` is a violation naming the field."""

from __future__ import annotations

import time

from events import now_ms
from events.identity import DATAPLANE_TOKEN, DataplaneClaims, verify
from services.api.auth import ADMIN_GROUP
from tests.services.test_api_auth import Api, _problem, api, pytestmark

__all__ = ["api", "pytestmark"]  # the fixture and marks, shared with test_api_auth


async def _claims(api: Api, token: str) -> DataplaneClaims:
    key = await api.tokens.signing_key(DATAPLANE_TOKEN, "default", now_ms())
    return verify(token, key.public_key, DataplaneClaims, now_s=time.time())


async def test_a_token_for_every_replica_of_a_service_names_no_dataplane(api: Api) -> None:
    async with api.client(token=await api.user_token(ADMIN_GROUP)) as admin:
        response = await admin.post("/tokens/dataplane", json={
            "mesh": "default", "tags": {"kuma.io/service": ["backend"]}, "workload": "backend",
            "type": "dataplane", "validFor": "720h"})
        assert response.status_code == 200, response.text
        claims = await _claims(api, response.text)
        assert (claims.mesh, claims.name, claims.tags, claims.workload) == (
            "default", "", {"kuma.io/service": ["backend"]}, "backend")
        assert claims.exp - claims.iat == 720 * 3600
        # an empty name is no name too, and a mesh-wide token (Kuma's) is signed
        response = await admin.post("/tokens/dataplane", json={"mesh": "default", "name": ""})
        assert response.status_code == 200, response.text
        claims = await _claims(api, response.text)
        assert (claims.name, claims.tags, claims.workload) == ("", {}, "")


async def test_a_named_token_may_carry_a_workload(api: Api) -> None:
    async with api.client(token=await api.user_token(ADMIN_GROUP)) as admin:
        response = await admin.post("/tokens/dataplane", json={"name": "web-1",
                                                               "workload": "web"})
        assert response.status_code == 200, response.text
    claims = await _claims(api, response.text)
    assert (claims.mesh, claims.name, claims.workload) == ("default", "web-1", "web")


async def test_a_workload_must_be_a_label_value(api: Api) -> None:
    async with api.client(token=await api.user_token(ADMIN_GROUP)) as admin:
        body = _problem(await admin.post("/tokens/dataplane", json={
            "mesh": "default", "workload": "two words", "name": 7}), 400)
    assert body["invalid_parameters"] == [
        {"field": "name", "reason": "7 is not a Dataplane name (lower-case letters, digits, "
                                    "'-' and '.')"},
        {"field": "workload", "reason": "'two words' is not a label value (the Dataplane's "
                                        "kuma.io/workload: up to 253 characters, no spaces)"},
    ]
