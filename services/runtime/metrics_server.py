"""`GET /metrics` for a process that has no HTTP server of its own (`meshlog projector
--metrics-port`): a tiny HTTP/1.1 responder on asyncio streams, one request per connection,
reads bounded and timed out (like the gateway's health server).

The API serves `/metrics` as one of its routes, the gateway on its health server; all render
`services.metrics.exposition`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

from services.metrics import CONTENT_TYPE, exposition

__all__ = ["MetricsServer", "serving_metrics"]

_MAX_HEAD = 8 * 1024
_TIMEOUT_S = 5.0


class MetricsServer:
    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
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
            line = head.split(b"\r\n", 1)[0].split(b" ")
            if len(line) == 3 and line[0] == b"GET" and line[1].split(b"?")[0] == b"/metrics":
                status, kind, body = b"200 OK", CONTENT_TYPE, await exposition()
            else:
                status, kind, body = b"404 Not Found", "text/plain", b"try GET /metrics\n"
            writer.write(b"HTTP/1.1 " + status + f"\r\nContent-Type: {kind}; charset=utf-8\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                         + body)
            await asyncio.wait_for(writer.drain(), _TIMEOUT_S)
        except (OSError, TimeoutError):
            pass  # the client went away or stalled: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), _TIMEOUT_S)


@contextlib.asynccontextmanager
async def serving_metrics(sock: socket.socket | None) -> AsyncIterator[None]:
    """Serve `/metrics` on `sock` (if any) while the body runs; stopped when it ends."""
    if sock is None:
        yield
        return
    serving = asyncio.ensure_future(MetricsServer(sock).run())
    try:
        yield
    finally:
        serving.cancel()
        await asyncio.wait([serving])  # its CancelledError is not ours
