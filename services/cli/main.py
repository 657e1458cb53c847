"""The `meshlog` command line.

    meshlog up                         run the control plane (embedded NATS + SQLite)
    meshlog projector|gateway|api      run one part as its own process (scale-out)
    meshlog apply -f FILE              create or update resources (multi-document YAML or JSON)
    meshlog get PLURAL [-m MESH]       list: meshes, dataplanes, meshservices, hostnamegenerators,
                                       every policy kind's plural (meshtrafficpermissions,
                                       meshtimeouts, ...: `events.policy_kinds`),
                                       meshmultizoneservices, zoneingresses
                                       (-o table|yaml|json)
    meshlog get KIND NAME [-m MESH]    one resource: mesh, dataplane, meshservice, ...
    meshlog delete KIND NAME [-m MESH]
    meshlog inspect dataplane NAME [-m MESH] [--config]   connected?, xDS counters; or its config
    meshlog dataplane bootstrap --mesh M --name N [--token-file F] [--ca-cert-file CA]
                                       an Envoy bootstrap (ADS over TLS with --ca-cert-file)
    meshlog dataplane bootstrap --zone-ingress NAME [--token-file F]  ... for a zone ingress
    meshlog grpc-identity --mesh M --name N --out DIR [--token-file F] [--bootstrap-file B]
                                       a proxyless gRPC client's mesh certificate, kept in files
                                       its bootstrap reads (cli/grpc_identity.py)
    meshlog generate dataplane-token|zone-token|user-token ...  a token (admin; cli/tokens.py)
    meshlog revoke dataplane-token|zone-token|user-token ...    revoke one (admin)
    meshlog signing-key list|rotate|retire ...  token signing keys (admin; cli/signing_keys.py)
    meshlog nats-users --zone Z --out DIR [--account A]  NATS users of the roles: seeds and the
                                       auth.conf every nats-server includes (cli/nats_users.py)
    meshlog xds-certificate --out DIR --host NAME...  the gateways' xDS TLS certificate and
                                       its CA (cli/xds_certificate.py)
    meshlog api-certificate --out DIR --host NAME...  the API replicas' TLS certificate and
                                       its CA (cli/xds_certificate.py)
    meshlog replay --database URL [--to-seq N]       rebuild read models from the log
    meshlog export [--database URL] [-o FILE]        read models as canonical JSON
    meshlog quarantine [list]                        events the projector could not apply
    meshlog quarantine skip --seq N --reason TEXT    fold one no release reads as nothing (admin)
    meshlog top [--metrics URL]... [--once]          live view of proxies, pushes, NACKs, lag
    meshlog bench rebuild|ingest --events N          benchmarks
    meshlog bench propagation --proxies N [--gateways G]   xDS push latency through an LB
    meshlog bench multizone [--rounds N] [--proxies N] sync latency from one zone to another
    meshlog bench rotation --proxies N               a certificate rotation wave to N proxies
    meshlog bench faults [--proxies N]               stream leader killed under load (R3)

The API address comes from --api, else $MESHLOG_API, else http://127.0.0.1:5681 (https://
when the data dir's `meshlog up --api-tls` serves there); the user token from --token, else
$MESHLOG_TOKEN, else the admin token of the `meshlog up` or `meshlog api` whose data dir
($MESHLOG_DATA_DIR, else .meshlog) names that API; the CA of an https API from --ca-cert-file,
else $MESHLOG_API_CA_CERT_FILE, else that data dir's `api-tls/ca.crt` (services.cli.client).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from events import MeshlogError
from services.cli.client import ApiClient, ApiError, admin_token_file, api_of, api_trust
from services.cli.nats_users import cmd_nats_users
from services.cli.parser import API_DEFAULT, build_parser
from services.cli.quarantine import cmd_quarantine
from services.cli.resources import cmd_apply, cmd_delete, cmd_get
from services.cli.signing_keys import cmd_signing_key
from services.cli.tokens import cmd_generate, cmd_revoke
from services.cli.xds_certificate import cmd_xds_certificate
from services.errors import ConfigError
from services.runtime.config import (
    UpConfig,
    env,
    parse_bool,
    parse_cidr,
    parse_deployment,
    parse_dns_server,
    parse_duration_ms,
    parse_port,
    parse_positive,
    parse_tls_files,
    secret_key_of,
)
from services.tracing import setup_tracing

if TYPE_CHECKING:
    from services.runtime.api_tls import ApiTls
    from xds_gateway.server.serving_tls import ServingTls

__all__ = ["main"]

_TRACED = {"up": "meshlog", "projector": "meshlog-projector", "gateway": "meshlog-gateway",
           "api": "meshlog-api", "bench": "meshlog-bench"}
"""Commands that set up tracing, and their default `service.name`."""

def _run_until_signal(main_coro: Coroutine[Any, Any, None]) -> None:
    """Run a process's main coroutine. SIGINT and SIGTERM are its own to handle
    (`services.runtime.shutdown`): a stop by cancellation ends here quietly."""
    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        asyncio.run(main_coro)


def cmd_process(args: argparse.Namespace) -> int:
    from projections.worker import LIVE_BATCH
    from services.runtime import processes

    if not args.nats_url:
        raise SystemExit(f"error: meshlog {args.command} needs --nats-url (or MESHLOG_NATS_URL)")
    replicas = parse_positive("--stream-replicas", args.stream_replicas)
    credentials = _credentials_of(args)
    mode, zone = parse_deployment(args.mode, args.zone, args.global_url, embedded=False)
    if args.command == "projector":
        if args.sync_creds and mode == "standalone":
            raise ConfigError(f"--sync-creds {args.sync_creds}: only with --mode global or "
                              f"zone (the multi-zone sync's user; a standalone control plane "
                              f"has no sync)")
        if args.admin_creds and mode == "standalone":
            raise ConfigError(f"--admin-creds {args.admin_creds}: only with --mode global or "
                              f"zone (the source keeper's user; a standalone control plane "
                              f"has no sync)")
        coro = processes.run_projector_process(
            nats_url=args.nats_url, database=_database_of(args), zone=zone, mode=mode,
            credentials=credentials, replicas=replicas,
            meshservice_grace_period_ms=parse_duration_ms(
                "--meshservice-grace-period", args.meshservice_grace_period),
            mmzs_vip_cidr=parse_cidr("--mmzs-vip-cidr", args.mmzs_vip_cidr),
            secret_key=secret_key_of(args.secret_key_file, Path(args.data_dir), create=False),
            lease_ttl_s=parse_duration_ms("--lease-ttl", args.lease_ttl) / 1000,
            metrics_host=args.metrics_host,
            metrics_port=None if args.metrics_port is None else parse_port(
                "--metrics-port", args.metrics_port),
            max_batch=LIVE_BATCH if args.max_batch is None else parse_positive(
                "--max-batch", args.max_batch),
            sync_credentials=Path(args.sync_creds) if args.sync_creds else None,
            admin_credentials=Path(args.admin_creds) if args.admin_creds else None)
    elif args.command == "gateway":
        drain_grace_s = _seconds("--drain-grace", args.drain_grace)
        coro = processes.run_gateway_process(
            nats_url=args.nats_url, credentials=credentials, host=args.xds_host,
            port=parse_port("--xds-port", args.xds_port),
            max_connection_age_s=_seconds("--max-connection-age", args.max_connection_age),
            replicas=replicas, drain_grace_s=drain_grace_s, zone=zone, mode=mode,
            health_port=parse_port("--health-port", args.health_port),
            deregistration_delay_s=_seconds("--deregistration-delay",
                                            args.deregistration_delay),
            no_auth=_no_auth(args), tls=_serving_tls(args), **_dns_options(args))
    else:
        coro = processes.run_api_process(
            nats_url=args.nats_url, credentials=credentials, database=_database_of(args),
            host=args.api_host,
            port=parse_port("--api-port", args.api_port), zone=zone, mode=mode,
            replicas=replicas,
            data_dir=Path(args.data_dir),
            # made in the data dir if missing: an API must sign (tokens, the admin token)
            secret_key=secret_key_of(args.secret_key_file, Path(args.data_dir), create=True),
            localhost_is_admin=_localhost_is_admin(args), tls=_api_tls(args),
            **_access_log(args))
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
    replicas = parse_positive("--stream-replicas", args.stream_replicas)
    if replicas > 1 and not args.nats_url:
        raise ConfigError(f"--stream-replicas {replicas} (MESHLOG_STREAM_REPLICAS): only with "
                          f"--nats-url (a JetStream cluster of at least {replicas} nodes); the "
                          f"embedded nats-server is one node and keeps 1 copy")
    mode, zone = parse_deployment(args.mode, args.zone, args.global_url)
    cfg = UpConfig(
        data_dir=Path(args.data_dir), nats_url=args.nats_url,
        nats_creds=_credentials_of(args), stream_replicas=replicas,
        nats_port=parse_port("--nats-port", args.nats_port), database=args.database,
        api_host=args.api_host, api_port=parse_port("--api-port", args.api_port),
        xds_host=args.xds_host, xds_port=parse_port("--xds-port", args.xds_port),
        vip_cidr=parse_cidr("--vip-cidr", args.vip_cidr), zone=zone, mode=mode,
        mmzs_vip_cidr=parse_cidr("--mmzs-vip-cidr", args.mmzs_vip_cidr),
        global_url=args.global_url, leaf_host=args.leaf_host,
        leaf_port=parse_port("--leaf-port", args.leaf_port),
        meshservice_grace_period_ms=parse_duration_ms("--meshservice-grace-period",
                                                      args.meshservice_grace_period),
        deregistration_delay_s=_seconds("--deregistration-delay", args.deregistration_delay),
        **_dns_options(args),
        secret_key_file=Path(args.secret_key_file) if args.secret_key_file else None,
        no_auth=_no_auth(args), localhost_is_admin=_localhost_is_admin(args),
        api_access_log=_access_log(args)["access_log"],
        api_access_log_forwarded_for=_access_log(args)["access_log_forwarded_for"],
        xds_tls=parse_bool("--xds-tls (MESHLOG_XDS_TLS)", args.xds_tls),
        tls_files=parse_tls_files(args.tls_cert_file, args.tls_key_file),
        api_tls=parse_bool("--api-tls (MESHLOG_API_TLS)", args.api_tls),
        api_tls_files=_api_tls_files(args),
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


def _dns_options(args: argparse.Namespace) -> dict[str, Any]:
    """The gateway's `dns_cache_ttl_s` and `dns_server` from `--dns-cache-ttl` and
    `--dns-server`."""
    return {"dns_cache_ttl_s": _positive_seconds("--dns-cache-ttl", args.dns_cache_ttl),
            "dns_server": None if not args.dns_server else parse_dns_server(
                "--dns-server", args.dns_server)}


def _positive_seconds(flag: str, value: str) -> float:
    seconds = _seconds(flag, value)
    if seconds <= 0:
        raise ConfigError(f"{flag}: {value!r} must be longer than 0")
    return seconds


def _no_auth(args: argparse.Namespace) -> bool:
    return parse_bool("--no-auth (MESHLOG_NO_AUTH)", args.no_auth)


def _serving_tls(args: argparse.Namespace) -> ServingTls | None:
    """`--tls-cert-file` and `--tls-key-file`, read and checked now: a bad file stops the
    process before it listens, with an error naming it."""
    from xds_gateway.server.serving_tls import ServingTls

    files = parse_tls_files(args.tls_cert_file, args.tls_key_file)
    return None if files is None else ServingTls(*files)


def _api_tls_files(args: argparse.Namespace) -> tuple[Path, Path] | None:
    from services.runtime.api_tls import API_TLS_FLAGS

    return parse_tls_files(args.api_tls_cert_file, args.api_tls_key_file, flags=API_TLS_FLAGS)


def _api_tls(args: argparse.Namespace) -> ApiTls | None:
    """`--api-tls-cert-file` and `--api-tls-key-file`, read and checked now: a bad file stops
    `meshlog api` before it connects or listens, with an error naming the flag and file."""
    from services.runtime.api_tls import ApiTls

    files = _api_tls_files(args)
    return None if files is None else ApiTls(*files)


def _localhost_is_admin(args: argparse.Namespace) -> bool:
    return parse_bool("--no-localhost-admin (MESHLOG_API_LOCALHOST_IS_ADMIN)",
                      args.localhost_is_admin)


def _access_log(args: argparse.Namespace) -> dict[str, bool]:
    """`access_log` and `access_log_forwarded_for` from `--api-access-log` and
    `--api-access-log-forwarded-for`."""
    return {"access_log": parse_bool("--api-access-log (MESHLOG_API_ACCESS_LOG)",
                                     args.api_access_log),
            "access_log_forwarded_for": parse_bool(
                "--api-access-log-forwarded-for (MESHLOG_API_ACCESS_LOG_FORWARDED_FOR)",
                args.api_access_log_forwarded_for)}


def _client(args: argparse.Namespace) -> ApiClient:
    """The API client with the caller's credentials (services.cli.client.admin_token_file)."""
    data_dir = Path(getattr(args, "data_dir", None) or env("DATA_DIR", ".meshlog") or ".meshlog")
    api = api_of(args.api, API_DEFAULT, data_dir)
    token_file = None if args.token else admin_token_file(api, data_dir)
    return ApiClient(api, args.token, token_file=token_file,
                     verify=api_trust(api, data_dir, args.api_ca_cert_file))


