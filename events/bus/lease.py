"""`JetStreamLease`: who may fold, as a key of the projection bucket, with a fencing token.

The lease of projector `<name>` is the key `meta/lease/<name>` of `meshlog_projections`
(history 1); its value names the holder. The protocol, all with compare-and-set on the key's
revision (its stream sequence, jetstream-rules.md: `update(last=rev)` is CAS):

- acquire: `create` if the key is absent or deleted; else watch its revision, and once it has
  not changed for a whole TTL by this process's monotonic clock (no clock is compared across
  machines), `update(last=that revision)`; at once if the key still names this holder (its
  own term ended when renewals could not get through, and no one took over since). Two
  contenders: one CAS wins. The winning revision is the **fencing token**: stream sequences
  only grow, so a later leader's token is higher.
- keep: renew every TTL/3 with `update(last=my revision)`. A refused renewal (someone took
  over) or no successful renewal for a TTL (measured from when the last good one was sent)
  is the end of the term: `keep` returns, and the holder stops writing.
- release (graceful stop): delete with `last=my revision`, so a standby takes over at once.

What is refused, and where:

- **Publishes**: every message to the projection bucket carries
  `Nats-Expected-Last-Subject-Sequence: <current lease revision>` with
  `Nats-Expected-Last-Subject-Sequence-Subject: <the lease key's subject>` (server >= 2.11),
  so the server stores it only while the lease key is still at the revision this holder last
  wrote. Once another contender has taken the lease (or the key was released), every late
  publish of the ex-leader, rows and checkpoint alike, is refused (`LeaseLost`): gateways
  never see an ex-leader's batch. Renewals and publishes take turns (`fencing()`), since a
  renewal moves the revision the publishes expect.
- **Store commits**: not here; the token goes to the store (projections.leadership), which
  refuses a commit with a token below the highest one claimed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence

import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue

from events.bus._retry import RETRY_PAUSE_S as _RETRY_PAUSE_S
from events.bus._retry import retried
from events.bus.projection_bus import LEASE_PREFIX, JetStreamProjectionBus, ProjectionUpdate
from events.errors import EventLogUnavailable, LeaseLost

__all__ = ["FencedProjectionBus", "JetStreamLease"]

log = logging.getLogger("meshlog.lease")

_TIMEOUT_S = 5.0
_ATTEMPT_S = 1.0
"""One attempt at reading or writing the lease key (a KV get or compare-and-set, answered in
milliseconds when the bucket has a leader). While the bucket elects one, requests get "no
responders" at once or no answer at all (one in flight when its leader died): a short
attempt, made again after `_RETRY_PAUSE_S`, takes the lease back (or renews it) as soon as the
new leader is there, instead of waiting out one long timeout."""
_PUBLISH_ATTEMPT_S = 2.0
"""One attempt at a fenced batch of up to 1,000 messages (acknowledged in milliseconds on
loopback, tens of milliseconds on a loaded machine)."""
_PUBLISH_S = 10.0
"""How long a fenced batch is tried (attempt after attempt) before EventLogUnavailable."""


class JetStreamLease:
    def __init__(self, bus: JetStreamProjectionBus, kv: KeyValue, *, name: str, holder: str,
                 ttl_s: float) -> None:
        """`holder` names this contender (shown to the others and in `/ready`); it must be
        unique among the contenders, e.g. host and pid."""
        self._bus = bus
        self._kv = kv
        self.key = f"{LEASE_PREFIX}{name}"
        self.holder = holder
        self.ttl_s = ttl_s
        self.revision = 0
        """The lease key's revision this holder last wrote; 0 when not holding."""
        self.token = 0
        """The fencing token of the current term (the revision that won it); 0 when not
        holding."""
        self._renewed_at = 0.0
        self._turns = asyncio.Lock()

    @classmethod
    async def open(cls, bus: JetStreamProjectionBus, *, name: str, holder: str,
                   ttl_s: float) -> JetStreamLease:
        return cls(bus, bus.kv, name=name, holder=holder, ttl_s=ttl_s)

    @property
    def subject(self) -> str:
        return f"$KV.{self._bus.bucket}.{self.key}"

    def _value(self) -> bytes:
        return json.dumps({"holder": self.holder, "ttl_s": self.ttl_s}).encode()

    async def current_holder(self) -> str | None:
        """Who holds the lease now, as far as the bucket says (None: no one)."""
        entry = await self._get()
        if entry is None:
            return None
        holder = json.loads(entry.value or b"{}").get("holder")
        return holder if isinstance(holder, str) else None

    async def acquire(self) -> int:
        """Wait until this contender holds the lease; the term's fencing token. Free or still
        ours, the lease is asked for again `_RETRY_PAUSE_S` after an attempt that did not get
        through (the bucket electing a leader); a live holder is watched every TTL/4."""
        seen_revision, seen_at = 0, 0.0  # the holder's revision, and when first seen here
        unreachable = ours = False  # each said once, not at every attempt
        while True:
            sent_at = time.monotonic()
            won: int | None = None
            soon = True
            try:
                entry = await self._get()
                if entry is None:
                    won = await self._cas(None)
                elif self._held_by_me(entry):
                    # this contender's own term, ended because no renewal got through for a
                    # TTL (NATS or the bucket's quorum was away), and no one took over since:
                    # no holder to wait out, and a CAS still fences off any other contender
                    if not ours:
                        log.info("lease %s: still ours at revision %d; taking it again",
                                 self.key, entry.revision or 0)
                    ours = True
                    won = await self._cas(entry.revision or 0)
                elif entry.revision == seen_revision \
                        and time.monotonic() - seen_at >= self.ttl_s:
                    log.warning("lease %s: holder silent for %.1f s; taking over", self.key,
                                self.ttl_s)
                    won = await self._cas(seen_revision)
                else:
                    soon = False  # another holder's lease: watched for a TTL without change
                    if entry.revision != seen_revision:
                        seen_revision, seen_at = entry.revision or 0, time.monotonic()
            except (nats.errors.Error, TimeoutError) as exc:
                if not unreachable:
                    log.info("lease %s: cannot reach the bucket (%r); trying again", self.key,
                             exc)
                unreachable = True
            if won:
                self.revision = self.token = won
                self._renewed_at = sent_at
                log.info("lease %s acquired by %s (fencing token %d)", self.key, self.holder,
                         won)
                return won
            await asyncio.sleep(_RETRY_PAUSE_S if soon else self.ttl_s / 4)

    def _held_by_me(self, entry: KeyValue.Entry) -> bool:
        try:
            value = json.loads(entry.value or b"{}")
        except ValueError:
            return False
        return isinstance(value, dict) and value.get("holder") == self.holder

    async def _get(self) -> KeyValue.Entry | None:
        try:
            async with asyncio.timeout(_ATTEMPT_S):
                return await self._kv.get(self.key)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return None

    async def _cas(self, last: int | None) -> int | None:
        try:
            async with asyncio.timeout(_ATTEMPT_S):
                if last is None:
                    return await self._kv.create(self.key, self._value())
                return await self._kv.update(self.key, self._value(), last=last)
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.BadRequestError):
            return None  # another contender won this round

    async def keep(self) -> None:
        """Renew every TTL/3 until the term ends; returns when it has (refused renewal, or
        none succeeded for a TTL). The holder must stop writing then. A renewal that did not
        get through is tried again after `_RETRY_PAUSE_S` (each attempt at most TTL/3), so a
        bucket that elects a new leader within the TTL does not end the term."""
        pause = self.ttl_s / 3
        failing = False  # said once per run of failed renewals
        while True:
            await asyncio.sleep(pause)
            pause = self.ttl_s / 3
            async with self._turns:
                if time.monotonic() - self._renewed_at >= self.ttl_s:
                    log.warning("lease %s: not renewed for %.1f s; giving it up", self.key,
                                self.ttl_s)
                    self._end()
                    return
                sent_at = time.monotonic()
                try:
                    async with asyncio.timeout(self.ttl_s / 3):
                        self.revision = await self._kv.update(self.key, self._value(),
                                                              last=self.revision)
                    self._renewed_at = sent_at
                    failing = False
                except (nats.js.errors.KeyWrongLastSequenceError,
                        nats.js.errors.BadRequestError):
                    log.warning("lease %s: taken over by another projector", self.key)
                    self._end()
                    return
                except (nats.errors.Error, TimeoutError) as exc:
                    if not failing:
                        log.info("lease %s: renewal failed (%r); retrying", self.key, exc)
                    failing = True
                    pause = _RETRY_PAUSE_S

    @contextlib.asynccontextmanager
    async def fencing(self) -> AsyncIterator[dict[str, str]]:
        """Headers that make a publish to the projection bucket succeed only while this
        holder's last renewal is the lease key's latest revision; renewals wait meanwhile."""
        async with self._turns:
            if self.revision == 0:
                raise LeaseLost(f"lease {self.key} is not held by {self.holder}")
            yield {"Nats-Expected-Last-Subject-Sequence": str(self.revision),
                   "Nats-Expected-Last-Subject-Sequence-Subject": self.subject}

    async def release(self) -> None:
        """Give the lease up (graceful stop), so a standby need not wait for the TTL."""
        async with self._turns:
            revision, self.revision = self.revision, 0
            if revision:
                with contextlib.suppress(nats.errors.Error, TimeoutError):
                    async with asyncio.timeout(_TIMEOUT_S):
                        await self._kv.delete(self.key, last=revision)
                    log.info("lease %s released by %s", self.key, self.holder)
            self._end()

    def _end(self) -> None:
        self.revision = 0
        self.token = 0


