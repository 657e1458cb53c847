"""The event stream's configuration as meshlog requires it: checked at start-up, never changed
(`JetStreamEventLog.open`)."""

from __future__ import annotations

from collections.abc import Sequence

from nats.js.api import RetentionPolicy, StorageType, StreamConfig

from events.errors import StreamConfigMismatch
from events.subjects import events_wildcard

__all__ = ["check_stream"]


def _zone_scoped(subjects: Sequence[str]) -> bool:
    """Subjects of one control plane of a multi-zone deployment, `meshlog.ev.<zone>.>`."""
    prefix = events_wildcard().removesuffix(">")
    return bool(subjects) and all(
        s.startswith(prefix) and s.endswith(".>") and s.count(".") == 3 for s in subjects)


def check_stream(have: StreamConfig, want: StreamConfig, *, exact: bool = False) -> None:
    problems = []
    if have.storage != StorageType.FILE:
        problems.append(f"storage is {have.storage}, must be file")
    for flag in ("deny_delete", "deny_purge", "allow_direct"):
        if not getattr(have, flag):
            problems.append(f"{flag} is off, must be on")
    if exact and set(want.subjects or []) != set(have.subjects or []):
        # a stream that also took other control planes' subjects would store what they
        # publish across the leafnode (reference/multizone.md §4)
        problems.append(f"subjects {have.subjects} are not exactly {want.subjects}")
    elif not exact and not set(want.subjects or []) <= set(have.subjects or []) \
            and not _zone_scoped(have.subjects or []):
        problems.append(f"subjects {have.subjects} do not include {want.subjects}")
    if have.retention is not None and have.retention != RetentionPolicy.LIMITS:
        problems.append(f"retention is {have.retention}, must be limits")
    for limit in ("max_age", "max_msgs", "max_bytes", "max_msgs_per_subject"):
        value = getattr(have, limit)
        if value not in (None, 0, -1):
            problems.append(f"{limit} is {value}: events would expire (must be unlimited)")
    if problems:
        raise StreamConfigMismatch(
            f"stream {have.name} breaks the event-log invariants: " + "; ".join(problems)
            + ". Fix the stream (or point meshlog at a new one); meshlog will not change it."
        )
