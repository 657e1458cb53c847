"""Strict decoding of user input into resources, reporting *every* violation with its path.

msgspec stops at the first error. At the edge we want all of them, so `decode_resource` walks
the raw document against the Struct's type information (`msgspec.inspect`), collects type,
range, pattern, required and unknown-field violations, then runs the semantic rules of
`events.validation`, and only converts to the typed Struct once the document is clean.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import msgspec
import msgspec.inspect as mi

from events.errors import InvalidResource, Violation
from events.resources import (
    RFC1123_SUBDOMAIN,
    Dataplane,
    HostnameGenerator,
    Mesh,
    MeshService,
    Resource,
)
from events.validation import validate

__all__ = ["KINDS", "decode_resource", "kind_of"]

KINDS: dict[str, type[Resource]] = {
    "Mesh": Mesh, "Dataplane": Dataplane, "MeshService": MeshService,
    "HostnameGenerator": HostnameGenerator,
}


def kind_of(raw: Any) -> str:
    """The `type` of a raw resource document, or raise InvalidResource naming the problem."""
    if not isinstance(raw, dict):
        raise InvalidResource("resource", [Violation("", f"expected an object, got {_show(raw)}")])
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in KINDS:
        known = ", ".join(KINDS)
        raise InvalidResource(
            "resource", [Violation("type", f"{_show(kind)} is not one of {known}")]
        )
    return kind


def decode_resource(raw: Any, expected_kind: str | None = None) -> Resource:
    """Decode a raw document (from JSON or YAML) into a validated resource."""
    kind = kind_of(raw)
    if expected_kind is not None and kind != expected_kind:
        raise InvalidResource(
            expected_kind,
            [Violation("type", f"{kind!r} does not match the URL's {expected_kind!r}")],
        )
    cls = KINDS[kind]
    violations: list[Violation] = []
    _check(raw, mi.type_info(cls), "", violations)
    if violations:
        raise InvalidResource(kind, violations)
    resource = msgspec.convert(raw, cls)
    if isinstance(resource, MeshService | Dataplane) and resource.status is not None:
        resource = msgspec.structs.replace(resource, status=None)  # the control plane's
    violations = validate(resource)
    if violations:
        raise InvalidResource(kind, violations)
    return resource


# --- the walker -----------------------------------------------------------------------------


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else msgspec.json.encode(value).decode()
    return text if len(text) <= 80 else text[:77] + "..."


def _check(value: Any, t: mi.Type, path: str, out: list[Violation]) -> None:
    checker = _CHECKERS.get(type(t))
    if checker is not None:  # kinds without a checker (Raw, Any) accept anything
        checker(value, t, path, out)


def _check_struct(value: Any, t: mi.StructType, path: str, out: list[Violation]) -> None:
    if not isinstance(value, dict):
        out.append(Violation(path, f"expected an object, got {_show(value)}"))
        return
    known = {f.encode_name: f for f in t.fields}
    for key in value:
        if key not in known and key != t.tag_field:
            out.append(Violation(_join(path, str(key)), "unknown field"))
    for f in t.fields:
        if f.encode_name in value:
            _check(value[f.encode_name], f.type, _join(path, f.encode_name), out)
        elif f.required:
            out.append(Violation(_join(path, f.encode_name), "is required"))


def _check_list(value: Any, t: mi.ListType, path: str, out: list[Violation]) -> None:
    if not isinstance(value, list):
        out.append(Violation(path, f"expected an array, got {_show(value)}"))
        return
    for i, item in enumerate(value):
        _check(item, t.item_type, f"{path}[{i}]", out)


def _check_dict(value: Any, t: mi.DictType, path: str, out: list[Violation]) -> None:
    if not isinstance(value, dict):
        out.append(Violation(path, f"expected an object, got {_show(value)}"))
        return
    for key, item in value.items():
        _check(key, t.key_type, path, out)
        _check(item, t.value_type, f'{path}["{key}"]', out)


def _check_union(value: Any, t: mi.UnionType, path: str, out: list[Violation]) -> None:
    if value is None and t.includes_none:
        return
    options = [o for o in t.types if not isinstance(o, mi.NoneType)]
    if len(options) == 1:
        _check(value, options[0], path, out)
        return
    for option in options:  # the first option that accepts the value wins
        trial: list[Violation] = []
        _check(value, option, path, trial)
        if not trial:
            return
    kinds = " or ".join(_describe(o) for o in options)
    out.append(Violation(path, f"{_show(value)} is not {kinds}"))


def _check_int(value: Any, t: mi.IntType, path: str, out: list[Violation]) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        out.append(Violation(path, f"expected an integer, got {_show(value)}"))
    elif (t.ge is not None and value < t.ge) or (t.le is not None and value > t.le):
        out.append(Violation(path, f"{value} is not in {t.ge}..{t.le}"))


def _check_str(value: Any, t: mi.StrType, path: str, out: list[Violation]) -> None:
    if not isinstance(value, str):
        out.append(Violation(path, f"expected a string, got {_show(value)}"))
    elif t.min_length is not None and len(value) < t.min_length:
        out.append(Violation(path, "must not be empty" if t.min_length == 1 else
                             f"must be at least {t.min_length} characters"))
    elif t.max_length is not None and len(value) > t.max_length:
        out.append(Violation(path, f"must be at most {t.max_length} characters"))
    elif t.pattern is not None and not re.search(t.pattern, value):
        rule = _PATTERN_RULES.get(t.pattern, f"does not match {t.pattern}")
        out.append(Violation(path, f"{_show(value)} {rule}"))


def _check_literal(value: Any, t: mi.LiteralType, path: str, out: list[Violation]) -> None:
    if value not in t.values:
        choices = ", ".join(str(v) for v in t.values)
        out.append(Violation(path, f"{_show(value)} is not one of {choices}"))


def _check_bool(value: Any, t: mi.BoolType, path: str, out: list[Violation]) -> None:
    if not isinstance(value, bool):
        out.append(Violation(path, f"expected true or false, got {_show(value)}"))


def _describe(t: mi.Type) -> str:
    if isinstance(t, mi.IntType):
        return f"an integer in {t.ge}..{t.le}" if t.ge is not None else "an integer"
    if isinstance(t, mi.StrType):
        return "a non-empty string" if t.min_length else "a string"
    return type(t).__name__.removesuffix("Type").lower()


_PATTERN_RULES = {
    RFC1123_SUBDOMAIN: (
        "is not a valid name (RFC 1123 subdomain: lower-case letters, digits, '-' and '.', "
        "starting and ending with a letter or digit)"
    ),
}

_CHECKERS: dict[type, Callable[[Any, Any, str, list[Violation]], None]] = {
    mi.StructType: _check_struct,
    mi.ListType: _check_list,
    mi.DictType: _check_dict,
    mi.UnionType: _check_union,
    mi.IntType: _check_int,
    mi.StrType: _check_str,
    mi.LiteralType: _check_literal,
    mi.BoolType: _check_bool,
}
