"""Subjects of the event log: one subject per resource (aggregate), zone-ready.

    meshlog.ev.<zone>.<kind>.<mesh>.<name>     mesh-scoped (dataplane, meshservice,
                                               each policy kind's singular
                                               (`events.policy_kinds`),
                                               meshmultizoneservice)
    meshlog.ev.<zone>.<kind>._.<name>          global (mesh, hostnamegenerator, ipam,
                                               zoneingress)
    meshlog.ev.<zone>.graceperiod._.<kind>     grace period of generated services
    meshlog.ev.<zone>.ca.<mesh>.<backend>      a mesh's certificate authority (mTLS)
    meshlog.ev.<zone>.clock._.<due ms>         one subject per tick, so a tick is appended
                                               once (expected sequence 0), by any projector
    meshlog.ev.<zone>.signingkey.<mesh|_>.<purpose>-<serial>
                                               a token signing key, created once (expected
                                               sequence 0), perhaps retired later; `_`: the
                                               user-token and zone-token keys
    meshlog.ev.<zone>.revocation.<mesh|_>.<jti>  a revoked token
    meshlog.ev.<zone>.skip._.<seq>             an operator's decision to fold the event at
                                               stream sequence <seq> of this log as nothing
                                               (it cannot be read); made once (expected
                                               sequence 0)

Resource names are RFC 1123 subdomains and may hold dots, which NATS reads as token
separators; dots are written as `_` (never valid in a name), so the mapping is reversible.

`<zone>` is the control plane that wrote the event: a zone's name (an RFC 1123 label, so it
has no dot and stands as is), or `GLOBAL_ZONE` (`_global`, never a zone name: `_` is not
valid in one) for the global control plane. Each control plane writes only its own subjects,
and JetStream stream sources keep the original subject, so a zone's log that also holds
events sourced from other zones and from global still says who wrote each one:
`provenance_of` reads it back, and the fold labels what it folds with that, never with the
zone its projector runs in (DESIGN.md, Multi-zone).
"""

from __future__ import annotations

import functools
import re
from typing import Literal

from msgspec import Struct

from events.errors import PermanentError
from events.policy_kinds import POLICY_KINDS

__all__ = [
    "DEFAULT_ZONE",
    "EVENTS_STREAM",
    "GLOBAL",
    "GLOBAL_ZONE",
    "MalformedSubject",
    "Origin",
    "Provenance",
    "ca_subject",
    "clock_subject",
    "events_wildcard",
    "grace_period_subject",
    "ipam_subject",
    "provenance_of",
    "resource_subject",
    "resources_filter",
    "revocation_subject",
    "signing_key_subject",
    "signing_keys_filter",
    "skip_subject",
]

EVENTS_STREAM = "MESHLOG_EVENTS"
DEFAULT_ZONE = "default"
GLOBAL = "_"
"""The `<mesh>` token of resources that belong to no mesh."""
GLOBAL_ZONE = "_global"
"""The `<zone>` token of events the global control plane writes."""
_PREFIX = "meshlog.ev"
_LAYOUT = f"{_PREFIX}.<zone>.<kind>.<mesh|{GLOBAL}>.<name>"
_TOKENS = 6
_ZONE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")  # RFC 1123 label

_KIND_TOKENS = {"Mesh": "mesh", "Dataplane": "dataplane", "MeshService": "meshservice",
                "HostnameGenerator": "hostnamegenerator",
                **{kind.type_name: kind.singular for kind in POLICY_KINDS},
                "MeshMultiZoneService": "meshmultizoneservice", "Zone": "zone",
                "ZoneIngress": "zoneingress"}

Origin = Literal["zone", "global"]
"""Kuma's `kuma.io/origin` values: which kind of control plane created a resource."""


class MalformedSubject(PermanentError):
    """A subject that does not follow the layout of this module: its event has no provenance,
    so no fold can apply it (the projector quarantines it, DESIGN.md invariant 10)."""

    def __init__(self, subject: str, reason: str) -> None:
        self.subject = subject
        self.reason = reason
        super().__init__(f"subject {subject!r} does not follow {_LAYOUT}: {reason}")


class Provenance(Struct, frozen=True):
    """Who wrote an event, in the words of Kuma's computed labels.

    Kuma (kumahq/kuma v2.14, `pkg/core/resources/model/resource.go` ComputeLabels; see
    reference/multizone.md §1): a resource created on a zone control plane carries
    `kuma.io/origin: zone` and `kuma.io/zone: <zone>`, also once synced to global (which pins
    `kuma.io/zone` to the zone that sent it); a resource from the global control plane
    carries `kuma.io/origin: global` and no `kuma.io/zone` (ComputeLabels adds the zone only
    when the origin is not global).

    meshlog: the provenance says who wrote the event, not how it reached this log; whether a
    resource is local to a reader is its zone == the reader's (`ProjectionState.local_zone`).
    Another zone's MeshService is shown as Kuma shows a synced one (`projections.remote`:
    `origin=global` in a zone, `origin=zone` on global, `kuma.io/zone` kept)."""

    zone: str
    """The zone whose control plane wrote the event; "" for the global control plane."""
    origin: Origin


