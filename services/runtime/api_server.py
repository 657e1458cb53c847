"""The HTTP server of the API (`meshlog up`, `meshlog api`): uvicorn, stopped uvicorn's way.

`stop` (on SIGINT or SIGTERM, `services.runtime.shutdown`) sets uvicorn's `should_exit`:
it closes its listening socket and its idle keep-alive connections, so no new request comes
in, and waits for the requests in flight. Those go on while the store, the projector and NATS
still run (a write still waits for its projection), for at most `drain_grace_s`; one still
running then is cancelled and answered 503, like a request that arrives on a busy connection
once the drain began. Never a 500 from a closed store or connection, never a dropped
connection: a 503 says "retry" (the write may or may not be in the log; an idempotency key or
If-Match makes the retry safe). `run` returns once every request is answered; only then may
the caller close the store and NATS.

With an `ApiTls` (services.runtime.api_tls) it serves HTTPS only, with that certificate and
whatever renews it. Unless `access_log` is off, every request gets its line in the access log
(services.api.access_log) instead of uvicorn's own, which stays off.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Iterator

import msgspec
import uvicorn
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from services.api.access_log import AccessLog
from services.api.metrics import RequestMetrics
from services.runtime.api_tls import ApiTls

__all__ = ["DEFAULT_API_DRAIN_GRACE_S", "ApiServer"]

log = logging.getLogger("meshlog.api")

DEFAULT_API_DRAIN_GRACE_S = 10.0
"""A write's append (5 s timeout) and its wait for the projection (5 s) fit within it."""
_UVICORN_BACKSTOP_S = 2.0
"""uvicorn's own graceful-shutdown timeout is this much longer: by then `_Draining` has
answered every request, so uvicorn never cancels one into a 500."""


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the process handles its signals (services.runtime.shutdown), not uvicorn


class _Draining:
    """ASGI middleware: every HTTP request runs under a timeout that the drain sets."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self._running: set[asyncio.Timeout] = set()
        self._deadline: float | None = None

    def drain(self, deadline: float) -> None:
        """Answer every request not finished at `deadline` (loop time) with 503, and every
        request that starts from now on at once."""
        self._deadline = deadline if self._deadline is None else min(deadline, self._deadline)
        for timeout in self._running:
            timeout.reschedule(self._deadline)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self._app(scope, receive, send)
            return
        if self._deadline is not None:
            await _unavailable(send, "the server is shutting down; retry")
            return
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            async with asyncio.timeout(None) as timeout:
                self._running.add(timeout)
                try:
                    await self._app(scope, receive, send_tracked)
                finally:
                    self._running.discard(timeout)
        except TimeoutError:
            if not timeout.expired() or started:
                raise  # not ours; or too late for a status: uvicorn closes the connection
            await _unavailable(send, "not finished within the server's shutdown grace; "
                               "it may or may not have been applied: retry")


_PROBLEM = msgspec.json.Encoder()


async def _unavailable(send: Send, detail: str) -> None:
    body = _PROBLEM.encode({"type": "about:blank", "status": 503, "title": "Unavailable",
                            "detail": detail})
    await send({"type": "http.response.start", "status": 503, "headers": [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", b"1"),
        (b"connection", b"close"),
    ]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _warn_plaintext(sock: socket.socket) -> None:
    """Plaintext HTTP beyond loopback: every user token (the admin's too) crosses the network
    in the clear. Said loudly at start, as the gateway says it of xDS; loopback is quiet (the
    embedded default, and a proxy in front that terminates TLS)."""
    host = sock.getsockname()[0]
    if ipaddress.ip_address(host).is_loopback:
        return
    log.warning("*** the API on %s serves PLAINTEXT HTTP beyond loopback: user tokens, the "
                "admin's too, cross the network in the clear. Serve HTTPS with "
                "--api-tls-cert-file and --api-tls-key-file (meshlog up: --api-tls). ***",
                host)


class ApiServer:
    def __init__(self, app: ASGIApp, sock: socket.socket, *,
                 drain_grace_s: float = DEFAULT_API_DRAIN_GRACE_S,
                 tls: ApiTls | None = None, access_log: bool = True,
                 access_log_forwarded_for: bool = False) -> None:
        """`access_log_forwarded_for`: the access log logs `X-Forwarded-For` too (a proxy
        the operator trusts is in front)."""
        self._app = _Draining(app)
        # counted outside the drain: its 503s are answers too
        served: ASGIApp = RequestMetrics(self._app)
        if access_log:
            served = AccessLog(served, forwarded_for=access_log_forwarded_for)
        self._sock = sock
        self._drain_grace_s = drain_grace_s
        self._tls = tls
        self._server = _Server(uvicorn.Config(
            served, log_level="warning", lifespan="off", access_log=False,
            timeout_graceful_shutdown=round(drain_grace_s + _UVICORN_BACKSTOP_S),
            # the client is the socket's peer: loopback clients may be admin
            # (services.api.auth), so no header may say where a request came from
            proxy_headers=False,
            # uvicorn's hook for a context of one's own: ours follows the files
            ssl_context_factory=None if tls is None else lambda _config, _default: tls.context))

    async def run(self) -> None:
        """Serve on the socket until `stop`; return once every request has been answered.
        Cancelled instead (a component failed, or the process's grace ran out), it stops
        listening and answers what is still in flight 503 at once."""
        if self._tls is None:
            _warn_plaintext(self._sock)
        try:
            await self._server.serve(sockets=[self._sock])
        except asyncio.CancelledError:
            self._app.drain(asyncio.get_running_loop().time())
            self._server.should_exit = True
            if self._server.started:
                for server in self._server.servers:
                    server.close()
            raise

    def stop(self) -> None:
        """Stop accepting requests; those in flight have `drain_grace_s` to finish."""
        self._app.drain(asyncio.get_running_loop().time() + self._drain_grace_s)
        self._server.should_exit = True
