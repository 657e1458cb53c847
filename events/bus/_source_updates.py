"""The sync's side of a sources-only stream change: a request to the source keeper
(events.bus.source_keeper), which alone may update the stream.

    meshlog.sources.update.<zone>.<stream>    payload `{"sources": [<nats-server source config>...],
                                       "allow_msg_ttl": true}` (the latter optional); reply
                                       `{"changed": bool}` (200) or `{"error": ...}` (400, 500)

`<zone>` is the asker's own (global's: `_global`), and the sync role may ask only its own:
core subjects cross the leafnode (one account on both sides), so without it a zone's request
reaches global's keeper (or another zone's) when its own has none, and changes that stream.

nats-server applies a `STREAM.UPDATE` whole, so a user allowed it may change any of the
stream's settings; the sync role is allowed only this request (events.bus.permissions), and
the keeper changes nothing but the sources (docs/security.md, The multi-zone sync's NATS user).

When no keeper serves the stream (NATS "no responders"), the asker updates the stream itself:
that works only for a user allowed to (admin, or a NATS without users), never the sync role.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js.api import StreamSource

from events.bus.requests import ServiceUnavailable, request
from events.errors import EventLogUnavailable

__all__ = ["SOURCES_PREFIX", "SOURCES_QUEUE", "SourcesUpdate", "sources_subject",
           "update_sources"]

SOURCES_PREFIX = "meshlog.sources.update"
SOURCES_QUEUE = "meshlog-sources"
_TIMEOUT_S = 10.0
"""The keeper reads and updates the stream (each up to 5 s)."""


class SourcesUpdate(msgspec.Struct, frozen=True, kw_only=True):
    sources: list[dict[str, object]]
    allow_msg_ttl: bool = False
    """Turn on the stream's per-message TTL too (the zone-insights stream only; it can be
    turned on, never off)."""


def sources_subject(zone: str, stream: str) -> str:
    """The request subject of the keeper of `zone`'s control plane (`_global` on global)."""
    return f"{SOURCES_PREFIX}.{zone}.{stream}"


async def update_sources(nc: NATS, stream: str, sources: Sequence[StreamSource], *,
                         zone: str, allow_msg_ttl: bool = False) -> bool:
    """Ask `zone`'s source keeper to make `stream`'s sources exactly `sources` (and nothing else);
    True when the stream changed. Raise `EventLogUnavailable` when no keeper answers or it
    refuses (the reason named)."""
    subject = sources_subject(zone, stream)
    body = msgspec.json.encode(SourcesUpdate(
        sources=[source.as_dict() for source in sources], allow_msg_ttl=allow_msg_ttl))
    try:
        reply = await request(nc, subject, body, timeout_s=_TIMEOUT_S)
    except ServiceUnavailable as exc:
        if not isinstance(exc.__cause__, nats.errors.NoRespondersError):
            raise EventLogUnavailable(
                f"cannot set the sources of stream {stream}: {exc}") from exc
        # no keeper serves it: this user's own update, which only a user allowed it makes
        # (admin, a NATS without users, a test's own stream); the sync role is refused
        await _update_directly(nc, stream, sources, zone=zone, allow_msg_ttl=allow_msg_ttl)
        return True
    try:
        answer = msgspec.json.decode(reply.body)
    except msgspec.DecodeError:
        answer = {}
    if reply.status != 200 or not isinstance(answer, dict) or "changed" not in answer:
        error = answer.get("error") if isinstance(answer, dict) else None
        raise EventLogUnavailable(f"cannot set the sources of stream {stream}: the source "
                                  f"keeper answered {reply.status}: {error or reply.body!r}")
    return bool(answer["changed"])


async def _update_directly(nc: NATS, stream: str, sources: Sequence[StreamSource], *,
                           zone: str, allow_msg_ttl: bool) -> None:
    js = nc.jetstream(timeout=_TIMEOUT_S / 2)
    try:
        config = (await js.stream_info(stream)).config
        config.sources = list(sources)
        if allow_msg_ttl:
            config.allow_msg_ttl = True
        await js.update_stream(config)
    except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
        raise EventLogUnavailable(
            f"cannot set the sources of stream {stream}: no source keeper answers on "
            f"{sources_subject(zone, stream)} (it runs with the admin user's seed: `meshlog up`, "
            f"`meshlog projector --admin-creds`), and this user's own update failed: {exc!r}"
        ) from exc
