"""The projector: an ordered catch-up reader that folds the log into the read-model store.

Per batch: check every sequence is the previous + 1 (halt on a gap), decode each event and
read its provenance from its subject, fold, derive, then commit the changed rows with the
checkpoint in one transaction and publish the same rows for gateways. On start it loads the
store, resumes at checkpoint + 1, and reconciles the published rows with the store, so a
crash between commit and publish loses nothing.

Traced (README, Tracing), each batch is a span linked to the writes it folds
(`projections.tracing`), and its publish carries that trace to the gateways; the records'
headers are never input to the fold.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Coroutine, Iterator, Sequence
from typing import Any, Protocol

from events import (
    AnyEvent,
    EventLog,
    MalformedSubject,
    Provenance,
    Record,
    UndecodableEvent,
    decode_event,
    provenance_of,
)
from events.bus.projection_bus import CHECKPOINT_KEY, ProjectionUpdate
from events.identity import SecretKey
from projections.derive import derive_stale
from projections.errors import ProjectorHalted, SequenceGap
from projections.fold import apply_event
from projections.foldversion import FOLD_VERSION, FoldVersions, fold_versions, outdated_advice
from projections.metrics import ProjectorMetrics
from projections.state import Change, ProjectionState, local_zone_of
from projections.store import ReadModelStore
from projections.ticker import Ticker
from projections.tracing import batch_span, step_span
from projections.views import PUBLISHED, QuarantinedEvent, encode_row

__all__ = ["LIVE_BATCH", "ProjectionPublisher", "Projector"]

log = logging.getLogger("meshlog.projector")

LIVE_BATCH = 10_000
"""The most events a live projector folds per read-model transaction. At the tail a batch is
what has arrived (a few events); it fills up only while the projector catches up (a restart,
a standby taking over, a store swapped in). Derive and the commit run once per batch, for
every service the batch touched, so at 1,000 a catch-up spent half its time deriving the
same services again (docs/benchmarks.md, Rebuild, session 7)."""


class ProjectionPublisher(Protocol):
    async def publish(self, updates: Sequence[ProjectionUpdate]) -> None: ...

    async def current(self) -> dict[str, bytes]: ...


async def _finish_even_if_cancelled(work: Coroutine[Any, Any, None]) -> None:
    """Run `work` to its end; a cancellation meanwhile is re-raised once it is done."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


class _Poisoned(Exception):
    def __init__(self, record: Record, reason: str, *, last_good: int, state_clean: bool) -> None:
        self.record = record
        self.reason = reason
        self.last_good = last_good
        self.state_clean = state_clean
        """False when the fold failed half-way: nothing of this batch may be committed."""


def _read(record: Record, *, last_good: int) -> tuple[AnyEvent, Provenance]:
    """The event of `record` and who wrote it; `_Poisoned` (state untouched) if either cannot
    be read: an event without a provenance cannot be folded, like one that cannot be decoded."""
    try:
        event = decode_event(record.data, seq=record.seq, subject=record.subject,
                             schema_version=record.schema_version)
    except UndecodableEvent as exc:
        raise _Poisoned(record, exc.reason, last_good=last_good, state_clean=True) from exc
    try:
        return event, provenance_of(record.subject)
    except MalformedSubject as exc:
        raise _Poisoned(record, str(exc), last_good=last_good, state_clean=True) from exc


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a batch folds or is derived (neither awaits, so
    nothing else runs meanwhile). Every row the fold makes outlives its event, so Python's
    collector, counting allocations, would scan the young objects again and again, and every
    so often the whole state. The fold makes no reference cycles; what garbage there is waits
    until the batch is done."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _bus_key(collection: str, key: str) -> str:
    return f"{collection}/{key}"


