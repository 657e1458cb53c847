"""Process configuration, parsed once at start-up into frozen Structs.

Every setting is a flag with a `MESHLOG_*` environment variable as its default; an invalid
value is a ConfigError naming the flag, the variable and the value.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Literal

from msgspec import Struct

from events import DEFAULT_ZONE, GLOBAL_ZONE
from events.bus.sources import GLOBAL_DOMAIN
from events.identity import SecretKey
from services.errors import ConfigError

__all__ = ["ADMIN_TOKEN_FILE", "API_FILE", "SECRET_KEY_FILE", "UpConfig", "env", "parse_bool",
           "parse_cidr", "parse_deployment", "parse_dns_server", "parse_duration_ms",
           "parse_port", "parse_positive", "parse_tls_files", "secret_key_of"]

SECRET_KEY_FILE = "secret.key"
"""The secret key's file in a data dir (mode 0600)."""
ADMIN_TOKEN_FILE = "admin-token"
"""The admin user token's file in a data dir (mode 0600), written by the API's first start."""
API_FILE = "api.json"
"""Where a `meshlog api` of a data dir listens (`{"api": URL, "admin_token": FILE}`), written
when it starts: the CLI of that data dir sends the admin token to that API only (a `meshlog up`
says so in its `up.json`)."""


class UpConfig(Struct, frozen=True, kw_only=True):
    data_dir: Path
    nats_url: str | None = None
    nats_creds: Path | None = None
    """Credentials for `nats_url` (every component uses them); the embedded server makes its
    own users (services.runtime.nats_users)."""
    stream_replicas: int = 1
    """Replicas of the streams and buckets made where `nats_url` lacks them (`--stream-replicas`;
    the embedded server takes 1 only)."""
    nats_port: int = 0
    database: str | None = None
    api_host: str = "127.0.0.1"
    api_port: int = 5681
    xds_host: str = "127.0.0.1"
    xds_port: int = 5678
    vip_cidr: str = "241.0.0.0/8"
    mmzs_vip_cidr: str = "243.0.0.0/8"
    """CIDR of new MeshMultiZoneService VIPs (recorded in the log when it differs from it)."""
    zone: str = DEFAULT_ZONE
    meshservice_grace_period_ms: int = 3_600_000
    """How long a generated MeshService outlives its last Dataplane (recorded in the log)."""
    deregistration_delay_s: float = 10.0
    """How long a self-registered proxy may be gone before its Dataplane is deregistered."""
    dns_cache_ttl_s: float = 10.0
    """How often the gateway looks up again the DNS names given as addresses."""
    dns_server: tuple[str, int] | None = None
    """(IP, port) of the DNS server the gateway asks (`--dns-server`); None: the system's."""
    secret_key_file: Path | None = None
    """The key that seals CA and signing keys in the log; default `<data_dir>/secret.key`,
    made at the first start."""
    no_auth: bool = False
    """Serve xDS without dataplane tokens (`--no-auth`, development only)."""
    xds_tls: bool = False
    """Serve xDS over TLS with the data dir's own certificate (`--xds-tls`,
    services.runtime.xds_certificate), unless `tls_files` names one."""
    tls_files: tuple[Path, Path] | None = None
    """Serve xDS over TLS with this certificate and key (`--tls-cert-file`, `--tls-key-file`)."""
    api_tls: bool = False
    """Serve the API over HTTPS with the data dir's own certificate (`--api-tls`,
    services.runtime.api_tls), unless `api_tls_files` names one."""
    api_tls_files: tuple[Path, Path] | None = None
    """Serve the API over HTTPS with this certificate and key (`--api-tls-cert-file`,
    `--api-tls-key-file`)."""
    localhost_is_admin: bool = True
    """API clients on loopback are admin (Kuma's default; `--no-localhost-admin`)."""
    api_access_log: bool = True
    """A line per API request in the log (`--api-access-log`; services.api.access_log)."""
    api_access_log_forwarded_for: bool = False
    """The access log logs `X-Forwarded-For` (`--api-access-log-forwarded-for`)."""
    projectors: int = 1
    """Projector tasks (`--projectors`): 1 folds without a lease (the read models swappable);
    N >= 2 contend for the lease, one folds (active/standby in one process)."""
    lease_ttl_s: float = 2.0
    """The lease TTL of `projectors` >= 2 (`--lease-ttl`)."""
    mode: Literal["standalone", "global", "zone"] = "standalone"
    """`--mode`: one control plane alone (default), the global control plane of a multi-zone
    deployment (its `zone` is then `GLOBAL_ZONE`), or a zone joined to one (`--global`)."""
    global_url: str | None = None
    """A zone's `--global`: the leafnode URL of global's nats-server that global printed."""
    leaf_host: str = "127.0.0.1"
    leaf_port: int = 7422
    """Global's leafnode listener (`--leaf-host`, `--leaf-port`; 0: any free port)."""

    @property
    def database_url(self) -> str:
        return self.database or f"sqlite:///{self.data_dir / 'readmodels.db'}"


