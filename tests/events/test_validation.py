"""Decoding user input into resources: every shape and semantic violation, with its path."""

from __future__ import annotations

from typing import Any

import pytest

from events import (
    Dataplane,
    Inbound,
    InvalidResource,
    Mesh,
    MeshService,
    MeshServicePort,
    Outbound,
    decode_resource,
    is_dns1035_label,
)

NOT_A_NAME = (
    "is not a valid name (RFC 1123 subdomain: lower-case letters, digits, '-' and '.', "
    "starting and ending with a letter or digit)"
)
TAG_KEY_RULE = r"key must match ^[a-zA-Z0-9.\-_:/]*$ and not be empty"
TAG_VALUE_RULE = r"must match ^[a-zA-Z0-9.\-_:]*$ and not be empty"


def _dataplane(**networking: Any) -> dict[str, Any]:
    """A valid Dataplane document; keyword arguments replace fields of `networking`."""
    doc: dict[str, Any] = {
        "type": "Dataplane",
        "mesh": "default",
        "name": "web-1",
        "networking": {
            "address": "10.0.0.1",
            "inbound": [{"port": 8080, "tags": {"kuma.io/service": "web"}}],
        },
    }
    doc["networking"].update(networking)
    return doc


def _mesh_service(**spec: Any) -> dict[str, Any]:
    """A valid MeshService document; keyword arguments replace fields of `spec`."""
    doc: dict[str, Any] = {
        "type": "MeshService",
        "mesh": "default",
        "name": "web",
        "spec": {
            "selector": {"dataplaneTags": {"app": "web"}},
            "ports": [{"port": 80, "targetPort": 8080, "appProtocol": "http"}],
        },
    }
    doc["spec"].update(spec)
    return doc


def _violations(raw: Any, expected_kind: str | None = None) -> list[str]:
    with pytest.raises(InvalidResource) as info:
        decode_resource(raw, expected_kind)
    return [str(v) for v in info.value.violations]


# --- valid documents --------------------------------------------------------------------------


def test_minimal_mesh_decodes() -> None:
    assert decode_resource({"type": "Mesh", "name": "default"}) == Mesh(name="default")


def test_mesh_services_mode_defaults_to_exclusive() -> None:
    mesh = decode_resource({"type": "Mesh", "name": "default", "meshServices": {}})

    assert isinstance(mesh, Mesh)
    assert mesh.mesh_services is not None
    assert mesh.mesh_services.mode == "Exclusive"


def test_valid_dataplane_decodes_with_defaults() -> None:
    dp = decode_resource(_dataplane(
        outbound=[{"port": 10001, "backendRef": {"kind": "MeshService", "name": "db"}}],
    ))

    assert isinstance(dp, Dataplane)
    assert (dp.mesh, dp.name, dp.labels) == ("default", "web-1", {})
    assert dp.networking.address == "10.0.0.1"
    assert dp.networking.inbound == [Inbound(port=8080, tags={"kuma.io/service": "web"})]
    inbound = dp.networking.inbound[0]
    assert (inbound.state, inbound.health, inbound.service_port, inbound.protocol) == (
        "Ready", None, None, None)
    assert isinstance(dp.networking.outbound[0], Outbound)
    assert dp.networking.outbound[0].backend_ref is not None
    assert dp.networking.outbound[0].backend_ref.name == "db"
    assert dp.networking.admin is None


def test_dataplane_address_may_be_a_dns_name() -> None:
    dp = decode_resource(_dataplane(address="web-1.example.com"))

    assert isinstance(dp, Dataplane)
    assert dp.networking.address == "web-1.example.com"


def test_inbound_without_tags_is_accepted() -> None:
    dp = decode_resource(_dataplane(inbound=[{"port": 8080}]))

    assert isinstance(dp, Dataplane)
    assert dp.networking.inbound[0].tags == {}


