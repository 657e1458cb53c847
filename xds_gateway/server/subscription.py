"""The subscription model shared by the SotW and Delta ADS servers (sotw.py, delta.py).

`AdsStream` owns what both variants do the same way, like go-control-plane's `server/stream`:
the loop (requests and view changes wake one task that decides what to send; a plain ACK is
applied as it arrives, and a stream skips what did not change for it), the node
(rule 1), nonces (rule 2), NACK bookkeeping (rule 3), the rule-10 cluster retention (within a
stream, and across a reconnect: `_resume_clusters`) and the rule-9 warming followers.
`TypeState` is one stream's state for one type URL; its counters are read from outside the
stream (tests, insights). Rule numbers are reference/xds-rules.md's.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterable, Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import grpc

from xds_gateway.resources.cache import EncodedResource, ResourceCache
from xds_gateway.resources.names import parse_node_id
from xds_gateway.resources.node import InvalidNode, ProxyNode, proxy_node
from xds_gateway.resources.snapshot import Snapshot
from xds_gateway.server.source import SnapshotSource
from xds_gateway.type_urls import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, ROUTE

__all__ = ["MAX_NAMES", "MAX_NAME_LENGTH", "WARMING_FOLLOWERS", "AdsStream", "InvalidStream",
           "StreamLimitExceeded", "TypeState", "bound_count", "bound_names"]

log = logging.getLogger("meshlog.xds")

_MAX_UNANSWERED = 64
"""Responses of a type kept as waiting for their ACK (`TypeState.unanswered`): a client that
answers none of them does not grow a stream's state."""
_MAX_NACK_CHARS = 4096
"""A NACK's message as kept (and published in the insight): a client may send megabytes, and
an insight past the bucket's message size (NATS: 1 MB) could never be written."""

_MAX_QUEUED_REQUESTS = 64

WARMING_FOLLOWERS = {CLUSTER: ENDPOINT, LISTENER: ROUTE}
"""Rule 9: after a CDS (LDS) response, Envoy needs the EDS (RDS) of what changed again."""

Request = TypeVar("Request")


class InvalidStream(Exception):
    """The client broke the protocol; the stream ends with `code` and this message."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class StreamLimitExceeded(InvalidStream):
    """The client asked for more than one stream may hold (`MAX_NAMES`, `MAX_NAME_LENGTH`)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


MAX_NAMES = 20_000
"""Resource names one stream may subscribe to per type: every service port of a very large
mesh, while a client cannot make the gateway remember millions of made-up names. With
`MAX_NAME_LENGTH` it bounds a stream's subscriptions at ~20 MB per type, in line with the
16 MB message limit."""
MAX_NAME_LENGTH = 1024
"""Characters of one resource name (meshlog's longest: `<mesh>_<name>___msvc_<port>`, ~520)."""


def bound_count(type_url: str, count: int) -> None:
    """Raise `StreamLimitExceeded` if `count` names are more than one stream may hold."""
    if count > MAX_NAMES:
        raise StreamLimitExceeded(f"{count} resource names of {type_url}, more than the "
                                  f"{MAX_NAMES} one stream may subscribe to")


def bound_names(type_url: str, names: Collection[str]) -> None:
    """Raise `StreamLimitExceeded` if `names` is more than one stream may subscribe to, or
    holds a name longer than `MAX_NAME_LENGTH`."""
    bound_count(type_url, len(names))
    for name in names:
        if len(name) > MAX_NAME_LENGTH:
            raise StreamLimitExceeded(f"a resource name of {type_url} has {len(name)} "
                                      f"characters, more than {MAX_NAME_LENGTH}: "
                                      f"{name[:64]!r}...")


