"""The log's ordered reader: an ephemeral pull consumer whose messages bypass nats-py's
per-message work.

Why not `PullSubscription.fetch`: per message it parses the headers into a dict with a
character-by-character check, builds a `Msg`, and `next_msg` starts a task (with a uuid4 name)
and an `asyncio.wait_for`; a rebuild spent more time there than folding. Here the messages of
the reader's inbox are taken from nats-py's protocol parser as bytes (`_Dispatch`, one per
connection, hooked on the client's `_process_msg`; every other subscription of the connection
goes through nats-py as before), turned straight into `Record`s, and pull requests are
pipelined: about two batches are always requested ahead, so the server sends while the
projector folds.

JetStream rules followed (reference/jetstream-rules.md): one consumer delivers in stream order
and pull requests are served in the order they were made, so records arrive in order; the
server sends only what was requested, so memory stays bounded (no drops behind a slow reader,
unlike a push consumer). A request ends by delivering its batch, or with a status message: 408
(it expired) or 409 (for example the consumer's limit of waiting requests), both carrying
`Nats-Pending-Messages`, the part of the batch not delivered; 404 (nothing, for `no_wait`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Mapping

import nats.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig

from events.codec import SCHEMA_HEADER, SCHEMA_VERSION
from events.errors import EventLogUnavailable
from events.log import Record

__all__ = ["pull_ordered", "schema_of"]

_EXPIRES_S = 30.0
"""How long a pull request waits on the server; a caught-up reader's requests linger that long
and are renewed when they expire."""
_SILENCE_S = 5.0
"""No message and no status for this long after the requests should have expired: they are
taken as lost (a reconnect) and made again."""

Sink = Callable[[bytes, bytes, bytes, bytes | None], None]
_STATUS_LINE = b"NATS/1.0 "


class _Dispatch:
    """Messages of registered subscription ids go to their sink, raw; the others to nats-py.

    Installed once per connection, over the instance's `_process_msg` (the coroutine nats-py's
    protocol parser awaits per MSG/HMSG with `(sid, subject, reply, payload, headers)`, all
    bytes). nats-py keeps the subscription itself (SUB, re-subscribe on reconnect, UNSUB)."""

    _installed: weakref.WeakKeyDictionary[NATS, _Dispatch] = weakref.WeakKeyDictionary()

    def __init__(self, nc: NATS) -> None:
        self._nc = nc
        self._original: Callable[..., Awaitable[None]] = nc._process_msg
        self.sinks: dict[int, Sink] = {}

    @classmethod
    def of(cls, nc: NATS) -> _Dispatch:
        dispatch = cls._installed.get(nc)
        if dispatch is None:
            dispatch = cls._installed[nc] = cls(nc)
            # an instance attribute is found before the method the parser would call
            setattr(nc, "_process_msg", dispatch.process_msg)  # noqa: B010 (mypy: a method)
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


def _headers(raw: bytes) -> dict[str, str]:
    """`NATS/1.0\\r\\nName: value\\r\\n...\\r\\n\\r\\n` as a dict (no status line here)."""
    out: dict[str, str] = {}
    for line in raw.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            out[name.strip().decode("ascii", "replace")] = value.strip().decode(
                "utf-8", "replace")
    return out


class _RawHeaders(Mapping[str, str]):
    """A message's headers, parsed when first read: the projector reads none of them (the
    schema version is taken from the bytes, `_schema_in`)."""

    __slots__ = ("_parsed", "_raw")

    def __init__(self, raw: bytes) -> None:
        self._raw = raw
        self._parsed: dict[str, str] | None = None

    def _dict(self) -> dict[str, str]:
        if self._parsed is None:
            self._parsed = _headers(self._raw)
        return self._parsed

    def __getitem__(self, key: str) -> str:
        return self._dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict())

    def __len__(self) -> int:
        return len(self._dict())


_SCHEMA_NAME = b"\r\n" + SCHEMA_HEADER.encode() + b":"


def _schema_in(raw: bytes) -> int:
    """`schema_of(_headers(raw))` without making the dict: the last `Meshlog-Schema` line."""
    at = raw.rfind(_SCHEMA_NAME)
    if at < 0:
        return SCHEMA_VERSION
    start = at + len(_SCHEMA_NAME)
    end = raw.find(b"\r\n", start)
    try:
        return int(raw[start:end] if end >= 0 else raw[start:])
    except ValueError:
        return 0


def schema_of(headers: Mapping[str, str]) -> int:
    """The event's schema version; 0 (unknown to every reader, so the event is quarantined,
    not a crash) when the header is not a number."""
    try:
        return int(headers.get(SCHEMA_HEADER, SCHEMA_VERSION))
    except ValueError:
        return 0


class _Reader:
    """The state of one ordered pull: what arrived, what is still requested."""

    def __init__(self, max_batch: int) -> None:
        self.max_batch = max_batch
        self.records: list[Record] = []
        self.requested = 0
        """Messages asked for and neither delivered nor given up by the server."""
        self.caught_up = False
        """The last record said no more were pending in the stream."""
        self.heard = False
        """Something (a record or a status) arrived since the generator last looked."""
        self.error: Exception | None = None
        self.wake = asyncio.Event()

    def on_message(self, subject: bytes, reply: bytes, data: bytes,
                   headers: bytes | None) -> None:
        self.heard = True
        if not data and headers is not None and headers.startswith(_STATUS_LINE):
            self._on_status(headers)
            return
        # $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>
        # or, with a domain and an account hash after ACK (v2), two tokens more before them
        tokens = reply.split(b".")
        if len(tokens) == 9:
            seq, pending = int(tokens[5]), tokens[8]
        elif len(tokens) >= 11 and tokens[0] == b"$JS":
            seq, pending = int(tokens[7]), tokens[10]
        else:
            self._fail(f"a message on the reader's inbox is not from JetStream (reply "
                       f"{reply[:80]!r})")
            return
        if headers:
            self.records.append(Record(seq, subject.decode(), data, _RawHeaders(headers),
                                       _schema_in(headers)))
        else:
            self.records.append(Record(seq, subject.decode(), data, {}, SCHEMA_VERSION))
        self.requested -= 1
        self.caught_up = pending == b"0"
        if self.caught_up or len(self.records) >= self.max_batch:
            self.wake.set()

    def _on_status(self, headers: bytes) -> None:
        line, _, rest = headers.partition(b"\r\n")
        code = line[len(_STATUS_LINE):len(_STATUS_LINE) + 3]
        if code == b"100":  # an idle heartbeat (none is asked for)
            return
        if code in (b"408", b"409"):  # the request ended: what it did not deliver
            left = _headers(b"\r\n" + rest).get("Nats-Pending-Messages")
            self.requested -= int(left) if left is not None and left.isdigit() else 0
            self.requested = max(self.requested, 0)
        elif code == b"404":
            self.requested = 0
        else:
            self._fail(f"JetStream ended a pull request: {line.decode('ascii', 'replace')}")
        self.wake.set()

    def _fail(self, why: str) -> None:
        self.error = EventLogUnavailable(why)
        self.wake.set()

    def take(self) -> list[Record] | None:
        """A batch to yield now, if one is due: a full one, or what there is once caught up."""
        if len(self.records) >= self.max_batch:
            batch = self.records[:self.max_batch]
            del self.records[:self.max_batch]
            return batch
        if self.records and self.caught_up:
            batch, self.records = self.records, []
            return batch
        return None


async def pull_ordered(
    nc: NATS, js: JetStreamContext, stream: str, subject: str, *, max_batch: int,
    config: ConsumerConfig, request_timeout: float, expires_s: float = _EXPIRES_S,
) -> AsyncGenerator[list[Record], None]:
    """In-order batches of at most `max_batch` records of `subject` (a filter), then the live
    tail, forever. `config` says where the consumer starts (it is given a name and the filter
    here); `js` is the JetStream context that creates it. Each pull request waits
    `expires_s` on the server; a caught-up reader renews them as they expire."""
    name = nc._nuid.next().decode()
    config.name = name
    config.filter_subject = subject
    await js.add_consumer(stream, config=config, timeout=request_timeout)
    reader = _Reader(max_batch)
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    dispatch = _Dispatch.of(nc)
    dispatch.sinks[sub._id] = reader.on_message
    next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{name}"
    request = json.dumps({"batch": max_batch,
                          "expires": int(expires_s * 1_000_000_000)}).encode()
    try:
        while True:
            # keep about two batches asked for: the server sends while the caller folds
            while reader.requested <= max_batch:
                await nc.publish(next_subject, request, reply=inbox)
                reader.requested += max_batch
            batch = reader.take()
            if batch is not None:
                yield batch
                continue
            if reader.error is not None:
                raise reader.error
            reader.wake.clear()
            reader.heard = False
            try:
                async with asyncio.timeout(expires_s + _SILENCE_S):
                    await reader.wake.wait()
            except TimeoutError:
                if not reader.heard:
                    reader.requested = 0  # lost with a connection: ask again
    finally:
        dispatch.sinks.pop(sub._id, None)
        with contextlib.suppress(nats.errors.ConnectionClosedError, nats.errors.Error):
            await sub.unsubscribe()
