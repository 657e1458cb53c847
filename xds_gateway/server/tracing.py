"""A gateway's part of a write's trace: the push of a projector batch and the proxies' ACKs.

The projector's publish carries its trace context on the batch's checkpoint message
(`events.bus.projection_bus.ProjectionBatch.trace`). `PushTracing.follow` applies each batch
to the view like `ProjectionView.follow`, and for a traced batch opens a span
`meshlog.gateway.push` (child of the publish) from the moment the batch is applied. As a
`StreamCallbacks` it notes every response written for that view generation; the proxies'
ACKs are read from the streams' own counters (`TypeState.latest_acks`, `nacks`) by a poll every
`POLL_S` while a push is open, so nothing is added to the ACK path. A proxy counts as having
ACKed once every response it got for the push is ACKed: the span gets an event per proxy
(`acked`, with its node id, up to `MAX_PROXY_EVENTS`) and, at its end, the counts
(`meshlog.xds.*`) and the time of the last ACK. It ends when every response was answered
(or its stream closed) and no response came for `QUIET_S` (`NOTHING_S` when none came at
all); after `MAX_OPEN_S` at the
latest, or when the next traced batch arrives.

The gateway uses this only when the process has tracing (`events.bus.trace_context.tracer`);
otherwise it follows the view as before and adds no callback.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, Span

from events.bus.projection_bus import ProjectionBatch
from events.bus.trace_context import span_context_of, tracer
from xds_gateway.server.callbacks import NoCallbacks, StreamInfo
from xds_gateway.server.subscription import TypeState
from xds_gateway.view import ProjectionView

__all__ = ["MAX_OPEN_S", "MAX_PROXY_EVENTS", "NOTHING_S", "POLL_S", "QUIET_S", "PushTracing"]

POLL_S = 0.01
"""How often an open push looks at the streams' ACK counters: an ACK's time is known to
this much."""
QUIET_S = 0.5
"""A push whose responses are all answered ends after this long without a new response."""
NOTHING_S = 1.0
"""A push that made no response at all ends after this long (nothing changed for any
proxy of this gateway)."""
MAX_OPEN_S = 30.0
MAX_PROXY_EVENTS = 100
"""Events `acked` per push span (the SDK keeps 128 events per span by default)."""


@dataclass(eq=False)
class _Response:
    stream: StreamInfo
    state: TypeState
    acks: int
    nacks: int


@dataclass(eq=False)
class _Push:
    span: Span
    generation: int
    started: float
    streams: int
    last_response: float = 0.0
    last_ack: float = 0.0
    pending: list[_Response] = field(default_factory=list)
    unanswered: dict[StreamInfo, int] = field(default_factory=dict)
    """Per proxy (stream), its responses not answered yet."""
    responses: int = 0
    acks: int = 0
    nacks: int = 0
    closed: int = 0
    proxies_acked: int = 0
    proxies_nacked: set[StreamInfo] = field(default_factory=set)


class PushTracing(NoCallbacks):
    def __init__(self, view: ProjectionView) -> None:
        self.view = view
        self._streams: set[StreamInfo] = set()
        self._push: _Push | None = None
        self._opened = asyncio.Event()

    @property
    def open_push(self) -> Span | None:
        """The span of the push being watched, if any."""
        return self._push.span if self._push is not None else None

    async def follow(self, batches: AsyncIterator[ProjectionBatch]) -> None:
        """Apply batches from the projection bus forever, tracing the pushes of traced ones."""
        async for batch in batches:
            push = self._start(batch) if batch.trace else None
            self.view.apply(batch.updates)
            self.view.ready.set()
            if push is not None:
                push.generation = self.view.generation
                push.span.set_attribute("meshlog.view.generation", push.generation)
                push.span.set_attribute("meshlog.checkpoint", self.view.checkpoint)

    def _start(self, batch: ProjectionBatch) -> _Push | None:
        parent = span_context_of(batch.trace)
        traced = tracer()
        if parent is None or traced is None:
            return None
        span = traced.start_span(
            "meshlog.gateway.push", context=trace.set_span_in_context(NonRecordingSpan(parent)),
            attributes={"meshlog.xds.streams": len(self._streams)})
        if not span.is_recording():
            span.end()
            return None
        if self._push is not None:
            self._end(self._push, "superseded")
        self._push = _Push(span, generation=-1, started=time.monotonic(),
                           streams=len(self._streams))
        self._opened.set()
        return self._push

    async def on_stream_open(self, stream: StreamInfo) -> None:
        if stream.protocol != "hds":
            self._streams.add(stream)

    def on_stream_response(self, stream: StreamInfo, type_url: str, version: str, nonce: str,
                           resources: int) -> None:
        push = self._push
        if push is None or push.generation != self.view.generation:
            return
        state = stream.types.get(type_url)
        if state is None:
            return
        push.pending.append(_Response(stream, state, state.latest_acks, state.nacks))
        push.unanswered[stream] = push.unanswered.get(stream, 0) + 1
        push.responses += 1
        push.last_response = time.monotonic()
        if push.responses == 1:
            push.span.add_event("first response written", {"meshlog.node_id": _node(stream)})

    async def on_stream_closed(self, stream: StreamInfo) -> None:
        self._streams.discard(stream)

    async def run(self) -> None:
        """Watch the open push's ACKs, until cancelled."""
        try:
            while True:
                await self._opened.wait()
                self._opened.clear()
                while self._push is not None:
                    await asyncio.sleep(POLL_S)  # polling counters, not waiting for a condition
                    if self._push is not None:
                        self._check(self._push)
        finally:
            if self._push is not None:
                self._end(self._push, "gateway stopped")

    def _check(self, push: _Push) -> None:
        now = time.monotonic()
        still = []
        for response in push.pending:
            state = response.state
            if state.nacks > response.nacks:
                push.nacks += 1
                push.proxies_nacked.add(response.stream)
            elif state.latest_acks > response.acks:
                push.acks += 1
                push.last_ack = now
            elif response.stream not in self._streams:
                push.closed += 1
            else:
                still.append(response)
                continue
            self._answered(push, response.stream, now)
        push.pending = still
        idle = now - (push.last_response or push.started)
        if not still and idle >= (QUIET_S if push.responses else NOTHING_S):
            self._end(push, "answered" if push.responses else "nothing to push")
        elif now - push.started >= MAX_OPEN_S:
            self._end(push, "timed out")

    def _answered(self, push: _Push, stream: StreamInfo, now: float) -> None:
        left = push.unanswered[stream] - 1
        push.unanswered[stream] = left
        if left or stream in push.proxies_nacked or stream not in self._streams:
            return
        push.proxies_acked += 1
        if push.proxies_acked <= MAX_PROXY_EVENTS:
            push.span.add_event("acked", {
                "meshlog.node_id": _node(stream), "meshlog.xds.proxies_acked": push.proxies_acked,
                "meshlog.push.elapsed_ms": round((now - push.started) * 1000, 1)})

    def _end(self, push: _Push, outcome: str) -> None:
        if self._push is push:
            self._push = None
        push.span.set_attributes({
            "meshlog.push.outcome": outcome,
            "meshlog.xds.responses": push.responses,
            "meshlog.xds.proxies": len(push.unanswered),
            "meshlog.xds.proxies_acked": push.proxies_acked,
            "meshlog.xds.proxies_nacked": len(push.proxies_nacked),
            "meshlog.xds.acks": push.acks,
            "meshlog.xds.nacks": push.nacks,
            "meshlog.xds.closed_unanswered": push.closed + len(push.pending),
        })
        if push.last_ack:
            push.span.set_attribute("meshlog.push.last_ack_ms",
                                    round((push.last_ack - push.started) * 1000, 1))
        push.span.end()


def _node(stream: StreamInfo) -> str:
    return stream.node.id if stream.node is not None else stream.peer
