"""Incremental (Delta) ADS stream (xds-rules.md 1-11), on the shared `AdsStream` loop.

One `DeltaStream` per gRPC stream. The client's subscriptions are kept per type, and for every
resource the version the client holds (`TypeState.held`), so a response carries only what
changed and what went away. What is Delta-specific, by rule number:

2. subscribe/unsubscribe apply even when the request's nonce is stale; only the ACK/NACK of
   the latest response for its type is booked;
3. NACK = `error_detail`; counted with its message; the rejected resources are not re-sent
   (they count as held until they change), so a NACK never starts a loop;
4. a response is sent only when some resource changed or went away, or the client asked;
5. LDS and CDS: an empty first subscribe (legacy) or `*` (explicit) is a wildcard; EDS and
   RDS are always named;
8/11. every name in `resource_names_subscribe` is answered: with the resource, or in
   `removed_resources` if it does not exist (then pushed when it appears); on a reconnect,
   `initial_resource_versions` say what the client holds: equal versions are not re-sent;
9. when a cluster (listener) changes, the client's EDS (RDS) of it is sent again right after:
   Envoy warms the new cluster from it;
10. CDS, EDS, LDS, RDS order; a removed cluster stays while a listener the client may hold
   still references it, and is removed once the new listeners are ACKed. Also across a
   reconnect: the clusters a wildcard client names in its first CDS request's
   `initial_resource_versions` stay until it ACKs the new stream's first LDS response (the
   new stream cannot tell which of them the listeners it still holds use).
"""

from __future__ import annotations

from envoy.service.discovery.v3.discovery_pb2 import DeltaDiscoveryRequest

from xds_gateway.resources.cache import EncodedResource, versions_digest
from xds_gateway.resources.snapshot import Snapshot
from xds_gateway.resources.wire import delta_discovery_response
from xds_gateway.server.subscription import (
    WARMING_FOLLOWERS,
    AdsStream,
    InvalidStream,
    TypeState,
    bound_count,
    bound_names,
)
from xds_gateway.type_urls import CLUSTER, WILDCARD_TYPES

__all__ = ["DeltaStream", "InvalidStream"]

_WILDCARD = "*"


class DeltaStream(AdsStream[DeltaDiscoveryRequest]):
    """`DeltaStream(source, cache, write)`, run like `SotwStream` (feed, watch_view, run)."""

    def _handle(self, request: DeltaDiscoveryRequest) -> None:
        self._adopt_node(request.node)
        self._dirty = True  # subscription changes apply whatever the nonce: always look
        type_url = request.type_url
        first = type_url not in self.types
        state = self._type_state(type_url)
        if state is None:
            return
        if first:
            # rule 11: a reconnecting client says what it holds; equal versions are not re-sent
            bound_names(type_url, request.initial_resource_versions)
            state.held = dict(request.initial_resource_versions)
            state.demand = True
            if type_url == CLUSTER:  # rule 10 across the reconnect
                self._resume_clusters(request.initial_resource_versions)
            if type_url in WILDCARD_TYPES and not request.resource_names_subscribe:
                state.names.add(_WILDCARD)  # rule 5: legacy wildcard
        # rule 2: subscription changes apply whatever the nonce
        bound_names(type_url, request.resource_names_subscribe)
        for name in request.resource_names_subscribe:
            state.names.add(name)
            if name == _WILDCARD:
                state.demand = True
            elif not first:
                state.held.pop(name, None)  # rule 11: answer it, even if sent before
        for name in request.resource_names_unsubscribe:
            state.names.discard(name)
            if name != _WILDCARD:
                state.held.pop(name, None)
            elif type_url in WILDCARD_TYPES:
                state.held = {n: v for n, v in state.held.items() if n in state.names}
        # the names came through bound_names one request at a time; their total is bounded
        # here (what the client holds grows with what the server sends: not counted)
        bound_count(type_url, len(state.names))
        if not request.response_nonce:
            return
        if request.HasField("error_detail"):
            # rule 3: a NACK of any of our responses counts, also one overtaken by a newer one
            state.record_nack(self.node_id, type_url, request.response_nonce,
                              request.error_detail.message)
        elif request.response_nonce == state.sent_nonce:
            self._acked(type_url, state)
        else:
            state.record_ack_of(request.response_nonce)

    async def _push_type(self, type_url: str, state: TypeState, snapshot: Snapshot) -> None:
        present, absent = self._scope(type_url, state, snapshot)
        changed = [r for name, r in sorted(present.items())
                   if name not in state.held or state.held[name] != r.version]
        # rule 8: a subscribed name that does not exist is reported once, as removed
        removed = sorted(name for name in absent
                         if name not in state.held or state.held[name] is not None)
        if not (changed or removed or state.demand):
            return
        for r in changed:
            state.held[r.name] = r.version
        for name in removed:
            if name in state.names:
                state.held[name] = None
            else:
                del state.held[name]
        version = versions_digest(
            (n, v) for n, v in sorted(state.held.items()) if v is not None)
        nonce = self._next_nonce()
        await self._write(delta_discovery_response(
            version, type_url, nonce, ((r.name, r.version, r.any) for r in changed), removed))
        self._responded(type_url, state, version, nonce, len(changed))
        self._track(type_url, present)
        self._rewarm(type_url, changed)

    def _scope(self, type_url: str, state: TypeState, snapshot: Snapshot
               ) -> tuple[dict[str, EncodedResource], set[str]]:
        """What the client should hold now, and the names in its scope that do not exist."""
        available = snapshot.of(type_url)
        wildcard = _WILDCARD in state.names and type_url in WILDCARD_TYPES
        present = dict(available) if wildcard else {}
        absent: set[str] = set()
        for name in state.names - {_WILDCARD}:
            if name in available:
                present[name] = available[name]
            else:
                absent.add(name)
        if wildcard:  # held but gone: removed (missing = deleted, as in SotW rule 6)
            absent |= state.held.keys() - present.keys()
        if type_url == CLUSTER:
            present = self._retain_clusters(present)  # rule 10
            absent -= present.keys()
            if wildcard:  # and across a reconnect: held, so not re-sent, only not removed
                absent -= self._kept
        return present, absent

    def _rewarm(self, type_url: str, changed: list[EncodedResource]) -> None:
        """Rule 9: resend the EDS of changed clusters (all RDS after a listener change).

        A ClusterLoadAssignment is named like its cluster (names.msvc_cluster)."""
        follower = self.types.get(WARMING_FOLLOWERS.get(type_url, ""))
        if follower is None or not changed:
            return
        names = ({r.name for r in changed} if type_url == CLUSTER else set(follower.held))
        for name in names & follower.held.keys():
            if follower.held[name] is not None:
                del follower.held[name]

