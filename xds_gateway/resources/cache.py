"""Encode-once caches (DESIGN.md invariant 9): Envoy resources, per-generation shared parts of
snapshots, and whole response bodies.

A resource is identified by its type, name and a hashable description of its inputs. The first
stream that needs it builds the protobuf, serializes it deterministically, wraps it in an `Any`
and derives its version from the bytes; every other stream gets the same object. Versions are
content-derived, so every gateway computes the same version for the same state (invariant 7).

Three more layers keep the per-stream work of a view change small (docs/benchmarks.md,
"Propagation"): `per_generation` computes a value once per view generation and key (the part
of a snapshot every proxy of a mesh shares, see `snapshot.py`), and `response_body` keeps the
bytes of a DiscoveryResponse without its nonce, so streams that get the same (type, version,
resources) share one encoding and add only their nonce (`wire.with_nonce`).

`remember_set` keeps the complete sets recent SotW responses carried (CDS) by their version,
so a proxy that reconnects saying it holds that `version_info` can be told what it holds
(`server/sotw.py`, rule 10 across a reconnect). Versions are content-derived, so any gateway
that sent the same set to any proxy knows it.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any, TypeVar

from google.protobuf.message import Message
from msgspec import Struct

from xds_gateway.resources.wire import any_bytes

__all__ = ["EncodedResource", "ResourceCache", "set_version", "version_of", "versions_digest"]

T = TypeVar("T")

_BODY_BUDGET = 2 * 1024 * 1024
"""Bytes of response bodies kept; the shared ones are hit by every stream, so stay recent."""
_MAX_NAME_SETS = 4096
_SENT_SET_NAMES = 100_000
"""Resource names of the remembered sets (`remember_set`), all sets together: the sets are
mostly the streams' own mappings, so this bounds what is kept past them (~40 bytes a name)."""


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


def set_version(resources: Iterable[EncodedResource]) -> str:
    """The version of a set of resources given in name order: content-derived, so every
    gateway gives the same version for the same set (xds-rules.md #12)."""
    return versions_digest((r.name, r.version) for r in resources)


def versions_digest(pairs: Iterable[tuple[str, str]]) -> str:
    """The version of (name, version) pairs given in name order (`set_version`'s rule)."""
    return version_of("\n".join(f"{name}={version}" for name, version in pairs).encode())


class ResourceCache:
    def __init__(self, max_entries: int = 200_000) -> None:
        self._entries: OrderedDict[Hashable, EncodedResource] = OrderedDict()
        self._max = max_entries
        self.builds = 0
        """How many resources were built and encoded (for tests of invariant 9)."""
        self.hits = 0
        """How many lookups found the resource already encoded (metrics, read when scraped)."""
        self._owner: object = None
        self._generation = -1
        self._shared: dict[Hashable, Any] = {}
        self.shared_builds = 0
        """How many per-generation values were computed (for tests of the sharing)."""
        self.shared_hits = 0
        self.body_builds = 0
        self.body_hits = 0
        self._bodies: OrderedDict[Hashable, bytes] = OrderedDict()
        self._body_bytes = 0
        self._names: OrderedDict[frozenset[str], frozenset[str]] = OrderedDict()
        self._sets: OrderedDict[tuple[str, str, str], Mapping[str, EncodedResource]] = (
            OrderedDict())
        self._set_names = 0

    def get(self, type_url: str, name: str, inputs: Hashable,
            build: Callable[[], Message], refs: frozenset[str] = frozenset()) -> EncodedResource:
        key = (type_url, name, inputs)
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            self.hits += 1
            return entry
        value = build().SerializeToString(deterministic=True)
        self.builds += 1
        entry = EncodedResource(type_url, name, version_of(value), any_bytes(type_url, value), refs)
        self._entries[key] = entry
        if len(self._entries) > self._max:
            self._entries.popitem(last=False)
        return entry

    def per_generation(self, owner: object, generation: int, key: Hashable,
                       build: Callable[[], T]) -> T:
        """`build()` once per (`owner`'s `generation`, `key`); values of older generations are
        dropped, so memory stays bounded by the keys of one generation."""
        if owner is not self._owner or generation != self._generation:
            self._owner, self._generation, self._shared = owner, generation, {}
        try:
            # the memo is heterogeneous: a key's value is what its `build` returned
            value: T = self._shared[key]
        except KeyError:
            value = self._shared[key] = build()
            self.shared_builds += 1
            return value
        self.shared_hits += 1
        return value

    def response_body(self, key: Hashable, build: Callable[[], bytes]) -> bytes:
        """The response bytes (without nonce) for `key`, which must determine them: (type URL,
        version, names of a partial response or None); versions are content hashes."""
        body = self._bodies.get(key)
        if body is not None:
            self._bodies.move_to_end(key)
            self.body_hits += 1
            return body
        body = build()
        self.body_builds += 1
        if len(body) <= _BODY_BUDGET // 4:
            self._bodies[key] = body
            self._body_bytes += len(body)
            while self._body_bytes > _BODY_BUDGET:
                _, old = self._bodies.popitem(last=False)
                self._body_bytes -= len(old)
        return body

    def intern(self, names: frozenset[str]) -> frozenset[str]:
        """One object for equal name sets: streams that request the same names then hit the
        shared memos by identity instead of comparing ~100 names each (snapshot.py)."""
        same = self._names.get(names)
        if same is None:
            same = self._names[names] = names
            if len(self._names) > _MAX_NAME_SETS:
                self._names.popitem(last=False)
        else:
            self._names.move_to_end(names)
        return same

    def remember_set(self, mesh: str, type_url: str, version: str,
                     resources: Mapping[str, EncodedResource]) -> None:
        """A response of the complete set `resources` of `type_url` went out under `version`
        to a proxy of `mesh`. The most recent sets are kept (`_SENT_SET_NAMES` names in all);
        `resources` is kept, not copied: callers pass a mapping nobody changes afterwards.
        Per mesh: a version is public (a proxy's overview shows it), and a proxy that names
        another mesh's must not be handed that mesh's resources."""
        key = (mesh, type_url, version)
        if key in self._sets:
            self._sets.move_to_end(key)
            return
        self._sets[key] = resources
        self._set_names += len(resources)
        while self._set_names > _SENT_SET_NAMES and len(self._sets) > 1:
            _, old = self._sets.popitem(last=False)
            self._set_names -= len(old)

    def sent_set(self, mesh: str, type_url: str, version: str
                 ) -> Mapping[str, EncodedResource] | None:
        """The complete set of `type_url` a response under `version` carried to a proxy of
        `mesh`, if remembered."""
        return self._sets.get((mesh, type_url, version))
