"""The `meshlog` command line: every subcommand, flag and its `MESHLOG_*` variable, in one
argparse parser (`build_parser`); `services.cli.main` runs what it parses."""

from __future__ import annotations

import argparse
from typing import Any

from events import POLICY_KINDS
from services.cli.grpc_identity import add_grpc_identity_parser
from services.cli.nats_users import add_nats_users_parser
from services.cli.quarantine import add_quarantine_parsers
from services.cli.signing_keys import add_signing_key_parsers
from services.cli.tokens import add_token_parsers
from services.cli.xds_certificate import add_xds_certificate_parser
from services.runtime.config import env

__all__ = ["API_DEFAULT", "build_parser"]


_DEREGISTRATION_FLAG = ("--deregistration-delay",)
_DEREGISTRATION_OPTIONS: dict[str, Any] = {
    "default": env("DEREGISTRATION_DELAY", "10"),
    "help": "seconds after a self-registered proxy disconnected (from every gateway) before "
            "its Dataplane is deregistered (Kuma: 10; default %(default)s)"}


_DNS_TTL_FLAG = ("--dns-cache-ttl",)
_DNS_TTL_OPTIONS: dict[str, Any] = {
    "default": env("DNS_CACHE_TTL", "10s"),
    "help": "how often the gateway looks up again a DNS name given as a Dataplane's or "
            "ZoneIngress's address, whose answer goes into EDS (Kuma's dnsCacheTTL; env "
            "MESHLOG_DNS_CACHE_TTL; default %(default)s)"}
_DNS_SERVER_FLAG = ("--dns-server",)
_DNS_SERVER_OPTIONS: dict[str, Any] = {
    "default": env("DNS_SERVER"), "metavar": "IP[:PORT]",
    "help": "look those names up at this DNS server (no search domains, no /etc/hosts; env "
            "MESHLOG_DNS_SERVER; default: the system's resolver)"}


# --- parser -----------------------------------------------------------------------------------


_GRACE_FLAG = ("--meshservice-grace-period",)
_GRACE_OPTIONS: dict[str, Any] = {
    "default": env("MESHSERVICE_GRACE_PERIOD", "1h"),
    "help": "how long a generated MeshService outlives its last Dataplane, e.g. 1h, 10m, 0 "
            "(recorded in the log; default %(default)s)"}

_MMZS_CIDR_FLAG = ("--mmzs-vip-cidr",)
_MMZS_CIDR_OPTIONS: dict[str, Any] = {
    "default": env("MMZS_VIP_CIDR", "243.0.0.0/8"),
    "help": "CIDR of MeshMultiZoneService VIPs (recorded in the log when it differs from it; "
            "default %(default)s)"}

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
def _tls_files(prefix: str, serves: str, kuma: str, otherwise: str
               ) -> tuple[tuple[str, dict[str, Any]], tuple[str, dict[str, Any]]]:
    """(flag, options) of a serving certificate file and of its key, for the gateway (prefix
    "") or the API ("api-"): `--tls-cert-file` / `MESHLOG_TLS_CERT_FILE` and so on."""
    cert, key = f"--{prefix}tls-cert-file", f"--{prefix}tls-key-file"
    cert_var, key_var = (flag[2:].upper().replace("-", "_") for flag in (cert, key))
    return ((cert, {"default": env(cert_var), "metavar": "FILE",
                    "help": f"serve {serves} over TLS only, with this PEM certificate (then "
                            f"any intermediates), read again when it changes (Kuma's {kuma}; "
                            f"env MESHLOG_{cert_var}; needs {key}; default: {otherwise})"}),
            (key, {"default": env(key_var), "metavar": "FILE",
                   "help": f"the unencrypted PEM key of {cert} (env MESHLOG_{key_var})"}))


_XDS_TLS_FILES = _tls_files("", "xDS (ADS and HDS)", "general.tlsCertFile", "plaintext")
_API_TLS_FILES = _tls_files("api-", "the API (HTTPS, on --api-port)",
                            "apiServer.https.tlsCertFile", "HTTP")
_LOCALHOST_ADMIN_FLAG = ("--no-localhost-admin",)
_LOCALHOST_ADMIN_OPTIONS: dict[str, Any] = {
    "dest": "localhost_is_admin", "action": "store_false",
    "default": env("API_LOCALHOST_IS_ADMIN", "true"),
    "help": "API clients on loopback (127.0.0.1, ::1) are not admin without a token (by "
            "default they are, as in Kuma; env MESHLOG_API_LOCALHOST_IS_ADMIN=false)"}

