"""`meshlog up`: the whole control plane in one process on embedded defaults.

An embedded nats-server (unless --nats-url), the projector, one xDS gateway and the HTTP API,
as components of one TaskGroup. `--projectors N` (N >= 2) runs N projector tasks contending for
the lease instead of one (services.runtime.standby): one folds, another takes over when its
connection or task dies; who leads is at `GET /_admin/projectors` and in `/metrics`. The
embedded server has one user per role (services.runtime.nats_users, README "NATS permissions"),
and each component talks to it on its own connection as its role's user, so what runs here in
one process runs under the permissions separate processes get. SIGINT (Ctrl-C) or SIGTERM
drains (services.runtime.shutdown): the API stops accepting requests and answers those in
flight (services.runtime.api_server) while the projector and NATS still run; then the other
components are cancelled and close in their `finally`; then the store and NATS are closed, in
that order. State lives in the data dir (JetStream store, SQLite read models), so a restart
resumes where it stopped; so do the secret key (`secret.key`, made at first start unless
`--secret-key-file` names one) and the admin token (`admin-token`), both mode 0600
(services.runtime.credentials). With `--xds-tls` the gateway serves xDS over TLS with the data
dir's own CA and certificate (`xds-tls/`, services.runtime.xds_certificate), made at the first
start and kept; with `--tls-cert-file` and `--tls-key-file`, with those. The API serves HTTPS
the same way: `--api-tls` (its own CA in `api-tls/`, which up.json names as `api_ca_cert` for
the CLI), or `--api-tls-cert-file` and `--api-tls-key-file` (services.runtime.api_tls).

A lost NATS connection is not fatal: nats-py reconnects forever (`events.connect_nats`), the
API answers 503 for what needs NATS meanwhile, and the projector is restarted from its
checkpoint (`run_projector`) until NATS is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, assert_never

import msgspec
from nats.aio.client import Client as NATS

from events import (
    GLOBAL_ZONE,
    EventLogUnavailable,
    JetStreamEventLog,
    connect_nats,
    resource_subject,
)
from events.bus._retry import retried
from events.bus.insights import JetStreamInsights
from events.bus.permissions import ROLES, Role
from events.bus.projection_bus import JetStreamProjectionBus
from events.bus.requests import XDS_CONFIG_QUEUE, XDS_CONFIG_SUBJECTS, serve_requests
from events.bus.source_keeper import serve_source_updates
from events.bus.sources import GLOBAL_DOMAIN, source_states, zone_filter
from events.commands import Commands
from events.identity import SecretKey
from events.resources import SYNCED_HOSTNAME_GENERATORS
from projections import (
    DEFAULT_CIDRS,
    DEFAULT_GRACE_PERIOD_MS,
    ReadModelStore,
    fold_versions,
    open_store,
    redacted_url,
)
from services.api.app import ApiState, api_state, create_app
from services.api.auth import ApiAuth
from services.api.proxy_inspector import ProxyInspector
from services.errors import ConfigError
from services.metrics import watch_nats
from services.runtime.admin_token import AdminTokenKeeper
from services.runtime.api_server import DEFAULT_API_DRAIN_GRACE_S, ApiServer
from services.runtime.api_tls import up_api_tls
from services.runtime.config import ADMIN_TOKEN_FILE, UpConfig, secret_key_of
from services.runtime.credentials import api_tokens
from services.runtime.embedded_nats import run_nats_server
from services.runtime.nats_users import (
    LEAF_USER,
    ensure_leaf_password,
    ensure_seeds,
    leafnode_listener,
    leafnode_remote,
    write_server_config,
)
from services.runtime.projector_loop import run_projector
from services.runtime.readmodels import RefusedSwap, SwappableReadModels, pointed_database
from services.runtime.shutdown import handle_signals
from services.runtime.standby import StandbyProjector, default_holder, projectors_status
from services.runtime.up_file import UP_FILE, remove_named_file, write_named_file
from services.runtime.xds_certificate import ensure_xds_certificate, xds_hosts
from services.runtime.zone_sync import ZoneSync
from xds_gateway import Gateway
from xds_gateway.gateway import DEFAULT_DRAIN_GRACE_S
from xds_gateway.proxies.config_service import ConfigService
from xds_gateway.resolver import DnsServerLookup
from xds_gateway.server.readiness import HealthServer
from xds_gateway.server.serving_tls import ServingTls

__all__ = ["START_S", "UP_GRACE_S", "at_start", "bind_socket", "nats_connection",
           "run_projector", "run_up", "warn_no_auth"]

log = logging.getLogger("meshlog.up")
T = TypeVar("T")

UP_GRACE_S = DEFAULT_API_DRAIN_GRACE_S + DEFAULT_DRAIN_GRACE_S + 5.0
"""SIGINT/SIGTERM to exit: the API's drain, then the gateway's, then closing."""
START_S = 60.0
"""How long a start waits out JetStream not answering yet (`at_start`)."""


async def at_start(what: str, step: Callable[[], Awaitable[T]]) -> T:
    """A step of a start that needs JetStream (a process's; `meshlog up`'s). Processes
    started together on a new cluster (compose) find the stream made by one of them and its
    replicas still electing a leader; a cluster just started may not yet place a replicated
    stream (its meta leader has not heard from every node): the step is tried again every
    second for up to `START_S`, said once; then its error ends the start."""
    def waiting(exc: BaseException) -> None:
        logging.getLogger("meshlog").warning(
            "%s: JetStream is not ready yet (%s); trying again for up to %.0f s", what, exc,
            START_S)

    return await retried(step, on=EventLogUnavailable, for_s=START_S, pause_s=1.0,
                         failed=waiting)



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
                   ) -> tuple[str, dict[Role, Path | None], str | None]:
    """The NATS to use, each role's credentials and, on global, the leafnode URL zones join
    with: `--nats-url` with `--nats-creds` (or none) for every role, else the embedded
    nats-server, started in `stack` with a user per role (services.runtime.nats_users) and,
    in a multi-zone deployment, its JetStream domain and leafnode link (events.bus.sources)."""
    if cfg.nats_url:
        return cfg.nats_url, dict.fromkeys(ROLES, cfg.nats_creds), None
    seeds = ensure_seeds(cfg.data_dir)
    if cfg.mode == "global" and cfg.leaf_port == 0:
        # nats-server's ports file does not report the leafnode port: choose a free one
        # here (a port taken in between makes nats-server exit, saying so in its log)
        probe = bind_socket(cfg.leaf_host, 0, "--leaf-port")
        cfg = msgspec.structs.replace(cfg, leaf_port=probe.getsockname()[1])
        probe.close()
    config = write_server_config(cfg.data_dir, seeds, cfg.zone, _multizone_conf(cfg))
    nats_dir = cfg.data_dir / "nats"
    name = "meshlog-global" if cfg.mode == "global" else f"meshlog-{cfg.zone}"
    url = await stack.enter_async_context(
        run_nats_server(nats_dir, port=cfg.nats_port, config=config, server_name=name))
    global_url = None
    if cfg.mode == "global":
        port = cfg.leaf_port
        host = socket.gethostname() if cfg.leaf_host in ("0.0.0.0", "::") else cfg.leaf_host
        global_url = (f"nats-leaf://{LEAF_USER}:{ensure_leaf_password(cfg.data_dir)}"
                      f"@{host}:{port}")
    return url, dict(seeds), global_url


def _multizone_conf(cfg: UpConfig) -> dict[str, Any]:
    """The embedded nats-server's JetStream domain and leafnode settings for `cfg.mode`:
    global listens for zones, a zone dials global (services.runtime.nats_users)."""
    match cfg.mode:
        case "standalone":
            return {}
        case "global":
            return {"jetstream": {"domain": GLOBAL_DOMAIN}, "leafnodes": leafnode_listener(
                cfg.leaf_host, cfg.leaf_port, ensure_leaf_password(cfg.data_dir), None)}
        case "zone":
            if cfg.global_url is None:  # parse_deployment requires it of an embedded zone
                raise ConfigError("--mode zone needs --global URL")
            return {"jetstream": {"domain": cfg.zone},
                    "leafnodes": leafnode_remote(cfg.global_url, None)}
        case _:
            assert_never(cfg.mode)


async def _synced_defaults(commands: Commands) -> None:
    """Global's default HostnameGenerators that sync down to zones (Kuma's
    `pkg/defaults/hostname_generator.go`), created once: an operator's change is kept."""
    for generator in SYNCED_HOSTNAME_GENERATORS:
        subject = resource_subject("HostnameGenerator", None, generator.name, GLOBAL_ZONE)
        if not (await commands.handler.current(subject)).seq:
            await commands.apply(generator)


