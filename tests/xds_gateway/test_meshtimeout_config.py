"""What MeshTimeouts do to a proxy's outbounds (xds_gateway.resources.timeouts): which
policies select it, how `to[]` entries merge, what stays as it was, and that the resources stay
keyed by what they are made of. The full config of one case: testdata/meshtimeout.*; a real
Envoy timing out a request: tests/integration/test_l7_outbound.py."""

from __future__ import annotations

from typing import Any

from tests.projections._histories import timeout
from tests.xds_gateway._ads import Projection, event_for
from tests.xds_gateway._outbound import apply as _apply
from tests.xds_gateway._outbound import dataplane as _dataplane
from tests.xds_gateway._outbound import view_of
from xds_gateway.resources import timeouts
from xds_gateway.resources.cache import ResourceCache
from xds_gateway.resources.config_dump import config_json
from xds_gateway.view import ProjectionView

Config = dict[str, list[dict[str, Any]]]


def _view() -> tuple[ProjectionView, Projection]:
    return view_of(_dataplane("backend-1", "10.0.0.1", 8080, "backend"),
                   _dataplane("api-1", "10.0.0.2", 9090, "api"),
                   _dataplane("db-1", "10.0.0.3", 5432, "db", "tcp"),
                   _dataplane("web-1", "10.0.0.9", 7070, "web", team="a"),
                   _dataplane("web-2", "10.0.0.10", 7070, "web", team="a"))


def _route_timeout(config: Config, service: str) -> str | None:
    for entry in config["listeners"]:
        (chain,) = entry["resource"]["filterChains"]
        hcm = chain["filters"][0]["typedConfig"]
        if hcm.get("statPrefix") == f"default_{service}___msvc_{_PORTS[service]}":
            route = hcm["routeConfig"]["virtualHosts"][0]["routes"][0]["route"]
            timeout_: str | None = route.get("timeout")
            return timeout_
    raise AssertionError(f"no outbound to {service}")


_PORTS = {"backend": 8080, "api": 9090, "db": 5432, "web": 7070}


def test_a_meshtimeout_that_selects_no_proxy_changes_nothing() -> None:
    view, projection = _view()
    before = config_json(view, "default", "web-1", ResourceCache())
    _apply(view, projection,
           timeout("default", "other", ({"kind": "Mesh"}, {"connectionTimeout": "1s"}),
                   target={"kind": "Dataplane", "name": "db-1"}),
           timeout("default", "nobody", ({"kind": "Mesh"}, {"idleTimeout": "1s"}),
                   target={"kind": "MeshSubset", "tags": {"team": "b"}}))

    assert config_json(view, "default", "web-1", ResourceCache()) == before
    assert _route_timeout(before, "backend") == "0s"  # meshlog's: none


def test_the_more_specific_policy_wins_then_a_meshservice_entry_beats_a_mesh_entry() -> None:
    """Kuma's order (`rules/outbound.Sort`): the policy's top-level targetRef first, then the
    entry's kind, then the name."""
    view, projection = _view()
    _apply(view, projection,
           # top-level Mesh: its MeshService entry beats b's Mesh entry for backend
           timeout("default", "a", ({"kind": "MeshService", "name": "backend"},
                                    {"http": {"requestTimeout": "1s"}})),
           timeout("default", "b", ({"kind": "Mesh"}, {"http": {"requestTimeout": "2s"}})),
           # a Dataplane's policy is more specific than a and b: its Mesh entry beats even
           # a's MeshService entry, whatever the names
           timeout("default", "0-dp", ({"kind": "Mesh"}, {"http": {"requestTimeout": "3s"}}),
                   target={"kind": "Dataplane", "labels": {"team": "a"}}))

    config = config_json(view, "default", "web-1", ResourceCache())

    assert _route_timeout(config, "backend") == "3s"
    assert _route_timeout(config, "api") == "3s"
    # backend-1 is not a `team: a` Dataplane: a's entry for backend, b's for api
    other = config_json(view, "default", "backend-1", ResourceCache())
    assert _route_timeout(other, "api") == "2s"
    assert _route_timeout(other, "backend") == "1s"


