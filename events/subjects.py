"""Subjects of the event log: one subject per resource (aggregate), zone-ready.

    meshlog.ev.<zone>.<kind>.<mesh>.<name>     mesh-scoped (dataplane, meshservice)
    meshlog.ev.<zone>.<kind>._.<name>          global (mesh, hostnamegenerator, ipam)
    meshlog.ev.<zone>.graceperiod._.<kind>     grace period of generated services
    meshlog.ev.<zone>.clock._.<due ms>         one subject per tick, so a tick is appended
                                               once (expected sequence 0), by any projector

Resource names are RFC 1123 subdomains and may hold dots, which NATS reads as token
separators; dots are written as `_` (never valid in a name), so the mapping is reversible.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_ZONE",
    "EVENTS_STREAM",
    "GLOBAL",
    "clock_subject",
    "events_wildcard",
    "grace_period_subject",
    "ipam_subject",
    "resource_subject",
]

EVENTS_STREAM = "MESHLOG_EVENTS"
DEFAULT_ZONE = "default"
GLOBAL = "_"
_PREFIX = "meshlog.ev"

_KIND_TOKENS = {"Mesh": "mesh", "Dataplane": "dataplane", "MeshService": "meshservice",
                "HostnameGenerator": "hostnamegenerator"}


def _token(name: str) -> str:
    return name.replace(".", "_")


def events_wildcard() -> str:
    return f"{_PREFIX}.>"


def resource_subject(kind: str, mesh: str | None, name: str, zone: str = DEFAULT_ZONE) -> str:
    """The subject that holds every event of one resource."""
    scope = GLOBAL if mesh is None else _token(mesh)
    return f"{_PREFIX}.{_token(zone)}.{_KIND_TOKENS[kind]}.{scope}.{_token(name)}"


def ipam_subject(kind: str, zone: str = DEFAULT_ZONE) -> str:
    return f"{_PREFIX}.{_token(zone)}.ipam.{GLOBAL}.{kind.lower()}"


def grace_period_subject(kind: str, zone: str = DEFAULT_ZONE) -> str:
    return f"{_PREFIX}.{_token(zone)}.graceperiod.{GLOBAL}.{kind.lower()}"


def clock_subject(due: int, zone: str = DEFAULT_ZONE) -> str:
    return f"{_PREFIX}.{_token(zone)}.clock.{GLOBAL}.{due}"