def test_inbounds_on_the_same_port_and_different_addresses_are_accepted() -> None:
    dp = decode_resource(_dataplane(inbound=[
        {"port": 8080, "tags": {"kuma.io/service": "web"}},
        {"port": 8080, "address": "10.0.0.2", "tags": {"kuma.io/service": "web"}},
    ]))

    assert isinstance(dp, Dataplane)
    assert len(dp.networking.inbound) == 2


def test_valid_mesh_service_decodes_with_defaults() -> None:
    ms = decode_resource(_mesh_service(ports=[{"port": 80}]))

    assert isinstance(ms, MeshService)
    assert ms.spec.selector.dataplane_tags == {"app": "web"}
    assert ms.spec.ports == [MeshServicePort(port=80)]
    assert (ms.spec.ports[0].app_protocol, ms.spec.ports[0].target_port) == ("tcp", None)
    assert ms.status is None


def test_mesh_service_target_port_may_be_a_name() -> None:
    ms = decode_resource(_mesh_service(ports=[{"port": 80, "targetPort": "http"}]))

    assert isinstance(ms, MeshService)
    assert ms.spec.ports[0].target_port == "http"


def test_mesh_service_status_is_accepted_and_dropped() -> None:
    doc = _mesh_service()
    doc["status"] = {"vips": [{"ip": "241.0.0.1"}], "addresses": []}

    ms = decode_resource(doc)

    assert isinstance(ms, MeshService)
    assert ms.status is None


# --- the document and its type ----------------------------------------------------------------


def test_non_object_document_is_rejected() -> None:
    with pytest.raises(InvalidResource) as info:
        decode_resource(["Mesh"])

    assert info.value.kind == "resource"
    assert [str(v) for v in info.value.violations] == ['expected an object, got ["Mesh"]']


def test_unknown_type_is_rejected() -> None:
    assert _violations({"type": "Gateway", "name": "gw"}) == [
        "type: 'Gateway' is not one of Mesh, Dataplane, MeshService, HostnameGenerator, "
        "MeshTrafficPermission, MeshTimeout, MeshRetry, MeshCircuitBreaker, MeshHTTPRoute, "
        "MeshLoadBalancingStrategy, MeshMultiZoneService, ZoneIngress",
    ]


def test_missing_type_is_rejected() -> None:
    assert _violations({"name": "gw"}) == [
        "type: null is not one of Mesh, Dataplane, MeshService, HostnameGenerator, "
        "MeshTrafficPermission, MeshTimeout, MeshRetry, MeshCircuitBreaker, MeshHTTPRoute, "
        "MeshLoadBalancingStrategy, MeshMultiZoneService, ZoneIngress",
    ]


def test_non_string_type_is_rejected() -> None:
    assert _violations({"type": ["Mesh"], "name": "default"}) == [
        'type: ["Mesh"] is not one of Mesh, Dataplane, MeshService, HostnameGenerator, '
        "MeshTrafficPermission, MeshTimeout, MeshRetry, MeshCircuitBreaker, MeshHTTPRoute, "
        "MeshLoadBalancingStrategy, MeshMultiZoneService, ZoneIngress",
    ]


def test_type_must_match_the_expected_kind() -> None:
    with pytest.raises(InvalidResource) as info:
        decode_resource(_dataplane(), "Mesh")

    assert info.value.kind == "Mesh"
    assert [str(v) for v in info.value.violations] == [
        "type: 'Dataplane' does not match the URL's 'Mesh'",
    ]


# --- shape rules ------------------------------------------------------------------------------


def test_unknown_field_is_reported_with_its_path() -> None:
    doc = _dataplane(inbound=[
        {"port": 8080, "tags": {"kuma.io/service": "web"}},
        {"port": 8081, "tags": {"kuma.io/service": "web"}, "bogus": 1},
    ])

    assert _violations(doc) == ["networking.inbound[1].bogus: unknown field"]


def test_unknown_top_level_field_is_reported() -> None:
    assert _violations({"type": "Mesh", "name": "default", "spec": {}}) == [
        "spec: unknown field",
    ]