class FencedProjectionBus:
    """The projection bus as a leader sees it: every publish fenced by its lease."""

    def __init__(self, bus: JetStreamProjectionBus, lease: JetStreamLease) -> None:
        self._bus = bus
        self._lease = lease

    async def publish(self, updates: Sequence[ProjectionUpdate]) -> None:
        """Each batch fenced by the lease. An attempt not acknowledged within
        `_PUBLISH_ATTEMPT_S` (the bucket electing a leader, or the request lost with the server
        that led it) is made again after `_RETRY_PAUSE_S`, fenced by the lease's revision of
        then, for up to `_PUBLISH_S`: a batch stored twice is the same rows again
        (idempotent), and attempts go out in order on one connection, so a late one never
        lands after the next batch. Renewals take their turn between attempts."""
        for batch in await self._bus.fenced_batches(updates):
            await self._publish_batch(batch)

    async def _publish_batch(self, batch: Sequence[ProjectionUpdate]) -> None:
        async def attempt() -> None:
            async with self._lease.fencing() as headers:
                await self._bus.publish_batch(batch, headers, timeout_s=_PUBLISH_ATTEMPT_S)

        def failed(exc: BaseException) -> None:
            log.info("lease %s: projection publish did not get through (%s); trying again",
                     self._lease.key, exc)

        await retried(attempt, on=EventLogUnavailable, for_s=_PUBLISH_S, failed=failed)

    async def current(self) -> dict[str, bytes]:
        return await self._bus.current()
