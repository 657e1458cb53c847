"""Mesh: the mesh itself, with its MeshService mode and its mTLS backends."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from msgspec import Meta

from events.resources._base import Resource, ResourceName, _Base

__all__ = [
    "DpCert",
    "KumaDuration",
    "Mesh",
    "MeshMtls",
    "MeshServicesConfig",
    "MtlsBackend",
    "MtlsBackendConf",
    "ProvidedSecret",
    "Rotation",
    "duration_ms",
]


class MeshServicesConfig(_Base, frozen=True):
    mode: Literal["Disabled", "Everywhere", "ReachableBackends", "Exclusive"] = "Exclusive"


KumaDuration = Annotated[str, Meta(pattern=r"^([0-9]{1,9}(\.[0-9]{1,9})?(ms|s|m|h|d))+\Z")]
"""A duration as Kuma writes them in a Mesh: `24h`, `1d`, `90s`, `1h30m`."""


_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def duration_ms(value: str) -> int:
    """A `KumaDuration` in milliseconds (`1h30m` -> 5400000)."""
    return round(sum(float(n) * _UNIT_MS[unit] for n, unit in _DURATION_PART.findall(value)))


class Rotation(_Base, frozen=True):
    expiration: KumaDuration = "24h"
    """How long a workload certificate lives; it is replaced after 4/5 of it (Kuma)."""


class DpCert(_Base, frozen=True):
    rotation: Rotation | None = None
    request_timeout: KumaDuration | None = None
    """Accepted for Kuma compatibility: certificates are issued by the projector, not
    requested by the proxy, so there is no request to time out."""


class ProvidedSecret(_Base, frozen=True):
    """Where a `provided` backend's CA certificate or key comes from: inline PEM (the key is
    sealed into the log and removed from the Mesh before the Mesh is stored)."""

    inline_string: str | None = None


class MtlsBackendConf(_Base, frozen=True):
    cert: ProvidedSecret | None = None
    key: ProvidedSecret | None = None
    ca_cert: dict[str, Any] | None = None
    """builtin: Kuma's `caCert{RSAbits, expiration}`; accepted, and the CA is EC P-256 with
    ten years (reference/security.md: an RSA leaf costs 375x an EC one)."""


class MtlsBackend(_Base, frozen=True):
    name: ResourceName
    type: Literal["builtin", "provided"]
    mode: Literal["STRICT", "PERMISSIVE"] = "STRICT"
    dp_cert: DpCert | None = None
    conf: MtlsBackendConf | None = None
    root_chain: dict[str, Any] | None = None


class MeshMtls(_Base, frozen=True):
    enabled_backend: str | None = None
    """The backend whose CA issues the workload certificates; none: mTLS is off."""
    backends: list[MtlsBackend] = []
    """Every listed backend's CA is trusted, so a CA change is done without a dropped request:
    add the new backend, enable it, then remove the old one."""
    skip_validation: bool | None = None


class Mesh(Resource, frozen=True, kw_only=True, tag="Mesh"):
    mesh_services: MeshServicesConfig | None = None
    mtls: MeshMtls | None = None

    def enabled_backend(self) -> MtlsBackend | None:
        """The backend mTLS runs on, or None when mTLS is off."""
        if self.mtls is None or self.mtls.enabled_backend is None:
            return None
        return next((b for b in self.mtls.backends if b.name == self.mtls.enabled_backend),
                    None)
