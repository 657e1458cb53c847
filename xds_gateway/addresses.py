"""`AddressBook`: the DNS names a gateway's view holds as addresses, and what they resolve to.

A Dataplane may give a DNS name as `networking.address` or `advertisedAddress` (a ZoneIngress
as `advertisedAddress`): on AWS ECS, for example, the Dataplane is created before its
container has an IP. The read models keep the name as the user gave it (the fold stays
deterministic, DESIGN.md invariant 4); Envoy takes IPs only, in EDS (one name rejects the
whole response) and in a listener's address. So the gateway resolves the names
(`xds_gateway.resolver`), as Kuma's control plane does before it generates config
(`pkg/xds/topology` `ResolveDataplaneAddress`), and the resources are built with the
answers this book holds (`ip`), which are part of their cache keys (`answers`).

The view tells the book which names each of its rows uses (`track`), as it applies them, so
the names in use are known without scanning every row; a row without names costs one check
per address (cached).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
from collections.abc import Mapping

from projections import DataplaneRow, EndpointsRow

__all__ = ["AddressBook", "RowKey", "dataplane_names", "endpoint_names", "ip_only", "is_ip"]

RowKey = tuple[str, str, str]
"""(collection, mesh, name) of a view row."""
Uses = dict[str, frozenset[str]]
"""DNS name -> who gives it as an address (`Dataplane web-1 (mesh default)`), for logs."""


@functools.lru_cache(maxsize=65_536)
def is_ip(address: str) -> bool:
    """Whether `address` is an IPv4 or IPv6 address (cached: the same addresses come back
    with every endpoints row that holds them)."""
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def ip_only(address: str) -> str | None:
    """`address` if it is an IP, else None (no answers)."""
    return address if is_ip(address) else None


def endpoint_names(row: EndpointsRow) -> Uses:
    """The DNS names among the addresses of an endpoints row: its ports' endpoints (each names
    its Dataplane) and the ingresses a remote service is reached through."""
    named = [e for port in row.ports for e in port.endpoints if not is_ip(e.address)]
    via = [e for e in row.through_ingress or () if not is_ip(e.address)]
    if not named and not via:
        return {}
    uses: dict[str, set[str]] = {}
    for e in named:
        uses.setdefault(e.address, set()).add(f"Dataplane {e.dataplane} (mesh {row.mesh})")
    for e in via:
        uses.setdefault(e.address, set()).add(f"ZoneIngress {e.dataplane}")
    return {name: frozenset(owners) for name, owners in uses.items()}


def dataplane_names(row: DataplaneRow) -> Uses:
    """The DNS name a Dataplane's inbound listeners bind (`networking.address`, for inbounds
    without an address of their own, which is always an IP)."""
    dp = row.dataplane
    net = dp.networking
    if is_ip(net.address) or all(i.address for i in net.inbound):
        return {}
    return {net.address: frozenset({f"Dataplane {dp.name} (mesh {dp.mesh})"})}


class AddressBook:
    def __init__(self) -> None:
        self._uses: dict[RowKey, Uses] = {}
        self._answers: dict[str, str] = {}
        self.names_changed = asyncio.Event()
        """Set when a row brings a name or drops one (the resolver clears it)."""

    def track(self, key: RowKey, uses: Uses) -> None:
        """Row `key` now uses `uses` (empty: no names, or the row is gone)."""
        old = self._uses.pop(key, None)
        if uses:
            self._uses[key] = uses
        if (old.keys() if old else set()) != uses.keys():
            self.names_changed.set()

    def in_use(self) -> dict[str, frozenset[str]]:
        """Every name the rows use, with who gives it."""
        out: dict[str, frozenset[str]] = {}
        for uses in self._uses.values():
            for name, owners in uses.items():
                out[name] = out[name] | owners if name in out else owners
        return out

    def ip(self, address: str) -> str | None:
        """The IP for `address`: itself if it is one, else its name's answer (None: not
        resolved, so what uses it is left out)."""
        return address if is_ip(address) else self._answers.get(address)

    def answers(self, key: RowKey) -> tuple[tuple[str, str | None], ...]:
        """The answers for the names of row `key`, in name order: what a resource built from
        it depends on besides the row (empty for a row without names)."""
        uses = self._uses.get(key)
        if not uses:
            return ()
        return tuple((name, self._answers.get(name)) for name in sorted(uses))

    def update(self, answers: Mapping[str, str | None]) -> bool:
        """Set (or with None, forget) the answers for names; whether any changed."""
        changed = False
        for name, ip in answers.items():
            if self._answers.get(name) != ip:
                changed = True
                if ip is None:
                    del self._answers[name]
                else:
                    self._answers[name] = ip
        return changed
