"""The control plane's parts as separate processes, for scale-out (compose.yaml):

    meshlog projector --nats-url URL [--nats-creds FILE] --database URL [--secret-key-file F]
                      [--lease-ttl 5s] [--metrics-port P (/ready, /live, /metrics)]
                      [--mode global|zone [--sync-creds FILE --admin-creds FILE]]
    meshlog gateway   --nats-url URL [--nats-creds FILE] [--xds-port 5678] [--drain-grace 10]
                      [--tls-cert-file F --tls-key-file K] [--dns-cache-ttl 10s]
                      [--dns-server IP[:PORT]] [--no-auth]
    meshlog api       --nats-url URL [--nats-creds FILE] --database URL [--api-port 5681]
                      [--secret-key-file F] [--api-tls-cert-file F --api-tls-key-file K]

Each connects to NATS (as its role's user, with --nats-creds: README, NATS permissions), runs
one component until SIGTERM or SIGINT (both handled explicitly, services.runtime.shutdown, also
when started with SIGINT ignored), and closes in order. A gateway first drains (xds-rules.md
#14): no new streams, GOAWAY, its open streams ended a few at a time within the drain grace, so
its proxies reconnect to the other replicas; then it drains NATS and exits 0. The API first
drains its requests (services.runtime.api_server), then closes its store, then NATS. The API
writes its admin token and `api.json` (where it listens, which process it is; removed when it
stops) to its data dir, and keeps the token
signed with the newest user-token key while it runs (services.runtime.admin_token). None of
them exits because NATS went away: nats-py reconnects, the projector restarts from its
checkpoint, the API answers 503 meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
from pathlib import Path

from events import DEFAULT_ZONE, GLOBAL_ZONE, JetStreamEventLog
from events.bus.insights import JetStreamInsights
from events.bus.projection_bus import JetStreamProjectionBus
from events.bus.requests import XDS_CONFIG_QUEUE, XDS_CONFIG_SUBJECTS, serve_requests
from events.bus.source_keeper import serve_source_updates
from events.bus.sources import source_states, zone_filter
from events.commands import Commands
from events.identity import SecretKey
from projections import (
    DEFAULT_CIDRS,
    DEFAULT_GRACE_PERIOD_MS,
    Projector,
    fold_versions,
    open_store,
    redacted_url,
)
from projections.worker import LIVE_BATCH
from services.api.app import create_app
from services.api.auth import ApiAuth
from services.api.proxy_inspector import ProxyInspector
from services.metrics import exposition
from services.runtime.admin_token import AdminTokenKeeper
from services.runtime.api_server import DEFAULT_API_DRAIN_GRACE_S, ApiServer
from services.runtime.api_tls import ApiTls
from services.runtime.config import ADMIN_TOKEN_FILE, API_FILE
from services.runtime.credentials import api_tokens
from services.runtime.metrics_server import ReadinessCheck, serving_metrics
from services.runtime.shutdown import handle_signals
from services.runtime.standby import Readiness, StandbyProjector, single_projector_readiness
from services.runtime.up import (
    at_start,
    bind_socket,
    nats_connection,
    run_projector,
    warn_no_auth,
)
from services.runtime.up_file import remove_named_file, write_named_file
from services.runtime.zone_sync import Mode, ZoneSync
from xds_gateway import Gateway
from xds_gateway.gateway import DEFAULT_DRAIN_GRACE_S
from xds_gateway.proxies.config_service import ConfigService
from xds_gateway.resolver import DEFAULT_DNS_CACHE_TTL_S, DnsServerLookup
from xds_gateway.server.readiness import HealthServer
from xds_gateway.server.serving_tls import ServingTls

__all__ = ["run_api_process", "run_gateway_process", "run_projector_process"]

log = logging.getLogger("meshlog")

PROCESS_GRACE_S = 15.0
"""SIGINT/SIGTERM to exit, for the projector (a commit, closing) and the API (its drain)."""


async def run_projector_process(*, nats_url: str, database: str, zone: str,
                                credentials: Path | None = None, replicas: int = 1,
                                meshservice_grace_period_ms: int = DEFAULT_GRACE_PERIOD_MS,
                                mmzs_vip_cidr: str = DEFAULT_CIDRS["MeshMultiZoneService"],
                                secret_key: SecretKey | None = None,
                                lease_ttl_s: float = 0, metrics_host: str = "127.0.0.1",
                                metrics_port: int | None = None,
                                mode: Mode = "standalone",
                                max_batch: int = LIVE_BATCH,
                                sync_credentials: Path | None = None,
                                admin_credentials: Path | None = None) -> None:
    """`lease_ttl_s` > 0: active/standby (services.runtime.standby); 0: fold unconditionally
    (a single projector). `metrics_port`: serve `GET /metrics`, `/ready` and `/live` there
    (none without it). `sync_credentials`: the sync role's user, for the multi-zone sync's own
    connection (`mode` global or zone; None: it shares the projector's). `admin_credentials`:
    the admin user's, for the source keeper that applies the sync's changes of sources
    (events.bus.source_keeper; None: on the projector's own connection, which then needs
    admin's permissions, or a NATS without users)."""
    metrics = None if metrics_port is None else bind_socket(metrics_host, metrics_port,
                                                              "--metrics-port")
    check: ReadinessCheck | None = None

    async def readiness() -> Readiness:
        if check is None:
            return 503, {"role": "starting", "reason": "connecting to NATS and the store"}
        return await check()

    # a signal cancels: the projector stops between batches (a commit is whole)
    with handle_signals(PROCESS_GRACE_S):
        reconnected = asyncio.Event()
        if metrics is not None:
            print(f"projector health on http://{metrics_host}:{metrics.getsockname()[1]} "
                  f"(/ready, /live, /metrics)", flush=True)
        async with serving_metrics(metrics, readiness), nats_connection(
                nats_url, "meshlog-projector", reconnected, credentials=credentials) as nc, \
                contextlib.AsyncExitStack() as stack:
            event_log = await at_start("projector", lambda: JetStreamEventLog.open(
                nc, replicas=replicas, subjects=_subjects(mode, zone)))
            commands = Commands(event_log, zone=zone)
            await at_start("projector", lambda: commands.configure_grace_period(
                "MeshService", meshservice_grace_period_ms, DEFAULT_GRACE_PERIOD_MS))
            await at_start("projector", lambda: commands.configure_ipam(
                "MeshMultiZoneService", mmzs_vip_cidr,
                default=DEFAULT_CIDRS["MeshMultiZoneService"]))
            bus = await at_start("projector", lambda: JetStreamProjectionBus.open(
                nc, replicas=replicas))
            store = await open_store(database)
            syncing = keeping = None
            if mode != "standalone":
                # the sources of the stream (events.bus.sources), on a connection as the sync
                # role's user (`--sync-creds`); without it on the projector's, whose user must
                # then have the sync's permissions (admin's, or a NATS without users)
                sync_nc = nc if sync_credentials is None else await stack.enter_async_context(
                    nats_connection(nats_url, "meshlog-sync", credentials=sync_credentials))
                keeper_nc = nc if admin_credentials is None else \
                    await stack.enter_async_context(nats_connection(
                        nats_url, "meshlog-sources", credentials=admin_credentials))
                keeper_ready = asyncio.Event()
                keeping = asyncio.create_task(serve_source_updates(
                    keeper_nc, GLOBAL_ZONE if mode == "global" else zone, keeper_ready),
                                              name="source keeper")
                keeping.add_done_callback(functools.partial(_keeper_ended, keeper_ready))
                syncing = asyncio.create_task(ZoneSync(
                    sync_nc, mode=mode, zone=zone, replicas=replicas).run(keeper_ready),
                                              name="multi-zone sync")
            try:
                # a store of a newer release's fold: refused at once (NewerFoldVersion)
                await fold_versions(store, where=f"the read models at {redacted_url(database)}")
                if lease_ttl_s > 0:
                    contender = StandbyProjector(event_log, store, bus, zone=zone,
                                                 secret_key=secret_key, reconnected=reconnected,
                                                 lease_ttl_s=lease_ttl_s,
                                                 max_batch=max_batch)
                    check = contender.readiness
                    await contender.run()
                else:
                    projector = Projector(event_log, store, bus, zone=zone,
                                          secret_key=secret_key, max_batch=max_batch)

                    async def single() -> Readiness:
                        return single_projector_readiness(projector)

                    check = single
                    await run_projector(projector, reconnected)
            finally:
                for task in (syncing, keeping):
                    if task is not None:
                        task.cancel()
                        await asyncio.wait([task])
                await store.close()


def _keeper_ended(ready: asyncio.Event, task: asyncio.Task[None]) -> None:
    """The source keeper's task ended: said, never silent. The sync, which waits for it to
    serve, goes on (its changes of sources then fail, each saying that no keeper answers)."""
    if task.cancelled():
        return
    exc = task.exception()
    log.error("the source keeper stopped (%s); the multi-zone sync cannot change the "
              "stream's sources until this projector is restarted",
              f"{type(exc).__name__}: {exc}" if exc is not None else "it returned")
    ready.set()


async def run_gateway_process(*, nats_url: str, host: str, port: int,
                              credentials: Path | None = None,
                              max_connection_age_s: float = 0, replicas: int = 1,
                              drain_grace_s: float = DEFAULT_DRAIN_GRACE_S,
                              zone: str = DEFAULT_ZONE, health_port: int = 5680,
                              deregistration_delay_s: float = 10.0, no_auth: bool = False,
                              mode: Mode = "standalone", tls: ServingTls | None = None,
                              dns_cache_ttl_s: float = DEFAULT_DNS_CACHE_TTL_S,
                              dns_server: tuple[str, int] | None = None) -> None:
    """`tls`: serve ADS and HDS over TLS only (`--tls-cert-file`, `--tls-key-file`)."""
    # a signal cancels: cancellation reaches Gateway.serve, which drains before NATS is
    # closed (the view keeps following the bus while the last streams end)
    with handle_signals(drain_grace_s + 5):
        health_sock = bind_socket(host, health_port, "--health-port")
        # A gateway keeps ~1,000 streams' objects alive and allocates in bursts on every push;
        # at the default gen-0 threshold (700) the collector ran dozens of times per push round,
        # scanning objects still in flight and promoting them into full collections of 60-200
        # ms, about a third of the gateway's CPU in `meshlog bench propagation`
        # (docs/benchmarks.md)
        gc.set_threshold(50_000, 20, 10)
        async with nats_connection(nats_url, "meshlog-gateway", credentials=credentials) as nc:
            bus = await at_start("gateway", lambda: JetStreamProjectionBus.open(
                nc, replicas=replicas))
            event_log = await at_start("gateway", lambda: JetStreamEventLog.open(
                nc, replicas=replicas, subjects=_subjects(mode, zone)))
            insights = await at_start("gateway", lambda: JetStreamInsights.open(
                nc, replicas=replicas))
            gateway = Gateway(bus, host=host, port=port,
                              max_connection_age_s=max_connection_age_s,
                              drain_grace_s=drain_grace_s, event_log=event_log,
                              insights=insights, zone=zone,
                              deregistration_delay_s=deregistration_delay_s, no_auth=no_auth,
                              tls=tls, dns_cache_ttl_s=dns_cache_ttl_s,
                              address_lookup=None if dns_server is None
                              else DnsServerLookup(*dns_server))
            if no_auth:
                warn_no_auth(f"{host}:{port}")
            health = HealthServer(gateway, health_sock, metrics=exposition)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(health.run(), name="health")
                tg.create_task(gateway.run())
                await gateway.serving.wait()
                tg.create_task(serve_requests(nc, XDS_CONFIG_SUBJECTS, XDS_CONFIG_QUEUE,
                                              ConfigService(gateway.view, gateway.cache).handle))
                print(f"gateway readiness on http://{host}:{health.port}/ready", flush=True)
                if tls is not None:
                    print(f"xDS gateway serves TLS only, with {tls.cert_file}", flush=True)
                print(f"xDS gateway serving on {host}:{gateway.port}", flush=True)


async def run_api_process(*, nats_url: str, database: str, host: str, port: int,
                          zone: str, data_dir: Path, secret_key: SecretKey | None,
                          credentials: Path | None = None, replicas: int = 1,
                          localhost_is_admin: bool = True,
                          drain_grace_s: float = DEFAULT_API_DRAIN_GRACE_S,
                          mode: Mode = "standalone", tls: ApiTls | None = None,
                          access_log: bool = True,
                          access_log_forwarded_for: bool = False) -> None:
    """`secret_key`: every API replica must have the same (the CA and signing keys in the log
    are sealed with it); None: this API signs no tokens, writes no admin token, and refuses
    Meshes with mTLS. `tls`: serve HTTPS only (`--api-tls-cert-file`, `--api-tls-key-file`)."""
    with handle_signals(max(PROCESS_GRACE_S, drain_grace_s + 5)) as shutdown:
        sock = bind_socket(host, port, "--api-port")
        try:
            async with nats_connection(nats_url, "meshlog-api", credentials=credentials) as nc:
                event_log = await at_start("api", lambda: JetStreamEventLog.open(
                    nc, replicas=replicas, subjects=_subjects(mode, zone)))
                admin_token = data_dir / ADMIN_TOKEN_FILE
                # reads (or makes) the token signing keys: a read across subjects, which
                # waits for the stream's leader like the open before it
                tokens = await at_start("api", lambda: api_tokens(
                    event_log, zone=zone, secret_key=secret_key, admin_token=admin_token,
                    deployment=mode))
                keeper = None if tokens is None else AdminTokenKeeper(
                    admin_token, tokens, event_log, zone=zone)
                store = await open_store(database)
                try:
                    api = ApiServer(create_app(Commands(event_log, zone=zone,
                                                        secret_key=secret_key,
                                                        deployment=mode), store,
                                               inspector=ProxyInspector(nc, replicas=replicas),
                                               auth=ApiAuth(
                                                   localhost_is_admin=localhost_is_admin,
                                                   tokens=tokens, admin_token=keeper),
                                               sources=None if mode == "standalone"
                                               else functools.partial(source_states, nc)),
                                    sock, drain_grace_s=drain_grace_s, tls=tls,
                                    access_log=access_log,
                                    access_log_forwarded_for=access_log_forwarded_for)
                    async with asyncio.TaskGroup() as tg:
                        serving = tg.create_task(api.run(), name="api")
                        keeping = None if keeper is None else tg.create_task(
                            keeper.run(), name="admin token")
                        scheme = "http" if tls is None else "https"
                        url = f"{scheme}://{host}:{sock.getsockname()[1]}"
                        written = _write_api_file(data_dir, url, admin_token)
                        try:
                            print(f"API listening on {url}", flush=True)
                            await shutdown.wait()
                            api.stop()  # requests in flight finish, or are answered 503
                            await serving
                        finally:
                            # so the CLI sends the admin token to no later control plane on
                            # this address (services.runtime.up_file)
                            remove_named_file(data_dir, API_FILE, written)
                        if keeping is not None:
                            keeping.cancel()
                finally:
                    await store.close()  # then NATS, leaving `nats_connection`
        finally:
            sock.close()


def _write_api_file(data_dir: Path, url: str, admin_token: Path) -> str:
    """`<data dir>/api.json`: where this API listens, so that the CLI of this data dir sends
    the admin token to it, and to no other API (`services.cli.client.admin_token_file`), and
    which process wrote it (`services.runtime.up_file`); the text written."""
    where = {"api": url, "admin_token": str(admin_token)}
    return write_named_file(data_dir, API_FILE, where, private=True)


def _subjects(mode: Mode, zone: str) -> list[str] | None:
    """The event stream's own subjects in a multi-zone deployment (events.bus.sources)."""
    return None if mode == "standalone" else [zone_filter(zone)]
