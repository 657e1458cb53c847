"""Where the log's reader takes its messages off a nats-py connection: raw frames, before
nats-py makes anything of them.

`Dispatch` is installed once per connection. Messages of the subscription ids registered in
`sinks` (the reader's inboxes, `events.bus._pull`) go to their sink as bytes; every other
message, and every other protocol operation, goes through nats-py as before. It hooks two
private parts of nats-py (pinned by `tests/events/test_pull_reader.py` and the log's read
tests, and by the `nats-py` range in pyproject.toml):

- the client's `_process_msg(sid, subject, reply, payload, headers)`, the coroutine its
  protocol parser awaits per MSG/HMSG (all bytes): a message the fast path below leaves to
  the parser still reaches its sink;
- the parser's `parse(data)`, which its read loop awaits with each chunk read from the socket.
  A chunk of a rebuild holds ~100 of the reader's HMSG frames back to back; nats-py tries two
  regular expressions per frame, cuts the buffer twice, copies both parts and awaits
  `_process_msg`, which cost a rebuild about as much as decoding its events. Here the whole
  frames at the head of the buffer whose sid has a sink are cut out in one pass (one search
  for the control line's end, slices of one copy of the buffer) and given to their sink with
  a plain call; the rest of the buffer (a partial frame, another subscription's message, a
  PING, an INFO) is nats-py's, in order, as if the fast path had not been there. nats-py keeps
  the subscription itself (SUB, re-subscribe on reconnect, UNSUB).
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable

from nats.aio.client import Client as NATS
from nats.protocol.parser import AWAITING_CONTROL_LINE, Parser

__all__ = ["Dispatch", "Sink"]

Sink = Callable[[bytes, bytes, bytes, bytes | None], None]
"""(subject, reply, payload, headers or None): called in the event loop, must not block."""

_HMSG = b"HMSG "
_CRLF = b"\r\n"


class Dispatch:
    """Messages of registered subscription ids go to their sink, raw; the others to nats-py."""

    _installed: weakref.WeakKeyDictionary[NATS, Dispatch] = weakref.WeakKeyDictionary()

    def __init__(self, nc: NATS) -> None:
        self._nc = nc
        self._original: Callable[..., Awaitable[None]] = nc._process_msg
        self.sinks: dict[int, Sink] = {}

    @classmethod
    def of(cls, nc: NATS) -> Dispatch:
        dispatch = cls._installed.get(nc)
        if dispatch is None:
            dispatch = cls._installed[nc] = cls(nc)
            # instance attributes are found before the methods nats-py would call
            setattr(nc, "_process_msg", dispatch.process_msg)  # noqa: B010 (mypy: a method)
            parser: Parser = nc._ps
            setattr(parser, "parse", dispatch._parse_with(parser))  # noqa: B010
        return dispatch

    async def process_msg(self, sid: int, subject: bytes, reply: bytes, data: bytes,
                          headers: bytes | None) -> None:
        sink = self.sinks.get(sid)
        if sink is None:
            await self._original(sid, subject, reply, data, headers)
            return
        stats = self._nc.stats
        stats["in_msgs"] += 1
        stats["in_bytes"] += len(data)
        sink(subject, reply, data, headers)

    def _parse_with(self, parser: Parser) -> Callable[[bytes], Awaitable[None]]:
        """`parser.parse`, the reader's whole frames at the head of the buffer taken first."""
        original = parser.parse
        waiting: tuple[bytearray, int] | None = None
        """(buffer, size): the head of that buffer is a frame of the reader's that is whole
        at that size: no need to look again before (a big event comes in many chunks)."""

        async def parse(data: bytes = b"") -> None:
            nonlocal waiting
            buf = parser.buf  # read each time: a reconnect's `reset` makes a new one
            buf.extend(data)
            if waiting is not None and waiting[0] is buf and len(buf) < waiting[1]:
                return
            waiting = None
            if (self.sinks and parser.state == AWAITING_CONTROL_LINE
                    and buf.startswith(_HMSG)):
                taken, whole_at = self._take_frames(bytes(buf))
                if taken:
                    del buf[:taken]
                if whole_at:
                    # the head is a frame of the reader's not whole yet: wait for the rest, as
                    # nats-py would, but without its taking the control line (it would then
                    # parse the next chunk's frames all its way)
                    waiting = (buf, whole_at - taken)
                    return
            await original(b"")

        return parse

    def _take_frames(self, data: bytes) -> tuple[int, int]:
        """Give the whole HMSG frames at the head of `data` whose sid has a sink to it; the
        bytes they took, and, if what follows is the start of an HMSG frame that is not whole
        yet (its control line, or its sid's sink and not all its bytes), the size `data`
        must reach for it to be (one more byte when its control line is not whole), else 0.
        Anything else is left to nats-py: another sid, another operation, or a control line
        nats-py would not take either (it then raises its own protocol error)."""
        sinks, size = self.sinks, len(data)
        at = taken = messages = payload_bytes = whole_at = 0
        while data.startswith(_HMSG, at):
            eol = data.find(_CRLF, at)
            if eol < 0:
                whole_at = size + 1
                break
            # HMSG <subject> <sid> [reply] <header bytes> <total bytes>
            args = data[at + 5:eol].split()
            try:
                if len(args) == 5:
                    subject, sid, reply, head, total = args
                elif len(args) == 4:
                    subject, sid, head, total = args
                    reply = b""
                else:
                    break
                sink = sinks.get(int(sid))
                head_len, total_len = int(head), int(total)
            except ValueError:
                break
            start = eol + 2
            end = start + total_len
            if sink is None or not 0 <= head_len <= total_len:
                break
            if end + 2 > size:
                whole_at = end + 2
                break
            payload = data[start + head_len:end]
            at = taken = end + 2
            messages += 1
            payload_bytes += len(payload)
            sink(subject, reply, payload, data[start:start + head_len] if head_len else None)
        if messages:
            stats = self._nc.stats
            stats["in_msgs"] += messages
            stats["in_bytes"] += payload_bytes
        return taken, whole_at
