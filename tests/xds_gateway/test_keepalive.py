"""xds-rules.md #14, keepalive: a client that pings every 10 s on an idle ADS stream keeps its
stream. With gRPC's server defaults (pings without data at most every 5 min, two strikes)
the server would answer the fourth such ping with GOAWAY `too_many_pings`, ending the stream:
every proxy of the fleet would reconnect every 40 s."""

from __future__ import annotations

import grpc
import pytest

from tests.xds_gateway._ads import AdsClient
from xds_gateway import Gateway
from xds_gateway.type_urls import CLUSTER

pytestmark = pytest.mark.integration

_CLIENT_KEEPALIVE = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),  # keep pinging while the stream is idle
]


async def test_client_pings_every_10_s_keep_an_idle_stream(gateway: Gateway) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}",
                                         options=_CLIENT_KEEPALIVE) as channel:
        client = AdsClient(channel)
        client.send(CLUSTER, node_id="default.web-1")
        cds = await client.recv()
        client.ack(cds)
        await client.nothing(within=45)  # four client pings on an idle stream
        # the same stream still works: a new subscription is answered on it
        client.send(CLUSTER, names=["*"], version=cds.version_info, nonce=cds.nonce)
        assert (await client.recv()).type_url == CLUSTER
        client.close()