_ACCESS_LOG_FLAG = ("--api-access-log",)
_ACCESS_LOG_OPTIONS: dict[str, Any] = {
    "nargs": "?", "const": "true", "default": env("API_ACCESS_LOG", "true"),
    "metavar": "true|false",
    "help": "log a line per API request: method, path, route, status, duration, client, user, "
            "refusal reason (never a token or a body; docs/operations.md, Access log; env "
            "MESHLOG_API_ACCESS_LOG; default %(default)s)"}
_ACCESS_LOG_XFF_FLAG = ("--api-access-log-forwarded-for",)
_ACCESS_LOG_XFF_OPTIONS: dict[str, Any] = {
    "action": "store_true", "default": env("API_ACCESS_LOG_FORWARDED_FOR", "false"),
    "help": "the API is behind a proxy you trust to set X-Forwarded-For: the access log logs "
            "it too (it changes no one's rights; env MESHLOG_API_ACCESS_LOG_FORWARDED_FOR)"}


API_DEFAULT = "http://127.0.0.1:5681"
_API_HELP = (f"API base URL (env MESHLOG_API; default {API_DEFAULT}, or the https:// one at "
             f"that address that the data dir's up.json names)")
_CA_HELP = ("trust this PEM CA for an API that serves HTTPS (kumactl's --ca-cert-file; env "
            "MESHLOG_API_CA_CERT_FILE; default: the CA of the data dir's `meshlog up "
            "--api-tls` for the API it names, else the system's CAs)")
_VERBOSE_HELP = "log at debug level"
_TOKEN_HELP = ("user token for the API (env MESHLOG_TOKEN; default: the admin token of the "
               "`meshlog up` or `meshlog api` of the data dir)")


_MODE_FLAG = ("--mode",)
_MODE_OPTIONS: dict[str, Any] = {
    "default": env("MODE"), "choices": ["standalone", "global", "zone"],
    "help": "standalone (default), global (the global control plane of a multi-zone "
            "deployment), or zone (with --global)"}
_GLOBAL_FLAG = ("--global",)
_GLOBAL_OPTIONS: dict[str, Any] = {
    "dest": "global_url", "default": env("GLOBAL_URL"), "metavar": "URL",
    "help": "join the global control plane at this leafnode URL (its global_url) as zone "
            "--zone (env MESHLOG_GLOBAL_URL)"}

