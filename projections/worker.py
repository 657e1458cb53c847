"""The projector: an ordered catch-up reader that folds the log into the read-model store.

Per batch: check every sequence is the previous + 1 (halt on a gap), decode each event and
read its provenance from its subject, fold, derive, then commit the changed rows with the
checkpoint in one transaction and publish the same rows for gateways. On start it loads the
store, resumes at checkpoint + 1, and reconciles the published rows with the store, so a
crash between commit and publish loses nothing.

An event that cannot be decoded or applied is quarantined and the projector halts in front of
it, until a release that reads it runs (its commit past the sequence removes the quarantine
row, `projections.store`) or an operator decides to skip it (`meshlog quarantine skip`: a
`SequenceSkipped` on `events.skip_subject(seq)`). Meeting an event it cannot fold, live or in
a replay, the projector looks that decision up (a direct get of its subject, from the stream
leader) and, if the decision names the event (its sequence and subject) and was made after
it, folds the sequence as nothing but a `skipped` row: every replay made once the decision is
in the log does the same (invariant 4). An event that folds is folded, whatever decision
names it. Halted, `skip_decided` polls for the decision, so a running process resumes by
itself (services.runtime.projector_loop).

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
from typing import Any, NoReturn, Protocol

from msgspec import Struct

from events import (
    SCHEMA_VERSION,
    AnyEvent,
    EventLog,
    MalformedSubject,
    PermanentError,
    Provenance,
    Record,
    SequenceSkipped,
    UndecodableEvent,
    Upcaster,
    decode_event,
    provenance_of,
    skip_subject,
)
from events.bus.projection_bus import CHECKPOINT_KEY, ProjectionUpdate
from events.identity import SecretKey
from projections.derive import derive_stale
from projections.errors import ProjectorHalted, SequenceGap
from projections.fold import apply_event
from projections.foldversion import FOLD_VERSION, FoldVersions, fold_versions, outdated_advice
from projections.metrics import ProjectorMetrics
from projections.readiness import BatchReadiness
from projections.state import Change, ProjectionState, local_zone_of
from projections.store import ReadModelStore, quarantine_key
from projections.ticker import Ticker
from projections.tracing import batch_span, step_span
from projections.views import PUBLISHED, QuarantinedEvent, SkippedEvent, encode_row

__all__ = ["LIVE_BATCH", "SKIP_POLL_S", "ProjectionPublisher", "Projector"]

log = logging.getLogger("meshlog.projector")

LIVE_BATCH = 10_000
"""The most events a live projector folds per read-model transaction. At the tail a batch is
what has arrived (a few events); it fills up only while the projector catches up (a restart,
a standby taking over, a store swapped in). Derive and the commit run once per batch, for
every service the batch touched, so at 1,000 a catch-up spent half its time deriving the
same services again (docs/benchmarks.md, Rebuild, session 7)."""

SKIP_POLL_S = 1.0
"""How often a halted projector asks the log for an operator's decision to skip the event in
its way (one direct get): it resumes within this of `meshlog quarantine skip`."""


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


class _Codec(Struct, frozen=True):
    """What `decode_event` reads with: this release's upcasters and schema version, unless a
    caller gives others (a test of a release that reads what this one cannot)."""

    upcasters: dict[int, Upcaster] | None
    current: int

    def decode(self, record: Record) -> AnyEvent:
        return decode_event(record.data, seq=record.seq, subject=record.subject,
                            schema_version=record.schema_version, upcasters=self.upcasters,
                            current=self.current)


def _read(record: Record, codec: _Codec, *, last_good: int) -> tuple[AnyEvent, Provenance]:
    """The event of `record` and who wrote it; `_Poisoned` (state untouched) if either cannot
    be read: an event without a provenance cannot be folded, like one that cannot be decoded."""
    try:
        event = codec.decode(record)
    except UndecodableEvent as exc:
        raise _Poisoned(record, exc.reason, last_good=last_good, state_clean=True) from exc
    try:
        return event, provenance_of(record.subject)
    except MalformedSubject as exc:
        raise _Poisoned(record, str(exc), last_good=last_good, state_clean=True) from exc


def _settle(readiness: BatchReadiness | None, state: ProjectionState) -> None:
    """`BatchReadiness.settle`, when the batch has one."""
    if readiness is not None:
        readiness.settle(state)


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
        upcasters: dict[int, Upcaster] | None = None, current_schema: int = SCHEMA_VERSION,
    ) -> None:
        """`zone` is the zone this projector runs in (`GLOBAL_ZONE` on global), where it
        appends its clock ticks and whose skip decisions it honours (its log's); every event
        is folded with the zone and origin of its own subject (`events.provenance_of`), and
        what another zone wrote is remote here (`ProjectionState.local_zone`,
        `projections.remote`). Without `export_metrics` its metrics go nowhere: a rebuild
        beside the live projector of the same name. `upcasters` and `current_schema` are
        `decode_event`'s (default: this release's)."""
        self._log = log
        self._store = store
        self._publisher = publisher
        self._zone = zone
        self._name = name
        self._max_batch = max_batch
        self.position = 0
        """The last sequence committed; readable for progress reports."""
        self.folded_as_time = 0
        """Readiness changes folded as their time only since the start (`projections.readiness`);
        readable for progress reports."""
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
        self._codec = _Codec(upcasters=upcasters, current=current_schema)
        self._skips: dict[int, SkippedEvent] = {}
        """Sequences an operator's decision skips, each found unfoldable first: folded as
        nothing but their `skipped` row (the log never changes an event once stored)."""
        self._poisoned: Record | None = None
        """The event it halted in front of, until a decision skips it."""
        self._not_followed: set[int] = set()
        """Decisions (their sequences) said to be not followed: said once, not at each poll."""

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

    async def skip_decided(self, poll_s: float = SKIP_POLL_S) -> None:
        """Halted in front of a quarantined event (`run` raised ProjectorHalted): return once
        the log holds an operator's decision to skip it, asked every `poll_s`. The next `run`
        folds it as nothing. A log that does not answer is asked again at the next poll."""
        record = self._poisoned
        if record is None:
            raise RuntimeError(f"projector {self._name} is not halted in front of an event")
        while True:
            try:
                if await self._skip_decision(record) is not None:
                    return
            except PermanentError:
                raise
            except Exception as exc:  # NATS away (or nats-py's own errors): ask again
                log.warning("projector %s: cannot read the skip decision of sequence %d yet "
                            "(%r)", self._name, record.seq, exc)
            await asyncio.sleep(poll_s)

    async def _load(self) -> ProjectionState:
        return ProjectionState.load(await self._store.rows(), secret_key=self._secret_key,
                                    local_zone=local_zone_of(self._zone))

    async def _follow(self, until_seq: int | None) -> None:
        # before anything is loaded: a store of a newer release's fold is refused
        # (NewerFoldVersion); one of an older release's is folded on, and said to be outdated
        versions = self.fold_versions = await fold_versions(self._store, self._name)
        if versions.outdated and not self._warned_outdated:
            log.warning("projector %s: %s", self._name, outdated_advice(versions, self._name))
            self._warned_outdated = True
        state = await self._load()
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
                state, last = await self._fold_and_commit(state, batch)
            if until_seq is not None and last >= until_seq:
                return

    async def _fold_and_commit(self, state: ProjectionState, batch: Sequence[Record]
                               ) -> tuple[ProjectionState, int]:
        """Fold `batch` and commit it; the state folded on and the last sequence committed.
        What comes before a gap or an event that cannot be folded (and is not skipped by a
        decision) is committed, then the projector halts."""
        started = time.perf_counter()
        count, after = len(batch), self.position
        while True:
            try:
                last = self._fold(state, batch, after)
                break
            except SequenceGap as gap:
                if gap.expected - 1 > self.position:
                    await self._commit(state, gap.expected - 1)  # what came before the gap
                raise
            except _Poisoned as poisoned:
                if not await self._skip(poisoned):
                    await self._halt(state, poisoned)
                if not poisoned.state_clean:  # dropped: fold the batch again, skipping it
                    state = await self._load()
                after = poisoned.last_good if poisoned.state_clean else self.position
                batch = [r for r in batch if r.seq > after]
        self.metrics.folded(count, time.perf_counter() - started)
        await self._commit(state, last)
        return state, last

    async def _skip(self, poisoned: _Poisoned) -> bool:
        """Whether an operator's decision skips the event that cannot be folded (then it is
        in `_skips`)."""
        record = poisoned.record
        skipped = await self._skip_decision(record)
        if skipped is None:
            return False
        log.warning("projector %s folds sequence %d (%s) as nothing, as %s decided at "
                    "sequence %d (%r); it cannot be folded: %s", self._name, record.seq,
                    record.subject, skipped.by, skipped.decision_seq, skipped.reason,
                    poisoned.reason)
        self._skips[record.seq] = skipped
        self._poisoned = self.halted = None
        self.metrics.skipped()
        return True

    async def _halt(self, state: ProjectionState, poisoned: _Poisoned) -> NoReturn:
        record = poisoned.record
        if poisoned.state_clean and poisoned.last_good > self.position:
            await self._commit(state, poisoned.last_good)  # what came before it
        await self._quarantine(record, poisoned.reason)
        raise ProjectorHalted(
            f"projector {self._name} stopped in front of sequence {record.seq} "
            f"({record.subject}): {poisoned.reason}. The event is quarantined; nothing "
            "after it is applied. Upgrade meshlog (or add an upcaster) and restart, or, if "
            f"no release can read it, skip it: meshlog quarantine skip --seq {record.seq} "
            "--reason TEXT") from poisoned.__cause__

    async def _skip_decision(self, record: Record) -> SkippedEvent | None:
        """The decision to skip `record` if the log holds one that names it (its sequence
        and subject) and was made after it; read up to the stream leader's last record, so a
        replay finds what a live projector found. The first record of the decision's subject:
        it is made once (expected sequence 0), and a later record there (a writer past the
        API) must not make a replay fold other rows than the live projector did."""
        records = await self._log.history(skip_subject(record.seq, self._zone))
        if not records:
            return None
        found = records[0]
        try:
            decision: AnyEvent | None = self._codec.decode(found)
        except UndecodableEvent:
            decision = None
        if (not isinstance(decision, SequenceSkipped) or decision.seq != record.seq
                or decision.subject != record.subject or found.seq <= record.seq):
            if found.seq not in self._not_followed:
                self._not_followed.add(found.seq)
                log.error("projector %s: sequence %d of %s is not a decision, made after it, "
                          "to skip the event in the way (sequence %d on %s): not followed",
                          self._name, found.seq, found.subject, record.seq, record.subject)
            return None
        return SkippedEvent(seq=record.seq, subject=record.subject, reason=decision.reason,
                            by=decision.by, decided_at=decision.at, decision_seq=found.seq)

    def _fold(self, state: ProjectionState, batch: Sequence[Record], after: int) -> int:
        with _gc_paused():
            return self._fold_batch(state, batch, after)

    def _fold_batch(self, state: ProjectionState, batch: Sequence[Record], after: int) -> int:
        last, skips = after, self._skips
        # readiness changes a later event of the batch replaces: folded without decoding
        # (projections.readiness), by a reader of this release's schema
        readiness = (BatchReadiness(batch, skips) if self._codec.current == SCHEMA_VERSION
                     else None)
        try:
            for record in batch:
                if record.seq != last + 1:
                    _settle(readiness, state)  # what comes before the gap is committed
                    raise SequenceGap(last + 1, record.seq)
                if skips and record.seq in skips:
                    state.put("skipped", f"{record.seq:012d}", skips[record.seq])
                    last = record.seq
                    continue
                try:
                    # only a record whose writer says it is a readiness change is worth asking
                    if (readiness is None or not record.readiness_of
                            or not readiness.fold(state, record)):
                        try:
                            event, provenance = _read(record, self._codec, last_good=last)
                        except _Poisoned:
                            # the state must be the fold up to the event before it, which may be
                            # committed or folded on from: no row may wait for a replacement
                            _settle(readiness, state)
                            raise
                        apply_event(state, record.seq, event, provenance)
                        if readiness is not None:
                            readiness.folded(record, event, provenance)
                except _Poisoned:
                    raise
                except Exception as exc:
                    # The fold is pure, but a bug in it must not be skipped over either. State
                    # may be half-changed: it is dropped, never committed (we halt right here).
                    raise _Poisoned(record, f"{type(exc).__name__}: {exc}", last_good=last,
                                    state_clean=False) from exc
                last = record.seq
            _settle(readiness, state)
        finally:  # counted also when the batch stops in front of an event or a gap
            if readiness is not None and readiness.as_time:
                self.folded_as_time += readiness.as_time
                self.metrics.folded_as_time(readiness.as_time)
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
        self._poisoned = record
        self.metrics.quarantined()
        row = QuarantinedEvent(seq=record.seq, subject=record.subject, reason=reason,
                               data=record.data.decode("utf-8", "backslashreplace"),
                               projector=self._name)
        await self._store.quarantine(quarantine_key(self._name, record.seq), encode_row(row))

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
