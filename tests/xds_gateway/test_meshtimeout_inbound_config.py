"""What MeshTimeouts' `from[]` do to a proxy's inbounds (xds_gateway.resources.timeouts, 5):
how entries of several policies merge, what an L7 and an L4 inbound take, Kuma's defaults for
the fields left out, and that inbounds without a `from[]` entry stay exactly as they were. A
real Envoy timing out a request at an inbound: tests/integration/test_meshtimeout.py."""

from __future__ import annotations

from typing import Any

from google.protobuf import any_pb2, json_format

from events import Dataplane, MeshTimeout
from events.decoding import decode_resource
from tests.projections._histories import History
from tests.xds_gateway._ads import Projection, event_for
from tests.xds_gateway._outbound import apply as _apply
from tests.xds_gateway._outbound import (
    config_of,
    first_route,
    hcm_of,
    inbound,
    meshtimeout,
    view_of,
)
from tests.xds_gateway._outbound import dataplane as _dataplane
from xds_gateway.resources import timeouts
from xds_gateway.resources.cache import ResourceCache
from xds_gateway.resources.snapshot import build_snapshot
from xds_gateway.type_urls import LISTENER
from xds_gateway.view import ProjectionView

_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def _timeout(name: str, *from_: dict[str, Any], to: dict[str, Any] | None = None,
             target: dict[str, Any] | None = None) -> MeshTimeout:
    """A MeshTimeout whose `from[]` entries (all `Mesh`) have the `default`s `from_`, and
    a `to[]` Mesh entry with the `default` `to`."""
    spec: dict[str, Any] = {"from": [{"targetRef": {"kind": "Mesh"}, "default": d}
                                     for d in from_]}
    if to is not None:
        spec["to"] = [{"targetRef": {"kind": "Mesh"}, "default": to}]
    return meshtimeout(name, spec, target)


def _view() -> Any:
    return view_of(_dataplane("backend-1", "10.0.0.1", 8080, "backend"),
                   _dataplane("db-1", "10.0.0.3", 5432, "db", "tcp"),
                   _dataplane("web-1", "10.0.0.9", 7070, "web", team="a"))


