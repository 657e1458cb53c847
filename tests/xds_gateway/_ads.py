"""A raw ADS client for protocol tests, and read-model rows made by the real fold."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc
from envoy.config.core.v3.base_pb2 import Node
from envoy.service.discovery.v3.discovery_pb2 import (
    DeltaDiscoveryRequest,
    DeltaDiscoveryResponse,
    DiscoveryRequest,
    DiscoveryResponse,
)
from google.rpc.status_pb2 import Status

from events import (
    AnyEvent,
    Dataplane,
    DataplaneRegistered,
    Mesh,
    MeshApplied,
    MeshMultiZoneService,
    MeshMultiZoneServiceApplied,
    MeshService,
    MeshServiceApplied,
    Provenance,
    decode_resource,
    kind_of_policy,
)
from events.bus.projection_bus import CHECKPOINT_KEY
from projections import PUBLISHED, ProjectionState, apply_event
from projections.derive import derive_stale
from xds_gateway import Gateway
from xds_gateway.server.serving_tls import ServingTls

ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
DELTA_ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"


def event_for(doc: dict[str, Any], at: int = 1) -> AnyEvent:
    match decode_resource(doc):
        case Mesh() as mesh:
            return MeshApplied(at=at, mesh=mesh)
        case Dataplane() as dp:
            return DataplaneRegistered(at=at, dataplane=dp)
        case MeshMultiZoneService() as mmzs:
            return MeshMultiZoneServiceApplied(at=at, meshmultizoneservice=mmzs)
        case MeshService() as ms:
            return MeshServiceApplied(at=at, meshservice=ms)
        case other:
            kind = kind_of_policy(other)  # every policy kind
            if kind is None:
                raise AssertionError(f"no event_for a {type(other).__name__}")
            return kind.applied_event(other, at)


class Projection:
    """Folds events with the real fold and hands out what the projector would publish."""

    def __init__(self) -> None:
        # the secret key of `tests.projections._histories`, whose `History.mtls` seals CAs
        from tests.projections._histories import SECRET_KEY

        self.state = ProjectionState.load([], secret_key=SECRET_KEY)
        self.seq = 0

    def fold(self, events: Iterable[AnyEvent]) -> list[tuple[str, bytes | None]]:
        for event in events:
            self.seq += 1
            apply_event(self.state, self.seq, event, Provenance(zone="default", origin="zone"))
        derive_stale(self.state)
        updates = [(f"{c.collection}/{c.key}", c.body) for c in self.state.take_changes()
                   if c.collection in PUBLISHED]
        return [*updates, (CHECKPOINT_KEY, str(self.seq).encode())]


def dataplane(name: str, address: str, port: int, service: str, **inbound: Any) -> dict[str, Any]:
    return {"type": "Dataplane", "mesh": "default", "name": name,
            "networking": {"address": address, "inbound": [
                {"port": port, "tags": {"kuma.io/service": service}, **inbound}]}}


V2_CLUSTER = "default_backend-v2___msvc_8080"


def grpc_route_to(backend: str, at: int) -> AnyEvent:
    """A MeshHTTPRoute sending `grpc`'s calls with `x-v: 2` to `backend` of `backend`'s."""
    return event_for({"type": "MeshHTTPRoute", "mesh": "default", "name": "v2", "spec": {
        "targetRef": {"kind": "MeshSubset", "tags": {"kuma.io/service": "grpc"}},
        "to": [{"targetRef": {"kind": "MeshService", "name": "backend"}, "rules": [
            {"matches": [{"headers": [{"type": "Exact", "name": "x-v", "value": "2"}]}],
             "default": {"backendRefs": [
                 {"kind": "MeshService", "name": backend, "weight": 1}]}}]}]}}, at)


def grpc_client_routed_to_v2() -> list[AnyEvent]:
    """`backend` and `backend-v2` on grpc ports (MeshHTTPRoute routes L7 ports only), a
    proxyless client `grpc-1` that reaches only `backend`, and `grpc_route_to` backend-v2."""
    client = dataplane("grpc-1", "10.0.0.8", 7071, "grpc")
    client["networking"]["transparentProxying"] = {"reachableBackends": {"refs": [
        {"kind": "MeshService", "name": "backend"}]}}
    backends = [dataplane(name, address, 8080, service) for name, address, service in (
        ("backend-1", "10.0.0.1", "backend"), ("backend-v2-1", "10.0.0.2", "backend-v2"))]
    for dp in backends:
        dp["networking"]["inbound"][0]["tags"]["kuma.io/protocol"] = "grpc"
    return [*map(event_for, backends), event_for(client), grpc_route_to("backend-v2", 1)]


class AdsClient:
    """One ADS stream: `send` requests, `recv` responses (with a timeout)."""

    _method, _request, _response = ADS, DiscoveryRequest, DiscoveryResponse

    def __init__(self, channel: grpc.aio.Channel,
                 metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self._requests: asyncio.Queue[Any] = asyncio.Queue()
        self._responses: asyncio.Queue[Any] = asyncio.Queue()
        self.call = channel.stream_stream(
            self._method, request_serializer=self._request.SerializeToString,
            response_deserializer=self._response.FromString,
        )(self._iterate(), metadata=metadata or None)
        # reading in one task: a timed-out wait must not cancel the call itself
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        try:
            async for response in self.call:
                self._responses.put_nowait(response)
        except grpc.aio.AioRpcError as exc:
            self._responses.put_nowait(exc)

    async def _iterate(self) -> AsyncIterator[Any]:
        while (request := await self._requests.get()) is not None:
            yield request

    def send(self, type_url: str, *, node_id: str | None = None, names: Iterable[str] = (),
             version: str = "", nonce: str = "", error: str | None = None,
             user_agent: str = "") -> None:
        request = DiscoveryRequest(type_url=type_url, resource_names=list(names),
                                   version_info=version, response_nonce=nonce)
        if node_id is not None:
            request.node.CopyFrom(Node(id=node_id, user_agent_name=user_agent))
        if error is not None:
            request.error_detail.CopyFrom(Status(code=3, message=error))
        self._requests.put_nowait(request)

    def ack(self, response: DiscoveryResponse, names: Iterable[str] = ()) -> None:
        self.send(response.type_url, names=names, version=response.version_info,
                  nonce=response.nonce)

    async def recv(self, within: float = 30.0) -> Any:
        """The next response. `within` bounds the wait, it is not a speed: a gateway on a
        real nats-server answers several times slower on a loaded CI machine."""
        item = await asyncio.wait_for(self._responses.get(), within)
        if isinstance(item, BaseException):
            raise item
        return item

    async def nothing(self, within: float = 0.3) -> None:
        """Assert the server sends nothing for `within` seconds."""
        try:
            item = await asyncio.wait_for(self._responses.get(), within)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected response: {item!r:.300}")

    def close(self) -> None:
        """Half-close: the server ends the stream, and the reader with it."""
        self._requests.put_nowait(None)


class DeltaAdsClient(AdsClient):
    """One Delta ADS stream: `send` DeltaDiscoveryRequests, `recv` DeltaDiscoveryResponses."""

    _method, _request, _response = DELTA_ADS, DeltaDiscoveryRequest, DeltaDiscoveryResponse

    # other fields than a SotW request's, so another signature than AdsClient.send's
    def send(self, type_url: str, *, node_id: str | None = None,  # type: ignore[override]
             subscribe: Iterable[str] = (), unsubscribe: Iterable[str] = (),
             initial: dict[str, str] | None = None, nonce: str = "",
             error: str | None = None, user_agent: str = "") -> None:
        request = DeltaDiscoveryRequest(
            type_url=type_url, resource_names_subscribe=list(subscribe),
            resource_names_unsubscribe=list(unsubscribe),
            initial_resource_versions=initial or {}, response_nonce=nonce)
        if node_id is not None:
            request.node.CopyFrom(Node(id=node_id, user_agent_name=user_agent))
        if error is not None:
            request.error_detail.CopyFrom(Status(code=3, message=error))
        self._requests.put_nowait(request)

    def ack(self, response: DeltaDiscoveryResponse) -> None:  # type: ignore[override]  # as send
        self.send(response.type_url, nonce=response.nonce)


@contextlib.asynccontextmanager
async def serving_gateway(projection: Projection, *, tls: ServingTls | None = None,
                          no_auth: bool = True) -> AsyncIterator[Gateway]:
    """A gateway (no NATS) serving a view fed by `projection` with a mesh, a `backend` and a
    `web` Dataplane; stopped at the end."""
    gateway = Gateway(None, port=0, no_auth=no_auth, tls=tls)
    gateway.view.apply(projection.fold([
        event_for({"type": "Mesh", "name": "default"}),
        event_for(dataplane("backend-1", "10.0.0.1", 8080, "backend")),
        event_for(dataplane("web-1", "10.0.0.9", 7070, "web")),
    ]))
    task = asyncio.create_task(gateway.serve())
    await gateway.serving.wait()
    try:
        yield gateway
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert task.cancelled(), "the gateway stopped before it was asked to"
