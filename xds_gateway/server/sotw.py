"""State-of-the-World ADS stream (xds-rules.md 1-10), on the shared `AdsStream` loop.

One `SotwStream` per gRPC stream. What is SotW-specific, by rule number:

2. a request whose `response_nonce` is not the latest sent for its type is stale and ignored;
3. NACK = `error_detail`; counted and logged; the rejected version is never re-sent;
4. a type is only sent when its version differs from the last sent, or the client asked;
5/6. LDS and CDS are wildcard (all of the node's resources); EDS and RDS only requested names,
   and on a view change only those whose version differs from what the stream sent;
8. requested names that do not exist yet are remembered and sent when they appear;
9. after a CDS (LDS) response, the next EDS (RDS) request is answered even if it only repeats
   the last version and nonce: Envoy re-requests to warm the changed clusters;
10. CDS, EDS, LDS, RDS order; clusters still referenced by listeners the client holds are kept
   until the new listeners are ACKed, so no listener ever points at a removed cluster. Also
   across a reconnect, when this gateway knows what the client holds: a client's first CDS
   request carries the `version_info` it last accepted, and a version is content-derived, so
   the set any gateway sent under it (`ResourceCache.remember_set`) is the set the client
   holds; those clusters stay in CDS until the client ACKs this stream's first LDS response.
   A version no stream of this gateway sent recently is not known: then the clusters that
   left while the client was away go at once, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest

from xds_gateway.resources.cache import EncodedResource, ResourceCache, set_version
from xds_gateway.resources.snapshot import Snapshot
from xds_gateway.resources.wire import ack_frame, request_names, response_body, with_nonce
from xds_gateway.server.source import SnapshotSource
from xds_gateway.server.subscription import (
    WARMING_FOLLOWERS,
    AdsStream,
    InvalidStream,
    TypeState,
    bound_names,
)
from xds_gateway.type_urls import CLUSTER, LISTENER, ROUTE, WILDCARD_TYPES

__all__ = ["InvalidStream", "SotwStream", "set_version"]

log = logging.getLogger("meshlog.xds")

_RETAINING = (LISTENER, ROUTE)
"""Types whose ACK may let clusters go (rule 10): Envoy's listeners, a gRPC client's routes."""


class SotwStream(AdsStream[DiscoveryRequest]):
    def __init__(self, source: SnapshotSource, cache: ResourceCache,
                 write: Callable[[bytes], Awaitable[None]]) -> None:
        super().__init__(source, cache, write)
        self._rewarm: set[str] = set()
        """Types (EDS, RDS) that must answer their next request (rule 9)."""
        self._before: Mapping[str, EncodedResource] = {}
        """The clusters the client held when this stream opened, when known (rule 10)."""

    def _handle(self, request: DiscoveryRequest) -> None:
        self._adopt_node(request.node)
        type_url = request.type_url
        first = type_url not in self.types
        state = self._type_state(type_url)
        if state is None:
            return
        if first and type_url == CLUSTER and request.version_info:
            self._resume(request.version_info)
        if request.response_nonce and request.response_nonce != state.sent_nonce:
            if not request.HasField("error_detail"):
                state.record_ack_of(request.response_nonce)
            return  # rule 2: stale
        self._dirty = self._dirty or self._asks(type_url, state, request)
        names = set(request.resource_names)
        if names != state.names:
            bound_names(type_url, names)
            state.names_key = self._cache.intern(frozenset(names))
            state.names_wire = request_names(request.resource_names)
        if request.HasField("error_detail"):
            state.record_nack(self.node_id, type_url, request.response_nonce,
                              request.error_detail.message)
            state.names = names
            # Envoy rejects the whole response, valid parts too: what it held before is what
            # it holds; resent only with the next change, never in a loop (rule 3)
            state.sent = state.unsent
            return
        if request.response_nonce:
            self._acked(type_url, state)
        else:
            state.demand = True  # a new subscription (also after a reconnect)
        if names != state.names:
            state.names = names
            state.demand = True
        if type_url in self._rewarm:
            self._rewarm.discard(type_url)
            state.demand = True

    def _resume(self, version: str) -> None:
        """Rule 10 across a reconnect: the client holds the CDS set of `version`."""
        held = self._cache.sent_set(self._mesh, CLUSTER, version)
        if held is None:
            log.debug("%s resumed CDS version %s, which this gateway did not send recently: "
                      "clusters that left while it was away go at once", self.node_id, version)
            return
        self._before = held
        self._resume_clusters(held.keys())

    def _ack_at_once(self, request: DiscoveryRequest) -> bool:
        if not self.node_id or not request.response_nonce:
            return False
        type_url = request.type_url
        state = self.types.get(type_url)
        # an ACK of an older response (stale, rule 2) or of one still being written (its
        # nonce is not recorded yet) goes through the loop, as does one that asks for more
        if (state is None or request.response_nonce != state.sent_nonce
                or type_url in _RETAINING or type_url in self._rewarm):
            return False
        if not self._same_ack(request, state):
            if self._asks(type_url, state, request):
                return False
            state.names_wire = request_names(request.resource_names)  # same names, new order
        state.record_ack()
        return True

    @staticmethod
    def _same_ack(request: DiscoveryRequest, state: TypeState) -> bool:
        """The request is, byte for byte, a plain ACK of the last response naming what the
        client last asked for, in the same order (what Envoy sends after every push)."""
        data = request.SerializeToString()
        head, tail = state.ack_frame
        names = state.names_wire
        return (len(data) == len(head) + len(names) + len(tail) and data.startswith(head)
                and data.endswith(tail) and data[len(head):len(head) + len(names)] == names)

    def _asks(self, type_url: str, state: TypeState, request: DiscoveryRequest) -> bool:
        """Whether a (current) request may change what to send: anything but the ACK of a
        type whose names stay the same. An LDS (RDS) ACK may let clusters go (rule 10); a request
        after a CDS (LDS) response re-warms EDS (RDS) (rule 9)."""
        return (not request.response_nonce or request.HasField("error_detail")
                or type_url in _RETAINING or type_url in self._rewarm
                or len(request.resource_names) != len(state.names)
                or not state.names.issuperset(request.resource_names))

    async def _push_type(self, type_url: str, state: TypeState, snapshot: Snapshot) -> None:
        if type_url in WILDCARD_TYPES:
            await self._push_set(type_url, state, snapshot)
        else:
            await self._push_named(type_url, state, snapshot)

    async def _push_set(self, type_url: str, state: TypeState, snapshot: Snapshot) -> None:
        """LDS, CDS: the complete set for the node (rule 6), when it changed or was asked for."""
        inputs: tuple[object, ...] = (snapshot.version(type_url), state.names)
        if type_url == CLUSTER:  # rule 10: retention depends on the listeners sent and ACKed
            inputs += (self._listener_refs_sent, self._listener_refs_acked,
                       self._route_refs_sent, self._route_refs_acked, self._kept)
        if not state.demand and inputs == state.inputs:
            return  # nothing this type depends on changed: no select, no hash
        state.inputs = inputs
        available = snapshot.of(type_url)
        resources = self._select(type_url, state, available)
        whole = state.wildcard() and len(resources) == len(available)
        # precomputed from the parts' versions when it is all of the node's
        version = snapshot.version(type_url) if whole else set_version(resources)
        if not state.demand and (version == state.sent_version or (
                whole != state.sent_whole and _holds(state.sent, resources))):
            return  # rule 4: what the client holds is never re-sent, not under a new version
        # the complete set (rule 6); the snapshot's own mapping when that is all of it; booked
        # before the write, so callbacks told of the response see what the client then holds
        held = available if whole else {r.name: r for r in resources}
        state.unsent, state.sent = state.sent, held
        state.sent_whole = whole
        self._track(type_url, held)
        if type_url == CLUSTER:
            self._cache.remember_set(self._mesh, type_url, version, held)
        await self._send(type_url, state, version, resources, None)

    async def _push_named(self, type_url: str, state: TypeState, snapshot: Snapshot) -> None:
        """EDS, RDS: only requested names (rule 6). A client that asked (new subscription,
        changed names, the rule-9 re-warm) gets every requested name; on a view change only
        the resources whose version differs from what this stream sent go out. Envoy and gRPC
        apply each named resource of these types on its own, and one left out is unchanged."""
        inputs = (snapshot.version(type_url), state.names)
        if not state.demand and inputs == state.inputs:
            return
        state.inputs = inputs
        available = snapshot.of(type_url)
        if state.demand:
            resources = [available[n] for n in sorted(state.names) if n in available]
            if not resources and state.sent_version is None:
                return  # rule 8: nothing to say yet; answered when the names appear
            partial = None
        else:
            resources = snapshot.changed_since(type_url, state.sent, state.names_key)
            if not resources:
                return
            partial = tuple(r.name for r in resources)
        version = snapshot.selection_version(type_url, state.names_key)
        if not state.demand and version == state.sent_version:
            return
        # either way the client now holds every requested name as `available` has it
        state.unsent, state.sent = state.sent, available
        if type_url == ROUTE:  # rule 10: a gRPC client's routes name its clusters
            self._track(type_url, {n: available[n] for n in state.names if n in available})
        await self._send(type_url, state, version, resources, partial)

    def _select(self, type_url: str, state: TypeState,
                available: Mapping[str, EncodedResource]) -> list[EncodedResource]:
        if state.wildcard():
            chosen = dict(available)
        else:
            chosen = {n: available[n] for n in state.names if n in available}
        if type_url == CLUSTER:
            chosen = self._retain_clusters(chosen)
            if state.wildcard():  # and across a reconnect (a named client asks for its own)
                for name in self._kept - chosen.keys():
                    chosen[name] = self._before[name]
        return [chosen[n] for n in sorted(chosen)]

    async def _send(self, type_url: str, state: TypeState, version: str,
                    resources: list[EncodedResource], partial: tuple[str, ...] | None) -> None:
        """`partial`: the names of a response that holds only what changed (EDS, RDS)."""
        nonce = self._next_nonce()
        # invariant 9: the body is determined by (type, version, partial names), since the
        # version is a content hash; streams getting the same one share its bytes
        body = self._cache.response_body(
            (type_url, version, partial),
            lambda: response_body(version, type_url, (r.any for r in resources)))
        # Rule 9, booked before the write: Envoy can answer a CDS response with its EDS
        # request before this write returns, and that request, taken then for a plain ACK
        # (`_ack_at_once`), left the changed cluster warming until Envoy's init_fetch_timeout.
        # Whatever EDS request comes next is answered after this response on the stream, so
        # after the cluster it warms.
        follower = WARMING_FOLLOWERS.get(type_url)
        if follower is not None:
            self._rewarm.add(follower)
        self._rewarm.discard(type_url)
        await self._write(with_nonce(body, nonce))
        self._responded(type_url, state, version, nonce, len(resources))
        state.ack_frame = ack_frame(version, type_url, nonce)


def _holds(sent: Mapping[str, EncodedResource], resources: list[EncodedResource]) -> bool:
    """Whether `resources` are exactly the set `sent` (by name and version). A set's version
    is computed two ways (the snapshot's, cheap, when it is all of the node's; `set_version`
    of a selection), so equal content can come with another version when the way changes:
    when a service goes, the clusters its listeners still use are retained (rule 10) and CDS
    is what it was. Within one way, equal content has equal versions: no need to look."""
    if len(resources) != len(sent):
        return False
    for resource in resources:
        held = sent.get(resource.name)
        if held is None or held.version != resource.version:
            return False
    return True
