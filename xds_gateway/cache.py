"""Encode-once cache of Envoy resources (DESIGN.md invariant 9).

A resource is identified by its type, name and a hashable description of its inputs. The first
stream that needs it builds the protobuf, serializes it deterministically, wraps it in an `Any`
and derives its version from the bytes; every other stream gets the same object. Versions are
content-derived, so every gateway computes the same version for the same state (invariant 7).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Hashable

from google.protobuf.message import Message
from msgspec import Struct

from xds_gateway._wire import any_bytes

__all__ = ["EncodedResource", "ResourceCache", "version_of"]


class EncodedResource(Struct, frozen=True):
    type_url: str
    name: str
    version: str
    any: bytes
    """The serialized google.protobuf.Any, ready to go on the wire."""
    refs: frozenset[str] = frozenset()
    """Cluster names this resource references (listeners, routes)."""


def version_of(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


class ResourceCache:
    def __init__(self, max_entries: int = 200_000) -> None:
        self._entries: OrderedDict[Hashable, EncodedResource] = OrderedDict()
        self._max = max_entries
        self.builds = 0
        """How many resources were built and encoded (for tests of invariant 9)."""

    def get(self, type_url: str, name: str, inputs: Hashable,
            build: Callable[[], Message], refs: frozenset[str] = frozenset()) -> EncodedResource:
        key = (type_url, name, inputs)
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            return entry
        value = build().SerializeToString(deterministic=True)
        self.builds += 1
        entry = EncodedResource(type_url, name, version_of(value), any_bytes(type_url, value), refs)
        self._entries[key] = entry
        if len(self._entries) > self._max:
            self._entries.popitem(last=False)
        return entry
