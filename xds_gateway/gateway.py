"""The gateway: follows the projections and serves ADS and HDS over gRPC (grpc.aio).

It puts the parts together: the projection view and the snapshot source built on it
(`resources.ViewSnapshots`), the ADS streams (`server/`), and the stream callbacks
(`server.callbacks`) through which the proxies' concerns plug in: dataplane token
authentication (`proxies.auth`, unless `no_auth`) first, then insights and self-registration
(`proxies.ProxyLifecycle`), then whatever the caller adds (SDS). HDS streams (`proxies.hds`)
go through the same callbacks.

In a process with tracing (README, Tracing), `server.tracing.PushTracing` applies the bus's
batches to the view and traces each traced batch's push and the proxies' ACKs; without it,
the view follows the bus itself and no tracing callback is added.

The gRPC port serves plaintext, or with a `ServingTls` (`server.serving_tls`) TLS only, so
that the proxies' tokens do not cross the network in the clear; a gateway that requires tokens
and serves plaintext warns at start.

Serving starts only once the view holds a complete copy of the published read models, so a
proxy never receives config computed from half the state, and once the DNS names its rows give
as addresses have been looked up (`resolver`; within one lookup timeout), so a proxy that
moves here from another gateway is not sent its endpoints without them first. Responses are
raw bytes assembled from encode-once resources, so the method is registered with an identity
serializer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
from envoy.service.discovery.v3.discovery_pb2 import DeltaDiscoveryRequest, DiscoveryRequest
from envoy.service.health.v3.hds_pb2 import (
    HealthCheckRequestOrEndpointHealthResponse,
    HealthCheckSpecifier,
)

from events import DEFAULT_ZONE, EventLog
from events.bus.projection_bus import JetStreamProjectionBus
from events.bus.trace_context import tracer
from xds_gateway.proxies.auth import DataplaneAuthentication
from xds_gateway.proxies.hds import HDS_SERVICE, HealthDiscovery
from xds_gateway.proxies.insight_publisher import Insights
from xds_gateway.proxies.lifecycle import ProxyLifecycle
from xds_gateway.resolver import DEFAULT_DNS_CACHE_TTL_S, AddressLookup, AddressResolver
from xds_gateway.resources.cache import ResourceCache
from xds_gateway.resources.snapshot import ViewSnapshots
from xds_gateway.server.callbacks import (
    CallbackChain,
    StreamCallbacks,
    StreamInfo,
    StreamKind,
    StreamRefused,
    invocation_metadata,
)
from xds_gateway.server.delta import DeltaStream
from xds_gateway.server.metrics import StreamMetrics, TimedSnapshots
from xds_gateway.server.serving_tls import ServingTls
from xds_gateway.server.sotw import SotwStream
from xds_gateway.server.subscription import AdsStream, InvalidStream
from xds_gateway.server.tracing import PushTracing
from xds_gateway.view import ProjectionView

__all__ = ["DEFAULT_DRAIN_GRACE_S", "SERVER_OPTIONS", "Gateway"]

log = logging.getLogger("meshlog.xds")

_Context = grpc.aio.ServicerContext[Any, bytes]
"""An ADS call's context: requests are xds-protos messages (untyped), responses raw bytes."""

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

DEFAULT_DRAIN_GRACE_S = 10.0
"""How long streams may go on after GOAWAY (SIGTERM, or max connection age) - rule 14."""
_DRAIN_RATE_PER_S = 100
"""Streams ended per second while draining (faster only if the grace needs it), so the
replicas that take the reconnects build their snapshots a few at a time."""