_GLOBAL_PROVENANCE = Provenance(zone="", origin="global")


def _token(name: str) -> str:
    return name.replace(".", "_")


def events_wildcard() -> str:
    return f"{_PREFIX}.>"


def resource_subject(kind: str, mesh: str | None, name: str, zone: str = DEFAULT_ZONE) -> str:
    """The subject that holds every event of one resource."""
    scope = GLOBAL if mesh is None else _token(mesh)
    return f"{_PREFIX}.{_token(zone)}.{_KIND_TOKENS[kind]}.{scope}.{_token(name)}"


def resources_filter(kind: str, mesh: str | None, zone: str = "*") -> str:
    """A subject filter for every resource of `kind` in `mesh` (None: global kinds), in
    `zone` (default: any zone of this log)."""
    scope = GLOBAL if mesh is None else _token(mesh)
    return f"{_PREFIX}.{zone if zone == '*' else _token(zone)}.{_KIND_TOKENS[kind]}.{scope}.*"


def ipam_subject(kind: str, zone: str = DEFAULT_ZONE) -> str:
    return f"{_PREFIX}.{_token(zone)}.ipam.{GLOBAL}.{kind.lower()}"


def grace_period_subject(kind: str, zone: str = DEFAULT_ZONE) -> str:
    return f"{_PREFIX}.{_token(zone)}.graceperiod.{GLOBAL}.{kind.lower()}"


def ca_subject(mesh: str, backend: str, zone: str = DEFAULT_ZONE) -> str:
    """The CA of a mesh's mTLS backend: recorded once (builtin), or each time the operator
    provides another (provided)."""
    return f"{_PREFIX}.{_token(zone)}.ca.{_token(mesh)}.{_token(backend)}"


def clock_subject(due: int, zone: str = DEFAULT_ZONE) -> str:
    return f"{_PREFIX}.{_token(zone)}.clock.{GLOBAL}.{due}"


def signing_key_subject(purpose: str, mesh: str | None, serial: int,
                        zone: str = DEFAULT_ZONE) -> str:
    """The subject of one token signing key: its `SigningKeyCreated` (appended once, at
    expected sequence 0), then perhaps its `SigningKeyRetired`."""
    scope = GLOBAL if mesh is None else _token(mesh)
    return f"{_PREFIX}.{_token(zone)}.signingkey.{scope}.{purpose}-{serial}"


def signing_keys_filter(mesh: str | None, zone: str = DEFAULT_ZONE) -> str:
    """A subject filter for every signing key of `mesh` (None: the global ones) in `zone`;
    NATS wildcards are whole tokens, so a purpose is told apart by the last token's prefix."""
    scope = GLOBAL if mesh is None else _token(mesh)
    return f"{_PREFIX}.{_token(zone)}.signingkey.{scope}.*"


def revocation_subject(mesh: str | None, jti: str, zone: str = DEFAULT_ZONE) -> str:
    """The subject of one revoked token (`TokenRevoked`); `jti` is a UUID (no dots)."""
    scope = GLOBAL if mesh is None else _token(mesh)
    return f"{_PREFIX}.{_token(zone)}.revocation.{scope}.{_token(jti)}"


def skip_subject(seq: int, zone: str = DEFAULT_ZONE) -> str:
    """The subject of the decision to skip stream sequence `seq` (`SequenceSkipped`). The
    sequence is this log's: `zone` is the control plane whose log it is, and whose projector
    alone looks the decision up (sourced into another log, it names another log's event)."""
    return f"{_PREFIX}.{_token(zone)}.skip.{GLOBAL}.{seq}"


@functools.lru_cache(maxsize=65_536)
def provenance_of(subject: str) -> Provenance:
    """The provenance of the event stored on `subject` (any subject this module makes).

    The zone token maps back as is (a zone name is a label: `_token` left it unchanged);
    `GLOBAL_ZONE` gives origin `global`. Raise `MalformedSubject`, naming the subject, for
    one that does not follow the layout. Remembered per subject: the fold asks for every
    event, and a resource's events share its subject."""
    tokens = subject.split(".")
    if len(tokens) != _TOKENS or ".".join(tokens[:2]) != _PREFIX:
        raise MalformedSubject(subject, f"it has {len(tokens)} tokens, not {_TOKENS} starting "
                                        f"with {_PREFIX}")
    if "" in tokens:
        raise MalformedSubject(subject, f"token {tokens.index('') + 1} is empty")
    provenance = _of_zone(tokens[2])
    if provenance is None:
        raise MalformedSubject(subject, f"the zone token {tokens[2]!r} is neither a zone name "
                                        f"(an RFC 1123 label) nor {GLOBAL_ZONE}")
    return provenance


@functools.lru_cache(maxsize=1024)
def _of_zone(zone: str) -> Provenance | None:
    """One Provenance per zone token, checked once: the fold asks for every event."""
    if zone == GLOBAL_ZONE:
        return _GLOBAL_PROVENANCE
    if _ZONE_NAME.fullmatch(zone) is None:
        return None
    return Provenance(zone=zone, origin="zone")
