"""Process configuration, parsed once at start-up into frozen Structs.

Every setting is a flag with a `MESHLOG_*` environment variable as its default; an invalid
value is a ConfigError naming the flag, the variable and the value.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from msgspec import Struct

from events import DEFAULT_ZONE
from services.errors import ConfigError

__all__ = ["UpConfig", "env", "parse_cidr", "parse_port", "parse_positive"]


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


def parse_cidr(flag: str, value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError as exc:
        raise ConfigError(f"{flag}: {value!r} is not a CIDR ({exc})") from None
