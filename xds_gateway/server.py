"""The gateway process: follows the projections and serves ADS over gRPC (grpc.aio).

Serving starts only once the view holds a complete copy of the published read models, so a
proxy never receives config computed from half the state. Responses are raw bytes assembled
from encode-once resources, so the method is registered with an identity serializer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc
from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest

from events.projection_bus import JetStreamProjectionBus
from xds_gateway.cache import ResourceCache
from xds_gateway.sotw import InvalidStream, SotwStream
from xds_gateway.view import ProjectionView

__all__ = ["SERVER_OPTIONS", "Gateway"]

log = logging.getLogger("meshlog.xds")

ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"

SERVER_OPTIONS = [
    # xds-rules.md #14: keepalive ~30 s with a 10 s timeout; accept client pings every 10 s,
    # also without calls in flight.
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
]


class Gateway:
    def __init__(self, bus: JetStreamProjectionBus | None, *, host: str = "127.0.0.1",
                 port: int = 0, max_connection_age_s: float = 0) -> None:
        self._bus = bus
        self._host = host
        self._port = port
        self._max_age_s = max_connection_age_s
        self.view = ProjectionView()
        self.cache = ResourceCache()
        self.port: int | None = None
        self.serving = asyncio.Event()
        self.streams: set[SotwStream] = set()

    async def run(self) -> None:
        """Follow the projection bus; serve once the view is complete."""
        if self._bus is None:
            raise RuntimeError("Gateway.run needs a projection bus; use serve() for a fed view")
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.view.follow(self._bus.watch()))
            await self.view.ready.wait()
            await self.serve()

    async def serve(self) -> None:
        """Serve ADS from `self.view` until cancelled."""
        server = self._build_server()
        await server.start()
        self.serving.set()
        log.info("xDS gateway serving ADS on %s:%s", self._host, self.port)
        try:
            await server.wait_for_termination()
        finally:
            await server.stop(grace=1)

    def _build_server(self) -> grpc.aio.Server:
        options = list(SERVER_OPTIONS)
        if self._max_age_s:
            options += [("grpc.max_connection_age_ms", int(self._max_age_s * 1000)),
                        ("grpc.max_connection_age_grace_ms", 30_000)]
        server = grpc.aio.server(options=options)
        handler = grpc.method_handlers_generic_handler(ADS_SERVICE, {
            "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self._sotw,
                request_deserializer=DiscoveryRequest.FromString,
                response_serializer=_identity,
            ),
        })
        server.add_generic_rpc_handlers((handler,))
        self.port = server.add_insecure_port(f"{self._host}:{self._port}")
        return server

    async def _sotw(self, requests: AsyncIterator[DiscoveryRequest],
                    context: grpc.aio.ServicerContext) -> None:
        stream = SotwStream(self.view, self.cache, context.write)
        self.streams.add(stream)
        try:
            async with asyncio.TaskGroup() as tg:
                runner = tg.create_task(stream.run())
                watcher = tg.create_task(stream.watch_view())
                await stream.feed(requests)  # returns when the client half-closes
                runner.cancel()
                watcher.cancel()
        except* InvalidStream as group:
            message = str(group.exceptions[0])
            log.warning("ending stream of %s: %s", stream.node_id or context.peer(), message)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)
        finally:
            self.streams.discard(stream)


def _identity(data: bytes) -> bytes:
    return data