@dataclass(slots=True)
class TypeState:
    names: set[str] = field(default_factory=set)
    """Requested names; SotW: empty (or `*`) on a wildcard type means everything; Delta: the
    subscribed names, `*` for a wildcard subscription."""
    names_key: frozenset[str] = frozenset()
    """SotW: `names` as a hashable key for the memos of the shared snapshot part."""
    names_wire: bytes = b""
    """SotW: `names` as the request that set them carried them (`resources.wire.request_names`)."""
    ack_frame: tuple[bytes, bytes] = (b"", b"")
    """SotW: the bytes around the names of a plain ACK of the last response (`resources.wire`)."""
    sent_version: str | None = None
    sent_nonce: str = ""
    acked_version: str | None = None
    demand: bool = False
    """The client asked for a response (new subscription or changed names)."""
    held: dict[str, str | None] = field(default_factory=dict)
    """Delta: the version of each resource the client holds (from `initial_resource_versions`
    or sent on this stream); None = the client was told the name does not exist (rule 8)."""
    inputs: tuple[object, ...] = ()
    """SotW: what the last decision for this type depended on; equal inputs and no demand
    mean nothing to send, without selecting or hashing anything."""
    sent: Mapping[str, EncodedResource] = field(default_factory=dict)
    """SotW EDS/RDS: after a response the client holds, of every requested name, what the
    available resources were then; so this is that (shared, never copied) mapping. SotW
    LDS/CDS: the complete set of the last response."""
    unsent: Mapping[str, EncodedResource] = field(default_factory=dict)
    """SotW: `sent` before the last response, restored if the client NACKs it."""
    sent_whole: bool = False
    """SotW LDS/CDS: the last response was all of the node's (its version the snapshot's)."""
    responses: int = 0
    resources_sent: int = 0
    acks: int = 0
    """Responses of this stream the client ACKed, also one a newer response has replaced
    (Kuma's `responsesAcknowledged`), each once (Envoy repeats an ACK to re-request EDS or
    RDS, rule 9): a proxy that applied every response has as many ACKs as responses."""
    unanswered: dict[str, None] | None = None
    """The nonces of this type's responses not yet ACKed or NACKed, oldest first; at most
    `_MAX_UNANSWERED` (the ACK of an older one is not counted). None while there is none: a
    proxy that answered everything (the steady state of a fleet) keeps no dict for it (a
    dict emptied by deletes keeps its table: ~0.2 KB per type and proxy)."""
    latest_acks: int = 0
    """ACKs of the latest response at the time, repeats included (what `acked_version`
    follows): tracing reads this, where an ACK of a replaced response must not pass for the
    newer one's."""
    nacks: int = 0
    last_nack: str = ""

    def wildcard(self) -> bool:
        return not self.names or "*" in self.names

    def record_response(self, version: str, nonce: str, resources: int) -> None:
        """A response went out: the client is to ACK (or NACK) `nonce` (rule 2)."""
        self.sent_version = version
        self.sent_nonce = nonce
        self.demand = False
        self.responses += 1
        self.resources_sent += resources
        if self.unanswered is None:
            self.unanswered = {nonce: None}
            return
        self.unanswered[nonce] = None
        if len(self.unanswered) > _MAX_UNANSWERED:
            del self.unanswered[next(iter(self.unanswered))]

    def record_ack(self) -> None:
        """The client ACKed the latest response."""
        self.record_ack_of(self.sent_nonce)
        self.latest_acks += 1
        self.acked_version = self.sent_version

    def record_ack_of(self, nonce: str) -> None:
        """The client ACKed `nonce`: counted if it names a response of this type that had no
        answer yet (not one a client made up, nor a repeat); for a response since replaced,
        nothing else changes (rule 2: the latest response is still to be answered)."""
        if self._answered(nonce):
            self.acks += 1

    def _answered(self, nonce: str) -> bool:
        """Whether `nonce` was waiting for its answer (and no longer is)."""
        unanswered = self.unanswered
        if unanswered is None or nonce not in unanswered:
            return False
        del unanswered[nonce]
        if not unanswered:
            self.unanswered = None
        return True

    def record_nack(self, node_id: str, type_url: str, nonce: str, message: str) -> None:
        """Rule 3: count the NACK and keep its message; the rejected response is not re-sent
        (nor counted as ACKed by a later request naming it)."""
        self._answered(nonce)
        self.nacks += 1
        if len(message) > _MAX_NACK_CHARS:  # a client may send megabytes (gRPC allows 16 MB)
            message = f"{message[:_MAX_NACK_CHARS]}... ({len(message)} characters)"
        self.last_nack = message
        log.warning("%s NACKed %s version %s: %s", node_id, type_url, self.sent_version, message)