def env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"MESHLOG_{name}", default)


def parse_port(flag: str, value: str | int) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{flag}: {value!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{flag}: {port} is not in 0..65535 (0 = any free port)")
    return port


def parse_positive(flag: str, value: str | int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{flag}: {value!r} is not a whole number") from None
    if number < 1:
        raise ConfigError(f"{flag}: {number} must be at least 1")
    return number


_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)?")


def parse_duration_ms(flag: str, value: str) -> int:
    """`1h`, `30m`, `90s`, `250ms` (a bare number is seconds) as milliseconds, >= 0."""
    match = _DURATION.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ConfigError(f"{flag}: {value!r} is not a duration (e.g. 1h, 30m, 90s, 250ms, 0)")
    number, unit = match.groups()
    ms = round(float(number) * _UNITS_MS[unit or "s"])
    if ms > 366 * 86_400_000:
        raise ConfigError(f"{flag}: {value!r} is longer than a year")
    return ms


def parse_cidr(flag: str, value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError as exc:
        raise ConfigError(f"{flag}: {value!r} is not a CIDR ({exc})") from None


def parse_dns_server(flag: str, value: str) -> tuple[str, int]:
    """`IP`, `IP:PORT` or `[IPv6]:PORT` (port 53 when left out) as (IP, port)."""
    text = value.strip()
    host, port = text, "53"
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ConfigError(f"{flag}: {value!r} is not IP, IP:PORT or [IPv6]:PORT")
        port = rest[1:] or port
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"{flag}: {value!r} is not IP, IP:PORT or [IPv6]:PORT (the DNS "
                          "server's address, not its name)") from None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"{flag}: {value!r} has no port in 1..65535 after the colon")
    return str(ip), int(port)


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_bool(flag: str, value: str | bool) -> bool:
    """`true`/`false` (also 1/0, yes/no, on/off) from a flag's variable."""
    if isinstance(value, bool):
        return value
    text = value.strip().lower()
    if text in _TRUE | _FALSE:
        return text in _TRUE
    raise ConfigError(f"{flag}: {value!r} is not true or false")



def parse_tls_files(cert_file: str | None, key_file: str | None, *,
                    flags: tuple[str, str] = ("--tls-cert-file", "--tls-key-file")
                    ) -> tuple[Path, Path] | None:
    """`--tls-cert-file` and `--tls-key-file` (or the two `flags`): both (a pair of paths) or
    neither (None)."""
    if not cert_file and not key_file:
        return None
    if not cert_file or not key_file:
        given, missing = flags if cert_file else flags[::-1]
        raise ConfigError(f"{given} {cert_file or key_file}: give {missing} too (env "
                          f"MESHLOG_{missing[2:].upper().replace('-', '_')}): the certificate "
                          f"and its key go together")
    return Path(cert_file), Path(key_file)


def secret_key_of(path: str | Path | None, data_dir: Path, *, create: bool) -> SecretKey | None:
    """The control plane's secret key: from `path` (`--secret-key-file`), else the data dir's
    `secret.key`, made there if `create` (`meshlog up`) and otherwise None when absent (a
    process that then meets a mesh with mTLS says what to pass)."""
    if path is not None:
        return SecretKey.load(Path(path))
    default = data_dir / SECRET_KEY_FILE
    if create:
        return SecretKey.load_or_create(default)
    return SecretKey.load(default) if default.exists() else None


_ZONE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def parse_deployment(mode: str | None, zone: str, global_url: str | None, *,
                     embedded: bool = True
                     ) -> tuple[Literal["standalone", "global", "zone"], str]:
    """`--mode`, `--zone` and `--global` as (mode, the zone token of this control plane's
    subjects): `--global URL` makes a zone; `--mode global` takes `GLOBAL_ZONE`. Only an
    `embedded` nats-server (`meshlog up`) needs the URL: separate processes join a NATS whose
    leafnode link the operator configured."""
    chosen = mode or ("zone" if global_url else "standalone")
    match chosen:
        case "standalone":
            if global_url:
                raise ConfigError("--global: only a zone joins a global control plane "
                                  "(drop --mode standalone)")
            return "standalone", zone
        case "global":
            if global_url:
                raise ConfigError("--global: the global control plane joins no other")
            return "global", GLOBAL_ZONE
        case "zone":
            if embedded and not global_url:
                raise ConfigError("--mode zone needs --global URL (the leafnode URL the "
                                  "global control plane printed as global_url)")
            if _ZONE_NAME.fullmatch(zone) is None or zone == GLOBAL_DOMAIN:
                raise ConfigError(f"--zone: {zone!r} must be an RFC 1123 label other than "
                                  f"{GLOBAL_DOMAIN!r} (it names the zone's JetStream domain)")
            return "zone", zone
        case _:
            raise ConfigError(f"--mode: {chosen!r} is not standalone, global or zone")
