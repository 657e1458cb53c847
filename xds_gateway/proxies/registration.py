"""Dataplane self-registration from xDS node metadata, and deregistration (issue 5).

A proxy may carry its Dataplane in its node metadata, as kuma-dp does: the key
`dataplane.resource` holds the Dataplane as JSON (or YAML) text (reference/kuma-behaviour.md,
"Self-registration"). On the first request of a stream the gateway decodes and validates it
like an API write (`events.decode_resource`: every violation with its field path), checks that
its mesh and name are the node id's `<mesh>.<name>`, and appends `DataplaneRegistered(origin=
"proxy")` to the Dataplane's subject with the subject's last sequence as the expected one
(DESIGN.md invariant 2), exactly like `events.commands`. A Dataplane equal to the one in the
log appends nothing, so a reconnect is silent.

`deregister` removes only Dataplanes whose last registration came from a proxy: one registered
through the API is never removed by a gateway. Its Msg-Id is derived from (subject, expected
sequence), so two gateways deregistering the same proxy at once append one event.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import msgspec
import yaml
from envoy.config.core.v3.base_pb2 import Node
from google.protobuf import json_format
from msgspec import Struct

from events import (
    Conflict,
    Dataplane,
    DataplaneDeregistered,
    DataplaneRegistered,
    EventLog,
    EventLogUnavailable,
    InvalidResource,
    MeshApplied,
    Record,
    UndecodableEvent,
    decision_msg_id,
    decode_event,
    decode_resource,
    encode_event,
    resource_subject,
)
from xds_gateway.server.subscription import InvalidStream

__all__ = [
    "DATAPLANE_KEY",
    "Deregistered",
    "RegistrationUnavailable",
    "SelfRegistration",
    "dataplane_from_node",
    "registration_of",
    "timeless",
]

DATAPLANE_KEY = "dataplane.resource"
"""kuma-dp's node metadata key for the Dataplane it registers."""
log = logging.getLogger("meshlog.xds.registration")

_MAX_TEXT = 64 * 1024
_ATTEMPTS = 3


class RegistrationUnavailable(Exception):
    """The log could not take the registration now; the stream ends with UNAVAILABLE (or
    FAILED_PRECONDITION when `precondition`), and the proxy retries."""

    def __init__(self, message: str, *, precondition: bool = False) -> None:
        super().__init__(message)
        self.precondition = precondition


class Deregistered(Struct, frozen=True):
    dataplane: Dataplane
    seq: int
    """Sequence of the `DataplaneDeregistered` event."""


def dataplane_from_node(node: Node, mesh: str, name: str) -> Dataplane | None:
    """The Dataplane in the node's metadata, validated; None without one. Raises
    `InvalidStream` naming the key, the field and the value when it is unusable."""
    fields = node.metadata.fields
    if DATAPLANE_KEY not in fields:
        return None
    where = f"node.metadata[{DATAPLANE_KEY!r}]"
    value = fields[DATAPLANE_KEY]
    match value.WhichOneof("kind"):
        case "string_value":
            raw = _parse(value.string_value, where)
        case "struct_value":
            raw = json_format.MessageToDict(value.struct_value)
        case other:
            raise InvalidStream(f"{where}: expected the Dataplane as JSON or YAML text, "
                                f"got a {other or 'missing value'}")
    try:
        dataplane = decode_resource(raw, "Dataplane")
    except InvalidResource as exc:
        reasons = "; ".join(str(v) for v in exc.violations)
        raise InvalidStream(f"{where} is not a valid Dataplane: {reasons}") from None
    if not isinstance(dataplane, Dataplane):  # decode_resource checked the type already
        raise InvalidStream(f"{where}: type is not 'Dataplane'")
    wrong = [f"{field} {have!r} does not match node.id {mesh}.{name!s}"
             for field, have, want in (("mesh", dataplane.mesh, mesh),
                                       ("name", dataplane.name, name)) if have != want]
    if wrong:
        raise InvalidStream(f"{where}: " + "; ".join(wrong))
    return dataplane


