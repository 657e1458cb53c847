"""`ProjectionState`: the read models in memory, with the indexes the fold needs.

The projector loads it from the store at start, folds events into it, and writes back only the
rows it changed (`take_changes`), in one transaction with the checkpoint. Encoded bytes of
every row are kept, so a row that an event touched but did not change is neither written nor
published again.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import TypeVar

from msgspec import Struct

from events import DEFAULT_ZONE, GLOBAL_ZONE, Dataplane, Provenance
from events.identity import SecretKey
from events.identity.pki import LoadedCa
from projections._match import dataplane_matches
from projections._renewal import next_renewal, renew_after
from projections.views import (
    COLLECTIONS,
    CaRow,
    DataplaneRow,
    HostnameGeneratorRow,
    IdentityRow,
    MeshServiceRow,
    RevocationRow,
    Row,
    TrustRow,
    VipRow,
    decode_row,
    encode_row,
)

__all__ = ["Change", "ProjectionState", "dp_key", "local_zone_of", "ms_key", "same_tags"]

Key = tuple[str, str]  # (collection, key)


class Change(Struct, frozen=True):
    collection: str
    key: str
    body: bytes | None
    """The new row, canonical JSON; None when the row was deleted."""


def dp_key(mesh: str, name: str) -> str:
    return f"{mesh}/{name}"


ms_key = dp_key


def local_zone_of(zone: str) -> str:
    """The `local_zone` of a projector that runs in `zone` (its subjects' zone token): ""
    for the global control plane's (`GLOBAL_ZONE`)."""
    return "" if zone == GLOBAL_ZONE else zone


def same_tags(a: Dataplane, b: Dataplane) -> bool:
    """Do `a` and `b` have inbounds with the same tags, in the same order? Then they select
    and are selected alike, and the tag indexes hold for both."""
    ins, others = a.networking.inbound, b.networking.inbound
    if len(ins) != len(others):
        return False
    for i, o in zip(ins, others, strict=True):  # a loop, not all(): this runs for every event
        if i.tags != o.tags:
            return False
    return True


_R = TypeVar("_R", bound=Row)
_SELECTING_MEMO_SIZE = 65_536
# rows that feed no index: `projections.remote`'s inputs, a deleted zone's kept rows
_UNINDEXED = frozenset({"remotemeshservice", "parkeddataplane", "parkedmeshservice",
                        "parkedzoneingress"})


def _typed(cls: type[_R], row: Row) -> _R:
    """`row` as the row type of its collection. `put` and `load` keep each collection to its
    type (`COLLECTIONS`), so another type here is a bug of the fold, not bad data."""
    if not isinstance(row, cls):
        raise TypeError(f"a {type(row).__name__} where a {cls.__name__} belongs")
    return row


class ProjectionState:
    def __init__(self, local_zone: str = DEFAULT_ZONE) -> None:
        self.local_zone = local_zone
        """The zone of the control plane whose log this state folds ("" on the global control
        plane): what another zone wrote is remote here. Fixed for a log, so a replay of the
        same log folds with the same value (invariant 4)."""
        self.local_provenance = (Provenance(zone=local_zone, origin="zone") if local_zone
                                 else Provenance(zone="", origin="global"))
        """The provenance of this log's own control plane (what it writes is folded as its)."""
        self.rows: dict[str, dict[str, Row]] = {c: {} for c in COLLECTIONS}
        self._persisted: dict[Key, bytes] = {}
        self._dirty: set[Key] = set()
        # (mesh, tag key, tag value) -> names of Dataplanes with an inbound carrying that tag
        self.dp_by_tag: dict[tuple[str, str, str], set[str]] = defaultdict(set)
        self.ms_by_mesh: dict[str, set[str]] = defaultdict(set)
        # (mesh, tag key, tag value) -> names of MeshServices whose selector has that tag
        self.ms_by_selector_tag: dict[tuple[str, str, str], set[str]] = defaultdict(set)
        self.remote_dps: dict[tuple[str, str], set[str]] = defaultdict(set)
        """(mesh, zone) -> keys of the `remotedataplane` rows another zone wrote."""
        self._selecting: dict[tuple[str, tuple[tuple[tuple[str, str], ...], ...]],
                              frozenset[str]] = {}
        """`meshservices_selecting` by (mesh, inbound tags); emptied when a selector changes."""
        self._selecting_generation = 0
        """Counts the times `_selecting` was emptied: what `_dp_selecting` holds is good for
        the generation it was found in."""
        self._dp_selecting: dict[str, tuple[int, frozenset[str]]] = {}
        """`meshservices_selecting` by Dataplane key, with the `_selecting_generation` it was
        found in; dropped with the Dataplane's index entries (its tags changed, or it went)."""
        self.generators_complete = False
        """Every default HostnameGenerator has its row (the fold checks until it does, and
        again after one is deleted)."""
        self.used_vips: set[str] = set()
        # (mesh, name) -> expiry of generated MeshServices waiting out their grace period
        self.expiries: dict[tuple[str, str], int] = {}
        self._next_expiry: int | None = None
        """min(`expiries`); None: there are none, or it must be found again."""
        self.revocation_drops: dict[str, int] = {}
        """`revocation` key -> when the row goes (`RevocationRow.drop_at`); revocations of a
        known expiry only."""
        self._drop_heap: list[tuple[int, str]] = []
        """(drop time, key) of `revocation_drops`, a heap, plus entries of rows gone since
        (skipped as they come to the top): a log may hold many revocations, each due at its
        own time, and finding the next one must not cost a scan of them all."""
        self._next_due: int | None = None
        self._due_known = True
        """`_next_due` is `next_expiry()`: False once an expiry, a renewal or a drop time
        changed, so that the fold's check on every event stays one comparison."""
        self.stale_services: set[tuple[str, str]] = set()
        """MeshServices whose endpoints and status must be derived again before the commit."""
        self.stale_hostnames: set[str] = set()
        """Meshes whose hostname assignment (collisions) must be derived again."""
        self.stale_identities: set[tuple[str, str]] = set()
        """(mesh, Dataplane) whose workload certificate must be derived again."""
        self.stale_mmzs: set[str] = set()
        """Meshes whose MeshMultiZoneServices (matches, hostnames, status) must be derived
        again: one of them, or a MeshService's labels or `spec.state`, changed."""
        self.renewals: dict[str, int] = {}
        """mesh -> `TrustRow.renew_at`: when its workload certificates are re-issued."""
        self.secret_key: SecretKey | None = None
        """Opens the meshes' CA keys (`projections.identity`); the projector sets it."""
        self.ca_keys: dict[tuple[str, str, int], LoadedCa] = {}
        """Opened CAs by (mesh, backend, CA version): opened and parsed once per process."""
        self.ca_errors: dict[tuple[str, str, int], str] = {}
        """Synced CAs (`CaRow.synced`) this projector could not open, and why (logged once)."""

    @classmethod
    def load(cls, rows: Iterable[tuple[str, str, bytes]], *,
             secret_key: SecretKey | None = None,
             local_zone: str = DEFAULT_ZONE) -> ProjectionState:
        state = cls(local_zone)
        state.secret_key = secret_key
        for collection, key, body in rows:
            if collection == "quarantine":
                continue  # the worker's record of where it halted, not the fold's (its
                # commit past the sequence removes it from the store, not from a state)
            row = decode_row(collection, body)
            state._persisted[(collection, key)] = body
            state._put(collection, key, row)
        return state

    # --- reading ----------------------------------------------------------------------------

    def get(self, collection: str, key: str) -> Row | None:
        return self.rows[collection].get(key)

    def dataplane(self, mesh: str, name: str) -> DataplaneRow | None:
        return self.dataplane_at(dp_key(mesh, name))

    def dataplane_at(self, key: str) -> DataplaneRow | None:
        """`dataplane` by its key (`dp_key`)."""
        row = self.rows["dataplane"].get(key)
        return None if row is None else _typed(DataplaneRow, row)

    def meshservice(self, mesh: str, name: str) -> MeshServiceRow | None:
        row = self.rows["meshservice"].get(ms_key(mesh, name))
        return None if row is None else _typed(MeshServiceRow, row)

    def meshservices(self) -> list[MeshServiceRow]:
        """Every MeshService, in key order."""
        rows = self.rows["meshservice"]
        return [_typed(MeshServiceRow, rows[key]) for key in sorted(rows)]

    def meshservices_of(self, mesh: str) -> Iterator[MeshServiceRow]:
        for name in sorted(self.ms_by_mesh.get(mesh, ())):
            yield _typed(MeshServiceRow, self.rows["meshservice"][ms_key(mesh, name)])

    def meshservices_selecting(self, mesh: str, dp: Dataplane | None) -> frozenset[str]:
        """Names of the MeshServices of `mesh` whose selector matches `dp`."""
        if dp is None:
            return frozenset()
        key = (mesh, tuple([tuple(i.tags.items()) for i in dp.networking.inbound]))
        found = self._selecting.get(key)
        if found is None:
            if len(self._selecting) >= _SELECTING_MEMO_SIZE:
                self._forget_selecting()
            found = self._selecting[key] = frozenset(self._selecting_now(mesh, dp))
        return found

    def selecting_dataplane(self, key: str, mesh: str, dp: Dataplane) -> frozenset[str]:
        """`meshservices_selecting(mesh, dp)` for `dp`, the Dataplane at `key` (`dp_key`) or
        one with the same inbound tags (`same_tags`): remembered per Dataplane until its tags
        change or a selector does. A health flip or a port change asks again for the same
        tags, and building the memo key of `meshservices_selecting` cost more than this."""
        hit = self._dp_selecting.get(key)
        if hit is not None and hit[0] == self._selecting_generation:
            return hit[1]
        found = self.meshservices_selecting(mesh, dp)
        self._dp_selecting[key] = (self._selecting_generation, found)
        return found

    def _forget_selecting(self) -> None:
        self._selecting.clear()
        self._selecting_generation += 1

    def _selecting_now(self, mesh: str, dp: Dataplane) -> set[str]:
        found: set[str] = set()
        rows = self.rows["meshservice"]
        index = self.ms_by_selector_tag
        for inbound in dp.networking.inbound:
            tags = inbound.tags
            for k, v in tags.items():
                for name in index.get((mesh, k, v), ()):
                    if name in found:
                        continue
                    selector = _typed(MeshServiceRow,
                                      rows[ms_key(mesh, name)]).spec.selector.dataplane_tags
                    # one tag: the index is exact; more must all hold on this inbound
                    if len(selector) == 1 or dataplane_matches(dp, selector):
                        found.add(name)
        return found

    def dataplanes_with_tags(self, mesh: str, tags: dict[str, str]) -> list[DataplaneRow]:
        """Dataplanes with at least one inbound carrying all `tags`, sorted by name."""
        if not tags:
            return []
        sets = [self.dp_by_tag.get((mesh, k, v), set()) for k, v in tags.items()]
        names = set.intersection(*sorted(sets, key=len)) if len(sets) > 1 else sets[0]
        rows = self._dataplane_rows(mesh, sorted(names))
        if len(tags) == 1:
            return rows  # the index is exact for one tag
        # several tags must hold on one inbound, not spread over several
        return [r for r in rows if dataplane_matches(r.dataplane, tags)]

    def dataplanes_with_tag(self, mesh: str, key: str, value: str) -> list[DataplaneRow]:
        """Dataplanes with an inbound carrying the tag `key: value`, in no particular order
        (for answers that do not depend on it)."""
        names = self.dp_by_tag.get((mesh, key, value))
        return self._dataplane_rows(mesh, names) if names else []

    def _dataplane_rows(self, mesh: str, names: Iterable[str]) -> list[DataplaneRow]:
        rows = self.rows["dataplane"]
        prefix = dp_key(mesh, "")
        out: list[DataplaneRow] = []
        for name in names:
            row = rows.get(prefix + name)
            if type(row) is DataplaneRow:
                out.append(row)
            elif row is not None:
                _typed(DataplaneRow, row)  # raises: another type here is a bug of the fold
        return out

    def dataplane_names(self, mesh: str) -> list[str]:
        """Names of `mesh`'s Dataplanes, sorted."""
        prefix = dp_key(mesh, "")
        return sorted(k[len(prefix):] for k in self.rows["dataplane"] if k.startswith(prefix))

    def trust(self, mesh: str) -> TrustRow | None:
        row = self.rows["trust"].get(mesh)
        return None if row is None else _typed(TrustRow, row)

    def ca(self, mesh: str, backend: str) -> CaRow | None:
        row = self.rows["ca"].get(dp_key(mesh, backend))
        return None if row is None else _typed(CaRow, row)

    def identity(self, mesh: str, name: str) -> IdentityRow | None:
        row = self.rows["identity"].get(dp_key(mesh, name))
        return None if row is None else _typed(IdentityRow, row)

    def renewals_due(self, at: int) -> list[str]:
        """Meshes whose certificates are due for re-issue at `at`, sorted."""
        if not self.renewals or at < min(self.renewals.values()):
            return []
        return sorted(mesh for mesh, when in self.renewals.items() if when <= at)

    def hostname_generators(self) -> list[HostnameGeneratorRow]:
        return [_typed(HostnameGeneratorRow, row)
                for row in self.rows["hostnamegenerator"].values()]

    def next_expiry(self) -> int | None:
        """The earliest time the fold has something to do without an event: a generated
        MeshService due to go, a mesh's certificates due for re-issue, or a revocation whose
        token expired long enough ago (`RevocationRow.drop_at`). The fold asks before every
        event: a cached value, found again only after one of them changed."""
        if not self._due_known:
            whens = [when for when in (self._service_expiry(), self._revocation_drop())
                     if when is not None]
            if self.renewals:
                whens.append(min(self.renewals.values()))
            self._next_due = min(whens, default=None)
            self._due_known = True
        return self._next_due

    def due(self, at: int) -> list[tuple[str, str]]:
        """(mesh, name) of the MeshServices whose grace period is over at `at`, sorted."""
        first = self._service_expiry()
        if first is None or at < first:
            return []
        return sorted(key for key, when in self.expiries.items() if when <= at)

    def _service_expiry(self) -> int | None:
        if self._next_expiry is None and self.expiries:
            self._next_expiry = min(self.expiries.values())
        return self._next_expiry

    def _revocation_drop(self) -> int | None:
        heap, drops = self._drop_heap, self.revocation_drops
        while heap and drops.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)  # its row went, or was put again with another drop time
        return heap[0][0] if heap else None

    # --- writing ----------------------------------------------------------------------------

    def put(self, collection: str, key: str, row: Row) -> None:
        """Set the row at (collection, key); `row` must be of the collection's type."""
        _typed(COLLECTIONS[collection], row)
        rows = self.rows[collection]
        old = rows.get(key)
        if isinstance(row, MeshServiceRow):
            self._meshservice_changing(old, row)
        if (collection == "dataplane" and type(row) is DataplaneRow
                and type(old) is DataplaneRow and same_tags(old.dataplane, row.dataplane)):
            rows[key] = row  # a Dataplane whose tags did not change keeps its index entries
        elif (collection == "meshservice" and type(row) is MeshServiceRow
                and type(old) is MeshServiceRow
                and row.expires_at == old.expires_at
                and row.spec.selector.dataplane_tags == old.spec.selector.dataplane_tags):
            rows[key] = row  # so does a MeshService whose selector and expiry did not change
        else:
            self._drop_indexes(collection, key)
            self._put(collection, key, row)
        self._dirty.add((collection, key))

    def replace_dataplane(self, key: str, row: DataplaneRow) -> None:
        """`put` of a Dataplane row over one whose inbounds have the same tags (`same_tags`),
        as the caller knows: its index entries hold as they are."""
        rows = self.rows["dataplane"]
        if type(row) is not DataplaneRow or type(rows.get(key)) is not DataplaneRow:
            self.put("dataplane", key, row)
            return
        rows[key] = row
        self._dirty.add(("dataplane", key))

    def delete(self, collection: str, key: str) -> None:
        old = self.rows[collection].get(key)
        if isinstance(old, MeshServiceRow):
            self.stale_mmzs.add(old.mesh)
        if collection == "hostnamegenerator":
            self.generators_complete = False
        self._drop_indexes(collection, key)
        self.rows[collection].pop(key, None)
        self._dirty.add((collection, key))

    def drop_revocations_due(self, at: int) -> None:
        """Remove the revocations whose rows go at `at` (`RevocationRow.drop_at`), in key order."""
        first = self._revocation_drop()
        if first is None or at < first:
            return
        heap, drops = self._drop_heap, self.revocation_drops
        due: set[str] = set()
        while heap and heap[0][0] <= at:
            when, key = heapq.heappop(heap)
            if drops.get(key) == when:
                due.add(key)
        for key in sorted(due):
            self.delete("revocation", key)

    def delete_meshservice(self, mesh: str, name: str) -> None:
        """Remove a MeshService with its endpoints; its mesh's hostnames are derived again."""
        self.delete("meshservice", ms_key(mesh, name))
        self.delete("endpoints", ms_key(mesh, name))
        self.stale_hostnames.add(mesh)

    def take_changes(self) -> list[Change]:
        """Rows changed since the last call, in a stable order, and mark them persisted."""
        changes = []
        for collection, key in sorted(self._dirty):
            row = self.rows[collection].get(key)
            body = None if row is None else encode_row(row)
            if self._persisted.get((collection, key)) == body:
                continue
            if body is None:
                self._persisted.pop((collection, key), None)
            else:
                self._persisted[(collection, key)] = body
            changes.append(Change(collection, key, body))
        self._dirty.clear()
        return changes

    def persisted(self) -> Iterator[tuple[str, str, bytes]]:
        for (collection, key), body in sorted(self._persisted.items()):
            yield collection, key, body

    def _meshservice_changing(self, old: Row | None, new: MeshServiceRow) -> None:
        """What MeshMultiZoneServices see of a MeshService: that it exists, its labels (they
        select and name it) and its `spec.state` (whether a remote one serves); not its
        status, which moves with every endpoint."""
        if not isinstance(old, MeshServiceRow) or (old.labels, old.spec.state) != (
                new.labels, new.spec.state):
            self.stale_mmzs.add(new.mesh)

    # --- indexes ----------------------------------------------------------------------------

    def remote_dataplanes(self, mesh: str, zone: str) -> list[DataplaneRow]:
        """What zone `zone` registered in `mesh` (another zone's Dataplanes), by key."""
        rows = self.rows["remotedataplane"]
        return [_typed(DataplaneRow, rows[k]) for k in sorted(self.remote_dps.get((mesh, zone),
                                                                                 ()))]

    def _put(self, collection: str, key: str, row: Row) -> None:
        self.rows[collection][key] = row
        if collection == "remotedataplane":
            dp = _typed(DataplaneRow, row).dataplane
            self.remote_dps[(dp.mesh, dp.labels.get("kuma.io/zone", ""))].add(key)
        elif collection in _UNINDEXED:
            pass
        elif isinstance(row, DataplaneRow):
            dp = row.dataplane
            for inbound in dp.networking.inbound:
                for k, v in inbound.tags.items():
                    self.dp_by_tag[(dp.mesh, k, v)].add(dp.name)
        elif isinstance(row, MeshServiceRow):
            self._forget_selecting()
            self.ms_by_mesh[row.mesh].add(row.name)
            if row.expires_at is not None:
                self.expiries[(row.mesh, row.name)] = row.expires_at
                self._next_expiry = None
                self._due_known = False
            for k, v in row.spec.selector.dataplane_tags.items():
                self.ms_by_selector_tag[(row.mesh, k, v)].add(row.name)
        elif isinstance(row, VipRow):
            self.used_vips.add(row.ip)
        elif isinstance(row, TrustRow):
            # `renew_at`, but a fold version 6 row (a resumed store) has later there
            self.renewals[row.mesh] = min(row.renew_at, next_renewal(
                row.anchor, renew_after(row.expiration_ms), row.clock))
            self._due_known = False
        elif isinstance(row, RevocationRow):
            when = row.drop_at()
            if when is not None:
                self.revocation_drops[key] = when
                heapq.heappush(self._drop_heap, (when, key))
                self._due_known = False

    def _drop_indexes(self, collection: str, key: str) -> None:
        row = self.rows[collection].get(key)
        if collection == "remotedataplane" and isinstance(row, DataplaneRow):
            zone = row.dataplane.labels.get("kuma.io/zone", "")
            self.remote_dps[(row.dataplane.mesh, zone)].discard(key)
            return
        if collection in _UNINDEXED:
            return
        if isinstance(row, TrustRow):
            self.renewals.pop(row.mesh, None)
            self._due_known = False
        elif isinstance(row, RevocationRow):
            if self.revocation_drops.pop(key, None) is not None:
                self._due_known = False  # its heap entry is skipped when it comes to the top
        if isinstance(row, DataplaneRow):
            self._dp_selecting.pop(key, None)
            dp = row.dataplane
            for inbound in dp.networking.inbound:
                for k, v in inbound.tags.items():
                    names = self.dp_by_tag.get((dp.mesh, k, v))
                    if names is not None:
                        names.discard(dp.name)
                        if not names:
                            del self.dp_by_tag[(dp.mesh, k, v)]
        elif isinstance(row, MeshServiceRow):
            self._forget_selecting()
            self.ms_by_mesh[row.mesh].discard(row.name)
            if self.expiries.pop((row.mesh, row.name), None) is not None:
                self._next_expiry = None
                self._due_known = False
            for k, v in row.spec.selector.dataplane_tags.items():
                names = self.ms_by_selector_tag.get((row.mesh, k, v))
                if names is not None:
                    names.discard(row.name)
                    if not names:
                        del self.ms_by_selector_tag[(row.mesh, k, v)]

