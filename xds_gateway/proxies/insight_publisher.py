"""What one gateway tells the others about the streams it serves: `InsightsPublisher`.

Each gateway process has an instance id (`gw-<uuid4>`) and writes, to the shared insights
bucket (`events.bus.insights`):

- per stream, a `ProxyInsight` on connect, then at most every `interval_s` while the stream's
  per-type counters change (the latest state only: a busy stream never causes one write per
  response), and a final one with `disconnected_at` when the stream ends;
- a `GatewayHeartbeat` every `heartbeat_s`, so the others can tell a live gateway from a dead
  one (a dead gateway's proxies are as good as disconnected since its last beat).

Writes after the first carry the revision this gateway last wrote (`update(..., last=rev)`):
if the proxy has meanwhile connected elsewhere, the newer insight wins and this stream's
writes stop. All writes happen in `run()`, off the streams' paths: a failed write is logged
and retried on a later round (a stream's final write at most `_MAX_FAILURES` times), so the
bucket being slow or down never slows or breaks a stream.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from events import now_ms
from events.bus.insights import GatewayHeartbeat, ProxyInsight, TypeInsight
from events.errors import EventLogUnavailable
from xds_gateway.server.subscription import TypeState

__all__ = ["Insights", "InsightsPublisher", "Session"]

log = logging.getLogger("meshlog.xds.insights")

_MAX_FAILURES = 10
"""Final writes of ended streams given up after this many failed rounds (bounded memory)."""
_MAX_BACKOFF_S = 5.0
_MAX_CONCURRENT_WRITES = 64
_ENDED_KEPT = 10_000


class Insights(Protocol):
    """The role the gateway needs from the insights bucket (`JetStreamInsights`)."""

    async def put(self, insight: ProxyInsight) -> int: ...
    async def update(self, insight: ProxyInsight, last: int) -> int | None: ...
    async def proxy(self, mesh: str, name: str) -> tuple[ProxyInsight, int] | None: ...
    async def delete_proxy(self, mesh: str, name: str, last: int) -> bool: ...
    async def beat(self, heartbeat: GatewayHeartbeat) -> None: ...
    async def forget_gateway(self, instance: str, beat_at: int) -> bool: ...
    async def gateway(self, instance: str) -> GatewayHeartbeat | None: ...
    async def snapshot(self) -> tuple[dict[tuple[str, str], ProxyInsight],
                                      dict[str, GatewayHeartbeat]]: ...


@dataclass(eq=False)
class Session:
    """One stream as seen by the publisher."""

    mesh: str
    name: str
    protocol: str
    user_agent: str
    types: Mapping[str, TypeState]
    """The stream's own per-type state (`stream.types`), read at each round."""
    dns_port: int | None = None
    self_registered: bool = False
    session: str = field(default_factory=lambda: uuid.uuid4().hex)
    connected_at: int = field(default_factory=now_ms)
    disconnected_at: int | None = None
    revision: int | None = None
    written: tuple[object, ...] = ()
    """`counts()` at the last write."""
    written_at: float = float("-inf")
    failures: int = 0

    def counts(self) -> tuple[object, ...]:
        """What changes when the insight does, without building it: the per-type counters
        move with every response, ACK and NACK (the versions and messages with them)."""
        return (self.self_registered, *((url, s.responses, s.acks, s.nacks)
                                        for url, s in self.types.items()))

    def insight(self, gateway: str) -> ProxyInsight:
        return ProxyInsight(
            mesh=self.mesh, name=self.name, gateway=gateway, session=self.session,
            connected_at=self.connected_at, disconnected_at=self.disconnected_at,
            protocol=self.protocol, user_agent=self.user_agent, dns_port=self.dns_port,
            self_registered=self.self_registered,
            types={url: TypeInsight(responses_sent=s.responses, acks=s.acks, nacks=s.nacks,
                                    last_acked_version=s.acked_version or "",
                                    # cut to 4 KB by the stream (`record_nack`)
                                    last_nack_message=s.last_nack)
                   for url, s in sorted(self.types.items())})


