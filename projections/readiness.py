"""Readiness changes a later event of the same batch replaces, folded as their time only.

A readiness change (`events.readiness`: the Dataplane of its subject's previous event, only
its inbounds' `health` changed) does to the projection what registering that Dataplane again
does: its time comes (what falls due by it goes), the Dataplane's row gets the new readiness,
version and modification time, and what is derived from the Dataplane is marked stale (the
MeshServices selecting it, those of its services, its identity); its generated MeshServices
stay as they are, as their ports and provenance do not change. When a later event of the
same subject is in the batch, all of that but the time is done again or made moot before
anything reads it: the later event replaces the row, and marks what is derived from the
same Dataplane, or what changed that in between marked itself (a MeshService applied, the
mesh's trust); endpoints and status are derived once per batch, from the rows at its end.
So such a change is folded as its time only (`fold.pass_time`): decoded (one that does not
decode is quarantined, whatever the batch: invariant 10), but no row, no selectors, no
regeneration. Nearly half of a busy log is such flips; folding them was most of a rebuild's
time (docs/benchmarks.md, Rebuild).

It is folded so only when

- the record is of this log's own zone (other zones' and global's go their own ways),
- of the current schema version, and it decodes,
- the state's row of its Dataplane is still the one the subject's last registration in the
  batch left (its version), and the change is a readiness change of that registration, its
  sequence the header's and its Dataplane the same but for its inbounds' readiness, compared
  field by field (`events.readiness.readiness_change`); or, for the subject's first in the
  batch, the row was written by the very event the header names (its version) and holds the
  change's Dataplane, labelled, but for its readiness, registered by the same origin
  (`fold.readiness_only`). The header is its writer's claim, checked: a writer past the API
  may say what is not so, and a row of an older release's store may hold other labels;

otherwise it is decoded and folded in full, as every other event. And the batch checks that
what it counted on happened: a row that no later event replaced after all (the event that
was to replace it could not be read and the projector stops in front of it, or an operator
skipped it, or a writer past the API put another kind of event on the subject) becomes the
one folding the subject's last such change makes, with its marks (`BatchReadiness.settle`,
`fold.put_readiness`), before the batch is derived or committed, or committed in front of a
gap. Batch sizes never change the rows (invariant 4): `tests/projections/test_fold.py` folds
random histories at random batch sizes and restarts through this path, against one event per
batch, and `tests/projections/test_readiness.py` each way it may not apply.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import NamedTuple

from events import (
    DataplaneRegistered,
    MalformedSubject,
    Provenance,
    UndecodableEvent,
    decode_event,
    provenance_of,
)
from events.codec import SCHEMA_VERSION
from events.log import Record
from events.readiness import readiness_change
from projections.fold import pass_time, put_readiness, readiness_only
from projections.state import ProjectionState, dp_key

__all__ = ["BatchReadiness"]


class _Anchor(NamedTuple):
    """What a subject's next readiness change in this batch is checked against."""

    key: str
    """Its Dataplane's row (`dp_key`)."""
    version: int
    """The version that row must still have."""
    seq: int
    """The sequence of `last`."""
    last: DataplaneRegistered
    """The subject's last registration in the batch, decoded: the one folded in full that
    wrote the row (`version` is its sequence), or a readiness change of it folded as its
    time only (then `pending`)."""
    provenance: Provenance
    pending: bool
    """`last` was folded as its time only: its row waits for a later event to replace it."""


class BatchReadiness:
    """The readiness changes of one batch that a later event of their subject replaces, and
    those of them folded as their time only (`fold`), until `settle` checks they were
    replaced."""

    def __init__(self, batch: Sequence[Record], skipped: Collection[int] = ()) -> None:
        self.replaced: frozenset[int] = frozenset()
        """Sequences of the readiness changes a later event of their subject replaces (an
        event an operator decided to skip replaces nothing)."""
        self._anchors: dict[str, _Anchor] = {}
        """By subject."""
        changes = [record for record in batch if record.readiness_of]
        if not changes:
            return
        last = ({record.subject: record.seq for record in batch} if not skipped else
                {record.subject: record.seq for record in batch if record.seq not in skipped})
        self.replaced = frozenset(record.seq for record in changes
                                  if last.get(record.subject, record.seq) > record.seq)

    def folded(self, record: Record, event: object, provenance: Provenance) -> None:
        """`record` was folded in full as `event`: what its subject's next readiness change
        in the batch is checked against."""
        if not self.replaced:
            return
        if type(event) is DataplaneRegistered:
            dp = event.dataplane
            self._anchors[record.subject] = _Anchor(dp_key(dp.mesh, dp.name), record.seq,
                                                    record.seq, event, provenance, False)
        else:
            self._anchors.pop(record.subject, None)

    def fold(self, state: ProjectionState, record: Record) -> bool:
        """Fold `record` as its time if it is a replaced readiness change and that is exact;
        False (nothing done): fold it in full."""
        if record.seq not in self.replaced or record.schema_version != SCHEMA_VERSION:
            return False
        try:
            provenance = provenance_of(record.subject)
            if provenance != state.local_provenance:
                return False
            # decoded in full: one that does not decode is quarantined by the full path,
            # whatever the batch (invariant 10)
            event = decode_event(record.data, seq=record.seq, subject=record.subject)
        except (MalformedSubject, UndecodableEvent):
            return False  # the full path says what is wrong with it
        if type(event) is not DataplaneRegistered:
            return False
        key = dp_key(event.dataplane.mesh, event.dataplane.name)
        row = state.dataplane_at(key)
        if row is None:
            return False
        # the header is its writer's claim, checked: folded as its time only if folding it in
        # full would change nothing of the row but its readiness, version and time
        anchor = self._anchors.get(record.subject)
        if (anchor is not None and anchor.key == key and row.meta.version == anchor.version
                and record.readiness_of == anchor.seq
                and readiness_change(anchor.last, event)):
            version = anchor.version  # the row is `anchor.last`'s but for its readiness
        elif (row.meta.version == record.readiness_of
                and readiness_only(row, event, provenance)):
            version = row.meta.version  # its writer was in an earlier batch
        else:
            return False
        pass_time(state, event.at)
        self._anchors[record.subject] = _Anchor(key, version, record.seq, event, provenance,
                                                True)
        return True

    def settle(self, state: ProjectionState) -> None:
        """Make each row that changes were folded as their time of, and that no later event
        replaced, what folding the last of them leaves. Before the state is derived or
        committed, and before the projector stops in front of an event or a gap (what it
        commits, or folds on from, is the fold up to the event before)."""
        anchors, self._anchors = self._anchors, {}
        for anchor in anchors.values():
            if not anchor.pending:
                continue
            row = state.dataplane_at(anchor.key)
            if row is None or row.meta.version != anchor.version:
                continue  # replaced, as it was to be
            put_readiness(state, anchor.seq, anchor.last, anchor.provenance)