def test_missing_required_field_is_reported() -> None:
    assert _violations(_dataplane(inbound=[{"tags": {"kuma.io/service": "web"}}])) == [
        "networking.inbound[0].port: is required",
    ]


def test_missing_required_top_level_fields_are_reported() -> None:
    assert _violations({"type": "Dataplane"}) == [
        "name: is required",
        "mesh: is required",
        "networking: is required",
    ]


def test_port_out_of_range_is_rejected() -> None:
    assert _violations(_dataplane(inbound=[{"port": 70000}])) == [
        "networking.inbound[0].port: 70000 is not in 1..65535",
    ]


def test_port_zero_is_rejected() -> None:
    assert _violations(_dataplane(admin={"port": 0})) == [
        "networking.admin.port: 0 is not in 1..65535",
    ]


def test_string_for_an_integer_is_rejected() -> None:
    assert _violations(_dataplane(inbound=[{"port": "8080"}])) == [
        "networking.inbound[0].port: expected an integer, got '8080'",
    ]


def test_bool_for_an_integer_is_rejected() -> None:
    assert _violations(_dataplane(inbound=[{"port": True}])) == [
        "networking.inbound[0].port: expected an integer, got true",
    ]


def test_integer_for_a_string_is_rejected() -> None:
    assert _violations(_dataplane(address=5)) == [
        "networking.address: expected a string, got 5",
    ]


def test_non_bool_is_rejected() -> None:
    doc = _dataplane(inbound=[{"port": 8080, "health": {"ready": "yes"}}])

    assert _violations(doc) == [
        "networking.inbound[0].health.ready: expected true or false, got 'yes'",
    ]


def test_non_array_for_a_list_is_rejected() -> None:
    assert _violations(_dataplane(inbound={"port": 8080})) == [
        'networking.inbound: expected an array, got {"port":8080}',
    ]


def test_null_for_a_required_object_is_rejected() -> None:
    doc = _dataplane()
    doc["networking"] = None

    assert _violations(doc) == ["networking: expected an object, got null"]


def test_non_string_label_value_is_rejected() -> None:
    assert _violations({"type": "Mesh", "name": "default", "labels": {"team": 7}}) == [
        'labels["team"]: expected a string, got 7',
    ]


def test_inbound_state_must_be_a_known_value() -> None:
    assert _violations(_dataplane(inbound=[{"port": 8080, "state": "Up"}])) == [
        "networking.inbound[0].state: 'Up' is not one of Ignored, NotReady, Ready",
    ]


def test_inbound_protocol_must_be_a_known_value() -> None:
    assert _violations(_dataplane(inbound=[{"port": 8080, "protocol": "http3"}])) == [
        "networking.inbound[0].protocol: 'http3' is not one of "
        "grpc, http, http2, kafka, mysql, tcp, tls",
    ]


def test_mesh_services_mode_must_be_a_known_value() -> None:
    doc = {"type": "Mesh", "name": "default", "meshServices": {"mode": "On"}}

    assert _violations(doc) == [
        "meshServices.mode: 'On' is not one of "
        "Disabled, Everywhere, Exclusive, ReachableBackends",
    ]


def test_resource_name_must_be_an_rfc1123_subdomain() -> None:
    assert _violations({"type": "Mesh", "name": "My_Mesh"}) == [f"name: 'My_Mesh' {NOT_A_NAME}"]


def test_resource_name_must_not_be_empty() -> None:
    assert _violations({"type": "Mesh", "name": ""}) == ["name: must not be empty"]


def test_resource_name_must_be_at_most_253_characters() -> None:
    assert _violations({"type": "Mesh", "name": "a" * 254}) == [
        "name: must be at most 253 characters",
    ]


def test_mesh_name_of_a_scoped_resource_must_be_an_rfc1123_subdomain() -> None:
    doc = _dataplane()
    doc["mesh"] = "-default"

    assert _violations(doc) == [f"mesh: '-default' {NOT_A_NAME}"]


def test_resource_name_with_a_trailing_newline_is_rejected() -> None:
    assert _violations({"type": "Mesh", "name": "default\n"}) == [
        f"name: 'default\\n' {NOT_A_NAME}",
    ]


