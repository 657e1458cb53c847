"""`inbound_rbac`: who is allowed to connect, asked of the RBAC it builds.

A small evaluator below applies an RBAC config to a client the way Envoy's network RBAC
filter does (`authenticated.principal_name` against each URI SAN of the verified client
certificate; and/or/not; ALLOW rules; DENY shadow rules), so the tests assert who gets in,
not the shape of the protos. A property test checks the builder against a reference model
written from the semantics in the module docstring, over every client certificate of a
small universe of SANs; one test has Envoy itself validate the configs.
"""

from __future__ import annotations

import itertools
import json
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from envoy.config.rbac.v3.rbac_pb2 import RBAC as RBACRules
from envoy.config.rbac.v3.rbac_pb2 import Principal
from envoy.extensions.filters.network.rbac.v3.rbac_pb2 import RBAC
from envoy.type.matcher.v3.string_pb2 import StringMatcher
from google.protobuf.json_format import MessageToDict
from hypothesis import given, settings
from hypothesis import strategies as st

from events import Dataplane, MeshTrafficPermission, decode_resource
from tests.harness import envoy_binary
from xds_gateway.resources.rbac import POLICY_NAME, RBAC_FILTER, inbound_rbac, rbac_filter

MESH = "default"
Client = frozenset[str] | None
"""The URI SANs of a client's verified certificate; None: a connection without one."""


def _dataplane() -> Dataplane:
    dp = decode_resource({
        "type": "Dataplane", "mesh": MESH, "name": "backend-1",
        "labels": {"app": "backend", "kuma.io/zone": "east"},
        "networking": {"address": "10.0.0.1", "inbound": [
            {"port": 8080, "tags": {"kuma.io/service": "backend", "version": "v1"}},
            {"port": 9090, "tags": {"kuma.io/service": "backend-admin"}}]}})
    assert isinstance(dp, Dataplane)
    return dp


DP = _dataplane()
MAIN, ADMIN = DP.networking.inbound
SELECTED_BY = ("backend",)
"""The MeshServices whose selector matches MAIN."""


def mtp(name: str, *sources: tuple[dict[str, Any], str], target: dict[str, Any] | None = None,
        mesh: str = MESH) -> MeshTrafficPermission:
    spec: dict[str, Any] = {"from": [{"targetRef": ref, "default": {"action": action}}
                                     for ref, action in sources]}
    if target is not None:
        spec["targetRef"] = target
    policy = decode_resource({"type": "MeshTrafficPermission", "mesh": mesh, "name": name,
                              "spec": spec})
    assert isinstance(policy, MeshTrafficPermission)
    return policy


def rbac(*policies: MeshTrafficPermission, inbound: Any = MAIN,
         meshservices: Iterable[str] = SELECTED_BY) -> RBAC:
    return inbound_rbac(MESH, DP, inbound, list(meshservices), policies, "inbound:10.0.0.1:8080.")


MESH_ALL: dict[str, Any] = {"kind": "Mesh"}


def svc(name: str) -> dict[str, Any]:
    return {"kind": "MeshService", "name": name}


def subset(**tags: str) -> dict[str, Any]:
    return {"kind": "MeshSubset", "tags": tags}


def svc_subset(name: str, **tags: str) -> dict[str, Any]:
    return {"kind": "MeshServiceSubset", "name": name, "tags": tags}


def cert(*services: str, mesh: str = MESH, **tags: str) -> frozenset[str]:
    """A workload certificate as the mesh CA issues it: a SPIFFE ID per service, a kuma://
    SAN per tag (the service tag included)."""
    return frozenset([*(f"spiffe://{mesh}/{s}" for s in services),
                      *(f"kuma://kuma.io/service/{s}" for s in services),
                      *(f"kuma://{k}/{v}" for k, v in tags.items())])


WEB, API, DB = cert("web"), cert("api"), cert("db")


# --- the evaluator ----------------------------------------------------------------------------


