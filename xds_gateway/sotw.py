"""State-of-the-World ADS stream (xds-rules.md 1-10), on the shared `AdsStream` loop.

One `SotwStream` per gRPC stream. What is SotW-specific, by rule number:

2. a request whose `response_nonce` is not the latest sent for its type is stale and ignored;
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

from collections.abc import Awaitable, Callable

from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest

from xds_gateway._wire import discovery_response
from xds_gateway.cache import EncodedResource, ResourceCache, version_of
from xds_gateway.snapshot import Snapshot
from xds_gateway.subscription import WARMING_FOLLOWERS, AdsStream, InvalidStream, TypeState
from xds_gateway.type_urls import CLUSTER, LISTENER, PUSH_ORDER, WILDCARD_TYPES
from xds_gateway.view import ProjectionView

__all__ = ["InvalidStream", "SotwStream", "set_version"]


class SotwStream(AdsStream[DiscoveryRequest]):
    def __init__(self, view: ProjectionView, cache: ResourceCache,
                 write: Callable[[bytes], Awaitable[None]]) -> None:
        super().__init__(view, cache, write)
        self._rewarm: set[str] = set()
        """Types (EDS, RDS) that must answer their next request (rule 9)."""

    def _handle(self, request: DiscoveryRequest) -> None:
        self._adopt_node(request.node)
        type_url = request.type_url
        state = self._type_state(type_url)
        if state is None:
            return
        if request.response_nonce and request.response_nonce != state.sent_nonce:
            return  # rule 2: stale
        names = set(request.resource_names)
        if request.HasField("error_detail"):
            state.record_nack(self.node_id, type_url, request.error_detail.message)
            state.names = names
            return  # rule 3: do not resend the rejected version
        if request.response_nonce:
            state.record_ack()
            if type_url == LISTENER:
                self._listeners_acked()
        else:
            state.demand = True  # a new subscription (also after a reconnect)
        if names != state.names:
            state.names = names
            state.demand = True
        if type_url in self._rewarm:
            self._rewarm.discard(type_url)
            state.demand = True

    async def _push(self) -> None:
        snapshot = self._current()
        for type_url in PUSH_ORDER:
            state = self.types.get(type_url)
            if state is None:
                continue
            resources = self._select(type_url, state, snapshot)
            if type_url not in WILDCARD_TYPES and not resources and state.sent_version is None:
                continue  # rule 8: nothing to say yet; answered when the names appear
            version = set_version(resources)
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
            chosen = self._retain_clusters(chosen)
        return [chosen[n] for n in sorted(chosen)]

    async def _send(self, type_url: str, state: TypeState, version: str,
                    resources: list[EncodedResource]) -> None:
        nonce = self._next_nonce()
        await self._write(discovery_response(version, type_url, nonce, (r.any for r in resources)))
        state.sent_version = version
        state.sent_nonce = nonce
        state.demand = False
        state.responses += 1
        state.resources_sent += len(resources)
        self._track(type_url, {r.name: r for r in resources})  # the complete set (rule 6)
        follower = WARMING_FOLLOWERS.get(type_url)
        if follower is not None:
            self._rewarm.add(follower)
        self._rewarm.discard(type_url)


def set_version(resources: list[EncodedResource]) -> str:
    """Content-derived, so every gateway gives the same version for the same set (rule 12)."""
    return version_of("\n".join(f"{r.name}={r.version}" for r in resources).encode())
