"""What every resource shares: the tagged base Struct, names, ports, labels and the
`appProtocol`s and service kinds that several resources refer to."""

from __future__ import annotations

import re
from typing import Annotated, Literal, TypeGuard, get_args

from msgspec import Meta, Struct

__all__ = [
    "APP_PROTOCOLS",
    "RFC1123_SUBDOMAIN",
    "AppProtocol",
    "Labels",
    "MeshScopedResource",
    "PortNumber",
    "Resource",
    "ResourceName",
    "ServiceKind",
    "is_app_protocol",
    "is_resource_name",
]

# `\Z`, not `$`: `$` also matches before a trailing newline, which would reach NATS subjects.
RFC1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z"

_RESOURCE_NAME = re.compile(RFC1123_SUBDOMAIN)


def is_resource_name(value: str) -> bool:
    """Whether `value` passes `ResourceName` (an RFC 1123 subdomain of at most 253
    characters), checked outside a Struct."""
    return len(value) <= 253 and bool(_RESOURCE_NAME.fullmatch(value))


PortNumber = Annotated[int, Meta(ge=1, le=65535)]
ResourceName = Annotated[str, Meta(min_length=1, max_length=253, pattern=RFC1123_SUBDOMAIN)]
Labels = dict[str, str]
AppProtocol = Literal["http", "http2", "grpc", "tcp", "tls", "kafka", "mysql"]
APP_PROTOCOLS: tuple[str, ...] = get_args(AppProtocol)
ServiceKind = Literal["MeshService", "MeshExternalService", "MeshMultiZoneService"]
"""The kinds of service a backendRef names and a VIP is allocated for."""


def is_app_protocol(value: str) -> TypeGuard[AppProtocol]:
    """Whether `value` is one of the `appProtocol`s meshlog knows (`APP_PROTOCOLS`)."""
    return value in APP_PROTOCOLS


class _Base(Struct, frozen=True, kw_only=True, rename="camel", omit_defaults=True, gc=False):
    """Not tracked by the cyclic garbage collector (`gc=False`, inherited): frozen values
    built from their parts cannot form a reference cycle, and a projector holds many."""


class Resource(_Base, frozen=True, tag_field="type"):
    """A named, labelled resource; `type` is the msgspec tag."""

    name: ResourceName
    labels: Labels = {}


class MeshScopedResource(Resource, frozen=True, kw_only=True):
    mesh: ResourceName