def _common_http(cluster: dict[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = cluster["typedExtensionProtocolOptions"][_HTTP_OPTIONS][
        "commonHttpProtocolOptions"]
    return options


def test_without_a_from_entry_the_inbounds_stay_as_they_were() -> None:
    """A MeshTimeout with `to[]` only, and one whose `from[]` is about other proxies: the
    inbound resources are the very bytes they were without MeshTimeout (Kuma's defaults are
    not written)."""
    view, projection = _view()
    before = config_of(view, "backend-1")
    _apply(view, projection,
           _timeout("other", {"http": {"requestTimeout": "1s"}},
                    target={"kind": "Dataplane", "name": "db-1"}),
           _timeout("to-only", to={"connectionTimeout": "2s"}))

    after = config_of(view, "backend-1")

    assert inbound(after, "10.0.0.1", 8080) == inbound(before, "10.0.0.1", 8080)
    assert first_route(inbound(after, "10.0.0.1", 8080)[0])["timeout"] == "0s"  # meshlog's: none


def test_an_l7_inbound_takes_every_field() -> None:
    view, projection = _view()
    _apply(view, projection, _timeout("all", {
        "connectionTimeout": "2s", "idleTimeout": "3s",
        "http": {"requestTimeout": "4s", "streamIdleTimeout": "5s", "maxStreamDuration": "6s",
                 "maxConnectionDuration": "7s", "requestHeadersTimeout": "8s"}}))

    listener, cluster = inbound(config_of(view, "backend-1"), "10.0.0.1", 8080)

    hcm = hcm_of(listener)
    assert first_route(listener)["timeout"] == "4s"
    assert (hcm["streamIdleTimeout"], hcm["requestHeadersTimeout"],
            hcm["commonHttpProtocolOptions"]["idleTimeout"]) == ("5s", "8s", "3s")
    assert cluster["connectTimeout"] == "2s"
    assert _common_http(cluster) == {"idleTimeout": "3s", "maxStreamDuration": "6s",
                                     "maxConnectionDuration": "7s"}


def test_an_l4_inbound_takes_the_idle_and_connect_timeouts_only() -> None:
    view, projection = _view()
    _apply(view, projection, _timeout("all", {
        "connectionTimeout": "2s", "idleTimeout": "3s",
        "http": {"requestTimeout": "4s", "maxStreamDuration": "6s"}}))

    listener, cluster = inbound(config_of(view, "db-1"), "10.0.0.3", 5432)

    (chain,) = listener["filterChains"]
    (proxy,) = chain["filters"]
    assert proxy["name"] == "envoy.filters.network.tcp_proxy"
    assert proxy["typedConfig"]["idleTimeout"] == "3s"
    assert cluster["connectTimeout"] == "2s"
    assert "typedExtensionProtocolOptions" not in cluster


def test_the_fields_left_out_take_kumas_defaults() -> None:
    """Kuma's configurer writes its defaults on an inbound a `from[]` applies to: a request
    timeout of 15 s where meshlog sets none without MeshTimeout."""
    view, projection = _view()
    _apply(view, projection, _timeout("idle", {"idleTimeout": "10s"}))

    config = config_of(view, "backend-1")
    listener, cluster = inbound(config, "10.0.0.1", 8080)
    db_listener, _ = inbound(config_of(view, "db-1"), "10.0.0.3", 5432)

    assert first_route(listener)["timeout"] == "15s"
    assert hcm_of(listener)["streamIdleTimeout"] == "1800s"
    assert "requestHeadersTimeout" not in hcm_of(listener)  # Kuma's 0s: none
    assert cluster["connectTimeout"] == "5s"
    assert _common_http(cluster) == {"idleTimeout": "10s"}
    assert db_listener["filterChains"][0]["filters"][0]["typedConfig"]["idleTimeout"] == "10s"
    # the outbounds are the to[] entries' business only
    outbounds = [e["resource"] for e in config["listeners"]
                 if e["name"].startswith("outbound:")]
    assert outbounds and all(first_route(o)["timeout"] == "0s" for o in outbounds
                             if "routeConfig" in hcm_of(o))


def test_entries_merge_in_kumas_order() -> None:
    """The more specific policy wins (a Dataplane's over a Mesh-wide one, whatever the
    names), then the alphabetically first name; a field only another entry sets is kept."""
    view, projection = _view()
    _apply(view, projection,
           _timeout("y", {"connectionTimeout": "3s", "http": {"requestTimeout": "8s"}}),
           _timeout("x", {"http": {"requestTimeout": "9s", "streamIdleTimeout": "1s"}}),
           _timeout("0-dp", {"http": {"streamIdleTimeout": "2s"}},
                    target={"kind": "Dataplane", "labels": {"team": "a"}}))

    web, web_cluster = inbound(config_of(view, "web-1"), "10.0.0.9", 7070)
    backend, backend_cluster = inbound(config_of(view, "backend-1"), "10.0.0.1", 8080)

    assert (first_route(web)["timeout"], hcm_of(web)["streamIdleTimeout"]) == ("9s", "2s")
    assert (first_route(backend)["timeout"], hcm_of(backend)["streamIdleTimeout"]) == ("9s", "1s")
    assert web_cluster["connectTimeout"] == backend_cluster["connectTimeout"] == "3s"  # y's


def test_one_policys_entries_keep_their_order() -> None:
    merged = timeouts.merged([_timeout("a", {"idleTimeout": "1s", "connectionTimeout": "4s"},
                                       {"idleTimeout": "2s"})])
    dp = decode_resource(_dataplane("backend-1", "10.0.0.1", 8080, "backend"))
    assert isinstance(dp, Dataplane)

    assert timeouts.for_inbounds(merged, dp, {}) == (timeouts.Timeouts(
        connection=4_000_000_000, idle=2_000_000_000, request=15_000_000_000,
        stream_idle=1_800_000_000_000),)
    assert timeouts.for_inbounds(timeouts.merged([]), dp, {}) == ()


def _two_inbounds() -> dict[str, Any]:
    """A Dataplane with an inbound of `backend` on 8080 and one of `admin` on 9901."""
    doc = _dataplane("backend-1", "10.0.0.1", 8080, "backend")
    doc["networking"]["inbound"].append(
        {"port": 9901, "protocol": "http", "tags": {"kuma.io/service": "admin"}})
    return doc


def test_a_policy_that_selects_one_inbound_leaves_the_others_as_they_were() -> None:
    """Kuma merges, per inbound, the `from[]` of the policies whose top-level targetRef
    selects that inbound: a MeshSubset policy about `backend`'s inbound does not time out
    the requests to `admin`'s on the same Dataplane, whose resources stay the very bytes
    they were; a Mesh-wide policy reaches both."""
    view, projection = view_of(_two_inbounds())
    before = config_of(view, "backend-1")
    _apply(view, projection, _timeout("backend-only", {"http": {"requestTimeout": "1s"}},
                                      target={"kind": "MeshSubset",
                                              "tags": {"kuma.io/service": "backend"}}))

    after = config_of(view, "backend-1")

    assert first_route(inbound(after, "10.0.0.1", 8080)[0])["timeout"] == "1s"
    assert inbound(after, "10.0.0.1", 9901) == inbound(before, "10.0.0.1", 9901)

    _apply(view, projection, _timeout("mesh", {"http": {"requestTimeout": "9s"}}))
    both = config_of(view, "backend-1")
    assert first_route(inbound(both, "10.0.0.1", 8080)[0])["timeout"] == "1s"  # more specific
    assert first_route(inbound(both, "10.0.0.1", 9901)[0])["timeout"] == "9s"


def test_a_proxy_whose_dataplane_did_not_change_gets_new_inbound_timeouts() -> None:
    """The inbound part of a snapshot is reused while its inputs are the same: the inbound
    timeouts are among them."""
    view, projection = _view()
    cache = ResourceCache()
    first = build_snapshot(view, "default", "backend-1", cache)
    _apply(view, projection, _timeout("t", {"http": {"requestTimeout": "1s"}}))

    again = build_snapshot(view, "default", "backend-1", cache, previous=first)

    listener = again.of(LISTENER)["inbound:10.0.0.1:8080"]
    assert first_route(json_format.MessageToDict(any_pb2.Any.FromString(listener.any)))[
        "timeout"] == "1s"


def test_every_chain_of_a_permissive_mtls_inbound_takes_them() -> None:
    """PERMISSIVE: the mesh mTLS chain and the plaintext one (HCMs) and the app's own TLS
    passed through (tcp_proxy)."""
    h = History()
    h.mtls("default", "ca-1", enabled="ca-1", mode="PERMISSIVE")
    projection, view = Projection(), ProjectionView()
    view.apply(projection.fold(h.events))
    view.apply(projection.fold([event_for(_dataplane("backend-1", "10.0.0.1", 8080, "backend"),
                                          at=10)]))
    _apply(view, projection, _timeout("t", {"idleTimeout": "3s",
                                            "http": {"requestTimeout": "1s"}}))

    listener, _ = inbound(config_of(view, "backend-1"), "10.0.0.1", 8080)

    proxies = [f for chain in listener["filterChains"] for f in chain["filters"]
               if f["name"] != "envoy.filters.network.rbac"]
    assert [p["name"].rpartition(".")[2] for p in proxies] == [
        "http_connection_manager", "tcp_proxy", "http_connection_manager"]
    for proxy in proxies:
        config = proxy["typedConfig"]
        if "routeConfig" in config:
            route = config["routeConfig"]["virtualHosts"][0]["routes"][0]["route"]
            assert (route["timeout"], config["commonHttpProtocolOptions"]["idleTimeout"]) == (
                "1s", "3s")
        else:
            assert config["idleTimeout"] == "3s"
