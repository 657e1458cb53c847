"""Fixtures of the protocol tests (SotW and Delta): a gateway serving a view fed by the real
fold (no NATS), with a mesh, a `backend` and a `web` Dataplane, and a channel to it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from tests.xds_gateway._ads import Projection, serving_gateway
from xds_gateway import Gateway


@pytest.fixture
async def projection() -> Projection:
    return Projection()


@pytest.fixture
async def gateway(projection: Projection) -> AsyncIterator[Gateway]:
    async with serving_gateway(projection) as gw:
        yield gw


@pytest.fixture
async def channel(gateway: Gateway) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as ch:
        yield ch
