"""MeshTrafficPermission to Envoy's RBAC network filter: who may connect to an inbound.

A pure function of the policies of the mesh and the inbound they guard (`inbound_rbac`), for
the inbound's mTLS filter chain (only that one: Kuma #8152 put RBAC on a PERMISSIVE
plaintext chain and denied everything). Envoy checks it on the client certificate, which the
chain has already verified against the mesh's CA.

What applies, precisely:

1. **Which policies.** A policy of `mesh` applies to the inbound when its top-level
   targetRef selects it: `Mesh`, always; `MeshSubset`, when every one of its `tags` is on
   the inbound (no tags: every inbound); `MeshService`, when `name` is one of
   `meshservices` (the MeshServices whose selector matches this inbound); `Dataplane`, when
   `name` is the Dataplane's, or every one of its `labels` is on the Dataplane. Policies of
   other meshes, and top-level kinds this release does not know, apply to nothing.
2. **Order.** The applying policies are sorted as every other kind's
   (`policy_rules.in_rule_2_order`; Kuma's `SortByTargetRef`, which orders the policies of
   an inbound before their `from[]` is read): by the specificity of their top-level
   targetRef (Mesh < MeshSubset < MeshService < Dataplane by labels < Dataplane by name,
   Kuma 2.x's `CompareDataplaneKind`), then by name, descending (the alphabetically first
   name last, so it decides between entries of one rank, as in Kuma); their `from[]`
   entries are concatenated in that order, each policy's in its own order. Kuma's order of
   the kinds is Mesh < Dataplane < MeshSubset < MeshService; meshlog keeps the order of
   its other policies (docs/status.md).
3. **Clients.** Each entry is about the clients whose certificate carries these URI SANs
   (Kuma's, `pkg/xds/envoy/tls`), and has a rank:

   | from targetRef                    | rank | SANs (all of them)                           |
   |-----------------------------------|------|----------------------------------------------|
   | Mesh                              | 0    | any starting with `spiffe://<mesh>/`         |
   | MeshSubset `tags`                 | 1    | `kuma://<k>/<v>` per tag (`kuma.io/service`: |
   |                                   |      | `spiffe://<mesh>/<v>`); no tags: as Mesh     |
   | MeshService `name`                | 2    | `spiffe://<mesh>/<name>`                     |
   | MeshServiceSubset `name`, `tags`  | 3    | both of the above                            |

   A workload certificate has a SPIFFE ID per service and a `kuma://` SAN per tag of all
   its Dataplane's inbounds, so a client is in every group whose SANs its certificate
   holds (two tags may come from two inbounds, as in Kuma).
4. **Decision.** Of the entries whose group a client is in, the one of highest rank
   decides; among equal ranks, the last in the order of 2. `Allow` and
   `AllowWithShadowDeny` allow it, `Deny` denies it. So the later of two entries for the
   same clients wins, a more specific Deny beats a less specific Allow and a more specific
   Allow a less specific Deny, whatever their order. A client no entry is about is denied:
   with mTLS on, traffic is denied unless permitted (Kuma >= 2.6 creates no allow-all
   policy), and so is a connection without a client certificate.
   **meshlog:** Kuma 2.x (`pkg/plugins/policies/core/rules` BuildRules) lets the later of
   any two overlapping entries win, so there a Mesh Deny written after a MeshService Allow
   denies that service too; here rank comes first, so where an entry is written matters
   only between entries of one rank.
5. **Shadow deny.** A client decided by an `AllowWithShadowDeny` entry is allowed, and
   Envoy's shadow rules count it as denied (`<stat_prefix>shadow_denied`): a deny
   rehearsed before it is enforced.

Encoding: `rules` is one ALLOW policy, `MeshTrafficPermission`, whose principals are, for
each allowing entry `e` in order, `e`'s SANs and none of those of each Deny entry that
decides before `e` (higher rank, or same rank and later): a client matches one of them iff
the entry that decides for it allows (the highest allowing entry it is in has no Deny above
it that it is also in). An entry whose clients are all in such a Deny is left out; if none
is left, the ALLOW policy map is empty, which Envoy reads as deny all. `shadow_rules` is one
DENY policy with, per `AllowWithShadowDeny` entry, its SANs and none of those of every entry
that decides before it: exactly the clients it decides for.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from envoy.config.listener.v3.listener_components_pb2 import Filter
from envoy.config.rbac.v3.rbac_pb2 import RBAC as RBACRules
from envoy.config.rbac.v3.rbac_pb2 import Permission, Policy, Principal
from envoy.extensions.filters.http.rbac.v3.rbac_pb2 import RBAC as HttpRBAC
from envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2 import (  # noqa: E501
    HttpFilter,
)
from envoy.extensions.filters.network.rbac.v3.rbac_pb2 import RBAC
from envoy.type.matcher.v3.string_pb2 import StringMatcher
from google.protobuf.any_pb2 import Any

from events import SERVICE_TAG, Dataplane, Inbound, MeshTrafficPermission, TargetRef
from xds_gateway.resources import policy_rules

__all__ = ["HTTP_RBAC_FILTER", "POLICY_NAME", "RBAC_FILTER", "http_rbac_filter", "inbound_rbac",
           "rbac_filter"]

RBAC_FILTER = "envoy.filters.network.rbac"
HTTP_RBAC_FILTER = "envoy.filters.http.rbac"
POLICY_NAME = "MeshTrafficPermission"
"""The key of the one policy in `rules` and `shadow_rules`, as Kuma names it."""

_FROM_RANK = {"Mesh": 0, "MeshSubset": 1, "MeshService": 2, "MeshServiceSubset": 3}

# An atom is one condition on the certificate: ("prefix", "spiffe://m/") or ("exact", SAN).
_Atom = tuple[str, str]


@dataclass(frozen=True)
class _Entry:
    atoms: frozenset[_Atom]
    """All of these hold for a client of the entry; the ordered tuple builds the principal."""
    ordered: tuple[_Atom, ...]
    action: str
    key: tuple[int, int]
    """(rank, position): of the entries a client is in, the greatest decides."""


def inbound_rbac(mesh: str, dataplane: Dataplane, inbound: Inbound, meshservices: Collection[str],
                 policies: Iterable[MeshTrafficPermission], stat_prefix: str) -> RBAC:
    """The RBAC network filter config guarding `inbound` of `dataplane` (module docstring).

    `meshservices`: names of the MeshServices of `mesh` whose selector matches the inbound;
    `policies`: the MeshTrafficPermissions of `mesh` (any order; others are ignored);
    `stat_prefix`: Envoy appends `rbac.allowed` and the like to it as is (Kuma ends it with
    a dot: `inbound:10.0.0.1:8080.`). The result depends on the policies' content only, not
    on the order they come in, so its bytes are the same on every gateway (invariant 7)."""
    applying = policy_rules.in_rule_2_order(
        p for p in policies
        if p.mesh == mesh and _selects(p.spec.target_ref, dataplane, inbound, meshservices))
    entries = _entries(mesh, applying)
    allowed: list[Principal] = []
    shadowed: list[Principal] = []
    for entry in entries:
        if entry.action == "Deny":
            continue
        denies = [d for d in entries if d.action == "Deny" and d.key > entry.key]
        principal = _excluding(entry, denies)
        if principal is None:
            continue  # every client of the entry is in a Deny that decides first
        allowed.append(principal)
        if entry.action == "AllowWithShadowDeny":
            decided = _excluding(entry, [e for e in entries if e.key > entry.key])
            if decided is not None:
                shadowed.append(decided)
    rbac = RBAC(stat_prefix=stat_prefix, rules=RBACRules(action=RBACRules.Action.ALLOW))
    if allowed:  # none: an empty ALLOW map, which denies everything
        rbac.rules.policies[POLICY_NAME].CopyFrom(_policy(allowed))
    if shadowed:
        rbac.shadow_rules.CopyFrom(RBACRules(action=RBACRules.Action.DENY,
                                             policies={POLICY_NAME: _policy(shadowed)}))
    return rbac


def rbac_filter(rbac: RBAC) -> Filter:
    """`rbac` as a network filter, to go first on the inbound's mTLS chain (Kuma's
    placement: before the filter that proxies)."""
    config = Any()
    config.Pack(rbac)
    return Filter(name=RBAC_FILTER, typed_config=config)


def http_rbac_filter(rbac: RBAC) -> HttpFilter:
    """The same rules as an HTTP filter, ahead of the router of an inbound proxied at L7
    (`listeners`): a client they deny gets a 403 (`RBAC: access denied`) instead of a reset
    connection, as from Kuma's HTTP inbounds. Its counters are `http.<the connection
    manager's prefix>.rbac.allowed`, `.denied` and `.<shadow prefix>shadow_denied`."""
    config = Any()
    config.Pack(HttpRBAC(rules=rbac.rules if rbac.HasField("rules") else None,
                         shadow_rules=(rbac.shadow_rules if rbac.HasField("shadow_rules")
                                       else None),
                         shadow_rules_stat_prefix=rbac.shadow_rules_stat_prefix))
    return HttpFilter(name=HTTP_RBAC_FILTER, typed_config=config)