def _string(matcher: StringMatcher, value: str) -> bool:
    assert not matcher.ignore_case
    match matcher.WhichOneof("match_pattern"):
        case "exact":
            return value == str(matcher.exact)
        case "prefix":
            return value.startswith(matcher.prefix)
        case other:
            raise AssertionError(f"the evaluator does not know the {other} matcher")


def _principal(principal: Principal, client: Client) -> bool:
    match principal.WhichOneof("identifier"):
        case "any":
            return bool(principal.any)
        case "and_ids":
            return all(_principal(p, client) for p in principal.and_ids.ids)
        case "or_ids":
            return any(_principal(p, client) for p in principal.or_ids.ids)
        case "not_id":
            return not _principal(principal.not_id, client)
        case "authenticated":
            if client is None:
                return False  # no certificate: nothing authenticated
            if not principal.authenticated.HasField("principal_name"):
                return True
            return any(_string(principal.authenticated.principal_name, san) for san in client)
        case other:
            raise AssertionError(f"the evaluator does not know the {other} principal")


def _matched(rules: RBACRules, client: Client) -> bool:
    """Whether some policy of `rules` matches the connection of `client`."""
    for policy in rules.policies.values():
        assert [p.WhichOneof("rule") for p in policy.permissions] == ["any"]
        if any(_principal(p, client) for p in policy.principals):
            return True
    return False


def allowed(config: RBAC, client: Client) -> bool:
    assert config.HasField("rules"), "without rules Envoy allows everything"
    assert config.rules.action == RBACRules.Action.ALLOW
    return _matched(config.rules, client)


def shadow_denied(config: RBAC, client: Client) -> bool:
    if not config.HasField("shadow_rules"):
        return False
    assert config.shadow_rules.action == RBACRules.Action.DENY
    return _matched(config.shadow_rules, client)


def who(config: RBAC, **clients: Client) -> set[str]:
    """The names of the allowed `clients`."""
    return {name for name, client in clients.items() if allowed(config, client)}


# --- defaults -----------------------------------------------------------------------------------


def test_without_a_policy_nobody_is_allowed() -> None:
    config = rbac()

    assert who(config, web=WEB, api=API, plaintext=None) == set()
    assert dict(config.rules.policies) == {}  # an empty ALLOW map: Envoy denies all
    assert config.stat_prefix == "inbound:10.0.0.1:8080."


def test_a_mesh_allow_lets_in_any_workload_of_the_mesh_only() -> None:
    config = rbac(mtp("allow-all", (MESH_ALL, "Allow")))

    assert who(config, web=WEB, db=DB, tagged_only=frozenset({"kuma://version/v1"}),
               other_mesh=cert("web", mesh="other"), plaintext=None) == {"web", "db"}


def test_a_policy_that_only_denies_allows_nobody() -> None:
    config = rbac(mtp("deny-db", (svc("db"), "Deny")))

    assert who(config, web=WEB, db=DB) == set()
    assert dict(config.rules.policies) == {}


def test_a_later_deny_of_the_same_clients_leaves_an_empty_allow_map() -> None:
    config = rbac(mtp("b", (MESH_ALL, "Allow")), mtp("a", (MESH_ALL, "Deny")))

    assert dict(config.rules.policies) == {}


def test_an_allow_whose_clients_a_later_deny_all_covers_is_left_out() -> None:
    """A SPIFFE ID of the mesh is within the mesh's prefix: nothing of the Allow is left."""
    config = rbac(mtp("p", (subset(**{"kuma.io/service": "web"}), "Allow"),
                      ({"kind": "MeshSubset"}, "Deny")))

    assert dict(config.rules.policies) == {}


# --- precedence -----------------------------------------------------------------------------


def test_a_more_specific_deny_beats_a_mesh_allow() -> None:
    config = rbac(mtp("p", (MESH_ALL, "Allow"), (svc("db"), "Deny")))

    assert who(config, web=WEB, api=API, db=DB, web_and_db=cert("web", "db")) == {"web", "api"}


