"""`GET /metrics`, `/ready` and `/live` for a process that has no HTTP server of its own
(`meshlog projector --metrics-port`): a tiny HTTP/1.1 responder on asyncio streams, one
request per connection, reads bounded and timed out (like the gateway's health server).

    GET /live     200 while the process runs (active and standby alike: restart it only if not)
    GET /ready    the process's `Readiness` as JSON: for a projector, 200 only for the one
                  that holds the lease and folds, 503 for a standby (services.runtime.standby)
    GET /metrics  Prometheus metrics

The API serves `/metrics` as one of its routes, the gateway on its health server; all render
`services.metrics.exposition`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from services.metrics import CONTENT_TYPE, exposition

__all__ = ["MetricsServer", "ReadinessCheck", "serving_metrics"]

_MAX_HEAD = 8 * 1024
_TIMEOUT_S = 5.0
_REASONS = {200: b"200 OK", 404: b"404 Not Found", 503: b"503 Service Unavailable"}

ReadinessCheck = Callable[[], Awaitable[tuple[int, dict[str, Any]]]]
"""What `/ready` answers: the status (200 or 503) and a JSON body."""


class MetricsServer:
    def __init__(self, sock: socket.socket, readiness: ReadinessCheck | None = None) -> None:
        """`readiness`: what `GET /ready` answers (without it, `/ready` is 200 while the
        process runs, like `/live`)."""
        self._sock = sock
        self._readiness = readiness
        self.port: int = sock.getsockname()[1]

    async def run(self) -> None:
        """Answer until cancelled."""
        try:
            server = await asyncio.start_server(self._handle, sock=self._sock, limit=_MAX_HEAD)
            async with server:
                await server.serve_forever()
        finally:
            self._sock.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _TIMEOUT_S)
            except (asyncio.LimitOverrunError, asyncio.IncompleteReadError, TimeoutError):
                return
            status, kind, body = await self._answer(head.split(b"\r\n", 1)[0].split(b" "))
            writer.write(b"HTTP/1.1 " + _REASONS[status]
                         + f"\r\nContent-Type: {kind}; charset=utf-8\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                         + body)
            await asyncio.wait_for(writer.drain(), _TIMEOUT_S)
        except (OSError, TimeoutError):
            pass  # the client went away or stalled: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), _TIMEOUT_S)

    async def _answer(self, line: list[bytes]) -> tuple[int, str, bytes]:
        target = line[1].split(b"?")[0] if len(line) == 3 and line[0] == b"GET" else b""
        if target == b"/metrics":
            return 200, CONTENT_TYPE, await exposition()
        if target == b"/live":
            return 200, "application/json", b'{"live": true}\n'
        if target == b"/ready":
            try:
                status, body = (200, {"ready": True}) if self._readiness is None \
                    else await asyncio.wait_for(self._readiness(), _TIMEOUT_S)
            except TimeoutError:
                status, body = 503, {"ready": False, "reason": "readiness not known in time"}
            return status, "application/json", json.dumps(body).encode() + b"\n"
        return 404, "text/plain", b"try GET /ready, /live or /metrics\n"


@contextlib.asynccontextmanager
async def serving_metrics(sock: socket.socket | None, readiness: ReadinessCheck | None = None
                          ) -> AsyncIterator[None]:
    """Serve `/metrics`, `/ready` (answered by `readiness`) and `/live` on `sock` (if any)
    while the body runs; stopped when it ends."""
    if sock is None:
        yield
        return
    serving = asyncio.ensure_future(MetricsServer(sock, readiness).run())
    try:
        yield
    finally:
        serving.cancel()
        await asyncio.wait([serving])  # its CancelledError is not ours
