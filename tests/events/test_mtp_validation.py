"""MeshTrafficPermission documents: Kuma's universal format, every violation with its path."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from events import (
    InvalidResource,
    MeshTrafficPermission,
    MeshTrafficPermissionApplied,
    TargetRef,
    decode_event,
    decode_resource,
    encode_event,
)

TAG_KEY_RULE = r"key must match ^[a-zA-Z0-9.\-_:/]*$ and not be empty"
TAG_VALUE_RULE = r"must match ^[a-zA-Z0-9.\-_:]*$ and not be empty"


def _mtp(target: dict[str, Any] | None = None,
         *sources: tuple[dict[str, Any], str]) -> dict[str, Any]:
    """A MeshTrafficPermission document: `target` the top-level targetRef (absent if None),
    `sources` (from-targetRef, action) pairs; by default one `Mesh: Allow`."""
    spec: dict[str, Any] = {"from": [{"targetRef": ref, "default": {"action": action}}
                                     for ref, action in sources or [({"kind": "Mesh"}, "Allow")]]}
    if target is not None:
        spec["targetRef"] = target
    return {"type": "MeshTrafficPermission", "mesh": "default", "name": "allow-web",
            "spec": spec}


def _violations(raw: Any) -> list[str]:
    with pytest.raises(InvalidResource) as info:
        decode_resource(raw)
    return [str(v) for v in info.value.violations]


# --- valid documents --------------------------------------------------------------------------


def test_kumas_example_decodes() -> None:
    doc = _mtp({"kind": "MeshService", "name": "backend"},
               ({"kind": "MeshSubset", "tags": {"kuma.io/service": "web", "version": "v1"}},
                "Allow"),
               ({"kind": "Mesh"}, "Deny"))
    mtp = decode_resource(doc)

    assert isinstance(mtp, MeshTrafficPermission)
    assert mtp.spec.target_ref == TargetRef(kind="MeshService", name="backend")
    assert [(e.target_ref.kind, e.default.action) for e in mtp.spec.from_] == [
        ("MeshSubset", "Allow"), ("Mesh", "Deny")]


def test_target_ref_defaults_to_the_whole_mesh() -> None:
    mtp = decode_resource(_mtp())

    assert isinstance(mtp, MeshTrafficPermission)
    assert mtp.spec.target_ref == TargetRef(kind="Mesh")


@pytest.mark.parametrize("target", [
    {"kind": "Mesh"},
    {"kind": "MeshSubset", "tags": {"version": "v1"}},
    {"kind": "MeshSubset"},
    {"kind": "MeshService", "name": "backend"},
    {"kind": "Dataplane", "name": "backend-1"},
    {"kind": "Dataplane", "labels": {"app": "backend", "kuma.io/zone": "east"}},
])
def test_every_top_level_kind_is_accepted(target: dict[str, Any]) -> None:
    assert isinstance(decode_resource(_mtp(target)), MeshTrafficPermission)


@pytest.mark.parametrize("source", [
    {"kind": "Mesh"},
    {"kind": "MeshSubset", "tags": {"team": "payments"}},
    {"kind": "MeshService", "name": "web"},
    {"kind": "MeshService", "name": "backend_kuma-demo_svc_8080"},  # any kuma.io/service value
    {"kind": "MeshServiceSubset", "name": "web", "tags": {"version": "v2"}},
])
def test_every_from_kind_is_accepted(source: dict[str, Any]) -> None:
    assert isinstance(decode_resource(_mtp(None, (source, "Deny"))), MeshTrafficPermission)


@pytest.mark.parametrize("action", ["Allow", "Deny", "AllowWithShadowDeny"])
def test_every_action_is_accepted(action: str) -> None:
    mtp = decode_resource(_mtp(None, ({"kind": "Mesh"}, action)))

    assert isinstance(mtp, MeshTrafficPermission)
    assert mtp.spec.from_[0].default.action == action


def test_written_back_it_reads_the_same() -> None:
    doc = _mtp({"kind": "Dataplane", "labels": {"app": "backend"}},
               ({"kind": "MeshServiceSubset", "name": "web", "tags": {"version": "v2"}},
                "AllowWithShadowDeny"))
    mtp = decode_resource(doc)

    assert msgspec.to_builtins(mtp) == doc  # `from`, camelCase, no defaults added
    assert decode_resource(msgspec.to_builtins(mtp)) == mtp


def test_the_event_goes_through_the_codec() -> None:
    mtp = decode_resource(_mtp({"kind": "MeshService", "name": "backend"}))
    assert isinstance(mtp, MeshTrafficPermission)
    event = MeshTrafficPermissionApplied(at=1, policy=mtp)

    assert decode_event(encode_event(event), seq=1, subject="s") == event


def test_an_event_with_a_kind_of_a_later_release_still_decodes() -> None:
    """`kind` is a string in the log (schema evolution); only user input is checked."""
    data = (b'{"event":"meshtrafficpermission.applied","at":1,"policy":{"type":'
            b'"MeshTrafficPermission","name":"a","mesh":"default","spec":{"targetRef":'
            b'{"kind":"MeshGateway","name":"edge"},"from":[{"targetRef":{"kind":"Mesh"},'
            b'"default":{"action":"Allow"}}]}}}')

    event = decode_event(data, seq=1, subject="s")
    assert isinstance(event, MeshTrafficPermissionApplied)
    assert event.policy.spec.target_ref.kind == "MeshGateway"


# --- shape ------------------------------------------------------------------------------------


def test_from_is_required() -> None:
    doc = _mtp()
    del doc["spec"]["from"]

    assert _violations(doc) == ["spec.from: is required"]


def test_default_is_required() -> None:
    doc = _mtp()
    del doc["spec"]["from"][0]["default"]

    assert _violations(doc) == ["spec.from[0].default: is required"]


def test_action_must_be_a_known_value() -> None:
    assert _violations(_mtp(None, ({"kind": "Mesh"}, "ALLOW"))) == [
        "spec.from[0].default.action: 'ALLOW' is not one of Allow, AllowWithShadowDeny, Deny"]


def test_unknown_target_ref_field_is_reported() -> None:
    assert _violations(_mtp({"kind": "Dataplane", "name": "a", "sectionName": "http"})) == [
        "spec.targetRef.sectionName: unknown field"]


def test_spec_to_is_not_a_field_of_this_policy() -> None:
    doc = _mtp()
    doc["spec"]["to"] = []

    assert _violations(doc) == ["spec.to: unknown field"]


# --- rules --------------------------------------------------------------------------------------


def test_from_must_not_be_empty() -> None:
    doc = _mtp()
    doc["spec"]["from"] = []

    assert _violations(doc) == [
        "spec.from: must have at least one entry (with mTLS on, a client that no entry "
        "allows is denied)"]


@pytest.mark.parametrize("kind", ["MeshServiceSubset", "MeshGateway", "mesh"])
def test_top_level_kind_must_be_one_kuma_takes_there(kind: str) -> None:
    assert _violations(_mtp({"kind": kind, "name": "x"})) == [
        f"spec.targetRef.kind: {kind!r} is not one of Mesh, MeshSubset, MeshService, Dataplane"]


def test_from_kind_must_be_one_kuma_takes_there() -> None:
    assert _violations(_mtp(None, ({"kind": "Dataplane", "name": "web-1"}, "Allow"))) == [
        "spec.from[0].targetRef.kind: 'Dataplane' is not one of Mesh, MeshSubset, MeshService, "
        "MeshServiceSubset"]


@pytest.mark.parametrize("kind", ["MeshService", "MeshServiceSubset"])
def test_from_service_kinds_need_a_name(kind: str) -> None:
    assert _violations(_mtp(None, ({"kind": kind}, "Allow"))) == [
        f"spec.from[0].targetRef.name: is required with kind {kind}"]


def test_top_level_mesh_service_needs_a_name() -> None:
    assert _violations(_mtp({"kind": "MeshService"})) == [
        "spec.targetRef.name: is required with kind MeshService"]


@pytest.mark.parametrize("kind", ["Mesh", "MeshSubset"])
def test_name_is_not_allowed_with_mesh_kinds(kind: str) -> None:
    assert _violations(_mtp({"kind": kind, "name": "backend"})) == [
        f"spec.targetRef.name: 'backend' is not allowed with kind {kind}"]


def test_dataplane_needs_a_name_or_labels() -> None:
    assert _violations(_mtp({"kind": "Dataplane"})) == [
        "spec.targetRef: kind Dataplane needs name (one Dataplane) or labels (every Dataplane "
        "with them)"]


def test_dataplane_takes_name_or_labels_not_both() -> None:
    assert _violations(_mtp({"kind": "Dataplane", "name": "a", "labels": {"app": "a"}})) == [
        "spec.targetRef: kind Dataplane takes name or labels, not both"]


@pytest.mark.parametrize("kind", ["Mesh", "MeshService"])
def test_tags_are_only_for_subset_kinds(kind: str) -> None:
    source = {"kind": kind, "tags": {"version": "v1"}}
    if kind == "MeshService":
        source["name"] = "web"

    assert _violations(_mtp(None, (source, "Allow"))) == [
        f"spec.from[0].targetRef.tags: are only for kinds MeshSubset and MeshServiceSubset, "
        f"not {kind}"]


def test_labels_are_only_for_dataplanes() -> None:
    assert _violations(_mtp({"kind": "MeshSubset", "labels": {"app": "web"}})) == [
        "spec.targetRef.labels: are only for kind Dataplane, not MeshSubset"]


def test_service_subset_takes_the_service_from_its_name() -> None:
    source = {"kind": "MeshServiceSubset", "name": "web", "tags": {"kuma.io/service": "api"}}

    assert _violations(_mtp(None, (source, "Allow"))) == [
        'spec.from[0].targetRef.tags["kuma.io/service"]: must not be set: the service is the '
        "targetRef's name"]


def test_from_service_name_must_be_a_tag_value() -> None:
    assert _violations(_mtp(None, ({"kind": "MeshService", "name": "web/v1"}, "Allow"))) == [
        "spec.from[0].targetRef.name: 'web/v1' is not a service name (a kuma.io/service "
        f"value): {TAG_VALUE_RULE}"]


def test_top_level_names_are_resource_names() -> None:
    assert _violations(_mtp({"kind": "Dataplane", "name": "Web_1"})) == [
        "spec.targetRef.name: 'Web_1' is not a valid Dataplane name (RFC 1123 subdomain: "
        "lower-case letters, digits, '-' and '.', starting and ending with a letter or digit)"]


def test_tag_keys_and_values_follow_kumas_syntax() -> None:
    source = {"kind": "MeshSubset", "tags": {"team name": "a", "version": "v 1"}}

    assert _violations(_mtp({"kind": "Dataplane", "labels": {"app": ""}}, (source, "Deny"))) == [
        f"spec.targetRef.labels[\"app\"]: '' {TAG_VALUE_RULE}",
        f'spec.from[0].targetRef.tags["team name"]: {TAG_KEY_RULE}',
        f"spec.from[0].targetRef.tags[\"version\"]: 'v 1' {TAG_VALUE_RULE}",
    ]


def test_every_violation_comes_in_one_answer() -> None:
    doc = _mtp({"kind": "MeshService"},
               ({"kind": "Mesh", "name": "x"}, "Allow"),
               ({"kind": "Dataplane"}, "Deny"),
               ({"kind": "MeshService", "name": "web"}, "Maybe"))
    doc["labels"] = {"team": "a b"}

    assert _violations(doc) == [
        "spec.from[2].default.action: 'Maybe' is not one of Allow, AllowWithShadowDeny, Deny",
        f"labels[\"team\"]: 'a b' {TAG_VALUE_RULE}",
        "spec.targetRef.name: is required with kind MeshService",
        "spec.from[0].targetRef.name: 'x' is not allowed with kind Mesh",
        "spec.from[1].targetRef.kind: 'Dataplane' is not one of Mesh, MeshSubset, MeshService, "
        "MeshServiceSubset",
    ]


def test_an_invalid_policy_name_is_reported() -> None:
    doc = _mtp()
    doc["name"] = "Allow_Web"

    assert _violations(doc) == [
        "name: 'Allow_Web' is not a valid name (RFC 1123 subdomain: lower-case letters, digits, "
        "'-' and '.', starting and ending with a letter or digit)"]
