"""Generated-MeshService edge cases, control-plane labels and health, in the fold."""

from __future__ import annotations

from projections.state import ProjectionState
from projections.views import DataplaneRow
from tests.projections._histories import (
    ZONE,
    History,
    dataplane,
    endpoints_row,
    fold,
    fold_all,
    inbound,
    meshservice,
    meshservice_row,
    ms_port,
    persisted,
)


def _dp_row(state: ProjectionState, name: str) -> DataplaneRow:
    row = persisted(state, "dataplane", f"default/{name}")
    assert isinstance(row, DataplaneRow)
    return row


# --- service names that are not DNS-1035 labels ---------------------------------------------


def test_a_service_name_that_is_not_a_dns1035_label_is_a_dataplane_condition() -> None:
    h = History().mesh("default")
    h.register(dataplane("default", "a", "10.0.0.1", inbound(80, "ok"), inbound(81, "Bad_Name")))
    state = fold_all(h.events)
    [condition] = _dp_row(state, "a").conditions
    assert (condition.type, condition.status, condition.reason) == (
        "MeshServiceGenerated", "False", "InvalidServiceName")
    assert condition.message.startswith(
        "networking.inbound[1].tags[\"kuma.io/service\"]: 'Bad_Name' is not a DNS-1035 label")
    assert meshservice_row(state, "default", "Bad_Name") is None
    assert meshservice_row(state, "default", "ok") is not None


def test_the_condition_goes_when_the_dataplane_is_fixed() -> None:
    h = History().mesh("default")
    h.register(dataplane("default", "a", "10.0.0.1", inbound(80, "web.v2")))
    h.register(dataplane("default", "a", "10.0.0.1", inbound(80, "web-v2")))
    state = fold_all(h.events)
    assert _dp_row(state, "a").conditions == []
    assert meshservice_row(state, "default", "web-v2") is not None


# --- port conflicts -------------------------------------------------------------------------


def test_a_port_conflict_names_every_disagreeing_dataplane_and_no_other() -> None:
    h = History().mesh("default")
    h.register(dataplane("default", "first", "10.0.0.1", inbound(80, "web")))
    h.register(dataplane("default", "agrees", "10.0.0.2", inbound(80, "web")))
    h.register(dataplane("default", "odd-1", "10.0.0.3", inbound(81, "web")))
    h.register(dataplane("default", "odd-2", "10.0.0.4", inbound(80, "web"), inbound(82, "web")))
    row = meshservice_row(fold_all(h.events), "default", "web")
    assert row is not None
    [conflict] = [c for c in row.status.conditions if c.reason == "PortConflict"]
    assert conflict.message.startswith("Dataplanes odd-1, odd-2 have other ports than the "
                                       "MeshService, which has those of Dataplane first (")
    assert "agrees" not in conflict.message


# --- control-plane labels (reference/kuma-behaviour.md) -------------------------------------


def test_dataplanes_get_kumas_labels_and_a_display_name() -> None:
    h = History().mesh("default")
    h.register(dataplane("default", "a", "10.0.0.1", inbound(80, "web")))
    labels = _dp_row(fold_all(h.events), "a").dataplane.labels
    assert {k: v for k, v in labels.items() if k.startswith("kuma.io/")} == {
        "kuma.io/mesh": "default", "kuma.io/origin": "zone", "kuma.io/zone": ZONE,
        "kuma.io/env": "universal", "kuma.io/proxy-type": "sidecar",
        "kuma.io/display-name": "a"}


def test_user_meshservices_get_kumas_labels_but_no_managed_by() -> None:
    h = History().mesh("default")
    h.apply(meshservice("default", "shop", ms_port(80), labels={"team": "a"}))
    row = meshservice_row(fold_all(h.events), "default", "shop")
    assert row is not None
    assert row.labels == {"team": "a", "kuma.io/mesh": "default", "kuma.io/origin": "zone",
                          "kuma.io/zone": ZONE, "kuma.io/env": "universal",
                          "kuma.io/display-name": "shop"}


def test_a_display_name_given_by_the_user_wins() -> None:
    h = History().mesh("default")
    h.apply(meshservice("default", "shop", ms_port(80), labels={"kuma.io/display-name": "store"}))
    row = meshservice_row(fold_all(h.events), "default", "shop")
    assert row is not None and row.labels["kuma.io/display-name"] == "store"


# --- health ---------------------------------------------------------------------------------


def _state_and_endpoints(state: ProjectionState) -> tuple[str, list[str]]:
    row = meshservice_row(state, "default", "web")
    endpoints = endpoints_row(state, "default", "web")
    assert row is not None and endpoints is not None
    return row.status.state, [e.dataplane for pe in endpoints.ports for e in pe.endpoints]


def test_a_reapply_with_health_down_takes_the_endpoint_out_at_once() -> None:
    h = History().mesh("default")
    h.register(dataplane("default", "a", "10.0.0.1", inbound(80, "web")))
    h.register(dataplane("default", "b", "10.0.0.2", inbound(80, "web")))
    h.register(dataplane("default", "a", "10.0.0.1", inbound(80, "web", ready=False)))
    assert _state_and_endpoints(fold([[e] for e in h.events])) == ("Available", ["b"])
    h.register(dataplane("default", "b", "10.0.0.2", inbound(80, "web", state="NotReady")))
    assert _state_and_endpoints(fold([[e] for e in h.events])) == ("Unavailable", [])
    h.register(dataplane("default", "a", "10.0.0.1", inbound(80, "web", ready=True)))
    assert _state_and_endpoints(fold([[e] for e in h.events])) == ("Available", ["a"])
