"""ACK counting (Kuma's `responsesAcknowledged`): an ACK of any response the gateway sent on
the stream counts, also one a newer response has replaced, each response once; a made-up
nonce, a repeat or a NACK does not. SotW and Delta, with raw clients against a real server
(fixtures in conftest)."""

from __future__ import annotations

from typing import Any

import grpc

from tests.harness import eventually
from tests.xds_gateway._ads import AdsClient, DeltaAdsClient, Projection, dataplane, event_for
from xds_gateway import Gateway
from xds_gateway.server.subscription import TypeState
from xds_gateway.type_urls import CLUSTER

WEB = "default.web-1"


async def _two_cds_responses(client: AdsClient, gateway: Gateway, projection: Projection
                             ) -> tuple[Any, Any]:
    """The first CDS response, then a second one (a new service) before any ACK."""
    client.send(CLUSTER, node_id=WEB)
    first = await client.recv()
    gateway.view.apply(projection.fold([event_for(dataplane("db-1", "10.0.0.5", 5432, "db"))]))
    second = await client.recv()
    assert second.type_url == CLUSTER and second.nonce != first.nonce
    return first, second


def _clusters(gateway: Gateway) -> TypeState:
    return next(iter(gateway.streams)).types[CLUSTER]


async def _latest_acks(gateway: Gateway, n: int) -> TypeState | None:
    """The CDS state once `n` ACKs of the latest response arrived: the requests before them
    on the stream are handled too."""
    state = _clusters(gateway)
    return state if state.latest_acks >= n else None


async def test_sotw_counts_the_ack_of_a_replaced_response(
        channel: grpc.aio.Channel, gateway: Gateway, projection: Projection) -> None:
    """Two CDS responses before the client ACKs the first: both ACKs count, once each (SENT ==
    ACKED), while only the latest one's moves the acked version (rule 2)."""
    client = AdsClient(channel)
    first, second = await _two_cds_responses(client, gateway, projection)
    client.ack(first)
    client.send(CLUSTER, version=first.version_info, nonce="999")  # never sent: not an ACK
    client.send(CLUSTER, version=first.version_info, nonce=first.nonce, error="bad")  # a NACK
    client.ack(second)
    client.ack(second)  # a repeat (Envoy's re-request of rule 9): no second ACK of it
    state = await eventually(lambda: _latest_acks(gateway, 2), what="the CDS ACKs")
    await client.nothing()
    assert (state.responses, state.acks) == (2, 2)
    assert state.acked_version == second.version_info
    client.close()


async def test_delta_counts_the_ack_of_a_replaced_response(
        channel: grpc.aio.Channel, gateway: Gateway, projection: Projection) -> None:
    """As SotW: the ACK of a Delta response a newer one replaced counts; a made-up nonce or
    a repeat does not."""
    client = DeltaAdsClient(channel)
    first, second = await _two_cds_responses(client, gateway, projection)
    client.ack(first)
    client.send(CLUSTER, nonce="999")
    client.send(CLUSTER, nonce="1" * 40)
    client.ack(second)
    client.ack(second)
    state = await eventually(lambda: _latest_acks(gateway, 2), what="the CDS ACKs")
    await client.nothing()
    assert (state.responses, state.acks) == (2, 2)
    assert state.acked_version == second.system_version_info
    client.close()
