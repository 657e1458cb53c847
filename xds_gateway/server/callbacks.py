"""The seam between the xDS server and what else happens while a proxy is connected.

Like go-control-plane's `server.Callbacks` and Kuma's `util_xds.Callbacks`, the server knows
the concerns around a stream (insights, self-registration, and next authentication and SDS)
only through `StreamCallbacks`, and never the other way round:

- `on_stream_open(stream)`: the first message arrived, so the node is known (xds-rules #1);
  raising `StreamRefused` ends the stream with its gRPC status, before anything is sent;
- `on_stream_request(stream, request)`: every later request (an ACK, a NACK, a subscription
  change); may refuse the stream too (a node id that changed);
- `on_stream_response(stream, type_url, version, nonce, resources)`: a response was written;
  synchronous and cheap, on the push path of every proxy;
- `on_stream_closed(stream)`: the stream ended, whatever the reason, also when an open was
  refused, so each callback releases what it holds.

Between requests, a callback ends a stream that lives on with `stream.end(code, message)`
(a credential that expired or was revoked while the stream was open): the server stops
serving it and ends it with that status, as if the open had been refused.

Every stream the gateway serves goes through them: ADS (SotW and Delta) and HDS. A
`CallbackChain` runs several: opens and requests in order (the first refusal stops the
chain), closes in reverse order and always all of them.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import grpc
from envoy.config.core.v3.base_pb2 import Node

from xds_gateway.server.subscription import TypeState

__all__ = ["CallbackChain", "StreamCallbacks", "StreamInfo", "StreamKind", "StreamRefused"]

StreamKind = Literal["sotw", "delta", "hds"]
"""The kind of a stream: SotW or Delta ADS, or Envoy's Health Discovery Service."""

_ids = itertools.count(1)


class StreamRefused(Exception):
    """A callback ends the stream with `code` and `message` (sent to the client)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(eq=False)
class StreamInfo:
    """One stream as the callbacks see it. Identity is the stream: callbacks may key their
    own state by it."""

    protocol: StreamKind
    peer: str
    metadata: tuple[tuple[str, str | bytes], ...] = ()
    """The gRPC call's invocation metadata (where a proxy's credentials travel)."""
    types: Mapping[str, TypeState] = field(default_factory=dict)
    """ADS: the stream's per-type state (`AdsStream.types`, live); HDS: empty."""
    node: Node | None = None
    """The node of the first message; set before `on_stream_open`."""
    type_url: str = ""
    """The type_url of the first message (ADS), set with `node`."""
    stream_id: int = field(default_factory=lambda: next(_ids))
    ended: StreamRefused | None = field(default=None, init=False)
    """Why the stream was ended (`end`, or a refusal); None while it may go on."""
    _ending: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)

    def end(self, code: grpc.StatusCode, message: str) -> None:
        """End the stream with `code` and `message`, from a callback, a timer or a listener
        on the gateway's loop; the first reason wins. The server stops serving the stream at
        once and ends it with that status."""
        if self.ended is None:
            self.ended = StreamRefused(code, message)
            self._ending.set()

    async def serve_until_ended(self, serving: Coroutine[Any, Any, None]) -> None:
        """Run `serving` (the stream's work) to its end, or until `end` is called: then
        cancel it and return. Its exceptions propagate as they are."""
        work = asyncio.ensure_future(serving)
        ending = asyncio.ensure_future(self._ending.wait())
        try:
            await asyncio.wait((work, ending), return_when=asyncio.FIRST_COMPLETED)
        finally:
            ending.cancel()
            work.cancel()
            await asyncio.wait((work, ending))  # both over; neither's CancelledError is ours
        if not work.cancelled():
            work.result()


def invocation_metadata(context: grpc.aio.ServicerContext[Any, Any]
                        ) -> tuple[tuple[str, str | bytes], ...]:
    """A call's invocation metadata as (key, value) pairs."""
    return tuple((item[0], item[1]) for item in context.invocation_metadata() or ())


class StreamCallbacks(Protocol):
    async def on_stream_open(self, stream: StreamInfo) -> None:
        """The node is known; raise `StreamRefused` to end the stream."""
        ...

    async def on_stream_request(self, stream: StreamInfo, request: object) -> None:
        """A request after the first; raise `StreamRefused` to end the stream."""
        ...

    def on_stream_response(self, stream: StreamInfo, type_url: str, version: str, nonce: str,
                           resources: int) -> None:
        """A response was written (`resources`: how many it carried)."""
        ...

    async def on_stream_closed(self, stream: StreamInfo) -> None:
        """The stream ended (also after a refused open)."""
        ...


class NoCallbacks:
    """Every callback doing nothing: a base for callbacks that need only some of them (like
    go-control-plane's `CallbackFuncs`). A chain skips what a member does not override."""

    async def on_stream_open(self, stream: StreamInfo) -> None:
        pass

    async def on_stream_request(self, stream: StreamInfo, request: object) -> None:
        pass

    def on_stream_response(self, stream: StreamInfo, type_url: str, version: str, nonce: str,
                           resources: int) -> None:
        pass

    async def on_stream_closed(self, stream: StreamInfo) -> None:
        pass


class CallbackChain(NoCallbacks):
    """Several `StreamCallbacks` as one. Requests and responses, on every proxy's push path,
    reach only the members that override them."""

    def __init__(self, callbacks: Sequence[StreamCallbacks] = ()) -> None:
        self._callbacks = tuple(callbacks)
        self._on_request = tuple(c for c in self._callbacks
                                 if _overrides(c, "on_stream_request"))
        self._on_response = tuple(c for c in self._callbacks
                                  if _overrides(c, "on_stream_response"))

    @property
    def wants_requests(self) -> bool:
        """Whether any member looks at requests after the first."""
        return bool(self._on_request)

    async def on_stream_open(self, stream: StreamInfo) -> None:
        for callbacks in self._callbacks:
            await callbacks.on_stream_open(stream)

    async def on_stream_request(self, stream: StreamInfo, request: object) -> None:
        for callbacks in self._on_request:
            await callbacks.on_stream_request(stream, request)

    def on_stream_response(self, stream: StreamInfo, type_url: str, version: str, nonce: str,
                           resources: int) -> None:
        for callbacks in self._on_response:
            callbacks.on_stream_response(stream, type_url, version, nonce, resources)

    async def on_stream_closed(self, stream: StreamInfo) -> None:
        for callbacks in reversed(self._callbacks):
            await callbacks.on_stream_closed(stream)


def _overrides(callbacks: StreamCallbacks, name: str) -> bool:
    return getattr(type(callbacks), name, None) is not getattr(NoCallbacks, name)
