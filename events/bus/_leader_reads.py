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

import time

from nats.js import JetStreamContext

__all__ = ["REPLICAS_TTL_S", "LeaderReads"]

REPLICAS_TTL_S = 1.0


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