class InsightsPublisher:
    def __init__(self, insights: Insights | None, *, address: Callable[[], str],
                 interval_s: float = 1.0, heartbeat_s: float = 5.0,
                 clock: Callable[[], int] = now_ms) -> None:
        """`clock`: this host's wall clock (Unix ms) that stamps the heartbeats and the
        disconnect times; another host's, skewed, is what a test of a zone whose clock is off
        gives here (services.api._clock_offsets)."""
        self.instance = f"gw-{uuid.uuid4().hex}"
        self.clock = clock
        self._insights = insights
        self._address = address
        self._interval_s = interval_s
        self._heartbeat_s = heartbeat_s
        self._started_at = clock()
        self.sessions: dict[str, Session] = {}
        """Streams whose insight still has writes to do, by session id."""
        self._ended: collections.OrderedDict[str, int] = collections.OrderedDict()
        """Session id -> disconnect time of streams that ended here (newest last, bounded)."""
        self._wake = asyncio.Event()
        self.swept_at: Callable[[], int] = lambda: 0
        """The reaper's last sweep, reported in the heartbeat."""

    # --- the streams' side (never awaits the bucket, except `write_now`) ---------------------

    def open(self, session: Session) -> None:
        if self._insights is None:
            return  # a gateway without a bucket (protocol tests) publishes nothing
        self.sessions[session.session] = session
        self._wake.set()

    def close(self, session: Session) -> None:
        session.disconnected_at = self.clock()
        if self._insights is None:
            return
        self._ended[session.session] = session.disconnected_at
        while len(self._ended) > _ENDED_KEPT:
            self._ended.popitem(last=False)
        self._wake.set()

    async def write_now(self, session: Session) -> bool:
        """Write the connect insight before going on (self-registration orders it before the
        registration check; see `lifecycle`); False if the bucket failed (the loop retries)."""
        written = True
        if self._insights is not None:
            written = await self._write(session, time.monotonic())
        self.open(session)
        return written

    def alive(self, session_id: str) -> bool:
        session = self.sessions.get(session_id)
        return session is not None and session.disconnected_at is None

    def ended_at(self, session_id: str) -> int | None:
        return self._ended.get(session_id)

    def streams(self) -> int:
        return sum(1 for s in self.sessions.values() if s.disconnected_at is None)

    # --- the loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Write heartbeats and insights until cancelled."""
        if self._insights is None:
            await asyncio.Event().wait()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._beat_forever(), name="gateway heartbeat")
            tg.create_task(self._publish_forever(), name="insight publisher")

    async def _beat_forever(self) -> None:
        while self._insights is not None:
            beat = GatewayHeartbeat(instance=self.instance, address=self._address(),
                                    started_at=self._started_at, beat_at=self.clock(),
                                    streams=self.streams(), swept_at=self.swept_at())
            try:
                await self._insights.beat(beat)
            except EventLogUnavailable as exc:
                log.warning("heartbeat of %s not written: %s", self.instance, exc)
            except Exception:
                log.exception("heartbeat of %s not written", self.instance)
            await asyncio.sleep(self._heartbeat_s)

    async def _publish_forever(self) -> None:
        backoff = 0.0
        while True:
            # asyncio.timeout, not wait_for: in 3.11 wait_for can swallow a cancellation that
            # arrives as the event fires, and this loop would then never stop
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(backoff or self._interval_s):
                    await self._wake.wait()
            self._wake.clear()
            now = time.monotonic()
            due = [s for s in list(self.sessions.values()) if self._due(s, now)]
            # connect and final writes first: the reaper and `_overview` wait for those
            due.sort(key=lambda s: s.revision is not None and s.disconnected_at is None)
            ok = True
            # Spread the round over half the interval: a fleet's counters all move with one
            # push, and a burst of a thousand KV writes right behind it would compete with the
            # next push for the CPU (docs/benchmarks.md, Propagation).
            chunks = range(0, len(due), _MAX_CONCURRENT_WRITES)
            pause = self._interval_s / 2 / len(chunks) if len(chunks) > 1 else 0.0
            for start in chunks:
                chunk = due[start:start + _MAX_CONCURRENT_WRITES]
                results = await asyncio.gather(*(self._write(s, now) for s in chunk))
                ok = ok and all(results)
                if pause:
                    await asyncio.sleep(pause)
            backoff = 0.0 if ok else min(max(backoff * 2, 0.5), _MAX_BACKOFF_S)

    def _due(self, session: Session, now: float) -> bool:
        if session.revision is None or session.disconnected_at is not None:
            return True  # connect and final writes go out at once
        if now - session.written_at < self._interval_s:
            return False  # collapse: at most one write per interval while counters change
        return session.counts() != session.written

    async def _write(self, session: Session, now: float) -> bool:
        """One write of the session's latest state; False if the bucket failed."""
        if self._insights is None:
            return True
        counts = session.counts()
        insight = session.insight(self.instance)
        try:
            if session.revision is None:
                # a new stream takes the key whoever wrote it before (events.bus.insights)
                revision: int | None = await self._insights.put(insight)
            else:
                revision = await self._insights.update(insight, session.revision)
        except Exception as exc:  # never let one write stop the loop (a stream's insight)
            session.failures += 1
            log.warning("insight of %s.%s not written (%d): %s", session.mesh, session.name,
                        session.failures, exc)
            if session.disconnected_at is not None and session.failures >= _MAX_FAILURES:
                log.error("giving up the final insight of %s.%s", session.mesh, session.name)
                self.sessions.pop(session.session, None)
            return False
        session.failures = 0
        if revision is None:
            # another gateway (or a newer stream) took the proxy: its insight is the newer one
            log.info("%s.%s is now reported by another stream; no more writes from %s",
                     session.mesh, session.name, self.instance)
            self.sessions.pop(session.session, None)
            return True
        session.revision = revision
        session.written = counts
        session.written_at = now
        if insight.disconnected_at is not None:
            self.sessions.pop(session.session, None)
        return True
