"""Strict decoding of user input into resources, reporting *every* violation with its path.

msgspec stops at the first error. At the edge we want all of them, so `decode_resource` walks
the raw document against the Struct's type information (`msgspec.inspect`), collects type,
range, pattern, required and unknown-field violations, then runs the semantic rules of
`events.validation` on the well-shaped part (invalid values stood in for), so one answer lists
every violation, and only converts to the typed Struct once the document is clean.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import msgspec
import msgspec.inspect as mi

from events.errors import InvalidResource, Violation
from events.policy_kinds import POLICY_KINDS
from events.resources import (
    Dataplane,
    HostnameGenerator,
    Mesh,
    MeshMultiZoneService,
    MeshService,
    Resource,
    ZoneIngress,
)
from events.resources._base import RFC1123_SUBDOMAIN
from events.validation import validate

__all__ = ["KINDS", "MAX_DEPTH", "READ_ONLY_FIELDS", "check_depth", "decode_resource", "kind_of"]

KINDS: dict[str, type[Resource]] = {
    "Mesh": Mesh, "Dataplane": Dataplane, "MeshService": MeshService,
    "HostnameGenerator": HostnameGenerator,
    **{kind.type_name: kind.schema for kind in POLICY_KINDS},
    "MeshMultiZoneService": MeshMultiZoneService,
    "ZoneIngress": ZoneIngress,
}


READ_ONLY_FIELDS = ("creationTime", "modificationTime", "status")
"""What the control plane writes and a `get -o yaml` shows: accepted on input and ignored, as
Kuma and Kubernetes do, so a document read back applies again."""

MAX_DEPTH = 32
"""How deeply a document may nest. The deepest schema path is 7 levels; `labels` and the
ignored `status` hold free-form values. Bounds the decoders' recursion (a few KB of `[`
would otherwise reach Python's recursion limit)."""


def kind_of(raw: Any) -> str:
    """The `type` of a raw resource document, or raise InvalidResource naming the problem."""
    if not isinstance(raw, dict):
        raise InvalidResource("resource", [Violation("", f"expected an object, got {_show(raw)}")])
    kind = raw.get("type")
    if kind is None and "kind" in raw and "metadata" in raw:
        raise InvalidResource("resource", [Violation(
            "type", "is missing: this is a Kubernetes document (kind, metadata, spec); meshlog "
            "takes Kuma's universal format, with `type`, `name` and `mesh` at the top level "
            "and the spec's fields beside them, e.g. `type: Dataplane`, `mesh: default`, "
            "`name: web-1`, `networking: {...}`")])
    if not isinstance(kind, str) or kind not in KINDS:
        known = ", ".join(KINDS)
        raise InvalidResource(
            "resource", [Violation("type", f"{_show(kind)} is not one of {known}")]
        )
    return kind


def decode_resource(raw: Any, expected_kind: str | None = None) -> Resource:
    """Decode a raw document (from JSON or YAML) into a validated resource. Every violation
    of the document is reported at once: its shape, and the semantic rules of whatever part
    of it is well shaped."""
    check_depth(raw)
    kind = kind_of(raw)
    if expected_kind is not None and kind != expected_kind:
        raise InvalidResource(
            expected_kind,
            [Violation("type", f"{kind!r} does not match the URL's {expected_kind!r}")],
        )
    cls = KINDS[kind]
    raw = {k: v for k, v in raw.items() if k not in READ_ONLY_FIELDS}
    shape: list[Violation] = []
    sane = _check(raw, mi.type_info(cls), "", shape)
    if not shape:
        resource = msgspec.convert(raw, cls)
        violations = validate(resource)
        if violations:
            raise InvalidResource(kind, violations)
        return resource
    # The semantic rules of the well-shaped part: invalid values were replaced by harmless
    # ones of the right type (or dropped where optional); what the rules say of those is
    # left out, since the shape violation already names the field.
    semantic: list[Violation] = []
    if sane is not _INVALID:
        try:
            semantic = validate(msgspec.convert(sane, cls))
        except msgspec.ValidationError:
            pass  # not salvageable: the shape violations are the answer
    wrong = [v.path for v in shape]
    raise InvalidResource(kind, shape + [v for v in semantic
                                         if not any(_within(v.path, w) for w in wrong)])


