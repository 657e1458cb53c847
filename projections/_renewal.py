"""When a mesh's workload certificates renew: Kuma's 4/5 of their life, in `RENEWAL_GROUPS`
groups of its Dataplanes one after the other (`projections.identity` says why). Pure
arithmetic on a `TrustRow`, shared by the fold (`identity`) and the state's index of when
each mesh has a renewal due (`state`)."""

from __future__ import annotations

import zlib

from projections.views import TrustRow

__all__ = ["RENEWAL_GROUPS", "next_renewal", "renew_after", "renewal_group", "window_start"]


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


def next_renewal(anchor: int, period: int, after: int) -> int:
    """The first time after `after` that a group moves to its next window."""
    soonest = None
    for group in range(RENEWAL_GROUPS):
        first = _first_renewal(anchor, period, group)
        when = first if after < first else first + ((after - first) // period + 1) * period
        soonest = when if soonest is None else min(soonest, when)
    assert soonest is not None
    return soonest
