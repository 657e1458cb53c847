"""Where a zone finds a Mesh: in its own log, on its own subject (a standalone control plane)
or on global's (a zone of a multi-zone deployment, where Mesh belongs to global and reaches
the zone through its source of global's stream).

And which life of it is the current one (`MeshLives`). Kuma deletes a mesh's secrets with the
mesh (its dataplane-token signing keys, `dataplane-token-signing-key-<mesh>-<serial>`, and its
revocations), so a Mesh created again under the same name starts without them. Here those are
events on subjects of their own, which outlive the Mesh in the log; the fold decides what goes
with a Mesh (`projections.fold`: at a `MeshDeleted`, and a key created while the Mesh did not
exist gets no row), and the command side decides the same way from the log: a key is the
current life's when it was created after the `MeshApplied` that began that life (`began`).
"""

from __future__ import annotations

from collections.abc import Sequence

from msgspec import Struct

from events.commands.handler import CommandHandler, Current, current_of
from events.event_types import MeshApplied, MeshDeleted
from events.log import Record
from events.subjects import GLOBAL_ZONE, resource_subject

__all__ = ["MeshLife", "MeshLives", "current_mesh", "life_of"]


async def current_mesh(handler: CommandHandler, name: str, zone: str) -> Current:
    """The last record of Mesh `name` as `zone`'s command side sees it: its own subject's if
    it has one, else global's."""
    return (await _mesh_subject(handler, name, zone))[1]


async def _mesh_subject(handler: CommandHandler, name: str, zone: str) -> tuple[str, Current]:
    own_subject = resource_subject("Mesh", None, name, zone)
    own = await handler.current(own_subject)
    if own.seq or zone == GLOBAL_ZONE:
        return own_subject, own
    global_subject = resource_subject("Mesh", None, name, GLOBAL_ZONE)
    return global_subject, await handler.current(global_subject)


class MeshLife(Struct, frozen=True):
    """A Mesh from the `MeshApplied` that created it (the first one, or the first after a
    `MeshDeleted`) to now."""

    subject: str
    began: int
    """The sequence of the `MeshApplied` that created it: what this log holds of the mesh from
    before (its signing keys and revocations) went with an earlier life, or with none."""
    seq: int
    """The subject's last sequence when this was read."""


def life_of(subject: str, records: Sequence[Record], *, known: MeshLife | None = None
            ) -> MeshLife | None:
    """The current life of the Mesh whose subject's records (oldest first) are `records`, or
    those after `known` (the life as it was at `known.seq`); None if it does not exist after
    them. An event this code cannot decode changes nothing (the projector halts in front of
    it anyway)."""
    began: int | None = known.began if known is not None else None
    if not records:
        return known
    for record in records:
        event = current_of(record).event
        if isinstance(event, MeshApplied):
            if began is None:
                began = record.seq
        elif isinstance(event, MeshDeleted):
            began = None
    if began is None:
        return None
    return MeshLife(subject=subject, began=began, seq=records[-1].seq)


class MeshLives:
    """The current life of each Mesh, read from the log. Remembered per subject for as long
    as its last sequence stays the same: a subject's history is append-only, so the same
    last sequence is the same history, and most decisions cost one read of the last record."""

    def __init__(self, handler: CommandHandler, *, zone: str) -> None:
        self._handler = handler
        self._zone = zone
        self._lives: dict[str, MeshLife] = {}

    async def current(self, name: str) -> MeshLife | None:
        """The life of Mesh `name` now; None if it does not exist. Raises
        `EventLogUnavailable` without the log."""
        subject, current = await _mesh_subject(self._handler, name, self._zone)
        if not isinstance(current.event, MeshApplied):
            return None
        known = self._lives.get(subject)
        if known is not None and known.seq == current.seq:
            return known
        if known is not None and known.seq < current.seq:  # read on from where it was
            life = life_of(subject, await self._handler.log.history(subject, after=known.seq),
                           known=known)
        else:
            life = life_of(subject, await self._handler.log.history(subject))
        if life is not None:
            self._lives[subject] = life
        return life
