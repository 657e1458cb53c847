"""The `meshlog` command line.

    meshlog up                         run the control plane (embedded NATS + SQLite)
    meshlog projector|gateway|api      run one part as its own process (scale-out)
    meshlog apply -f FILE              create or update resources (multi-document YAML or JSON)
    meshlog get PLURAL [-m MESH]       list: meshes, dataplanes, meshservices, hostnamegenerators,
                                       meshtrafficpermissions (-o table|yaml|json)
    meshlog get KIND NAME [-m MESH]    one resource: mesh, dataplane, meshservice, ...
    meshlog delete KIND NAME [-m MESH]
    meshlog inspect dataplane NAME [-m MESH] [--config]   connected?, xDS counters; or its config
    meshlog dataplane bootstrap --mesh M --name N [--token-file F]   an Envoy bootstrap
    meshlog generate dataplane-token|user-token ...  a token (admin; services/cli/tokens.py)
    meshlog revoke dataplane-token|user-token ...    revoke one (admin)
    meshlog replay --database URL [--to-seq N]       rebuild read models from the log
    meshlog export [--database URL] [-o FILE]        read models as canonical JSON
    meshlog quarantine                               events the projector could not apply
    meshlog top [--metrics URL]... [--once]          live view of proxies, pushes, NACKs, lag
    meshlog bench rebuild|ingest --events N          benchmarks
    meshlog bench propagation --proxies N [--gateways G]   xDS push latency through an LB
    meshlog bench rotation --proxies N               a certificate rotation wave to N proxies

The API address comes from --api, else $MESHLOG_API, else http://127.0.0.1:5681; the user
token from --token, else $MESHLOG_TOKEN, else the admin token of the `meshlog up` whose data dir
($MESHLOG_DATA_DIR, else .meshlog) names that API (services.cli.client).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import yaml

from events import MeshlogError
from services.cli.client import ApiClient, ApiError, api_token
from services.cli.resources import (
    cmd_apply,
    cmd_delete,
    cmd_get,
    cmd_quarantine,
    read_documents,
)
from services.cli.tokens import add_token_parsers, cmd_generate, cmd_revoke, read_token_file
from services.errors import ConfigError
from services.runtime.config import (
    UpConfig,
    env,
    parse_bool,
    parse_cidr,
    parse_duration_ms,
    parse_port,
    parse_positive,
    secret_key_of,
)

__all__ = ["main"]

def _run_until_signal(main_coro: Coroutine[Any, Any, None]) -> None:
    """Run a process's main coroutine. SIGINT and SIGTERM are its own to handle
    (`services.runtime.shutdown`): a stop by cancellation ends here quietly."""
    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        asyncio.run(main_coro)


def cmd_process(args: argparse.Namespace) -> int:
    from services.runtime import processes

    if not args.nats_url:
        raise SystemExit(f"error: meshlog {args.command} needs --nats-url (or MESHLOG_NATS_URL)")
    replicas = parse_positive("--stream-replicas", args.stream_replicas)
    credentials = _credentials_of(args)
    if args.command == "projector":
        coro = processes.run_projector_process(
            nats_url=args.nats_url, database=_database_of(args), zone=args.zone,
            credentials=credentials, replicas=replicas,
            meshservice_grace_period_ms=parse_duration_ms(
                "--meshservice-grace-period", args.meshservice_grace_period),
            secret_key=secret_key_of(args.secret_key_file, Path(args.data_dir), create=False),
            lease_ttl_s=parse_duration_ms("--lease-ttl", args.lease_ttl) / 1000,
            metrics_host=args.metrics_host,
            metrics_port=None if args.metrics_port is None else parse_port(
                "--metrics-port", args.metrics_port))
    elif args.command == "gateway":
        drain_grace_s = _seconds("--drain-grace", args.drain_grace)
        coro = processes.run_gateway_process(
            nats_url=args.nats_url, credentials=credentials, host=args.xds_host,
            port=parse_port("--xds-port", args.xds_port),
            max_connection_age_s=_seconds("--max-connection-age", args.max_connection_age),
            replicas=replicas, drain_grace_s=drain_grace_s, zone=args.zone,
            health_port=parse_port("--health-port", args.health_port),
            deregistration_delay_s=_seconds("--deregistration-delay",
                                            args.deregistration_delay),
            no_auth=_no_auth(args))
    else:
        coro = processes.run_api_process(
            nats_url=args.nats_url, credentials=credentials, database=_database_of(args),
            host=args.api_host,
            port=parse_port("--api-port", args.api_port), zone=args.zone, replicas=replicas,
            data_dir=Path(args.data_dir),
            # made in the data dir if missing: an API must sign (tokens, the admin token)
            secret_key=secret_key_of(args.secret_key_file, Path(args.data_dir), create=True),
            localhost_is_admin=_localhost_is_admin(args))
    _run_until_signal(coro)
    return 0


def _credentials_of(args: argparse.Namespace) -> Path | None:
    return Path(args.nats_creds) if args.nats_creds else None


def _seconds(flag: str, value: str) -> float:
    """A duration flag in seconds: `10`, `10s`, `250ms`, `30m`, `1h` (like
    `--meshservice-grace-period`); a ConfigError names the flag and value."""
    return parse_duration_ms(flag, value) / 1000


def cmd_up(args: argparse.Namespace) -> int:
    from services.runtime.up import run_up

    if args.nats_creds and not args.nats_url:
        raise ConfigError(f"--nats-creds {args.nats_creds}: only with --nats-url; the embedded "
                          f"nats-server makes its own users (in {args.data_dir}/nats-creds)")
    cfg = UpConfig(
        data_dir=Path(args.data_dir), nats_url=args.nats_url,
        nats_creds=_credentials_of(args),
        nats_port=parse_port("--nats-port", args.nats_port), database=args.database,
        api_host=args.api_host, api_port=parse_port("--api-port", args.api_port),
        xds_host=args.xds_host, xds_port=parse_port("--xds-port", args.xds_port),
        vip_cidr=parse_cidr("--vip-cidr", args.vip_cidr), zone=args.zone,
        meshservice_grace_period_ms=parse_duration_ms("--meshservice-grace-period",
                                                      args.meshservice_grace_period),
        deregistration_delay_s=_seconds("--deregistration-delay", args.deregistration_delay),
        secret_key_file=Path(args.secret_key_file) if args.secret_key_file else None,
        no_auth=_no_auth(args), localhost_is_admin=_localhost_is_admin(args),
        projectors=parse_positive("--projectors", args.projectors),
        lease_ttl_s=_positive_seconds("--lease-ttl", args.lease_ttl),
    )

    def announce(where: dict[str, str]) -> None:
        print("meshlog is up (Ctrl-C to stop)", flush=True)
        width = max(map(len, where), default=0)
        for what, address in where.items():
            print(f"  {what:<{width}}  {address}", flush=True)

    _run_until_signal(run_up(cfg, announce))
    print("meshlog stopped", file=sys.stderr)
    return 0


def _positive_seconds(flag: str, value: str) -> float:
    seconds = _seconds(flag, value)
    if seconds <= 0:
        raise ConfigError(f"{flag}: {value!r} must be longer than 0")
    return seconds


def _no_auth(args: argparse.Namespace) -> bool:
    return parse_bool("--no-auth (MESHLOG_NO_AUTH)", args.no_auth)


def _localhost_is_admin(args: argparse.Namespace) -> bool:
    return parse_bool("--no-localhost-admin (MESHLOG_API_LOCALHOST_IS_ADMIN)",
                      args.localhost_is_admin)


def _client(args: argparse.Namespace) -> ApiClient:
    """The API client with the caller's credentials (services.cli.client.api_token)."""
    data_dir = Path(getattr(args, "data_dir", None) or env("DATA_DIR", ".meshlog") or ".meshlog")
    return ApiClient(args.api, api_token(args.api, token=args.token, data_dir=data_dir))


