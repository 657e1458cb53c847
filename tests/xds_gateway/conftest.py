"""Fixtures of the protocol tests (SotW and Delta): a gateway serving a view fed by the real
fold (no NATS), with a mesh, a `backend` and a `web` Dataplane, and a channel to it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from tests.xds_gateway._ads import Projection, dataplane, event_for
from xds_gateway import Gateway


@pytest.fixture
async def projection() -> Projection:
    return Projection()


@pytest.fixture
async def gateway(projection: Projection) -> AsyncIterator[Gateway]:
    gw = Gateway(None, port=0, no_auth=True)
    gw.view.apply(projection.fold([
        event_for({"type": "Mesh", "name": "default"}),
        event_for(dataplane("backend-1", "10.0.0.1", 8080, "backend")),
        event_for(dataplane("web-1", "10.0.0.9", 7070, "web")),
    ]))
    task = asyncio.create_task(gw.serve())
    await gw.serving.wait()
    try:
        yield gw
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.fixture
async def channel(gateway: Gateway) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as ch:
        yield ch
