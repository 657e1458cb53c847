"""The control plane's parts as separate processes, for scale-out (compose.yaml):

    meshlog projector --nats-url URL --database URL
    meshlog gateway   --nats-url URL [--xds-port 5678] [--drain-grace 10]
    meshlog api       --nats-url URL --database URL [--api-port 5681]

Each connects to NATS, runs one component until SIGTERM/Ctrl-C, and closes in order. A
gateway first drains (xds-rules.md #14): no new streams, GOAWAY, its open streams ended a few
at a time within the drain grace, so its proxies reconnect to the other replicas; then it
drains NATS and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator

from nats.aio.client import Client as NATS

from events import DEFAULT_ZONE, JetStreamEventLog, connect_nats
from events.bus.insights import JetStreamInsights
from events.bus.projection_bus import JetStreamProjectionBus
from events.bus.requests import XDS_CONFIG_QUEUE, XDS_CONFIG_SUBJECTS, serve_requests
from events.commands import Commands
from projections import DEFAULT_GRACE_PERIOD_MS, Projector, open_store
from services.api.app import create_app
from services.api.proxy_inspector import ProxyInspector
from services.runtime.up import bind_socket, run_projector, serve_api
from xds_gateway import Gateway
from xds_gateway.gateway import DEFAULT_DRAIN_GRACE_S
from xds_gateway.proxies.config_service import ConfigService
from xds_gateway.server.readiness import HealthServer

__all__ = ["run_api_process", "run_gateway_process", "run_projector_process"]

log = logging.getLogger("meshlog")


@contextlib.asynccontextmanager
async def _nats(url: str, name: str) -> AsyncIterator[NATS]:
    nc = await connect_nats(url, name=name)
    try:
        yield nc
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.drain(), timeout=5)


async def run_projector_process(*, nats_url: str, database: str, zone: str,
                                replicas: int = 1,
                                meshservice_grace_period_ms: int = DEFAULT_GRACE_PERIOD_MS
                                ) -> None:
    async with _nats(nats_url, "meshlog-projector") as nc:
        event_log = await JetStreamEventLog.open(nc, replicas=replicas)
        await Commands(event_log, zone=zone).configure_grace_period(
            "MeshService", meshservice_grace_period_ms, DEFAULT_GRACE_PERIOD_MS)
        bus = await JetStreamProjectionBus.open(nc, replicas=replicas)
        store = await open_store(database)
        try:
            await run_projector(Projector(event_log, store, bus, zone=zone))
        finally:
            await store.close()


async def run_gateway_process(*, nats_url: str, host: str, port: int,
                              max_connection_age_s: float = 0, replicas: int = 1,
                              drain_grace_s: float = DEFAULT_DRAIN_GRACE_S,
                              zone: str = DEFAULT_ZONE, health_port: int = 5680,
                              deregistration_delay_s: float = 10.0) -> None:
    health_sock = bind_socket(host, health_port, "--health-port")
    # A gateway keeps ~1,000 streams' objects alive and allocates in bursts on every push; at the
    # default gen-0 threshold (700) the collector ran dozens of times per push round, scanning
    # objects still in flight and promoting them into full collections of 60-200 ms, about a
    # third of the gateway's CPU in `meshlog bench propagation` (docs/benchmarks.md)
    gc.set_threshold(50_000, 20, 10)
    async with _nats(nats_url, "meshlog-gateway") as nc:
        bus = await JetStreamProjectionBus.open(nc, replicas=replicas)
        event_log = await JetStreamEventLog.open(nc, replicas=replicas)
        insights = await JetStreamInsights.open(nc, replicas=replicas)
        # cancellation (SIGTERM) reaches Gateway.serve, which drains before NATS is closed:
        # the view keeps following the bus while the last streams end
        gateway = Gateway(bus, host=host, port=port, max_connection_age_s=max_connection_age_s,
                          drain_grace_s=drain_grace_s, event_log=event_log, insights=insights,
                          zone=zone, deregistration_delay_s=deregistration_delay_s)
        health = HealthServer(gateway, health_sock)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(health.run(), name="health")
            tg.create_task(gateway.run())
            await gateway.serving.wait()
            tg.create_task(serve_requests(nc, XDS_CONFIG_SUBJECTS, XDS_CONFIG_QUEUE,
                                          ConfigService(gateway.view, gateway.cache).handle))
            print(f"gateway readiness on http://{host}:{health.port}/ready", flush=True)
            print(f"xDS gateway serving on {host}:{gateway.port}", flush=True)


async def run_api_process(*, nats_url: str, database: str, host: str, port: int,
                          zone: str, replicas: int = 1) -> None:
    sock = bind_socket(host, port, "--api-port")
    try:
        async with _nats(nats_url, "meshlog-api") as nc:
            event_log = await JetStreamEventLog.open(nc, replicas=replicas)
            store = await open_store(database)
            try:
                print(f"API listening on http://{host}:{sock.getsockname()[1]}", flush=True)
                await serve_api(create_app(Commands(event_log, zone=zone), store,
                                       inspector=ProxyInspector(nc)), sock)
            finally:
                await store.close()
    finally:
        sock.close()
