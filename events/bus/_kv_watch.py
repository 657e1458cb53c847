"""Watching a KV bucket with each entry's headers (nats-py's `KeyValue.Entry` drops them).

The same consumer as nats-py's `KeyValue.watchall()` (an ordered push consumer on
`$KV.<bucket>.>`, last value per key first, then every update; a `None` marks the end of the
initial values), but each entry keeps its message's headers: the projection bus carries the
trace context of a published batch in the header of its checkpoint message (README, Tracing).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping

import nats.errors
from msgspec import Struct
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

_QUEUE = 256
"""Entries buffered before the consumer waits for the reader (as nats-py's KV watcher)."""
_INACTIVE_S = 300.0
_KV_OPERATION = "KV-Operation"


class KvEntry(Struct, frozen=True):
    key: str
    value: bytes | None
    """None: deleted or purged."""
    headers: Mapping[str, str]



async def watch_all(js: JetStreamContext, bucket: str, *, timeout_s: float
                    ) -> AsyncGenerator[KvEntry | None, None]:
    """Every key's last entry, then `None`, then every update, until the caller stops."""
    prefix = f"$KV.{bucket}."
    queue: asyncio.Queue[KvEntry | None] = asyncio.Queue(maxsize=_QUEUE)
    started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    initial_done = False

    async def on_msg(msg: Msg) -> None:
        nonlocal initial_done
        if not started.done():
            async with asyncio.timeout(timeout_s):
                await asyncio.shield(started)
        headers = dict(msg.headers or {})
        op = headers.get(_KV_OPERATION)
        await queue.put(KvEntry(key=msg.subject[len(prefix):],
                                value=None if op in ("DEL", "PURGE") else msg.data,
                                headers=headers))
        if msg.metadata.num_pending == 0 and not initial_done:
            initial_done = True
            await queue.put(None)

    sub = await js.subscribe(f"{prefix}>", stream=f"KV_{bucket}", cb=on_msg,
                             ordered_consumer=True,
                             deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
                             inactive_threshold=_INACTIVE_S)
    try:
        info = await sub.consumer_info()
        # Empty at the start: nothing pending and nothing sent, as the server counts it. Not
        # the client's count: on a cluster the consumer's leader may be another server than
        # ours, and its deliveries can arrive after this answer (then the last of them ends
        # the initial values, in `on_msg`).
        sent = info.delivered.consumer_seq if info.delivered is not None else 0
        if not initial_done and info.num_pending == 0 and sent == 0:
            initial_done = True
            await queue.put(None)
        started.set_result(None)
        while True:
            yield await queue.get()
    finally:
        if not started.done():
            started.cancel()
        try:
            await sub.unsubscribe()
        except (nats.errors.ConnectionClosedError, nats.errors.BadSubscriptionError):
            pass
