"""The API's access log (services.api.access_log) in the log of a real `meshlog up`: one
line per request with its status, route, caller and refusal reason, never a token, a body or
an Idempotency-Key; `--api-access-log=false` turns it off. `X-Forwarded-For` and the trace id
over a real socket of an `ApiServer` in this process."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar.types import Receive, Scope, Send

from events.identity import USER_TOKEN, KeyId, read_header
from events.identity.tokens import SigningKey, generate_key_pair, load_private_key, user_claims
from services.api.access_log import ACCESS_LOGGER, MAX_PATH
from services.api.tracing import RequestTracing
from services.runtime.api_server import ApiServer
from services.runtime.up import bind_socket
from tests.harness import ControlPlane, meshlog_up, wait_for
from tests.services._api_harness import serve_until_answered
from tests.tracing import in_memory_tracing, spans_named

_MARK = f" {ACCESS_LOGGER}: "
_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')

Line = dict[str, str]


def _parse(message: str) -> Line:
    """A logfmt line: `key=value`, a value with other characters a JSON string."""
    fields = {key: json.loads(value) if value.startswith('"') else value
              for key, value in _FIELD.findall(message)}
    assert " ".join(f"{k}={v}" for k, v in _FIELD.findall(message)) == message, message
    return fields


def _log(cp: ControlPlane) -> str:
    return (cp.data_dir / "up.log").read_text(errors="replace")


def _lines(cp: ControlPlane) -> list[Line]:
    return [_parse(line.partition(_MARK)[2]) for line in _log(cp).splitlines() if _MARK in line]


def _line_of(cp: ControlPlane, request_id: str) -> Line:
    """The access log's line of the request sent with `X-Request-Id: request_id`."""
    def logged() -> Line | None:
        found = [line for line in _lines(cp) if line.get("request_id") == request_id]
        assert len(found) <= 1, found
        return found[0] if found else None

    return wait_for(logged, timeout=10, what=f"the access log line of {request_id}")


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with meshlog_up(tmp_path_factory.mktemp("access-log")) as plane:
        plane.apply({"type": "Mesh", "name": "default"})
        yield plane


def _user_token(cp: ControlPlane, *groups: str) -> str:
    response = cp.api.post("/tokens/user", json={"name": "jane", "groups": list(groups),
                                                 "validFor": "1h"})
    assert response.status_code == 200, response.text
    return response.text


def _assert_nowhere(cp: ControlPlane, token: str) -> None:
    """No part of `token` (header, claims, signature) is anywhere in the process's log."""
    log = _log(cp)
    for part in token.split("."):
        assert part not in log


@pytest.mark.integration
def test_a_success_is_one_line_with_its_route_status_and_caller(cp: ControlPlane) -> None:
    response = cp.api.get("/meshes/default", headers={"X-Request-Id": "ok-1"})
    assert response.status_code == 200, response.text
    line = _line_of(cp, "ok-1")
    assert {k: line[k] for k in ("method", "path", "route", "status", "bytes", "client", "user",
                                 "auth", "admin")} == {
        "method": "GET", "path": "/meshes/default", "route": "/meshes/{mesh}", "status": "200",
        "bytes": str(len(response.content)), "client": "127.0.0.1",
        "user": "mesh-system:admin", "auth": "loopback", "admin": "true"}
    assert float(line["duration_ms"]) >= 0
    assert "refusal" not in line and "forwarded_for" not in line  # no proxy is trusted


@pytest.mark.integration
def test_a_user_tokens_caller_is_its_name_and_the_token_is_never_logged(
        cp: ControlPlane) -> None:
    token = _user_token(cp, "ops")
    response = cp.api.put("/meshes/by-jane", json={"type": "Mesh", "name": "by-jane"},
                          headers={"Authorization": f"Bearer {token}", "X-Request-Id": "jane-1",
                                   "Idempotency-Key": "idem-value-4711"})
    assert response.status_code in (200, 201), response.text
    line = _line_of(cp, "jane-1")
    assert (line["method"], line["status"], line["user"], line["auth"]) == (
        "PUT", str(response.status_code), "jane", "token")
    assert line["idempotency_key"] == "true" and "admin" not in line
    assert "idem-value-4711" not in _log(cp)
    forbidden = cp.api.post("/tokens/user", json={"name": "x", "groups": [], "validFor": "1h"},
                            headers={"Authorization": f"Bearer {token}",
                                     "X-Request-Id": "jane-2"})
    assert forbidden.status_code == 403, forbidden.text
    line = _line_of(cp, "jane-2")
    assert (line["status"], line["refusal"], line["user"]) == ("403", "not_admin", "jane")
    _assert_nowhere(cp, token)