def test_a_more_specific_allow_beats_a_mesh_deny_whatever_the_order() -> None:
    allow_first = rbac(mtp("p", (svc("web"), "Allow"), (MESH_ALL, "Deny")))
    deny_first = rbac(mtp("p", (MESH_ALL, "Deny"), (svc("web"), "Allow")))

    assert who(allow_first, web=WEB, api=API) == who(deny_first, web=WEB, api=API) == {"web"}


def test_for_the_same_clients_the_later_entry_wins() -> None:
    """Of two policies of one top-level kind, the alphabetically first name's entries come
    later (Kuma's `SortByTargetRef`: names descending), as for every other kind."""
    in_one = rbac(mtp("p", (svc("web"), "Allow"), (svc("web"), "Deny")))
    deny_later = rbac(mtp("b", (svc("web"), "Allow")), mtp("a", (svc("web"), "Deny")))
    allow_later = rbac(mtp("b", (svc("web"), "Deny")), mtp("a", (svc("web"), "Allow")))

    assert who(in_one, web=WEB) == who(deny_later, web=WEB) == set()
    assert who(allow_later, web=WEB) == {"web"}


def test_a_dataplane_by_name_comes_later_than_one_by_labels_whatever_the_names() -> None:
    """Kuma 2.x's `CompareDataplaneKind`, as `policy_rules.top_rank` for the other kinds."""
    by_name = mtp("z-by-name", (svc("web"), "Allow"), target={"kind": "Dataplane",
                                                              "name": "backend-1"})
    by_labels = mtp("a-by-labels", (svc("web"), "Deny"),
                    target={"kind": "Dataplane", "labels": {"app": "backend"}})
    by_name_deny = mtp("z-by-name", (svc("web"), "Deny"), target={"kind": "Dataplane",
                                                                  "name": "backend-1"})
    by_labels_allow = mtp("a-by-labels", (svc("web"), "Allow"),
                          target={"kind": "Dataplane", "labels": {"app": "backend"}})

    assert who(rbac(by_name, by_labels), web=WEB) == {"web"}
    assert who(rbac(by_name_deny, by_labels_allow), web=WEB) == set()


def test_a_more_specific_top_level_target_comes_later_whatever_the_names() -> None:
    mesh_wide = mtp("z-mesh-wide", (svc("web"), "Deny"))
    for_backend = mtp("a-backend", (svc("web"), "Allow"), target={"kind": "Dataplane",
                                                                    "name": "backend-1"})
    for_service = mtp("b-service", (svc("web"), "Deny"), target=svc("backend"))

    assert who(rbac(mesh_wide, for_backend), web=WEB) == {"web"}
    assert who(rbac(for_backend, for_service), web=WEB) == {"web"}  # Dataplane > MeshService
    assert who(rbac(mesh_wide, for_service,
                    mtp("c", (svc("web"), "Allow"), target=subset(version="v1"))),
               web=WEB) == set()  # MeshService > MeshSubset


def test_rank_beats_order_between_different_targets() -> None:
    """A MeshSubset Deny after a MeshService Allow: the MeshService one is more specific."""
    config = rbac(mtp("p", (svc("web"), "Allow"), (subset(version="v1"), "Deny"),
                      (MESH_ALL, "Allow")))

    assert who(config, web_v1=cert("web", version="v1"), api_v1=cert("api", version="v1"),
               api_v2=cert("api", version="v2")) == {"web_v1", "api_v2"}


def test_between_overlapping_targets_of_one_rank_the_later_wins() -> None:
    both = cert("web", team="a", env="test")
    allow_then_deny = rbac(mtp("p", (subset(team="a"), "Allow"), (subset(env="test"), "Deny")))
    deny_then_allow = rbac(mtp("p", (subset(env="test"), "Deny"), (subset(team="a"), "Allow")))

    assert who(allow_then_deny, both=both, team_a=cert("web", team="a")) == {"team_a"}
    assert who(deny_then_allow, both=both, team_a=cert("web", team="a")) == {"both", "team_a"}


