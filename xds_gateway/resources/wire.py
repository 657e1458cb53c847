"""Hand-assembled (Delta)DiscoveryResponse bytes from resources encoded once (invariant 9).

A response is a few length-delimited fields around the `Any` bytes of its resources, which
are cached and shared by every stream: building a response is a concatenation, not an encode.
Field numbers are those of envoy.service.discovery.v3.DiscoveryResponse, DeltaDiscoveryResponse
and Resource.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "ack_frame", "any_bytes", "delta_discovery_response", "request_names", "response_body",
    "with_nonce",
]

_VERSION_INFO, _RESOURCES, _TYPE_URL, _NONCE = 1, 2, 4, 5
_ANY_TYPE_URL, _ANY_VALUE = 1, 2
_D_SYSTEM_VERSION_INFO, _D_RESOURCES, _D_TYPE_URL, _D_NONCE, _D_REMOVED = 1, 2, 4, 5, 6
_RES_VERSION, _RES_RESOURCE, _RES_NAME = 1, 2, 3
_REQ_VERSION_INFO, _REQ_RESOURCE_NAMES, _REQ_TYPE_URL, _REQ_NONCE = 1, 3, 4, 5


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


def _tag(number: int, length: int) -> bytes:
    return _varint((number << 3) | 2) + _varint(length)


def any_bytes(type_url: str, value: bytes) -> bytes:
    """The serialized google.protobuf.Any holding `value`."""
    return _field(_ANY_TYPE_URL, type_url.encode()) + _field(_ANY_VALUE, value)


def response_body(version_info: str, type_url: str, resources: Iterable[bytes]) -> bytes:
    """A DiscoveryResponse without its nonce: the part streams can share (invariant 9)."""
    parts = [_field(_VERSION_INFO, version_info.encode())]
    parts.extend(_field(_RESOURCES, r) for r in resources)
    parts.append(_field(_TYPE_URL, type_url.encode()))
    return b"".join(parts)


def with_nonce(body: bytes, nonce: str) -> bytes:
    """`body` plus the stream's nonce: protobuf fields may come in any order, and a field
    appended to a message's bytes is parsed as part of it."""
    return body + _field(_NONCE, nonce.encode())


def delta_discovery_response(system_version_info: str, type_url: str, nonce: str,
                             resources: Iterable[tuple[str, str, bytes]],
                             removed: Iterable[str]) -> bytes:
    """`resources` are (name, version, Any bytes); each Any is copied once, into the result."""
    parts = [_field(_D_SYSTEM_VERSION_INFO, system_version_info.encode())]
    for name, version, any_ in resources:
        head = _field(_RES_VERSION, version.encode())
        tail = _field(_RES_NAME, name.encode())
        any_tag = _tag(_RES_RESOURCE, len(any_))
        parts += (_tag(_D_RESOURCES, len(head) + len(any_tag) + len(any_) + len(tail)),
                  head, any_tag, any_, tail)
    parts.append(_field(_D_TYPE_URL, type_url.encode()))
    parts.extend(_field(_D_REMOVED, name.encode()) for name in removed)
    parts.append(_field(_D_NONCE, nonce.encode()))
    return b"".join(parts)


def request_names(names: Iterable[str]) -> bytes:
    """`resource_names` as a serialized DiscoveryRequest carries them, in the given order."""
    return b"".join(_field(_REQ_RESOURCE_NAMES, name.encode()) for name in names)


def ack_frame(version_info: str, type_url: str, nonce: str) -> tuple[bytes, bytes]:
    """The bytes before and after `resource_names` in a serialized DiscoveryRequest that ACKs
    `version_info` and `nonce` of `type_url` and carries nothing else (no node, no error).

    Comparing a request's bytes with `head + request_names(...) + tail` recognises a plain ACK
    without making a Python string of each of its (often ~100) names; a request laid out any
    other way just does not match."""
    return (_field(_REQ_VERSION_INFO, version_info.encode()),
            _field(_REQ_TYPE_URL, type_url.encode()) + _field(_REQ_NONCE, nonce.encode()))