@pytest.mark.integration
def test_a_401_says_its_reason_and_never_the_token(cp: ControlPlane) -> None:
    serial = read_header(_user_token(cp, "ops")).serial
    forged = SigningKey(KeyId(purpose=USER_TOKEN, mesh=None, serial=serial + 1000),
                        load_private_key(generate_key_pair()[0])).sign(user_claims(
                            name="eve", groups=["mesh-system:admin"], valid_for_s=3600,
                            now_s=int(time.time())))
    response = cp.api.get("/meshes", headers={"Authorization": f"Bearer {forged}",
                                              "X-Request-Id": "forged-1"})
    assert response.status_code == 401, response.text
    line = _line_of(cp, "forged-1")
    assert (line["status"], line["refusal"], line["route"]) == ("401", "unknown_key", "/meshes")
    assert "user" not in line  # refused: no one was authenticated
    anonymous = cp.api.put("/meshes/x", json={"type": "Mesh", "name": "x"},
                           headers={"X-Forwarded-For": "192.0.2.7", "X-Request-Id": "anon-1"})
    assert anonymous.status_code == 401, anonymous.text
    line = _line_of(cp, "anon-1")
    assert (line["status"], line["refusal"]) == ("401", "no_token")
    _assert_nowhere(cp, forged)


@pytest.mark.integration
def test_a_404_an_unmatched_path_a_bad_body_and_a_long_path_get_a_line_each(
        cp: ControlPlane) -> None:
    missing = cp.api.get("/meshes/nope", headers={"X-Request-Id": "404-1"})
    assert missing.status_code == 404
    line = _line_of(cp, "404-1")
    assert (line["status"], line["route"], line["path"]) == ("404", "/meshes/{mesh}",
                                                             "/meshes/nope")
    unmatched = cp.api.get('/no/such "route"%0A', headers={"X-Request-Id": "404-2"})
    assert unmatched.status_code == 404
    line = _line_of(cp, "404-2")
    assert (line["status"], line["path"]) == ("404", "/no/such%20%22route%22%0A")
    assert "route" not in line
    bad = cp.api.put("/meshes/bad", content=b"{not json", headers={
        "Content-Type": "application/json", "X-Request-Id": "400-1"})
    assert bad.status_code == 400, bad.text
    line = _line_of(cp, "400-1")
    assert (line["status"], line["method"]) == ("400", "PUT")
    assert "not json" not in _log(cp)  # never a body
    long = cp.api.get("/meshes/" + "a" * 2000, headers={"X-Request-Id": "long-1"})
    assert long.status_code in (400, 404)
    path = _line_of(cp, "long-1")["path"]
    assert path == ("/meshes/" + "a" * 2000)[:MAX_PATH] + "..."


@pytest.mark.integration
@pytest.mark.parametrize("by", ["flag", "env"])
def test_api_access_log_false_turns_it_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           by: str) -> None:
    if by == "env":
        monkeypatch.setenv("MESHLOG_API_ACCESS_LOG", "false")
    with meshlog_up(tmp_path, *(["--api-access-log=false"] if by == "flag" else [])) as plane:
        assert plane.api.get("/meshes", headers={"X-Request-Id": "off-1"}).status_code == 200
        assert plane.api.put("/meshes/x", json={"type": "Mesh", "name": "x"}, headers={
            "Authorization": "Bearer not-a-jwt"}).status_code == 401
    # the process has stopped: every line it would have logged is in the file
    log = (tmp_path / "up.log").read_text()
    assert "meshlog is up" in log and _MARK not in log and "off-1" not in log


# --- X-Forwarded-For and the trace id, on an ApiServer in this process ----------------------


async def _ok(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok", "more_body": False})


async def _serve_one(app: RequestTracing, headers: dict[str, str], *, access_log: bool = True,
                     forwarded_for: bool = False) -> None:
    sock = bind_socket("127.0.0.1", 0, "--api-port")
    server = ApiServer(app, sock, access_log=access_log, access_log_forwarded_for=forwarded_for)
    response = await serve_until_answered(server, sock.getsockname()[1], "/x", headers=headers)
    assert response.status_code == 200


def _logged(caplog: pytest.LogCaptureFixture) -> list[Line]:
    return [_parse(r.getMessage()) for r in caplog.records if r.name == ACCESS_LOGGER]


async def test_x_forwarded_for_is_logged_only_behind_a_trusted_proxy(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    proxied = {"X-Forwarded-For": "192.0.2.7, 10.0.0.1"}
    await _serve_one(RequestTracing(_ok), proxied)
    await _serve_one(RequestTracing(_ok), proxied, forwarded_for=True)
    await _serve_one(RequestTracing(_ok), proxied, access_log=False)
    untrusted, trusted = _logged(caplog)
    assert "forwarded_for" not in untrusted
    assert trusted["forwarded_for"] == "192.0.2.7, 10.0.0.1"


async def test_with_tracing_on_the_line_names_the_trace(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    with in_memory_tracing() as exporter:
        await _serve_one(RequestTracing(_ok), {})
        (span,) = spans_named(exporter, "GET unmatched")
    (line,) = _logged(caplog)
    assert span.context is not None
    assert line["trace_id"] == format(span.context.trace_id, "032x")