def test_target_port_zero_is_rejected() -> None:
    assert _violations(_mesh_service(ports=[{"port": 80, "targetPort": 0}])) == [
        "spec.ports[0].targetPort: 0 is not an integer in 1..65535 or a non-empty string",
    ]


def test_empty_target_port_name_is_rejected() -> None:
    assert _violations(_mesh_service(ports=[{"port": 80, "targetPort": ""}])) == [
        "spec.ports[0].targetPort: '' is not an integer in 1..65535 or a non-empty string",
    ]


def test_every_shape_violation_is_reported_in_order() -> None:
    doc = {
        "type": "Dataplane",
        "extra": 1,
        "name": "Web_1",
        "mesh": "default",
        "networking": {
            "address": 5,
            "inbound": [{"port": 70000}, {"port": 8081, "bogus": True, "state": "Up"}],
        },
    }

    with pytest.raises(InvalidResource) as info:
        decode_resource(doc)

    assert info.value.kind == "Dataplane"
    assert [str(v) for v in info.value.violations] == [
        "extra: unknown field",
        f"name: 'Web_1' {NOT_A_NAME}",
        "networking.address: expected a string, got 5",
        "networking.inbound[0].port: 70000 is not in 1..65535",
        "networking.inbound[1].bogus: unknown field",
        "networking.inbound[1].state: 'Up' is not one of Ignored, NotReady, Ready",
    ]


def test_shape_and_semantic_violations_come_in_one_answer() -> None:
    # issue 10: a port out of range used to hide the invalid address until it was fixed
    assert _violations(_dataplane(address="not an address!",
                                  inbound=[{"port": 70000, "tags": {"kuma.io/service": "web"}}],
                                  admin={"port": "9901"})) == [
        "networking.inbound[0].port: 70000 is not in 1..65535",
        "networking.admin.port: expected an integer, got '9901'",
        "networking.address: 'not an address!' is not an IP address or DNS name",
    ]


def test_a_rule_about_a_stood_in_value_is_not_reported() -> None:
    # the missing port is stood in for; the rules say nothing of the stand-in or its inbound
    assert _violations(_dataplane(address="0.0.0.0",
                                  inbound=[{"tags": {"kuma.io/service": "web"}}])) == [
        "networking.inbound[0].port: is required",
        "networking.address: '0.0.0.0' must not be the unspecified address",
    ]


def test_read_only_fields_are_accepted_and_ignored() -> None:
    # what `meshlog get -o yaml` shows applies again (Kuma and Kubernetes accept it too)
    doc = {**_dataplane(), "creationTime": "2026-11-29T10:00:00Z",
           "modificationTime": "2026-11-29T10:00:01Z", "status": {"conditions": []}}
    assert decode_resource(doc) == decode_resource(_dataplane())
    mesh = {"type": "Mesh", "name": "m", "creationTime": "x", "modificationTime": "y"}
    assert decode_resource(mesh) == Mesh(name="m")


def test_a_kubernetes_document_is_told_what_to_change() -> None:
    [message] = _violations({"apiVersion": "kuma.io/v1alpha1", "kind": "Mesh",
                             "metadata": {"name": "default"}, "spec": {}})
    assert message.startswith("type: is missing: this is a Kubernetes document")
    assert "universal format" in message and "`type: Dataplane`" in message


@pytest.mark.parametrize("field", ["labels", "status", "networking"])
def test_deep_nesting_is_a_violation_naming_the_field(field: str) -> None:
    deep: Any = "x"
    for _ in range(2000):  # past Python's recursion limit for a recursive walker
        deep = {"k": deep}
    doc = {**_dataplane(), field: deep}
    [message] = _violations(doc)
    assert message.startswith(f"{field}.k.k.")
    assert message.endswith(": is nested too deeply (more than 32 levels)")


# --- Dataplane rules --------------------------------------------------------------------------