def test_a_service_subset_carves_out_of_its_service_and_back() -> None:
    deny_v2 = rbac(mtp("p", (svc("web"), "Allow"), (svc_subset("web", version="v2"), "Deny")))
    only_v2 = rbac(mtp("p", (svc_subset("web", version="v2"), "Allow"), (svc("web"), "Deny")))
    v1, v2 = cert("web", version="v1"), cert("web", version="v2")

    assert who(deny_v2, v1=v1, v2=v2, api_v2=cert("api", version="v2")) == {"v1"}
    assert who(only_v2, v1=v1, v2=v2, api_v2=cert("api", version="v2")) == {"v2"}


def test_three_levels_alternate() -> None:
    config = rbac(mtp("p", (MESH_ALL, "Allow"), (svc("web"), "Deny"),
                      (svc_subset("web", version="v1"), "Allow")))

    assert who(config, web_v1=cert("web", version="v1"), web_v2=cert("web", version="v2"),
               api=API) == {"web_v1", "api"}


# --- client groups ----------------------------------------------------------------------------


def test_a_mesh_subset_needs_every_tag() -> None:
    config = rbac(mtp("p", (subset(version="v1", team="a"), "Allow")))

    assert who(config, both=cert("web", version="v1", team="a"), one=cert("web", version="v1"),
               other=cert("web", version="v2", team="a")) == {"both"}


def test_a_mesh_subset_on_the_service_tag_matches_the_spiffe_id() -> None:
    config = rbac(mtp("p", (subset(**{"kuma.io/service": "web"}), "Allow")))

    assert who(config, web=WEB, spiffe_only=frozenset({"spiffe://default/web"}),
               api=API) == {"web", "spiffe_only"}


def test_a_client_of_several_services_is_in_each_services_group() -> None:
    config = rbac(mtp("p", (svc("web"), "Allow")))

    assert who(config, web_and_api=cert("api", "web"), api=API) == {"web_and_api"}


def test_a_mesh_subset_without_tags_is_the_whole_mesh() -> None:
    config = rbac(mtp("p", ({"kind": "MeshSubset"}, "Allow")))

    assert who(config, web=WEB, other_mesh=cert("web", mesh="other"), plaintext=None) == {"web"}


# --- shadow deny ------------------------------------------------------------------------------


def test_allow_with_shadow_deny_allows_and_counts_as_denied() -> None:
    config = rbac(mtp("p", (svc("web"), "AllowWithShadowDeny")))

    assert who(config, web=WEB, api=API) == {"web"}
    assert shadow_denied(config, WEB) and not shadow_denied(config, API)
    assert list(config.shadow_rules.policies) == [POLICY_NAME]


def test_shadow_deny_is_only_for_the_clients_it_decides_for() -> None:
    config = rbac(mtp("p", (MESH_ALL, "Allow"), (svc("web"), "AllowWithShadowDeny"),
                      (svc_subset("web", version="v1"), "Allow")))
    v1, v2 = cert("web", version="v1"), cert("web", version="v2")

    assert who(config, api=API, v1=v1, v2=v2) == {"api", "v1", "v2"}
    assert [shadow_denied(config, c) for c in (API, v1, v2)] == [False, False, True]


def test_without_shadow_deny_there_are_no_shadow_rules() -> None:
    assert not rbac(mtp("p", (MESH_ALL, "Allow"), (svc("db"), "Deny"))).HasField("shadow_rules")


def test_a_shadow_deny_under_a_deny_is_neither_allowed_nor_counted() -> None:
    config = rbac(mtp("p", (svc("web"), "AllowWithShadowDeny"), (svc("web"), "Deny")))

    assert not allowed(config, WEB) and not shadow_denied(config, WEB)
    assert not config.HasField("shadow_rules")


