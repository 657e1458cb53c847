"""MeshTimeout documents: Kuma's universal format and rules, every violation with its path
and value; Go durations."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from events import (
    InvalidResource,
    MeshTimeout,
    MeshTimeoutApplied,
    decode_event,
    decode_resource,
    encode_event,
)
from events.resources import go_duration_ns


def _mt(*to: tuple[dict[str, Any], dict[str, Any]], target: dict[str, Any] | None = None,
        sources: list[dict[str, Any]] | None = None,
        rules: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if to:
        spec["to"] = [{"targetRef": ref, "default": conf} for ref, conf in to]
    if target is not None:
        spec["targetRef"] = target
    if sources is not None:
        spec["from"] = sources
    if rules is not None:
        spec["rules"] = rules
    return {"type": "MeshTimeout", "mesh": "default", "name": "timeouts", "spec": spec}


def _violations(raw: Any) -> list[str]:
    with pytest.raises(InvalidResource) as info:
        decode_resource(raw)
    return [str(v) for v in info.value.violations]


KUMAS_EXAMPLE = _mt(({"kind": "MeshService", "name": "backend"}, {
    "connectionTimeout": "10s", "idleTimeout": "1h",
    "http": {"requestTimeout": "5s", "streamIdleTimeout": "1h", "maxStreamDuration": "0s",
             "maxConnectionDuration": "0s", "requestHeadersTimeout": "500ms"}}),
    target={"kind": "MeshService", "name": "frontend"})


def test_kumas_example_decodes_and_reads_back_the_same() -> None:
    mt = decode_resource(KUMAS_EXAMPLE)

    assert isinstance(mt, MeshTimeout)
    conf = mt.spec.to[0].default
    assert conf.connection_timeout == "10s"
    assert conf.http is not None and conf.http.request_headers_timeout == "500ms"
    assert msgspec.to_builtins(mt) == KUMAS_EXAMPLE  # camelCase, no defaults added


def test_the_event_goes_through_the_codec() -> None:
    mt = decode_resource(KUMAS_EXAMPLE)
    assert isinstance(mt, MeshTimeout)
    event = MeshTimeoutApplied(at=1, policy=mt)

    assert decode_event(encode_event(event), seq=1, subject="s") == event


@pytest.mark.parametrize("target", [
    {"kind": "Mesh"},
    {"kind": "MeshSubset", "tags": {"version": "v1"}},
    {"kind": "MeshService", "name": "backend"},
    {"kind": "Dataplane", "name": "backend-1"},
    {"kind": "Dataplane", "labels": {"app": "backend"}},
])
def test_every_top_level_kind_is_accepted(target: dict[str, Any]) -> None:
    doc = _mt(({"kind": "Mesh"}, {"idleTimeout": "1m"}), target=target)
    assert isinstance(decode_resource(doc), MeshTimeout)


def test_from_alone_is_accepted() -> None:
    doc = _mt(sources=[{"targetRef": {"kind": "Mesh"}, "default": {"idleTimeout": "1m"}}])
    mt = decode_resource(doc)

    assert isinstance(mt, MeshTimeout)
    assert mt.spec.from_[0].default.idle_timeout == "1m"


KUMAS_RULES_EXAMPLE = _mt(target={"kind": "Dataplane", "labels": {"app": "backend"}}, rules=[
    {"default": {"idleTimeout": "20s", "connectionTimeout": "2s",
                 "http": {"requestTimeout": "10s", "streamIdleTimeout": "1h"}}}])


def test_rules_alone_are_accepted_and_read_back_the_same() -> None:
    mt = decode_resource(KUMAS_RULES_EXAMPLE)

    assert isinstance(mt, MeshTimeout)
    assert mt.spec.rules[0].default.idle_timeout == "20s"
    assert msgspec.to_builtins(mt) == KUMAS_RULES_EXAMPLE  # no `matches: []` added


def test_a_policy_without_rules_encodes_as_before() -> None:
    mt = decode_resource(KUMAS_EXAMPLE)

    assert b"rules" not in msgspec.json.encode(mt)  # stored policies keep their bytes


def test_a_rule_with_empty_matches_is_accepted() -> None:
    doc = _mt(rules=[{"matches": [], "default": {"idleTimeout": "1m"}}])
    assert isinstance(decode_resource(doc), MeshTimeout)


@pytest.mark.parametrize(("match", "what"), [
    ({"spiffeID": {"type": "Exact", "value": "spiffe://default/web"}},
     {"http": {"requestTimeout": "1s"}}),
    ({"sni": {"type": "Exact", "value": "backend.mesh"}}, {"idleTimeout": "1s"}),
])
def test_a_rule_with_matches_is_refused_naming_the_field(match: dict[str, Any],
                                                         what: dict[str, Any]) -> None:
    doc = _mt(rules=[{"default": {"idleTimeout": "1m"}},
                     {"matches": [match], "default": what}])

    assert _violations(doc) == [
        "spec.rules[1].matches: is not supported: meshlog cannot tell an inbound's traffic "
        "apart by SPIFFE ID or SNI, so a rule applies to all of it (leave matches out)"]


@pytest.mark.parametrize("section", ["to", "from"])
def test_rules_with_to_or_from_are_refused(section: str) -> None:
    entry = {"targetRef": {"kind": "Mesh"}, "default": {"idleTimeout": "1s"}}
    doc = _mt(rules=[{"default": {"idleTimeout": "1m"}}], sources=[entry] if section == "from"
              else None)
    if section == "to":
        doc["spec"]["to"] = [entry]

    assert _violations(doc) == [
        "spec: fields 'to' and 'from' must be empty when 'rules' is defined"]


def test_a_rules_default_is_checked_as_the_others() -> None:
    doc = _mt(rules=[{"default": {}}, {"default": {"connectionTimeout": "0s",
                                                   "http": {"requestTimeout": "x"}}}])

    assert _violations(doc) == [
        "spec.rules[0].default: at least one timeout should be configured",
        "spec.rules[1].default.connectionTimeout: '0s' must be greater than 0s",
        "spec.rules[1].default.http.requestTimeout: 'x' is not a duration (Go's format: a "
        "number and a unit of ns, us, ms, s, m, h, e.g. 500ms, 15s, 1h30m)",
    ]


def test_a_rule_takes_no_target_ref() -> None:
    doc = _mt(rules=[{"targetRef": {"kind": "Mesh"}, "default": {"idleTimeout": "1m"}}])

    violations = _violations(doc)
    assert len(violations) == 1 and "targetRef" in violations[0]


@pytest.mark.parametrize(("text", "ns"), [
    ("0", 0), ("0s", 0), ("1s", 10**9), ("1.5s", 1_500_000_000), ("500ms", 500_000_000),
    ("1h30m", 5_400 * 10**9), ("2us", 2_000), ("2µs", 2_000), ("7ns", 7), ("-2s", -2 * 10**9),
    (".5s", 500_000_000),
    # exact, not through a float: Go's largest, and a part's fraction of a nanosecond dropped
    ("2562047h47m16.854775807s", 2**63 - 1), ("1.5ns", 1), ("1.000000001s", 10**9 + 1),
    # Go reads any number of digits: leading zeros, and a fraction past a nanosecond's worth
    ("0" * 5000 + "1s", 10**9), ("1." + "0" * 5000 + "1s", 10**9), ("1." + "9" * 5000 + "ns", 1),
])
def test_go_durations_are_read_as_go_reads_them(text: str, ns: int) -> None:
    assert go_duration_ns(text) == ns


@pytest.mark.parametrize("text", ["", "1", "1d", "s", "1s2", "1 s", "1.s.", "--1s", "1sx",
                                  "2562047h47m16.854775808s", "1" * 20 + "ns", "9" * 5000 + "h"])
def test_what_go_does_not_read_is_no_duration(text: str) -> None:
    assert go_duration_ns(text) is None


# --- violations -------------------------------------------------------------------------------


def test_neither_to_nor_from() -> None:
    assert _violations(_mt()) == [
        "spec: at least one of 'from', 'to' or 'rules' has to be defined"]


def test_a_default_that_sets_nothing() -> None:
    assert _violations(_mt(({"kind": "Mesh"}, {}))) == [
        "spec.to[0].default: at least one timeout should be configured"]


def test_an_empty_http_section() -> None:
    assert _violations(_mt(({"kind": "Mesh"}, {"http": {}}))) == [
        "spec.to[0].default.http: at least one timeout in this section should be configured"]


def test_durations_name_their_field_and_value() -> None:
    doc = _mt(({"kind": "Mesh"}, {"connectionTimeout": "0s", "idleTimeout": "-1s",
                                  "http": {"requestTimeout": "15", "maxStreamDuration": "1d"}}))

    assert _violations(doc) == [
        "spec.to[0].default.connectionTimeout: '0s' must be greater than 0s",
        "spec.to[0].default.idleTimeout: '-1s' must not be negative",
        "spec.to[0].default.http.requestTimeout: '15' is not a duration (Go's format: a number "
        "and a unit of ns, us, ms, s, m, h, e.g. 500ms, 15s, 1h30m)",
        "spec.to[0].default.http.maxStreamDuration: '1d' is not a duration (Go's format: a "
        "number and a unit of ns, us, ms, s, m, h, e.g. 500ms, 15s, 1h30m)",
    ]


def test_to_names_mesh_or_a_meshservice_only() -> None:
    doc = _mt(({"kind": "MeshSubset", "tags": {"a": "b"}}, {"idleTimeout": "1s"}),
              ({"kind": "MeshService"}, {"idleTimeout": "1s"}))

    assert _violations(doc) == [
        "spec.to[0].targetRef.kind: 'MeshSubset' is not one of Mesh, MeshService",
        "spec.to[1].targetRef.name: is required with kind MeshService",
    ]


def test_the_top_level_and_from_kinds() -> None:
    doc = _mt(({"kind": "Mesh"}, {"idleTimeout": "1s"}),
              target={"kind": "MeshServiceSubset", "name": "a"},
              sources=[{"targetRef": {"kind": "MeshService", "name": "web"},
                        "default": {"idleTimeout": "1s"}}])

    assert _violations(doc) == [
        "spec.targetRef.kind: 'MeshServiceSubset' is not one of Mesh, MeshSubset, MeshService, "
        "Dataplane",
        "spec.from[0].targetRef.kind: 'MeshService' is not one of Mesh",
    ]


def test_a_duration_that_is_no_string_is_a_shape_error() -> None:
    violations = _violations(_mt(({"kind": "Mesh"}, {"idleTimeout": 5})))

    assert len(violations) == 1
    assert "spec.to[0].default.idleTimeout" in violations[0]
