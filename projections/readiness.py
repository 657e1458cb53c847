"""Readiness changes a later event of the same batch replaces, folded as their time only.

A readiness change (a Dataplane registered again as its subject's previous registration,
only its inbounds' `health` changed) does to the projection what registering that Dataplane
again does: its time comes (what falls due by it goes), the Dataplane's row gets the new
readiness, version and modification time, and what is derived from the Dataplane is marked
stale (the MeshServices selecting it, those of its services, its identity); its generated
MeshServices stay as they are, as their ports and provenance do not change. When a later
event of the same subject is in the batch, all of that but the time is done again or made
moot before anything reads it: the later event replaces the row, and marks what is derived
from the same Dataplane, or what changed that in between marked itself (a MeshService
applied, the mesh's trust); endpoints and status are derived once per batch, from the rows at
its end. So such a change is folded as its time only (`fold.pass_time`). Nearly half of a
busy log is such flips, and decoding and folding them was most of a rebuild's time
(docs/benchmarks.md, Rebuild).

**Recognised by its bytes, not decoded.** What makes it exact for any log, whoever wrote it
(invariants 4 and 10), is that a change is taken as one only when its bytes *are* the
encoding of the subject's last registration folded in full in this batch (the anchor), with
nothing but its inbounds' `health` and its `at` set anew: the encoding this code's encoder
gives such an event, byte for byte (`_Shape`). Such bytes decode to exactly that event (the
anchor has no free-form field, and what the decoder made of a typed one the encoder writes
so that it decodes to the same value), so there is nothing to decode and nothing a writer
could claim: a payload that differs anywhere else, that does not decode, or that is spelled
otherwise (spaces, another key order, `"ready":true`) is decoded and folded in full as every
other event. The `Meshlog-Readiness-Of` header (`Record.readiness_of`) only says which events
are worth checking: one without it is folded in full, one whose header is not true fails the
check. Checking costs a few `bytes.startswith` per inbound, where decoding the event cost
about what folding it does.

It is folded so only when

- a later event of its subject is in the batch (one an operator skips replaces nothing),
- the subject's last event before it in the batch was a registration folded in full (the
  anchor) or a change folded so from that anchor, of this log's own zone, at this schema
  version,
- the Dataplane's row still holds what the anchor wrote (its version is the anchor's
  sequence: nothing else wrote the row in between),
- each of its services' MeshServices is there and not waiting out a grace period (or is a
  user's): regenerating it is then only a mark (another zone's event on a synced name that
  is also a local service may have made it wait),
- its writer says it is a readiness change (the header),
- and its bytes are the anchor's shape with a time and readiness of their own.

The first change of each subject in a batch is folded in full (its anchor), so a batch of
changes only folds about one event per Dataplane in full. And the batch checks that what it
counted on happened: a row that no later event replaced after all (the event that was to
replace it could not be read and the projector stops in front of it, or a writer past the API
put another kind of event on the subject) becomes the one folding the subject's last such
change makes, with its marks (`BatchReadiness.settle`, `fold.put_readiness`), before the batch
is derived or committed, or committed in front of a gap. Batch sizes never change the rows
(invariant 4): `tests/projections/test_fold.py` folds random histories at random batch sizes
and restarts through this path, against one event per batch, and
`tests/projections/test_readiness.py` each way it may not apply.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import NamedTuple

import msgspec

from events import SERVICE_TAG, DataplaneRegistered, Provenance, decode_event, is_dns1035_label
from events.codec import SCHEMA_VERSION, encode_event
from events.event_types import AnyEvent
from events.log import Record
from events.resources import Health
from projections.fold import pass_time, put_readiness
from projections.state import ProjectionState, dp_key

__all__ = ["BatchReadiness"]

_NOT_READY = Health(ready=False)
_NOT_READY_SLOT = b',"health":{"ready":false}'
"""An inbound's `health` when not ready, as the encoder writes it (never first: `port` is)."""
_READY_SLOT = b',"health":{}'
"""`Health(ready=True)` as the encoder writes it (`ready` is its default); `None` is no slot."""
_AT = b',"at":'
"""An event's time, its last field (`kw_only`), then the closing brace."""
_MAX_AT_DIGITS = 18
"""Below 2**63: an int the decoder takes as it is."""


class _Shape:
    """The encoding of one registration with every inbound's `health` and the time left
    open: the pieces between the `health` slots, and before the time."""

    __slots__ = ("pieces",)

    def __init__(self, pieces: tuple[bytes, ...]) -> None:
        self.pieces = pieces

    @classmethod
    def of(cls, event: DataplaneRegistered) -> _Shape | None:
        """`event`'s shape; None when bytes of its shape might decode to other than `event`
        with another readiness and time: a Dataplane with a `status` (free-form: a value in
        it the encoder writes otherwise than it was read, a float beyond range say, or the
        slot's own bytes), or the slot's bytes found where they cannot be told from one.
        Every other field is typed, and what the decoder made of it the encoder writes so
        that it decodes to the same value."""
        dp = event.dataplane
        if dp.status is not None:
            return None
        inbound = [msgspec.structs.replace(i, health=_NOT_READY) for i in dp.networking.inbound]
        try:
            data = encode_event(msgspec.structs.replace(
                event, at=0, dataplane=msgspec.structs.replace(
                    dp, networking=msgspec.structs.replace(dp.networking, inbound=inbound))))
        except (msgspec.EncodeError, UnicodeError, OverflowError):
            return None
        end = _AT + b"0}"
        if not data.endswith(end):
            return None
        pieces = tuple(data[:-len(end)].split(_NOT_READY_SLOT))
        if len(pieces) != len(inbound) + 1:
            return None
        return cls(pieces)

    def time_of(self, data: bytes) -> int | None:
        """The time of the event `data` encodes when it is this shape's registration with a
        readiness and a time of its own, else None."""
        pieces = self.pieces
        if not data.startswith(pieces[0]):
            return None
        pos = len(pieces[0])
        for piece in pieces[1:]:
            if data.startswith(_NOT_READY_SLOT, pos):
                pos += len(_NOT_READY_SLOT)
            elif data.startswith(_READY_SLOT, pos):
                pos += len(_READY_SLOT)
            if not data.startswith(piece, pos):
                return None
            pos += len(piece)
        if not data.startswith(_AT, pos) or data[-1:] != b"}":
            return None
        digits = data[pos + len(_AT):-1]
        if (not digits.isdigit() or len(digits) > _MAX_AT_DIGITS
                or (digits[0] == 0x30 and len(digits) > 1)):
            return None
        return int(digits)


