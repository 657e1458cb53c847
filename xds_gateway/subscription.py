"""Per-stream, per-type subscription state, shared by the SotW (and later Delta) servers."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["TypeState"]


@dataclass
class TypeState:
    names: set[str] = field(default_factory=set)
    """Requested names; empty (or `*`) on a wildcard type means everything."""
    sent_version: str | None = None
    sent_nonce: str = ""
    acked_version: str | None = None
    demand: bool = False
    """The client asked for a response (new subscription or changed names)."""
    responses: int = 0
    acks: int = 0
    nacks: int = 0
    last_nack: str = ""

    def wildcard(self) -> bool:
        return not self.names or "*" in self.names