async def _swappable(cfg: UpConfig, stack: AsyncExitStack, url: str, creds: Path | None,
                     database: str, state: ApiState, api_store: ReadModelStore,
                     secret_key: SecretKey | None) -> Callable[[], Coroutine[Any, Any, None]]:
    """One projector, without a lease, in swappable read models (services.runtime.readmodels):
    what `meshlog up` runs by default. Returns what runs it."""
    reconnected = asyncio.Event()
    nc = await stack.enter_async_context(
        nats_connection(url, "meshlog-projector", reconnected, credentials=creds))

    def use_store(store: ReadModelStore) -> None:
        state.store = store

    replicas = cfg.stream_replicas
    readmodels = SwappableReadModels(
        await at_start("up", lambda: JetStreamEventLog.open(nc, replicas=replicas)),
        await at_start("up", lambda: JetStreamProjectionBus.open(nc, replicas=replicas)),
        zone=cfg.zone,
        data_dir=cfg.data_dir, url=database, on_swap=use_store, secret_key=secret_key,
        # read models it chose itself (the data dir's, or where a swap moved them): rebuilt
        # when outdated; a `--database` given is the operator's, and stays theirs
        rebuild_outdated=cfg.database is None)
    state.readmodels = readmodels
    return partial(readmodels.run, partial(run_projector, reconnected=reconnected), api_store)


