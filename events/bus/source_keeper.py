"""The source keeper: applies the multi-zone sync's sources-only changes to a stream.

nats-server has no API that changes a stream's sources alone: `$JS.API.STREAM.UPDATE.<stream>`
takes the whole configuration, so a user allowed it may also change the stream's limits,
retention, subjects, or seal it, and the event log is the only truth. The sync role
(events.bus.permissions) is therefore not allowed it; it asks this keeper instead, over
core NATS request/reply (events.bus._source_updates):

    meshlog.sources.update.<zone>.MESHLOG_EVENTS              the event stream's sources
    meshlog.sources.update._global.KV_meshlog_zone_insights   global's zone-insights bucket's

`<zone>` is this control plane's (`_global` on global): core subjects cross the leafnode, so
a keeper serving a bare stream name would apply a zone's request to global's stream.

The keeper runs on a connection allowed to update those streams (the admin user's, in
`meshlog up`, or `meshlog projector --admin-creds`). For each request it reads the stream's
configuration as nats-server reports it, replaces only `sources` (and on the zone-insights
stream may turn `allow_msg_ttl` on, which cannot be turned off), and sends that back: every
other setting is the server's own, so nothing else can change. Each source asked for must be
one the sync itself would make, rebuilt here from its validated parts (no other field passes):

    event stream     name MESHLOG_EVENTS, filter `meshlog.ev.<zone>.>`; on global from api
                     `$JS.<zone>.API` (a zone's own subjects from its own domain), in a zone
                     from `$JS.global.API` (through global); never a filter the stream takes
                     as its own subjects, never its own domain (it would copy itself)
    zone insights    `zone_insights_source(<zone>)` exactly (events.bus.zone_insights)

A refused request is answered 400 with the field and the value; the stream is left as it was.
What a leaked sync seed can still do is what the sync is for: choose which zones are sourced
(docs/security.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from typing import Any

import msgspec
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.subscription import Subscription
from nats.js.api import ExternalStream, StreamSource

from events.bus._source_updates import SOURCES_QUEUE, SourcesUpdate, sources_subject
from events.bus.requests import STATUS_HEADER, Reply
from events.bus.zone_insights import ZONE_INSIGHTS_STREAM, zone_insights_source
from events.subjects import EVENTS_STREAM, GLOBAL_ZONE

__all__ = ["KEPT_STREAMS", "SourceRefused", "canonical_sources", "serve_source_updates"]

log = logging.getLogger("meshlog.sources")

KEPT_STREAMS = (EVENTS_STREAM, ZONE_INSIGHTS_STREAM)
_GLOBAL_DOMAIN = "global"  # events.bus.sources.GLOBAL_DOMAIN (which imports the client side)
_TOKEN = r"[^.*>\s]+"
_FILTER = re.compile(rf"meshlog\.ev\.({_TOKEN})\.>")
_API = re.compile(rf"\$JS\.({_TOKEN})\.API")
_TIMEOUT_S = 5.0
_PENDING_MSGS = 100
"""Requests queued in the keeper (one sync asks one at a time, per control plane)."""


class SourceRefused(ValueError):
    """A source the sync would not make."""


def _external_api(source: StreamSource, where: str) -> str:
    external = source.external
    if external is None or external.deliver:
        raise SourceRefused(f"{where}.external: {external!r}: only an `api` is allowed")
    match = _API.fullmatch(external.api or "")
    if match is None:
        raise SourceRefused(f"{where}.external.api: {external.api!r} is not $JS.<domain>.API")
    return match.group(1)


def _event_source(source: StreamSource, own: set[str], where: str) -> StreamSource:
    if source.name != EVENTS_STREAM:
        raise SourceRefused(f"{where}.name: {source.name!r}, only {EVENTS_STREAM} is allowed")
    match = _FILTER.fullmatch(source.filter_subject or "")
    if match is None:
        raise SourceRefused(f"{where}.filter_subject: {source.filter_subject!r} is not "
                            "meshlog.ev.<zone>.>")
    if source.filter_subject in own:
        raise SourceRefused(f"{where}.filter_subject: {source.filter_subject!r} is the "
                            "stream's own subjects")
    domain = _external_api(source, where)
    # global sources each zone from the zone's own domain, a zone everything through
    # global's: never its own domain (the stream would copy itself)
    on_global = f"meshlog.ev.{GLOBAL_ZONE}.>" in own
    upstream = match.group(1) if on_global else _GLOBAL_DOMAIN
    if domain != upstream or (domain == _GLOBAL_DOMAIN and on_global):
        raise SourceRefused(f"{where}.external.api: '$JS.{domain}.API' for "
                            f"{source.filter_subject!r} on {'global' if on_global else 'a zone'}"
                            f"'s stream; only '$JS.{upstream}.API'")
    if source.opt_start_seq or source.opt_start_time or source.subject_transforms \
            or source.consumer:
        raise SourceRefused(f"{where}: only name, filter_subject and external are allowed")
    return StreamSource(name=EVENTS_STREAM, filter_subject=source.filter_subject,
                        external=ExternalStream(api=f"$JS.{domain}.API"))


def _insights_source(source: StreamSource, where: str) -> StreamSource:
    zone = _external_api(source, where)
    wanted = zone_insights_source(zone)
    if zone == _GLOBAL_DOMAIN or _insights_key(source) != _insights_key(wanted):
        raise SourceRefused(f"{where}: {source.as_dict()!r} is not zone {zone!r}'s insights "
                            f"source {wanted.as_dict()!r}")
    return wanted


def _insights_key(source: StreamSource) -> tuple[object, ...]:
    return (source.name, source.filter_subject or "", source.opt_start_seq,
            source.opt_start_time, source.consumer,
            [(t.src, t.dest) for t in source.subject_transforms or []])


MAX_SOURCES = 1_000
"""The most sources a request may ask for: one per zone, and each is a consumer nats-server
makes on the zone's stream, so a leaked sync seed cannot load a stream with thousands."""
_SHOWN = 300
"""What a refusal shows, at most, of the item or value it names (in its reply and its log
line)."""


