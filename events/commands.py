"""The command side: validate, decide, append. The log is the only truth (invariant 1).

Each write reads the resource's subject (direct get), checks the caller's expected version
(`If-Match`), and appends with that sequence as `Nats-Expected-Last-Subject-Sequence`, so a
concurrent writer gets a Conflict instead of a silent overwrite (invariant 2). The Msg-Id is
derived from (subject, expected sequence, content) unless the caller gives an idempotency key,
so a retried request appends at most once. A write that changes nothing appends nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import msgspec
from msgspec import Struct

from events import (
    DEFAULT_HOSTNAME_GENERATORS,
    AnyEvent,
    Conflict,
    Dataplane,
    DataplaneDeregistered,
    DataplaneRegistered,
    EventLog,
    GracePeriodConfigured,
    HostnameGenerator,
    HostnameGeneratorApplied,
    HostnameGeneratorDeleted,
    IpamConfigured,
    Mesh,
    MeshApplied,
    MeshDeleted,
    MeshService,
    MeshServiceApplied,
    MeshServiceDeleted,
    NotFound,
    Record,
    Resource,
    decision_msg_id,
    decode_event,
    encode_event,
    grace_period_subject,
    ipam_subject,
    now_ms,
    resource_subject,
)

__all__ = ["Commands", "WriteResult"]


class WriteResult(Struct, frozen=True):
    seq: int
    """The resource's version after the write (its subject's last sequence)."""
    created: bool = False
    unchanged: bool = False


class Commands:
    def __init__(self, log: EventLog, *, zone: str, clock: Callable[[], int] = now_ms) -> None:
        self._log = log
        self._zone = zone
        self._clock = clock

    async def apply(self, resource: Resource, *, if_match: int | None = None,
                    idempotency_key: str | None = None,
                    headers: Mapping[str, str] | None = None) -> WriteResult:
        mesh = getattr(resource, "mesh", None)
        kind = type(resource).__name__
        if mesh is not None:
            await self._require_mesh(mesh)
        subject = resource_subject(kind, mesh, resource.name, self._zone)
        last = await self._log.last(subject)
        current = _live_resource(last)
        seq = last.seq if last is not None else 0
        _check_if_match(subject, if_match, seq)
        if current == resource:
            return WriteResult(seq=seq, unchanged=True)
        event = _applied(resource, self._clock())
        appended = await self._log.append(
            subject, event, expected_last_subject_seq=seq,
            msg_id=idempotency_key or decision_msg_id(subject, seq,
                                                      encode_event(_without_time(event))),
            headers=headers,
        )
        return WriteResult(seq=appended.seq, created=current is None)

    async def delete(self, kind: str, mesh: str | None, name: str, *, if_match: int | None = None,
                     headers: Mapping[str, str] | None = None) -> WriteResult:
        subject = resource_subject(kind, mesh, name, self._zone)
        last = await self._log.last(subject)
        if last is None or _live_resource(last) is None:
            if kind == "HostnameGenerator" and name in _DEFAULT_GENERATORS:
                raise Conflict(subject, 0, f"HostnameGenerator {name!r} is a default of the "
                               "zone and cannot be deleted; apply one of that name to override "
                               "it (a selector that matches nothing turns it off)")
            where = f" in mesh {mesh!r}" if mesh else ""
            raise NotFound(f"{kind} {name!r}{where} does not exist")
        _check_if_match(subject, if_match, last.seq)
        event = _deleted(kind, mesh, name, self._clock())
        appended = await self._log.append(
            subject, event, expected_last_subject_seq=last.seq,
            msg_id=decision_msg_id(subject, last.seq, b"delete"), headers=headers,
        )
        return WriteResult(seq=appended.seq)

    async def configure_ipam(self, kind: str, cidr: str) -> WriteResult:
        """Record the CIDR new VIPs come from, if it differs from the one in the log."""
        subject = ipam_subject(kind, self._zone)
        last = await self._log.last(subject)
        if last is not None:
            event = decode_event(last.data, seq=last.seq, subject=subject,
                                 schema_version=last.schema_version)
            if isinstance(event, IpamConfigured) and event.cidr == cidr:
                return WriteResult(seq=last.seq, unchanged=True)
        seq = last.seq if last is not None else 0
        appended = await self._log.append(
            subject, IpamConfigured(at=self._clock(), kind=kind, cidr=cidr),  # type: ignore[arg-type]
            expected_last_subject_seq=seq, msg_id=decision_msg_id(subject, seq, cidr.encode()),
        )
        return WriteResult(seq=appended.seq, created=last is None)

    async def configure_grace_period(self, kind: str, grace_period_ms: int,
                                     default_ms: int) -> WriteResult | None:
        """Record how long a generated `kind` outlives its last Dataplane, if that differs
        from the log (no record in the log means `default_ms`). None: nothing to record."""
        subject = grace_period_subject(kind, self._zone)
        last = await self._log.last(subject)
        current = default_ms
        if last is not None:
            event = decode_event(last.data, seq=last.seq, subject=subject,
                                 schema_version=last.schema_version)
            if isinstance(event, GracePeriodConfigured):
                current = event.grace_period_ms
        if current == grace_period_ms:
            return None
        seq = last.seq if last is not None else 0
        appended = await self._log.append(
            subject, GracePeriodConfigured(at=self._clock(), grace_period_ms=grace_period_ms,
                                           kind=kind),  # type: ignore[arg-type]
            expected_last_subject_seq=seq,
            msg_id=decision_msg_id(subject, seq, str(grace_period_ms).encode()))
        return WriteResult(seq=appended.seq, created=last is None)

    async def _require_mesh(self, mesh: str) -> None:
        last = await self._log.last(resource_subject("Mesh", None, mesh, self._zone))
        if _live_resource(last) is None:
            raise NotFound(f"mesh {mesh!r} does not exist: create it first (type: Mesh)")


_DEFAULT_GENERATORS = {g.name for g in DEFAULT_HOSTNAME_GENERATORS}


def _check_if_match(subject: str, if_match: int | None, seq: int) -> None:
    if if_match is not None and if_match != seq:
        raise Conflict(subject, if_match,
                       f"version {if_match} is stale: the resource is at version {seq}; "
                       "read it again and retry")


def _live_resource(last: Record | None) -> Resource | None:
    """The resource as of the subject's last event, None if it never existed or was deleted."""
    if last is None:
        return None
    event = decode_event(last.data, seq=last.seq, subject=last.subject,
                         schema_version=last.schema_version)
    match event:
        case MeshApplied(mesh=r) | DataplaneRegistered(dataplane=r) | MeshServiceApplied(
            meshservice=r
        ) | HostnameGeneratorApplied(hostname_generator=r):
            return r
        case _:
            return None


def _applied(resource: Resource, at: int) -> AnyEvent:
    match resource:
        case Mesh():
            return MeshApplied(at=at, mesh=resource)
        case Dataplane():
            return DataplaneRegistered(at=at, dataplane=resource)
        case MeshService():
            return MeshServiceApplied(at=at, meshservice=resource)
        case HostnameGenerator():
            return HostnameGeneratorApplied(at=at, hostname_generator=resource)
        case _:
            raise TypeError(f"no event for {type(resource).__name__}")


def _deleted(kind: str, mesh: str | None, name: str, at: int) -> AnyEvent:
    match kind:
        case "Mesh":
            return MeshDeleted(at=at, name=name)
        case "Dataplane":
            return DataplaneDeregistered(at=at, mesh=mesh or "", name=name)
        case "MeshService":
            return MeshServiceDeleted(at=at, mesh=mesh or "", name=name)
        case "HostnameGenerator":
            return HostnameGeneratorDeleted(at=at, name=name)
        case _:
            raise TypeError(f"no deletion event for {kind}")


def _without_time(event: AnyEvent) -> AnyEvent:
    return msgspec.structs.replace(event, at=0)
