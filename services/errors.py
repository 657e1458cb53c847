"""Errors of the command side and process lifecycle.

    MeshlogError (events.errors)
    └── ServiceError
        ├── ConfigError          a setting is wrong; names the variable or flag and the value
        └── ProcessStartError    a child process (nats-server, Envoy) did not come up
"""

from __future__ import annotations

from events import MeshlogError

__all__ = ["ConfigError", "ProcessStartError", "ServiceError"]


class ServiceError(MeshlogError):
    pass


class ConfigError(ServiceError):
    pass


class ProcessStartError(ServiceError):
    pass
