"""Dataplane self-registration from xDS node metadata, and deregistration (issue 5).

A proxy may carry its Dataplane in its node metadata, as kuma-dp does: the key
`dataplane.resource` holds the Dataplane as JSON (or YAML) text (reference/kuma-behaviour.md,
"Self-registration"). On the first request of a stream the gateway decodes and validates it
like an API write (`events.decode_resource`: every violation with its field path), checks that
its mesh and name are the node id's `<mesh>.<name>`, and has `DataplaneRegistered(origin=
"proxy")` appended through the one command path (`events.commands.ProxyCommands`, which also
deregisters: only Dataplanes whose last registration came from a proxy). A Dataplane equal to
the one in the log appends nothing, so a reconnect is silent.
"""

from __future__ import annotations

import logging

from envoy.config.core.v3.base_pb2 import Node
from google.protobuf import json_format

from events import (
    Conflict,
    Dataplane,
    EventLog,
    EventLogUnavailable,
    InvalidResource,
    NotFound,
    TooLarge,
    WrongControlPlane,
    decode_resource,
)
from events.commands import Deregistered, ProxyCommands
from events.documents import load_json_or_yaml
from xds_gateway.server.subscription import InvalidStream

__all__ = [
    "DATAPLANE_KEY",
    "Deregistered",
    "RegistrationUnavailable",
    "SelfRegistration",
    "dataplane_from_node",
]

DATAPLANE_KEY = "dataplane.resource"
"""kuma-dp's node metadata key for the Dataplane it registers."""
log = logging.getLogger("meshlog.xds.registration")

_MAX_TEXT = 64 * 1024


class RegistrationUnavailable(Exception):
    """The log could not take the registration now; the stream ends with UNAVAILABLE (or
    FAILED_PRECONDITION when `precondition`), and the proxy retries."""

    def __init__(self, message: str, *, precondition: bool = False) -> None:
        super().__init__(message)
        self.precondition = precondition


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
            try:
                raw = load_json_or_yaml(value.string_value, where, limit=_MAX_TEXT)
            except InvalidResource as exc:  # the text itself: said of `where`, or of a path in it
                problem = exc.violations[0]
                raise InvalidStream(f"{where}: {problem}" if problem.path else str(problem)
                                    ) from None
            except TooLarge as exc:
                raise InvalidStream(str(exc)) from None
        case "struct_value":
            size = value.struct_value.ByteSize()
            if size > _MAX_TEXT:
                raise InvalidStream(f"{where}: {size} bytes, more than {_MAX_TEXT}")
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


class SelfRegistration:
    """The gateway's side of `events.commands.ProxyCommands`: the commands proxies cause, with
    the log's errors turned into what ends a stream (`RegistrationUnavailable`)."""

    def __init__(self, event_log: EventLog, *, zone: str) -> None:
        self.commands = ProxyCommands(event_log, zone=zone)

    async def register(self, dataplane: Dataplane, at: int) -> bool:
        """Make the log hold `dataplane`; return True when the proxy owns the registration
        (False: the Dataplane was registered through the API, which keeps it as it is)."""
        where = f"Dataplane {dataplane.mesh}.{dataplane.name} not registered"
        try:
            owned = await self.commands.register(dataplane, at)
        except (NotFound, WrongControlPlane) as exc:
            raise RegistrationUnavailable(str(exc), precondition=True) from exc
        except TooLarge as exc:
            raise InvalidStream(f"{where}: {exc}") from exc
        except Conflict as exc:
            raise RegistrationUnavailable(f"{where}: {exc.subject} kept changing") from exc
        except EventLogUnavailable as exc:
            raise RegistrationUnavailable(f"{where}, the event log is unavailable: {exc}"
                                          ) from exc
        if not owned:
            log.info("Dataplane %s.%s was registered through the API; the copy in the proxy's "
                     "node metadata is ignored", dataplane.mesh, dataplane.name)
        return owned

    async def deregister(self, mesh: str, name: str, at: int) -> Deregistered | str:
        """Append `DataplaneDeregistered` if the proxy owns the registration; otherwise
        return why not: "api" (registered through the API), "absent", or "changed"."""
        return await self.commands.deregister(mesh, name, at)

    async def restore(self, removed: Deregistered, at: int) -> bool:
        """Undo a deregistration the proxy raced (it reconnected meanwhile); False if the
        subject moved on since (the new stream registered it itself)."""
        return await self.commands.restore(removed, at)
