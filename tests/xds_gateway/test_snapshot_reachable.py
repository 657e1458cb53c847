"""`reachable.py`: the Mesh's meshServices.mode and a Dataplane's reachableBackends decide
which MeshService ports a proxy gets. Rows come from the real fold."""

from __future__ import annotations

from typing import Any

import pytest

from events import Dataplane, Outbound, decode_resource
from tests.xds_gateway._ads import Projection, dataplane, event_for
from xds_gateway.resources.reachable import (
    Reachable,
    explicit_outbound_allowed,
    mesh_mode,
    reachable,
)
from xds_gateway.view import ProjectionView


def _view(*docs: dict[str, Any]) -> ProjectionView:
    view = ProjectionView()
    view.apply(Projection().fold(event_for(d, at=i + 1) for i, d in enumerate(docs)))
    return view


def _mesh(mode: str | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"type": "Mesh", "name": "default"}
    if mode is not None:
        doc["meshServices"] = {"mode": mode}
    return doc


BACKEND = {"type": "Dataplane", "mesh": "default", "name": "backend-1", "networking": {
    "address": "10.0.0.1", "inbound": [
        {"port": 8080, "name": "http", "tags": {"kuma.io/service": "backend"}},
        {"port": 9090, "name": "admin", "tags": {"kuma.io/service": "backend"}}]}}
DB = {"type": "MeshService", "mesh": "default", "name": "db", "labels": {"team": "data"},
      "spec": {"selector": {"dataplaneTags": {"kuma.io/service": "db"}},
               "ports": [{"port": 5432}]}}


def _web(refs: list[dict[str, Any]] | None) -> dict[str, Any]:
    doc = dataplane("web-1", "10.0.0.9", 7070, "web")
    if refs is not None:
        doc["networking"]["transparentProxying"] = {"reachableBackends": {"refs": refs}}
    return doc


def _reachable(mode: str | None, refs: list[dict[str, Any]] | None) -> Reachable:
    view = _view(_mesh(mode), BACKEND, DB, _web(refs))
    return reachable(mesh_mode(view.meshes.get("default")),
                     view.dataplanes[("default", "web-1")].dataplane,
                     view.meshservices["default"])


EVERYTHING = {"backend": (8080, 9090), "db": (5432,), "web": (7070,)}


def test_a_mesh_without_mesh_services_config_is_exclusive() -> None:
    assert mesh_mode(None) == "Exclusive"
    assert _view(_mesh()).meshes["default"].mesh.mesh_services is None
    assert mesh_mode(_view(_mesh()).meshes["default"]) == "Exclusive"
    assert mesh_mode(_view(_mesh("Disabled")).meshes["default"]) == "Disabled"


@pytest.mark.parametrize("mode", [None, "Exclusive", "Everywhere"])
def test_without_refs_every_service_is_reachable(mode: str | None) -> None:
    assert _reachable(mode, None) == EVERYTHING


def test_reachable_backends_mode_without_refs_reaches_nothing() -> None:
    assert _reachable("ReachableBackends", None) == {}


def test_disabled_reaches_nothing_even_with_refs() -> None:
    assert _reachable("Disabled", None) == {}
    assert _reachable("Disabled", [{"kind": "MeshService", "name": "db"}]) == {}


@pytest.mark.parametrize("mode", ["Exclusive", "ReachableBackends"])
def test_refs_by_name_limit_the_services(mode: str) -> None:
    assert _reachable(mode, [{"kind": "MeshService", "name": "backend"}]) == {
        "backend": (8080, 9090)}


def test_refs_by_labels_match_every_labelled_service() -> None:
    assert _reachable("Exclusive", [{"kind": "MeshService", "labels": {"team": "data"}}]) == {
        "db": (5432,)}
    # control-plane labels count too: every MeshService of the mesh
    assert _reachable("Exclusive", [
        {"kind": "MeshService", "labels": {"kuma.io/mesh": "default"}}]) == EVERYTHING


def test_ref_with_a_port_gives_only_that_port() -> None:
    assert _reachable("Exclusive", [{"kind": "MeshService", "name": "backend", "port": 9090}]
                      ) == {"backend": (9090,)}
    # ports of several refs to one service add up, in spec order
    assert _reachable("Exclusive", [
        {"kind": "MeshService", "name": "backend", "port": 9090},
        {"kind": "MeshService", "name": "backend", "port": 8080}]) == {"backend": (8080, 9090)}


def test_refs_that_match_nothing_give_nothing() -> None:
    assert _reachable("Exclusive", [
        {"kind": "MeshService", "name": "nope"},
        {"kind": "MeshService", "name": "backend", "port": 1234},
        {"kind": "MeshService", "labels": {"team": "nope"}},
        {"kind": "MeshExternalService", "name": "backend"}]) == {}


def test_an_empty_refs_list_reaches_nothing() -> None:
    assert _reachable("Exclusive", []) == {}


def test_disabled_keeps_only_tagged_explicit_outbounds() -> None:
    doc = {"type": "Dataplane", "mesh": "default", "name": "x", "networking": {
        "address": "10.0.0.1", "inbound": [{"port": 1, "tags": {"kuma.io/service": "x"}}],
        "outbound": [{"port": 10001, "tags": {"kuma.io/service": "backend"}},
                     {"port": 10002, "backendRef": {"kind": "MeshService", "name": "backend"}}]}}
    dp = decode_resource(doc)
    assert isinstance(dp, Dataplane)
    tagged, ref = dp.networking.outbound
    assert isinstance(tagged, Outbound)
    assert explicit_outbound_allowed("Disabled", tagged)
    assert not explicit_outbound_allowed("Disabled", ref)
    assert explicit_outbound_allowed("ReachableBackends", ref)
