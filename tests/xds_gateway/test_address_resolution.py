"""DNS names given as Dataplane addresses, resolved by the gateway (`xds_gateway.resolver`):
a real gateway following a real nats-server's projection bucket, rows made by the real fold,
raw ADS clients; names looked up by the system's resolver or at a real DNS server over UDP
that the test controls (`tests._dns_server`)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import dns.rcode
import pytest
from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.service.discovery.v3.discovery_pb2 import DiscoveryResponse
from google.protobuf import any_pb2
from nats.aio.client import Client as NATS
from prometheus_client import REGISTRY

from events.bus.projection_bus import JetStreamProjectionBus
from tests._dns_server import dns_server
from tests.harness import eventually
from tests.xds_gateway._ads import AdsClient, Projection, dataplane, event_for
from tests.xds_gateway._gateways import channel_to, running_gateway
from xds_gateway import ProjectionView, ResourceCache, build_snapshot
from xds_gateway.resolver import DnsServerLookup, pick
from xds_gateway.type_urls import ENDPOINT, LISTENER

BACKEND = "default_backend___msvc_8080"


async def _publish(nc: NATS, projection: Projection, docs: Iterable[dict[str, Any]]) -> None:
    bus = await JetStreamProjectionBus.open(nc)
    await bus.publish(projection.fold([event_for(d) for d in docs]))


def _hosts(response: DiscoveryResponse) -> dict[str, list[str]]:
    out = {}
    for resource in response.resources:
        cla = ClusterLoadAssignment.FromString(resource.value)
        out[cla.cluster_name] = [
            f"{lb.endpoint.address.socket_address.address}:"
            f"{lb.endpoint.address.socket_address.port_value}"
            for group in cla.endpoints for lb in group.lb_endpoints]
    return out


def _inbounds(response: DiscoveryResponse) -> dict[str, str]:
    """Inbound listener name -> the address it binds."""
    out = {}
    for resource in response.resources:
        listener = Listener.FromString(resource.value)
        if listener.name.startswith("inbound:"):
            out[listener.name] = listener.address.socket_address.address
    return out


def _lookups(result: str) -> float:
    return REGISTRY.get_sample_value("meshlog_xds_address_lookups_total",
                                     {"result": result}) or 0.0


async def test_a_name_that_does_not_resolve_stays_out_and_is_logged_once(
        nc: NATS, caplog: pytest.LogCaptureFixture) -> None:
    """`nowhere.invalid` (RFC 6761: never resolves) through the system's resolver: its
    endpoint stays out of EDS while the others are served, the name and its Dataplane are
    logged once however many times it is looked up again, and the metrics count it."""
    projection = Projection()
    await _publish(nc, projection, [
        {"type": "Mesh", "name": "default"},
        dataplane("backend-1", "10.0.0.1", 8080, "backend"),
        dataplane("backend-2", "nowhere.invalid", 8080, "backend"),
        dataplane("web-1", "10.0.0.9", 7070, "web"),
    ])
    failed_before = _lookups("failed") + _lookups("timeout")
    caplog.set_level(logging.INFO, logger="meshlog.xds.dns")
    async with running_gateway(nc, dns_cache_ttl_s=0.05) as gateway, \
            channel_to(gateway) as channel:
        client = AdsClient(channel)
        client.send(ENDPOINT, node_id="default.web-1",
                    names=[BACKEND, "default_web___msvc_7070"])
        assert _hosts(await client.recv()) == {BACKEND: ["10.0.0.1:8080"],
                                               "default_web___msvc_7070": ["10.0.0.9:7070"]}

        async def looked_up_again() -> bool:
            return _lookups("failed") + _lookups("timeout") >= failed_before + 4

        await eventually(looked_up_again, what="nowhere.invalid looked up four times",
                         within=30)
        assert gateway.resolver.unresolved == {"nowhere.invalid"}
        assert (REGISTRY.get_sample_value("meshlog_xds_unresolved_addresses") or 0) >= 1
        warnings = [r.getMessage() for r in caplog.records
                    if r.levelno == logging.WARNING and "nowhere.invalid" in r.getMessage()]
        assert len(warnings) == 1, warnings
        assert "Dataplane backend-2 (mesh default)" in warnings[0]
        assert "stay out of EDS" in warnings[0]
        client.close()


async def test_an_answer_that_changes_is_pushed_to_eds_and_to_the_proxys_inbounds(
        nc: NATS) -> None:
    """A name resolved at a DNS server the test controls: the endpoint gets the answer, the
    proxy's own inbound listener binds it; a new answer is pushed to open streams with no
    change in the log; SERVFAIL keeps the last answer, NXDOMAIN takes the endpoint out."""
    projection = Projection()
    async with dns_server() as server:
        server.records["backend-1.test"] = ["10.1.0.1", "fd00::1"]  # IPv4 preferred
        await _publish(nc, projection, [
            {"type": "Mesh", "name": "default"},
            dataplane("backend-1", "backend-1.test", 8080, "backend"),
            dataplane("backend-2", "10.0.0.2", 8080, "backend"),
            dataplane("web-1", "10.0.0.9", 7070, "web"),
        ])
        lookup = DnsServerLookup("127.0.0.1", server.port, timeout_s=2)
        async with running_gateway(nc, dns_cache_ttl_s=0.05, address_lookup=lookup) as gw, \
                channel_to(gw) as channel:
            eds, lds = AdsClient(channel), AdsClient(channel)
            eds.send(ENDPOINT, node_id="default.web-1", names=[BACKEND])
            first = await eds.recv()
            assert _hosts(first) == {BACKEND: ["10.0.0.2:8080", "10.1.0.1:8080"]}
            eds.ack(first, names=[BACKEND])
            lds.send(LISTENER, node_id="default.backend-1")
            listeners = await lds.recv()
            assert _inbounds(listeners) == {"inbound:10.1.0.1:8080": "10.1.0.1"}
            lds.ack(listeners)

            server.records["backend-1.test"] = ["10.1.0.7"]
            moved = await eds.recv()
            assert _hosts(moved) == {BACKEND: ["10.0.0.2:8080", "10.1.0.7:8080"]}
            eds.ack(moved, names=[BACKEND])
            listeners = await lds.recv()
            assert _inbounds(listeners) == {"inbound:10.1.0.7:8080": "10.1.0.7"}
            lds.ack(listeners)

            # a failing server: the last answer stays (a response would come now)
            server.records["backend-1.test"] = dns.rcode.SERVFAIL
            failed = _lookups("failed")

            async def failed_twice() -> bool:
                return _lookups("failed") >= failed + 2

            await eventually(failed_twice, what="two SERVFAIL lookups")
            server.records["backend-1.test"] = ["10.1.0.9"]
            # the next response is the new answer, not one without the endpoint before it
            back = await eds.recv()
            assert _hosts(back) == {BACKEND: ["10.0.0.2:8080", "10.1.0.9:8080"]}
            eds.ack(back, names=[BACKEND])
            lds.ack(await lds.recv())

            # NXDOMAIN: the name is gone, and so is its endpoint
            server.records["backend-1.test"] = dns.rcode.NXDOMAIN
            gone = await eds.recv()
            assert _hosts(gone) == {BACKEND: ["10.0.0.2:8080"]}
            eds.ack(gone, names=[BACKEND])
            # the listener is named by the name, on every address (as before names resolved)
            assert _inbounds(await lds.recv()) == {"inbound:backend-1.test:8080": "0.0.0.0"}
            assert gw.resolver.unresolved == {"backend-1.test"}
            eds.close()
            lds.close()


def test_answers_feed_the_shared_part_built_once_for_every_proxy() -> None:
    """Invariant 9 with names: the ClusterLoadAssignment made with an answer is one object for
    every proxy of the mesh, built once per answer; a new answer is a new generation."""
    projection, view, cache = Projection(), ProjectionView(), ResourceCache()
    view.apply(projection.fold([event_for(d) for d in [
        {"type": "Mesh", "name": "default"},
        dataplane("backend-1", "backend-1.test", 8080, "backend"),
        *(dataplane(f"web-{i}", f"10.0.0.{i}", 7070, "web") for i in range(1, 4)),
    ]]))
    assert view.addresses.in_use() == {
        "backend-1.test": frozenset({"Dataplane backend-1 (mesh default)"})}
    for answer in ("10.1.0.1", "10.1.0.2"):
        assert view.addresses.update({"backend-1.test": answer})
        view.touch()
        builds = cache.shared_builds
        assignments = [build_snapshot(view, "default", f"web-{i}", cache).of(ENDPOINT)[BACKEND]
                       for i in range(1, 4)]
        assert cache.shared_builds == builds + 1  # one shared part for the three
        assert all(a is assignments[0] for a in assignments)
        cla = ClusterLoadAssignment.FromString(any_pb2.Any.FromString(assignments[0].any).value)
        assert [lb.endpoint.address.socket_address.address
                for lb in cla.endpoints[0].lb_endpoints] == [answer]


def test_the_answer_is_ipv4_first_then_the_lowest() -> None:
    """The same pick on every gateway, whatever order the answer comes in (invariant 7)."""
    assert pick(["fd00::2", "10.0.0.9", "fd00::1", "10.0.0.10"]) == "10.0.0.9"
    assert pick(["fd00::2", "fd00::1"]) == "fd00::1"
    assert pick([]) is None