class Projector:
    def __init__(
        self, log: EventLog, store: ReadModelStore, publisher: ProjectionPublisher | None, *,
        zone: str, name: str = "main", max_batch: int = LIVE_BATCH,
        secret_key: SecretKey | None = None, export_metrics: bool = True,
    ) -> None:
        """`zone` is the zone this projector runs in (`GLOBAL_ZONE` on global), where it
        appends its clock ticks; every event is folded with the zone and origin of its own
        subject (`events.provenance_of`), and what another zone wrote is remote here
        (`ProjectionState.local_zone`, `projections.remote`). Without `export_metrics` its
        metrics go nowhere: a rebuild beside the live projector of the same name."""
        self._log = log
        self._store = store
        self._publisher = publisher
        self._zone = zone
        self._name = name
        self._max_batch = max_batch
        self.position = 0
        """The last sequence committed; readable for progress reports."""
        self.halted: str | None = None
        """Why the projector stopped, if it did."""
        self._ticker: Ticker | None = None
        self._secret_key = secret_key
        """Opens the meshes' CA keys to issue workload certificates (mTLS)."""
        self.metrics = (ProjectorMetrics(name, log, lambda: self.position) if export_metrics
                        else ProjectorMetrics.unexported())
        self.fold_versions: FoldVersions | None = None
        """The store's fold version beside the code's, read at each start (None before)."""
        self._warned_outdated = False

    async def run(self, *, until_seq: int | None = None) -> None:
        """Fold the log forever (or until `until_seq` is committed). An event that cannot be
        decoded or applied is quarantined and ProjectorHalted raised: nothing after it is
        applied, nothing is skipped. Following the live tail (no `until_seq`), it also keeps
        the log's clock (`projections.ticker`); a replay to a sequence only reads."""
        if until_seq is not None:
            await self._follow(until_seq)
            return
        self._ticker = Ticker(self._log, zone=self._zone, position=lambda: self.position)
        ticking = asyncio.create_task(self._ticker.run(), name=f"ticker {self._name}")
        try:
            await self._follow(None)
        finally:
            ticking.cancel()
            # wait for it without awaiting its CancelledError: a cancel of this task while
            # waiting must still propagate, not be swallowed with the ticker's
            await asyncio.wait([ticking])
            self._ticker = None

    async def _follow(self, until_seq: int | None) -> None:
        # before anything is loaded: a store of a newer release's fold is refused
        # (NewerFoldVersion); one of an older release's is folded on, and said to be outdated
        versions = self.fold_versions = await fold_versions(self._store, self._name)
        if versions.outdated and not self._warned_outdated:
            log.warning("projector %s: %s", self._name, outdated_advice(versions, self._name))
            self._warned_outdated = True
        state = ProjectionState.load(await self._store.rows(), secret_key=self._secret_key,
                                     local_zone=local_zone_of(self._zone))
        self.position = await self._store.checkpoint(self._name)
        await self._reconcile(state)
        self.metrics.resumed(self.position, versions)
        if self._ticker is not None:
            self._ticker.schedule(state.next_expiry())
        log.info("projector %s resuming after sequence %d", self._name, self.position)
        if until_seq is not None and self.position >= until_seq:
            return
        async for records in self._log.read(self.position + 1, max_batch=self._max_batch):
            batch = records if until_seq is None else [r for r in records if r.seq <= until_seq]
            with batch_span(batch, self._name):
                last = await self._fold_and_commit(state, batch)
            if until_seq is not None and last >= until_seq:
                return

    async def _fold_and_commit(self, state: ProjectionState, batch: Sequence[Record]) -> int:
        """Fold `batch` and commit it; the last sequence committed. What comes before a gap
        or an event that cannot be folded is committed, then the projector halts."""
        started = time.perf_counter()
        try:
            last = self._fold(state, batch)
        except SequenceGap as gap:
            if gap.expected - 1 > self.position:
                await self._commit(state, gap.expected - 1)  # what came before the gap
            raise
        except _Poisoned as poisoned:
            if poisoned.state_clean and poisoned.last_good > self.position:
                await self._commit(state, poisoned.last_good)  # what came before it
            await self._quarantine(poisoned.record, poisoned.reason)
            raise ProjectorHalted(
                f"projector {self._name} stopped in front of sequence {poisoned.record.seq} "
                f"({poisoned.record.subject}): {poisoned.reason}. The event is quarantined; "
                "nothing after it is applied. Upgrade meshlog (or add an upcaster) and "
                "restart.") from poisoned.__cause__
        self.metrics.folded(len(batch), time.perf_counter() - started)
        await self._commit(state, last)
        return last

    def _fold(self, state: ProjectionState, batch: Sequence[Record]) -> int:
        with _gc_paused():
            return self._fold_batch(state, batch)

    def _fold_batch(self, state: ProjectionState, batch: Sequence[Record]) -> int:
        last = self.position
        for record in batch:
            if record.seq != last + 1:
                raise SequenceGap(last + 1, record.seq)
            event, provenance = _read(record, last_good=last)
            try:
                apply_event(state, record.seq, event, provenance)
            except Exception as exc:
                # The fold is pure, but a bug in it must not be skipped over either. State
                # may be half-changed: it is dropped, never committed (we halt right here).
                raise _Poisoned(record, f"{type(exc).__name__}: {exc}", last_good=last,
                                state_clean=False) from exc
            last = record.seq
        return last

    async def _commit(self, state: ProjectionState, last: int) -> None:
        with _gc_paused():
            derive_stale(state)
            changes = state.take_changes()
        # A graceful stop (SIGTERM) lands on an await; it must not split the commit from its
        # publication, or gateways lag a batch until the next start reconciles them.
        await _finish_even_if_cancelled(self._commit_and_publish(changes, last))
        if self._ticker is not None:
            self._ticker.schedule(state.next_expiry())

    async def _commit_and_publish(self, changes: Sequence[Change], last: int) -> None:
        started = time.perf_counter()
        with step_span("meshlog.projector.commit", **{"meshlog.rows": len(changes)}):
            # recorded by the first commit of a fresh store only (projections.foldversion)
            await self._store.commit(changes, last, self._name, fold_version=FOLD_VERSION)
        if self.position == 0:
            self.fold_versions = FoldVersions(FOLD_VERSION)  # what that first commit recorded
        self.position = last
        if changes:
            with step_span("meshlog.projector.publish", **{"meshlog.checkpoint": last}):
                await self._publish(changes, last)
        self.metrics.committed(last, time.perf_counter() - started)

    async def _quarantine(self, record: Record, reason: str) -> None:
        log.error("projector %s quarantined sequence %d (%s): %s", self._name, record.seq,
                  record.subject, reason)
        self.halted = reason
        self.metrics.quarantined()
        row = QuarantinedEvent(seq=record.seq, subject=record.subject, reason=reason,
                               data=record.data.decode("utf-8", "backslashreplace"),
                               projector=self._name)
        await self._store.quarantine(f"{self._name}/{record.seq:012d}", encode_row(row))

    async def _publish(self, changes: Sequence[Change], checkpoint: int) -> None:
        if self._publisher is None:
            return
        updates = [(_bus_key(c.collection, c.key), c.body) for c in changes
                   if c.collection in PUBLISHED]
        updates.append((CHECKPOINT_KEY, str(checkpoint).encode()))
        await self._publisher.publish(updates)

    async def _reconcile(self, state: ProjectionState) -> None:
        """Make the published rows equal the store's (a crash may have cut a publish short)."""
        if self._publisher is None:
            return
        published = await self._publisher.current()
        wanted = {_bus_key(c, k): body for c, k, body in state.persisted() if c in PUBLISHED}
        wanted[CHECKPOINT_KEY] = str(self.position).encode()
        updates: list[ProjectionUpdate] = [
            (key, body) for key, body in sorted(wanted.items()) if published.get(key) != body
        ]
        updates += [(key, None) for key in sorted(published.keys() - wanted.keys())]
        if updates:
            log.info("projector %s republishing %d rows", self._name, len(updates))
            # the checkpoint goes last: watchers apply a batch when they see it
            updates.sort(key=lambda u: u[0] == CHECKPOINT_KEY)
            await self._publisher.publish(updates)
