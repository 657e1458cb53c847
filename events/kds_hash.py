"""Kuma's names for resources synced across zones (KDS `HashSuffixMapper`).

Outside its own zone, a zone's resource is named `<displayName[:236]>-<hash>` (kumahq/kuma
v2.14 `pkg/kds/hash/hash.go`, reference/multizone.md §1): the hash is FNV-1a 64 over the plain
concatenation (no separator) of mesh, display name, zone and Kubernetes namespace ("" in a
universal zone), written as 16 lower-case hex digits, each mapped through Kubernetes'
`rand.SafeEncodeString` alphabet (no vowels, no look-alikes), so the suffix never spells words
and is the same on global and in every zone.

Length: 236 + 1 + 16 = 253 characters at most, the resource-name limit (an RFC 1123
subdomain), so a synced name is always a valid name. It can exceed 63 characters (a DNS
label): Kuma's kumahq/kuma#13015. meshlog never uses the synced name as a DNS label (the
synced hostnames come from the display name, `{{ .DisplayName }}.svc.{{ .Zone }}.mesh.local`),
so a long one only shows in listings and cluster names.
"""

from __future__ import annotations

__all__ = ["MAX_DISPLAY_NAME", "fnv1a64", "hashed_name", "safe_encode"]

MAX_DISPLAY_NAME = 236
_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_MASK = (1 << 64) - 1
_SAFE = "bcdfghjklmnpqrstvwxz2456789"
"""k8s.io/apimachinery `rand.SafeEncodeString`'s alphabet: byte b -> _SAFE[b % 27]."""


def fnv1a64(data: bytes) -> int:
    value = _FNV_OFFSET
    for byte in data:
        value = ((value ^ byte) * _FNV_PRIME) & _MASK
    return value


def safe_encode(text: str) -> str:
    """Kubernetes' `rand.SafeEncodeString`: each byte mapped into the safe alphabet."""
    return "".join(_SAFE[b % len(_SAFE)] for b in text.encode())


def hashed_name(mesh: str, display_name: str, zone: str, namespace: str = "") -> str:
    """Kuma's `hash.HashedName(mesh, name, zone, namespace)`: the name of `display_name` of
    `zone` outside that zone."""
    digest = fnv1a64((mesh + display_name + zone + namespace).encode())
    return f"{display_name[:MAX_DISPLAY_NAME]}-{safe_encode(format(digest, '016x'))}"
