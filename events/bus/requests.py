"""Request/reply over core NATS: questions one process asks whichever peer can answer.

The API asks a gateway for things only a gateway knows (the computed xDS of one proxy); any
gateway can answer (DESIGN.md invariant 7), so responders share a queue group and NATS hands
each request to one of them. Nothing here is durable: no responder, no answer, and the asker
gets `ServiceUnavailable` at once (NATS "no responders") or after its timeout.

    meshlog.xds.config.<mesh>.<name>     computed xDS of one proxy; payload `ProxyRef` JSON

A reply carries its status in the `Meshlog-Status` header (HTTP codes: 200, 400, 404, 500) and
a JSON body. A handler that raises is answered with 500 and the error; the loop goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import msgspec
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from events.errors import InvalidResource, TransientError, Violation

__all__ = [
    "XDS_CONFIG_QUEUE",
    "XDS_CONFIG_SUBJECTS",
    "ProxyRef",
    "Reply",
    "RequestHandler",
    "ServiceUnavailable",
    "request",
    "serve_requests",
    "xds_config_subject",
]

log = logging.getLogger("meshlog.requests")

XDS_CONFIG_PREFIX = "meshlog.xds.config"
XDS_CONFIG_SUBJECTS = f"{XDS_CONFIG_PREFIX}.>"
XDS_CONFIG_QUEUE = "meshlog-xds-config"
STATUS_HEADER = "Meshlog-Status"
_PENDING_MSGS = 1_000
"""Bound on requests queued in one responder (core NATS drops past it: the asker times out)."""


class ServiceUnavailable(TransientError):
    """Nobody answered: no responder subscribed, or none replied within the timeout."""


class ProxyRef(msgspec.Struct, frozen=True, omit_defaults=True):
    mesh: str
    name: str
    user_agent: str = ""
    """What the proxy's live node says (from its insight), so the config is computed as its
    stream computes it: a gRPC client gets its api_listeners, a DNS port its listener."""
    dns_port: int | None = None


class Reply(msgspec.Struct, frozen=True):
    status: int
    body: bytes
    """JSON."""


RequestHandler = Callable[[bytes], Awaitable[Reply]]
"""Request payload in, reply out."""


def xds_config_subject(mesh: str, name: str) -> str:
    """The subject to ask for one proxy's computed xDS. Routing only (the payload says which
    proxy): dots in names are written as `_` like event subjects; wildcards are refused."""
    bad = [Violation(field, f"{value!r} cannot be part of a NATS subject")
           for field, value in (("mesh", mesh), ("name", name))
           if not value or any(c in value for c in " *>\t\r\n")]
    if bad:
        raise InvalidResource("proxy reference", bad)
    return f"{XDS_CONFIG_PREFIX}.{mesh.replace('.', '_')}.{name.replace('.', '_')}"


async def serve_requests(nc: NATS, subject: str, queue: str, handler: RequestHandler) -> None:
    """Answer requests on `subject` (in queue group `queue`) until cancelled."""
    sub = await nc.subscribe(subject, queue=queue, pending_msgs_limit=_PENDING_MSGS)
    try:
        async for msg in sub.messages:
            await _answer(nc, msg, handler)
    finally:
        with contextlib.suppress(nats.errors.Error):
            await sub.unsubscribe()


async def _answer(nc: NATS, msg: Msg, handler: RequestHandler) -> None:
    if not msg.reply:
        return  # a publish, not a request: nobody to answer
    try:
        reply = await handler(msg.data)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("request on %s failed", msg.subject)
        reply = Reply(500, msgspec.json.encode({"error": f"{type(exc).__name__}: {exc}"}))
    try:
        await nc.publish(msg.reply, reply.body, headers={STATUS_HEADER: str(reply.status)})
    except nats.errors.Error as exc:
        log.warning("reply to a request on %s not sent: %r", msg.subject, exc)


async def request(nc: NATS, subject: str, payload: bytes, *, timeout_s: float) -> Reply:
    """Ask once; raise `ServiceUnavailable` if nobody answers within `timeout_s` seconds."""
    try:
        msg = await nc.request(subject, payload, timeout=timeout_s)
    except nats.errors.NoRespondersError as exc:
        raise ServiceUnavailable(f"nobody serves {subject} (no responders)") from exc
    except nats.errors.TimeoutError as exc:
        raise ServiceUnavailable(f"no answer on {subject} within {timeout_s:g} s") from exc
    except nats.errors.Error as exc:
        raise ServiceUnavailable(f"request on {subject} failed: {exc!r}") from exc
    status = (msg.headers or {}).get(STATUS_HEADER, "")
    try:
        return Reply(int(status), msg.data)
    except ValueError:
        raise ServiceUnavailable(f"reply on {subject} has no valid {STATUS_HEADER} header "
                                 f"(got {status!r})") from None
