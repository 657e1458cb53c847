"""Ages in tables, as kubectl shows them (`5s`, `3m`, `2h`, `4d`): the rules of
k8s.io/apimachinery's `duration.HumanDuration`, which kubectl's AGE column uses."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["age", "human_duration"]


_UNKNOWN = datetime(1970, 1, 1, tzinfo=UTC)
"""The zone's default HostnameGenerators were never created: their creationTime is the epoch."""


def age(timestamp: str | None, now: datetime) -> str:
    """The age at `now` of an RFC 3339 `timestamp` (a document's `creationTime`); `-` if there
    is none (or it is the epoch, the creationTime of what was never created)."""
    if not timestamp:
        return "-"
    try:
        then = datetime.fromisoformat(timestamp)
    except ValueError:
        return "<invalid>"
    if then.tzinfo is None:  # RFC 3339 has an offset; without one, read it as UTC
        then = then.replace(tzinfo=UTC)
    if then == _UNKNOWN:
        return "-"
    return human_duration((now - then).total_seconds())


def human_duration(seconds: float) -> str:
    """Two units while the larger is small (`3m20s`, `5h12m`, `3d4h`), one after that."""
    s = int(seconds)
    if s < -1:  # kubectl tolerates a second of clock skew
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return _two(minutes, "m", s % 60, "s")
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return _two(hours, "h", minutes % 60, "m")
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if hours < 24 * 8:
        return _two(days, "d", hours % 24, "h")
    if hours < 24 * 365 * 2:
        return f"{days}d"
    if hours < 24 * 365 * 8:
        return _two(days // 365, "y", days % 365, "d")
    return f"{days // 365}y"


def _two(big: int, big_unit: str, small: int, small_unit: str) -> str:
    return f"{big}{big_unit}{small}{small_unit}" if small else f"{big}{big_unit}"