def _database_of(args: argparse.Namespace) -> str:
    return args.database or f"sqlite:///{Path(args.data_dir) / 'readmodels.db'}"


def cmd_replay(args: argparse.Namespace) -> int:
    from services.cli.maintenance import nats_url_of, run_replay

    to_seq = None if args.to_seq is None else parse_positive("--to-seq", args.to_seq)
    target = asyncio.run(run_replay(
        nats=nats_url_of(args.nats_url, Path(args.data_dir), _credentials_of(args)),
        database=args.database,
        zone=args.zone, to_seq=to_seq, show_progress=not args.quiet,
        secret_key=secret_key_of(args.secret_key_file, Path(args.data_dir), create=False)))
    print(f"replayed sequences 1..{target} into {args.database}")
    if args.swap:
        client = _client(args)
        try:
            result = client.request("POST", "/_admin/read-models",
                                    json={"database": args.database})
        finally:
            client.close()
        print(f"swapped: the control plane now serves {args.database} "
              f"(caught up to sequence {result['caughtUpTo']})")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from services.cli.maintenance import run_export

    data = asyncio.run(run_export(_database_of(args)))
    if args.output:
        Path(args.output).write_bytes(data)
    else:
        sys.stdout.buffer.write(data)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from services.bench import bench_ingest, bench_rebuild

    if args.bench_command == "rotation":
        from services.bench.rotation import bench_rotation

        asyncio.run(bench_rotation(
            parse_positive("--proxies", args.proxies),
            gateways=parse_positive("--gateways", args.gateways),
            rounds=parse_positive("--rounds", args.rounds), nats_url=args.nats_url))
        return 0
    if args.bench_command == "propagation":
        from services.bench.propagation import bench_propagation

        asyncio.run(bench_propagation(
            parse_positive("--proxies", args.proxies),
            gateways=parse_positive("--gateways", args.gateways),
            rounds=parse_positive("--rounds", args.rounds), nats_url=args.nats_url))
        return 0
    events = parse_positive("--events", args.events)
    if args.bench_command == "rebuild":
        asyncio.run(bench_rebuild(events, args.database, nats_url=args.nats_url))
    else:
        asyncio.run(bench_ingest(events, nats_url=args.nats_url))
    return 0


