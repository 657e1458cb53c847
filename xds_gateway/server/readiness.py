"""The gateway's health endpoint: a tiny HTTP/1.1 responder on asyncio streams (`ProbeServer`,
which the projector process also serves its probes with).

    GET /live   200 while the process runs
    GET /ready  200 once the gateway can serve proxies correctly; 503 with the reason otherwise
    GET /metrics  Prometheus metrics, when the process gives a `metrics` renderer

Ready means: the view holds a complete, consistent copy of the projections (the initial batch
applied, at a projector checkpoint), the gRPC server is serving, and the gateway is not
draining. A load balancer sends new streams only to ready gateways.

One request per connection; reads are bounded (`_MAX_HEAD` bytes) and timed out, so garbage
or a silent client costs one short-lived task, never the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Protocol

from xds_gateway.view import ProjectionView

__all__ = ["Answer", "HealthServer", "ProbeServer", "ReadyCheck", "not_ready_reason"]

log = logging.getLogger("meshlog.xds.health")

_MAX_HEAD = 8 * 1024
_READ_TIMEOUT_S = 5.0
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout",
            431: "Request Header Fields Too Large", 503: "Service Unavailable"}


_METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""prometheus_client's `generate_latest` format."""


class _Gateway(Protocol):
    view: ProjectionView
    serving: asyncio.Event


def not_ready_reason(gateway: _Gateway) -> str | None:
    """Why the gateway must not get new streams yet, or None when it is ready."""
    if getattr(gateway, "draining", False):
        return "draining: the gateway is shutting down"
    if not gateway.view.ready.is_set():
        return "the projections are not loaded yet"
    if gateway.view.checkpoint <= 0:
        return "no projector checkpoint yet: waiting for a projector to publish"
    if not gateway.serving.is_set():
        return "the xDS server is not serving yet"
    return None


Answer = tuple[int, str, bytes]
"""An HTTP answer: status, content type, body."""
ReadyCheck = Callable[[], Awaitable[Answer]]
"""What `GET /ready` answers, asked for each request."""


class ProbeServer:
    """`/ready`, `/live` and (given `metrics`) `/metrics` on `sock`: the gateway's health
    server (`HealthServer`), and the projector process's (`services.runtime.metrics_server`).
    """

    def __init__(self, sock: socket.socket, ready: ReadyCheck, *,
                 live: Answer = (200, "text/plain; charset=utf-8", b"live\n"),
                 metrics: Callable[[], Awaitable[bytes]] | None = None) -> None:
        """`metrics`: renders the process's Prometheus metrics for `GET /metrics`."""
        self._ready = ready
        self._live = live
        self._metrics = metrics
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
            status, kind, body = await self._answer(reader)
            head = (f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
                    f"Content-Type: {kind}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
            writer.write(head.encode() + body)
            await asyncio.wait_for(writer.drain(), _READ_TIMEOUT_S)
        except (OSError, TimeoutError):
            pass  # the client went away or stalled: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), _READ_TIMEOUT_S)

    async def _answer(self, reader: asyncio.StreamReader) -> Answer:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT_S)
        except asyncio.LimitOverrunError:
            return _text(431, b"request head too large\n")
        except asyncio.IncompleteReadError:
            return _text(400, b"incomplete request\n")
        except TimeoutError:
            return _text(408, b"request not received in time\n")
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            return _text(400, b"not an HTTP/1.x request line\n")
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if target == b"/metrics" and self._metrics is not None and method == b"GET":
            return 200, _METRICS_TYPE, await self._metrics()
        if target not in (b"/ready", b"/live"):
            return _text(404, b"not found: try /ready or /live\n")
        if method != b"GET":
            return _text(405, b"only GET\n")
        if target == b"/live":
            return self._live
        try:
            return await asyncio.wait_for(self._ready(), _READ_TIMEOUT_S)
        except TimeoutError:
            return _text(503, b"not ready: readiness not known in time\n")


def _text(status: int, body: bytes) -> Answer:
    return status, "text/plain; charset=utf-8", body


class HealthServer(ProbeServer):
    """The gateway's: `/ready` is `not_ready_reason`."""

    def __init__(self, gateway: _Gateway, sock: socket.socket, *,
                 metrics: Callable[[], Awaitable[bytes]] | None = None) -> None:
        async def ready() -> Answer:
            reason = not_ready_reason(gateway)
            if reason is not None:
                return _text(503, f"not ready: {reason}\n".encode())
            return _text(200, b"ready\n")

        super().__init__(sock, ready, metrics=metrics)
