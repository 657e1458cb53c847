"""Restarting the event stream's stalled sources when their upstream answers again.

nats-server (server/stream.go, 2.15) notices a silent source only on its 10 s health check
(`sourceHealthCheckInterval`), then asks the upstream for a new consumer and waits 30 s for
the answer (`srcConsumerWaitTime`); a request sent while the link was down is lost, so it
waits the 30 s out and then backs off 5 s x 2 x failures (`calculateRetryBackoff`, up to
2 min) before the next try. After a 30 s cut every side converged 26-29 s after the link
returned. Nothing in its API retries a source now, and a stream update that keeps a source
unchanged leaves it as it is; a source removed and added again is set up at once and resumes
after the last origin sequence the stream holds (`events.bus.sources.restart_sources`).

So the sync, every step: a source silent for longer than nats-server's own health check
(`active`, or since the sync first saw it when it never heard from its upstream) whose
upstream's JetStream API answers again is restarted, at most once per `NUDGE_EVERY_S`: a
flapping link costs two stream updates per source per 30 s at most, and nats-server's own
retries carry on between them. A source still silent after a restart (its upstream answers,
but its consumer keeps failing) is restarted at twice the interval each time, up to
`MAX_NUDGE_EVERY_S`, with a warning: each re-add scans the stream backwards for the source's
last header, a cost worth paying after a cut, not for ever; once it is heard from again the
interval is back to `NUDGE_EVERY_S`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from nats.aio.client import Client as NATS

from events.bus.sources import SourceSpec, restart_sources, source_states, upstream_answers
from events.subjects import EVENTS_STREAM

__all__ = ["MAX_NUDGE_EVERY_S", "NUDGE_EVERY_S", "STALLED_MS", "SourceNudger"]

STALLED_MS = 12_000
"""Silent for longer than this: nats-server's own health check (every 10 s, for a source
silent over 10 s, with a 1 s heartbeat) has found it stalled."""
NUDGE_EVERY_S = 30.0
"""At most one restart of a source in this long (nats-server's own wait for a consumer)."""
MAX_NUDGE_EVERY_S = 300.0
"""The longest interval between restarts of a source that stays silent after them."""

log = logging.getLogger("meshlog.sync")


class SourceNudger:
    def __init__(self, nc: NATS, *, zone: str, stream: str = EVENTS_STREAM,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """`nc`: a connection as a user allowed `STREAM.INFO` of `stream` and of its upstreams
        on their domains, and to ask the source keeper to change `stream`'s sources (the sync
        role)."""
        self._nc = nc
        self._stream = stream
        self._zone = zone
        self._clock = clock
        self._first_seen: dict[SourceSpec, float] = {}
        self._last_restart: dict[SourceSpec, float] = {}
        self._fruitless: dict[SourceSpec, int] = {}
        """Restarts of a source since it was last heard from."""

    async def step(self) -> list[SourceSpec]:
        """Restart the stalled sources whose upstream answers; the ones restarted."""
        now = self._clock()
        stalled: dict[SourceSpec, str] = {}  # and its upstream stream
        seen = set()
        for state in await source_states(self._nc, stream=self._stream):
            spec = SourceSpec(state.filter_subject, state.api)
            seen.add(spec)
            first = self._first_seen.setdefault(spec, now)
            silent_ms = (state.active_ms if state.active_ms is not None
                         else int((now - first) * 1000))
            if silent_ms <= STALLED_MS:
                self._fruitless.pop(spec, None)  # heard from: the next stall starts afresh
                continue
            every = self._interval(spec)
            if now - self._last_restart.get(spec, now - every) >= every:
                stalled[spec] = state.name
        for gone in set(self._first_seen) - seen:
            del self._first_seen[gone]
            self._last_restart.pop(gone, None)
            self._fruitless.pop(gone, None)
        upstreams = sorted({(spec.api, name) for spec, name in stalled.items() if spec.api})
        answers = await asyncio.gather(*(upstream_answers(self._nc, api, name)
                                         for api, name in upstreams))
        up = {upstream for upstream, answered in zip(upstreams, answers, strict=True)
              if answered}
        due = [spec for spec, name in stalled.items() if (spec.api, name) in up]
        if not due:
            return []
        for spec in due:
            if spec in self._last_restart and spec in self._fruitless:
                log.warning("the source %s of stream %s is still silent after %d restart(s) "
                            "while its upstream answers; next restart in %.0f s",
                            spec.filter_subject, self._stream, self._fruitless[spec] + 1,
                            min(NUDGE_EVERY_S * 2 ** (self._fruitless[spec] + 1),
                                MAX_NUDGE_EVERY_S))
            self._fruitless[spec] = self._fruitless.get(spec, -1) + 1
            self._last_restart[spec] = now
            self._first_seen[spec] = now  # a restarted source has not heard from it yet
        return await restart_sources(self._nc, due, zone=self._zone, stream=self._stream)

    def _interval(self, spec: SourceSpec) -> float:
        """How long after its last restart a still-silent source may be restarted again."""
        backoff: float = NUDGE_EVERY_S * 2.0 ** self._fruitless.get(spec, 0)
        return min(backoff, MAX_NUDGE_EVERY_S)