def check_depth(raw: Any, limit: int = MAX_DEPTH) -> None:
    """Raise InvalidResource naming the path where `raw` nests deeper than `limit`, or holds
    a string that is not text (a lone UTF-16 surrogate, which YAML's `"\\ud800"` escape
    makes and no event could be encoded with). Iterative: a document deep enough to matter
    must not exhaust the stack of the check itself."""
    stack: list[tuple[Any, str, int]] = [(raw, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if depth > limit:
            raise InvalidResource("resource", [Violation(
                path, f"is nested too deeply (more than {limit} levels)")])
        if isinstance(value, str):
            _check_text(value, path)
        elif isinstance(value, dict):
            for k in value:
                if isinstance(k, str):
                    _check_text(k, path)
            stack.extend((v, _join(path, str(k)), depth + 1) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value))


def _check_text(value: str, path: str) -> None:
    try:
        value.encode()
    except UnicodeEncodeError as exc:
        raise InvalidResource("resource", [Violation(
            path, f"holds {value[exc.start]!r} at character {exc.start}, a lone UTF-16 "
                  "surrogate, which is not text")]) from None


def _within(path: str, wrong: str) -> bool:
    """Whether a rule's violation at `path` may come from the stand-in at `wrong`: the same
    field, a field inside it, or one that holds it."""
    return _under(path, wrong) or _under(wrong, path)


def _under(path: str, ancestor: str) -> bool:
    return (not ancestor or path == ancestor
            or path.startswith((f"{ancestor}.", f"{ancestor}[")))


# --- the walker -----------------------------------------------------------------------------
#
# Each checker appends the violations of `value` and returns it sanitized for the semantic
# rules: a valid value as it is, an invalid one replaced by `_placeholder` of its type, or
# `_INVALID` when no such value exists (the caller drops it if it is optional).

_INVALID: Any = object()


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else msgspec.json.encode(value).decode()
    return text if len(text) <= 80 else text[:77] + "..."


def _check(value: Any, t: mi.Type, path: str, out: list[Violation]) -> Any:
    checker = _CHECKERS.get(type(t))
    if checker is None:  # kinds without a checker (Raw, Any) accept anything
        return value
    before = len(out)
    sane = checker(value, t, path, out)
    if len(out) > before and sane is _INVALID:
        return _placeholder(t)
    return sane


def _check_struct(value: Any, t: mi.StructType, path: str, out: list[Violation]) -> Any:
    if not isinstance(value, dict):
        out.append(Violation(path, f"expected an object, got {_show(value)}"))
        return _INVALID
    known = {f.encode_name: f for f in t.fields}
    for key in value:
        if key not in known and key != t.tag_field:
            out.append(Violation(_join(path, str(key)), "unknown field"))
    sane: dict[str, Any] = {}
    if t.tag_field is not None and t.tag_field in value:
        sane[t.tag_field] = value[t.tag_field]
    for f in t.fields:
        if f.encode_name in value:
            item = _check(value[f.encode_name], f.type, _join(path, f.encode_name), out)
            if item is not _INVALID:
                sane[f.encode_name] = item
            elif f.required:
                return _INVALID
        elif f.required:
            out.append(Violation(_join(path, f.encode_name), "is required"))
            stand_in = _placeholder(f.type)
            if stand_in is _INVALID:
                return _INVALID
            sane[f.encode_name] = stand_in
    return sane


def _check_list(value: Any, t: mi.ListType, path: str, out: list[Violation]) -> Any:
    if not isinstance(value, list):
        out.append(Violation(path, f"expected an array, got {_show(value)}"))
        return _INVALID
    sane = [_check(item, t.item_type, f"{path}[{i}]", out) for i, item in enumerate(value)]
    # an item that cannot be stood in for would shift the indexes the rules report
    return _INVALID if any(item is _INVALID for item in sane) else sane


def _check_dict(value: Any, t: mi.DictType, path: str, out: list[Violation]) -> Any:
    if not isinstance(value, dict):
        out.append(Violation(path, f"expected an object, got {_show(value)}"))
        return _INVALID
    sane: dict[Any, Any] = {}
    for key, item in value.items():
        before = len(out)
        _check(key, t.key_type, path, out)
        checked = _check(item, t.value_type, f'{path}["{key}"]', out)
        if len(out) == before:
            sane[key] = checked
    return sane


def _check_union(value: Any, t: mi.UnionType, path: str, out: list[Violation]) -> Any:
    if value is None and t.includes_none:
        return None
    options = [o for o in t.types if not isinstance(o, mi.NoneType)]
    if len(options) == 1:
        return _check(value, options[0], path, out)
    for option in options:  # the first option that accepts the value wins
        trial: list[Violation] = []
        sane = _check(value, option, path, trial)
        if not trial:
            return sane
    kinds = " or ".join(_describe(o) for o in options)
    out.append(Violation(path, f"{_show(value)} is not {kinds}"))
    return None if t.includes_none else _INVALID


def _check_int(value: Any, t: mi.IntType, path: str, out: list[Violation]) -> Any:
    if not isinstance(value, int) or isinstance(value, bool):
        out.append(Violation(path, f"expected an integer, got {_show(value)}"))
        return _INVALID
    if (t.ge is not None and value < t.ge) or (t.le is not None and value > t.le):
        out.append(Violation(path, f"{value} is not in {t.ge}..{t.le}"))
        return _INVALID
    return value


def _check_str(value: Any, t: mi.StrType, path: str, out: list[Violation]) -> Any:
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
    else:
        return value
    return _INVALID


def _check_literal(value: Any, t: mi.LiteralType, path: str, out: list[Violation]) -> Any:
    if value not in t.values:
        choices = ", ".join(str(v) for v in t.values)
        out.append(Violation(path, f"{_show(value)} is not one of {choices}"))
        return _INVALID
    return value


def _check_bool(value: Any, t: mi.BoolType, path: str, out: list[Violation]) -> Any:
    if not isinstance(value, bool):
        out.append(Violation(path, f"expected true or false, got {_show(value)}"))
        return _INVALID
    return value


def _placeholder(t: mi.Type) -> Any:
    """A value of type `t` that stands in for an invalid one while the semantic rules look at
    the rest of the document; `_INVALID` if there is none."""
    match t:
        case mi.IntType():
            return t.ge if t.ge is not None else (t.le if t.le is not None else 0)
        case mi.StrType():
            for candidate in _STRING_PLACEHOLDERS:
                if _check_str(candidate, t, "", []) is not _INVALID:
                    return candidate
            return _INVALID
        case mi.LiteralType():
            return t.values[0]
        case mi.BoolType():
            return False
        case _:
            return _INVALID


_STRING_PLACEHOLDERS = ("x", "1s")
"""Tried in order: a valid name (RFC 1123), a duration."""


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

_CHECKERS: dict[type, Callable[[Any, Any, str, list[Violation]], Any]] = {
    mi.StructType: _check_struct,
    mi.ListType: _check_list,
    mi.DictType: _check_dict,
    mi.UnionType: _check_union,
    mi.IntType: _check_int,
    mi.StrType: _check_str,
    mi.LiteralType: _check_literal,
    mi.BoolType: _check_bool,
}
