"""The fold: events in, read-model rows out (DESIGN.md invariants 4 and 6).

Every test drives the fold the way `Projector.run` does (fold a batch, derive, take the
changes) and asserts on the persisted rows, i.e. what the store and the gateways get.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events import AnyEvent, Dataplane, DataplaneDeregistered
from projections.state import ProjectionState
from tests.projections._histories import (
    HINTS,
    SERVICE_TAG,
    ZONE,
    History,
    dataplane,
    endpoints_row,
    flappy_histories,
    fold,
    fold_all,
    histories,
    inbound,
    meshservice,
    meshservice_row,
    ms_port,
    random_sizes,
    realistic_history,
    restart,
    rows,
    split,
    vip,
    vip_rows,
)

EVENTS = realistic_history()
HOUR = 3_600_000


def _dp(name: str, address: str, *inbounds: dict[str, Any], mesh: str = "default",
        advertised: str | None = None) -> Dataplane:
    return dataplane(mesh, name, address, *inbounds, advertised=advertised)


def _vips_by_service(state: ProjectionState) -> dict[str, str | None]:
    """The VIP in the status of every live MeshService, by `mesh/name`."""
    return {key: vip(state, *key.split("/")) for c, key, _ in rows(state) if c == "meshservice"}


def _live_vips_by_mesh(events: list[AnyEvent]) -> dict[str, list[str]]:
    """The VIPs of the live MeshServices, per mesh (invariant 6 is about one mesh)."""
    out: dict[str, list[str]] = {}
    for key, ip in _vips_by_service(fold_all(events)).items():
        if ip is not None:
            out.setdefault(key.split("/")[0], []).append(ip)
    return out


# --- batch invariance (invariant 4) ---------------------------------------------------------


def test_realistic_history_reaches_the_cases_the_invariance_tests_rely_on() -> None:
    state = fold_all(EVENTS)
    services = [meshservice_row(state, *key.split("/"))
                for c, key, _ in rows(state) if c == "meshservice"]
    networks = {str(ipaddress.ip_network(f"{ip}/16", strict=False))
                for ip in vip_rows(state).values()}
    reasons = {c.reason for row in services if row is not None
               for g in row.status.hostname_generators for c in g.conditions}
    assert {row.origin for row in services if row is not None} == {"user", "generated"}
    # MeshMultiZoneServices: 243/8 by default, then a CIDR of the log's
    assert networks == {"241.0.0.0/16", "10.96.0.0/16", "10.97.0.0/16", "243.0.0.0/16",
                        "10.98.0.0/16"}
    assert reasons == {"Generated", "Collision", "TemplateError"}
    generators = {g.hostname_generator_ref.core_name for row in services if row is not None
                  for g in row.status.hostname_generators}
    assert generators == {"by-team", "flat", "local-universal-mesh-service"}
    expired = [e for e in EVENTS if isinstance(e, DataplaneDeregistered)
               and meshservice_row(state, e.mesh, e.name.rsplit("-", 1)[0]) is None]
    assert expired  # some generated MeshServices outlived their grace period
    assert len(EVENTS) > 50


def test_one_batch_and_one_event_per_batch_give_identical_rows() -> None:
    assert rows(fold([[e] for e in EVENTS])) == rows(fold_all(EVENTS))


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
def test_random_batch_sizes_give_identical_rows(seed: int) -> None:
    batches = split(EVENTS, random_sizes(len(EVENTS), seed))
    assert rows(fold(batches)) == rows(fold_all(EVENTS))


@pytest.mark.parametrize("cut", [1, 7, 20, 31, 40, 50, 52])
def test_restart_from_persisted_rows_gives_identical_rows(cut: int) -> None:
    before = fold(split(EVENTS[:cut], random_sizes(cut, seed=cut)))
    after = fold(split(EVENTS[cut:], random_sizes(len(EVENTS) - cut, seed=cut + 1)),
                 state=restart(before), first_seq=cut + 1)
    assert rows(after) == rows(fold_all(EVENTS))


@settings(max_examples=60, deadline=None)
@given(st.one_of(histories(), flappy_histories()), st.data())
def test_random_histories_give_identical_rows_whatever_the_batches_and_restarts(
    events: list[AnyEvent], data: st.DataObject
) -> None:
    """Also with health checks flapping between the other events (most of a busy log): a
    flip marks what a batch derives once, from the rows at its end, and one a later event
    replaces is folded as its time only (projections.readiness), whatever its writer says
    of it (the rows expected are those of folding every event in full)."""
    expected = rows(fold_all(events, hints="none"))
    hints = data.draw(st.sampled_from(HINTS), label="readiness hints")
    sizes = data.draw(st.lists(st.integers(1, 6), max_size=len(events)), label="batch sizes")
    restarts = data.draw(st.sets(st.integers(0, len(events))), label="restart before batch")
    state = None
    seq = 1
    for i, batch in enumerate(split(events, sizes)):
        if state is not None and i in restarts:
            state = restart(state)
        state = fold([batch], state=state, first_seq=seq, hints=hints)
        seq += len(batch)
    assert state is not None
    assert rows(state) == expected


# --- VIPs (invariant 6) ---------------------------------------------------------------------


def test_replaying_a_history_gives_every_service_the_same_vip() -> None:
    first = _vips_by_service(fold_all(EVENTS))
    replayed = _vips_by_service(fold(split(EVENTS, random_sizes(len(EVENTS), seed=9))))
    assert None not in first.values()
    assert replayed == first


def test_user_meshservice_keeps_its_vip_across_delete_and_recreate() -> None:
    h = History().mesh("default")
    h.apply(meshservice("default", "shop", ms_port(80)))
    first = vip(fold_all(h.events), "default", "shop")
    h.delete("default", "shop")
    h.apply(meshservice("default", "other", ms_port(80)))
    h.apply(meshservice("default", "shop", ms_port(81)))
    assert first is not None
    assert vip(fold_all(h.events), "default", "shop") == first
    assert vip(fold_all(h.events), "default", "other") != first


def test_generated_meshservice_keeps_its_vip_when_its_dataplanes_leave_and_return() -> None:
    h = History().mesh("default")
    h.register(_dp("web-1", "10.0.0.1", inbound(80, "web")))
    first = vip(fold_all(h.events), "default", "web")
    h.deregister("default", "web-1")
    h.wait(HOUR).register(_dp("api-1", "10.0.0.2", inbound(80, "api")))
    gone = meshservice_row(fold_all(h.events), "default", "web")
    h.register(_dp("web-2", "10.0.0.3", inbound(8080, "web")))
    assert first is not None
    assert gone is None
    assert vip(fold_all(h.events), "default", "web") == first


def test_no_two_live_meshservices_share_a_vip() -> None:
    h = History().mesh("default").mesh("other")
    for i in range(4):
        h.register(_dp(f"s{i}-1", f"10.0.0.{i + 1}", inbound(80, f"s{i}")))
        h.register(_dp(f"s{i}-1", f"10.0.0.{i + 1}", inbound(80, f"s{i}"), mesh="other"))
    h.ipam("241.0.0.0/28")  # overlaps the addresses already handed out from 241/8
    for i in range(4, 6):
        h.apply(meshservice("default", f"s{i}", ms_port(80)))
    h.ipam("241.0.0.0/8")  # back to the start of the original CIDR
    h.apply(meshservice("default", "late", ms_port(80)))
    h.deregister("default", "s0-1")
    h.register(_dp("s0-1", "10.0.0.1", inbound(80, "s0")))
    live = _live_vips_by_mesh(h.events)
    assert sorted(len(ips) for ips in live.values()) == [4, 7]
    assert all(len(ips) == len(set(ips)) for ips in live.values())


@settings(max_examples=60, deadline=None)
@given(histories())
def test_no_two_live_meshservices_share_a_vip_in_random_histories(
    events: list[AnyEvent],
) -> None:
    for ips in _live_vips_by_mesh(events).values():
        assert len(ips) == len(set(ips))


def test_cidr_change_keeps_existing_vips_and_serves_new_services_from_the_new_cidr() -> None:
    h = History().mesh("default")
    h.register(_dp("web-1", "10.0.0.1", inbound(80, "web")))
    h.apply(meshservice("default", "shop", ms_port(80)))
    before = {name: vip(fold_all(h.events), "default", name) for name in ("web", "shop")}
    h.ipam("10.96.0.0/24")
    h.register(_dp("web-1", "10.0.0.1", inbound(8080, "web")))  # a spec change of web
    h.register(_dp("api-1", "10.0.0.2", inbound(80, "api")))
    h.delete("default", "shop")
    h.apply(meshservice("default", "shop", ms_port(80)))
    state = fold_all(h.events)
    assert {name: vip(state, "default", name) for name in ("web", "shop")} == before
    assert vip(state, "default", "api") == "10.96.0.1"


def test_exhausted_cidr_gives_vip_allocated_false_and_no_crash() -> None:
    h = History().mesh("default").ipam("10.96.0.0/30")  # two usable addresses
    for name in ("aa", "bb", "cc"):
        h.register(_dp(f"{name}-1", "10.0.0.1", inbound(80, name)))
    h.apply(meshservice("default", "dd", ms_port(80)))
    state = fold_all(h.events)
    assert [vip(state, "default", n) for n in ("aa", "bb")] == ["10.96.0.1", "10.96.0.2"]
    for name in ("cc", "dd"):
        row = meshservice_row(state, "default", name)
        assert row is not None
        assert row.status.vips == []
        assert [(c.type, c.status, c.reason) for c in row.status.conditions] == [
            ("VIPAllocated", "False", "Exhausted")]


def test_exhausted_meshservice_gets_a_vip_once_the_cidr_is_widened() -> None:
    h = History().mesh("default").ipam("10.96.0.0/30")
    for name in ("aa", "bb", "cc"):
        h.register(_dp(f"{name}-1", "10.0.0.1", inbound(80, name)))
    h.ipam("10.97.0.0/24")
    row = meshservice_row(fold_all(h.events), "default", "cc")
    assert row is not None
    assert [v.ip for v in row.status.vips] == ["10.97.0.1"]
    assert row.status.conditions == []


# --- MeshService generation -----------------------------------------------------------------


def test_one_meshservice_per_distinct_service_tag() -> None:
    h = History().mesh("default")
    h.register(_dp("a", "10.0.0.1", inbound(80, "web"), inbound(81, "api")))
    h.register(_dp("b", "10.0.0.2", inbound(80, "web")))
    h.register(_dp("c", "10.0.0.3", inbound(90, "db"), mesh="other"))
    state = fold_all(h.events)
    names = [key for c, key, _ in rows(state) if c == "meshservice"]
    assert names == ["default/api", "default/web", "other/db"]


@pytest.mark.parametrize("service", ["Not_A_Label", "9lives", "a" * 64, "web.v2"])
def test_service_tag_that_is_not_a_dns1035_label_gets_no_meshservice(service: str) -> None:
    h = History().mesh("default")
    h.register(_dp("a", "10.0.0.1", inbound(80, service), inbound(81, "ok")))
    state = fold_all(h.events)
    assert [key for c, key, _ in rows(state) if c == "meshservice"] == ["default/ok"]


def test_generated_meshservice_has_the_service_selector_and_generator_labels() -> None:
    state = fold_all(History().mesh("default")
                     .register(_dp("a", "10.0.0.1", inbound(80, "web"))).events)
    row = meshservice_row(state, "default", "web")
    assert row is not None
    assert row.origin == "generated"
    assert row.spec.selector.dataplane_tags == {SERVICE_TAG: "web"}
    assert row.labels == {
        "kuma.io/mesh": "default", "kuma.io/display-name": "web",
        "kuma.io/managed-by": "meshservice-generator", "kuma.io/env": "universal",
        "kuma.io/zone": ZONE, "kuma.io/origin": "zone"}


def test_generated_ports_follow_inbounds_with_names_and_protocols() -> None:
    h = History().mesh("default")
    h.register(_dp("a", "10.0.0.1",
                   inbound(9090, "web", name="grpc-api", protocol="grpc",
                           tags={"kuma.io/protocol": "http"}),
                   inbound(80, "web", tags={"kuma.io/protocol": "http"}),
                   inbound(5000, "other"),
                   inbound(443, "web", name="tls", protocol="tls"),
                   inbound(7000, "web")))
    row = meshservice_row(fold_all(h.events), "default", "web")
    assert row is not None
    assert [(p.port, p.target_port, p.name, p.app_protocol) for p in row.spec.ports] == [
        (9090, 9090, "grpc-api", "grpc"),
        (80, 80, "80", "http"),
        (443, 443, "tls", "tls"),
        (7000, 7000, "7000", "tcp"),
    ]


def _ports(state: ProjectionState, name: str = "web") -> list[int]:
    row = meshservice_row(state, "default", name)
    assert row is not None
    return [p.port for p in row.spec.ports]


def test_port_conflict_keeps_the_existing_spec_while_a_dataplane_has_it() -> None:
    h = History().mesh("default")
    h.register(_dp("first", "10.0.0.1", inbound(80, "web")))
    h.register(_dp("second", "10.0.0.2", inbound(80, "web")))
    h.register(_dp("third", "10.0.0.3", inbound(80, "web"), inbound(81, "web")))
    h.register(_dp("first", "10.0.0.1", inbound(8080, "web")))  # the oldest moves away
    assert _ports(fold_all(h.events)) == [80]


def test_port_conflict_falls_back_to_the_oldest_dataplane() -> None:
    h = History().mesh("default")
    h.register(_dp("zz-oldest", "10.0.0.1", inbound(80, "web")))
    h.register(_dp("aa-newer", "10.0.0.2", inbound(80, "web"), inbound(81, "web")))
    h.register(_dp("mm-newest", "10.0.0.3", inbound(90, "web")))
    h.register(_dp("zz-oldest", "10.0.0.1", inbound(8080, "web")))  # re-registered: still oldest
    assert _ports(fold_all(h.events)) == [8080]
    h.deregister("default", "zz-oldest")
    assert _ports(fold_all(h.events)) == [80, 81]


def test_port_conflict_is_a_status_condition_naming_the_conflicting_dataplane() -> None:
    h = History().mesh("default")
    h.register(_dp("web-old", "10.0.0.1", inbound(80, "web")))
    h.register(_dp("web-odd", "10.0.0.2", inbound(81, "web")))
    row = meshservice_row(fold_all(h.events), "default", "web")
    assert row is not None
    assert any("web-odd" in c.message for c in row.status.conditions)


def test_generator_never_overwrites_a_user_meshservice() -> None:
    h = History().mesh("default")
    user = meshservice("default", "web", ms_port(80, target="http"), labels={"team": "a"})
    h.apply(user)
    h.register(_dp("a", "10.0.0.1", inbound(8080, "web", name="http")))
    h.register(_dp("b", "10.0.0.2", inbound(9090, "web")))
    h.deregister("default", "a")
    h.deregister("default", "b")
    row = meshservice_row(fold_all(h.events), "default", "web")
    assert row is not None
    assert (row.origin, row.spec, row.labels.get("team")) == ("user", user.spec, "a")
    assert "kuma.io/managed-by" not in row.labels


def test_generator_takes_over_when_the_user_meshservice_is_deleted() -> None:
    h = History().mesh("default")
    h.register(_dp("a", "10.0.0.1", inbound(8080, "web", name="http")))
    h.apply(meshservice("default", "web", ms_port(80, target="http")))
    h.delete("default", "web")
    row = meshservice_row(fold_all(h.events), "default", "web")
    assert row is not None
    assert row.origin == "generated"
    assert [(p.port, p.name) for p in row.spec.ports] == [(8080, "http")]


def test_deleted_user_meshservice_without_dataplanes_is_gone() -> None:
    h = History().mesh("default")
    h.apply(meshservice("default", "web", ms_port(80)))
    h.register(_dp("a", "10.0.0.1", inbound(80, "api")))
    h.delete("default", "web")
    state = fold_all(h.events)
    assert meshservice_row(state, "default", "web") is None
    assert endpoints_row(state, "default", "web") is None


def test_generated_meshservice_goes_with_its_last_dataplane_once_grace_is_zero() -> None:
    h = History().mesh("default").grace(0)
    h.register(_dp("a", "10.0.0.1", inbound(80, "web")))
    h.register(_dp("b", "10.0.0.2", inbound(80, "web")))
    h.deregister("default", "a")
    assert meshservice_row(fold_all(h.events), "default", "web") is not None
    h.register(_dp("b", "10.0.0.2", inbound(80, "api")))  # b now serves another service
    state = fold_all(h.events)
    assert meshservice_row(state, "default", "web") is None
    assert endpoints_row(state, "default", "web") is None


# --- endpoints and status -------------------------------------------------------------------


PortEndpoints = list[tuple[int, list[tuple[str, int, str]]]]
"""Per MeshService port: (port, [(address, port, dataplane), ...])."""


def _endpoints(state: ProjectionState, name: str = "web") -> PortEndpoints:
    row = endpoints_row(state, "default", name)
    assert row is not None
    return [(pe.port.port, [(e.address, e.port, e.dataplane) for e in pe.endpoints])
            for pe in row.ports]


def test_endpoints_hold_only_healthy_inbounds() -> None:
    h = History().mesh("default")
    h.register(_dp("ready-absent", "10.0.0.1", inbound(80, "web")))
    h.register(_dp("ready-true", "10.0.0.2", inbound(80, "web", ready=True, state="Ready")))
    h.register(_dp("ready-false", "10.0.0.3", inbound(80, "web", ready=False)))
    h.register(_dp("not-ready", "10.0.0.4", inbound(80, "web", state="NotReady")))
    h.register(_dp("ignored", "10.0.0.5", inbound(80, "web", state="Ignored")))
    assert _endpoints(fold_all(h.events)) == [
        (80, [("10.0.0.1", 80, "ready-absent"), ("10.0.0.2", 80, "ready-true")])]


def test_endpoints_follow_dataplane_changes_one_event_per_batch() -> None:
    h = History().mesh("default")
    h.apply(meshservice("default", "shop", ms_port(80), selector={"app": "shop"}))
    h.register(_dp("a", "10.0.0.1", inbound(80, "web", tags={"app": "shop"})))
    h.register(_dp("b", "10.0.0.2", inbound(80, "api", tags={"app": "shop"}, ready=False)))
    h.register(_dp("a", "10.0.0.1", inbound(80, "web", tags={"app": "shop"}, ready=False)))
    h.register(_dp("b", "10.0.0.2", inbound(80, "api", tags={"app": "shop"})))
    h.register(_dp("c", "10.0.0.3", inbound(80, "api", tags={"app": "shop"})))
    h.deregister("default", "c")
    assert _endpoints(fold([[e] for e in h.events]), "shop") == [(80, [("10.0.0.2", 80, "b")])]


def test_endpoints_match_target_port_by_number_and_by_inbound_name() -> None:
    h = History().mesh("default")
    h.apply(meshservice("default", "web", ms_port(80, target="http"), ms_port(81, target=9090),
                        ms_port(8080), selector={"app": "web"}))
    h.register(_dp("a", "10.0.0.1", inbound(8080, "web-a", name="http", tags={"app": "web"}),
                   inbound(9090, "web-a", tags={"app": "web"})))
    h.register(_dp("b", "10.0.0.2", inbound(7070, "web-b", name="http", tags={"app": "web"})))
    h.register(_dp("c", "10.0.0.3", inbound(9090, "web-c", name="http")))  # not selected
    assert _endpoints(fold_all(h.events)) == [
        (80, [("10.0.0.1", 8080, "a"), ("10.0.0.2", 7070, "b")]),
        (81, [("10.0.0.1", 9090, "a")]),
        (8080, [("10.0.0.1", 8080, "a")]),
    ]


def test_endpoint_address_is_advertised_else_inbound_else_networking_address() -> None:
    h = History().mesh("default")
    h.register(_dp("adv", "10.0.0.1", inbound(80, "web", address="10.1.0.1"),
                   advertised="192.168.0.1"))
    h.register(_dp("inb", "10.0.0.2", inbound(80, "web", address="10.1.0.2")))
    h.register(_dp("net", "10.0.0.3", inbound(80, "web")))
    assert _endpoints(fold_all(h.events)) == [
        (80, [("10.0.0.3", 80, "net"), ("10.1.0.2", 80, "inb"), ("192.168.0.1", 80, "adv")])]


def test_endpoints_are_sorted_by_address_port_and_dataplane() -> None:
    h = History().mesh("default")
    h.apply(meshservice("default", "web", ms_port(80, target="http")))
    for name, address, port in [("d", "10.0.0.9", 80), ("c", "10.0.0.10", 81),
                                ("b", "10.0.0.1", 82), ("a", "10.0.0.1", 82)]:
        h.register(_dp(name, "10.9.9.9", inbound(port, "web", name="http"),
                       advertised=address))
    assert _endpoints(fold_all(h.events)) == [(80, [
        ("10.0.0.1", 82, "a"), ("10.0.0.1", 82, "b"), ("10.0.0.10", 81, "c"),
        ("10.0.0.9", 80, "d")])]


def test_status_counts_dataplane_proxies_and_is_available_with_a_healthy_one() -> None:
    h = History().mesh("default")
    h.register(_dp("a", "10.0.0.1", inbound(80, "web")))
    h.register(_dp("b", "10.0.0.2", inbound(80, "web", ready=False)))
    h.register(_dp("c", "10.0.0.3", inbound(80, "web", state="NotReady")))
    row = meshservice_row(fold_all(h.events), "default", "web")
    assert row is not None
    proxies = row.status.dataplane_proxies
    assert (proxies.total, proxies.healthy, row.status.state) == (3, 1, "Available")


def test_status_is_unavailable_without_a_healthy_dataplane() -> None:
    h = History().mesh("default")
    h.register(_dp("a", "10.0.0.1", inbound(80, "web")))
    h.register(_dp("b", "10.0.0.2", inbound(80, "web", ready=False)))
    h.register(_dp("a", "10.0.0.1", inbound(80, "web", state="NotReady")))
    row = meshservice_row(fold_all(h.events), "default", "web")
    assert row is not None
    proxies = row.status.dataplane_proxies
    assert (proxies.total, proxies.healthy, row.status.state) == (2, 0, "Unavailable")


# --- hostnames ------------------------------------------------------------------------------


def _hostname_status(
    state: ProjectionState, name: str
) -> tuple[list[str], list[tuple[str, str, str]]]:
    row = meshservice_row(state, "default", name)
    assert row is not None
    [generator] = row.status.hostname_generators
    assert generator.hostname_generator_ref.core_name == "local-universal-mesh-service"
    return ([a.hostname for a in row.status.addresses],
            [(c.type, c.status, c.reason) for c in generator.conditions])


def test_default_hostname_is_display_name_dot_svc_mesh_local() -> None:
    h = History().mesh("default")
    h.register(_dp("a", "10.0.0.1", inbound(80, "web")))
    h.apply(meshservice("default", "shop", ms_port(80), labels={"kuma.io/display-name": "store"}))
    h.apply(meshservice("default", "plain", ms_port(80)))
    state = fold_all(h.events)
    generated = ("Generated", "True", "Generated")
    assert _hostname_status(state, "web") == (["web.svc.mesh.local"], [generated])
    assert _hostname_status(state, "shop") == (["store.svc.mesh.local"], [generated])
    assert _hostname_status(state, "plain") == (["plain.svc.mesh.local"], [generated])


def test_hostname_collision_marks_the_later_created_meshservice() -> None:
    h = History().mesh("default")
    h.apply(meshservice("default", "zeta", ms_port(80), labels={"kuma.io/display-name": "shop"}))
    h.apply(meshservice("default", "alpha", ms_port(80), labels={"kuma.io/display-name": "shop"}))
    h.apply(meshservice("default", "zeta", ms_port(81), labels={"kuma.io/display-name": "shop"}))
    state = fold([[e] for e in h.events])
    assert _hostname_status(state, "zeta") == (
        ["shop.svc.mesh.local"], [("Generated", "True", "Generated")])
    assert _hostname_status(state, "alpha") == ([], [("Generated", "False", "Collision")])


def test_hostname_passes_to_the_colliding_meshservice_when_the_owner_goes() -> None:
    h = History().mesh("default")
    h.register(_dp("a", "10.0.0.1", inbound(80, "shop")))
    h.apply(meshservice("default", "alpha", ms_port(80), labels={"kuma.io/display-name": "shop"}))
    h.deregister("default", "a").wait(HOUR).tick()
    assert _hostname_status(fold([[e] for e in h.events]), "alpha") == (
        ["shop.svc.mesh.local"], [("Generated", "True", "Generated")])
