"""The reader's frames taken off nats-py's parser (`events.bus._wire.Dispatch`), byte by byte.

nats-py's real parser and client, not connected: the protocol bytes a server would send are
fed to the hooked `parse` in chunks cut at every position, as a socket may cut them. The
reader's sink must get exactly its frames, in order and whole, and everything else (another
subscription's messages, `+OK`, a message without headers) must reach nats-py as it would
without the hook."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client as NATS
from nats.errors import ProtocolError

from events.bus._wire import Dispatch

_READER_SID = 7
_OTHER_SID = 9


def _hmsg(sid: int, subject: bytes, reply: bytes, headers: bytes, payload: bytes) -> bytes:
    reply_arg = b" " + reply if reply else b""
    return (b"HMSG %s %d%s %d %d\r\n" % (subject, sid, reply_arg, len(headers),
                                          len(headers) + len(payload))
            + headers + payload + b"\r\n")


def _msg(sid: int, subject: bytes, payload: bytes) -> bytes:
    return b"MSG %s %d %d\r\n" % (subject, sid, len(payload)) + payload + b"\r\n"


_HEADERS = b"NATS/1.0\r\nNats-Msg-Id: m1\r\nMeshlog-Schema: 1\r\n\r\n"
_STATUS = b"NATS/1.0 408 Request Timeout\r\nNats-Pending-Bytes: 12\r\n\r\n"
_ACK = b"$JS.ACK.meshlog_events.c.1.%d.%d.1700000000000000000.%d"


def _stream() -> tuple[bytes, list[tuple[bytes, bytes, bytes, bytes | None]]]:
    """Protocol bytes as a server sends them, and what the reader's sink must get from them."""
    wire = b""
    expected: list[tuple[bytes, bytes, bytes, bytes | None]] = []
    for seq in range(1, 6):
        reply = _ACK % (seq, seq, 5 - seq)
        payload = b'{"event":"mesh.applied","n":%d}' % seq * seq  # sizes differ
        wire += _hmsg(_READER_SID, b"ev.m%d" % seq, reply, _HEADERS, payload)
        expected.append((b"ev.m%d" % seq, reply, payload, _HEADERS))
        if seq == 2:
            wire += _msg(_OTHER_SID, b"_INBOX.other", b"for nats-py") + b"+OK\r\n"
        if seq == 3:
            wire += _hmsg(_OTHER_SID, b"_INBOX.other", b"", _HEADERS, b"also nats-py's")
    # a status message: headers only, no payload, no reply
    wire += _hmsg(_READER_SID, b"_INBOX.reader", b"", _STATUS, b"")
    expected.append((b"_INBOX.reader", b"", b"", _STATUS))
    return wire, expected


async def _feed(chunks: list[bytes]) -> tuple[list[tuple[bytes, bytes, bytes, bytes | None]],
                                               list[tuple[int, bytes, bytes]], NATS]:
    nc = NATS()
    others: list[tuple[int, bytes, bytes]] = []

    async def nats_py_process_msg(sid: int, subject: bytes, reply: bytes, data: bytes,
                                  headers: bytes | None) -> None:
        others.append((sid, subject, data))

    # what nats-py does with another subscription's message, seen (installed before the hook,
    # which keeps the method it finds as nats-py's)
    nc._process_msg = nats_py_process_msg  # type: ignore[method-assign]
    got: list[tuple[bytes, bytes, bytes, bytes | None]] = []
    dispatch = Dispatch.of(nc)
    dispatch.sinks[_READER_SID] = lambda *frame: got.append(frame)
    for chunk in chunks:
        await nc._ps.parse(chunk)
    return got, others, nc


async def test_every_cut_of_the_stream_gives_the_same_frames() -> None:
    wire, expected = _stream()
    for cut in range(1, len(wire)):
        for second in (cut, min(cut + 37, len(wire))):  # one cut, and two close together
            chunks = [wire[:cut], wire[cut:second], wire[second:]]
            got, others, nc = await _feed([c for c in chunks if c])
            assert got == expected, f"cut at {cut}, {second}"
            assert others == [(_OTHER_SID, b"_INBOX.other", b"for nats-py"),
                              (_OTHER_SID, b"_INBOX.other", b"also nats-py's")]
            assert not nc._ps.buf, f"cut at {cut}, {second}: {bytes(nc._ps.buf)!r} left"
            assert nc.stats["in_msgs"] == len(expected)  # the others count in nats-py's own
            assert nc.stats["in_bytes"] == sum(len(f[2]) for f in expected)


