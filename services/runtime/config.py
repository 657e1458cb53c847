"""Process configuration, parsed once at start-up into frozen Structs.

Every setting is a flag with a `MESHLOG_*` environment variable as its default; an invalid
value is a ConfigError naming the flag, the variable and the value.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path

from msgspec import Struct

from events import DEFAULT_ZONE
from events.identity import SECRET_KEY_ENV, SealedSecretError, SecretKey
from services.errors import ConfigError

__all__ = ["ADMIN_TOKEN_FILE", "SECRET_KEY_FILE", "UpConfig", "env", "load_secret_key",
           "parse_bool", "parse_cidr", "parse_duration_ms", "parse_port", "parse_positive",
           "resolve_secret_key_file"]

SECRET_KEY_FILE = "secret.key"
"""The secret key's file in a data dir, the default of `--secret-key-file`."""
ADMIN_TOKEN_FILE = "admin-token"
"""The admin user token's file in a data dir (mode 0600), written by the API's first start."""


class UpConfig(Struct, frozen=True, kw_only=True):
    data_dir: Path
    nats_url: str | None = None
    nats_port: int = 0
    database: str | None = None
    api_host: str = "127.0.0.1"
    api_port: int = 5681
    xds_host: str = "127.0.0.1"
    xds_port: int = 5678
    vip_cidr: str = "241.0.0.0/8"
    zone: str = DEFAULT_ZONE
    meshservice_grace_period_ms: int = 3_600_000
    """How long a generated MeshService outlives its last Dataplane (recorded in the log)."""
    deregistration_delay_s: float = 10.0
    """How long a self-registered proxy may be gone before its Dataplane is deregistered."""
    secret_key_file: Path | None = None
    """The control plane's secret key (`--secret-key-file`); None: `<data dir>/secret.key`,
    created at first start."""
    no_auth: bool = False
    """Serve xDS without dataplane tokens (`--no-auth`, development only)."""
    localhost_is_admin: bool = True
    """API clients on loopback are admin (Kuma's default; `--no-localhost-admin`)."""

    @property
    def database_url(self) -> str:
        return self.database or f"sqlite:///{self.data_dir / 'readmodels.db'}"

    @property
    def secret_key_path(self) -> Path:
        return resolve_secret_key_file(self.secret_key_file, self.data_dir)


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


def resolve_secret_key_file(value: str | Path | None, data_dir: Path) -> Path:
    """`--secret-key-file` (env MESHLOG_SECRET_KEY_FILE), else `<data dir>/secret.key`: the
    one place every process that opens sealed keys (API, projector) finds its secret key."""
    return Path(value) if value else data_dir / SECRET_KEY_FILE


def load_secret_key(path: Path, *, create: bool) -> SecretKey:
    """The secret key in `path`; with `create`, made (mode 0600) if the file is missing.
    A ConfigError names the flag, the variable and the file."""
    try:
        if create:
            return SecretKey.load_or_create(path)
        return SecretKey.load(path)
    except (SealedSecretError, OSError) as exc:
        raise ConfigError(f"--secret-key-file ({SECRET_KEY_ENV}): {exc}") from None
