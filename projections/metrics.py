"""The projector's Prometheus metrics, in the process's default registry (prometheus-client).

    meshlog_projector_last_folded_sequence{projector}   gauge: the last sequence committed
    meshlog_projector_lag_events{projector}             gauge: the stream's last sequence minus it
    meshlog_projector_lag_seconds{projector}            gauge: age of the oldest unfolded event
    meshlog_projector_batch_events{projector}           histogram: events per folded batch
    meshlog_projector_fold_seconds{projector}           histogram: folding one batch
    meshlog_projector_commit_seconds{projector}         histogram: committing (and publishing) it
    meshlog_projector_quarantined_events_total{projector}  counter
    meshlog_projector_skipped_events_total{projector}   counter: skip decisions it followed
    meshlog_read_models_fold_version{projector}         gauge: the fold version of its store's rows
    meshlog_read_models_outdated{projector}             gauge: 1 if older than the code's

The lag needs the log (its last sequence, the time of the next event), so it is read when
scraped: `refresh()`, awaited by the process's `/metrics` before it renders (services.metrics).
The projector itself only calls `folded`, `committed` and `quarantined`, once per batch,
`skipped` once per operator's decision it follows, and `started` once per start. A projector
that rebuilds read models beside the live one (`meshlog up`, services.runtime.readmodels) has
`ProjectorMetrics.unexported()`: its positions are not the live projector's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram

from events import EventLog, UndecodableEvent, decode_event
from projections.foldversion import FoldVersions

__all__ = ["ProjectorMetrics", "leadership_changed", "refresh"]

log = logging.getLogger("meshlog.projector")

_LABELS = ["projector"]
LAST_FOLDED = Gauge("meshlog_projector_last_folded_sequence",
                    "The last event-log sequence the projector committed.", _LABELS)
LAG_EVENTS = Gauge("meshlog_projector_lag_events",
                   "Events in the log the projector has not committed yet (read when scraped).",
                   _LABELS)
LAG_SECONDS = Gauge("meshlog_projector_lag_seconds",
                    "Age of the oldest event not committed yet, 0 when caught up (read when "
                    "scraped).", _LABELS)
BATCH = Histogram("meshlog_projector_batch_events", "Events per folded batch.", _LABELS,
                  buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000))
FOLD = Histogram("meshlog_projector_fold_seconds", "Time to fold one batch (pure, in memory).",
                 _LABELS, buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5))
COMMIT = Histogram("meshlog_projector_commit_seconds",
                   "Time to commit one batch's rows and checkpoint, and publish them.", _LABELS,
                   buckets=(0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5))
LEADER = Gauge("meshlog_projector_leader",
               "1 while a contender of this process holds the projector lease and folds "
               "(active), 0 as standby; absent without a lease (--lease-ttl 0). Summed over "
               "every process, 1 while some projector leads.", _LABELS)
FENCING_TOKEN = Gauge("meshlog_projector_fencing_token",
                      "The fencing token (lease revision) of the current term; 0 as standby.",
                      _LABELS)
QUARANTINED = Counter("meshlog_projector_quarantined_events_total",
                      "Events the projector could not apply and quarantined (it halts).",
                      _LABELS)
SKIPPED = Counter("meshlog_projector_skipped_events_total",
                  "Quarantined events the projector folded as nothing, following an "
                  "operator's decision (meshlog quarantine skip), since the process started.",
                  _LABELS)

FOLDED_AS_TIME = Counter("meshlog_projector_readiness_folded_as_time_total",
                         "Readiness changes a later event of their batch replaced, folded as "
                         "their time only (projections.readiness), since the process started.",
                         _LABELS)

READ_MODELS_FOLD_VERSION = Gauge(
    "meshlog_read_models_fold_version",
    "The fold version the projector's read models were folded with (1: before stores "
    "recorded one; projections.FOLD_VERSION).", _LABELS)
READ_MODELS_OUTDATED = Gauge(
    "meshlog_read_models_outdated",
    "1 while the projector's read models were folded with an older fold version than this "
    "release's (a replay would make other rows: rebuild them), else 0.", _LABELS)

_REFRESH_TIMEOUT_S = 2.0
_live: weakref.WeakSet[ProjectorMetrics] = weakref.WeakSet()


class ProjectorMetrics:
    """One projector's metrics. Its calls are per batch, never per event."""

    def __init__(self, name: str, event_log: EventLog, position: Callable[[], int]) -> None:
        self._log = event_log
        self._name = name
        self._position = position
        self._last_folded = LAST_FOLDED.labels(name)
        self._lag_events = LAG_EVENTS.labels(name)
        self._lag_seconds = LAG_SECONDS.labels(name)
        self._batch = BATCH.labels(name)
        self._fold = FOLD.labels(name)
        self._commit = COMMIT.labels(name)
        self._quarantined = QUARANTINED.labels(name)
        self._skipped = SKIPPED.labels(name)
        self._as_time = FOLDED_AS_TIME.labels(name)
        _live.add(self)

    @staticmethod
    def unexported() -> ProjectorMetrics:
        """Metrics that go nowhere, for a projector that is not the live one."""
        return _Unexported()

    def resumed(self, position: int, versions: FoldVersions) -> None:
        self._last_folded.set(position)
        READ_MODELS_FOLD_VERSION.labels(self._name).set(versions.read_models or versions.code)
        READ_MODELS_OUTDATED.labels(self._name).set(int(versions.outdated))

    def folded(self, events: int, seconds: float) -> None:
        self._batch.observe(events)
        self._fold.observe(seconds)

    def committed(self, position: int, seconds: float) -> None:
        self._last_folded.set(position)
        self._commit.observe(seconds)

    def folded_as_time(self, events: int) -> None:
        self._as_time.inc(events)

    def quarantined(self) -> None:
        self._quarantined.inc()

    def skipped(self) -> None:
        self._skipped.inc()

    def stood_down(self) -> None:
        """This projector no longer folds (its term ended: the lease lost or given up). Its
        lag is no longer read: frozen at the term's last position, it would grow for ever
        beside the new leader's, and an alert on the lag would fire for a healthy standby.
        The process's lag gauges go with it (absent while the process is standby), and so do
        the fold version of its store and whether it is outdated, unless
        another projector of the same name in this process folds (`meshlog up --projectors
        N`: one name, N contenders, one of them active)."""
        _live.discard(self)
        if not any(other._name == self._name for other in _live):
            for gauge in (LAG_EVENTS, LAG_SECONDS, READ_MODELS_FOLD_VERSION,
                          READ_MODELS_OUTDATED):
                with contextlib.suppress(KeyError):
                    gauge.remove(self._name)

    async def refresh(self) -> None:
        """Read the lag from the log: its last sequence, and the time of the next event."""
        position = self._position()
        head = await self._log.last_seq()
        behind = max(0, head - position)
        self._lag_events.set(behind)
        if behind == 0:
            self._lag_seconds.set(0)
            return
        record = await self._log.at(position + 1)
        if record is None:
            return
        try:
            event = decode_event(record.data, seq=record.seq, subject=record.subject,
                                 schema_version=record.schema_version)
        except UndecodableEvent:
            return  # the projector quarantines it; its counter says so
        self._lag_seconds.set(max(0.0, time.time() - event.at / 1000))