async def test_a_big_frame_in_small_chunks_is_given_once_whole() -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB, with CR and LF bytes inside
    wire = _hmsg(_READER_SID, b"ev.big", _ACK % (1, 1, 0), _HEADERS, payload) * 2
    got, _, nc = await _feed([wire[i:i + 32768] for i in range(0, len(wire), 32768)])
    assert got == [(b"ev.big", _ACK % (1, 1, 0), payload, _HEADERS)] * 2
    assert not nc._ps.buf


async def test_a_reset_parser_does_not_wait_for_the_frame_it_dropped() -> None:
    """A reconnect resets nats-py's parser (a new, empty buffer): a frame the fast path was
    waiting to be whole is gone with the old connection, and what the new one sends is read
    at once."""
    wire, expected = _stream()
    first = _hmsg(_READER_SID, b"ev.lost", b"", _HEADERS, b"x" * 10_000)
    got, _, nc = await _feed([first[:5_000]])
    assert got == []
    nc._ps.reset()
    for chunk in (wire[:100], wire[100:]):
        await nc._ps.parse(chunk)
    assert got == expected


async def test_what_the_fast_path_cannot_read_is_left_to_nats_py_as_it_is() -> None:
    """A control line the fast path cannot read is nats-py's, which then does exactly what it
    does without the hook (its own regular expressions, its own errors)."""
    for bad in (b"HMSG ev 7 x 10\r\n0123456789\r\n",  # header size not a number
                b"HMSG ev 7 20 10\r\n0123456789\r\n",  # headers longer than the message
                b"HMSG ev 7 10\r\n0123456789\r\n",  # a size missing
                b"HMSG ev 7 1 2 3 4 5\r\nxx\r\n"):  # too many
        plain, hooked = NATS(), NATS()
        outcomes = []
        for nc in (plain, hooked):
            seen: list[tuple[int, bytes, bytes]] = []

            async def process_msg(sid: int, subject: bytes, reply: bytes, data: bytes,
                                  headers: bytes | None,
                                  seen: list[tuple[int, bytes, bytes]] = seen) -> None:
                seen.append((sid, subject, data))

            nc._process_msg = process_msg  # type: ignore[method-assign]
            if nc is hooked:
                def sink(subject: bytes, reply: bytes, data: bytes, headers: bytes | None,
                         seen: list[tuple[int, bytes, bytes]] = seen) -> None:
                    seen.append((_READER_SID, subject, data))

                Dispatch.of(nc).sinks[_READER_SID] = sink
            try:
                await asyncio.wait_for(nc._ps.parse(bad), 5)
                error = None
            except ProtocolError as exc:
                error = type(exc)
            outcomes.append((seen, error, bytes(nc._ps.buf), nc._ps.state, nc._ps.needed))
        assert outcomes[0] == outcomes[1], bad


async def test_after_another_operation_the_readers_frames_come_the_fast_way_again() -> None:
    """An operation that is not the reader's (here `+OK`) sends the rest of its chunk through
    nats-py, whose parser may then take the control line of a frame not whole yet; that
    frame is finished the fast way, so only that chunk goes nats-py's way, not every one after
    it."""
    frames = [_hmsg(_READER_SID, b"ev.%d" % i, _ACK % (i, i, 0), _HEADERS, b"x" * (100 + i % 800))
              for i in range(2_000)]
    wire = b"".join(f + (b"+OK\r\n" if i % 500 == 499 else b"") for i, f in enumerate(frames))
    chunk = 32768
    nc = NATS()
    got: list[bytes] = []
    dispatch = Dispatch.of(nc)
    dispatch.sinks[_READER_SID] = lambda subject, *_: got.append(subject)
    slow = 0
    hooked = nc._process_msg

    async def counted(*args: object) -> None:
        nonlocal slow
        slow += 1
        await hooked(*args)  # type: ignore[arg-type]

    nc._process_msg = counted  # type: ignore[method-assign,assignment]
    for i in range(0, len(wire), chunk):
        await nc._ps.parse(wire[i:i + chunk])
    assert got == [b"ev.%d" % i for i in range(2_000)]
    per_chunk = chunk // min(len(f) for f in frames) + 1
    assert slow <= 4 * per_chunk, f"{slow} frames went nats-py's way"
