"""Bad input against a real `meshlog up` (issue 10): it gets a clear answer, loses no write,
and never takes the process (or its NATS connection) down."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness import ControlPlane, meshlog_up

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with meshlog_up(tmp_path_factory.mktemp("bad-input")) as plane:
        plane.apply({"type": "Mesh", "name": "default"})
        yield plane


def _dp(name: str, address: str = "10.1.0.1", **labels: str) -> dict[str, Any]:
    return {"type": "Dataplane", "mesh": "default", "name": name, "labels": labels,
            "networking": {"address": address, "inbound": [
                {"port": 8080, "tags": {"kuma.io/service": "svc"}}]}}


def _sized(name: str, size: int) -> bytes:
    """A valid Dataplane document of exactly `size` bytes (JSON)."""
    doc = _dp(name, pad="")
    base = len(json.dumps(doc, separators=(",", ":")).encode())
    doc["labels"]["pad"] = "x" * (size - base)
    body = json.dumps(doc, separators=(",", ":")).encode()
    assert len(body) == size
    return body


def _still_serves(cp: ControlPlane) -> None:
    assert cp.api.get("/ready").status_code == 200
    assert cp.api.put("/meshes/default/dataplanes/alive", json=_dp("alive")).status_code in (
        200, 201)


def test_a_valid_resource_over_the_bus_limit_is_a_413_and_the_process_lives_on(
        cp: ControlPlane) -> None:
    # under the body limit, but over NATS's max_payload once the event's headers are added:
    # nats-server used to close the connection and `meshlog up` exited
    response = cp.api.put("/meshes/default/dataplanes/big", content=_sized("big", 1_048_551),
                          headers={"content-type": "application/json"})
    assert response.status_code == 413, response.text
    assert "1048576" in response.json()["detail"]
    assert cp.api.get("/meshes/default/dataplanes/big").status_code == 404
    _still_serves(cp)


def test_a_body_over_the_document_limit_is_a_413(cp: ControlPlane) -> None:
    response = cp.api.put("/meshes/default/dataplanes/huge", content=_sized("huge", 2_000_000),
                          headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["limit"] == 1_048_576
    _still_serves(cp)


def test_an_idempotency_key_reused_for_another_resource_is_refused(cp: ControlPlane) -> None:
    key = {"Idempotency-Key": "key-of-a"}
    assert cp.api.put("/meshes/default/dataplanes/idem-a", json=_dp("idem-a"),
                      headers=key).status_code == 201
    response = cp.api.put("/meshes/default/dataplanes/idem-b", json=_dp("idem-b"), headers=key)
    assert response.status_code == 422, response.text
    assert "key-of-a" in response.json()["detail"]
    assert cp.api.get("/meshes/default/dataplanes/idem-b").status_code == 404


def test_deleting_a_generated_meshservice_is_a_409_even_in_its_grace_period(
        cp: ControlPlane) -> None:
    assert cp.api.put("/meshes/default/dataplanes/graced-1",
                      json={**_dp("graced-1"), "networking": {"address": "10.1.0.9", "inbound": [
                          {"port": 8080, "tags": {"kuma.io/service": "graced"}}]}}
                      ).status_code == 201
    assert cp.api.delete("/meshes/default/dataplanes/graced-1").status_code == 200
    # the generated MeshService outlives its Dataplane for the grace period (1 h)
    assert cp.api.get("/meshes/default/meshservices/graced").status_code == 200
    response = cp.api.delete("/meshes/default/meshservices/graced")
    assert response.status_code == 409
    assert "generated from Dataplane inbounds" in response.json()["detail"]


def test_an_idempotency_key_reused_with_changed_content_is_refused(cp: ControlPlane) -> None:
    key = {"Idempotency-Key": "key-of-c"}
    assert cp.api.put("/meshes/default/dataplanes/idem-c", json=_dp("idem-c"),
                      headers=key).status_code == 201
    changed = _dp("idem-c", address="10.1.0.2")
    response = cp.api.put("/meshes/default/dataplanes/idem-c", json=changed, headers=key)
    assert response.status_code == 422, response.text
    stored = cp.api.get("/meshes/default/dataplanes/idem-c").json()
    assert stored["networking"]["address"] == "10.1.0.1"
    # the same request again (a client's retry) is fine
    assert cp.api.put("/meshes/default/dataplanes/idem-c", json=_dp("idem-c"),
                      headers=key).status_code == 200


@pytest.mark.parametrize("field", ["labels", "status"])
def test_deep_nesting_is_a_400_naming_the_field(cp: ControlPlane, field: str) -> None:
    body = ('{"type":"Dataplane","mesh":"default","name":"deep","networking":{"address":'
            '"10.0.0.1","inbound":[{"port":80,"tags":{"kuma.io/service":"s"}}]},"'
            + field + '":' + '{"a":' * 1000 + '"x"' + '}' * 1000 + '}')
    response = cp.api.put("/meshes/default/dataplanes/deep", content=body,
                          headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    [problem] = response.json()["invalid_parameters"]
    assert problem["field"].startswith(f"{field}.a.a")
    assert problem["reason"] == "is nested too deeply (more than 32 levels)"


@pytest.mark.parametrize(("document", "field"), [
    # a regex is handed to RE2 as UTF-8 bytes: this one was an internal error (a 500)
    ('type: MeshHTTPRoute\nmesh: default\nname: sur\nspec:\n  to:\n  - targetRef: '
     '{kind: MeshService, name: backend}\n    rules:\n    - matches:\n      - path: '
     '{type: RegularExpression, value: "/a\\ud800"}\n', "spec.to[0].rules[0].matches[0]."
     "path.value"),
    ('type: Dataplane\nmesh: default\nname: sur\nlabels: {"\\udc00": x}\nnetworking: '
     '{address: 10.0.0.1}\n', "labels"),
])
def test_a_lone_surrogate_in_yaml_is_a_400_naming_the_field(cp: ControlPlane, document: str,
                                                             field: str) -> None:
    kind = "meshhttproutes" if "MeshHTTPRoute" in document else "dataplanes"
    response = cp.api.put(f"/meshes/default/{kind}/sur", content=document,
                          headers={"content-type": "application/yaml"})
    assert response.status_code == 400, response.text
    [problem] = response.json()["invalid_parameters"]
    assert problem["field"] == field
    assert "a lone UTF-16 surrogate, which is not text" in problem["reason"]
    _still_serves(cp)


def test_a_yaml_alias_bomb_is_refused_at_once(cp: ControlPlane) -> None:
    levels = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i, name in enumerate("bcdefghi"):
        prev = "abcdefghi"[i]
        levels.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    response = cp.api.put("/meshes/default/dataplanes/bomb", content="\n".join(levels),
                          headers={"content-type": "application/yaml"})
    assert response.status_code == 400
    assert "aliases are not allowed" in response.json()["detail"]
    # refused before any expansion: 9 levels of aliases would be 9^9 strings (was 1.4 s and
    # 1.2 GB for a smaller bomb, with every part of `meshlog up` stalled meanwhile)
    _still_serves(cp)


def test_a_meshservice_reads_back_with_its_default_app_protocol(cp: ControlPlane) -> None:
    doc = {"type": "MeshService", "mesh": "default", "name": "redis", "spec": {
        "selector": {"dataplaneTags": {"app": "redis"}},
        "ports": [{"port": 6379, "targetPort": 6379, "appProtocol": "tcp"}, {"port": 6380}]}}
    assert cp.api.put("/meshes/default/meshservices/redis", json=doc).status_code == 201
    shown = cp.api.get("/meshes/default/meshservices/redis").json()
    assert [p["appProtocol"] for p in shown["spec"]["ports"]] == ["tcp", "tcp"]
    # and what a GET shows is accepted again as it is (read-only fields ignored)
    assert cp.api.put("/meshes/default/meshservices/redis", json=shown).status_code == 200


def test_a_megabyte_value_is_refused_in_a_small_answer_naming_its_field(
        cp: ControlPlane) -> None:
    doc = {"type": "MeshRetry", "mesh": "default", "name": "huge", "spec": {
        "targetRef": {"kind": "Mesh"},
        "to": [{"targetRef": {"kind": "MeshService", "name": "backend"},
                "default": {"http": {"retryOn": ["x" * 900_000]}}}]}}
    response = cp.api.put("/meshes/default/meshretries/huge", json=doc)
    assert response.status_code == 400, response.text[:200]
    assert len(response.content) < 8_192  # the 900 KB value is not echoed (twice) back
    [violation] = response.json()["invalid_parameters"]
    assert violation["field"] == "spec.to[0].default.http.retryOn[0]"
    assert "characters left out" in violation["reason"]
    # cut in the middle: the value's start, and the rule at its end, are still there
    assert violation["reason"].startswith("'xxx")
    assert violation["reason"].endswith("or an HTTP status code as a string (e.g. '503')")
    assert cp.api.get("/meshes/default/meshretries/huge").status_code == 404
    _still_serves(cp)
