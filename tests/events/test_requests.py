"""Request/reply over a real nats-server: one responder of a queue group answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NATS

from events import InvalidResource
from events.bus.requests import (
    Reply,
    ServiceUnavailable,
    request,
    serve_requests,
    xds_config_subject,
)


@pytest.fixture
async def responder(nc: NATS) -> AsyncIterator[list[bytes]]:
    seen: list[bytes] = []

    async def handle(payload: bytes) -> Reply:
        seen.append(payload)
        if payload == b"boom":
            raise RuntimeError("handler failed")
        return Reply(200, b'{"echo": "' + payload + b'"}')

    task = asyncio.create_task(serve_requests(nc, "t.>", "q", handle))
    await nc.flush()
    try:
        yield seen
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_request_gets_the_handlers_reply_and_status(nc: NATS, responder: list[bytes]
                                                          ) -> None:
    reply = await request(nc, "t.a", b"hi", timeout_s=5)
    assert reply == Reply(200, b'{"echo": "hi"}')
    assert responder == [b"hi"]


async def test_a_failing_handler_answers_500_and_keeps_serving(nc: NATS,
                                                               responder: list[bytes]) -> None:
    reply = await request(nc, "t.a", b"boom", timeout_s=5)
    assert reply.status == 500
    assert b"RuntimeError: handler failed" in reply.body
    assert (await request(nc, "t.b", b"again", timeout_s=5)).status == 200


async def test_no_responder_is_service_unavailable(nc: NATS) -> None:
    with pytest.raises(ServiceUnavailable, match=r"nobody serves t\.x"):
        await request(nc, "t.x", b"", timeout_s=5)


def test_subject_escapes_dots_and_refuses_wildcards() -> None:
    assert xds_config_subject("default", "web.1") == "meshlog.xds.config.default.web_1"
    with pytest.raises(InvalidResource, match="name: '>' cannot be part of a NATS subject"):
        xds_config_subject("default", ">")
