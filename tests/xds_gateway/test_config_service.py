"""The `_config` answer of a gateway: its view's computed xDS for one proxy, as JSON."""

from __future__ import annotations

import msgspec

from tests.xds_gateway._ads import Projection, dataplane, event_for
from xds_gateway import Gateway
from xds_gateway.proxies.config_service import ConfigService


def _service() -> ConfigService:
    gw = Gateway(None, port=0, no_auth=True)
    gw.view.apply(Projection().fold([
        event_for({"type": "Mesh", "name": "default"}),
        event_for(dataplane("backend-1", "10.0.0.1", 8080, "backend")),
        event_for(dataplane("web-1", "10.0.0.9", 7070, "web")),
    ]))
    return ConfigService(gw.view, gw.cache)


async def test_config_lists_the_proxys_listeners_clusters_and_endpoints() -> None:
    reply = await _service().handle(b'{"mesh": "default", "name": "web-1"}')
    assert reply.status == 200
    doc = msgspec.json.decode(reply.body)
    assert (doc["mesh"], doc["name"]) == ("default", "web-1")
    xds = doc["xds"]
    listeners = {r["name"]: r["resource"] for r in xds["listeners"]}
    assert "inbound:10.0.0.9:7070" in listeners
    inbound = listeners["inbound:10.0.0.9:7070"]
    assert inbound["@type"] == "type.googleapis.com/envoy.config.listener.v3.Listener"
    assert inbound["address"]["socketAddress"] == {"address": "10.0.0.9", "portValue": 7070}
    clusters = [r["name"] for r in xds["clusters"]]
    assert "default_backend___msvc_8080" in clusters and "localhost:7070" in clusters
    endpoints = {r["name"]: r["resource"] for r in xds["endpoints"]}
    lb = endpoints["default_backend___msvc_8080"]["endpoints"][0]["lbEndpoints"]
    assert lb[0]["endpoint"]["address"]["socketAddress"]["address"] == "10.0.0.1"
    assert all(len(r["version"]) == 16 for r in xds["clusters"])


async def test_unknown_dataplane_is_a_404_naming_it() -> None:
    reply = await _service().handle(b'{"mesh": "default", "name": "ghost"}')
    assert reply.status == 404
    assert "'ghost'" in msgspec.json.decode(reply.body)["error"]


async def test_malformed_request_is_a_400_not_a_crash() -> None:
    service = _service()
    reply = await service.handle(b'{"mesh": 3}')
    assert reply.status == 400
    assert "proxy reference" in msgspec.json.decode(reply.body)["error"]
    assert (await service.handle(b'{"mesh": "default", "name": "web-1"}')).status == 200


async def test_the_config_of_a_grpc_client_has_its_targets() -> None:
    """The API passes what the proxy's live node said (from its insight): a proxyless gRPC
    client's config holds its api_listeners and routes (xds-rules #13), an Envoy's does not."""
    service = _service()
    grpc_reply = await service.handle(msgspec.json.encode({
        "mesh": "default", "name": "web-1", "user_agent": "gRPC Python", "dns_port": 25053}))
    envoy_reply = await service.handle(b'{"mesh": "default", "name": "web-1"}')
    grpc_xds = msgspec.json.decode(grpc_reply.body)["xds"]
    envoy_xds = msgspec.json.decode(envoy_reply.body)["xds"]
    assert "backend:8080" in {r["name"] for r in grpc_xds["listeners"]}
    assert [r["name"] for r in grpc_xds["routes"]] and not envoy_xds["routes"]
    assert "backend:8080" not in {r["name"] for r in envoy_xds["listeners"]}