# --- which policies apply ---------------------------------------------------------------------


@pytest.mark.parametrize(("target", "applies"), [
    (MESH_ALL, True),
    (svc("backend"), True),
    (svc("backend-admin"), False),  # a MeshService that does not select this inbound
    ({"kind": "Dataplane", "name": "backend-1"}, True),
    ({"kind": "Dataplane", "name": "backend-2"}, False),
    ({"kind": "Dataplane", "labels": {"app": "backend", "kuma.io/zone": "east"}}, True),
    ({"kind": "Dataplane", "labels": {"app": "backend", "kuma.io/zone": "west"}}, False),
    (subset(version="v1"), True),
    (subset(version="v1", **{"kuma.io/service": "backend"}), True),
    (subset(version="v2"), False),
    ({"kind": "MeshSubset"}, True),
])
def test_the_top_level_target_selects_the_inbound(target: dict[str, Any], applies: bool) -> None:
    config = rbac(mtp("p", (svc("web"), "Allow"), target=target))

    assert allowed(config, WEB) is applies


def test_an_inbound_tag_selects_that_inbound_only() -> None:
    policy = mtp("p", (svc("web"), "Allow"), target=subset(version="v1"))

    assert allowed(rbac(policy, inbound=MAIN), WEB)
    assert not allowed(rbac(policy, inbound=ADMIN, meshservices=["backend-admin"]), WEB)


def test_policies_of_another_mesh_are_ignored() -> None:
    assert not allowed(rbac(mtp("p", (MESH_ALL, "Allow"), mesh="other")), WEB)


# --- determinism ------------------------------------------------------------------------------


def test_the_bytes_do_not_depend_on_the_order_policies_come_in() -> None:
    policies = [mtp("a", (MESH_ALL, "Allow"), (svc("db"), "Deny")),
                mtp("b", (subset(team="a", env="x"), "AllowWithShadowDeny")),
                mtp("c", (svc("db"), "Allow"), target=svc("backend"))]
    encodings = {rbac(*order).SerializeToString(deterministic=True)
                 for order in itertools.permutations(policies)}

    assert len(encodings) == 1


# --- against a reference model (hypothesis) -------------------------------------------------

_SOURCES = (MESH_ALL, {"kind": "MeshSubset"}, subset(version="v1"), subset(version="v2"),
            subset(team="a"), subset(version="v1", team="a"), subset(**{"kuma.io/service": "web"}),
            svc("web"), svc("api"), svc_subset("web", version="v1"), svc_subset("api", team="a"))
_TARGETS = (None, MESH_ALL, subset(version="v1"), subset(version="v2"), svc("backend"),
            svc("elsewhere"), {"kind": "Dataplane", "name": "backend-1"},
            {"kind": "Dataplane", "labels": {"app": "backend"}})
_UNIVERSE = ("spiffe://default/web", "spiffe://default/api", "kuma://version/v1",
             "kuma://version/v2", "kuma://team/a", "spiffe://other/web")
_CLIENTS: list[Client] = [None, *(frozenset(c) for n in range(len(_UNIVERSE) + 1)
                                  for c in itertools.combinations(_UNIVERSE, n))]
_TOP = {"Mesh": 0, "MeshSubset": 1, "MeshService": 2, "Dataplane": 3}
_FROM = {"Mesh": 0, "MeshSubset": 1, "MeshService": 2, "MeshServiceSubset": 3}


def _applies(target: dict[str, Any]) -> bool:
    match target["kind"]:
        case "Mesh":
            return True
        case "MeshSubset":
            return all(MAIN.tags.get(k) == v for k, v in target.get("tags", {}).items())
        case "MeshService":
            return bool(target["name"] in SELECTED_BY)
        case _:
            return bool(target.get("name") == DP.name or (
                "labels" in target and all(DP.labels.get(k) == v
                                           for k, v in target["labels"].items())))


