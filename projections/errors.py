"""Errors of the projection side.

    MeshlogError (events.errors)
    └── ProjectionError
        ├── SequenceGap          the log skipped a sequence; the projector halts (invariant 5)
        ├── ProjectorHalted      an event could not be decoded or applied (quarantined)
        └── StoreError
            ├── StoreUnavailable the database cannot be reached (transient)
            ├── StoreCorrupt     the read models are not what this code wrote (permanent)
            ├── Fenced           a newer projector leader claimed the store: this one's
            │                    commit is refused (permanent for its term)
            └── NewerFoldVersion the store was folded by a newer release's rules (a
                                 downgrade): this one must not fold into it (permanent)
"""

from __future__ import annotations

from events import MeshlogError

__all__ = [
    "Fenced",
    "IdentityUnavailable",
    "NewerFoldVersion",
    "ProjectionError",
    "ProjectorHalted",
    "SequenceGap",
    "StoreCorrupt",
    "StoreError",
    "StoreUnavailable",
]


class ProjectionError(MeshlogError):
    pass


class SequenceGap(ProjectionError):
    def __init__(self, expected: int, got: int) -> None:
        self.expected = expected
        self.got = got
        super().__init__(
            f"event log gap: expected sequence {expected}, got {got}; the projector stops rather "
            "than skip events (check the stream was not purged or its messages deleted)"
        )


class ProjectorHalted(ProjectionError):
    pass


class StoreError(ProjectionError):
    pass


class StoreUnavailable(StoreError):
    pass


class StoreCorrupt(StoreError):
    pass


class Fenced(StoreError):
    """The store's fence for this projector is above the caller's token: a newer leader
    (projections.leadership) has claimed it, so the caller is a stale leader."""


class NewerFoldVersion(StoreError):
    """The store records a fold version above this code's (projections.foldversion): it was
    folded by a newer release, and folding on with this one would mix two releases' rules."""


class IdentityUnavailable(ProjectionError):
    """A certificate cannot be issued: the projector cannot open its mesh's CA key (no
    secret key, or another one than sealed it)."""
