"""What the outbound policies (MeshTimeout, MeshRetry, MeshCircuitBreaker) share: which
policies apply to a proxy, the order of their `to[]` entries (Kuma's `rules/outbound.Sort`)
and the per-field merge of those entries into "last values", once per set of policies
(`Merge`); and, for a kind whose `from[]` (or `rules[]`) meshlog applies (MeshTimeout),
the same merge of those entries (Kuma's `rules/inbound.Sort`: the same order). The rules themselves
are written down in `timeouts.py`'s docstring (1-3, 5);
`retries.py` and `circuit_breakers.py` follow them too."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, Protocol, TypeVar

from google.protobuf.duration_pb2 import Duration
from msgspec import Struct

from events import Dataplane, Inbound, TargetRef
from events.resources import go_duration_ns
from projections import MeshServiceRow

__all__ = ["NOTHING_APPLIES", "Applying", "Last", "Memo", "Merge", "by_destination", "chosen",
           "in_rule_2_order", "last_by_destination", "last_values", "non_negative_ns",
           "positive_ns", "proto_duration", "selects", "selects_inbound", "top_rank"]

_P = TypeVar("_P", bound="_Policy")
_P_co = TypeVar("_P_co", covariant=True)
_M = TypeVar("_M")
_K = TypeVar("_K")
_R = TypeVar("_R")
_TOP_RANK = {"Mesh": 0, "MeshSubset": 1, "MeshService": 2, "Dataplane": 3}

Last = dict[str, tuple[int, Any]]
"""Per field, (position in rule 2's order, value) of the last entry that sets it."""


class _To(Protocol):
    @property
    def target_ref(self) -> TargetRef: ...
    @property
    def default(self) -> Any: ...


class _Spec(Protocol):
    @property
    def target_ref(self) -> TargetRef: ...


class _Policy(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def spec(self) -> _Spec: ...


class _TopSpec(Protocol):
    @property
    def target_ref(self) -> TargetRef: ...


class _Top(Protocol):
    """What rule 1 and the policies' order read: any kind's policy."""

    @property
    def name(self) -> str: ...
    @property
    def spec(self) -> _TopSpec: ...


_T = TypeVar("_T", bound=_Top)


class _Row(Protocol[_P_co]):
    @property
    def policy(self) -> _P_co: ...


class Applying(Struct, frozen=True):
    """The policies of one kind that apply to a proxy, merged once (rule 2) so that each of
    its outbounds is found in time independent of the policies' size (`for_destination`)."""

    names: tuple[str, ...]
    """The applying policies' names: what the shared part of a snapshot is keyed by."""
    mesh: Last
    """What the entries about the whole mesh set."""
    services: dict[str, Last]
    """What the entries naming each MeshService set."""
    inbound: tuple[Any, ...] = ()
    """The applying policies that have `from[]` entries (a kind without `inbound` in its
    `Merge`: none); `Merge.for_inbound` merges those whose top-level targetRef selects an
    inbound."""

    def __bool__(self) -> bool:
        return bool(self.names)

    def for_destination(self, service: str | None, merged: Callable[..., _M]) -> _M | None:
        """Rule 3: `merged(**fields)` of the merged fields of the outbound to MeshService
        `service` (None: a MeshMultiZoneService, Mesh entries only); None when no entry is
        about it."""
        fields = by_destination(self.mesh, self.services, service)
        return None if fields is None else merged(**fields)


NOTHING_APPLIES = Applying(names=(), mesh={}, services={})


def _to(policy: Any) -> Iterable[_To]:
    entries: Iterable[_To] = policy.spec.to
    return entries


class Merge(Generic[_P]):
    """One outbound policy kind's rules 1 and 2; `fields` reads an entry's `default` as the
    fields it sets (a field it leaves out is not among them). `inbound`: the kind's
    `from[]` entries of a policy, merged too (`Applying.inbound`)."""

    def __init__(self, fields: Callable[[Any], dict[str, Any]], *,
                 inbound: Callable[[Any], Iterable[_To]] | None = None) -> None:
        self._fields = fields
        self._inbound = inbound
        self._memo: Memo[_P, Applying] = Memo()
        self._inbound_memo: Memo[_P, Last] = Memo()

    def applying(self, rows: Mapping[str, _Row[_P]] | None, dataplane: Dataplane,
                 services: Mapping[str, MeshServiceRow]) -> Applying:
        """The policies (rows of the Dataplane's mesh) that apply to `dataplane`."""
        if not rows:
            return NOTHING_APPLIES
        picked = chosen((row.policy for row in rows.values()), dataplane, services)
        return self._memo.get(picked, self.merged) if picked else NOTHING_APPLIES

    def merged(self, policies: Iterable[_P]) -> Applying:
        """Rule 2 over `policies` (of one mesh, applying to one proxy), as per-field last
        values."""
        policies = tuple(policies)
        mesh, named = last_values(policies, self._fields)
        section = self._inbound
        inbound = () if section is None else tuple(
            p for p in policies if any(True for _ in section(p)))  # entries, whatever their truth
        return Applying(names=tuple(sorted(p.name for p in policies)), mesh=mesh,
                        services=named, inbound=inbound)

    def for_inbound(self, applying: Applying, dataplane: Dataplane, inbound: Inbound,
                    services: Mapping[str, MeshServiceRow]) -> dict[str, Any] | None:
        """The merged `from[]` fields `inbound` of `dataplane` takes: those of the applying
        policies whose top-level targetRef selects that inbound (Kuma merges per inbound
        the policies that select it, `matchedPoliciesByInbound`), in rule 2's order; None
        when no entry applies to it."""
        section = self._inbound
        if section is None or not applying.inbound:
            return None
        picked = tuple(p for p in applying.inbound
                       if selects_inbound(p.spec.target_ref, dataplane, inbound, services))
        if not picked:
            return None
        last = self._inbound_memo.get(
            picked, lambda ps: last_values(ps, self._fields, section)[0])
        return {field: value for field, (_, value) in last.items()} or None


def positive_ns(value: str | None) -> int | None:
    """A Go duration of a policy's field in nanoseconds; None when left out (or not above 0,
    which validation refused)."""
    ns = None if value is None else go_duration_ns(value)
    return ns if ns is not None and ns > 0 else None


def non_negative_ns(value: str | None) -> int | None:
    """`positive_ns`, with 0 kept: a field where `0s` means none, over an entry before it
    that set one (MeshRetry's `perTryTimeout`)."""
    ns = None if value is None else go_duration_ns(value)
    return ns if ns is not None and ns >= 0 else None


def proto_duration(ns: int) -> Duration:
    return Duration(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)


def chosen(policies: Iterable[_T], dataplane: Dataplane,
           services: Mapping[str, MeshServiceRow]) -> tuple[_T, ...]:
    """Rule 1: the policies whose top-level targetRef selects `dataplane`, by name."""
    return tuple(sorted((p for p in policies if selects(p.spec.target_ref, dataplane, services)),
                        key=lambda p: p.name))


def top_rank(ref: TargetRef) -> tuple[int, int]:
    """Rule 2's first keys, a policy's top-level targetRef (Kuma's `CompareByPolicyAttributes`):
    its kind's specificity, then, between two `Dataplane`s, one by `name` above one by
    `labels` (Kuma 2.x's `CompareDataplaneKind`; validation takes one of them, never both).
    Any other pair of policies keeps its order."""
    return (_TOP_RANK[ref.kind], int(ref.kind == "Dataplane" and ref.name is not None))


def in_rule_2_order(chosen: Iterable[_T]) -> list[_T]:
    """The policies in rule 2's order of their `to[]` entries where every entry has one
    kind (MeshHTTPRoute's, all MeshService): by the specificity of their top-level
    targetRef, then by name descending (the alphabetically first name last)."""
    by_name = sorted(chosen, key=lambda p: p.name, reverse=True)
    return sorted(by_name, key=lambda p: top_rank(p.spec.target_ref))  # stable


def last_values(chosen: Iterable[_Policy], fields: Callable[[Any], dict[str, Any]],
                section: Callable[[Any], Iterable[_To]] = _to
                ) -> tuple[Last, dict[str, Last]]:
    """Rule 2 over `chosen` as per-field last values: (what the Mesh entries set, what the
    entries naming each MeshService set). `fields` reads an entry's `default`; `section`
    gives a policy's entries (its `to[]`, or its `from[]`, whose entries are all `Mesh`:
    Kuma's `rules/inbound.Sort` is the same order of policies)."""
    by_name = sorted(chosen, key=lambda p: p.name, reverse=True)  # names descending
    entries = [(p, to) for p in by_name for to in section(p)]
    entries.sort(key=lambda e: (top_rank(e[0].spec.target_ref),  # stable
                                e[1].target_ref.kind != "Mesh"))
    mesh: Last = {}
    named: dict[str, Last] = {}
    for position, (_, to) in enumerate(entries):
        ref = to.target_ref
        if ref.kind == "Mesh":
            last = mesh
        elif ref.kind == "MeshService" and ref.name is not None:
            last = named.setdefault(ref.name, {})
        else:
            continue
        for field, value in fields(to.default).items():
            last[field] = (position, value)
    return mesh, named


def by_destination(mesh: Last, named: Mapping[str, Last], service: str | None
                   ) -> dict[str, Any] | None:
    """Rule 3: the merged fields of the outbound to MeshService `service` (None: a
    MeshMultiZoneService, Mesh entries only); None when no entry is about it."""
    merged = last_by_destination(mesh, named, service)
    return None if merged is None else {field: value for field, (_, value) in merged.items()}


def last_by_destination(mesh: Last, named: Mapping[str, Last], service: str | None
                        ) -> Last | None:
    """`by_destination` with each field's position in rule 2's order: which of two fields
    an entry later in that order set."""
    own = named.get(service, {}) if service is not None else {}
    if not mesh and not own:
        return None
    merged = dict(mesh)
    for field, value in own.items():
        if field not in merged or merged[field][0] < value[0]:
            merged[field] = value
    return merged


class Memo(Generic[_K, _R]):
    """The merge of each set of policies, kept for the last `kept` sets: the view keeps a
    policy's object until its row changes, so proxies under the same policies share one
    merge (the memo holds the policies, so their ids stay theirs)."""

    def __init__(self, kept: int = 256) -> None:
        self._kept = kept
        self._merges: OrderedDict[tuple[int, ...], tuple[tuple[_K, ...], _R]] = OrderedDict()

    def get(self, chosen: tuple[_K, ...], merge: Callable[[tuple[_K, ...]], _R]) -> _R:
        key = tuple(id(p) for p in chosen)
        hit = self._merges.get(key)
        if hit is not None:
            self._merges.move_to_end(key)
            return hit[1]
        result = merge(chosen)
        self._merges[key] = (chosen, result)
        if len(self._merges) > self._kept:
            self._merges.popitem(last=False)
        return result


def selects(ref: TargetRef, dataplane: Dataplane, services: Mapping[str, MeshServiceRow]
            ) -> bool:
    """Whether a policy's top-level targetRef `ref` selects `dataplane` (rule 1): by the
    tags of its inbounds that are not `Ignored` (Kuma's `inboundsSelectedByTags`)."""
    inbounds = [i for i in dataplane.networking.inbound if i.state != "Ignored"]
    match ref.kind:
        case "Mesh":
            return True
        case "MeshSubset":
            return any(_all_in(ref.tags or {}, i.tags) for i in inbounds)
        case "MeshService":
            ms = services.get(ref.name or "")
            selector = ms.spec.selector.dataplane_tags if ms is not None else {}
            return bool(selector) and any(_all_in(selector, i.tags) for i in inbounds)
        case "Dataplane":
            if ref.name is not None:
                return ref.name == dataplane.name
            return ref.labels is not None and _all_in(ref.labels, dataplane.labels)
        case _:  # a kind of a later release, in the log: it selects nothing here
            return False


def selects_inbound(ref: TargetRef, dataplane: Dataplane, inbound: Inbound,
                    services: Mapping[str, MeshServiceRow]) -> bool:
    """Whether a policy's top-level targetRef `ref` selects `inbound` of `dataplane` (Kuma's
    `DppSelectedByPolicy`, per inbound): `Mesh` and `Dataplane` every inbound of the
    Dataplanes they select, `MeshSubset` those carrying every one of `tags`, `MeshService`
    those its selector matches."""
    match ref.kind:
        case "MeshSubset":
            return _all_in(ref.tags or {}, inbound.tags)
        case "MeshService":
            ms = services.get(ref.name or "")
            selector = ms.spec.selector.dataplane_tags if ms is not None else {}
            return bool(selector) and _all_in(selector, inbound.tags)
        case _:
            return selects(ref, dataplane, services)


def _all_in(wanted: Mapping[str, str], have: Mapping[str, str]) -> bool:
    return all(have.get(key) == value for key, value in wanted.items())