def _database_of(args: argparse.Namespace) -> str:
    return args.database or f"sqlite:///{Path(args.data_dir) / 'readmodels.db'}"


def cmd_replay(args: argparse.Namespace) -> int:
    from services.cli.maintenance import nats_url_of, run_replay

    to_seq = None if args.to_seq is None else parse_positive("--to-seq", args.to_seq)
    target = asyncio.run(run_replay(
        nats=nats_url_of(args.nats_url, Path(args.data_dir), _credentials_of(args)),
        database=args.database,
        zone=parse_deployment(args.mode, args.zone, None, embedded=False)[1], to_seq=to_seq,
        show_progress=not args.quiet,
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
    from services.runtime.readmodels import pointed_database

    # what `meshlog up` of the data dir serves: after a swap, the store it swapped to
    database = args.database or pointed_database(Path(args.data_dir)) or _database_of(args)
    data = asyncio.run(run_export(database))
    if args.output:
        Path(args.output).write_bytes(data)
    else:
        sys.stdout.buffer.write(data)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from services.bench import bench_ingest, bench_rebuild

    if args.bench_command == "faults":
        from services.bench.faults import bench_faults

        asyncio.run(bench_faults(
            proxies=parse_positive("--proxies", args.proxies),
            writers=parse_positive("--writers", args.writers),
            warmup_s=_seconds("--warmup", args.warmup), down_s=_seconds("--down", args.down),
            after_s=_seconds("--after", args.after),
            work_dir=Path(args.work_dir) if args.work_dir else None))
        return 0
    if args.bench_command == "rotation":
        from services.bench.rotation import bench_rotation

        asyncio.run(bench_rotation(
            parse_positive("--proxies", args.proxies),
            gateways=parse_positive("--gateways", args.gateways),
            rounds=parse_positive("--rounds", args.rounds), nats_url=args.nats_url,
            nats_creds=_credentials_of(args)))
        return 0
    if args.bench_command == "multizone":
        rounds = parse_positive("--rounds", args.rounds)
        if args.proxies is not None:
            from services.bench.multizone_proxies import bench_multizone_proxies

            asyncio.run(bench_multizone_proxies(parse_positive("--proxies", args.proxies),
                                                rounds, mmzs=args.mmzs))
            return 0
        from services.bench.multizone import bench_multizone

        asyncio.run(bench_multizone(rounds))
        return 0
    if args.bench_command == "propagation":
        from services.bench.propagation import bench_propagation

        asyncio.run(bench_propagation(
            parse_positive("--proxies", args.proxies),
            gateways=parse_positive("--gateways", args.gateways),
            rounds=parse_positive("--rounds", args.rounds), nats_url=args.nats_url,
            nats_creds=_credentials_of(args)))
        return 0
    events = parse_positive("--events", args.events)
    if args.bench_command == "rebuild":
        from projections.rebuild import REBUILD_BATCH

        batch = REBUILD_BATCH if args.batch is None else parse_positive("--batch", args.batch)
        asyncio.run(bench_rebuild(events, args.database, nats_url=args.nats_url,
                                  nats_creds=_credentials_of(args), max_batch=batch))
    else:
        asyncio.run(bench_ingest(events, nats_url=args.nats_url,
                                 nats_creds=_credentials_of(args)))
    return 0


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
    args = build_parser().parse_args(argv)
    _configure_logging(verbose=args.verbose, quiet=getattr(args, "quiet", False))
    try:
        if args.command in _TRACED:  # OTEL_TRACES_EXPORTER unset: off (README, Tracing)
            setup_tracing(_TRACED[args.command])
        if args.command == "up":
            return cmd_up(args)
        if args.command == "dataplane":
            from services.cli.bootstrap_command import cmd_bootstrap

            return cmd_bootstrap(args)
        if args.command == "replay":
            return cmd_replay(args)
        if args.command == "export":
            return cmd_export(args)
        if args.command == "bench":
            return cmd_bench(args)
        if args.command in ("projector", "gateway", "api"):
            return cmd_process(args)
        if args.command == "nats-users":
            return cmd_nats_users(args)
        if args.command in ("xds-certificate", "api-certificate"):
            return cmd_xds_certificate(args)
        if args.command == "grpc-identity":
            from services.cli.grpc_identity import cmd_grpc_identity

            return cmd_grpc_identity(args)
        if args.command == "top":
            from services.cli.top import cmd_top

            return cmd_top(args, API_DEFAULT)
        client = _client(args)
        try:
            from services.cli.inspect import cmd_inspect

            handler = {"apply": cmd_apply, "get": cmd_get, "delete": cmd_delete,
                       "quarantine": cmd_quarantine, "inspect": cmd_inspect,
                       "generate": cmd_generate, "revoke": cmd_revoke,
                       "signing-key": cmd_signing_key}[args.command]
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
