"""Readiness changes: a Dataplane registered again with only its inbounds' readiness changed.

Most of a busy log is health checks flipping (`ProxyCommands.report_readiness`, or a PUT that
changes only `health`): the Dataplane of the subject's previous event again, each inbound's
`health` set anew, nothing else. The command path (`CommandHandler.execute`) says so on the
event it appends, in the `Meshlog-Readiness-Of` header: the sequence of the subject's previous
event, of which this one is a readiness change (`readiness_change`). The header is a fact
about the log, which anyone can check against it (the event at that sequence, on the same
subject, differs from this one in its inbounds' `health` alone); the event itself is as any
other registration, and a reader that ignores the header folds it as before.

What it is for: a projector folding a batch in which a later event of the same subject
replaces the Dataplane needs nothing of the readiness such an event carries but its time, and
folds it so without decoding it (`projections.readiness`). It takes the header as a hint of
which events are worth checking, never as the truth: it checks the event's bytes against the
subject's last registration it folded, so a header that is not true, or none, changes
nothing of the rows (docs/benchmarks.md, Rebuild).
"""

from __future__ import annotations

from msgspec.structs import astuple

from events.event_types import AnyEvent, DataplaneRegistered
from events.resources import Dataplane, DataplaneNetworking, Inbound

__all__ = ["READINESS_HEADER", "readiness_change", "readiness_in", "same_but_readiness"]

READINESS_HEADER = "Meshlog-Readiness-Of"

_READINESS_LINE = b"\r\n" + READINESS_HEADER.encode() + b":"


def readiness_change(previous: AnyEvent | None, event: AnyEvent) -> bool:
    """Whether `event` registers the Dataplane `previous` registered, by the same origin, with
    nothing changed but its inbounds' `health` (also when nothing changed at all)."""
    if type(event) is not DataplaneRegistered or type(previous) is not DataplaneRegistered:
        return False
    return event.origin == previous.origin and same_but_readiness(previous.dataplane,
                                                                  event.dataplane)


_NETWORKING = Dataplane.__struct_fields__.index("networking")
_INBOUND = DataplaneNetworking.__struct_fields__.index("inbound")
_HEALTH = Inbound.__struct_fields__.index("health")


def same_but_readiness(old: Dataplane, new: Dataplane) -> bool:
    """Whether `new` is `old` but for its inbounds' `health`: compared field by field,
    without copies."""
    if old is new:
        return True
    a, b = astuple(old), astuple(new)
    if a[:_NETWORKING] != b[:_NETWORKING] or a[_NETWORKING + 1:] != b[_NETWORKING + 1:]:
        return False
    a, b = astuple(old.networking), astuple(new.networking)
    if a[:_INBOUND] != b[:_INBOUND] or a[_INBOUND + 1:] != b[_INBOUND + 1:]:
        return False
    before, after = old.networking.inbound, new.networking.inbound
    if len(before) != len(after):
        return False
    for was, now in zip(before, after, strict=True):
        if was is now or was == now:
            continue
        a, b = astuple(was), astuple(now)
        if a[:_HEALTH] != b[:_HEALTH] or a[_HEALTH + 1:] != b[_HEALTH + 1:]:
            return False
    return True


def readiness_in(raw_headers: bytes) -> int:
    """The `Meshlog-Readiness-Of` sequence in a message's raw header block, without parsing
    the rest; 0 when there is none or it is not a positive number."""
    at = raw_headers.find(_READINESS_LINE)
    if at < 0:
        return 0
    start = at + len(_READINESS_LINE)
    end = raw_headers.find(b"\r\n", start)
    try:
        seq = int(raw_headers[start:end] if end >= 0 else raw_headers[start:])
    except ValueError:
        return 0
    return seq if seq > 0 else 0