class Gateway:
    def __init__(self, bus: JetStreamProjectionBus | None, *, host: str = "127.0.0.1",
                 port: int = 0, max_connection_age_s: float = 0,
                 drain_grace_s: float = DEFAULT_DRAIN_GRACE_S,
                 event_log: EventLog | None = None, insights: Insights | None = None,
                 zone: str = DEFAULT_ZONE, deregistration_delay_s: float = 10.0,
                 heartbeat_s: float = 5.0, insight_interval_s: float = 1.0,
                 callbacks: Sequence[StreamCallbacks] = (), no_auth: bool = False,
                 tls: ServingTls | None = None,
                 dns_cache_ttl_s: float = DEFAULT_DNS_CACHE_TTL_S,
                 address_lookup: AddressLookup | None = None) -> None:
        """`no_auth`: serve proxies without dataplane tokens (development only). `tls`: serve
        the gRPC port over TLS only, with that certificate (`server.serving_tls`); without
        it, plaintext. `dns_cache_ttl_s`: how often names given as addresses are looked up
        again, with `address_lookup` (default: the system's resolver)."""
        self._bus = bus
        self._host = host
        self._port = port
        self.tls = tls
        self._max_age_s = max_connection_age_s
        self._grace_s = drain_grace_s
        self.draining = False
        """True from SIGTERM on: readiness reports 503 so the LB stops sending new streams."""
        self._releases: dict[AdsStream[Any], asyncio.Event] = {}
        self.view = ProjectionView()
        self.cache = ResourceCache()
        self.snapshots = ViewSnapshots(self.view, self.cache)
        self.resolver = AddressResolver(self.view, lookup=address_lookup,
                                        ttl_s=dns_cache_ttl_s)
        """Answers for the DNS names Dataplanes give as addresses (run with the view)."""
        self.port: int | None = None
        self.serving = asyncio.Event()
        self.streams: set[AdsStream[Any]] = set()
        self.lifecycle = ProxyLifecycle(
            event_log=event_log, insights=insights, zone=zone,
            address=lambda: f"{self._host}:{self.port}",
            deregistration_delay_s=deregistration_delay_s, heartbeat_s=heartbeat_s,
            insight_interval_s=insight_interval_s)
        """Insights, self-registration and reaping (issues 4 and 5)."""
        self.authentication = None if no_auth else DataplaneAuthentication(self.view, zone=zone)
        """Dataplane tokens on every stream, checked on open and while it lives (issue 11)."""
        self.metrics = StreamMetrics(self.view, self.cache)
        """Prometheus metrics of the streams (`server.metrics`), read when scraped."""
        self._timed = TimedSnapshots(self.snapshots)
        self.pushes = PushTracing(self.view) if tracer() is not None else None
        """Traces of pushes and ACKs, when the process has tracing (README, Tracing)."""
        self.callbacks = CallbackChain([*filter(None, [self.authentication]), self.metrics,
                                        *filter(None, [self.pushes]), self.lifecycle,
                                        *callbacks])
        """What every stream (ADS and HDS) goes through: open, requests, responses, close."""
        self.hds = HealthDiscovery(self.view, event_log, zone=zone, callbacks=self.callbacks)
        """Inbound health reported by proxies (issue 5)."""

    async def run(self) -> None:
        """Follow the projection bus; serve once the view is complete."""
        if self._bus is None:
            raise RuntimeError("Gateway.run needs a projection bus; use serve() for a fed view")
        async with asyncio.TaskGroup() as tg:
            if self.pushes is None:
                tg.create_task(self.view.follow(self._bus.watch()))
            else:
                tg.create_task(self.pushes.follow(self._bus.watch_batches()))
                tg.create_task(self.pushes.run(), name="push tracing")
            await self.view.ready.wait()
            tg.create_task(self.resolver.run(), name="address resolver")
            with contextlib.suppress(TimeoutError):  # names that hang are resolved later
                async with asyncio.timeout(self.resolver.timeout_s):
                    await self.resolver.settled.wait()
            tg.create_task(self.lifecycle.run(self.serving), name="proxy lifecycle")
            await self.serve()

    async def serve(self) -> None:
        """Serve ADS from `self.view` until cancelled; then drain within the grace period."""
        server = self._build_server()
        await server.start()
        self.serving.set()
        where = f"{self._host}:{self.port}"
        if self.tls is not None:
            log.info("xDS gateway serving ADS and HDS on %s over TLS (certificate %s, %s, "
                     "valid until %s)", where, self.tls.cert_file, self.tls.pair.subject,
                     self.tls.pair.not_after.isoformat())
        else:
            log.info("xDS gateway serving ADS and HDS on %s (plaintext)", where)
        if self.authentication is None:
            log.warning("xDS gateway on %s serves proxies WITHOUT dataplane tokens "
                        "(--no-auth): development only", where)
        elif self.tls is None:
            log.warning("*** the xDS gateway on %s requires dataplane tokens but serves "
                        "PLAINTEXT: every proxy's token crosses the network in the clear, "
                        "and proxyless gRPC clients cannot send one. Serve TLS with "
                        "--tls-cert-file and --tls-key-file (meshlog up: --xds-tls). ***",
                        where)
        try:
            await server.wait_for_termination()
        finally:
            await self._drain(server)

    async def _drain(self, server: grpc.aio.Server) -> None:
        """xds-rules.md #14: stop accepting, send GOAWAY, then end the open streams a few at a
        time within the grace period; what is left at its end is cancelled. Each proxy then
        reconnects through the load balancer to a live replica, which sees identical content
        and versions (rule 12), so Envoy applies nothing new."""
        self.draining = True
        log.info("draining %d ADS streams within %.1f s", len(self._releases), self._grace_s)
        async with asyncio.TaskGroup() as tg:
            # closes the listener and sends GOAWAY now; returns once every stream has ended
            tg.create_task(server.stop(grace=self._grace_s))
            releases = list(self._releases.values())
            loop = asyncio.get_running_loop()
            step = min(1 / _DRAIN_RATE_PER_S, 0.8 * self._grace_s / max(len(releases), 1))
            started = loop.time()
            for i, release in enumerate(releases):
                # pacing the fleet's reconnects, not waiting for a condition
                await asyncio.sleep(max(0.0, started + i * step - loop.time()))
                release.set()
        log.info("drained")

    async def _feed_until_released(self, stream: AdsStream[Any],
                                   requests: AsyncIterator[Any]) -> None:
        """Feed the stream until the client half-closes or a drain releases the stream; the
        handler then returns, so the client sees a clean end (OK) and reconnects."""
        release = self._releases[stream] = asyncio.Event()
        try:
            async with asyncio.TaskGroup() as tg:
                feeding = tg.create_task(stream.feed(requests))
                released = tg.create_task(release.wait())
                await asyncio.wait((feeding, released), return_when=asyncio.FIRST_COMPLETED)
                feeding.cancel()
                released.cancel()
        finally:
            del self._releases[stream]

    def _build_server(self) -> grpc.aio.Server:
        options = list(SERVER_OPTIONS)
        if self._max_age_s:
            # rule 14: GOAWAY after this age (grpc adds +-10 % jitter), so long-lived streams
            # spread over replicas added since; streams still open after the grace are ended
            options += [("grpc.max_connection_age_ms", int(self._max_age_s * 1000)),
                        ("grpc.max_connection_age_grace_ms", int(self._grace_s * 1000))]
        server = grpc.aio.server(options=options)
        handler = grpc.method_handlers_generic_handler(ADS_SERVICE, {
            "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self._sotw,
                request_deserializer=DiscoveryRequest.FromString,
                response_serializer=_identity,
            ),
            "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self._delta,
                request_deserializer=DeltaDiscoveryRequest.FromString,
                response_serializer=_identity,
            ),
        })
        hds = grpc.method_handlers_generic_handler(HDS_SERVICE, {
            "StreamHealthCheck": grpc.stream_stream_rpc_method_handler(
                self.hds.stream,
                request_deserializer=HealthCheckRequestOrEndpointHealthResponse.FromString,
                response_serializer=HealthCheckSpecifier.SerializeToString,
            ),
        })
        server.add_generic_rpc_handlers((handler, hds))
        address = f"{self._host}:{self._port}"
        self.port = (server.add_insecure_port(address) if self.tls is None else
                     server.add_secure_port(address, self.tls.credentials()))
        return server

    async def _sotw(self, requests: AsyncIterator[DiscoveryRequest],
                    context: _Context) -> None:
        await self._serve_stream(SotwStream(self._timed, self.cache, context.write),
                                 requests, context, "sotw")

    async def _delta(self, requests: AsyncIterator[DeltaDiscoveryRequest],
                     context: _Context) -> None:
        await self._serve_stream(DeltaStream(self._timed, self.cache, context.write),
                                 requests, context, "delta")

    async def _serve_stream(self, stream: AdsStream[Any], requests: AsyncIterator[Any],
                            context: _Context, protocol: StreamKind) -> None:
        """One ADS stream, SotW or Delta: the callbacks, the stream's loop and view watcher,
        its requests until the client half-closes or a drain releases it; a protocol
        violation ends it INVALID_ARGUMENT, a refusal with the refusing callback's status."""
        info = StreamInfo(protocol=protocol, peer=context.peer(),
                          metadata=invocation_metadata(context), types=stream.types)
        stream.on_response = functools.partial(self.callbacks.on_stream_response, info)
        self.streams.add(stream)
        try:
            async with asyncio.TaskGroup() as tg:
                runner = tg.create_task(stream.run())
                watcher = tg.create_task(stream.watch_view())
                # until the client half-closes, a drain releases it, or a callback ends it
                await info.serve_until_ended(self._feed_until_released(
                    stream, self._called_back(info, requests)))
                runner.cancel()
                watcher.cancel()
            if info.ended is not None:
                log.warning("ending stream of %s: %s", stream.node_id or info.peer, info.ended)
                await context.abort(info.ended.code, info.ended.message)
        except* InvalidStream as group:
            error = group.exceptions[0]
            code = error.code if isinstance(error, InvalidStream) else grpc.StatusCode.INTERNAL
            log.warning("ending stream of %s: %s", stream.node_id or info.peer, error)
            await context.abort(code, str(error))
        finally:
            self.streams.discard(stream)
            await self.callbacks.on_stream_closed(info)

    async def _called_back(self, info: StreamInfo, requests: AsyncIterator[Any]
                           ) -> AsyncIterator[Any]:
        """The requests, each past the callbacks first (the first one opens the stream). A
        refusal ends the stream (`StreamInfo.end`): the handler aborts it with the status
        after the stream's task group, not nested in the group's errors."""
        wants_requests = self.callbacks.wants_requests
        async for request in requests:
            try:
                if info.node is None:
                    info.node, info.type_url = request.node, request.type_url
                    await self.callbacks.on_stream_open(info)
                elif wants_requests:
                    await self.callbacks.on_stream_request(info, request)
            except StreamRefused as exc:
                info.end(exc.code, exc.message)
                return
            except Exception as exc:  # a callback's bug ends its stream, never the server
                log.exception("a stream callback failed on the stream of %s", info.peer)
                info.end(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}")
                return
            yield request


def _identity(data: bytes) -> bytes:
    return data


