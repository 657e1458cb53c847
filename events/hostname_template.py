"""The template language of HostnameGenerator `spec.template`: a safe subset of Go's
text/template, as Kuma uses it (reference/kuma-behaviour.md, HostnameGenerator).

    {{ .Name }}  {{ .DisplayName }}  {{ .Namespace }}  {{ .Mesh }}  {{ .Zone }}
    {{ label "key" }}   (also with a `key` in backquotes)
    {{- ... -}}         trims the whitespace of the text next to it, as in Go

Nothing is evaluated: `parse_template` turns the text into literal and lookup parts, and
`render_template` fills them from a `TemplateContext`. A template that does not parse is
refused when it is applied (`TemplateSyntaxError`, reported at `spec.template`); one that fails
for a given service (a missing label, a result that is not a hostname) raises `TemplateError`,
which the projection turns into that service's `Generated=False, reason TemplateError`.
"""

from __future__ import annotations

import functools
import re

from msgspec import Struct

from events.resources import is_resource_name

__all__ = [
    "FIELDS",
    "TemplateContext",
    "TemplateError",
    "TemplateSyntaxError",
    "parse_template",
    "render_template",
]

FIELDS = ("Name", "DisplayName", "Namespace", "Mesh", "Zone")
_FIELD = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)")
_LABEL = re.compile(r'label\s+(?:"((?:[^"\\]|\\.)*)"|`([^`]*)`)')


class TemplateSyntaxError(ValueError):
    """The template text is not in the supported language."""


class TemplateError(ValueError):
    """The template could not be rendered for one service."""


class TemplateContext(Struct, frozen=True, kw_only=True):
    name: str
    display_name: str
    namespace: str = ""
    mesh: str
    zone: str
    labels: dict[str, str] = {}


class _Lookup(Struct, frozen=True):
    field: str | None
    label: str | None


Part = str | _Lookup


@functools.lru_cache(maxsize=256)
def parse_template(text: str) -> tuple[Part, ...]:
    """The parts of `text`, or TemplateSyntaxError saying what is wrong and where."""
    parts: list[Part] = []
    pos = 0
    trim_next = False
    while True:
        start = text.find("{{", pos)
        literal = text[pos:] if start < 0 else text[pos:start]
        if trim_next:
            literal = literal.lstrip()
        if start >= 0 and text.startswith("{{- ", start):
            literal = literal.rstrip()
        if "}}" in literal:
            raise TemplateSyntaxError(f"unexpected '}}}}' at offset {pos + literal.index('}}')}")
        if literal:
            parts.append(literal)
        if start < 0:
            return tuple(parts)
        end = text.find("}}", start + 2)
        if end < 0:
            raise TemplateSyntaxError(f"unclosed action '{{{{' at offset {start}")
        inner = text[start + 2:end]
        trim_next = inner.endswith(" -")
        inner = inner.removeprefix("- ").removesuffix(" -").strip()
        parts.append(_action(inner, start))
        pos = end + 2


def _action(inner: str, offset: int) -> _Lookup:
    field = _FIELD.fullmatch(inner)
    if field is not None:
        if field.group(1) not in FIELDS:
            known = ", ".join(f".{f}" for f in FIELDS)
            raise TemplateSyntaxError(
                f"unknown field .{field.group(1)} at offset {offset}; known: {known}")
        return _Lookup(field.group(1), None)
    label = _LABEL.fullmatch(inner)
    if label is not None:
        quoted, raw = label.groups()
        key = raw if quoted is None else re.sub(r"\\(.)", r"\1", quoted)
        if not key:
            raise TemplateSyntaxError(f"label needs a non-empty key at offset {offset}")
        return _Lookup(None, key)
    shown = inner if len(inner) <= 40 else inner[:37] + "..."
    raise TemplateSyntaxError(
        f"unsupported action {{{{ {shown} }}}} at offset {offset}: only .Name, .DisplayName, "
        '.Namespace, .Mesh, .Zone and label "key" are allowed')


def render_template(text: str, ctx: TemplateContext) -> str:
    """The hostname `text` gives for `ctx`; TemplateError if a label is missing or the result
    is not an RFC 1123 subdomain (Kuma's rule for generated hostnames)."""
    out = []
    for part in parse_template(text):
        if isinstance(part, str):
            out.append(part)
        elif part.label is not None:
            value = ctx.labels.get(part.label)
            if value is None:
                raise TemplateError(f"label {part.label} not found")
            out.append(value)
        else:
            out.append(_field(ctx, part.field or ""))
    hostname = "".join(out)
    if not is_resource_name(hostname):  # the same rule: an RFC 1123 subdomain
        raise TemplateError(f"{hostname!r} is not a valid hostname (RFC 1123 subdomain: "
                            "lower-case letters, digits, '-' and '.')")
    return hostname


def _field(ctx: TemplateContext, field: str) -> str:
    match field:
        case "Name":
            return ctx.name
        case "DisplayName":
            return ctx.display_name
        case "Namespace":
            return ctx.namespace
        case "Mesh":
            return ctx.mesh
        case _:
            return ctx.zone