class _Anchor(NamedTuple):
    """A subject's last registration folded in full in this batch, and its shape."""

    seq: int
    """Its sequence: the version its Dataplane's row must still have."""
    key: str
    """Its Dataplane's row (`dp_key`)."""
    shape: _Shape | None
    """`_Shape.of` it; None: no bytes are taken as a readiness change of it."""
    mesh: str
    services: tuple[str, ...]
    """Its inbounds' services that can name a generated MeshService: what folding a change
    of it regenerates (`generation.regenerate`)."""


class BatchReadiness:
    """The readiness changes of one batch that a later event of their subject replaces, and
    those of them folded as their time only (`fold`), until `settle` checks they were
    replaced."""

    def __init__(self, batch: Sequence[Record], skipped: Collection[int] = ()) -> None:
        self._last = ({record.subject: record.seq for record in batch} if not skipped else
                      {record.subject: record.seq for record in batch
                       if record.seq not in skipped})
        """Each subject's last sequence in the batch (an event an operator decided to skip
        replaces nothing)."""
        self._folded: dict[str, tuple[int, DataplaneRegistered, Provenance] | _Anchor] = {}
        """By subject: its last event folded in full, when a registration; its `_Anchor` once
        a change of it came."""
        self.as_time = 0
        """How many were folded as their time only."""
        self._pending: dict[str, tuple[int, bytes, int, str]] = {}
        """By Dataplane row (`dp_key`): the last change of it folded as its time only, whose
        row waits for a later event (its sequence and bytes, the anchor's sequence, its
        subject). By row, not by subject: a writer past the API may put registrations of
        several Dataplanes on one subject, and a change of one must not drop another's."""

    def folded(self, record: Record, event: AnyEvent, provenance: Provenance) -> None:
        """`record` was folded in full as `event`: what its subject's next readiness change
        in the batch is checked against."""
        if type(event) is DataplaneRegistered:
            self._folded[record.subject] = (record.seq, event, provenance)
        elif self._folded:
            self._folded.pop(record.subject, None)

    def fold(self, state: ProjectionState, record: Record) -> bool:
        """Fold `record` as its time if it is a replaced readiness change and that is exact;
        False (nothing done): fold it in full. Asked only of a record whose writer says it is
        a readiness change (`Record.readiness_of`, the header): others are not worth it."""
        anchor = self._folded.get(record.subject)
        if (anchor is None or self._last[record.subject] <= record.seq
                or record.schema_version != SCHEMA_VERSION):
            return False
        if not isinstance(anchor, _Anchor):
            anchor = self._folded[record.subject] = _anchor(state, *anchor)
        shape = anchor.shape
        if shape is None:
            return False
        row = state.dataplane_at(anchor.key)
        if row is None or row.meta.version != anchor.seq:
            return False
        for service in anchor.services:
            # regenerating it for the change is only a mark while it is there and not waiting
            # out a grace period (another zone's event on its name may have made it so)
            ms = state.meshservice(anchor.mesh, service)
            if ms is None or (ms.expires_at is not None and ms.origin != "user"):
                return False
        at = shape.time_of(record.data)
        if at is None:
            return False
        pass_time(state, at)
        self._pending[anchor.key] = (record.seq, record.data, anchor.seq, record.subject)
        self.as_time += 1
        return True

    def settle(self, state: ProjectionState) -> None:
        """Make each row that changes were folded as their time of, and that no later event
        replaced, what folding the last of them leaves. Before the state is derived or
        committed, and before the projector stops in front of an event or a gap (what it
        commits, or folds on from, is the fold up to the event before)."""
        pending, self._pending = self._pending, {}
        self._folded.clear()
        for key, (seq, data, anchor, subject) in pending.items():
            row = state.dataplane_at(key)
            if row is None or row.meta.version != anchor:
                continue  # replaced, as it was to be
            # its bytes are its anchor's shape: they decode, to the anchor with its own
            # readiness and time, written by the anchor's provenance (of the same subject)
            event = decode_event(data, seq=seq, subject=subject)
            assert type(event) is DataplaneRegistered, subject
            put_readiness(state, seq, event, state.local_provenance)


def _anchor(state: ProjectionState, seq: int, event: DataplaneRegistered,
            provenance: Provenance) -> _Anchor:
    dp = event.dataplane
    services = {i.tags[SERVICE_TAG] for i in dp.networking.inbound if SERVICE_TAG in i.tags}
    return _Anchor(seq, dp_key(dp.mesh, dp.name),
                   _Shape.of(event) if provenance == state.local_provenance else None,
                   dp.mesh, tuple(sorted(s for s in services if is_dns1035_label(s))))