class AdsStream(Generic[Request]):
    """One ADS stream's loop and the state SotW and Delta share; subclasses decide what to send.

    Subclasses implement `_handle(request)` (called in order, in the loop task) and
    `_push_type(...)` (called per subscribed type in push order, rule 10, after every batch of
    requests and every view change, once the node is known).
    """

    def __init__(self, source: SnapshotSource, cache: ResourceCache,
                 write: Callable[[bytes], Awaitable[None]]) -> None:
        self._source = source
        self._cache = cache
        self._write = write
        self.on_response: Callable[[str, str, str, int], None] | None = None
        """Told of every response written: (type URL, version, nonce, resources); the server
        points it at its stream callbacks (`callbacks.StreamCallbacks.on_stream_response`)."""
        self.node_id = ""
        self._mesh = ""
        self._name = ""
        self._node = ProxyNode()
        self.types: dict[str, TypeState] = {}
        self._nonce = 0
        self._requests: deque[Request] = deque()
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._snapshot: Snapshot | None = None
        self._generation = -1
        self._dirty = True
        """A request since the last push may change what to send (see `run`)."""
        # rule 10: the clusters the client holds (or is being sent), and the clusters its
        # listeners reference (a proxyless gRPC client's: its RouteConfigurations, RDS)
        self._clusters_held: Mapping[str, EncodedResource] = {}
        self._listener_refs_sent: frozenset[str] = frozenset()
        self._listener_refs_acked: frozenset[str] = frozenset()
        self._route_refs_sent: frozenset[str] = frozenset()
        self._route_refs_acked: frozenset[str] = frozenset()
        self._kept: frozenset[str] = frozenset()
        """Rule 10 across a reconnect: clusters a wildcard client held when this stream opened,
        kept until it ACKs this stream's first listeners (`_resume_clusters`)."""

    # --- inputs -------------------------------------------------------------------------------

    async def feed(self, requests: AsyncIterable[Request]) -> None:
        """Queue requests from the client (bounded); returns when the client half-closes."""
        async for request in requests:
            if not self._requests and self._ack_at_once(request):
                continue  # nothing queued before it, so the order of requests is kept
            while len(self._requests) >= _MAX_QUEUED_REQUESTS:
                self._room.clear()
                await self._room.wait()
            self._requests.append(request)
            self._wake.set()

    async def watch_view(self) -> None:
        """Wake the loop on every change of the source, until cancelled. The source sets the
        stream's event itself: one task per stream wakes on a change, not two."""
        self._source.wake_on_change(self._wake)
        try:
            await asyncio.get_running_loop().create_future()  # until cancelled
        finally:
            self._source.stop_waking(self._wake)

    # --- the loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._requests:
                self._handle(self._requests.popleft())
            self._room.set()
            # a plain ACK changes nothing to send: only a changed view or a request that asked
            # for something (`_dirty`, set by `_handle`) needs a look at every type
            if self.node_id and (self._dirty or self._generation != self._source.generation):
                self._dirty = False
                await self._push()

    def _handle(self, request: Request) -> None:
        """Apply one request; set `_dirty` if it may change what to send."""
        raise NotImplementedError

    def _ack_at_once(self, request: Request) -> bool:
        """Apply `request` here, without waking the loop, if it is an ACK that changes nothing
        to send (most requests: a fleet ACKs every push); False leaves it to `_handle`."""
        return False

    async def _push(self) -> None:
        snapshot = self._current()
        for type_url in PUSH_ORDER:
            state = self.types.get(type_url)
            if state is not None:
                await self._push_type(type_url, state, snapshot)

    async def _push_type(self, type_url: str, state: TypeState, snapshot: Snapshot) -> None:
        """Send `type_url` to the client if it has anything to get."""
        raise NotImplementedError

    # --- shared rules -------------------------------------------------------------------------

    def _adopt_node(self, node: Any) -> None:
        """Rule 1: the node comes with the first request; later ones may omit it."""
        if self.node_id:
            return
        if not node.id:
            raise InvalidStream("the first request of a stream must carry node.id")
        parsed = parse_node_id(node.id)
        if parsed is None:
            raise InvalidStream(f"node.id {node.id!r} is not <mesh>.<dataplane name>")
        self.node_id = node.id
        self._mesh, self._name = parsed
        try:
            self._node = proxy_node(node)  # gRPC or Envoy, DNS port
        except InvalidNode as exc:
            raise InvalidStream(str(exc)) from exc

    def _type_state(self, type_url: str) -> TypeState | None:
        if type_url not in PUSH_ORDER:
            log.info("%s: ignoring request for unsupported type %s", self.node_id, type_url)
            return None
        return self.types.setdefault(type_url, TypeState())

    def _next_nonce(self) -> str:
        """Rule 2: unique within the stream (a counter; never reused, also across types)."""
        self._nonce += 1
        return str(self._nonce)

    def _current(self) -> Snapshot:
        if self._snapshot is None or self._generation != self._source.generation:
            self._generation = self._source.generation
            self._snapshot = self._source.snapshot(self._mesh, self._name, self._node,
                                                   self._snapshot)
        return self._snapshot

    def _retain_clusters(self, chosen: dict[str, EncodedResource]) -> dict[str, EncodedResource]:
        """Rule 10: a cluster leaves only once no listener (or RDS route, which a gRPC
        client's api_listeners use) the client may hold needs it."""
        in_use = (self._listener_refs_sent | self._listener_refs_acked
                  | self._route_refs_sent | self._route_refs_acked)
        for name in in_use - chosen.keys():
            if name in self._clusters_held:
                chosen[name] = self._clusters_held[name]
        return chosen

    def _resume_clusters(self, names: Collection[str]) -> None:
        """The client opened this stream holding the clusters `names` (a reconnect). The new
        stream does not know the listeners it still holds, which may use any of them: none
        leaves (rule 10) until the client ACKs this stream's first LDS response, after which
        its listeners are this stream's and the retention above decides. Not after that ACK:
        then the listeners are known already."""
        listeners = self.types.get(LISTENER)
        if listeners is None or listeners.acked_version is None:
            self._kept = frozenset(names)

    def _responded(self, type_url: str, state: TypeState, version: str, nonce: str,
                   resources: int) -> None:
        """A response of `type_url` was written: the bookkeeping, and the callbacks told."""
        state.record_response(version, nonce, resources)
        if self.on_response is not None:
            self.on_response(type_url, version, nonce, resources)

    def _acked(self, type_url: str, state: TypeState) -> None:
        """The client ACKed the latest response of `type_url`; after LDS, the clusters only
        the old listeners needed may go (rule 10)."""
        state.record_ack()
        if type_url == LISTENER:
            self._listener_refs_acked = self._listener_refs_sent
            self._kept = frozenset()
        elif type_url == ROUTE:
            self._route_refs_acked = self._route_refs_sent

    def _track(self, type_url: str, held: Mapping[str, EncodedResource]) -> None:
        """Record the clusters the client holds, or the clusters its listeners reference,
        after a response (rule 10). `held` is kept, not copied: callers pass a mapping nobody
        changes afterwards."""
        if type_url == CLUSTER:
            self._clusters_held = held
        elif type_url == LISTENER:
            self._listener_refs_sent = frozenset().union(*(r.refs for r in held.values()))
        elif type_url == ROUTE:
            self._route_refs_sent = frozenset().union(*(r.refs for r in held.values()))
