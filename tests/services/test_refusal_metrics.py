"""Refusals counted by reason on `/metrics` of a real `meshlog up`: HTTP requests the API
refuses (`meshlog_api_auth_refusals_total`) and xDS streams the gateway refuses or ends for
their token (`meshlog_xds_token_refusals_total`). Each refusal moves its reason's series by
one and no other; no label holds a token, a user's or a proxy's name."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import grpc
import httpx
import pytest

from events.identity import USER_TOKEN, KeyId, read_header, unverified_claims
from events.identity.tokens import (
    DataplaneClaims,
    SigningKey,
    UserClaims,
    generate_key_pair,
    load_private_key,
    user_claims,
)
from tests.harness import ControlPlane, meshlog_up, wait_for
from tests.services._scrape import Samples, scrape
from tests.xds_gateway._ads import AdsClient
from xds_gateway.type_urls import CLUSTER

pytestmark = pytest.mark.integration

API_REFUSALS = "meshlog_api_auth_refusals_total"
XDS_REFUSALS = "meshlog_xds_token_refusals_total"
STRANGER = {"X-Forwarded-For": "192.0.2.7"}
"""Through a proxy, loopback is no admin (services.api.auth): the caller is anonymous."""


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with meshlog_up(tmp_path_factory.mktemp("refusals")) as plane:
        plane.apply({"type": "Mesh", "name": "default"})
        plane.apply({"type": "Mesh", "name": "other"})
        for mesh in ("default", "other"):
            plane.apply({"type": "Dataplane", "mesh": mesh, "name": "backend-1",
                         "networking": {"address": "10.0.0.1", "inbound": [
                             {"port": 8080, "tags": {"kuma.io/service": "backend"}}]}})
        yield plane


def _metrics(cp: ControlPlane) -> Samples:
    return scrape(cp.where["api"] + "/metrics")


def _refusals(samples: Samples, name: str) -> dict[str, float]:
    return {dict(labels)["reason"]: v for (n, labels), v in samples.items() if n == name}


def _moved(cp: ControlPlane, name: str, reason: str, refuse: Callable[[], None]) -> None:
    """`refuse()` moves the series of `reason`, by one, and no other series of `name`."""
    before = _refusals(_metrics(cp), name)
    assert reason in before, f"{name}{{reason={reason!r}}} is not exposed before a refusal"
    refuse()
    after = _refusals(_metrics(cp), name)
    assert {r: after[r] - before[r] for r in before if after[r] != before[r]} == {reason: 1}
    assert set(after) == set(before)  # no new series: reasons are a fixed set


def _user_token(cp: ControlPlane, *groups: str, valid_for: str = "1h") -> str:
    response = cp.api.post("/tokens/user", json={"name": "jane", "groups": list(groups),
                                                 "validFor": valid_for})
    assert response.status_code == 200, response.text
    return response.text


def _forged(cp: ControlPlane, serial: int) -> str:
    """An admin's user token signed with a key of the test's own, under kid `serial`."""
    key = SigningKey(KeyId(purpose=USER_TOKEN, mesh=None, serial=serial),
                     load_private_key(generate_key_pair()[0]))
    return key.sign(user_claims(name="eve", groups=["mesh-system:admin"], valid_for_s=3600,
                                now_s=int(time.time())))


def _status(cp: ControlPlane, status: int, token: str | None = None, *, scheme: str = "Bearer",
            method: str = "GET", path: str = "/meshes") -> Callable[[], None]:
    def request() -> None:
        headers = dict(STRANGER)
        if token is not None:
            headers["Authorization"] = f"{scheme} {token}"
        response = cp.api.request(method, path, headers=headers,
                                  json={"type": "Mesh", "name": "x"} if method == "PUT" else None)
        assert response.status_code == status, response.text

    return request


# --- the API ----------------------------------------------------------------------------------


def test_an_anonymous_write_counts_as_no_token(cp: ControlPlane) -> None:
    _moved(cp, API_REFUSALS, "no_token", _status(cp, 401, method="PUT", path="/meshes/x"))


def test_a_header_that_is_not_bearer_and_a_token_that_is_no_jwt_count_as_malformed(
        cp: ControlPlane) -> None:
    _moved(cp, API_REFUSALS, "malformed", _status(cp, 401, "dXNlcjpwdw==", scheme="Basic"))
    _moved(cp, API_REFUSALS, "malformed", _status(cp, 401, "not-a-jwt"))


def test_a_dataplane_token_on_the_api_counts_as_wrong_kind(cp: ControlPlane) -> None:
    _moved(cp, API_REFUSALS, "wrong_kind", _status(cp, 401, cp.dataplane_token("backend-1")))


def test_a_token_of_an_unknown_key_and_a_forged_one_count_apart(cp: ControlPlane) -> None:
    serial = read_header(_user_token(cp, "ops")).serial
    _moved(cp, API_REFUSALS, "unknown_key", _status(cp, 401, _forged(cp, serial + 1000)))
    # the kid of the key in service, another key's signature
    _moved(cp, API_REFUSALS, "bad_signature", _status(cp, 401, _forged(cp, serial)))


def test_an_expired_user_token_counts_as_expired(cp: ControlPlane) -> None:
    token = _user_token(cp, "ops", valid_for="1s")
    before = _refusals(_metrics(cp), API_REFUSALS)
    # a read with it is answered until it expires: the first 401 is the expiry
    wait_for(lambda: cp.api.get("/meshes", headers={"Authorization": f"Bearer {token}"}
                                ).status_code == 401 or None, timeout=10,
             what="the token to expire")
    after = _refusals(_metrics(cp), API_REFUSALS)
    assert {r: after[r] - before[r] for r in before if after[r] != before[r]} == {"expired": 1}


def test_a_revoked_user_token_counts_as_revoked(cp: ControlPlane) -> None:
    token = _user_token(cp, "ops")
    claims = unverified_claims(token, UserClaims)
    revoked = cp.api.post("/tokens/user/revocations",
                          json={"jti": claims.jti, "expiresAt": claims.exp})
    assert revoked.status_code == 201, revoked.text
    _moved(cp, API_REFUSALS, "revoked", _status(cp, 401, token))


def test_a_user_who_is_not_admin_counts_as_not_admin(cp: ControlPlane) -> None:
    token = _user_token(cp, "ops")
    _moved(cp, API_REFUSALS, "not_admin",
           _status(cp, 403, token, method="POST", path="/tokens/user"))


# --- the xDS gateway --------------------------------------------------------------------------


def _refused_stream(cp: ControlPlane, code: grpc.StatusCode, node_id: str,
                    token: str | None) -> Callable[[], None]:
    """An ADS stream whose first request is refused with `code`."""
    async def open_stream() -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{cp.xds_port}") as channel:
            client = AdsClient(channel, (("authorization", token),) if token else ())
            client.send(CLUSTER, node_id=node_id)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await client.recv(within=10)
            assert refused.value.code() == code, refused.value.details()

    return lambda: asyncio.run(open_stream())


def test_xds_streams_refused_on_open_count_by_reason(cp: ControlPlane) -> None:
    unauthenticated, denied = (grpc.StatusCode.UNAUTHENTICATED,
                               grpc.StatusCode.PERMISSION_DENIED)
    node = "default.backend-1"
    for reason, code, node_id, token in [
        ("no_token", unauthenticated, node, None),
        ("malformed", unauthenticated, node, "garbage"),
        ("wrong_kind", unauthenticated, node, _user_token(cp, "ops")),
        ("wrong_dataplane", denied, "default.frontend-1", cp.dataplane_token("backend-1")),
        ("wrong_mesh", denied, node, cp.dataplane_token("backend-1", mesh="other")),
    ]:
        _moved(cp, XDS_REFUSALS, reason, _refused_stream(cp, code, node_id, token))


def _ended_stream(cp: ControlPlane, token: str, end: Callable[[], object]
                  ) -> Callable[[], None]:
    """An ADS stream served its clusters, then ended UNAUTHENTICATED after `end()`."""
    async def served_then_ended() -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{cp.xds_port}") as channel:
            client = AdsClient(channel, (("authorization", token),))
            client.send(CLUSTER, node_id="default.backend-1")
            client.ack(await client.recv(within=10))
            await asyncio.to_thread(end)
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                while True:  # a push may come first; an expiring token lives 15 s
                    await client.recv(within=30)
            assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED

    return lambda: asyncio.run(served_then_ended())


def test_an_xds_stream_whose_token_is_revoked_counts_as_revoked(cp: ControlPlane) -> None:
    token = cp.dataplane_token("backend-1")
    claims = unverified_claims(token, DataplaneClaims)

    def revoke() -> None:
        response = cp.api.post("/tokens/dataplane/revocations", json={
            "mesh": "default", "jti": claims.jti, "expiresAt": claims.exp})
        assert response.status_code == 201, response.text

    _moved(cp, XDS_REFUSALS, "revoked", _ended_stream(cp, token, revoke))


def test_an_xds_stream_whose_token_expires_counts_as_expired(cp: ControlPlane) -> None:
    token = cp.dataplane_token("backend-1", validFor="15s")
    _moved(cp, XDS_REFUSALS, "expired", _ended_stream(cp, token, lambda: None))


def test_no_refusal_label_holds_a_name_or_a_token(cp: ControlPlane) -> None:
    samples = _metrics(cp)
    for name in (API_REFUSALS, XDS_REFUSALS):
        labels = {k for (n, have), _ in samples.items() if n == name for k, _ in have}
        assert labels == {"reason"}, name
        for reason in _refusals(samples, name):
            assert reason.replace("_", "").isalpha() and len(reason) < 20, reason
    assert httpx.get(cp.where["api"] + "/metrics", timeout=10).text.count("jane") == 0