class _Unexported(ProjectorMetrics):
    """`ProjectorMetrics.unexported()`: every call does nothing."""

    def __init__(self) -> None:
        pass  # no labels taken, not among the live ones refreshed when scraped

    def resumed(self, position: int, versions: FoldVersions) -> None:
        pass

    def folded(self, events: int, seconds: float) -> None:
        pass

    def committed(self, position: int, seconds: float) -> None:
        pass

    def folded_as_time(self, events: int) -> None:
        pass

    def quarantined(self) -> None:
        pass

    def skipped(self) -> None:
        pass

    def stood_down(self) -> None:
        pass

    async def refresh(self) -> None:
        pass


async def refresh() -> None:
    """Refresh every live projector's lag (bounded); one whose log does not answer keeps its
    last values."""
    for metrics in list(_live):
        try:
            async with asyncio.timeout(_REFRESH_TIMEOUT_S):
                await metrics.refresh()
        except Exception as exc:  # NATS unavailable: the scrape still answers
            log.debug("projector lag not refreshed: %r", exc)


_terms: dict[tuple[str, str], int] = {}
"""The token of each contender of this process, by (projector, contender); 0 as standby."""


def leadership_changed(projector: str, token: int, contender: str = "") -> None:
    """Who leads, for `meshlog_projector_leader`: `token` > 0 while active, 0 as standby.

    A process may run several contenders for one lease (`meshlog up --projectors N`): the
    gauge counts those of its contenders that are active (so the sum over every process is
    the number of leaders: 1), and the token is the highest any of them holds."""
    _terms[projector, contender] = token
    tokens = [t for (name, _), t in _terms.items() if name == projector]
    LEADER.labels(projector).set(sum(1 for t in tokens if t))
    FENCING_TOKEN.labels(projector).set(max(tokens))
