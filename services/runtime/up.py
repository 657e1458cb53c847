"""`meshlog up`: the whole control plane in one process on embedded defaults.

An embedded nats-server (unless --nats-url), the projector, one xDS gateway and the HTTP API,
as components of one TaskGroup. The embedded server has one user per role
(services.runtime.nats_users, README "NATS permissions"), and each component talks to it on its
own connection as its role's user, so what runs here in one process runs under the
permissions separate processes get. SIGINT (Ctrl-C) or SIGTERM drains (services.runtime.shutdown):
the API stops accepting requests and answers those in flight (services.runtime.api_server)
while the projector and NATS still run; then the other components are cancelled and close in
their `finally`; then the store and NATS are closed, in that order. State lives in the data dir
(JetStream store, SQLite read models), so a restart resumes where it stopped; so do the secret
key (`secret.key`, made at first start unless `--secret-key-file` names one) and the admin
token (`admin-token`), both mode 0600 (services.runtime.credentials).

A lost NATS connection is not fatal: nats-py reconnects forever (`events.connect_nats`), the
API answers 503 for what needs NATS meanwhile, and the projector is restarted from its
checkpoint (`run_projector`) until NATS is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS

from events import JetStreamEventLog, PermanentError, TransientError, connect_nats
from events.bus.insights import JetStreamInsights
from events.bus.permissions import ROLES, Role
from events.bus.projection_bus import JetStreamProjectionBus
from events.bus.requests import XDS_CONFIG_QUEUE, XDS_CONFIG_SUBJECTS, serve_requests
from events.commands import Commands
from projections import (
    DEFAULT_GRACE_PERIOD_MS,
    Projector,
    ProjectorHalted,
    ReadModelStore,
    SequenceGap,
    StoreError,
    StoreUnavailable,
    open_store,
)
from services.api.app import api_state, create_app
from services.api.auth import ApiAuth
from services.api.proxy_inspector import ProxyInspector
from services.errors import ConfigError
from services.metrics import watch_nats
from services.runtime.api_server import DEFAULT_API_DRAIN_GRACE_S, ApiServer
from services.runtime.config import ADMIN_TOKEN_FILE, UpConfig, secret_key_of
from services.runtime.credentials import api_tokens
from services.runtime.embedded_nats import run_nats_server
from services.runtime.nats_users import ensure_seeds, write_server_config
from services.runtime.readmodels import SwappableReadModels, pointed_database
from services.runtime.shutdown import handle_signals
from xds_gateway import Gateway
from xds_gateway.gateway import DEFAULT_DRAIN_GRACE_S
from xds_gateway.proxies.config_service import ConfigService
from xds_gateway.server.readiness import HealthServer

__all__ = ["UP_GRACE_S", "bind_socket", "nats_connection", "run_projector", "run_up",
           "warn_no_auth"]

log = logging.getLogger("meshlog.up")

UP_GRACE_S = DEFAULT_API_DRAIN_GRACE_S + DEFAULT_DRAIN_GRACE_S + 5.0
"""SIGINT/SIGTERM to exit: the API's drain, then the gateway's, then closing."""
_RESTART_MAX_S = 5.0
"""The longest wait between two starts of an interrupted projector: once NATS (or the
database) is back, projection resumes within this."""


async def run_projector(projector: Projector, reconnected: asyncio.Event | None = None
                        ) -> None:
    """Run the projector; if it halts (gap, quarantined event), keep the rest serving.

    The API and gateways go on answering from the last consistent read models; the halt is
    logged, visible at GET /_quarantine and /metrics, and survives restarts until fixed.
    Anything else that stops it (NATS or the database unavailable; nats-py's own errors, such
    as "no responders" for a reader whose consumer went with a restarted nats-server) is
    retried, with a growing delay, for ever: resuming from the checkpoint and reconciling the
    bus is always safe, and the fold's own errors are halts, never retried. `reconnected`
    (set on each NATS reconnection) also restarts it: its reader's consumer may be gone with
    the server, which the reader itself notices only at its next idle fetch.
    """
    delay = 0.5
    while True:
        started_at = projector.position
        try:
            if await _unless_set(projector.run(), reconnected):
                log.info("NATS is back: projector resuming after sequence %d with a new reader",
                         projector.position)
                delay = 0.5
        except (ProjectorHalted, SequenceGap) as exc:
            log.error("PROJECTOR HALTED: %s", exc)
            await asyncio.Event().wait()  # stay halted until the process stops
        except Exception as exc:
            if _permanent(exc):
                raise  # the same again would fail again (e.g. StoreCorrupt)
            log.warning("projector interrupted (%r); restarting in %.1f s", exc, delay,
                        exc_info=not isinstance(exc, TransientError | StoreUnavailable))
            if projector.position > started_at:
                delay = 0.5  # it had been working: a new interruption, not the same one
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RESTART_MAX_S)


def _permanent(exc: Exception) -> bool:
    """Known to fail again the same way: the store is not what this code wrote, the stream
    breaks an invariant. Anything else, nats-py's untranslated errors included, may pass."""
    return (isinstance(exc, PermanentError)
            or (isinstance(exc, StoreError) and not isinstance(exc, StoreUnavailable)))