def _in_group(source: dict[str, Any], client: frozenset[str]) -> bool:
    """The table of the module docstring, read literally."""
    spiffe = f"spiffe://{MESH}/"
    need = [spiffe + source["name"]] if "name" in source else []
    need += [spiffe + v if k == "kuma.io/service" else f"kuma://{k}/{v}"
             for k, v in source.get("tags", {}).items()]
    if not need:
        return any(san.startswith(spiffe) for san in client)
    return all(san in client for san in need)


def _reference(policies: list[tuple[str, dict[str, Any], list[tuple[dict[str, Any], str]]]],
               client: Client) -> tuple[bool, bool]:
    """(allowed, shadow-denied) by the module docstring's rules, from the raw documents."""
    by_name = sorted((p for p in policies if _applies(p[1])), key=lambda p: p[0],
                     reverse=True)
    applying = sorted(by_name, key=lambda p: (_TOP[p[1]["kind"]],
                                              p[1]["kind"] == "Dataplane" and "name" in p[1]))
    entries = [(_FROM[source["kind"]], position, source, action) for position, (source, action)
               in enumerate(e for p in applying for e in p[2])]
    deciders = [e for e in entries if client is not None and _in_group(e[2], client)]
    if not deciders:
        return False, False
    action = max(deciders, key=lambda e: (e[0], e[1]))[3]
    return action != "Deny", action == "AllowWithShadowDeny"


_policies = st.lists(
    st.tuples(st.sampled_from(_TARGETS),
              st.lists(st.tuples(st.sampled_from(_SOURCES),
                                 st.sampled_from(("Allow", "Deny", "AllowWithShadowDeny"))),
                       min_size=1, max_size=4)),
    min_size=0, max_size=4)


@settings(max_examples=150, deadline=None)
@given(_policies)
def test_every_client_is_decided_as_the_rules_say(
        drawn: list[tuple[dict[str, Any] | None, list[tuple[dict[str, Any], str]]]]) -> None:
    named = [(f"p{i}", target or MESH_ALL, sources) for i, (target, sources) in enumerate(drawn)]
    config = rbac(*(mtp(name, *sources, target=target) for name, target, sources in named))

    for client in _CLIENTS:
        assert (allowed(config, client), shadow_denied(config, client)) == _reference(
            named, client), f"client {sorted(client or ['<no certificate>'])}"


# --- Envoy accepts it ---------------------------------------------------------------------------


def _bootstrap(configs: list[RBAC]) -> dict[str, Any]:
    def listener(i: int, config: RBAC) -> dict[str, Any]:
        return {
            "name": f"inbound-{i}",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
            "filter_chains": [{"filters": [
                MessageToDict(rbac_filter(config)),
                {"name": "envoy.filters.network.tcp_proxy", "typed_config": {
                    "@type": "type.googleapis.com/"
                             "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                    "stat_prefix": "local", "cluster": "local"}}]}]}

    return {"static_resources": {
        "listeners": [listener(i, c) for i, c in enumerate(configs)],
        "clusters": [{"name": "local", "type": "STATIC", "load_assignment": {
            "cluster_name": "local", "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": {"socket_address": {"address": "127.0.0.1",
                                               "port_value": 8080}}}}]}]}}]}}


@pytest.mark.integration
def test_envoy_validates_the_rbac_filter(tmp_path: Path) -> None:
    configs = [
        rbac(),  # deny all
        rbac(mtp("p", (MESH_ALL, "Allow"), (svc("web"), "AllowWithShadowDeny"),
                 (svc_subset("web", version="v1"), "Deny"), (subset(team="a", env="x"), "Allow"))),
    ]
    assert rbac_filter(configs[1]).name == RBAC_FILTER
    path = tmp_path / "bootstrap.json"
    path.write_text(json.dumps(_bootstrap(configs)))

    result = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path)],
                            capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout + result.stderr
