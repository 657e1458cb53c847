"""Applying back what a GET returned, against a real `meshlog up` (zone `default`): Kuma's
`kumactl get ... -o yaml | kumactl apply -f -` is a no-op, and so is meshlog's. The labels the
control plane computes come back with it and are not taken for the user's
(`events.labels.without_computed`); a user label, a computed key the user may set included,
still changes the resource."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness import VENV_BIN, ControlPlane, meshlog_up

pytestmark = pytest.mark.integration

RESOURCES: dict[str, tuple[str, dict[str, Any]]] = {
    "Mesh": ("/meshes/reapply", {"type": "Mesh", "name": "reapply"}),
    "Dataplane": ("/meshes/default/dataplanes/web-1", {
        "type": "Dataplane", "mesh": "default", "name": "web-1", "networking": {
            "address": "10.1.0.1",
            "inbound": [{"port": 8080, "tags": {"kuma.io/service": "web"}}]}}),
    "MeshService": ("/meshes/default/meshservices/api", {
        "type": "MeshService", "mesh": "default", "name": "api", "spec": {
            "selector": {"dataplaneTags": {"kuma.io/service": "api"}},
            "ports": [{"port": 8080}]}}),
    "HostnameGenerator": ("/hostnamegenerators/internal", {
        "type": "HostnameGenerator", "name": "internal", "spec": {
            "template": "{{ .Name }}.{{ .Mesh }}.internal",
            "selector": {"meshService": {"matchLabels": {"kuma.io/display-name": "api"}}}}}),
    "MeshTrafficPermission": ("/meshes/default/meshtrafficpermissions/allow-all", {
        "type": "MeshTrafficPermission", "mesh": "default", "name": "allow-all", "spec": {
            "targetRef": {"kind": "Mesh"},
            "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}]}}),
    "ZoneIngress": ("/zoneingresses/ingress-1", {
        "type": "ZoneIngress", "name": "ingress-1", "networking": {
            "address": "10.0.0.5", "port": 10001}}),
}


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with meshlog_up(tmp_path_factory.mktemp("reapply")) as plane:
        plane.apply({"type": "Mesh", "name": "default"})
        for path, doc in RESOURCES.values():
            response = plane.api.put(path, json={**doc, "labels": {"team": "blue"}})
            assert response.status_code == 201, response.text
        yield plane


def _get(cp: ControlPlane, path: str) -> dict[str, Any]:
    response = cp.api.get(path)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def _meshlog(cp: ControlPlane, *args: str, stdin: str | None = None) -> str:
    return subprocess.run([str(VENV_BIN / "meshlog"), "--api", cp.where["api"], *args],
                          capture_output=True, text=True, timeout=60, check=True,
                          input=stdin).stdout


@pytest.mark.parametrize("kind", RESOURCES)
def test_applying_back_what_get_returned_is_unchanged(cp: ControlPlane, kind: str) -> None:
    path = RESOURCES[kind][0]
    response = cp.api.get(path)
    shown = response.json()
    before = cp.stream_last_seq()
    again = cp.api.put(path, json=shown)
    assert again.status_code == 200, again.text
    assert again.json()["unchanged"] and not again.json()["created"]
    assert again.headers["etag"] == response.headers["etag"]
    assert cp.stream_last_seq() == before  # nothing appended
    assert _get(cp, path)["labels"] == shown["labels"]


@pytest.mark.parametrize("kind", RESOURCES)
def test_a_user_label_changed_in_what_get_returned_is_an_update(
        cp: ControlPlane, kind: str) -> None:
    path = RESOURCES[kind][0]
    shown = _get(cp, path)
    before = cp.stream_last_seq()
    changed = cp.api.put(path, json={**shown, "labels": {**shown["labels"], "team": kind.lower()}})
    assert changed.status_code == 200, changed.text
    assert not changed.json()["unchanged"]
    assert cp.stream_last_seq() == before + 1
    # the computed labels as before, the user's as changed
    assert _get(cp, path)["labels"] == {**shown["labels"], "team": kind.lower()}


def test_a_display_name_other_than_the_name_stays_the_users(cp: ControlPlane) -> None:
    path, doc = RESOURCES["Dataplane"]
    path, doc = path.replace("web-1", "web-2"), {**doc, "name": "web-2"}
    created = cp.api.put(path, json={**doc, "labels": {"kuma.io/display-name": "web-shown"}})
    assert created.status_code == 201, created.text
    shown = _get(cp, path)
    assert shown["labels"]["kuma.io/display-name"] == "web-shown"
    before = cp.stream_last_seq()
    assert cp.api.put(path, json=shown).json()["unchanged"]
    assert cp.stream_last_seq() == before
    # given the name's value, the label is the default: the user no longer sets it
    renamed = cp.api.put(path, json={**shown, "labels": {
        **shown["labels"], "kuma.io/display-name": "web-2"}})
    assert not renamed.json()["unchanged"]
    assert _get(cp, path)["labels"]["kuma.io/display-name"] == "web-2"


def test_a_hostname_generators_display_name_is_the_users_even_equal_to_its_name(
        cp: ControlPlane) -> None:
    path, doc = RESOURCES["HostnameGenerator"]
    path, doc = path.replace("internal", "named"), {**doc, "name": "named"}
    created = cp.api.put(path, json={**doc, "labels": {"kuma.io/display-name": "named"}})
    assert created.status_code == 201, created.text
    shown = _get(cp, path)
    assert shown["labels"]["kuma.io/display-name"] == "named"  # not computed for this kind
    assert cp.api.put(path, json=shown).json()["unchanged"]


def test_meshlog_get_piped_to_meshlog_apply_is_unchanged(cp: ControlPlane) -> None:
    for kind in ("Dataplane", "MeshTrafficPermission"):  # new ones: never applied back
        doc = RESOURCES[kind][1]
        cp.apply({**doc, "name": f"cli-{doc['name']}", "labels": {"team": "green"}})
    before = cp.stream_last_seq()
    one = _meshlog(cp, "get", "dataplane", "cli-web-1", "-o", "yaml")
    applied = _meshlog(cp, "apply", "-f", "-", stdin=one)
    assert applied.startswith("dataplane 'cli-web-1' unchanged (version ")
    page = _meshlog(cp, "get", "meshtrafficpermissions", "-o", "yaml")  # a list applies too
    applied_lines = _meshlog(cp, "apply", "-f", "-", stdin=page).splitlines()
    assert "meshtrafficpermission 'cli-allow-all' unchanged" in "\n".join(applied_lines)
    assert all(" unchanged (version " in line for line in applied_lines), applied_lines
    assert cp.stream_last_seq() == before


def _generated_service(cp: ControlPlane, dataplane: str, service: str) -> str:
    """`service`, generated from a new Dataplane's inbound: its path."""
    doc = RESOURCES["Dataplane"][1]
    cp.apply({**doc, "name": dataplane, "networking": {
        "address": "10.1.0.9", "inbound": [{"port": 9090, "tags": {"kuma.io/service": service}}]}})
    path = f"/meshes/default/meshservices/{service}"
    shown = _get(cp, path)
    assert shown["labels"]["kuma.io/managed-by"] == "meshservice-generator"
    return path


