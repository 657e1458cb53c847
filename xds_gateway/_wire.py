"""Hand-assembled DiscoveryResponse bytes from resources encoded once (invariant 9).

A response is a few length-delimited fields around the `Any` bytes of its resources, which
are cached and shared by every stream: building a response is a concatenation, not an encode.
Field numbers are those of envoy.service.discovery.v3.DiscoveryResponse.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["any_bytes", "discovery_response"]

_VERSION_INFO, _RESOURCES, _TYPE_URL, _NONCE = 1, 2, 4, 5
_ANY_TYPE_URL, _ANY_VALUE = 1, 2


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


def any_bytes(type_url: str, value: bytes) -> bytes:
    """The serialized google.protobuf.Any holding `value`."""
    return _field(_ANY_TYPE_URL, type_url.encode()) + _field(_ANY_VALUE, value)


def discovery_response(version_info: str, type_url: str, nonce: str,
                       resources: Iterable[bytes]) -> bytes:
    parts = [_field(_VERSION_INFO, version_info.encode())]
    parts.extend(_field(_RESOURCES, r) for r in resources)
    parts.append(_field(_TYPE_URL, type_url.encode()))
    parts.append(_field(_NONCE, nonce.encode()))
    return b"".join(parts)