def _shown(item: object) -> str:
    return _cut(repr(item))


def _cut(text: str) -> str:
    return text if len(text) <= _SHOWN else f"{text[:_SHOWN]}... ({len(text)} characters)"


def canonical_sources(stream: str, raw: list[dict[str, Any]], own_subjects: list[str]
                      ) -> list[dict[str, object]]:
    """`raw` (nats-server source configs) rebuilt as the sync would make them; raise
    `SourceRefused` (naming the field and value) for one it would not."""
    kept: list[dict[str, object]] = []
    for index, item in enumerate(raw):
        where = f"sources[{index}]"
        if not isinstance(item, dict):
            raise SourceRefused(f"{where}: {_shown(item)} is not an object")
        try:
            source = StreamSource.from_response(dict(item))
        except (TypeError, ValueError, AttributeError) as exc:
            raise SourceRefused(f"{where}: {_shown(item)}: {exc}") from None
        try:
            if stream == EVENTS_STREAM:
                kept.append(_event_source(source, set(own_subjects), where).as_dict())
            else:
                kept.append(_insights_source(source, where).as_dict())
        except TypeError as exc:  # a field of the wrong type (a number for a subject)
            raise SourceRefused(f"{where}: {_shown(item)}: {exc}") from None
    return kept


async def _js_api(nc: NATS, subject: str, body: dict[str, Any] | None) -> dict[str, Any]:
    reply = await nc.request(subject, b"" if body is None else json.dumps(body).encode(),
                             timeout=_TIMEOUT_S)
    answer: dict[str, Any] = json.loads(reply.data)
    return answer


def _reply(status: int, **body: object) -> Reply:
    return Reply(status, msgspec.json.encode(body))


