"""State-of-the-World ADS stream (xds-rules.md 1-10).

One `SotwStream` per gRPC stream. Requests and view changes both wake one loop that decides
what to send; nothing else writes to the stream. Rules, by number:

1. the node is taken from the first request; later ones may omit it;
2. every response has a nonce unique in the stream; a request whose `response_nonce` is not the
   latest sent for its type is stale and ignored;
3. NACK = `error_detail`; counted and logged; the rejected version is never re-sent;
4. a type is only sent when its version differs from the last sent, or the client asked;
5/6. LDS and CDS are wildcard (all of the node's resources); EDS and RDS only requested names;
8. requested names that do not exist yet are remembered and sent when they appear;
9. after a CDS (LDS) response, the next EDS (RDS) request is answered even if it only repeats
   the last version and nonce: Envoy re-requests to warm the changed clusters;
10. CDS, EDS, LDS, RDS order; clusters still referenced by listeners the client holds are kept
   until the new listeners are ACKed, so no listener ever points at a removed cluster.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest

from xds_gateway._wire import discovery_response
from xds_gateway.cache import EncodedResource, ResourceCache, version_of
from xds_gateway.names import parse_node_id
from xds_gateway.snapshot import Snapshot, build_snapshot
from xds_gateway.subscription import TypeState
from xds_gateway.type_urls import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, ROUTE, WILDCARD_TYPES
from xds_gateway.view import ProjectionView

__all__ = ["InvalidStream", "SotwStream"]

log = logging.getLogger("meshlog.xds.sotw")

_MAX_QUEUED_REQUESTS = 64
_WARMING_FOLLOWERS = {CLUSTER: ENDPOINT, LISTENER: ROUTE}


class InvalidStream(Exception):
    """The client broke the protocol; the stream ends with INVALID_ARGUMENT and this message."""


class SotwStream:
    def __init__(self, view: ProjectionView, cache: ResourceCache,
                 write: Callable[[bytes], Awaitable[None]]) -> None:
        self._view = view
        self._cache = cache
        self._write = write
        self.node_id = ""
        self._mesh = ""
        self._name = ""
        self.types: dict[str, TypeState] = {}
        self._nonce = 0
        self._requests: deque[DiscoveryRequest] = deque()
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._snapshot: Snapshot | None = None
        self._generation = -1
        self._rewarm: set[str] = set()
        """Types (EDS, RDS) that must answer their next request (rule 9)."""
        self._clusters_sent: dict[str, EncodedResource] = {}
        self._listener_refs_sent: frozenset[str] = frozenset()
        self._listener_refs_acked: frozenset[str] = frozenset()

    # --- inputs -------------------------------------------------------------------------------

    async def feed(self, requests) -> None:
        """Queue requests from the client (bounded); returns when the client half-closes."""
        async for request in requests:
            while len(self._requests) >= _MAX_QUEUED_REQUESTS:
                self._room.clear()
                await self._room.wait()
            self._requests.append(request)
            self._wake.set()

    async def watch_view(self) -> None:
        generation = self._view.generation
        while True:
            generation = await self._view.changed(generation)
            self._wake.set()

    # --- the loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._requests:
                self._handle(self._requests.popleft())
            self._room.set()
            if self.node_id:
                await self._push()

    def _handle(self, request: DiscoveryRequest) -> None:
        if not self.node_id:
            if not request.node.id:
                raise InvalidStream("the first request of a stream must carry node.id")
            parsed = parse_node_id(request.node.id)
            if parsed is None:
                raise InvalidStream(
                    f"node.id {request.node.id!r} is not <mesh>.<dataplane name>")
            self.node_id = request.node.id
            self._mesh, self._name = parsed
        type_url = request.type_url
        if type_url not in PUSH_ORDER:
            log.info("%s: ignoring request for unsupported type %s", self.node_id, type_url)
            return
        state = self.types.setdefault(type_url, TypeState())
        if request.response_nonce and request.response_nonce != state.sent_nonce:
            return  # rule 2: stale
        names = set(request.resource_names)
        if request.HasField("error_detail"):
            state.nacks += 1
            state.last_nack = request.error_detail.message
            log.warning("%s NACKed %s version %s: %s", self.node_id, type_url,
                        state.sent_version, state.last_nack)
            state.names = names
            return  # rule 3: do not resend the rejected version
        if request.response_nonce:
            state.acks += 1
            state.acked_version = state.sent_version
            if type_url == LISTENER:
                self._listener_refs_acked = self._listener_refs_sent
        else:
            state.demand = True  # a new subscription (also after a reconnect)
        if names != state.names:
            state.names = names
            state.demand = True
        if type_url in self._rewarm:
            self._rewarm.discard(type_url)
            state.demand = True

    # --- pushing ------------------------------------------------------------------------------

    def _current(self) -> Snapshot:
        if self._snapshot is None or self._generation != self._view.generation:
            self._generation = self._view.generation
            self._snapshot = build_snapshot(self._view, self._mesh, self._name, self._cache)
        return self._snapshot

    async def _push(self) -> None:
        snapshot = self._current()
        for type_url in PUSH_ORDER:
            state = self.types.get(type_url)
            if state is None:
                continue
            resources = self._select(type_url, state, snapshot)
            if type_url not in WILDCARD_TYPES and not resources and state.sent_version is None:
                continue  # rule 8: nothing to say yet; answered when the names appear
            version = _version(resources)
            if not state.demand and version == state.sent_version:
                continue
            await self._send(type_url, state, version, resources)

    def _select(self, type_url: str, state: TypeState, snapshot: Snapshot
                ) -> list[EncodedResource]:
        available = snapshot.resources[type_url]
        if type_url in WILDCARD_TYPES and state.wildcard():
            chosen = dict(available)
        else:
            chosen = {n: available[n] for n in state.names if n in available}
        if type_url == CLUSTER:
            # rule 10: a cluster leaves only once no listener the client may hold needs it
            in_use = self._listener_refs_sent | self._listener_refs_acked
            for name in in_use - chosen.keys():
                if name in self._clusters_sent:
                    chosen[name] = self._clusters_sent[name]
        return [chosen[n] for n in sorted(chosen)]

    async def _send(self, type_url: str, state: TypeState, version: str,
                    resources: list[EncodedResource]) -> None:
        self._nonce += 1
        nonce = str(self._nonce)
        await self._write(discovery_response(version, type_url, nonce, (r.any for r in resources)))
        state.sent_version = version
        state.sent_nonce = nonce
        state.demand = False
        state.responses += 1
        if type_url == CLUSTER:
            self._clusters_sent = {r.name: r for r in resources}
        elif type_url == LISTENER:
            self._listener_refs_sent = frozenset().union(*(r.refs for r in resources))
        follower = _WARMING_FOLLOWERS.get(type_url)
        if follower is not None:
            self._rewarm.add(follower)
        self._rewarm.discard(type_url)


def _version(resources: list[EncodedResource]) -> str:
    """Content-derived, so every gateway gives the same version for the same set (rule 12)."""
    return version_of("\n".join(f"{r.name}={r.version}" for r in resources).encode())
