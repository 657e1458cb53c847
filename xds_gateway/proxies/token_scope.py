"""Which Dataplanes a dataplane token allows: Kuma's rule (kumahq/kuma v2.14
`pkg/xds/auth/universal/authenticator.go`), a pure function of the token's claims and the
Dataplane, used by `xds_gateway.proxies.auth` on each stream's open.

Every claim is a condition only when it is set, so a token is as narrow as its issuer made it:

- `Mesh` is the Dataplane's mesh (always: meshlog signs no token without a mesh, and its key
  is the mesh's);
- `Name`, when not empty, is the Dataplane's name: a token for one Dataplane;
- `Tags`: each of its keys is a tag of the Dataplane's inbounds, and each of the Dataplane's
  values of it is one the token allows (a Dataplane serving `web` and `web-api` needs a token
  allowing both);
- `Workload`, when not empty, is the Dataplane's `kuma.io/workload` label.

A token naming no Dataplane is Kuma's token for a group (`kumactl generate dataplane-token
--mesh demo --tag kuma.io/service=backend`: every replica of a service shares one), and
with neither tags nor workload, for every Dataplane of its mesh (Kuma's "token bound by
mesh"), the broadest token there is.

Kuma 2.14 also refuses a token without `Workload` to a Dataplane with a `kuma.io/workload`
label when a MeshIdentity derives its identity from that label; meshlog has no MeshIdentity,
so a token without `Workload` is not limited by the label.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Literal

from events import Dataplane
from events.identity import DataplaneClaims

__all__ = ["WORKLOAD_LABEL", "ScopeRefusal", "dataplane_problem", "needs_dataplane",
           "tags_problem"]

WORKLOAD_LABEL = "kuma.io/workload"
"""Kuma's label naming a Dataplane's workload (`pkg/core/metadata.KumaWorkload`)."""

ScopeRefusal = Literal["tags_not_allowed", "wrong_workload"]


def needs_dataplane(claims: DataplaneClaims) -> bool:
    """Whether the token's check needs the Dataplane itself, not just the node id: a token
    naming no Dataplane (it allows only Dataplanes that exist: carried by the node or
    registered, as Kuma finds them), or one with tags or a workload to check."""
    return not claims.name or bool(claims.tags) or bool(claims.workload)


def dataplane_problem(claims: DataplaneClaims, dataplane: Dataplane
                      ) -> tuple[ScopeRefusal, str] | None:
    """Why the token, of the Dataplane's mesh and (when it names one) name, does not allow
    `dataplane`: (reason, what is wrong, naming the field and its values); None: it does."""
    problem = tags_problem(claims.tags, dataplane)
    if problem:
        return "tags_not_allowed", problem
    if claims.workload:
        have = dataplane.labels.get(WORKLOAD_LABEL)
        if have is None:
            return "wrong_workload", (f"it has no label {WORKLOAD_LABEL!r}; the token "
                                      f"requires workload {claims.workload!r}")
        if have != claims.workload:
            return "wrong_workload", (f"its label {WORKLOAD_LABEL!r} is {have!r}; the token "
                                      f"requires workload {claims.workload!r}")
    return None


def tags_problem(allowed: dict[str, list[str]], dataplane: Dataplane) -> str:
    """Kuma's rule: every tag of the token is on the Dataplane, and each of the Dataplane's
    values of it is one the token allows ("" when it is)."""
    values: dict[str, set[str]] = defaultdict(set)
    for inbound in dataplane.networking.inbound:
        for key, value in inbound.tags.items():
            values[key].add(value)
    for key, allowed_values in sorted(allowed.items()):
        if key not in values:
            return f"it has no tag {key!r}"
        extra = sorted(values[key] - set(allowed_values))
        if extra:
            return (f"its tag {key!r} has the value {extra[0]!r}; the token allows "
                    f"{sorted(allowed_values)}")
    return ""
