"""The gateway's health endpoint: /ready follows the view, the server and draining; the
responder survives garbage. A real gateway on a real nats-server; raw sockets as clients."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

from nats.aio.client import Client as NATS

from events.bus.projection_bus import CHECKPOINT_KEY, JetStreamProjectionBus
from tests.harness import eventually
from xds_gateway import Gateway
from xds_gateway.server.readiness import HealthServer


@contextlib.asynccontextmanager
async def _health(gateway: Gateway) -> AsyncIterator[HealthServer]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    server = HealthServer(gateway, sock)
    task = asyncio.create_task(server.run())
    try:
        yield server
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()


async def _raw(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        writer.write_eof()  # a cut request ends here
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


async def _get(port: int, path: str) -> tuple[int, str]:
    raw = await _raw(port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body.decode()


async def test_ready_only_once_the_view_is_loaded_and_the_server_serves(nc: NATS) -> None:
    bus = await JetStreamProjectionBus.open(nc)
    gateway = Gateway(bus, no_auth=True)
    async with _health(gateway) as health:
        assert await _get(health.port, "/live") == (200, "live\n")
        status, body = await _get(health.port, "/ready")
        assert status == 503 and "projections are not loaded" in body
        task = asyncio.create_task(gateway.run())
        try:
            await asyncio.wait_for(gateway.serving.wait(), 10)
            status, body = await _get(health.port, "/ready")
            assert status == 503 and "no projector checkpoint" in body  # nothing projected yet
            await bus.publish([(CHECKPOINT_KEY, b"1")])

            async def ready() -> bool:
                return (await _get(health.port, "/ready"))[0] == 200

            await eventually(ready, what="/ready to answer 200")
            gateway.draining = True  # set on SIGTERM by the gateway's drain
            status, body = await _get(health.port, "/ready")
            assert status == 503 and "draining" in body
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_the_responder_survives_garbage(nc: NATS) -> None:
    gateway = Gateway(None, no_auth=True)
    async with _health(gateway) as health:
        assert (await _raw(health.port, b"\x00\xff garbage\r\n\r\n")).startswith(
            b"HTTP/1.1 400 ")
        assert (await _raw(health.port, b"GET /ready")).startswith(b"HTTP/1.1 400 ")  # cut
        huge = b"GET /ready HTTP/1.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n"
        assert (await _raw(health.port, huge)).startswith(b"HTTP/1.1 431 ")
        assert (await _get(health.port, "/nope"))[0] == 404
        assert (await _raw(health.port, b"POST /ready HTTP/1.1\r\n\r\n")).startswith(
            b"HTTP/1.1 405 ")
        assert await _get(health.port, "/live") == (200, "live\n")  # still answering
