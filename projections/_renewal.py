"""When a mesh's workload certificates renew: Kuma's 4/5 of their life, in `RENEWAL_GROUPS`
groups of its Dataplanes one after the other (`projections.identity` says why). Pure
arithmetic on a `TrustRow`, shared by the fold (`identity`), and `RenewalIndex`: which
groups of each mesh hold a Dataplane, and when each mesh has a renewal due (`state`)."""

from __future__ import annotations

import zlib
from collections.abc import Iterable

from projections.views import TrustRow

__all__ = ["RENEWAL_GROUPS", "RenewalIndex", "next_renewal", "renew_after", "renewal_group",
           "window_start"]


RENEWAL_GROUPS = 16
"""How many groups a mesh's Dataplanes renew in, one after the other."""
_SPREAD = 8
"""The groups' first renewals spread over 1/`_SPREAD` of the renewal period: the last group
renews its first certificates at 0.8 * 1.125 = 0.9 of their life, leaving a tenth of it to
reach the proxies."""


def renew_after(expiration_ms: int) -> int:
    """Kuma re-issues after 4/5 of a certificate's life."""
    return expiration_ms * 4 // 5


def renewal_group(mesh: str, name: str) -> int:
    """The renewal group of Dataplane `name` of `mesh`: the same in every process and log."""
    return zlib.crc32(f"{mesh}/{name}".encode()) % RENEWAL_GROUPS


def _first_renewal(anchor: int, period: int, group: int) -> int:
    return anchor + period + period * group // (_SPREAD * RENEWAL_GROUPS)


def window_start(trust: TrustRow, group: int) -> int:
    """Start of the issuing window `group` is in at `trust.clock`: its certificates are valid
    from it (minus a skew) for `expiration_ms`, and replaced after 4/5 of that."""
    period = renew_after(trust.expiration_ms)
    first = _first_renewal(trust.anchor, period, group)
    if trust.clock < first:
        return trust.anchor
    return first + (trust.clock - first) // period * period


def next_renewal(trust: TrustRow, groups: Iterable[int]) -> int | None:
    """The first time after `trust.clock` that one of `groups` moves to its next window (None:
    no group given, nothing to renew)."""
    anchor, period, after = trust.anchor, renew_after(trust.expiration_ms), trust.clock
    soonest = None
    for group in groups:
        first = _first_renewal(anchor, period, group)
        when = first if after < first else first + ((after - first) // period + 1) * period
        soonest = when if soonest is None else min(soonest, when)
    return soonest


class RenewalIndex:
    """How many of each mesh's Dataplanes each renewal group holds, and when each mesh with
    mTLS has a renewal due: the next time one of its groups that holds a Dataplane moves to
    its next window (`next_renewal`). An empty group needs no tick: a Dataplane that joins
    it moves the mesh's clock to the join (`projections.identity.dataplane_moved`), so its
    first certificate is of the window that holds that moment.

    Found from the trust rows' `anchor`, `expiration_ms` and `clock` and the Dataplane rows,
    not from `TrustRow.renew_at`: a store of an earlier fold version (6 to 8) has the next
    time of any group there, and loading a store puts rows in any order."""

    def __init__(self) -> None:
        self._groups: dict[str, list[int]] = {}
        self._trust: dict[str, TrustRow] = {}
        self._due: dict[str, int] = {}
        self._stale: set[str] = set()

    def holding(self, mesh: str, group: int) -> int:
        """How many of `mesh`'s Dataplanes renewal group `group` holds."""
        counts = self._groups.get(mesh)
        return 0 if counts is None else counts[group]

    def occupied(self, mesh: str) -> list[int]:
        """The renewal groups of `mesh` that hold a Dataplane."""
        counts = self._groups.get(mesh, ())
        return [group for group, count in enumerate(counts) if count]

    def dataplane_added(self, mesh: str, name: str) -> bool:
        """Count Dataplane `name` in; True if its group held none (the mesh's due changes)."""
        counts = self._groups.setdefault(mesh, [0] * RENEWAL_GROUPS)
        group = renewal_group(mesh, name)
        counts[group] += 1
        return self._changed(mesh, counts[group] == 1)

    def dataplane_removed(self, mesh: str, name: str) -> bool:
        """Count Dataplane `name` out; True if its group now holds none."""
        counts = self._groups[mesh]
        group = renewal_group(mesh, name)
        counts[group] -= 1
        if not any(counts):
            del self._groups[mesh]
        return self._changed(mesh, counts[group] == 0)

    def trust_put(self, row: TrustRow) -> None:
        self._trust[row.mesh] = row
        self._changed(row.mesh, True)

    def trust_dropped(self, mesh: str) -> None:
        self._trust.pop(mesh, None)
        self._changed(mesh, True)

    def next_due(self) -> int | None:
        """The earliest renewal due of any mesh."""
        self._refresh()
        return min(self._due.values(), default=None)

    def due(self, at: int) -> list[str]:
        """Meshes with a renewal due at `at`, sorted."""
        self._refresh()
        return sorted(mesh for mesh, when in self._due.items() if when <= at)

    def _changed(self, mesh: str, changed: bool) -> bool:
        if changed and (mesh in self._trust or mesh in self._due):
            self._stale.add(mesh)
            return True
        return False

    def _refresh(self) -> None:
        for mesh in self._stale:
            trust = self._trust.get(mesh)
            when = None if trust is None else next_renewal(trust, self.occupied(mesh))
            if when is None:
                self._due.pop(mesh, None)
            else:
                self._due[mesh] = when
        self._stale.clear()
