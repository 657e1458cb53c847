"""The HTTP API against a real `meshlog up` (embedded nats-server, SQLite read models)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import ControlPlane, meshlog_up, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with meshlog_up(tmp_path_factory.mktemp("api")) as plane:
        plane.apply({"type": "Mesh", "name": "default"})
        yield plane


def _dp(name: str, port: int = 8080, service: str = "svc", mesh: str = "default") -> dict[str, Any]:
    return {"type": "Dataplane", "mesh": mesh, "name": name, "networking": {
        "address": "10.1.0.1", "inbound": [{"port": port, "tags": {"kuma.io/service": service}}]}}


def test_invalid_resource_lists_every_violation(cp: ControlPlane) -> None:
    doc = _dp("bad-1")
    doc["networking"]["inbound"] = [{"port": 70000, "tags": {"app": "x"}}, {"port": "eighty"}]
    response = cp.api.put("/meshes/default/dataplanes/bad-1", json=doc)
    assert response.status_code == 400
    body = response.json()
    assert body["invalid_parameters"] == [
        {"field": "networking.inbound[0].port", "reason": "70000 is not in 1..65535"},
        {"field": "networking.inbound[1].port", "reason": "expected an integer, got 'eighty'"},
        # semantic rules too, in the same answer (issue 10)
        {"field": "networking.inbound[0].tags", "reason": '"kuma.io/service" is required'},
    ]
    assert cp.api.get("/meshes/default/dataplanes/bad-1").status_code == 404


def test_name_in_body_must_match_the_url(cp: ControlPlane) -> None:
    response = cp.api.put("/meshes/default/dataplanes/other", json=_dp("dp-x"))
    assert response.status_code == 400
    assert response.json()["invalid_parameters"] == [
        {"field": "name", "reason": "'dp-x' does not match the URL's 'other'"}]


def test_malformed_body_is_a_400(cp: ControlPlane) -> None:
    response = cp.api.put("/meshes/default/dataplanes/x", content=b"{not json",
                          headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert "not valid JSON/YAML" in response.json()["detail"]


def test_dataplane_in_a_missing_mesh_is_a_404(cp: ControlPlane) -> None:
    response = cp.api.put("/meshes/nope/dataplanes/dp-1", json=_dp("dp-1", mesh="nope"))
    assert response.status_code == 404
    assert "mesh 'nope' does not exist" in response.json()["detail"]


def test_unknown_resource_type_is_a_404_naming_the_known_ones(cp: ControlPlane) -> None:
    response = cp.api.get("/meshes/default/widgets")
    assert response.status_code == 404
    assert "unknown resource type 'widgets'; known: dataplanes, meshservices" in (
        response.json()["detail"])


def test_create_then_update_then_get(cp: ControlPlane) -> None:
    created = cp.api.put("/meshes/default/dataplanes/dp-a", json=_dp("dp-a"))
    assert created.status_code == 201 and created.json()["created"]
    updated = cp.api.put("/meshes/default/dataplanes/dp-a", json=_dp("dp-a", port=9090))
    assert updated.status_code == 200 and not updated.json()["created"]
    got = cp.api.get("/meshes/default/dataplanes/dp-a")
    assert got.json()["networking"]["inbound"][0]["port"] == 9090
    assert got.headers["etag"] == f'"{updated.json()["version"]}"'


def test_two_writers_with_the_same_version_one_gets_409(cp: ControlPlane) -> None:
    cp.api.put("/meshes/default/dataplanes/dp-occ", json=_dp("dp-occ"))
    etag = cp.api.get("/meshes/default/dataplanes/dp-occ").headers["etag"]
    first = cp.api.put("/meshes/default/dataplanes/dp-occ", json=_dp("dp-occ", port=1111),
                       headers={"If-Match": etag})
    second = cp.api.put("/meshes/default/dataplanes/dp-occ", json=_dp("dp-occ", port=2222),
                        headers={"If-Match": etag})
    assert (first.status_code, second.status_code) == (200, 409)
    assert "is stale" in second.json()["detail"]
    port = cp.api.get("/meshes/default/dataplanes/dp-occ").json()["networking"]["inbound"][0]
    assert port["port"] == 1111  # the losing write changed nothing


def test_repeating_a_write_appends_one_event(cp: ControlPlane) -> None:
    before = cp.stream_last_seq()
    first = cp.api.put("/meshes/default/dataplanes/dp-idem", json=_dp("dp-idem"))
    again = cp.api.put("/meshes/default/dataplanes/dp-idem", json=_dp("dp-idem"))
    assert first.json()["created"] and again.json()["unchanged"]
    assert again.json()["version"] == first.json()["version"]
    assert cp.stream_last_seq() == before + 1


def test_list_has_total_items_and_next(cp: ControlPlane) -> None:
    for i in range(3):
        cp.api.put(f"/meshes/default/dataplanes/page-{i}", json=_dp(f"page-{i}"))
    first = cp.api.get("/meshes/default/dataplanes", params={"size": 2}).json()
    assert set(first) == {"total", "items", "next"}
    assert len(first["items"]) == 2 and first["total"] >= 3 and first["next"]
    rest = cp.api.get(first["next"]).json()
    names = [d["name"] for d in first["items"] + rest["items"]]
    assert len(names) == len(set(names))


def test_generated_meshservice_cannot_be_deleted(cp: ControlPlane) -> None:
    cp.api.put("/meshes/default/dataplanes/gen-1", json=_dp("gen-1", service="gen"))
    response = cp.api.delete("/meshes/default/meshservices/gen")
    assert response.status_code == 409
    assert "generated from Dataplane inbounds" in response.json()["detail"]


def test_mesh_with_dataplanes_cannot_be_deleted(cp: ControlPlane) -> None:
    cp.api.put("/meshes/busy", json={"type": "Mesh", "name": "busy"})
    cp.api.put("/meshes/busy/dataplanes/b-1", json=_dp("b-1", mesh="busy"))
    response = cp.api.delete("/meshes/busy")
    assert response.status_code == 409
    assert "still has 1 dataplanes" in response.json()["detail"]


def test_delete_then_get_is_a_404(cp: ControlPlane) -> None:
    cp.api.put("/meshes/default/dataplanes/gone", json=_dp("gone"))
    assert cp.api.delete("/meshes/default/dataplanes/gone").status_code == 200
    assert cp.api.get("/meshes/default/dataplanes/gone").status_code == 404
    assert cp.api.delete("/meshes/default/dataplanes/gone").status_code == 404


def test_openapi_document_is_served(cp: ControlPlane) -> None:
    doc = cp.api.get("/schema/openapi.json").json()
    assert doc["info"]["title"] == "meshlog"
    assert "/meshes/{mesh}/{plural}/{name}" in doc["paths"]


def test_restart_resumes_from_the_data_dir(tmp_path: Path) -> None:
    with meshlog_up(tmp_path / "cp") as first:
        first.apply({"type": "Mesh", "name": "default"})
        first.apply(_dp("keep-1", service="keep"))
        vip = first.meshservice("keep")["status"]["vips"]
    with meshlog_up(tmp_path / "cp") as second:
        assert second.meshservice("keep")["status"]["vips"] == vip
        second.apply(_dp("keep-2", service="keep"))
        assert second.meshservice("keep")["status"]["dataplaneProxies"]["total"] == 2


def test_dataplanes_carry_control_plane_labels(cp: ControlPlane) -> None:
    doc = _dp("lab-1")
    doc["labels"] = {"team": "blue", "kuma.io/zone": "spoofed"}
    cp.api.put("/meshes/default/dataplanes/lab-1", json=doc)
    labels = cp.api.get("/meshes/default/dataplanes/lab-1").json()["labels"]
    assert labels == {"team": "blue", "kuma.io/mesh": "default", "kuma.io/origin": "zone",
                      "kuma.io/zone": "default", "kuma.io/env": "universal",
                      "kuma.io/proxy-type": "sidecar", "meshlog.io/registered-by": "api",
                      "kuma.io/display-name": "lab-1"}


def test_list_filters_by_labels(cp: ControlPlane) -> None:
    for name, team in (("f-1", "red"), ("f-2", "red"), ("f-3", "green")):
        doc = _dp(name)
        doc["labels"] = {"team": team}
        cp.api.put(f"/meshes/default/dataplanes/{name}", json=doc)
    red = cp.api.get("/meshes/default/dataplanes",
                     params={"filter[labels.team]": "red", "size": 1}).json()
    assert red["total"] == 2 and [d["name"] for d in red["items"]] == ["f-1"]
    assert "filter[labels.team]=red" in red["next"]
    assert [d["name"] for d in cp.api.get(red["next"]).json()["items"]] == ["f-2"]
    bad = cp.api.get("/meshes/default/dataplanes", params={"filter[name]": "x"})
    assert bad.status_code == 400


# --- HostnameGenerators, generated-MeshService edge cases (issue 5) ---------------------------


_HG: dict[str, Any] = {"type": "HostnameGenerator", "name": "internal", "spec": {
    "template": "{{ .Name }}.{{ .Mesh }}.internal",
    "selector": {"meshService": {"matchLabels": {"kuma.io/display-name": "hg-svc"}}}}}


def test_hostname_generators_list_the_zone_defaults_without_an_etag(cp: ControlPlane) -> None:
    names = [g["name"] for g in cp.api.get("/hostnamegenerators").json()["items"]]
    assert {"local-universal-mesh-service", "local-mesh-external-service"} <= set(names)
    default = cp.api.get("/hostnamegenerators/local-universal-mesh-service")
    assert default.json()["spec"]["template"] == "{{ .DisplayName }}.svc.mesh.local"
    assert "etag" not in default.headers


def test_hostname_generator_crud_reaches_meshservice_addresses(cp: ControlPlane) -> None:
    cp.apply(_dp("hg-1", service="hg-svc"))
    created = cp.api.put("/hostnamegenerators/internal", json=_HG)
    assert created.status_code == 201, created.text
    got = cp.api.get("/hostnamegenerators/internal")
    assert got.headers["etag"] == f'"{created.json()["version"]}"'
    assert got.json()["labels"]["kuma.io/origin"] == "zone"
    hostnames = [a["hostname"] for a in cp.meshservice("hg-svc")["status"]["addresses"]]
    assert hostnames == ["hg-svc.default.internal", "hg-svc.svc.mesh.local"]
    assert cp.api.delete("/hostnamegenerators/internal").status_code == 200
    assert cp.api.get("/hostnamegenerators/internal").status_code == 404
    hostnames = [a["hostname"] for a in cp.meshservice("hg-svc")["status"]["addresses"]]
    assert hostnames == ["hg-svc.svc.mesh.local"]


def test_an_invalid_template_is_a_400_naming_spec_template(cp: ControlPlane) -> None:
    doc = {**_HG, "name": "broken", "spec": {**_HG["spec"], "template": "{{ .Name }.x"}}
    response = cp.api.put("/hostnamegenerators/broken", json=doc)
    assert response.status_code == 400
    [problem] = response.json()["invalid_parameters"]
    assert problem["field"] == "spec.template"
    assert "unclosed action '{{' at offset 0" in problem["reason"]


def test_a_default_generator_cannot_be_deleted_only_overridden(cp: ControlPlane) -> None:
    response = cp.api.delete("/hostnamegenerators/local-mesh-external-service")
    assert response.status_code == 409
    assert "apply one of that name to override it" in response.json()["detail"]


def test_a_dataplane_shows_why_its_service_gets_no_meshservice(cp: ControlPlane) -> None:
    cp.apply(_dp("odd-name-1", service="Odd_Name"))
    doc = cp.api.get("/meshes/default/dataplanes/odd-name-1").json()
    [condition] = doc["status"]["conditions"]
    assert condition["reason"] == "InvalidServiceName"
    assert "'Odd_Name' is not a DNS-1035 label" in condition["message"]
    assert cp.api.get("/meshes/default/meshservices/Odd_Name").status_code == 404
    for generated in ("creationTime", "modificationTime"):
        del doc[generated]
    doc["status"]["conditions"] = []  # the control plane's: accepted on input and dropped
    assert cp.api.put("/meshes/default/dataplanes/odd-name-1", json=doc).status_code == 200
    again = cp.api.get("/meshes/default/dataplanes/odd-name-1").json()
    assert [c["reason"] for c in again["status"]["conditions"]] == ["InvalidServiceName"]


def test_meshlog_up_grace_period_flag_keeps_then_drops_the_meshservice(tmp_path: Path) -> None:
    with meshlog_up(tmp_path / "cp", "--meshservice-grace-period", "1500ms") as plane:
        plane.apply({"type": "Mesh", "name": "default"})
        plane.apply(_dp("brief-1", service="brief"))
        assert plane.api.delete("/meshes/default/dataplanes/brief-1").status_code == 200
        waiting = plane.meshservice("brief")
        assert [c["reason"] for c in waiting["status"]["conditions"]] == ["NoDataplanes"]
        wait_for(lambda: plane.api.get("/meshes/default/meshservices/brief").status_code == 404,
                 timeout=60, what="the grace period to end and the tick to be folded")


def test_an_unavailable_meshservice_says_so(tmp_path: Path) -> None:
    """`Unavailable` is the row's default (left out of the stored row), not of the answer."""
    with meshlog_up(tmp_path / "cp") as plane:
        plane.apply({"type": "Mesh", "name": "default"})
        plane.apply({"type": "MeshService", "mesh": "default", "name": "lonely",
                     "spec": {"ports": [{"port": 80}],
                              "selector": {"dataplaneTags": {"kuma.io/service": "lonely"}}}})
        assert plane.meshservice("lonely")["status"]["state"] == "Unavailable"