@pytest.mark.parametrize("address", ["0.0.0.0", "::"])
def test_dataplane_address_must_not_be_unspecified(address: str) -> None:
    assert _violations(_dataplane(address=address)) == [
        f"networking.address: {address!r} must not be the unspecified address",
    ]


def test_dataplane_address_must_be_an_ip_or_dns_name() -> None:
    assert _violations(_dataplane(address="web_1.local")) == [
        "networking.address: 'web_1.local' is not an IP address or DNS name",
    ]


def test_dataplane_address_must_not_be_empty() -> None:
    assert _violations(_dataplane(address="")) == ["networking.address: must not be empty"]


def test_dataplane_address_with_a_trailing_newline_is_rejected() -> None:
    assert _violations(_dataplane(address="web.local\n")) == [
        "networking.address: 'web.local\\n' is not an IP address or DNS name",
    ]


def test_advertised_address_must_be_an_ip_or_dns_name() -> None:
    assert _violations(_dataplane(advertisedAddress="not a host")) == [
        "networking.advertisedAddress: 'not a host' is not an IP address or DNS name",
    ]


def test_advertised_address_must_not_be_unspecified() -> None:
    assert _violations(_dataplane(advertisedAddress="0.0.0.0")) == [
        "networking.advertisedAddress: '0.0.0.0' must not be the unspecified address",
    ]


def test_inbound_address_must_be_an_ip() -> None:
    doc = _dataplane(inbound=[{"port": 8080, "address": "web.local"}])

    assert _violations(doc) == ["networking.inbound[0].address: 'web.local' is not an IP address"]


def test_inbound_service_address_must_be_an_ip() -> None:
    doc = _dataplane(inbound=[{"port": 8080, "serviceAddress": "localhost"}])

    assert _violations(doc) == [
        "networking.inbound[0].serviceAddress: 'localhost' is not an IP address",
    ]


def test_dataplane_needs_at_least_one_inbound() -> None:
    assert _violations(_dataplane(inbound=[])) == [
        "networking.inbound: must have at least one inbound",
    ]


def test_tagged_inbound_needs_the_service_tag() -> None:
    doc = _dataplane(inbound=[{"port": 8080, "tags": {"version": "v1"}}])

    assert _violations(doc) == ['networking.inbound[0].tags: "kuma.io/service" is required']


def test_tag_key_must_use_allowed_characters() -> None:
    doc = _dataplane(inbound=[{"port": 8080, "tags": {"kuma.io/service": "web", "a b": "x"}}])

    assert _violations(doc) == [f'networking.inbound[0].tags["a b"]: {TAG_KEY_RULE}']


def test_tag_key_must_not_be_empty() -> None:
    doc = _dataplane(inbound=[{"port": 8080, "tags": {"kuma.io/service": "web", "": "x"}}])

    assert _violations(doc) == [f'networking.inbound[0].tags[""]: {TAG_KEY_RULE}']


def test_tag_value_must_use_allowed_characters() -> None:
    doc = _dataplane(inbound=[{"port": 8080, "tags": {"kuma.io/service": "web/v1"}}])

    assert _violations(doc) == [
        f"networking.inbound[0].tags[\"kuma.io/service\"]: 'web/v1' {TAG_VALUE_RULE}",
    ]


def test_tag_value_must_not_be_empty() -> None:
    doc = _dataplane(inbound=[{"port": 8080, "tags": {"kuma.io/service": "web", "v": ""}}])

    assert _violations(doc) == [f"networking.inbound[0].tags[\"v\"]: '' {TAG_VALUE_RULE}"]


def test_inbound_name_must_not_be_empty() -> None:
    assert _violations(_dataplane(inbound=[{"port": 8080, "name": ""}])) == [
        "networking.inbound[0].name: must not be empty",
    ]


def test_two_inbounds_must_not_listen_on_the_same_address_and_port() -> None:
    doc = _dataplane(inbound=[
        {"port": 8080, "tags": {"kuma.io/service": "web"}},
        {"port": 8080, "address": "10.0.0.1", "tags": {"kuma.io/service": "api"}},
    ])

    assert _violations(doc) == ["networking.inbound: 2 inbounds listen on 10.0.0.1:8080"]