def cmd_bootstrap(args: argparse.Namespace) -> int:
    from services.cli.bootstrap import sidecar_bootstrap

    host, _, port = args.xds_address.rpartition(":")
    mesh, name, dataplane, token = args.mesh, args.name, None, None
    if args.dataplane_file:
        dataplane = _dataplane_file(args.dataplane_file)
        mesh, name = _same("--mesh", mesh, dataplane["mesh"]), _same("--name", name,
                                                                     dataplane["name"])
    if args.token_file:
        token, (mesh, name) = _token_file(args.token_file, mesh, name)
    if not name:
        raise SystemExit("error: --name is required (or --dataplane-file, or --token-file)")
    doc = sidecar_bootstrap(mesh=mesh or "default", name=name, xds_host=host or "127.0.0.1",
                            xds_port=parse_port("--xds-address", port),
                            admin_port=parse_port("--admin-port", args.admin_port),
                            delta=args.delta, dataplane=dataplane, token=token)
    text = json.dumps(doc, indent=2) if args.output == "json" else yaml.safe_dump(
        doc, sort_keys=False)
    print(text, end="" if text.endswith("\n") else "\n")
    return 0


def _dataplane_file(path: str) -> dict[str, Any]:
    """The one Dataplane in `path`, validated as the gateway will (errors name the field)."""
    from events import decode_resource

    docs = read_documents(path)
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise SystemExit(f"error: --dataplane-file {path}: expected one Dataplane document, "
                         f"found {len(docs)}")
    decode_resource(docs[0], "Dataplane")  # InvalidResource: every violation, with its path
    return docs[0]


