"""Errors of the event language and the event log.

    MeshlogError
    ├── PermanentError            the request itself is wrong; retrying cannot help
    │   ├── InvalidResource       violations, each with a field path, value and rule
    │   ├── Conflict              optimistic concurrency failed (stale expected sequence)
    │   │   └── WrongControlPlane  the resource is written on another control plane (Kuma's
    │   │                          ownership rules: global's kinds on global, Dataplanes in
    │   │                          their zone)
    │   ├── NotFound              the resource (or its mesh) does not exist
    │   ├── TooLarge              a document or an event over its size limit
    │   ├── IdempotencyKeyReused  a key given again with other content
    │   ├── UndecodableEvent      a stored event this code cannot read
    │   ├── StreamConfigMismatch  the existing stream breaks an invariant (DESIGN.md #3)
    │   └── LeaseLost             a lease holder was superseded (or could not renew in time):
    │                             what it writes under the lease is refused from now on
    └── TransientError            the bus is unavailable or timed out; retry later
        └── EventLogUnavailable
            └── JetStreamUnavailable  JetStream did not answer the event log: no stream
                │                     leader or replica (a replicated stream without
                │                     quorum), no server reachable, or no answer in time
                └── AppendNotStored   ... to an append, which may be retried as it was
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

__all__ = [
    "MAX_VIOLATIONS_CHARS",
    "MAX_VIOLATIONS_SHOWN",
    "MAX_VIOLATION_CHARS",
    "AppendNotStored",
    "Conflict",
    "EventLogUnavailable",
    "IdempotencyKeyReused",
    "InvalidResource",
    "JetStreamUnavailable",
    "LeaseLost",
    "MeshlogError",
    "NotFound",
    "PermanentError",
    "StreamConfigMismatch",
    "TooLarge",
    "TransientError",
    "UndecodableEvent",
    "Violation",
    "WrongControlPlane",
]


class Violation(msgspec.Struct, frozen=True):
    """One broken rule: `path: message`, e.g. `spec.ports[1].port: 70000 is not in 1..65535`."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class MeshlogError(Exception):
    """Base of every error meshlog raises on purpose."""


class PermanentError(MeshlogError):
    """The request or the data is wrong; the same call will fail again."""


class TransientError(MeshlogError):
    """A dependency is unavailable; the same call may succeed later."""


MAX_VIOLATIONS_SHOWN = 100
"""The most violations an `InvalidResource` carries; the rest are counted in one more."""
MAX_VIOLATION_CHARS = 1024
"""The longest path or message a violation carries: one that echoes a value of a megabyte
(a `retryOn` item, a duration) is cut in the middle, saying how much was left out, so a
400 answer stays small however big the document that earned it."""
MAX_VIOLATIONS_CHARS = 16_384
"""The most characters of paths and messages the violations carry in all: past it, the
rest are counted too (each may be `MAX_VIOLATION_CHARS` twice, and there may be 100)."""


def _cut(text: str) -> str:
    if len(text) <= MAX_VIOLATION_CHARS:
        return text
    keep = MAX_VIOLATION_CHARS - 64  # room for the note
    head, tail = keep * 3 // 4, keep // 4
    return (f"{text[:head]}… [{len(text) - head - tail} characters left out] …"
            f"{text[len(text) - tail:]}")


def _bounded(violations: Sequence[Violation]) -> tuple[Violation, ...]:
    """`violations`, each path and message at most `MAX_VIOLATION_CHARS`, at most
    `MAX_VIOLATIONS_SHOWN` of them and `MAX_VIOLATIONS_CHARS` in all, and one that counts
    the others."""
    shown: list[Violation] = []
    budget = MAX_VIOLATIONS_CHARS
    for v in violations[:MAX_VIOLATIONS_SHOWN]:
        if len(v.path) > MAX_VIOLATION_CHARS or len(v.message) > MAX_VIOLATION_CHARS:
            v = Violation(_cut(v.path), _cut(v.message))
        budget -= len(v.path) + len(v.message)
        if budget < 0 and shown:
            break
        shown.append(v)
    left = len(violations) - len(shown)
    if left:
        shown.append(Violation("", f"{left} more violation{'s' if left > 1 else ''} not "
                                   "shown: fix these and submit again"))
    return tuple(shown)


class InvalidResource(PermanentError):
    def __init__(self, kind: str, violations: Sequence[Violation]) -> None:
        self.kind = kind
        self.violations = _bounded(violations)
        lines = "\n".join(f"  {v}" for v in self.violations)
        super().__init__(f"invalid {kind}:\n{lines}")


class Conflict(PermanentError):
    def __init__(self, subject: str, expected: int, message: str = "") -> None:
        self.subject = subject
        self.expected = expected
        super().__init__(
            message
            or f"{subject} changed since version {expected}: read it again and retry the write"
        )


class WrongControlPlane(Conflict):
    """Written on another control plane (a 409, as any conflict); the message says where."""

    def __init__(self, subject: str, message: str) -> None:
        super().__init__(subject, 0, message)


class NotFound(PermanentError):
    pass


class TooLarge(PermanentError):
    def __init__(self, message: str, *, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(message)


class IdempotencyKeyReused(PermanentError):
    def __init__(self, key: str, seq: int, subject: str) -> None:
        self.key = key
        super().__init__(f"Idempotency-Key {key!r} was used for another write (event #{seq} on "
                         f"{subject}); a key may only be sent again with the same request")


class UndecodableEvent(PermanentError):
    def __init__(self, seq: int, subject: str, reason: str) -> None:
        self.seq = seq
        self.subject = subject
        self.reason = reason
        super().__init__(f"event #{seq} on {subject} cannot be decoded: {reason}")


class StreamConfigMismatch(PermanentError):
    pass


class LeaseLost(PermanentError):
    pass


class EventLogUnavailable(TransientError):
    pass


class JetStreamUnavailable(EventLogUnavailable):
    """JetStream did not answer a read or write of the event log; the message says why in
    an operator's words."""


class AppendNotStored(JetStreamUnavailable):
    """An append JetStream did not acknowledge. Retrying with the same Msg-Id (an API
    client: the same Idempotency-Key) is safe: if it was stored after all, the retry is
    recognised and nothing is stored twice."""
