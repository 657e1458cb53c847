"""Encoding of events on the wire, and the upcasting path for old schema versions.

The schema version travels in the `Meshlog-Schema` header. A reader decodes the current version
directly with a typed decoder built once; an older version is decoded to plain data, passed
through the upcasters from its version up to `SCHEMA_VERSION`, then converted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from events.errors import UndecodableEvent
from events.event_types import AnyEvent

__all__ = ["SCHEMA_HEADER", "SCHEMA_VERSION", "UPCASTERS", "Upcaster", "decode_event",
           "encode_event"]

SCHEMA_HEADER = "Meshlog-Schema"
SCHEMA_VERSION = 1

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
UPCASTERS: dict[int, Upcaster] = {}
"""`UPCASTERS[v]` turns an event of schema version v into version v + 1."""

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AnyEvent)


def encode_event(event: AnyEvent) -> bytes:
    return _encoder.encode(event)


def decode_event(
    data: bytes, *, seq: int, subject: str, schema_version: int = SCHEMA_VERSION,
    upcasters: dict[int, Upcaster] | None = None, current: int = SCHEMA_VERSION,
) -> AnyEvent:
    """Decode one stored event; raise UndecodableEvent (never return garbage).

    `upcasters` and `current` default to this code's; they are parameters so the upcasting
    path can be exercised before the first breaking change needs it."""
    chain = UPCASTERS if upcasters is None else upcasters
    try:
        if schema_version == current:
            return _decoder.decode(data)
        if schema_version > current or schema_version < 1:
            raise UndecodableEvent(
                seq, subject, f"schema version {schema_version} is not known to this reader "
                f"(it reads 1 to {current})"
            )
        raw = msgspec.json.decode(data)
        for version in range(schema_version, current):
            upcast = chain.get(version)
            if upcast is None:
                raise UndecodableEvent(seq, subject, f"no upcaster from schema {version}")
            try:
                raw = upcast(raw)
            except Exception as exc:  # an upcaster's bug must quarantine, not crash
                raise UndecodableEvent(seq, subject, f"upcaster from schema {version} failed: "
                                                     f"{type(exc).__name__}: {exc}") from exc
        # msgspec.convert's stub takes `type[T]`, which a union is not (so it returns Any);
        # converting to AnyEvent yields an AnyEvent or raises ValidationError.
        event: AnyEvent = msgspec.convert(raw, AnyEvent)
        return event
    except (msgspec.DecodeError, msgspec.ValidationError, KeyError, TypeError) as exc:
        raise UndecodableEvent(seq, subject, str(exc)) from exc
