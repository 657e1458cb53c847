"""`ApiServer.stop`: requests in flight finish within the drain grace, or are answered 503 at
its end (never 500, never a dropped connection); then `run` returns."""

from __future__ import annotations

import asyncio
import logging
import tomllib
from pathlib import Path

import httpx
import pytest
from litestar.types import Receive, Scope, Send
from packaging.requirements import Requirement

from services.runtime.api_server import ApiServer
from services.runtime.up import bind_socket
from tests.services._api_harness import serve_until_answered


class _App:
    """An ASGI app whose `/wait` answers only once `release` is set."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/wait":
            self.entered.set()
            await self.release.wait()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"done", "more_body": False})


async def _stop_while_waiting(app: _App, grace_s: float, release_after_stop: bool
                              ) -> httpx.Response:
    sock = bind_socket("127.0.0.1", 0, "--api-port")
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = ApiServer(app, sock, drain_grace_s=grace_s)
    async with asyncio.TaskGroup() as tg, httpx.AsyncClient(base_url=base, timeout=30) as client:
        serving = tg.create_task(server.run())
        waiting = tg.create_task(client.get("/wait"))
        await asyncio.wait_for(app.entered.wait(), timeout=10)
        server.stop()
        if release_after_stop:
            app.release.set()
        response = await asyncio.wait_for(waiting, timeout=grace_s + 10)
        await asyncio.wait_for(serving, timeout=10)  # run returns once all are answered
    return response


async def test_a_request_in_flight_at_stop_finishes() -> None:
    response = await _stop_while_waiting(_App(), grace_s=10, release_after_stop=True)
    assert (response.status_code, response.text) == (200, "done")


async def test_a_request_still_running_at_the_end_of_the_grace_is_answered_503() -> None:
    response = await _stop_while_waiting(_App(), grace_s=0.3, release_after_stop=False)
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert "shutdown grace" in response.json()["detail"]


async def _start_and_stop(host: str) -> None:
    """Serve on `host` until a request is answered (what it says at start is said), then
    stop."""
    sock = bind_socket(host, 0, "--api-port")
    response = await serve_until_answered(ApiServer(_App(), sock), sock.getsockname()[1], "/")
    assert response.status_code == 200


async def test_plaintext_beyond_loopback_is_said_loudly_at_start(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="meshlog.api"):
        await _start_and_stop("0.0.0.0")
    assert any("serves PLAINTEXT HTTP beyond loopback" in r.getMessage()
               and "--api-tls-cert-file" in r.getMessage() for r in caplog.records)


async def test_plaintext_on_loopback_is_quiet(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="meshlog.api"):
        await _start_and_stop("127.0.0.1")
    assert not [r for r in caplog.records if "PLAINTEXT" in r.getMessage()]


def test_the_declared_uvicorn_floor_has_the_tls_hook_the_server_passes() -> None:
    """ApiServer always passes `ssl_context_factory` to `uvicorn.Config`, which uvicorn has
    since 0.47 (an older one fails every API start with a TypeError, plain HTTP too): the
    floor in pyproject.toml must not admit an older release."""
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    uvicorn = next(Requirement(r) for r in pyproject["project"]["dependencies"]
                   if Requirement(r).name == "uvicorn")
    assert not uvicorn.specifier.contains("0.46.0"), uvicorn
    assert uvicorn.specifier.contains("0.47.0"), uvicorn
