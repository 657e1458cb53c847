"""`LeaderReads`: whether a consistent read of a stream must ask the stream leader.

On a replicated stream it must: any replica answers a direct get, and a follower applies a
write only after the leader has acknowledged it (a link's latency later, or seconds while it
catches up). On R1 the one replica is the leader, and the direct get is cheaper: measured on
one embedded nats-server, 0.49 ms of CPU (client and server) per read against 0.68 ms for
`$JS.API.STREAM.MSG.GET`, whose answer is JSON with the message in base64 (docs/benchmarks.md,
Decision reads).

A stream can be scaled from R1 to R3 under running processes (`nats stream edit --replicas
3`), so the count an R1 stream was opened with is read again (`$JS.API.STREAM.INFO`, which
every role may ask) once it is `REPLICAS_TTL_S` old, at the next consistent read: a process
notices within that time. A new replica answers direct gets only once it is 90 % caught up,
which nats-server checks every 2 s from when the replica learns the stream's leader
(`monitorStream`'s direct access ticker, jetstream_cluster.go): later than the process
notices. Once replicated, always replicated: a stream scaled down to R1 is still read from
its leader, which is correct, only dearer.
"""

from __future__ import annotations

import asyncio
import time

from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg

__all__ = ["LEADER_ATTEMPT_S", "REPLICAS_TTL_S", "LeaderReads", "leader_last"]

REPLICAS_TTL_S = 1.0

LEADER_ATTEMPT_S = 1.0
"""One attempt at a read from the stream leader (`leader_last`), made again by the caller
until its own bound (events.bus._retry): answered in milliseconds while the stream has a
leader. While it elects one, a request gets "no responders" or no answer at all; a short
attempt made again gets through within a second of the new leader, where one 5 s wait held a
write up to 5 s past it (docs/benchmarks.md, Faults)."""


async def leader_last(js: JetStreamContext, stream: str, subject: str) -> RawStreamMsg:
    """One attempt, within `LEADER_ATTEMPT_S`, at the stream leader's last message of
    `subject` (`$JS.API.STREAM.MSG.GET`, which only the leader answers)."""
    async with asyncio.timeout(LEADER_ATTEMPT_S):
        return await js.get_last_msg(stream, subject, direct=False)


class LeaderReads:
    def __init__(self, js: JetStreamContext, stream: str, replicas: int | None) -> None:
        """`replicas`: the stream's replica count as just read; None (not known): a consistent
        read asks the leader."""
        self._js = js
        self._stream = stream
        self._replicated = replicas != 1
        self._read_at = time.monotonic()

    async def needed(self) -> bool:
        """Whether a consistent read must ask the stream leader now. Raises what nats-py
        raises when JetStream does not answer the stream's info."""
        if self._replicated or time.monotonic() - self._read_at < REPLICAS_TTL_S:
            return self._replicated
        # reads in flight meanwhile keep the count read last (within the TTL)
        self._read_at = time.monotonic()
        info = await self._js.stream_info(self._stream)
        self._replicated = (info.config.num_replicas or 1) != 1
        return self._replicated