# --- which policies apply ---------------------------------------------------------------------


def _selects(ref: TargetRef, dataplane: Dataplane, inbound: Inbound,
             meshservices: Collection[str]) -> bool:
    match ref.kind:
        case "Mesh":
            return True
        case "MeshSubset":
            return _all_in(ref.tags or {}, inbound.tags)
        case "MeshService":
            return ref.name in meshservices
        case "Dataplane":
            if ref.name is not None:
                return ref.name == dataplane.name
            return ref.labels is not None and _all_in(ref.labels, dataplane.labels)
        case _:  # a kind of a later release, in the log: it selects nothing here
            return False


def _all_in(wanted: Mapping[str, str], have: Mapping[str, str]) -> bool:
    return all(have.get(key) == value for key, value in wanted.items())


# --- entries ----------------------------------------------------------------------------------


def _entries(mesh: str, policies: list[MeshTrafficPermission]) -> list[_Entry]:
    """The `from[]` entries of the ordered policies, each with its SAN conditions and key."""
    entries = []
    for position, source in enumerate(e for p in policies for e in p.spec.from_):
        ref = source.target_ref
        rank = _FROM_RANK.get(ref.kind)
        if rank is None or (rank >= _FROM_RANK["MeshService"] and ref.name is None):
            # a kind of a later release (or a service without its name, which validation
            # refuses): it is about no client this release knows, never about all of them
            continue
        ordered = _atoms(mesh, ref)
        entries.append(_Entry(frozenset(ordered), ordered, source.default.action,
                              (rank, position)))
    return entries


