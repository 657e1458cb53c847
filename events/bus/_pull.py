"""The log's ordered reader: an ephemeral pull consumer whose messages bypass nats-py's
per-message work.

Why not `PullSubscription.fetch`: per message it parses the headers into a dict with a
character-by-character check, builds a `Msg`, and `next_msg` starts a task (with a uuid4 name)
and an `asyncio.wait_for`; a rebuild spent more time there than folding. Here the messages of
the reader's inbox are taken off the connection as raw frames (`events.bus._wire.Dispatch`, one
per connection, hooked on nats-py's parser; every other subscription of the connection goes
through nats-py as before), turned straight into `Record`s, and pull requests are
pipelined: one or two requests, bounded in bytes, are always asked ahead, so the server sends
while the projector folds.

JetStream rules followed (reference/jetstream-rules.md): one consumer delivers in stream order,
whichever of its waiting requests a message goes to, so records arrive in order; the server
sends only what was requested, so memory stays bounded (no drops behind a slow reader, unlike
a push consumer). A request ends by delivering its bytes (exactly: then without a status), or
with a status message: 408 (it expired) or 409 (its next message does not fit in what is left
of its bytes, or the consumer's limit of waiting requests), both carrying
`Nats-Pending-Bytes`, the part of the request not delivered; 404 (nothing, for `no_wait`); 503
(no responder: the consumer is gone, or the node holding it is down; asked again once per idle
period, and the log's reader then makes a new consumer, `events.bus.jetstream`); 100 (an idle
heartbeat, when the requests ask for them: nothing to deliver, but the consumer is there).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig

from events.bus._retry import raise_if_cancelled
from events.bus._wire import Dispatch
from events.codec import SCHEMA_HEADER, SCHEMA_VERSION
from events.errors import EventLogUnavailable
from events.log import Record
from events.readiness import READINESS_HEADER, readiness_in

__all__ = ["OrderedPull", "pull_ordered", "schema_of"]

_READINESS = READINESS_HEADER.encode()
"""Looked for before `readiness_in` is called: most events do not carry it."""

_EXPIRES_S = 30.0
"""How long a pull request waits on the server; a caught-up reader's requests linger that long
and are renewed when they expire."""
_REQUEST_BYTES = 4 << 20
"""What a pull request may bring, in bytes (JetStream's `max_bytes`). One or two requests are
kept ahead of the caller, which does not read its socket while it folds a batch: bounded in
messages only, big batches of big events overflowed what nats-server holds for a client
(`max_pending`, 64 MiB by default), and it closed the connection as a slow consumer (seen:
100,000-event batches of the rebuild benchmark's events, ~80 MB ahead, stalled the rebuild
5 s on each reconnect). At most 8 MiB ahead, an eighth of the default; more only when the
server takes messages bigger than that (`max_payload`)."""
_REQUEST_BATCH = 1_000_000
"""Messages a pull request asks for: more than its bytes can hold, so that every request ends
by its bytes (or with a status), whose account the reader keeps exactly."""
_MAX_REQUEST_BYTES = 64 << 20
"""A request grows up to this for a message bigger than it (a server whose `max_payload` is
smaller than another's that stored the event); past it the reader gives up, naming why."""
_SILENCE_S = 5.0
"""No message and no status for this long after the requests should have expired: they are
taken as lost (a reconnect) and made again."""

_STATUS_LINE = b"NATS/1.0 "


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
        """Bytes asked for and neither delivered nor given up by the server. JetStream counts a
        message as its subject, reply subject, header block and data (`on_message`), and a request
        that ends by its bytes exactly ends without a status: counted in messages, its part
        was never given back, and the reader stopped asking (stalls of up to the silence
        period)."""
        self.unfit = 0
        """The most bytes a request ended with undelivered because its next message did not
        fit (a 409 "Message Size Exceeds MaxBytes"): a whole request's means that message
        fits in none (`OrderedPull` knows the requests' size)."""
        self.caught_up = False
        """The last record said no more were pending in the stream."""
        self.heard = False
        """Something (a record or a status) arrived since the generator last looked."""
        self.error: Exception | None = None
        self.refused = False
        """No one took a pull request (status 503): none is made again until the next call."""
        self.wake = asyncio.Event()
        self.beat_at = 0.0
        """When the last idle heartbeat arrived, by the monotonic clock (the loop's)."""

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
            self.records.append(Record(
                seq, subject.decode(), data, _RawHeaders(headers), _schema_in(headers),
                readiness_in(headers) if _READINESS in headers else 0))
        else:
            self.records.append(Record(seq, subject.decode(), data, {}, SCHEMA_VERSION))
        self.requested -= len(subject) + len(reply) + len(data) + (len(headers) if headers else 0)
        self.caught_up = pending == b"0"
        if self.caught_up or len(self.records) >= self.max_batch:
            self.wake.set()

    def _on_status(self, headers: bytes) -> None:
        line, _, rest = headers.partition(b"\r\n")
        code = line[len(_STATUS_LINE):len(_STATUS_LINE) + 3]
        if code == b"100":  # an idle heartbeat (when asked for): the consumer is there
            self.beat_at = time.monotonic()
            return
        if code in (b"408", b"409"):  # the request ended: what it did not deliver
            left = _headers(b"\r\n" + rest).get("Nats-Pending-Bytes")
            if left is not None and left.isdigit():
                self.requested = max(self.requested - int(left), 0)
                if b"MaxBytes" in line:
                    self.unfit = max(self.unfit, int(left))
            else:  # what ended is not said (409 Consumer Deleted): ask again, a few too many
                self.requested = 0
        elif code == b"404":
            self.requested = 0
        elif code == b"503":  # no responder: the consumer's server is down (or it is gone)
            self.requested = 0
            self.refused = True
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


class OrderedPull:
    """An ordered pull consumer of `subject` that can be renewed at a sequence.

    `next(idle_s)` gives the next in-order batch of at most `max_batch` records, or None when
    nothing arrived for `idle_s` (what to do then, for example `renew`, is the caller's
    policy). `renew(seq)` drops the consumer's inbox (messages still on their way to it are
    discarded by nats-py) and makes a new consumer, and a new inbox, starting at `seq`.
    `close()` drops the inbox; the consumer goes with its inactive threshold. Each pull
    request waits `expires_s` on the server; a caught-up reader renews them as they expire.
    Each brings at most `request_bytes` (default `_REQUEST_BYTES`, or more where the server
    takes bigger messages). `heartbeat_s`: the server sends an idle heartbeat (status 100)
    that often while a request waits with nothing to deliver, so that `next` returning None
    means not even the consumer is heard (it is gone, or its server is)."""

    def __init__(self, nc: NATS, js: JetStreamContext, stream: str, subject: str, *,
                 max_batch: int, config: Callable[[int], ConsumerConfig],
                 request_timeout: float, expires_s: float = _EXPIRES_S,
                 heartbeat_s: float | None = None, request_bytes: int | None = None) -> None:
        self._nc = nc
        self._js = js
        self._stream = stream
        self._subject = subject
        self._max_batch = max_batch
        self._config = config
        self._request_timeout = request_timeout
        self._expires_s = expires_s
        self._heartbeat_s = heartbeat_s
        self._request_bytes = (max(_REQUEST_BYTES, nc.max_payload + (64 << 10))
                               if request_bytes is None else request_bytes)
        self._request = self._make_request()
        self._dispatch = Dispatch.of(nc)
        self._reader = _Reader(max_batch)
        self._sub: Subscription | None = None
        self._inbox = ""
        self._next_subject = ""
        self._heard_at = 0.0
        self._heartbeats = bool(heartbeat_s)

    def _make_request(self) -> bytes:
        request = {"batch": _REQUEST_BATCH, "max_bytes": self._request_bytes,
                   "expires": int(self._expires_s * 1_000_000_000)}
        if self._heartbeat_s:
            request["idle_heartbeat"] = int(self._heartbeat_s * 1_000_000_000)
        return json.dumps(request).encode()

    def _grow(self, reader: _Reader) -> None:
        """Requests big enough for a message that fitted none: twice as big, up to a limit."""
        reader.unfit = 0
        if self._request_bytes >= _MAX_REQUEST_BYTES:
            raise EventLogUnavailable(
                f"a message of {self._subject} after the last one read is bigger than "
                f"{_MAX_REQUEST_BYTES} bytes, the most a pull request of this reader may "
                "bring (was it stored by a server with a larger max_payload?)")
        self._request_bytes = min(2 * self._request_bytes, _MAX_REQUEST_BYTES)
        self._request = self._make_request()

    async def open(self, start_seq: int) -> None:
        """Make the consumer at `start_seq` (the inbox first: nothing sent is missed)."""
        name = self._nc._nuid.next().decode()
        config = self._config(start_seq)
        config.name = name
        config.filter_subject = self._subject
        reader = _Reader(self._max_batch)
        inbox = self._nc.new_inbox()
        sub = await self._nc.subscribe(inbox)
        self._dispatch.sinks[sub._id] = reader.on_message
        try:
            await self._js.add_consumer(self._stream, config=config,
                                        timeout=self._request_timeout)
        except BaseException:
            await self._drop(sub)
            raise
        self._reader, self._sub, self._inbox = reader, sub, inbox
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{self._stream}.{name}"
        self._heard_at = asyncio.get_running_loop().time()

    async def renew(self, start_seq: int) -> None:
        """A new consumer at `start_seq`; nothing the old one sent is given any more."""
        sub, self._sub = self._sub, None
        if sub is not None:
            await self._drop(sub)
        await self.open(start_seq)

    async def close(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            await self._drop(sub)

    async def _drop(self, sub: Subscription) -> None:
        self._dispatch.sinks.pop(sub._id, None)
        with contextlib.suppress(nats.errors.ConnectionClosedError, nats.errors.Error):
            await sub.unsubscribe()

    async def next(self, idle_s: float) -> list[Record] | None:
        """The next batch: a full one, or what there is once caught up (or once nothing more
        arrived for `idle_s`); None when nothing arrived for `idle_s` (with heartbeats: not
        even a heartbeat)."""
        if self._sub is None:
            raise EventLogUnavailable("the reader's consumer is closed")
        reader = self._reader
        loop = asyncio.get_running_loop()
        if reader.refused:  # no responder: ask again once per idle period, not in a loop
            reader.refused = False
            reader.requested = 0
        deadline = loop.time() + idle_s
        while True:
            # an idle consumer's heartbeats keep this loop waiting for as long as nothing is
            # appended: a cancel lost on the way here must end it (`raise_if_cancelled`)
            raise_if_cancelled()
            if reader.unfit >= self._request_bytes:  # a request delivered nothing
                if self._request_bytes >= _MAX_REQUEST_BYTES and reader.records:
                    before, reader.records = reader.records, []
                    return before  # what came before the message that fits no request
                self._grow(reader)
            # keep one or two requests ahead: the server sends while the caller folds
            while reader.requested <= self._request_bytes and not reader.refused:
                await self._nc.publish(self._next_subject, self._request, reply=self._inbox)
                reader.requested += self._request_bytes
            batch = reader.take()
            if batch is not None:
                return batch
            if reader.error is not None:
                raise reader.error
            reader.wake.clear()
            reader.heard = False
            try:
                async with asyncio.timeout_at(deadline):
                    await reader.wake.wait()
            except TimeoutError:
                pass
            now = loop.time()
            if reader.heard:
                self._heard_at = now
            if now < deadline:
                continue
            if reader.records:  # whatever came in order before the silence
                batch, reader.records = reader.records, []
                return batch
            if self._heartbeats and reader.beat_at + idle_s > now:
                deadline = reader.beat_at + idle_s  # the consumer is there: wait on
                continue
            if now - self._heard_at > self._expires_s + _SILENCE_S:
                reader.requested = 0  # lost with a connection: ask again
                self._heard_at = now
            return None


async def pull_ordered(
    nc: NATS, js: JetStreamContext, stream: str, subject: str, *, max_batch: int,
    config: ConsumerConfig, request_timeout: float, expires_s: float = _EXPIRES_S,
) -> AsyncGenerator[list[Record], None]:
    """In-order batches of at most `max_batch` records of `subject` (a filter), then the live
    tail, forever, from one consumer made with `config` (`OrderedPull` without renewal)."""
    pull = OrderedPull(nc, js, stream, subject, max_batch=max_batch,
                       config=lambda _seq: config, request_timeout=request_timeout,
                       expires_s=expires_s)
    await pull.open(config.opt_start_seq or 1)
    try:
        while True:
            batch = await pull.next(expires_s)
            if batch is not None:
                yield batch
    finally:
        await pull.close()