async def _contenders(cfg: UpConfig, stack: AsyncExitStack, url: str, creds: Path | None,
                      database: str, secret_key: SecretKey | None) -> list[StandbyProjector]:
    """`--projectors N` (N >= 2): N contenders for the projector lease, each with its own NATS
    connection as the projector user and its own store, like N `meshlog projector --lease-ttl`
    processes; one folds, another takes over when its connection or task dies."""
    contenders = []
    for i in range(1, cfg.projectors + 1):
        reconnected = asyncio.Event()
        nc = await stack.enter_async_context(nats_connection(
            url, f"meshlog-projector-{i}", reconnected, credentials=creds))
        store = await open_store(database)
        stack.push_async_callback(store.close)  # before its NATS connection (reverse order)
        contenders.append(StandbyProjector(
            await at_start("up", partial(JetStreamEventLog.open, nc,
                                         replicas=cfg.stream_replicas)), store,
            await at_start("up", partial(JetStreamProjectionBus.open, nc,
                                         replicas=cfg.stream_replicas)),
            zone=cfg.zone, secret_key=secret_key, reconnected=reconnected,
            lease_ttl_s=cfg.lease_ttl_s, holder=f"{default_holder()}/{i}"))
    return contenders


def _xds_tls(cfg: UpConfig) -> tuple[ServingTls | None, dict[str, str]]:
    """The gateway's TLS (`--tls-cert-file`, else `--xds-tls`, else none) and what to announce
    of it: where proxies find the CA to trust."""
    if cfg.tls_files is not None:
        tls = ServingTls(*cfg.tls_files)
        return tls, {"xds_tls_cert": str(tls.cert_file)}
    if not cfg.xds_tls:
        return None, {}
    files = ensure_xds_certificate(cfg.data_dir, xds_hosts(cfg.xds_host, socket.gethostname()))
    return ServingTls(files.cert_file, files.key_file), {"xds_ca_cert": str(files.ca_file)}