def test_outbound_needs_backend_ref_or_tags() -> None:
    assert _violations(_dataplane(outbound=[{"port": 10001}])) == [
        "networking.outbound[0]: needs exactly one of backendRef or tags",
    ]


def test_outbound_must_not_have_both_backend_ref_and_tags() -> None:
    doc = _dataplane(outbound=[{
        "port": 10001,
        "backendRef": {"kind": "MeshService", "name": "db"},
        "tags": {"kuma.io/service": "db"},
    }])

    assert _violations(doc) == ["networking.outbound[0]: needs exactly one of backendRef or tags"]


def test_backend_ref_needs_name_or_labels() -> None:
    doc = _dataplane(outbound=[{"port": 10001, "backendRef": {"kind": "MeshService"}}])

    assert _violations(doc) == [
        "networking.outbound[0].backendRef: needs exactly one of name or labels",
    ]


def test_backend_ref_must_not_have_both_name_and_labels() -> None:
    ref = {"kind": "MeshService", "name": "db", "labels": {"app": "db"}}

    assert _violations(_dataplane(outbound=[{"port": 10001, "backendRef": ref}])) == [
        "networking.outbound[0].backendRef: needs exactly one of name or labels",
    ]


def test_tagged_outbound_needs_the_service_tag() -> None:
    doc = _dataplane(outbound=[{"port": 10001, "tags": {"version": "v1"}}])

    assert _violations(doc) == ['networking.outbound[0].tags: "kuma.io/service" is required']


def test_outbound_address_must_be_an_ip() -> None:
    doc = _dataplane(outbound=[
        {"port": 10001, "address": "db.local", "tags": {"kuma.io/service": "db"}},
    ])

    assert _violations(doc) == ["networking.outbound[0].address: 'db.local' is not an IP address"]


def test_two_outbounds_must_not_listen_on_the_same_address_and_port() -> None:
    doc = _dataplane(outbound=[
        {"port": 10001, "tags": {"kuma.io/service": "db"}},
        {"port": 10001, "address": "127.0.0.1", "tags": {"kuma.io/service": "cache"}},
    ])

    assert _violations(doc) == ["networking.outbound: 2 outbounds listen on 127.0.0.1:10001"]


def test_reachable_backend_ref_must_not_have_both_name_and_labels() -> None:
    ref = {"kind": "MeshService", "name": "db", "labels": {"app": "db"}}
    doc = _dataplane(transparentProxying={"reachableBackends": {"refs": [ref]}})

    assert _violations(doc) == [
        "networking.transparentProxying.reachableBackends.refs[0]: "
        "name and labels are mutually exclusive",
    ]


def test_admin_port_must_not_collide_with_an_inbound_port() -> None:
    assert _violations(_dataplane(admin={"port": 8080})) == [
        "networking.admin.port: 8080 collides with an inbound or outbound port",
    ]


def test_admin_port_must_not_collide_with_an_outbound_port() -> None:
    doc = _dataplane(
        outbound=[{"port": 9901, "tags": {"kuma.io/service": "db"}}], admin={"port": 9901},
    )

    assert _violations(doc) == [
        "networking.admin.port: 9901 collides with an inbound or outbound port",
    ]


def test_label_key_must_use_allowed_characters() -> None:
    doc = _dataplane()
    doc["labels"] = {"team name": "core"}

    assert _violations(doc) == [f'labels["team name"]: {TAG_KEY_RULE}']


def test_label_value_must_use_allowed_characters() -> None:
    doc = _dataplane()
    doc["labels"] = {"team": "core/platform"}

    assert _violations(doc) == [f"labels[\"team\"]: 'core/platform' {TAG_VALUE_RULE}"]


def test_label_value_with_a_trailing_newline_is_rejected() -> None:
    doc = {"type": "Mesh", "name": "default", "labels": {"team": "core\n"}}

    assert _violations(doc) == [f"labels[\"team\"]: 'core\\n' {TAG_VALUE_RULE}"]