def _atoms(mesh: str, ref: TargetRef) -> tuple[_Atom, ...]:
    """The SAN conditions of a from targetRef, in a fixed order: the SPIFFE ID, then the
    tags by key."""
    atoms: list[_Atom] = []
    if ref.name is not None and ref.kind in ("MeshService", "MeshServiceSubset"):
        atoms.append(("exact", _spiffe(mesh, ref.name)))
    tags = ref.tags if ref.kind in ("MeshSubset", "MeshServiceSubset") and ref.tags else {}
    for key in sorted(tags):
        # Kuma matches the service tag on the SPIFFE ID (`principalFromSubset`)
        san = _spiffe(mesh, tags[key]) if key == SERVICE_TAG else f"kuma://{key}/{tags[key]}"
        atoms.append(("exact", san))
    if not atoms:  # Mesh, or a MeshSubset without tags: any workload of the mesh.
        # Not Envoy's `any`: that would also let in a connection without a client
        # certificate (were this ever on a chain that does not require one, Kuma #8152) and
        # a workload of another mesh whose CA the chain trusts (cross-mesh).
        atoms.append(("prefix", _spiffe(mesh, "")))
    return tuple(dict.fromkeys(atoms))


def _spiffe(mesh: str, service: str) -> str:
    return f"spiffe://{mesh}/{service}"


def _covers(outer: _Entry, inner: _Entry) -> bool:
    """Whether every client of `inner` is a client of `outer`: `outer`'s conditions are
    among `inner`'s (an exact SPIFFE ID of the mesh implies the mesh's prefix)."""
    exact = [san for kind, san in inner.atoms if kind == "exact"]
    implied = inner.atoms | {(kind, prefix) for kind, prefix in outer.atoms
                             if kind == "prefix" and any(s.startswith(prefix) for s in exact)}
    return outer.atoms <= implied


# --- principals -------------------------------------------------------------------------------


def _excluding(entry: _Entry, others: list[_Entry]) -> Principal | None:
    """The clients of `entry` in none of `others`; None if there are none."""
    if any(_covers(other, entry) for other in others):
        return None
    excluded: dict[frozenset[_Atom], Principal] = {}
    for other in others:
        excluded.setdefault(other.atoms, _match(other.ordered))
    if not excluded:
        return _match(entry.ordered)
    conditions = [*(_san(a) for a in entry.ordered),
                  *(Principal(not_id=p) for p in excluded.values())]
    return Principal(and_ids=Principal.Set(ids=conditions))


def _match(atoms: tuple[_Atom, ...]) -> Principal:
    if len(atoms) == 1:
        return _san(atoms[0])
    return Principal(and_ids=Principal.Set(ids=[_san(a) for a in atoms]))


def _san(atom: _Atom) -> Principal:
    """`authenticated.principal_name`: Envoy matches it on each URI SAN of the verified
    client certificate (then DNS SANs, then the subject); no certificate, no match."""
    kind, value = atom
    matcher = StringMatcher(exact=value) if kind == "exact" else StringMatcher(prefix=value)
    return Principal(authenticated=Principal.Authenticated(principal_name=matcher))


def _policy(principals: list[Principal]) -> Policy:
    return Policy(permissions=[Permission(any=True)], principals=principals)