def _token_file(path: str, mesh: str | None, name: str | None) -> tuple[str, tuple[str, str]]:
    """The dataplane token in `path`, and the mesh and name it is for (which --mesh, --name
    and --dataplane-file must not contradict: the gateway would refuse the proxy)."""
    from events.identity import DataplaneClaims, InvalidToken, unverified_claims
    from services.errors import ConfigError

    token = read_token_file("--token-file", path)
    try:
        claims = unverified_claims(token, DataplaneClaims)
    except InvalidToken as exc:
        raise ConfigError(f"--token-file {path}: not a dataplane token: {exc}") from None
    for flag, given, in_token in (("--mesh", mesh, claims.mesh), ("--name", name, claims.name)):
        if given and given != in_token:
            raise ConfigError(f"--token-file {path}: the token is for "
                              f"{claims.mesh}.{claims.name}, not {flag} {given!r}")
    return token, (claims.mesh, claims.name)


def _same(flag: str, given: str | None, in_file: str) -> str:
    if given and given != in_file:
        raise SystemExit(f"error: {flag} {given!r} differs from the --dataplane-file's "
                         f"{in_file!r}")
    return in_file


_DEREGISTRATION_FLAG = ("--deregistration-delay",)
_DEREGISTRATION_OPTIONS: dict[str, Any] = {
    "default": env("DEREGISTRATION_DELAY", "10"),
    "help": "seconds after a self-registered proxy disconnected (from every gateway) before "
            "its Dataplane is deregistered (Kuma: 10; default %(default)s)"}


# --- parser -----------------------------------------------------------------------------------


_GRACE_FLAG = ("--meshservice-grace-period",)
_GRACE_OPTIONS: dict[str, Any] = {
    "default": env("MESHSERVICE_GRACE_PERIOD", "1h"),
    "help": "how long a generated MeshService outlives its last Dataplane, e.g. 1h, 10m, 0 "
            "(recorded in the log; default %(default)s)"}

_SECRET_KEY_FLAG = ("--secret-key-file",)
_SECRET_KEY_OPTIONS: dict[str, Any] = {
    "default": env("SECRET_KEY_FILE"),
    "help": "the control plane's secret key, which seals the CA and token signing keys the "
            "log records (env MESHLOG_SECRET_KEY_FILE; default <data-dir>/secret.key, made at "
            "first start by `meshlog up` and `meshlog api`, mode 0600); API replicas and "
            "projectors must share one. Keep it as you keep a CA key"}


_CREDS_OPTIONS: dict[str, Any] = {
    "default": env("NATS_CREDS"),
    "help": "NATS credentials of this role's user: a .creds file or an nkey seed file (env "
            "MESHLOG_NATS_CREDS; README, NATS permissions)"}


_NO_AUTH_FLAG = ("--no-auth",)
_NO_AUTH_OPTIONS: dict[str, Any] = {
    "action": "store_true", "default": env("NO_AUTH", "false"),
    "help": "DEVELOPMENT ONLY: serve xDS without dataplane tokens (env MESHLOG_NO_AUTH)"}
_LOCALHOST_ADMIN_FLAG = ("--no-localhost-admin",)
_LOCALHOST_ADMIN_OPTIONS: dict[str, Any] = {
    "dest": "localhost_is_admin", "action": "store_false",
    "default": env("API_LOCALHOST_IS_ADMIN", "true"),
    "help": "API clients on loopback (127.0.0.1, ::1) are not admin without a token (by "
            "default they are, as in Kuma; env MESHLOG_API_LOCALHOST_IS_ADMIN=false)"}


