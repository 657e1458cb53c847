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
from nats.protocol.parser import AWAITING_CONTROL_LINE, AWAITING_MSG_PAYLOAD, Parser

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
            parser = getattr(nc, "_ps", None)
            if isinstance(parser, Parser) and all(
                    hasattr(parser, a) for a in ("buf", "state", "needed", "header_needed",
                                                 "msg_arg")):
                setattr(parser, "parse", dispatch._parse_with(parser))  # noqa: B010
            # else a nats-py whose parser is not the one this was written for: its messages
            # still reach the sinks through `_process_msg`, nats-py's way (slower, as right)
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
            if self.sinks and parser.state == AWAITING_MSG_PAYLOAD:
                # nats-py took the control line of a frame whose payload had not all come (it
                # did so after another operation, a PING, sent it down its own way): finished
                # here if it is the reader's, so that the frames after it come this way
                left = self._finish_pending(parser, buf)
                if left:
                    waiting = (buf, left)
                    return
            if (self.sinks and parser.state == AWAITING_CONTROL_LINE
                    and buf.startswith(_HMSG)):
                left = self._take_frames(buf)
                if left:
                    # the head is a frame of the reader's not whole yet: wait for the rest, as
                    # nats-py would, but without its taking the control line (it would then
                    # parse the next chunk's frames all its way)
                    waiting = (buf, left)
                    return
            await original(b"")

        return parse

    def _finish_pending(self, parser: Parser, buf: bytearray) -> int:
        """Deliver the frame nats-py's parser awaits the payload of, if it is the reader's
        and whole; else the size `buf` must reach for it to be (0: nothing to wait for)."""
        sink = self.sinks.get(parser.msg_arg.get("sid", -1))
        if sink is None:
            return 0
        needed, head_len = parser.needed, parser.header_needed
        if len(buf) < needed + 2:
            return needed + 2
        headers = bytes(buf[:head_len]) if head_len > 0 else None
        payload = bytes(buf[max(head_len, 0):needed])
        del buf[:needed + 2]
        parser.header_needed = 0
        parser.state = AWAITING_CONTROL_LINE
        stats = self._nc.stats
        stats["in_msgs"] += 1
        stats["in_bytes"] += len(payload)
        sink(parser.msg_arg["subject"], parser.msg_arg["reply"], payload, headers)
        return 0

    def _take_frames(self, buf: bytearray) -> int:
        """Give the whole HMSG frames at the head of `buf` whose sid has a sink to it, and
        cut them off it (those given so far, also when a sink raises). Returns, if what
        follows is the start of an HMSG frame that is not whole yet (its control line, or its
        sid's sink and not all its bytes), the size `buf` must reach for it to be (one more
        byte when its control line is not whole), else 0. Anything else is left to nats-py:
        another sid, another operation, or a control line nats-py would not take either (it
        then raises its own protocol error)."""
        data = bytes(buf)
        sinks, size = self.sinks, len(data)
        at = messages = payload_bytes = whole_at = 0
        try:
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
                at = end + 2
                messages += 1
                payload_bytes += len(payload)
                sink(subject, reply, payload,
                     data[start:start + head_len] if head_len else None)
        finally:
            if at:
                del buf[:at]
            if messages:
                stats = self._nc.stats
                stats["in_msgs"] += messages
                stats["in_bytes"] += payload_bytes
        return whole_at - at if whole_at else 0
