"""`GET /metrics`, `/ready` and `/live` for a process that has no HTTP server of its own
(`meshlog projector --metrics-port`): the gateway's probe server
(`xds_gateway.server.readiness.ProbeServer`: one request per connection, reads bounded and
timed out) with JSON answers.

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

from services.metrics import exposition
from xds_gateway.server.readiness import Answer, ProbeServer

__all__ = ["MetricsServer", "ReadinessCheck", "serving_metrics"]

ReadinessCheck = Callable[[], Awaitable[tuple[int, dict[str, Any]]]]
"""What `/ready` answers: the status (200 or 503) and a JSON body."""


class MetricsServer(ProbeServer):
    """`/ready` answered by `readiness` as JSON (without it, 200 while the process runs, like
    `/live`), `/live` and `/metrics` (`services.metrics.exposition`)."""

    def __init__(self, sock: socket.socket, readiness: ReadinessCheck | None = None) -> None:
        async def ready() -> Answer:
            status, body = (200, {"ready": True}) if readiness is None else await readiness()
            return status, "application/json", json.dumps(body).encode() + b"\n"

        super().__init__(sock, ready, live=(200, "application/json", b'{"live": true}\n'),
                         metrics=exposition)


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