async def run_up(cfg: UpConfig, announce: Callable[[dict[str, str]], None] = print) -> None:
    with handle_signals(UP_GRACE_S) as shutdown:
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        tls, tls_where = _xds_tls(cfg)  # a bad file stops here, before anything starts
        api_tls, api_tls_where = up_api_tls(cfg)  # so does one of the API's
        secret_key = secret_key_of(cfg.secret_key_file, cfg.data_dir, create=True)
        api_sock = bind_socket(cfg.api_host, cfg.api_port, "--api-port")
        async with AsyncExitStack() as stack:
            stack.callback(api_sock.close)
            url, credentials, global_url = await _nats_of(cfg, stack)
            # one connection per role, each as its role's user: what `meshlog up` runs in one
            # process is what separate processes do, under the same permissions
            api_nc = await stack.enter_async_context(
                nats_connection(url, "meshlog-api", credentials=credentials["api"]))
            gateway_nc = await stack.enter_async_context(
                nats_connection(url, "meshlog-gateway", credentials=credentials["gateway"]))
            # the command side first: it creates the stream if missing and records settings
            replicas = cfg.stream_replicas
            event_log = await at_start("up", lambda: JetStreamEventLog.open(
                api_nc, replicas=replicas,
                subjects=None if cfg.mode == "standalone" else [zone_filter(cfg.zone)]))
            commands = Commands(event_log, zone=cfg.zone, secret_key=secret_key,
                                deployment=cfg.mode)
            if cfg.mode == "global":
                await at_start("up", lambda: _synced_defaults(commands))
            await at_start("up", lambda: commands.configure_ipam("MeshService", cfg.vip_cidr))
            await at_start("up", lambda: commands.configure_ipam(
                "MeshMultiZoneService", cfg.mmzs_vip_cidr,
                default=DEFAULT_CIDRS["MeshMultiZoneService"]))
            await at_start("up", lambda: commands.configure_grace_period(
                "MeshService", cfg.meshservice_grace_period_ms, DEFAULT_GRACE_PERIOD_MS))
            database = cfg.database or pointed_database(cfg.data_dir) or cfg.database_url
            api_store = await open_store(database)
            try:
                # a store of a newer release's fold is refused before anything serves
                # (NewerFoldVersion); an older one is rebuilt (services.runtime.readmodels)
                await fold_versions(api_store,
                                    where=f"the read models at {redacted_url(database)}")
            except BaseException:
                await api_store.close()
                raise
            admin_token = cfg.data_dir / ADMIN_TOKEN_FILE
            tokens = await at_start("up", lambda: api_tokens(
                event_log, zone=cfg.zone, secret_key=secret_key, admin_token=admin_token,
                deployment=cfg.mode))
            keeper = None if tokens is None else AdminTokenKeeper(
                admin_token, tokens, event_log, zone=cfg.zone)
            app = create_app(commands, api_store,
                             inspector=ProxyInspector(api_nc, replicas=replicas),
                             auth=ApiAuth(localhost_is_admin=cfg.localhost_is_admin,
                                          tokens=tokens, admin_token=keeper),
                             sources=None if cfg.mode == "standalone"
                             else partial(source_states, api_nc))
            state = api_state(app)
            if cfg.projectors > 1:
                contenders = await _contenders(cfg, stack, url, credentials["projector"],
                                               database, secret_key)
                state.readmodels = RefusedSwap(cfg.projectors)
                state.projectors = partial(projectors_status, contenders)
                projecting = [(f"projector {c.lease.holder}", c.run) for c in contenders]
            else:
                projecting = [("read models", await _swappable(
                    cfg, stack, url, credentials["projector"], database, state, api_store,
                    secret_key))]
            # closed before NATS (the stack unwinds in reverse), after the API drained
            stack.push_async_callback(lambda: state.store.close())
            gateway_bus = await at_start("up", lambda: JetStreamProjectionBus.open(
                gateway_nc, replicas=replicas))
            gateway_log = await at_start("up", lambda: JetStreamEventLog.open(
                gateway_nc, replicas=replicas))
            insights = await at_start("up", lambda: JetStreamInsights.open(
                gateway_nc, replicas=replicas))
            gateway = Gateway(gateway_bus, host=cfg.xds_host, port=cfg.xds_port,
                              event_log=gateway_log, insights=insights,
                              zone=cfg.zone,
                              deregistration_delay_s=cfg.deregistration_delay_s,
                              no_auth=cfg.no_auth, tls=tls, dns_cache_ttl_s=cfg.dns_cache_ttl_s,
                              address_lookup=None if cfg.dns_server is None
                              else DnsServerLookup(*cfg.dns_server))
            if cfg.no_auth:
                warn_no_auth(f"{cfg.xds_host}:{cfg.xds_port}")
            if cfg.mode != "standalone":
                sync_nc = await stack.enter_async_context(
                    nats_connection(url, "meshlog-sync", credentials=credentials["sync"]))
                # the sync may not update a stream: the keeper, on admin's connection,
                # applies its sources-only changes (events.bus.source_keeper); the sync
                # starts once it serves
                keeper_nc = await stack.enter_async_context(nats_connection(
                    url, "meshlog-sources", credentials=credentials["admin"]))
                keeper_ready = asyncio.Event()
                projecting.append(("source keeper", partial(
                    serve_source_updates, keeper_nc,
                    GLOBAL_ZONE if cfg.mode == "global" else cfg.zone, keeper_ready)))
                sync = ZoneSync(sync_nc, mode=cfg.mode, zone=cfg.zone,
                                replicas=cfg.stream_replicas)
                projecting.append(("multi-zone sync", partial(sync.run, keeper_ready)))
            health = HealthServer(gateway, bind_socket(cfg.xds_host, 0, "gateway health"))
            api = ApiServer(app, api_sock, tls=api_tls, access_log=cfg.api_access_log,
                            access_log_forwarded_for=cfg.api_access_log_forwarded_for)
            async with asyncio.TaskGroup() as tg:
                components = [tg.create_task(run(), name=name) for name, run in projecting]
                if keeper is not None:
                    components.append(tg.create_task(keeper.run(), name="admin token"))
                components += [
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
                    "api": f"{'https' if api_tls else 'http'}://{api_host}:{api_port}",
                    **api_tls_where,
                    "xds": f"{cfg.xds_host}:{gateway.port}",
                    **tls_where,
                    "gateway_health": f"http://{cfg.xds_host}:{health.port}",
                    "nats": url,
                    "mode": cfg.mode,
                    "zone": cfg.zone,
                    "database": database,
                    "data_dir": str(cfg.data_dir),
                    "admin_token": str(admin_token),
                    "projectors": str(cfg.projectors) if cfg.projectors == 1 else
                    f"{cfg.projectors}, active/standby (lease TTL {cfg.lease_ttl_s:g} s; "
                    f"who leads: GET /_admin/projectors)",
                }
                if global_url is not None:
                    where["global_url"] = global_url  # zones: meshlog up --zone Z --global URL
                if credentials["admin"] is not None and not cfg.nats_url:
                    # where maintenance commands find it; the path, never the seed
                    where["nats_admin_creds"] = str(credentials["admin"])
                # removed when this stops, so the CLI sends the admin token to no later
                # control plane on the same address (services.runtime.up_file)
                written = write_named_file(cfg.data_dir, UP_FILE, where)
                stack.callback(remove_named_file, cfg.data_dir, UP_FILE, written)
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
