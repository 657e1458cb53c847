"""Parsing the text of a resource document (JSON or YAML) with bounded work and memory.

Every edge that takes a document from outside (the API's request bodies, a proxy's node
metadata) parses it here, before `decoding.decode_resource` checks it:

- a size limit, checked before parsing;
- YAML without aliases: 461 bytes of nested aliases expand to about 1 GB (a
  "billion laughs"), and one more level to ten times that; Kuma's documents never need them;
- nesting bounded (`decoding.MAX_DEPTH`): both parsers recurse per level, and a few KB of
  `[` reach Python's recursion limit; the error names the limit, not a RecursionError.

Errors are `TooLarge`, or `InvalidResource` with the problem in one line (a parser's message
is cut: it may quote the input back).
"""

from __future__ import annotations

from typing import Any

import msgspec
import yaml

from events.decoding import check_depth
from events.errors import InvalidResource, TooLarge, Violation

__all__ = ["MAX_DOCUMENT_BYTES", "load_json", "load_json_or_yaml", "load_yaml"]

MAX_DOCUMENT_BYTES = 1024 * 1024
"""NATS's default max_payload: no larger resource could be appended anyway."""
_MAX_MESSAGE = 300


class _NoAliases(yaml.SafeLoader):
    """PyYAML's safe loader, refusing anchors and aliases."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            # types-PyYAML leaves the parser's peek_event unannotated
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(None, None, "YAML aliases are not allowed",
                                              event.start_mark)
        return super().compose_node(parent, index)


def load_json(raw: bytes | str, where: str = "the body", *, limit: int = MAX_DOCUMENT_BYTES,
              invalid: str = "is not valid JSON") -> object:
    """`raw` as JSON; `where` and `invalid` word the error ("the body is not valid JSON")."""
    _check_size(raw, where, limit)
    try:
        document: object = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise _invalid(where, f"{invalid}: {exc}") from None
    except RecursionError:  # msgspec's decoder recurses per level too
        raise _invalid(where, "is nested too deeply") from None
    check_depth(document)
    return document


def load_yaml(raw: bytes | str, where: str = "the body", *, limit: int = MAX_DOCUMENT_BYTES,
              invalid: str = "is not valid YAML") -> object:
    """`raw` as YAML (one document, no aliases); errors worded as `load_json`'s."""
    _check_size(raw, where, limit)
    try:
        document: object = yaml.load(raw, Loader=_NoAliases)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise _invalid(where, f"{invalid}: {exc}") from None
    except RecursionError:  # PyYAML's composer recurses per level
        raise _invalid(where, "is nested too deeply") from None
    check_depth(document)
    return document


def load_json_or_yaml(raw: bytes | str, where: str, *,
                      limit: int = MAX_DOCUMENT_BYTES) -> object:
    """JSON if it parses as JSON, else YAML (JSON is YAML, but its parser is faster)."""
    _check_size(raw, where, limit)
    try:
        document: object = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return load_yaml(raw, where, limit=limit, invalid="is neither JSON nor YAML")
    except RecursionError:
        raise _invalid(where, "is nested too deeply") from None
    check_depth(document)
    return document


def _check_size(raw: bytes | str, where: str, limit: int) -> None:
    size = len(raw)
    if size > limit:
        unit = "bytes" if isinstance(raw, bytes) else "characters"
        raise TooLarge(f"{where} is {size} {unit}, more than {limit}", size=size, limit=limit)


def _invalid(where: str, message: str) -> InvalidResource:
    if len(message) > _MAX_MESSAGE:
        message = message[:_MAX_MESSAGE] + "..."
    return InvalidResource("document", [Violation("", f"{where} {message}")])