async def _unless_set(work: Coroutine[Any, Any, None], event: asyncio.Event | None) -> bool:
    """Run `work` to its end (its exception raised), unless `event` is set first: then cancel
    it and return True."""
    if event is None:
        await work
        return False
    event.clear()
    task = asyncio.ensure_future(work)
    setting = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait([task, setting], return_when=asyncio.FIRST_COMPLETED)
    finally:
        setting.cancel()
        task.cancel()
        await asyncio.wait([task, setting])  # both ended; neither's CancelledError is ours
    if task.cancelled():
        return True
    task.result()
    return False


def warn_no_auth(where: str) -> None:
    """The start-up warning of `--no-auth` (development only)."""
    log.warning("*** --no-auth: the xDS gateway on %s serves proxies WITHOUT dataplane tokens: "
                "anything that reaches it can get any proxy's configuration and register "
                "Dataplanes. Development only. ***", where)


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


@contextlib.asynccontextmanager
async def nats_connection(url: str, name: str, reconnected: asyncio.Event | None = None, *,
                          credentials: Path | None = None) -> AsyncIterator[NATS]:
    """A NATS connection (as the user of `credentials`, if any: README, NATS permissions),
    drained on exit (bounded); closed if it cannot drain (NATS down). Lost, it is
    re-established for ever (`connect_nats`), and `reconnected` set each time."""

    async def on_reconnect() -> None:
        log.warning("NATS connection %s re-established", name)
        if reconnected is not None:
            reconnected.set()

    nc = await connect_nats(url, name=name, credentials=credentials,
                            reconnected_cb=on_reconnect)
    watch_nats(name, nc)  # meshlog_nats_connected{connection=name}
    try:
        yield nc
    finally:
        try:
            await asyncio.wait_for(nc.drain(), timeout=5)
        except Exception as exc:  # reconnecting, or NATS gone: nothing left to flush to
            log.info("NATS connection %s not drained (%r); closing it", name, exc)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), timeout=5)


async def _nats_of(cfg: UpConfig, stack: AsyncExitStack
                   ) -> tuple[str, dict[Role, Path | None]]:
    """The NATS to use and each role's credentials: `--nats-url` with `--nats-creds` (or none)
    for every role, else the embedded nats-server, started in `stack` with a user per role
    (services.runtime.nats_users)."""
    if cfg.nats_url:
        return cfg.nats_url, dict.fromkeys(ROLES, cfg.nats_creds)
    seeds = ensure_seeds(cfg.data_dir)
    config = write_server_config(cfg.data_dir, seeds, cfg.zone)
    url = await stack.enter_async_context(
        run_nats_server(cfg.data_dir / "nats", port=cfg.nats_port, config=config))
    return url, dict(seeds)


