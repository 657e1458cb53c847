"""Inbound health reported by the proxy: Envoy's Health Discovery Service (issue 5).

As in Kuma's universal mode, a sidecar whose bootstrap has `hds_config` opens
`envoy.service.health.v3.HealthDiscoveryService/StreamHealthCheck` to the gateway. Its first
message is a `HealthCheckRequest` with the node (`<mesh>.<name>`, as on ADS); the gateway
answers with a `HealthCheckSpecifier`: one cluster per probed service address, TCP-checked with
the inbound's `serviceProbe` (interval, timeout, thresholds), and how often to report. Envoy
then sends an `EndpointHealthResponse` at that interval.

Each report is mapped back to the inbounds probing that address. When an inbound's readiness
differs from the Dataplane in the gateway's view, the gateway has the change recorded through
the one command path (`events.commands.ProxyCommands.report_readiness`: `DataplaneRegistered`
with `inbound[i].health.ready` changed and the registration's origin kept, decided on the
subject's last record, so two gateways deciding the same change append one event). A report
that changes nothing appends nothing: a report every few seconds never floods the log. When
the Dataplane's probes change, the next report is answered with a new specifier.

A malformed request ends its stream with INVALID_ARGUMENT; the server goes on. The stream
goes through the gateway's callbacks like ADS: authenticated on open, and ended when its
token expires or is revoked.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from envoy.config.core.v3.health_check_pb2 import HealthCheck, HealthStatus
from envoy.service.health.v3.hds_pb2 import (
    EndpointHealthResponse,
    HealthCheckRequestOrEndpointHealthResponse,
    HealthCheckSpecifier,
)
from google.protobuf.duration_pb2 import Duration

from events import Conflict, Dataplane, EventLog, EventLogUnavailable, now_ms
from events.commands import ProbeTarget, ProxyCommands, probe_target, with_readiness
from events.resources import ServiceProbe
from xds_gateway.resources.names import local_cluster, parse_node_id
from xds_gateway.server.callbacks import (
    CallbackChain,
    StreamCallbacks,
    StreamInfo,
    StreamRefused,
    invocation_metadata,
)
from xds_gateway.server.subscription import InvalidStream
from xds_gateway.type_urls import HEALTH_CHECK_SPECIFIER
from xds_gateway.view import ProjectionView

__all__ = ["DEFAULT_REPORT_INTERVAL_S", "HDS_SERVICE", "HealthDiscovery", "probes", "specifier"]

log = logging.getLogger("meshlog.xds.hds")

_Context = grpc.aio.ServicerContext[Any, Any]
"""An HDS call's context (xds-protos' messages carry no type information)."""

HDS_SERVICE = "envoy.service.health.v3.HealthDiscoveryService"
DEFAULT_REPORT_INTERVAL_S = 5.0
"""Kuma's `dpServer.hds.interval`."""

_READY = {HealthStatus.HEALTHY: True, HealthStatus.DEGRADED: True,
          HealthStatus.UNHEALTHY: False, HealthStatus.TIMEOUT: False}
"""UNKNOWN (not checked yet) and DRAINING say nothing about the service."""


def probes(dataplane: Dataplane | None) -> dict[ProbeTarget, ServiceProbe]:
    """The service addresses to check, in inbound order, each with the probe of the first
    inbound probing it. Ignored inbounds are not checked."""
    out: dict[ProbeTarget, ServiceProbe] = {}
    for inbound in dataplane.networking.inbound if dataplane is not None else ():
        if inbound.service_probe is not None and inbound.state != "Ignored":
            key = probe_target(inbound)
            out.setdefault(key, inbound.service_probe)
    return out


def _duration(text: str) -> Duration:
    seconds = float(text[:-1])  # the schema's pattern: `<digits>[.<digits>]s`
    return Duration(seconds=int(seconds), nanos=round((seconds % 1) * 1e9))


def specifier(targets: dict[ProbeTarget, ServiceProbe], interval_s: float) -> HealthCheckSpecifier:
    """One cluster per target, named like the inbound's local cluster (Kuma's
    `localhost:<port>`, with the address when it is not loopback)."""
    spec = HealthCheckSpecifier(interval=_duration(f"{interval_s:g}s"))
    for (address, port), probe in targets.items():
        cluster = spec.cluster_health_checks.add(
            cluster_name=local_cluster(port) if address == "127.0.0.1"
            else f"{local_cluster(port)}@{address}")
        cluster.health_checks.append(HealthCheck(
            timeout=_duration(probe.timeout), interval=_duration(probe.interval),
            # an HDS cluster never carries traffic: without this Envoy checks it every 60 s
            # (its no_traffic_interval default); Kuma sets it too (checkDefaults)
            no_traffic_interval=_duration(probe.interval),
            unhealthy_threshold={"value": probe.unhealthy_threshold},
            healthy_threshold={"value": probe.healthy_threshold},
            tcp_health_check=HealthCheck.TcpHealthCheck()))
        endpoint = cluster.locality_endpoints.add().endpoints.add()
        endpoint.address.socket_address.address = address
        endpoint.address.socket_address.port_value = port
    return spec


