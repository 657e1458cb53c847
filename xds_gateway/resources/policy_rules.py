"""What MeshTimeout and MeshRetry share: which policies apply to a proxy, the order of their
`to[]` entries (Kuma's `rules/outbound.Sort`) and the per-field merge of those entries into
"last values". The rules themselves are written down in `timeouts.py`'s docstring (1-3);
`retries.py` follows them too."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, Protocol, TypeVar

from events import Dataplane, TargetRef
from projections import MeshServiceRow

__all__ = ["Last", "Memo", "by_destination", "chosen", "last_by_destination", "last_values",
           "selects"]

_P = TypeVar("_P", bound="_Policy")
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
    @property
    def to(self) -> Iterable[_To]: ...


class _Policy(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def spec(self) -> _Spec: ...


def chosen(policies: Iterable[_P], dataplane: Dataplane,
           services: Mapping[str, MeshServiceRow]) -> tuple[_P, ...]:
    """Rule 1: the policies whose top-level targetRef selects `dataplane`, by name."""
    return tuple(sorted((p for p in policies if selects(p.spec.target_ref, dataplane, services)),
                        key=lambda p: p.name))


def last_values(chosen: Iterable[_Policy], fields: Callable[[Any], dict[str, Any]]
                ) -> tuple[Last, dict[str, Last]]:
    """Rule 2 over `chosen` as per-field last values: (what the Mesh entries set, what the
    entries naming each MeshService set). `fields` reads an entry's `default`."""
    by_name = sorted(chosen, key=lambda p: p.name, reverse=True)  # names descending
    entries = [(p, to) for p in by_name for to in p.spec.to]
    entries.sort(key=lambda e: (_TOP_RANK[e[0].spec.target_ref.kind],  # stable
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


def _all_in(wanted: Mapping[str, str], have: Mapping[str, str]) -> bool:
    return all(have.get(key) == value for key, value in wanted.items())
