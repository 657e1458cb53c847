"""`meshlog up`: the whole control plane in one process on embedded defaults.

An embedded nats-server (unless --nats-url), the projector, one xDS gateway and the HTTP API,
as components of one TaskGroup. Ctrl-C or SIGTERM cancels the group; each component closes in
its `finally`. State lives in the data dir (JetStream store, SQLite read models), so a restart
resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack

import uvicorn
from litestar import Litestar

from events import JetStreamEventLog, TransientError, connect_nats
from events.bus.insights import JetStreamInsights
from events.bus.projection_bus import JetStreamProjectionBus
from events.bus.requests import XDS_CONFIG_QUEUE, XDS_CONFIG_SUBJECTS, serve_requests
from events.commands import Commands
from projections import (
    DEFAULT_GRACE_PERIOD_MS,
    Projector,
    ProjectorHalted,
    ReadModelStore,
    SequenceGap,
    StoreUnavailable,
    open_store,
)
from services.api.app import api_state, create_app
from services.api.proxy_inspector import ProxyInspector
from services.errors import ConfigError
from services.runtime.config import UpConfig
from services.runtime.embedded_nats import run_nats_server
from services.runtime.readmodels import SwappableReadModels, pointed_database
from xds_gateway import Gateway
from xds_gateway.proxies.config_service import ConfigService
from xds_gateway.server.readiness import HealthServer

__all__ = ["bind_socket", "run_projector", "run_up", "serve_api"]

log = logging.getLogger("meshlog.up")


async def run_projector(projector: Projector) -> None:
    """Run the projector; if it halts (gap, quarantined event), keep the rest serving.

    The API and gateways go on answering from the last consistent read models; the halt is
    logged, visible at GET /_quarantine and /metrics, and survives restarts until fixed.
    """
    delay = 0.5
    while True:
        try:
            await projector.run()
        except (ProjectorHalted, SequenceGap) as exc:
            log.error("PROJECTOR HALTED: %s", exc)
            await asyncio.Event().wait()  # stay halted until the process stops
        except (TransientError, StoreUnavailable) as exc:
            # resuming from the checkpoint and reconciling the bus is always safe
            log.warning("projector interrupted (%s); restarting in %.1f s", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)


def bind_socket(host: str, port: int, flag: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"{flag}: cannot listen on {host}:{port} ({exc.strerror}); "
                          f"pick another port, or 0 for any free one") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_api(app: Litestar, sock: socket.socket) -> None:
    server = _Server(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False))
    try:
        await server.serve(sockets=[sock])
    finally:
        server.should_exit = True


async def run_up(cfg: UpConfig, announce: Callable[[dict[str, str]], None] = print) -> None:
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    api_sock = bind_socket(cfg.api_host, cfg.api_port, "--api-port")
    async with AsyncExitStack() as stack:
        stack.callback(api_sock.close)
        if cfg.nats_url:
            url = cfg.nats_url
        else:
            url = await stack.enter_async_context(
                run_nats_server(cfg.data_dir / "nats", port=cfg.nats_port))
        nc = await connect_nats(url, name="meshlog-up")
        stack.push_async_callback(nc.close)
        event_log = await JetStreamEventLog.open(nc)
        bus = await JetStreamProjectionBus.open(nc)
        commands = Commands(event_log, zone=cfg.zone)
        await commands.configure_ipam("MeshService", cfg.vip_cidr)
        await commands.configure_grace_period(
            "MeshService", cfg.meshservice_grace_period_ms, DEFAULT_GRACE_PERIOD_MS)
        database = cfg.database or pointed_database(cfg.data_dir) or cfg.database_url
        api_store = await open_store(database)
        app = create_app(commands, api_store, inspector=ProxyInspector(nc))
        state = api_state(app)

        def use_store(store: ReadModelStore) -> None:
            state.store = store

        readmodels = SwappableReadModels(event_log, bus, zone=cfg.zone, data_dir=cfg.data_dir,
                                         url=database, on_swap=use_store)
        state.readmodels = readmodels
        stack.push_async_callback(lambda: state.store.close())
        gateway = Gateway(bus, host=cfg.xds_host, port=cfg.xds_port, event_log=event_log,
                          insights=await JetStreamInsights.open(nc), zone=cfg.zone,
                          deregistration_delay_s=cfg.deregistration_delay_s)
        health = HealthServer(gateway, bind_socket(cfg.xds_host, 0, "gateway health"))
        async with asyncio.TaskGroup() as tg:
            tg.create_task(readmodels.run(run_projector, api_store), name="read models")
            tg.create_task(health.run(), name="gateway health")
            tg.create_task(gateway.run(), name="gateway")
            tg.create_task(serve_api(app, api_sock), name="api")
            await gateway.serving.wait()
            tg.create_task(serve_requests(nc, XDS_CONFIG_SUBJECTS, XDS_CONFIG_QUEUE,
                                          ConfigService(gateway.view, gateway.cache).handle),
                           name="config requests")
            api_host, api_port = api_sock.getsockname()[:2]
            where = {
                "api": f"http://{api_host}:{api_port}",
                "xds": f"{cfg.xds_host}:{gateway.port}",
                "gateway_health": f"http://{cfg.xds_host}:{health.port}",
                "nats": url,
                "database": database,
                "data_dir": str(cfg.data_dir),
            }
            (cfg.data_dir / "up.json").write_text(json.dumps(where, indent=2))
            announce(where)