_API_DEFAULT = env("API", "http://127.0.0.1:5681")
_API_HELP = f"API base URL (env MESHLOG_API; default {_API_DEFAULT})"
_VERBOSE_HELP = "log at debug level"
_TOKEN_HELP = ("user token for the API (env MESHLOG_TOKEN; default: the admin token of the "
               "`meshlog up` of the data dir)")


def _global_flags() -> argparse.ArgumentParser:
    """`--api` and `-v` for every subcommand, so they go after it too (as kubectl's global
    flags do). SUPPRESS: a subcommand sets them only when given there, so it never overwrites
    a value given before the subcommand with its default."""
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument("--api", default=argparse.SUPPRESS, help=_API_HELP)
    flags.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                       help=_VERBOSE_HELP)
    flags.add_argument("--token", default=argparse.SUPPRESS, help=_TOKEN_HELP)
    return flags


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="meshlog", description="meshlog: an event-sourced "
                                "service-mesh control plane on NATS JetStream")
    p.add_argument("--api", default=_API_DEFAULT, help=_API_HELP)
    p.add_argument("-v", "--verbose", action="store_true", help=_VERBOSE_HELP)
    p.add_argument("--token", default=env("TOKEN"), help=_TOKEN_HELP)
    g = [_global_flags()]
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", parents=g, help="run the control plane on one machine")
    up.add_argument("--data-dir", default=env("DATA_DIR", ".meshlog"),
                    help="JetStream store and read models "
                         "(env MESHLOG_DATA_DIR; default %(default)s)")
    up.add_argument("--nats-url", default=env("NATS_URL"),
                    help="use this NATS (JetStream) instead of the embedded server")
    up.add_argument("--nats-creds", **_CREDS_OPTIONS)
    up.add_argument("--nats-port", default=env("NATS_PORT", "0"),
                    help="port of the embedded nats-server (default: any free port)")
    up.add_argument("--database", default=env("DATABASE"),
                    help="read-model store URL (default: SQLite in the data dir)")
    up.add_argument(*_SECRET_KEY_FLAG, **_SECRET_KEY_OPTIONS)
    up.add_argument("--api-host", default=env("API_HOST", "127.0.0.1"))
    up.add_argument("--api-port", default=env("API_PORT", "5681"), help="default %(default)s")
    up.add_argument("--xds-host", default=env("XDS_HOST", "127.0.0.1"))
    up.add_argument("--xds-port", default=env("XDS_PORT", "5678"), help="default %(default)s")
    up.add_argument("--vip-cidr", default=env("VIP_CIDR", "241.0.0.0/8"),
                    help="CIDR of MeshService VIPs (recorded in the log; default %(default)s)")
    up.add_argument("--zone", default=env("ZONE", "default"), help="zone name")
    up.add_argument(*_DEREGISTRATION_FLAG, **_DEREGISTRATION_OPTIONS)
    up.add_argument(*_GRACE_FLAG, **_GRACE_OPTIONS)
    up.add_argument(*_NO_AUTH_FLAG, **_NO_AUTH_OPTIONS)
    up.add_argument(*_LOCALHOST_ADMIN_FLAG, **_LOCALHOST_ADMIN_OPTIONS)
    up.add_argument("--projectors", default=env("PROJECTORS", "1"),
                    help="projector tasks: 1 folds alone (default); N >= 2 contend for the "
                         "lease, one folds, another takes over if it dies (no read-model swap)")
    up.add_argument("--lease-ttl", default=env("LEASE_TTL", "2s"),
                    help="with --projectors >= 2: how long a silent leader keeps the lease "
                         "(default %(default)s)")

    apply = sub.add_parser("apply", parents=g, help="create or update resources from a file")
    apply.add_argument("-f", "--file", required=True, action="append",
                       help="YAML or JSON file, '-' for stdin; repeat to apply several, in order")

    get = sub.add_parser("get", parents=g, help="list resources, or show one")
    get.add_argument("what", help="meshes | dataplanes | meshservices | hostnamegenerators | "
                     "meshtrafficpermissions, or a singular kind")
    get.add_argument("name", nargs="?", help="show this resource only")
    get.add_argument("-m", "--mesh", default="default", help="mesh (default %(default)s)")
    get.add_argument("-o", "--output", choices=["table", "yaml", "json"])
    get.add_argument("-l", "--label", action="append", metavar="KEY=VALUE",
                     help="only resources with this label (repeatable; all must match)")

    rm = sub.add_parser("delete", parents=g, help="delete a resource")
    rm.add_argument("kind", help="mesh | dataplane | meshservice | hostnamegenerator | "
                    "meshtrafficpermission")
    rm.add_argument("name")
    rm.add_argument("-m", "--mesh", default="default", help="mesh (default %(default)s)")

    insp = sub.add_parser("inspect", parents=g, help="a proxy's insight (connected, gateway, "
                          "xDS ACK/NACK counters), or with --config its computed xDS")
    insp.add_argument("kind", help="dataplane")
    insp.add_argument("name")
    insp.add_argument("-m", "--mesh", default="default", help="mesh (default %(default)s)")
    insp.add_argument("--config", action="store_true",
                      help="show the computed config (listeners, clusters, endpoints) instead")
    insp.add_argument("-o", "--output", choices=["table", "yaml", "json"])

    for name, text in (("projector", "run a projector process"),
                       ("gateway", "run an xDS gateway process"),
                       ("api", "run an API process")):
        proc = sub.add_parser(name, parents=g, help=text)
        proc.add_argument("--nats-url", default=env("NATS_URL"))
        proc.add_argument("--nats-creds", **_CREDS_OPTIONS)
        proc.add_argument("--zone", default=env("ZONE", "default"))
        proc.add_argument("--stream-replicas", default=env("STREAM_REPLICAS", "1"),
                          help="replicas of the streams this process creates if missing "
                               "(3 on a 3-node cluster)")
        if name == "projector":
            proc.add_argument(*_GRACE_FLAG, **_GRACE_OPTIONS)
            proc.add_argument("--lease-ttl", default=env("LEASE_TTL", "5s"),
                              help="active/standby: how long a silent leader keeps the "
                                   "projector lease before a standby takes over (default "
                                   "%(default)s; 0 = no lease, for a single projector)")
            proc.add_argument("--metrics-host", default=env("METRICS_HOST", "127.0.0.1"))
            proc.add_argument("--metrics-port", default=env("METRICS_PORT"),
                              help="serve Prometheus metrics on GET /metrics there (0: any "
                                   "free port; default: none)")
        if name != "gateway":
            proc.add_argument("--database", default=env("DATABASE"),
                              help="read-model store URL (default: SQLite in --data-dir)")
            proc.add_argument("--data-dir", default=env("DATA_DIR", ".meshlog"))
            proc.add_argument(*_SECRET_KEY_FLAG, **_SECRET_KEY_OPTIONS)
        if name == "gateway":
            proc.add_argument("--xds-host", default=env("XDS_HOST", "127.0.0.1"))
            proc.add_argument("--xds-port", default=env("XDS_PORT", "5678"))
            # xds-rules.md #14: replicas added later get their share of long-lived streams
            # (istiod's default is the same 30 min)
            proc.add_argument("--max-connection-age", default=env("MAX_CONNECTION_AGE", "1800"),
                              help="seconds (+-10 %% jitter) before a proxy is asked to "
                                   "reconnect, through the LB (0 = never; default %(default)s)")
            proc.add_argument("--drain-grace", default=env("DRAIN_GRACE", "10"),
                              help="seconds open streams get after SIGTERM or max connection "
                                   "age before they are ended (default %(default)s)")
            proc.add_argument("--health-port", default=env("HEALTH_PORT", "5680"),
                              help="GET /ready and /live on the xDS host (Kuma's diagnostics "
                                   "port; 0 = any free; default %(default)s)")
            proc.add_argument(*_DEREGISTRATION_FLAG, **_DEREGISTRATION_OPTIONS)
            proc.add_argument(*_NO_AUTH_FLAG, **_NO_AUTH_OPTIONS)
        if name == "api":
            proc.add_argument("--api-host", default=env("API_HOST", "127.0.0.1"))
            proc.add_argument("--api-port", default=env("API_PORT", "5681"))
            proc.add_argument(*_LOCALHOST_ADMIN_FLAG, **_LOCALHOST_ADMIN_OPTIONS)

    replay = sub.add_parser("replay", parents=g, help="rebuild the read models from the log "
                            "into a fresh store")
    replay.add_argument("--database", required=True,
                        help="the fresh store to build: sqlite:///FILE or postgresql://...")
    replay.add_argument("--to-seq", help="stop at this sequence (the state as of then)")
    replay.add_argument("--nats-url", default=env("NATS_URL"),
                        help="the log's NATS (default: the running `meshlog up` of --data-dir)")
    replay.add_argument("--nats-creds", default=env("NATS_CREDS"),
                        help="credentials for NATS (default: the admin user `meshlog up` "
                             "made in --data-dir, if any; env MESHLOG_NATS_CREDS)")
    replay.add_argument("--data-dir", default=env("DATA_DIR", ".meshlog"))
    replay.add_argument("--zone", default=env("ZONE", "default"))
    replay.add_argument(*_SECRET_KEY_FLAG, **_SECRET_KEY_OPTIONS)
    replay.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bar, no INFO logs (warnings and errors still show)")
    replay.add_argument("--swap", action="store_true",
                        help="then make the running `meshlog up` (at --api) serve the new store")

    bench = sub.add_parser("bench", parents=g, help="benchmarks (print figures, last line JSON)")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True, metavar="BENCH")
    for name, text in (("rebuild", "rebuild rate vs the raw ordered-consumer read rate"),
                       ("ingest", "append path vs raw publish_async")):
        b = bench_sub.add_parser(name, parents=g, help=text)
        b.add_argument("--events", default="100000", help="default %(default)s")
        b.add_argument("--nats-url", help="default: an embedded nats-server in a temp dir")
        if name == "rebuild":
            b.add_argument("--database", default="sqlite",
                           help="sqlite | postgres (a fresh database on 127.0.0.1:5432) | URL")
    prop = bench_sub.add_parser("propagation", parents=g, help="time from an endpoint change "
                                "in the log to every proxy's ACK, through an Envoy LB to the "
                                "gateways")
    prop.add_argument("--proxies", default="1000", help="simulated proxies (default %(default)s)")
    prop.add_argument("--gateways", default="1", help="gateway processes (default %(default)s)")
    prop.add_argument("--rounds", default="20", help="endpoint changes (default %(default)s)")
    prop.add_argument("--nats-url", help="default: an embedded nats-server in a temp dir")
    rot = bench_sub.add_parser("rotation", parents=g, help="a certificate rotation wave: time "
                               "until every proxy has ACKed its new secret, and the CPU spent")
    rot.add_argument("--proxies", default="1000", help="simulated proxies (default %(default)s)")
    rot.add_argument("--gateways", default="1", help="gateway processes (default %(default)s)")
    rot.add_argument("--rounds", default="3", help="rotation waves (default %(default)s)")
    rot.add_argument("--nats-url", help="default: an embedded nats-server in a temp dir")

    sub.add_parser("quarantine", parents=g, help="list events the projector could not "
                   "apply (exit 1 if any)")

    top = sub.add_parser("top", parents=g, help="a live view of proxies, pushes, NACKs and "
                         "projector lag, read from /metrics")
    top.add_argument("--metrics", action="append", metavar="URL",
                     help="a /metrics endpoint to scrape (repeatable; default: the API's, "
                          "that of the `meshlog up` of --data-dir unless --api is given)")
    top.add_argument("--data-dir", default=env("DATA_DIR", ".meshlog"))
    top.add_argument("--interval", default="2", help="seconds between scrapes "
                     "(default %(default)s)")
    top.add_argument("--once", action="store_true", help="print one frame and exit")

    export = sub.add_parser("export", parents=g, help="write the read models as canonical JSON")
    export.add_argument("--database", default=env("DATABASE"),
                        help="store to export (default: SQLite in --data-dir)")
    export.add_argument("--data-dir", default=env("DATA_DIR", ".meshlog"))
    export.add_argument("-o", "--output", help="file (default: stdout)")

    dp = sub.add_parser("dataplane", parents=g, help="sidecar helpers")
    dp_sub = dp.add_subparsers(dest="dataplane_command", required=True, metavar="COMMAND")
    bs = dp_sub.add_parser("bootstrap", parents=g,
                           help="print an Envoy bootstrap for a Dataplane")
    bs.add_argument("--mesh", help="the Dataplane's mesh (default: the file's, else default)")
    bs.add_argument("--name", help="the Dataplane's name (default: the --dataplane-file's)")
    bs.add_argument("--dataplane-file", help="a Dataplane (YAML or JSON) the sidecar registers "
                    "itself with, in its node metadata (removed after it disconnects)")
    bs.add_argument("--xds-address", default=env("XDS_ADDRESS", "127.0.0.1:5678"),
                    help="gateway (or load balancer) host:port (default %(default)s)")
    bs.add_argument("--admin-port", default="9901", help="Envoy admin port (default %(default)s)")
    bs.add_argument("--delta", action="store_true", help="use incremental (Delta) xDS")
    bs.add_argument("--token-file", default=env("DATAPLANE_TOKEN_FILE"),
                    help="a dataplane token (meshlog generate dataplane-token): sent in the "
                         "`authorization` metadata of the xDS streams; --mesh and --name "
                         "default to the token's (env MESHLOG_DATAPLANE_TOKEN_FILE)")
    bs.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml")

    add_token_parsers(sub, g)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()  # a closed pipe shows here, not as a traceback at interpreter exit
    except BrokenPipeError:
        # `meshlog get ... | head -1`: the reader is gone, which is no error of ours. Quiet, with
        # the status of a process ended by SIGPIPE, as the Python docs recommend
        # (https://docs.python.org/3/library/signal.html#note-on-sigpipe).
        _stdout_to_devnull()
        return 128 + signal.SIGPIPE
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    return code


