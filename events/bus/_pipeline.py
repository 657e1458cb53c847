"""Pipelined JetStream publishing with acknowledgements that always resolve.

nats-py 2.16's `publish_async` fails to fail: its reply handler raises on a JetStream error
document instead of failing the future, so a rejected publish never resolves. Here each
message gets its own reply subject on one inbox subscription; each reply (a PubAck or an
error document) resolves that message's future with the parsed document.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import nats.aio.msg
from nats.aio.client import Client as NATS

from events.errors import EventLogUnavailable

__all__ = ["AckPipeline"]


class AckPipeline:
    """Publishes with a reply subject per message on one inbox subscription; each reply
    (a JetStream PubAck or error document) resolves that message's future."""

    def __init__(self, nc: NATS, prefix: str) -> None:
        self._nc = nc
        self._prefix = prefix
        self._futures: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._next = 0

    @classmethod
    async def open(cls, nc: NATS) -> AckPipeline:
        pipeline = cls(nc, nc.new_inbox())
        await nc.subscribe(f"{pipeline._prefix}.*", cb=pipeline._on_reply)
        return pipeline

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str]
                      ) -> asyncio.Future[dict[str, Any]]:
        self._next += 1
        token = str(self._next)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._futures[token] = future
        await self._nc.publish(subject, payload, reply=f"{self._prefix}.{token}",
                               headers=headers)
        return future

    async def _on_reply(self, msg: nats.aio.msg.Msg) -> None:
        future = self._futures.pop(msg.subject.rpartition(".")[2], None)
        if future is None or future.done():
            return
        if msg.headers and msg.headers.get("Status") == "503":
            future.set_exception(EventLogUnavailable("no JetStream stream answered"))
            return
        try:
            future.set_result(json.loads(msg.data))
        except ValueError as exc:
            future.set_exception(EventLogUnavailable(f"unreadable JetStream ack: {exc}"))
