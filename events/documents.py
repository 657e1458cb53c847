"""Parsing the text of a resource document (JSON or YAML) with bounded work and memory.

Every edge that takes a document's text from outside (the API's request bodies, a proxy's
node metadata given as text) parses it here, before `decoding.decode_resource` checks it (a
proxy's metadata given as a protobuf Struct is size-bounded where it is converted):

- a size limit, checked before parsing;
- YAML without aliases: 461 bytes of nested aliases expand to about 1 GB (a
  "billion laughs"), and one more level to ten times that; Kuma's documents never need them;
- nesting bounded (`decoding.MAX_DEPTH`): both parsers recurse per level, and a few KB of
  `[` reach Python's recursion limit; the error names the limit, not a RecursionError.

Errors are `TooLarge`, or `InvalidResource` with the problem in one line (a parser's message
is cut: it may quote the input back).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import yaml

from events.decoding import MAX_DEPTH, check_depth
from events.errors import InvalidResource, TooLarge, Violation

__all__ = ["MAX_DOCUMENT_BYTES", "load_json", "load_json_or_yaml", "load_yaml"]

MAX_DOCUMENT_BYTES = 1024 * 1024
"""NATS's default max_payload: no larger resource could be appended anyway."""
_MAX_MESSAGE = 300


class _NoAliases(yaml.SafeLoader):
    """PyYAML's safe loader, refusing anchors and aliases."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]  # unannotated in stubs
            raise yaml.composer.ComposerError(None, None, "YAML aliases are not allowed",
                                              event.start_mark)
        return super().compose_node(parent, index)


def load_json(raw: bytes | str, where: str = "the body", *, limit: int = MAX_DOCUMENT_BYTES,
              invalid: str = "is not valid JSON") -> object:
    """`raw` as JSON; `where` and `invalid` word the error ("the body is not valid JSON")."""
    _check_size(raw, where, limit)
    try:
        return _bounded(raw, where, msgspec.json.decode)
    except msgspec.DecodeError as exc:
        raise _invalid(where, f"{invalid}: {exc}") from None


def load_yaml(raw: bytes | str, where: str = "the body", *, limit: int = MAX_DOCUMENT_BYTES,
              invalid: str = "is not valid YAML") -> object:
    """`raw` as YAML (one document, no aliases); errors worded as `load_json`'s."""
    _check_size(raw, where, limit)
    try:
        return _bounded(raw, where, _yaml)
    except yaml.YAMLError as exc:
        raise _invalid(where, f"{invalid}: {exc}") from None


def load_json_or_yaml(raw: bytes | str, where: str, *,
                      limit: int = MAX_DOCUMENT_BYTES) -> object:
    """JSON if it parses as JSON, else YAML (JSON is YAML, but its parser is faster)."""
    _check_size(raw, where, limit)
    try:
        return _bounded(raw, where, msgspec.json.decode)
    except msgspec.DecodeError:
        return load_yaml(raw, where, limit=limit, invalid="is neither JSON nor YAML")


def _yaml(raw: bytes | str) -> object:
    return yaml.load(raw, Loader=_NoAliases)  # a SafeLoader subclass


def _bounded(raw: bytes | str, where: str, parse: Callable[[bytes | str], object]) -> object:
    """`parse(raw)` with its depth bounded; the parser's own errors pass through."""
    try:
        document = parse(raw)
    except RecursionError:  # both parsers recurse per level
        raise _too_deep(raw, where) from None
    check_depth(document)
    return document


def _too_deep(raw: bytes | str, where: str) -> InvalidResource:
    """The error for a document too deep for the parsers' recursion, naming where it nests
    past `MAX_DEPTH` when PyYAML's parser, which keeps its own stack (JSON is YAML), can
    tell; else the document as a whole."""
    path = _deep_path(raw)
    if path is None:
        return _invalid(where, "is nested too deeply")
    return InvalidResource("resource", [Violation(
        path, f"is nested too deeply (more than {MAX_DEPTH} levels)")])


def _deep_path(raw: bytes | str) -> str | None:
    """The path at which `raw` nests deeper than `MAX_DEPTH`, from YAML parse events."""
    stack: list[list[Any]] = []  # per open collection: [is_mapping, key or index, expecting]
    path: list[str] = []
    try:
        for event in yaml.parse(raw, Loader=_NoAliases):
            if isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
                if stack:
                    path.append(_step(stack[-1]))
                if len(stack) >= MAX_DEPTH:
                    return ".".join(path).replace(".[", "[") or None
                stack.append([isinstance(event, yaml.MappingStartEvent), -1, True])
            elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
                stack.pop()
                if path:
                    path.pop()
                if stack:
                    _advance(stack[-1])
            elif isinstance(event, yaml.ScalarEvent) and stack:
                top = stack[-1]
                if not top[0]:  # a sequence's item
                    top[1] += 1
                elif top[2]:  # a mapping's key
                    top[1], top[2] = event.value, False
                else:  # a mapping's value
                    top[2] = True
    except yaml.YAMLError:
        return None
    return None


def _step(top: list[Any]) -> str:
    """The path step to the collection that starts inside `top`."""
    if top[0]:
        return str(top[1])
    top[1] += 1
    return f"[{top[1]}]"


def _advance(top: list[Any]) -> None:
    """A value of `top` is done: a mapping expects its next key."""
    if top[0]:
        top[2] = True


def _check_size(raw: bytes | str, where: str, limit: int) -> None:
    size = len(raw)
    if size > limit:
        unit = "bytes" if isinstance(raw, bytes) else "characters"
        raise TooLarge(f"{where} is {size} {unit}, more than {limit}", size=size, limit=limit)


def _invalid(where: str, message: str) -> InvalidResource:
    if len(message) > _MAX_MESSAGE:
        message = message[:_MAX_MESSAGE] + "..."
    return InvalidResource("document", [Violation("", f"{where} {message}")])
