"""HostnameGenerator: the template language (parse at apply, render per service) and the
resource's validation."""

from __future__ import annotations

import re
from typing import Any

import pytest

from events import (
    HostnameGenerator,
    InvalidResource,
    TemplateContext,
    TemplateError,
    TemplateSyntaxError,
    decode_resource,
    parse_template,
    render_template,
)

CTX = TemplateContext(name="backend", display_name="shop", mesh="default", zone="east",
                      labels={"team": "blue", "tier": "Gold"})


@pytest.mark.parametrize(("template", "hostname"), [
    ("{{ .DisplayName }}.svc.mesh.local", "shop.svc.mesh.local"),
    ("{{.Name}}.{{ .Mesh }}.{{ .Zone }}.mesh", "backend.default.east.mesh"),
    ('{{ label "team" }}-{{ .Name }}.internal', "blue-backend.internal"),
    ("{{ label `team` }}.x", "blue.x"),
    ("{{ .Name }}{{ .Namespace }}.svc", "backend.svc"),
    ("api  {{- .Name -}}  .local", "apibackend.local"),
    ("static.example", "static.example"),
])
def test_templates_render_kumas_fields_and_labels(template: str, hostname: str) -> None:
    assert render_template(template, CTX) == hostname


@pytest.mark.parametrize(("template", "error"), [
    ("{{ .Foo }}.svc", "unknown field .Foo at offset 0"),
    ("{{ .Name }.svc", "unclosed action '{{' at offset 0"),
    ("x.{{ printf \"%s\" .Name }}", "unsupported action {{ printf \"%s\" .Name }} at offset 2"),
    ("{{ label \"\" }}", "label needs a non-empty key"),
    ("{{ .Name | upper }}", "unsupported action"),
    ("a}}b", "unexpected '}}' at offset 1"),
])
def test_templates_outside_the_language_are_syntax_errors(template: str, error: str) -> None:
    with pytest.raises(TemplateSyntaxError, match=re.escape(error)):
        parse_template(template)


def test_a_missing_label_fails_at_render_time_naming_the_label() -> None:
    with pytest.raises(TemplateError, match="label region not found"):
        render_template('{{ label "region" }}.{{ .Name }}', CTX)


@pytest.mark.parametrize("template", ['{{ label "tier" }}.svc', "{{ .Name }}..svc",
                                      "{{ .Namespace }}", "-{{ .Name }}"])
def test_a_result_that_is_not_an_rfc1123_hostname_fails_at_render_time(template: str) -> None:
    with pytest.raises(TemplateError, match="is not a valid hostname"):
        render_template(template, CTX)


def _generator(spec: dict[str, Any]) -> dict[str, Any]:
    return {"type": "HostnameGenerator", "name": "custom", "spec": spec}


def test_a_hostname_generator_decodes_in_kumas_universal_format() -> None:
    hg = decode_resource(_generator({
        "template": "{{ .DisplayName }}.mesh",
        "selector": {"meshService": {"matchLabels": {"kuma.io/origin": "zone"}}}}))
    assert isinstance(hg, HostnameGenerator)
    assert hg.spec.selector.mesh_service is not None
    assert hg.spec.selector.mesh_service.match_labels == {"kuma.io/origin": "zone"}


def _violations(doc: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(InvalidResource) as info:
        decode_resource(doc)
    return [(v.path, v.message) for v in info.value.violations]


def test_an_invalid_template_is_refused_naming_spec_template_and_the_error() -> None:
    [(path, message)] = _violations(_generator({
        "template": "{{ .Nam }}.svc", "selector": {"meshService": {}}}))
    assert path == "spec.template"
    assert "'{{ .Nam }}.svc' is not a valid template: unknown field .Nam" in message


def test_an_empty_template_is_refused() -> None:
    assert _violations(_generator({"template": " ", "selector": {"meshService": {}}})) == [
        ("spec.template", "must not be empty")]


@pytest.mark.parametrize("selector", [
    {}, {"meshService": {}, "meshExternalService": {}},
])
def test_exactly_one_selector_kind_is_required(selector: dict[str, Any]) -> None:
    [(path, message)] = _violations(_generator({"template": "{{ .Name }}.x",
                                                "selector": selector}))
    assert path == "spec.selector"
    assert message.startswith("exactly one of meshService, meshExternalService or "
                              "meshMultiZoneService")


def test_selector_labels_follow_the_tag_rules() -> None:
    violations = _violations(_generator({
        "template": "{{ .Name }}.x", "selector": {"meshService": {"matchLabels": {"a b": "c"}}}}))
    assert [p for p, _ in violations] == ['spec.selector.meshService.matchLabels["a b"]']


def test_a_hostname_generator_is_global_and_has_no_mesh() -> None:
    violations = _violations({**_generator({"template": "{{ .Name }}.x",
                                            "selector": {"meshService": {}}}), "mesh": "default"})
    assert violations == [("mesh", "unknown field")]