class _NoAliases(yaml.SafeLoader):
    """YAML without anchors/aliases: a few bytes of aliases can expand to gigabytes."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "YAML aliases are not allowed",
                                              event.start_mark)
        return super().compose_node(parent, index)


def _parse(text: str, where: str) -> Any:
    if len(text) > _MAX_TEXT:
        raise InvalidStream(f"{where}: {len(text)} characters, more than {_MAX_TEXT}")
    try:
        try:
            return json.loads(text)
        except ValueError:
            pass
        try:
            return yaml.load(text, Loader=_NoAliases)  # a SafeLoader subclass
        except yaml.YAMLError as exc:
            raise InvalidStream(f"{where} is neither JSON nor YAML: {exc}") from None
    except RecursionError:  # both parsers recurse per level: a few KB of '[' reach the limit
        raise InvalidStream(f"{where}: nested too deeply") from None


class SelfRegistration:
    """Appends the registrations and deregistrations proxies cause, with optimistic
    concurrency on the Dataplane's subject."""

    def __init__(self, event_log: EventLog, *, zone: str) -> None:
        self._log = event_log
        self._zone = zone

    async def register(self, dataplane: Dataplane, at: int) -> bool:
        """Make the log hold `dataplane`; return True when the proxy owns the registration
        (False: the Dataplane was registered through the API, which keeps it as it is)."""
        subject = resource_subject("Dataplane", dataplane.mesh, dataplane.name, self._zone)
        try:
            for _ in range(_ATTEMPTS):
                last = await self._log.last(subject)
                current = registration_of(last)
                if current is not None and current.dataplane == dataplane:
                    return current.origin == "proxy"  # a reconnect: nothing to append
                if current is not None and current.origin != "proxy":
                    # registered through the API: the API owns it (a proxy never takes it
                    # over, so it is never removed after a disconnect)
                    log.warning("Dataplane %s.%s was registered through the API; the copy in "
                                "the proxy's node metadata is ignored",
                                dataplane.mesh, dataplane.name)
                    return False
                await self._require_mesh(dataplane.mesh)
                event = DataplaneRegistered(at=at, dataplane=dataplane, origin="proxy")
                seq = last.seq if last is not None else 0
                try:
                    await self._log.append(subject, event, expected_last_subject_seq=seq,
                                           msg_id=decision_msg_id(subject, seq, timeless(event)))
                except Conflict:
                    continue  # a concurrent write: read again and decide again
                return True
        except EventLogUnavailable as exc:
            raise RegistrationUnavailable(f"Dataplane {dataplane.mesh}.{dataplane.name} not "
                                          f"registered, the event log is unavailable: {exc}"
                                          ) from exc
        raise RegistrationUnavailable(f"Dataplane {dataplane.mesh}.{dataplane.name} not "
                                      f"registered: {subject} kept changing")

    async def deregister(self, mesh: str, name: str, at: int) -> Deregistered | str:
        """Append `DataplaneDeregistered` if the proxy owns the registration; otherwise
        return why not: "api" (registered through the API), "absent", or "changed"."""
        subject = resource_subject("Dataplane", mesh, name, self._zone)
        last = await self._log.last(subject)
        current = registration_of(last)
        if last is None or current is None:
            return "absent"
        if current.origin != "proxy":
            return "api"
        event = DataplaneDeregistered(at=at, mesh=mesh, name=name)
        try:
            appended = await self._log.append(
                subject, event, expected_last_subject_seq=last.seq,
                msg_id=decision_msg_id(subject, last.seq, b"deregister"))
        except Conflict:
            return "changed"
        return Deregistered(dataplane=current.dataplane, seq=appended.seq)

    async def restore(self, removed: Deregistered, at: int) -> bool:
        """Undo a deregistration the proxy raced (it reconnected meanwhile); False if the
        subject moved on since (the new stream registered it itself)."""
        dp = removed.dataplane
        subject = resource_subject("Dataplane", dp.mesh, dp.name, self._zone)
        event = DataplaneRegistered(at=at, dataplane=dp, origin="proxy")
        try:
            await self._log.append(subject, event, expected_last_subject_seq=removed.seq,
                                   msg_id=decision_msg_id(subject, removed.seq, timeless(event)))
        except Conflict:
            return False
        return True

    async def _require_mesh(self, mesh: str) -> None:
        last = await self._log.last(resource_subject("Mesh", None, mesh, self._zone))
        if last is None or not isinstance(_decoded(last), MeshApplied):
            raise RegistrationUnavailable(
                f"mesh {mesh!r} does not exist: create it before its Dataplanes connect",
                precondition=True)


def _decoded(last: Record) -> object:
    try:
        return decode_event(last.data, seq=last.seq, subject=last.subject,
                            schema_version=last.schema_version)
    except UndecodableEvent:
        return None  # quarantined by the projector; here it is simply not a registration


def registration_of(last: Record | None) -> DataplaneRegistered | None:
    """The Dataplane registration a subject's last record holds, if it is one (decodable)."""
    event = _decoded(last) if last is not None else None
    return event if isinstance(event, DataplaneRegistered) else None


def timeless(event: DataplaneRegistered) -> bytes:
    """The event without its time: the content a decision's Msg-Id is derived from."""
    return encode_event(msgspec.structs.replace(event, at=0))