async def run_up(cfg: UpConfig, announce: Callable[[dict[str, str]], None] = print) -> None:
    with handle_signals(UP_GRACE_S) as shutdown:
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        secret_key = secret_key_of(cfg.secret_key_file, cfg.data_dir, create=True)
        api_sock = bind_socket(cfg.api_host, cfg.api_port, "--api-port")
        async with AsyncExitStack() as stack:
            stack.callback(api_sock.close)
            url, credentials = await _nats_of(cfg, stack)
            # one connection per role, each as its role's user: what `meshlog up` runs in one
            # process is what separate processes do, under the same permissions
            api_nc = await stack.enter_async_context(
                nats_connection(url, "meshlog-api", credentials=credentials["api"]))
            reconnected = asyncio.Event()
            projector_nc = await stack.enter_async_context(
                nats_connection(url, "meshlog-projector", reconnected,
                                credentials=credentials["projector"]))
            gateway_nc = await stack.enter_async_context(
                nats_connection(url, "meshlog-gateway", credentials=credentials["gateway"]))
            # the command side first: it creates the stream if missing and records settings
            event_log = await JetStreamEventLog.open(api_nc)
            secret_key = secret_key_of(cfg.secret_key_file, cfg.data_dir, create=True)
            commands = Commands(event_log, zone=cfg.zone, secret_key=secret_key)
            await commands.configure_ipam("MeshService", cfg.vip_cidr)
            await commands.configure_grace_period(
                "MeshService", cfg.meshservice_grace_period_ms, DEFAULT_GRACE_PERIOD_MS)
            database = cfg.database or pointed_database(cfg.data_dir) or cfg.database_url
            api_store = await open_store(database)
            admin_token = cfg.data_dir / ADMIN_TOKEN_FILE
            tokens = await api_tokens(event_log, zone=cfg.zone, secret_key=secret_key,
                                      admin_token=admin_token)
            app = create_app(commands, api_store, inspector=ProxyInspector(api_nc),
                             auth=ApiAuth(localhost_is_admin=cfg.localhost_is_admin,
                                          tokens=tokens))
            state = api_state(app)

            def use_store(store: ReadModelStore) -> None:
                state.store = store

            readmodels = SwappableReadModels(
                await JetStreamEventLog.open(projector_nc),
                await JetStreamProjectionBus.open(projector_nc), zone=cfg.zone,
                data_dir=cfg.data_dir, url=database, on_swap=use_store, secret_key=secret_key)
            state.readmodels = readmodels
            # closed before NATS (the stack unwinds in reverse), after the API drained
            stack.push_async_callback(lambda: state.store.close())
            gateway = Gateway(await JetStreamProjectionBus.open(gateway_nc), host=cfg.xds_host,
                              port=cfg.xds_port, event_log=await JetStreamEventLog.open(gateway_nc),
                              insights=await JetStreamInsights.open(gateway_nc), zone=cfg.zone,
                              deregistration_delay_s=cfg.deregistration_delay_s,
                              no_auth=cfg.no_auth)
            if cfg.no_auth:
                warn_no_auth(f"{cfg.xds_host}:{cfg.xds_port}")
            health = HealthServer(gateway, bind_socket(cfg.xds_host, 0, "gateway health"))
            api = ApiServer(app, api_sock)
            async with asyncio.TaskGroup() as tg:
                components = [
                    tg.create_task(readmodels.run(partial(run_projector, reconnected=reconnected),
                                                 api_store), name="read models"),
                    tg.create_task(health.run(), name="gateway health"),
                    tg.create_task(gateway.run(), name="gateway"),
                ]
                serving_api = tg.create_task(api.run(), name="api")
                await gateway.serving.wait()
                components.append(tg.create_task(
                    serve_requests(gateway_nc, XDS_CONFIG_SUBJECTS, XDS_CONFIG_QUEUE,
                                   ConfigService(gateway.view, gateway.cache).handle),
                    name="config requests"))
                api_host, api_port = api_sock.getsockname()[:2]
                where = {
                    "api": f"http://{api_host}:{api_port}",
                    "xds": f"{cfg.xds_host}:{gateway.port}",
                    "gateway_health": f"http://{cfg.xds_host}:{health.port}",
                    "nats": url,
                    "database": database,
                    "data_dir": str(cfg.data_dir),
                    "admin_token": str(admin_token),
                }
                if credentials["admin"] is not None and not cfg.nats_url:
                    # where maintenance commands find it; the path, never the seed
                    where["nats_admin_creds"] = str(credentials["admin"])
                (cfg.data_dir / "up.json").write_text(json.dumps(where, indent=2))
                announce(where)
                await shutdown.wait()
                # 1. no new requests; those in flight finish (the projector still folds their
                # writes, NATS still acknowledges) or are answered 503 at the API's grace
                api.stop()
                await serving_api
                # 2. the rest: the projector stops between batches (a commit is whole), the
                # gateway drains its streams (xds-rules.md #14)
                for component in components:
                    component.cancel()
            # 3. leaving the stack: the API's store, then NATS, then the embedded nats-server
