"""The language of the log: resources, events, subjects, codec and the event log."""

from events.codec import SCHEMA_VERSION, decode_event, encode_event
from events.decoding import KINDS, decode_resource, kind_of
from events.errors import (
    Conflict,
    EventLogUnavailable,
    InvalidResource,
    MeshlogError,
    NotFound,
    PermanentError,
    StreamConfigMismatch,
    TransientError,
    UndecodableEvent,
    Violation,
)
from events.event_types import (
    AnyEvent,
    DataplaneDeregistered,
    DataplaneRegistered,
    Event,
    IpamConfigured,
    MeshApplied,
    MeshDeleted,
    MeshServiceApplied,
    MeshServiceDeleted,
)
from events.jetstream import JetStreamEventLog, connect_nats
from events.log import Appended, EventLog, PendingAppend, Record
from events.resources import (
    Dataplane,
    Inbound,
    Mesh,
    MeshService,
    MeshServicePort,
    Outbound,
    Resource,
)
from events.subjects import DEFAULT_ZONE, EVENTS_STREAM, ipam_subject, resource_subject
from events.validation import SERVICE_TAG, is_dns1035_label

__all__ = [
    "DEFAULT_ZONE",
    "EVENTS_STREAM",
    "KINDS",
    "SCHEMA_VERSION",
    "SERVICE_TAG",
    "AnyEvent",
    "Appended",
    "Conflict",
    "Dataplane",
    "DataplaneDeregistered",
    "DataplaneRegistered",
    "Event",
    "EventLog",
    "EventLogUnavailable",
    "Inbound",
    "InvalidResource",
    "IpamConfigured",
    "JetStreamEventLog",
    "Mesh",
    "MeshApplied",
    "MeshDeleted",
    "MeshService",
    "MeshServiceApplied",
    "MeshServiceDeleted",
    "MeshServicePort",
    "MeshlogError",
    "NotFound",
    "Outbound",
    "PendingAppend",
    "PermanentError",
    "Record",
    "Resource",
    "StreamConfigMismatch",
    "TransientError",
    "UndecodableEvent",
    "Violation",
    "connect_nats",
    "decode_event",
    "decode_resource",
    "encode_event",
    "ipam_subject",
    "is_dns1035_label",
    "kind_of",
    "resource_subject",
]