def test_a_generated_meshservice_applied_back_stays_generated(cp: ControlPlane) -> None:
    path = _generated_service(cp, "gen-1", "gen")
    shown = _get(cp, path)
    before = cp.stream_last_seq()
    again = cp.api.put(path, json=shown)
    assert again.status_code == 200, again.text
    assert again.json()["unchanged"] and not again.json()["created"]
    assert "warnings" not in again.json()
    assert cp.stream_last_seq() == before  # nothing appended: the generator keeps it
    assert _get(cp, path)["labels"] == shown["labels"]
    applied = _meshlog(cp, "apply", "-f", "-", stdin=_meshlog(
        cp, "get", "meshservice", "gen", "-o", "yaml"))
    assert applied.startswith("meshservice 'gen' unchanged"), applied
    assert cp.stream_last_seq() == before


def test_a_generated_meshservice_changed_and_applied_is_the_users_without_its_label(
        cp: ControlPlane) -> None:
    path = _generated_service(cp, "taken-1", "taken")
    shown = _get(cp, path)
    before = cp.stream_last_seq()
    changed = cp.api.put(path, json={**shown, "labels": {**shown["labels"], "team": "red"}})
    assert changed.status_code == 201, changed.text  # the user's, new in the log
    body = changed.json()
    assert body["created"] and not body["unchanged"]
    assert any("kuma.io/managed-by" in w for w in body["warnings"]), body
    assert cp.stream_last_seq() == before + 1
    labels = _get(cp, path)["labels"]
    assert labels["team"] == "red"
    assert "kuma.io/managed-by" not in labels  # listed as the user's, which it now is
    assert "taken" in _meshlog(cp, "get", "meshservices")
