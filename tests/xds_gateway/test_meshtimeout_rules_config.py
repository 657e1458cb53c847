"""MeshTimeout's `rules[]` on a proxy's inbounds (xds_gateway.resources.timeouts, 5): a rule
is a `from[]` entry by another name (Kuma 2.13+'s `rules/inbound.getEntries`), so rules and
`from[]` entries of several policies merge by the policies' order alone, and the fields no
rule sets take Kuma's defaults. A real Envoy: tests/integration/test_meshtimeout.py."""

from __future__ import annotations

from typing import Any

from events import Dataplane, MeshTimeout
from events.decoding import decode_resource
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


def _policy(name: str, section: str, *defaults: dict[str, Any],
            target: dict[str, Any] | None = None) -> MeshTimeout:
    """A MeshTimeout with one `rules[]` entry (`section` "rules") or one `from[]` entry
    with targetRef `Mesh` (`section` "from") per `default`."""
    if section == "rules":
        entries = [{"default": d} for d in defaults]
    else:
        entries = [{"targetRef": {"kind": "Mesh"}, "default": d} for d in defaults]
    return meshtimeout(name, {section: entries}, target)


def _view() -> Any:
    return view_of(_dataplane("backend-1", "10.0.0.1", 8080, "backend"),
                   _dataplane("web-1", "10.0.0.9", 7070, "web", team="a"))


_CONF = {"connectionTimeout": "2s", "idleTimeout": "3s",
         "http": {"requestTimeout": "4s", "streamIdleTimeout": "5s"}}


def test_a_rule_sets_an_inbound_as_the_same_from_entry_does() -> None:
    rules_view, rules_projection = _view()
    _apply(rules_view, rules_projection, _policy("t", "rules", _CONF))
    from_view, from_projection = _view()
    _apply(from_view, from_projection, _policy("t", "from", _CONF))

    by_rules = config_of(rules_view, "backend-1")

    assert first_route(inbound(by_rules, "10.0.0.1", 8080)[0])["timeout"] == "4s"
    assert inbound(by_rules, "10.0.0.1", 8080) == inbound(
        config_of(from_view, "backend-1"), "10.0.0.1", 8080)


def test_the_fields_no_rule_sets_take_kumas_defaults() -> None:
    view, projection = _view()
    _apply(view, projection, _policy("idle", "rules", {"idleTimeout": "10s"}))

    listener, cluster = inbound(config_of(view, "backend-1"), "10.0.0.1", 8080)

    assert (first_route(listener)["timeout"], hcm_of(listener)["streamIdleTimeout"],
            cluster["connectTimeout"]) == ("15s", "1800s", "5s")


def test_a_rules_policy_leaves_the_outbounds_alone() -> None:
    view, projection = _view()
    before = config_of(view, "web-1")
    _apply(view, projection, _policy("t", "rules", _CONF))

    after = config_of(view, "web-1")

    outbounds = [(e["name"], e["resource"]) for e in after["listeners"]
                 if e["name"].startswith("outbound:")]
    assert outbounds
    assert outbounds == [(e["name"], e["resource"]) for e in before["listeners"]
                         if e["name"].startswith("outbound:")]


def test_rules_and_from_entries_merge_by_the_policies_order_alone() -> None:
    """The more specific top-level targetRef wins whether its policy is written with
    `rules[]` or `from[]`, then the alphabetically first name; a field only another
    policy sets is kept."""
    view, projection = _view()
    _apply(view, projection,
           _policy("a-from", "from", {"http": {"requestTimeout": "7s"}}),
           _policy("b-rules", "rules", {"http": {"requestTimeout": "8s",
                                                 "streamIdleTimeout": "9s"}}),
           _policy("z-dp-rules", "rules", {"http": {"streamIdleTimeout": "2s"}},
                   target={"kind": "Dataplane", "labels": {"team": "a"}}))

    web, _ = inbound(config_of(view, "web-1"), "10.0.0.9", 7070)
    backend, _ = inbound(config_of(view, "backend-1"), "10.0.0.1", 8080)

    assert (first_route(web)["timeout"], hcm_of(web)["streamIdleTimeout"]) == ("7s", "2s")
    assert (first_route(backend)["timeout"], hcm_of(backend)["streamIdleTimeout"]) == ("7s", "9s")


def test_one_policys_rules_keep_their_order() -> None:
    merged = timeouts.merged([_policy("a", "rules", {"idleTimeout": "1s",
                                                     "connectionTimeout": "4s"},
                                      {"idleTimeout": "2s"})])
    dp = decode_resource(_dataplane("backend-1", "10.0.0.1", 8080, "backend"))
    assert isinstance(dp, Dataplane)

    assert timeouts.for_inbounds(merged, dp, {}) == (timeouts.Timeouts(
        connection=4_000_000_000, idle=2_000_000_000, request=15_000_000_000,
        stream_idle=1_800_000_000_000),)
