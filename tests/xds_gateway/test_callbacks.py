"""The stream callbacks (xds_gateway.server.callbacks): every ADS (SotW, Delta) and HDS stream
goes through open, requests, responses and close; a callback may refuse a stream with a gRPC
status. Raw ADS/HDS clients against an in-process gateway."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import grpc
import pytest
from envoy.config.core.v3.base_pb2 import Node
from envoy.service.health.v3.hds_pb2 import (
    HealthCheckRequest,
    HealthCheckRequestOrEndpointHealthResponse,
    HealthCheckSpecifier,
)

from tests.harness import eventually
from tests.xds_gateway._ads import AdsClient, DeltaAdsClient, Projection, dataplane, event_for
from xds_gateway import Gateway
from xds_gateway.server.callbacks import StreamInfo, StreamRefused
from xds_gateway.type_urls import CLUSTER, HEALTH_CHECK_SPECIFIER, LISTENER

HDS = "/envoy.service.health.v3.HealthDiscoveryService/StreamHealthCheck"


class Recorder:
    """Records what it is told; refuses streams whose metadata lacks `x-token: ok` when
    `require_token` (what an authentication callback will do)."""

    def __init__(self, *, require_token: bool = False) -> None:
        self.require_token = require_token
        self.calls: list[tuple[str, int, str]] = []
        self.responses: list[tuple[int, str]] = []
        self.metadata: dict[int, dict[str, str | bytes]] = {}

    async def on_stream_open(self, stream: StreamInfo) -> None:
        assert stream.node is not None
        self.calls.append(("open", stream.stream_id, stream.node.id))
        self.metadata[stream.stream_id] = dict(stream.metadata)
        if self.require_token and dict(stream.metadata).get("x-token") != "ok":
            raise StreamRefused(grpc.StatusCode.UNAUTHENTICATED, "no valid x-token")

    async def on_stream_request(self, stream: StreamInfo, request: object) -> None:
        self.calls.append(("request", stream.stream_id, stream.protocol))

    def on_stream_response(self, stream: StreamInfo, type_url: str, version: str, nonce: str,
                           resources: int) -> None:
        self.responses.append((stream.stream_id, type_url))

    async def on_stream_closed(self, stream: StreamInfo) -> None:
        self.calls.append(("closed", stream.stream_id, stream.protocol))


async def _gateway(recorder: Recorder) -> tuple[Gateway, asyncio.Task[None]]:
    gw = Gateway(None, port=0, callbacks=[recorder], no_auth=True)
    gw.view.apply(Projection().fold([
        event_for({"type": "Mesh", "name": "default"}),
        event_for(dataplane("backend-1", "10.0.0.1", 8080, "backend")),
    ]))
    task = asyncio.create_task(gw.serve())
    await gw.serving.wait()
    return gw, task


@pytest.fixture
async def recorded() -> AsyncIterator[tuple[Recorder, grpc.aio.Channel]]:
    recorder = Recorder()
    gw, task = await _gateway(recorder)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as channel:
            yield recorder, channel
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def _until(condition: Callable[[], bool], what: str) -> None:
    async def check() -> bool:
        return condition()
    await eventually(check, within=30, what=what)


async def test_callbacks_see_open_requests_responses_and_close(
        recorded: tuple[Recorder, grpc.aio.Channel]) -> None:
    recorder, channel = recorded
    client = AdsClient(channel)
    client.send(CLUSTER, node_id="default.backend-1")
    cds = await client.recv()
    client.ack(cds)
    client.send(LISTENER)
    await client.recv()
    client.close()
    await _until(lambda: bool(recorder.calls) and recorder.calls[-1][0] == "closed",
                 "the close")
    [(_, stream_id, node_id)] = [c for c in recorder.calls if c[0] == "open"]
    assert node_id == "default.backend-1"
    assert [c[0] for c in recorder.calls] == ["open", "request", "request", "closed"]
    assert all(c[1] == stream_id for c in recorder.calls)
    assert [t for _, t in recorder.responses] == [CLUSTER, LISTENER]


async def test_a_delta_stream_goes_through_the_same_callbacks(
        recorded: tuple[Recorder, grpc.aio.Channel]) -> None:
    recorder, channel = recorded
    client = DeltaAdsClient(channel)
    client.send(LISTENER, node_id="default.backend-1", subscribe=["*"])
    await client.recv()
    client.close()
    await _until(lambda: bool(recorder.calls) and recorder.calls[-1][0] == "closed",
                 "the close")
    assert recorder.calls[-1][2] == "delta"
    assert recorder.responses and recorder.responses[0][1] == LISTENER


async def test_a_refused_open_ends_the_stream_with_the_callbacks_status() -> None:
    recorder = Recorder(require_token=True)
    gw, task = await _gateway(recorder)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as channel:
            refused = AdsClient(channel)
            refused.send(CLUSTER, node_id="default.backend-1")
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await refused.recv()
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert info.value.details() == "no valid x-token"
            assert not recorder.responses  # nothing was sent to it
            await _until(lambda: recorder.calls[-1][0] == "closed", "the close")
            # the same gateway serves a stream that passes
            allowed = AdsClient(channel, metadata=(("x-token", "ok"),))
            allowed.send(CLUSTER, node_id="default.backend-1")
            assert (await allowed.recv()).type_url == CLUSTER
            opened = [c[1] for c in recorder.calls if c[0] == "open"]
            assert recorder.metadata[opened[-1]]["x-token"] == "ok"
            allowed.close()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_hds_streams_go_through_the_callbacks_and_may_be_refused() -> None:
    recorder = Recorder(require_token=True)
    gw, task = await _gateway(recorder)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as channel:
            stream = channel.stream_stream(
                HDS, request_serializer=HealthCheckRequestOrEndpointHealthResponse
                .SerializeToString, response_deserializer=HealthCheckSpecifier.FromString)
            first = HealthCheckRequestOrEndpointHealthResponse(
                health_check_request=HealthCheckRequest(node=Node(id="default.backend-1")))

            async def one() -> AsyncIterator[HealthCheckRequestOrEndpointHealthResponse]:
                yield first
                await asyncio.sleep(5)

            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in stream(one()):
                    pass
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            await _until(lambda: recorder.calls[-1] == ("closed", recorder.calls[0][1], "hds"),
                         "the HDS stream's close")

            call = stream(one(), metadata=(("x-token", "ok"),))
            specifier = await asyncio.wait_for(call.read(), 5)
            assert isinstance(specifier, HealthCheckSpecifier)
            assert recorder.responses[-1][1] == HEALTH_CHECK_SPECIFIER
            call.cancel()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