def _stdout_to_devnull() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush does not fail again."""
    with contextlib.suppress(OSError, ValueError):  # stdout may have no descriptor (tests)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    _configure_logging(verbose=args.verbose, quiet=getattr(args, "quiet", False))
    try:
        if args.command == "up":
            return cmd_up(args)
        if args.command == "dataplane":
            return cmd_bootstrap(args)
        if args.command == "replay":
            return cmd_replay(args)
        if args.command == "export":
            return cmd_export(args)
        if args.command == "bench":
            return cmd_bench(args)
        if args.command in ("projector", "gateway", "api"):
            return cmd_process(args)
        if args.command == "top":
            from services.cli.top import cmd_top

            return cmd_top(args, _API_DEFAULT)
        client = _client(args)
        try:
            from services.cli.inspect import cmd_inspect

            handler = {"apply": cmd_apply, "get": cmd_get, "delete": cmd_delete,
                       "quarantine": cmd_quarantine, "inspect": cmd_inspect,
                       "generate": cmd_generate, "revoke": cmd_revoke}[args.command]
            return handler(args, client)
        finally:
            client.close()
    except ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except MeshlogError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _configure_logging(*, verbose: bool, quiet: bool) -> None:
    """INFO by default; `-v` DEBUG; `-q` WARNING (warnings and errors still show)."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not verbose:
        logging.getLogger("httpx").setLevel(logging.WARNING)


if __name__ == "__main__":
    sys.exit(main())