def test_a_dataplane_by_name_beats_dataplanes_by_labels_whatever_the_names() -> None:
    """Kuma 2.x's `CompareDataplaneKind`: of two top-level Dataplane targetRefs, the one by
    name is more specific than the one by labels (before the names, so `a` loses), and its
    Mesh entry beats even the labels policy's MeshService entry; a field only the labels
    policy sets is kept."""
    view, projection = _view()
    _apply(view, projection,
           timeout("default", "z-named", ({"kind": "Mesh"}, {"http": {"requestTimeout": "7s"}}),
                   target={"kind": "Dataplane", "name": "web-1"}),
           timeout("default", "a-labels",
                   ({"kind": "MeshService", "name": "backend"},
                    {"connectionTimeout": "4s", "http": {"requestTimeout": "1s"}}),
                   target={"kind": "Dataplane", "labels": {"team": "a"}}))

    config = config_json(view, "default", "web-1", ResourceCache())

    assert _route_timeout(config, "backend") == "7s"
    assert _route_timeout(config, "api") == "7s"
    clusters = {c["name"]: c["resource"] for c in config["clusters"]}
    assert clusters["default_backend___msvc_8080"]["connectTimeout"] == "4s"  # a's, kept


def test_among_policies_of_one_kind_the_first_name_wins_field_by_field() -> None:
    """Kuma sorts names descending and merges the last entry over the others: the
    alphabetically first name wins a field both set, a field only the other sets is kept."""
    view, projection = _view()
    _apply(view, projection,
           timeout("default", "z", ({"kind": "Mesh"}, {"connectionTimeout": "4s",
                                                       "http": {"requestTimeout": "9s"}})),
           timeout("default", "y", ({"kind": "Mesh"}, {"http": {"requestTimeout": "8s"}})))

    config = config_json(view, "default", "web-1", ResourceCache())

    assert _route_timeout(config, "backend") == "8s"
    clusters = {c["name"]: c["resource"] for c in config["clusters"]}
    assert clusters["default_backend___msvc_8080"]["connectTimeout"] == "4s"  # z's, kept


def test_a_dataplane_named_is_the_only_one_selected() -> None:
    view, projection = _view()
    _apply(view, projection, timeout("default", "t", ({"kind": "Mesh"}, {
        "http": {"requestTimeout": "5s"}}), target={"kind": "Dataplane", "name": "web-1"}))

    assert _route_timeout(config_json(view, "default", "web-1", ResourceCache()),
                          "backend") == "5s"
    assert _route_timeout(config_json(view, "default", "web-2", ResourceCache()),
                          "backend") == "0s"


def test_an_explicit_outbound_gets_the_timeouts_of_its_destination() -> None:
    view, projection = _view()
    explicit = _dataplane("client-1", "10.0.0.20", 7070, "client")
    explicit["networking"]["outbound"] = [
        {"port": 10001, "backendRef": {"kind": "MeshService", "name": "backend", "port": 8080}}]
    view.apply(projection.fold([event_for(explicit, at=2_500_000_000_000)]))
    _apply(view, projection, timeout("default", "t", ({"kind": "MeshService", "name": "backend"},
                                                      {"http": {"requestTimeout": "7s"}})))

    config = config_json(view, "default", "client-1", ResourceCache())
    listeners = {entry["name"]: entry["resource"] for entry in config["listeners"]}

    hcm = listeners["outbound:127.0.0.1:10001"]["filterChains"][0]["filters"][0]["typedConfig"]
    assert hcm["routeConfig"]["virtualHosts"][0]["routes"][0]["route"]["timeout"] == "7s"


def test_a_multizone_service_takes_the_mesh_entries_only() -> None:
    mesh_wide = timeout("default", "a", ({"kind": "Mesh"}, {"connectionTimeout": "3s"}),
                        ({"kind": "MeshService", "name": "redis"}, {"connectionTimeout": "1s"}))

    assert timeouts.for_destination(timeouts.merged([mesh_wide]), None) == timeouts.Timeouts(
        connection=3_000_000_000)
    assert timeouts.for_destination(timeouts.merged([mesh_wide]), "redis") == timeouts.Timeouts(
        connection=1_000_000_000)
    assert timeouts.for_destination(timeouts.merged([mesh_wide]), "other") == timeouts.Timeouts(
        connection=3_000_000_000)
    assert timeouts.for_destination(timeouts.merged([]), "redis") is None