def _global_flags(*, ca: bool = True) -> argparse.ArgumentParser:
    """`--api`, `--token`, `--ca-cert-file` and `-v` for every subcommand, so they go after it
    too (as kubectl's global flags do). SUPPRESS: a subcommand sets them only when given
    there, so it never overwrites a value given before the subcommand with its default.
    `ca=False` for `dataplane bootstrap`, whose own --ca-cert-file is the gateways' CA."""
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument("--api", default=argparse.SUPPRESS, help=_API_HELP)
    flags.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                       help=_VERBOSE_HELP)
    flags.add_argument("--token", default=argparse.SUPPRESS, help=_TOKEN_HELP)
    if ca:
        flags.add_argument("--ca-cert-file", dest="api_ca_cert_file", metavar="FILE",
                           default=argparse.SUPPRESS, help=_CA_HELP)
    return flags


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="meshlog", description="meshlog: an event-sourced "
                                "service-mesh control plane on NATS JetStream")
    p.add_argument("--api", default=env("API"), help=_API_HELP)
    p.add_argument("-v", "--verbose", action="store_true", help=_VERBOSE_HELP)
    p.add_argument("--token", default=env("TOKEN"), help=_TOKEN_HELP)
    p.add_argument("--ca-cert-file", dest="api_ca_cert_file", metavar="FILE",
                   default=env("API_CA_CERT_FILE"), help=_CA_HELP)
    g = [_global_flags()]
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", parents=g, help="run the control plane on one machine")
    up.add_argument("--data-dir", default=env("DATA_DIR", ".meshlog"),
                    help="JetStream store and read models "
                         "(env MESHLOG_DATA_DIR; default %(default)s)")
    up.add_argument("--nats-url", default=env("NATS_URL"),
                    help="use this NATS (JetStream) instead of the embedded server")
    up.add_argument("--nats-creds", **_CREDS_OPTIONS)
    up.add_argument("--stream-replicas", default=env("STREAM_REPLICAS", "1"),
                    help="with --nats-url: replicas of the streams and buckets meshlog up "
                         "creates if missing (3 on a 3-node cluster; env "
                         "MESHLOG_STREAM_REPLICAS; default %(default)s; the embedded "
                         "nats-server is one node: 1 only)")
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
    up.add_argument(*_MODE_FLAG, **_MODE_OPTIONS)
    up.add_argument(*_GLOBAL_FLAG, **_GLOBAL_OPTIONS)
    up.add_argument("--leaf-host", default=env("LEAF_HOST", "127.0.0.1"),
                    help="--mode global: where zones' nats-servers connect (leafnodes)")
    up.add_argument("--leaf-port", default=env("LEAF_PORT", "7422"),
                    help="--mode global: leafnode port (0: any free; default %(default)s)")
    up.add_argument(*_DEREGISTRATION_FLAG, **_DEREGISTRATION_OPTIONS)
    up.add_argument(*_DNS_TTL_FLAG, **_DNS_TTL_OPTIONS)
    up.add_argument(*_DNS_SERVER_FLAG, **_DNS_SERVER_OPTIONS)
    up.add_argument(*_GRACE_FLAG, **_GRACE_OPTIONS)
    up.add_argument(*_MMZS_CIDR_FLAG, **_MMZS_CIDR_OPTIONS)
    up.add_argument(*_NO_AUTH_FLAG, **_NO_AUTH_OPTIONS)
    up.add_argument("--xds-tls", action="store_true", default=env("XDS_TLS", "false"),
                    help="serve xDS over TLS with the control plane's own certificate, made "
                         "once in <data-dir>/xds-tls/ (proxies trust its ca.crt: dataplane "
                         "bootstrap --ca-cert-file; env MESHLOG_XDS_TLS)")
    for flag, options in _XDS_TLS_FILES:
        up.add_argument(flag, **options)
    up.add_argument("--api-tls", action="store_true", default=env("API_TLS", "false"),
                    help="serve the API over HTTPS with its own certificate, made once in "
                         "<data-dir>/api-tls/ (the CLI of the data dir trusts its ca.crt "
                         "itself; others: --ca-cert-file; env MESHLOG_API_TLS)")
    for flag, options in _API_TLS_FILES:
        up.add_argument(flag, **options)
    up.add_argument(*_LOCALHOST_ADMIN_FLAG, **_LOCALHOST_ADMIN_OPTIONS)
    up.add_argument(*_ACCESS_LOG_FLAG, **_ACCESS_LOG_OPTIONS)
    up.add_argument(*_ACCESS_LOG_XFF_FLAG, **_ACCESS_LOG_XFF_OPTIONS)
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
                     + "".join(f"{kind.plural} | " for kind in POLICY_KINDS)
                     + "meshmultizoneservices | zones | zoneingresses, or a singular kind")
    get.add_argument("name", nargs="?", help="show this resource only")
    get.add_argument("-m", "--mesh", default="default", help="mesh (default %(default)s)")
    get.add_argument("-o", "--output", choices=["table", "yaml", "json"])
    get.add_argument("-l", "--label", action="append", metavar="KEY=VALUE",
                     help="only resources with this label (repeatable; all must match)")

    rm = sub.add_parser("delete", parents=g, help="delete a resource")
    rm.add_argument("kind", help="mesh | dataplane | meshservice | hostnamegenerator | "
                    + "".join(f"{kind.singular} | " for kind in POLICY_KINDS)
                    + "meshmultizoneservice | zoneingress")
    rm.add_argument("name")
    rm.add_argument("-m", "--mesh", default="default", help="mesh (default %(default)s)")

    insp = sub.add_parser("inspect", parents=g, help="a proxy's insight (connected, gateway, "
                          "xDS ACK/NACK counters), or with --config its computed xDS")
    insp.add_argument("kind", help="dataplane | zoneingress | zone")
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
        proc.add_argument(*_MODE_FLAG, **_MODE_OPTIONS)
        proc.add_argument(*_GLOBAL_FLAG, **_GLOBAL_OPTIONS)
        proc.add_argument("--stream-replicas", default=env("STREAM_REPLICAS", "1"),
                          help="replicas of the streams this process creates if missing "
                               "(3 on a 3-node cluster)")
        if name == "projector":
            proc.add_argument(*_GRACE_FLAG, **_GRACE_OPTIONS)
            proc.add_argument(*_MMZS_CIDR_FLAG, **_MMZS_CIDR_OPTIONS)
            proc.add_argument("--lease-ttl", default=env("LEASE_TTL", "5s"),
                              help="active/standby: how long a silent leader keeps the "
                                   "projector lease before a standby takes over (default "
                                   "%(default)s; 0 = no lease, for a single projector)")
            proc.add_argument("--max-batch", default=env("MAX_BATCH"),
                              help="the most events folded per read-model transaction while "
                                   "catching up (default 10000; at the tail a batch is what "
                                   "has arrived)")
            proc.add_argument("--sync-creds", default=env("SYNC_CREDS"), metavar="FILE",
                              help="with --mode global or zone: NATS credentials of the sync "
                                   "role's user, for the multi-zone sync that keeps the "
                                   "stream's sources (env MESHLOG_SYNC_CREDS; default: the "
                                   "projector's own connection, which then needs the admin "
                                   "user's; README, NATS permissions)")
            proc.add_argument("--admin-creds", default=env("ADMIN_CREDS"), metavar="FILE",
                              help="with --mode global or zone: NATS credentials of the admin "
                                   "user, for the source keeper that applies the sync's "
                                   "changes of the stream's sources, sources only (env "
                                   "MESHLOG_ADMIN_CREDS; default: the projector's own "
                                   "connection; docs/security.md, The multi-zone sync's NATS user)")
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
            proc.add_argument(*_DNS_TTL_FLAG, **_DNS_TTL_OPTIONS)
            proc.add_argument(*_DNS_SERVER_FLAG, **_DNS_SERVER_OPTIONS)
            proc.add_argument(*_NO_AUTH_FLAG, **_NO_AUTH_OPTIONS)
            for flag, options in _XDS_TLS_FILES:
                proc.add_argument(flag, **options)
        if name == "api":
            proc.add_argument("--api-host", default=env("API_HOST", "127.0.0.1"))
            proc.add_argument("--api-port", default=env("API_PORT", "5681"))
            proc.add_argument(*_LOCALHOST_ADMIN_FLAG, **_LOCALHOST_ADMIN_OPTIONS)
            proc.add_argument(*_ACCESS_LOG_FLAG, **_ACCESS_LOG_OPTIONS)
            proc.add_argument(*_ACCESS_LOG_XFF_FLAG, **_ACCESS_LOG_XFF_OPTIONS)
            for flag, options in _API_TLS_FILES:
                proc.add_argument(flag, **options)

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
    replay.add_argument(*_MODE_FLAG, **_MODE_OPTIONS)
    replay.add_argument(*_SECRET_KEY_FLAG, **_SECRET_KEY_OPTIONS)
    replay.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bar, no INFO logs (warnings and errors still show)")
    replay.add_argument("--swap", action="store_true",
                        help="then make the running `meshlog up` (at --api) serve the new store")

    bench_creds: dict[str, Any] = {
        "metavar": "FILE", "help": "with --nats-url: NATS credentials (.creds or nkey seed) "
        "for every connection the bench makes and every process it starts: the admin user's "
        "on a NATS with meshlog's users (it creates streams and runs every role)"}
    bench = sub.add_parser("bench", parents=g, help="benchmarks (print figures, last line JSON)")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True, metavar="BENCH")
    for name, text in (("rebuild", "rebuild rate vs the raw ordered-consumer read rate"),
                       ("ingest", "append path vs raw publish_async")):
        b = bench_sub.add_parser(name, parents=g, help=text)
        b.add_argument("--events", default="100000", help="default %(default)s")
        b.add_argument("--nats-url", help="default: an embedded nats-server in a temp dir")
        b.add_argument("--nats-creds", **bench_creds)
        if name == "rebuild":
            b.add_argument("--database", default="sqlite",
                           help="sqlite | postgres (a fresh database on 127.0.0.1:5432) | URL")
            b.add_argument("--batch", help="events folded per read-model transaction "
                                "(default: as `meshlog replay`, 100000)")
    prop = bench_sub.add_parser("propagation", parents=g, help="time from an endpoint change "
                                "in the log to every proxy's ACK, through an Envoy LB to the "
                                "gateways")
    prop.add_argument("--proxies", default="1000", help="simulated proxies (default %(default)s)")
    prop.add_argument("--gateways", default="1", help="gateway processes (default %(default)s)")
    prop.add_argument("--rounds", default="20", help="endpoint changes (default %(default)s)")
    prop.add_argument("--nats-url", help="default: an embedded nats-server in a temp dir")
    prop.add_argument("--nats-creds", **bench_creds)
    mz = bench_sub.add_parser("multizone", parents=g, help="time from a Dataplane registered "
                              "in one zone to its synced MeshService in another zone's "
                              "projection (global and two zones, each a meshlog up)")
    mz.add_argument("--rounds", default="20", help="Dataplanes registered (default %(default)s)")
    mz.add_argument("--proxies", help="simulated proxies in east: measure until every one has "
                    "ACKed the new endpoints (through west's ingress, mTLS on) instead of "
                    "until east's projection")
    mz.add_argument("--mmzs", action="store_true", help="with --proxies: the change is west's "
                    "service becoming (un)available behind a MeshMultiZoneService (EDS only) "
                    "instead of a new remote service (CDS, LDS, EDS)")
    faults = bench_sub.add_parser("faults", parents=g, help="a 3-node JetStream cluster: the "
                                  "stream leader SIGKILLed under an append load through the "
                                  "API, then restarted (lost, duplicates, longest stall)")
    faults.add_argument("--proxies", default="20", help="simulated proxies on the gateway "
                        "(default %(default)s)")
    faults.add_argument("--writers", default="4", help="concurrent API writers "
                        "(default %(default)s)")
    faults.add_argument("--warmup", default="5", help="seconds of load before the kill "
                        "(default %(default)s)")
    faults.add_argument("--down", default="10", help="seconds the leader stays down "
                        "(default %(default)s)")
    faults.add_argument("--after", default="5", help="seconds of load after it is back "
                        "(default %(default)s)")
    faults.add_argument("--work-dir", help="keep the logs and stores there (default: a temp "
                        "dir, removed)")
    rot = bench_sub.add_parser("rotation", parents=g, help="a certificate rotation wave: time "
                               "until every proxy has ACKed its new secret, and the CPU spent")
    rot.add_argument("--proxies", default="1000", help="simulated proxies (default %(default)s)")
    rot.add_argument("--gateways", default="1", help="gateway processes (default %(default)s)")
    rot.add_argument("--rounds", default="3", help="rotation waves (default %(default)s)")
    rot.add_argument("--nats-url", help="default: an embedded nats-server in a temp dir")
    rot.add_argument("--nats-creds", **bench_creds)

    add_quarantine_parsers(sub, g)

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
                        help="store to export (default: the SQLite read models `meshlog up` "
                             "of --data-dir serves)")
    export.add_argument("--data-dir", default=env("DATA_DIR", ".meshlog"))
    export.add_argument("-o", "--output", help="file (default: stdout)")

    no_ca = [_global_flags(ca=False)]
    dp = sub.add_parser("dataplane", parents=no_ca, help="sidecar helpers")
    dp_sub = dp.add_subparsers(dest="dataplane_command", required=True, metavar="COMMAND")
    bs = dp_sub.add_parser("bootstrap", parents=no_ca,
                           help="print an Envoy bootstrap for a Dataplane")
    bs.add_argument("--mesh", help="the Dataplane's mesh (default: the file's, else default)")
    bs.add_argument("--name", help="the Dataplane's name (default: the --dataplane-file's)")
    bs.add_argument("--zone-ingress", metavar="NAME",
                    help="a bootstrap for an Envoy acting as the zone ingress NAME (a "
                         "ZoneIngress registered with `meshlog apply`) instead of a sidecar")
    bs.add_argument("--dataplane-file", help="a Dataplane (YAML or JSON) the sidecar registers "
                    "itself with, in its node metadata (removed after it disconnects)")
    bs.add_argument("--xds-address", default=env("XDS_ADDRESS", "127.0.0.1:5678"),
                    help="gateway (or load balancer) host:port (default %(default)s)")
    bs.add_argument("--admin-port", default="9901", help="Envoy admin port (default %(default)s)")
    bs.add_argument("--delta", action="store_true", help="use incremental (Delta) xDS")
    bs.add_argument("--token-file", default=env("DATAPLANE_TOKEN_FILE"),
                    help="a dataplane token (meshlog generate dataplane-token), or with "
                         "--zone-ingress a zone token (meshlog generate zone-token, on global's "
                         "API): sent in "
                         "the `authorization` metadata of the xDS streams; --mesh and --name "
                         "default to the token's (env MESHLOG_DATAPLANE_TOKEN_FILE)")
    bs.add_argument("--ca-cert-file", default=env("CONTROL_PLANE_CA_CERT_FILE"),
                    metavar="FILE",
                    help="the gateway serves TLS (--tls-cert-file, meshlog up --xds-tls): "
                         "trust this PEM CA for it and check its certificate names the host "
                         "of --xds-address (kuma-dp's --ca-cert-file; env "
                         "MESHLOG_CONTROL_PLANE_CA_CERT_FILE; default: plaintext)")
    bs.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml")

    add_token_parsers(sub, g)
    add_signing_key_parsers(sub, g)
    add_nats_users_parser(sub, g)
    add_xds_certificate_parser(sub, g)
    add_grpc_identity_parser(sub, no_ca, env)
    return p