def test_every_semantic_violation_is_reported_in_order() -> None:
    doc = _dataplane(
        address="::",
        inbound=[
            {"port": 8080, "tags": {"version": "v1"}},
            {"port": 8080, "tags": {"kuma.io/service": "web"}},
        ],
        outbound=[{"port": 10001}],
        admin={"port": 10001},
    )
    doc["labels"] = {"team": ""}

    assert _violations(doc) == [
        f"labels[\"team\"]: '' {TAG_VALUE_RULE}",
        "networking.address: '::' must not be the unspecified address",
        'networking.inbound[0].tags: "kuma.io/service" is required',
        "networking.inbound: 2 inbounds listen on :::8080",
        "networking.outbound[0]: needs exactly one of backendRef or tags",
        "networking.admin.port: 10001 collides with an inbound or outbound port",
    ]


# --- MeshService rules ------------------------------------------------------------------------


def test_mesh_service_selector_must_not_be_empty() -> None:
    assert _violations(_mesh_service(selector={"dataplaneTags": {}})) == [
        "spec.selector.dataplaneTags: must select at least one tag",
    ]


def test_mesh_service_selector_tags_must_use_allowed_characters() -> None:
    assert _violations(_mesh_service(selector={"dataplaneTags": {"app": "web app"}})) == [
        f"spec.selector.dataplaneTags[\"app\"]: 'web app' {TAG_VALUE_RULE}",
    ]


def test_mesh_service_needs_at_least_one_port() -> None:
    assert _violations(_mesh_service(ports=[])) == ["spec.ports: must have at least one port"]


def test_mesh_service_port_numbers_must_be_unique() -> None:
    doc = _mesh_service(ports=[{"port": 80, "name": "http"}, {"port": 80, "name": "web"}])

    assert _violations(doc) == [
        "spec.ports[0].port: 80 is used by more than one port",
        "spec.ports[1].port: 80 is used by more than one port",
    ]


def test_mesh_service_port_names_must_be_unique() -> None:
    doc = _mesh_service(ports=[{"port": 80, "name": "http"}, {"port": 81, "name": "http"}])

    assert _violations(doc) == [
        "spec.ports[0].name: 'http' is used by more than one port",
        "spec.ports[1].name: 'http' is used by more than one port",
    ]


def test_mesh_service_port_name_must_be_a_dns1035_label() -> None:
    assert _violations(_mesh_service(ports=[{"port": 80, "name": "Http"}])) == [
        "spec.ports[0].name: 'Http' is not a DNS-1035 label",
    ]


def test_mesh_service_port_name_of_non_ascii_digits_is_rejected() -> None:
    name = "\u0668\u0660"  # "80" in Arabic-Indic digits

    assert _violations(_mesh_service(ports=[{"port": 80, "name": name}])) == [
        f"spec.ports[0].name: {name!r} is not a DNS-1035 label",
    ]


# --- is_dns1035_label -------------------------------------------------------------------------


def test_dns1035_label_accepts_a_lower_case_name() -> None:
    assert is_dns1035_label("backend")


def test_dns1035_label_accepts_63_characters() -> None:
    assert is_dns1035_label("a" * 63)


@pytest.mark.parametrize("value", ["Backend", "1abc", "a_b", "a" * 64, "", "backend-"])
def test_dns1035_label_rejects_invalid_labels(value: str) -> None:
    assert not is_dns1035_label(value)


def test_dns1035_label_rejects_a_trailing_newline() -> None:
    assert not is_dns1035_label("backend\n")


def test_mesh_name_must_be_one_label() -> None:
    with pytest.raises(InvalidResource) as info:
        decode_resource({"type": "Mesh", "name": "team.a"})
    assert [str(v) for v in info.value.violations] == [
        "name: 'team.a' must not contain '.': proxies are named <mesh>.<dataplane>, "
        "so a mesh name is one label"]