def readiness(report: EndpointHealthResponse) -> dict[ProbeTarget, bool]:
    """What a report says about each checked address (unknown states left out)."""
    out: dict[ProbeTarget, bool] = {}
    endpoints = [*report.endpoints_health]
    for cluster in report.cluster_endpoints_health:
        for locality in cluster.locality_endpoints_health:
            endpoints.extend(locality.endpoints_health)
    for health in endpoints:
        ready = _READY.get(health.health_status)
        if ready is not None:
            socket = health.endpoint.address.socket_address
            out[(socket.address, socket.port_value)] = ready
    return out


class HealthDiscovery:
    """The HDS servicer: one `stream` call per proxy stream."""

    def __init__(self, view: ProjectionView, event_log: EventLog | None, *, zone: str,
                 report_interval_s: float = DEFAULT_REPORT_INTERVAL_S,
                 callbacks: StreamCallbacks | None = None) -> None:
        self._view = view
        self._callbacks = callbacks if callbacks is not None else CallbackChain()
        self._commands = ProxyCommands(event_log, zone=zone) if event_log is not None else None
        self._interval_s = report_interval_s

    async def stream(self, requests: AsyncIterator[HealthCheckRequestOrEndpointHealthResponse],
                     context: _Context) -> None:
        """Serve one HDS stream until the client ends it; a protocol violation ends it with
        INVALID_ARGUMENT, a callback's refusal with its status."""
        info = StreamInfo(protocol="hds", peer=context.peer(),
                          metadata=invocation_metadata(context))
        try:
            try:
                # until the client ends it, or a callback does (`StreamInfo.end`)
                await info.serve_until_ended(self._serve(requests, context, info))
            except InvalidStream as exc:
                info.end(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            except StreamRefused as exc:
                info.end(exc.code, exc.message)
            if info.ended is not None:
                log.warning("ending HDS stream of %s: %s", context.peer(), info.ended)
                await context.abort(info.ended.code, info.ended.message)
        finally:
            if info.node is not None:
                await self._callbacks.on_stream_closed(info)

    async def _serve(self, requests: AsyncIterator[HealthCheckRequestOrEndpointHealthResponse],
                     context: _Context, info: StreamInfo) -> None:
        first = await anext(aiter(requests), None)
        if first is None:
            return
        if not first.HasField("health_check_request"):
            raise InvalidStream("the first message of an HDS stream must be a "
                                "health_check_request")
        node_id = first.health_check_request.node.id
        parsed = parse_node_id(node_id)
        if parsed is None:
            raise InvalidStream(f"node.id {node_id!r} is not <mesh>.<dataplane name>")
        mesh, name = parsed
        info.node = first.health_check_request.node
        await self._callbacks.on_stream_open(info)
        sent = probes(self._dataplane(mesh, name))
        await self._send(context, info, sent)
        async for message in requests:
            await self._callbacks.on_stream_request(info, message)
            if not message.HasField("endpoint_health_response"):
                continue  # a repeated health_check_request changes nothing
            await self._report(mesh, name, message.endpoint_health_response)
            now = probes(self._dataplane(mesh, name))
            if now != sent:
                sent = now
                await self._send(context, info, sent)

    async def _send(self, context: _Context, info: StreamInfo,
                    targets: dict[ProbeTarget, ServiceProbe]) -> None:
        await context.write(specifier(targets, self._interval_s))
        # HDS has no versions or nonces: a specifier replaces the one before
        self._callbacks.on_stream_response(info, HEALTH_CHECK_SPECIFIER, "", "", len(targets))

    def _dataplane(self, mesh: str, name: str) -> Dataplane | None:
        row = self._view.dataplanes.get((mesh, name))
        return row.dataplane if row is not None else None

    async def _report(self, mesh: str, name: str, report: EndpointHealthResponse) -> None:
        ready = readiness(report)
        view = self._dataplane(mesh, name)
        if self._commands is None or view is None or with_readiness(view, ready) is None:
            return  # what the view holds already: nothing to decide
        try:
            if await self._commands.report_readiness(mesh, name, ready, now_ms()):
                log.info("%s.%s: inbound readiness %s reported by the proxy", mesh, name,
                         {f"{a}:{p}": r for (a, p), r in ready.items()})
        except (EventLogUnavailable, Conflict) as exc:
            # the proxy reports again at the next interval; the decision is retried then
            log.warning("%s.%s: inbound health not recorded now (%s); retried at the next "
                        "report", mesh, name, exc)
