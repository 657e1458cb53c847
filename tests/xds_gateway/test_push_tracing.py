"""A gateway's push spans (`xds_gateway.server.tracing`): a traced projector batch opens one,
which counts the proxies that ACKed and NACKed what it pushed, with raw ADS clients."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import grpc
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from events.bus.projection_bus import ProjectionBatch
from events.bus.trace_context import tracer, with_trace
from tests.tracing import in_memory_tracing, spans_named
from tests.xds_gateway._ads import AdsClient, Projection, dataplane, event_for
from xds_gateway import Gateway
from xds_gateway.type_urls import CLUSTER


async def _feed(batches: asyncio.Queue[ProjectionBatch]) -> AsyncIterator[ProjectionBatch]:
    while True:
        yield await batches.get()


async def _push_span(exporter: InMemorySpanExporter, within: float = 15.0) -> ReadableSpan:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not (spans := spans_named(exporter, "meshlog.gateway.push")):
        assert loop.time() < deadline, "no push span ended"
        await asyncio.sleep(0.05)
    [span] = spans
    return span


async def _subscribed(channel: grpc.aio.Channel, node_id: str) -> AdsClient:
    client = AdsClient(channel)
    client.send(CLUSTER, node_id=node_id)
    client.ack(await client.recv())
    return client


async def test_a_traced_push_counts_the_proxies_that_acked_and_nacked() -> None:
    projection = Projection()
    batches: asyncio.Queue[ProjectionBatch] = asyncio.Queue()
    batches.put_nowait(ProjectionBatch(projection.fold([
        event_for({"type": "Mesh", "name": "default"}),
        event_for(dataplane("web-1", "10.0.0.9", 7070, "web")),
        event_for(dataplane("web-2", "10.0.0.10", 7070, "web")),
    ])))
    with in_memory_tracing() as exporter:
        gateway = Gateway(None, port=0, no_auth=True)
        assert gateway.pushes is not None
        async with asyncio.TaskGroup() as tg, AsyncExitStack() as stack:
            tasks = [tg.create_task(gateway.pushes.follow(_feed(batches))),
                     tg.create_task(gateway.pushes.run())]
            await gateway.view.ready.wait()
            tasks.append(tg.create_task(gateway.serve()))
            await gateway.serving.wait()
            channel = await stack.enter_async_context(
                grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}"))
            acking = await _subscribed(channel, "default.web-1")
            nacking = await _subscribed(channel, "default.web-2")
            # an untraced batch opens no push span
            batches.put_nowait(ProjectionBatch(projection.fold([
                event_for(dataplane("cache-1", "10.0.0.12", 6379, "cache"))])))
            acking.ack(await acking.recv())
            nacking.ack(await nacking.recv())
            traces = tracer()
            assert traces is not None
            with traces.start_as_current_span("meshlog.projector.publish") as publish:
                trace = with_trace(None, publish)
            # a new service: a new cluster for both proxies
            batches.put_nowait(ProjectionBatch(projection.fold([
                event_for(dataplane("db-1", "10.0.0.11", 5432, "db"))]), trace))
            acking.ack(await acking.recv())
            rejected = await nacking.recv()
            nacking.send(CLUSTER, version=rejected.version_info, nonce=rejected.nonce,
                         error="no thanks")
            push = await _push_span(exporter)
            for client in (acking, nacking):
                client.close()
            for task in tasks:
                task.cancel()
    assert push.parent is not None and push.parent.span_id == publish.get_span_context().span_id
    assert push.attributes is not None
    assert push.attributes["meshlog.push.outcome"] == "answered"
    assert push.attributes["meshlog.xds.streams"] == 2
    assert push.attributes["meshlog.xds.proxies"] == 2
    assert push.attributes["meshlog.xds.responses"] == 2
    assert push.attributes["meshlog.xds.proxies_acked"] == 1
    assert push.attributes["meshlog.xds.proxies_nacked"] == 1
    assert push.attributes["meshlog.xds.acks"] == push.attributes["meshlog.xds.nacks"] == 1
    [acked] = [e for e in push.events if e.name == "acked"]
    assert acked.attributes is not None
    assert acked.attributes["meshlog.node_id"] == "default.web-1"


def test_without_tracing_the_gateway_adds_no_push_callback() -> None:
    gateway = Gateway(None, port=0, no_auth=True)
    assert gateway.pushes is None