async def _apply(nc: NATS, stream: str, payload: bytes) -> Reply:
    try:
        update = msgspec.json.decode(payload, type=SourcesUpdate)
    except (msgspec.DecodeError, RecursionError) as exc:  # the latter: nested too deep
        return _reply(400, error=f"request: {exc}")
    if len(update.sources) > MAX_SOURCES:
        return _reply(400, error=f"sources: {len(update.sources)} sources, at most "
                                 f"{MAX_SOURCES} (one per zone)")
    if update.allow_msg_ttl and stream != ZONE_INSIGHTS_STREAM:
        return _reply(400, error=f"allow_msg_ttl: true is allowed on {ZONE_INSIGHTS_STREAM} "
                                 f"only, not {stream}")
    try:
        info = await _js_api(nc, f"$JS.API.STREAM.INFO.{stream}", None)
        if "error" in info:
            return _reply(500, error=f"stream {stream}: {info['error']}")
        config: dict[str, Any] = info["config"]
        own = list(config.get("subjects") or [])
        try:
            wanted = canonical_sources(stream, update.sources, own)
        except SourceRefused as exc:
            error = _cut(str(exc))
            log.warning("refused a change of stream %s's sources: %s", stream, error)
            return _reply(400, error=error)
        try:
            before = canonical_sources(stream, list(config.get("sources") or []), own)
        except SourceRefused:
            before = []  # one the sync would not make (added by hand): a change
        ttl_on = update.allow_msg_ttl and not config.get("allow_msg_ttl")
        if wanted == before and not ttl_on:
            # nats-server would keep every source as it is: no update (a restart of a
            # source is two requests, one without it)
            return _reply(200, changed=False)
        config["sources"] = wanted
        if ttl_on:
            config["allow_msg_ttl"] = True
        answer = await _js_api(nc, f"$JS.API.STREAM.UPDATE.{stream}", config)
    except (nats.errors.Error, TimeoutError, ValueError, KeyError) as exc:
        return _reply(500, error=f"stream {stream}: {exc!r}")
    if "error" in answer:
        return _reply(500, error=f"stream {stream}: {answer['error']}")
    log.info("stream %s now sources %s", stream, json.dumps(wanted))
    return _reply(200, changed=True)


async def serve_source_updates(nc: NATS, zone: str, ready: asyncio.Event | None = None
                               ) -> None:
    """Answer `zone`'s sync's (`_global` on global) sources-only changes of the event
    stream and of the zone-insights stream (in queue group `meshlog-sources`: one keeper
    answers each) until cancelled; set `ready` once the server has its subscriptions (a sync
    started after it finds it). `nc`: a connection allowed `STREAM.INFO` and `STREAM.UPDATE`
    of those streams (admin)."""
    subs = [(stream, await nc.subscribe(sources_subject(zone, stream), queue=SOURCES_QUEUE,
                                        pending_msgs_limit=_PENDING_MSGS))
            for stream in KEPT_STREAMS]
    try:
        await nc.flush(timeout=int(_TIMEOUT_S))
        if ready is not None:
            ready.set()
        async with asyncio.TaskGroup() as group:
            for stream, sub in subs:
                group.create_task(_serve(nc, stream, sub), name=f"source keeper {stream}")
    finally:
        for _, sub in subs:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()


async def _serve(nc: NATS, stream: str, sub: Subscription) -> None:
    async for msg in sub.messages:
        if not msg.reply:
            continue  # a publish, not a request: nobody to answer
        try:
            reply = await _apply(nc, stream, msg.data)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # one request fails, the keeper goes on
            log.exception("a change of stream %s's sources failed", stream)
            reply = _reply(500, error=f"{type(exc).__name__}: {exc}")
        try:
            await nc.publish(msg.reply, reply.body, headers={STATUS_HEADER: str(reply.status)})
        except nats.errors.Error as exc:
            log.warning("reply to a change of stream %s's sources not sent: %r", stream, exc)
