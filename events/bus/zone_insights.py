"""The zones' proxy insights on global, carried by JetStream stream sources.

Kuma syncs each zone's DataplaneInsights to global (KDS ZoneToGlobal, reference/multizone.md
§1). A zone's insights are observations its gateways keep in its own `meshlog_insights` bucket
(events.bus.insights), in its own JetStream domain, never in the log. Global keeps one bucket,
`meshlog_zone_insights`, that sources every registered zone's bucket over the leafnode link
(`$JS.<zone>.API`), each through a subject transform

    $KV.meshlog_insights.>   ->   $KV.meshlog_zone_insights.<zone>.>

so a zone's key `proxy.<mesh>.<name>` (`gateway.<instance>`) is `<zone>.proxy.<mesh>.<name>`
there: its last value, deletes included (a sourced message keeps its `KV-Operation` header),
read like any bucket. The sourcing is nats-server's (the same mechanism as the event stream's,
events.bus.sources): meshlog only says which sources the bucket has, and copies nothing.

Why this and not a read of the zone's bucket through the link: over a cut link such a read
has nothing to show, while the sourced copy keeps the zone's last known insights, whose age
the source's `active` says (`source_states`). A bucket per zone would do the same with one
stream per zone; one bucket keeps a single scan per list page and one stream to configure.

The bucket holds one value per key (`max_msgs_per_subject` 1, as the zones' do): older values
of a key are compacted away, and nats-server 2.15 resumes a source from its persisted state,
not from the messages left (reference §4).

A deleted zone's insights go with it, as Kuma deletes a zone's insights with the zone
(`forget_zone_insights`, called by global's sync supervisor, services.runtime.zone_sync):
first its source is removed (`ensure_zone_insight_sources`), so nats-server stops the
source's consumer and nothing of the zone comes any more, then each of its keys (`<zone>.>`)
is purged with KV's own purge (a `KV-Operation: PURGE` message with `Nats-Rollup: sub`:
every earlier value of that key goes), skipped for a zone the bucket sources again by then.
A purge's marker lives `PURGE_MARKER_TTL_S` (per-message TTL, the stream's
`allow_msg_ttl`): readers see the key gone, then nothing is left of it. The removal also
dropped the source's persisted position, and the purge the messages that carried its
`Nats-Stream-Source` header, so a source of that zone added later (the zone registered
again) finds no position to resume from and copies the zone's bucket from its first message
(`opt_start_seq` 1, `zone_insights_source`): every key the zone holds now, none of an
earlier install. A zone installed afresh under its name without being deleted is found by its
bucket's creation time (`install_of`, asked over the link, against the one recorded under
`<zone>.install` here) and purged the same way, its source then added back. Why purges of
keys and not `STREAM.PURGE` with the zone's subject filter: nats-server grants by subject, and
a stream purge's filter is in the request's body, so the sync could then purge every zone's
copy; a key's purge is a publish to that key's subject, and the sync's grant of
`$KV.meshlog_zone_insights.>` (events.bus.permissions) reaches no other stream.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js.api import (
    DiscardPolicy,
    ExternalStream,
    StorageType,
    StreamConfig,
    StreamSource,
    SubjectTransform,
)

from events.bus._kv import await_stream_leader
from events.bus._source_updates import update_sources
from events.bus.insights import BUCKET as INSIGHTS_BUCKET
from events.errors import EventLogUnavailable
from events.subjects import GLOBAL_ZONE

__all__ = [
    "PURGE_MARKER_TTL_S",
    "ZONE_INSIGHTS_BUCKET",
    "ZONE_INSIGHTS_STREAM",
    "ensure_zone_insight_sources",
    "forget_zone_insights",
    "held_zones",
    "install_of",
    "record_install",
    "recorded_install",
    "zone_insights_source",
    "zone_of_api",
]

ZONE_INSIGHTS_BUCKET = "meshlog_zone_insights"
ZONE_INSIGHTS_STREAM = f"KV_{ZONE_INSIGHTS_BUCKET}"
PURGE_MARKER_TTL_S = 600
"""How long the marker of a purged key stays: a reader in the middle of a scan sees the key
purged; nothing needs the marker afterwards (no source of that zone is left to write the key
again, and a source added later copies the zone's bucket from its start)."""
_TIMEOUT_S = 5.0
_PURGES_AT_ONCE = 64
"""Purges in flight at once (each a publish and its ack)."""
_STREAM_NOT_FOUND = 10059


def zone_insights_source(zone: str) -> StreamSource:
    """The source of zone `zone`'s insights bucket, its keys prefixed with `<zone>.`, from
    the zone's first message when nats-server knows no position to resume from: without
    `opt_start_seq`, a source added to a stream that lost its first messages (this bucket
    always has: one value per key) starts at the time of the stream's last message, so a
    zone registered again would get only the keys it writes from then on."""
    return StreamSource(
        name=f"KV_{INSIGHTS_BUCKET}", external=ExternalStream(api=f"$JS.{zone}.API"),
        opt_start_seq=1,
        subject_transforms=[SubjectTransform(
            src=f"$KV.{INSIGHTS_BUCKET}.>", dest=f"$KV.{ZONE_INSIGHTS_BUCKET}.{zone}.>")])


def zone_of_api(api: str) -> str | None:
    """The zone whose JetStream API prefix is `api` (`$JS.<zone>.API`), if it is one."""
    parts = api.split(".")
    return parts[1] if len(parts) == 3 and parts[0] == "$JS" and parts[2] == "API" else None


def _key(source: StreamSource) -> tuple[str, str]:
    transforms = source.subject_transforms or []
    return (source.external.api if source.external else "",
            transforms[0].dest if len(transforms) == 1 else "")


async def ensure_zone_insight_sources(nc: NATS, zones: Iterable[str], *, replicas: int = 1
                                      ) -> bool:
    """Make global's zone-insights bucket (created if missing, at `replicas`, with per-message
    TTL allowed) source exactly each of `zones`' insights bucket; True when it changed. The
    sync role's grant (`events.bus.permissions`: `STREAM.INFO` and `STREAM.CREATE` of this
    bucket's stream; a change of an existing one's sources is asked of the source keeper,
    events.bus.source_keeper)."""
    wanted = {_key(s): s for s in (zone_insights_source(z) for z in sorted(set(zones)))}
    js = nc.jetstream(timeout=_TIMEOUT_S)
    try:
        try:
            config = (await js.stream_info(ZONE_INSIGHTS_STREAM)).config
        except nats.js.errors.NotFoundError:
            # the stream nats-py's `create_key_value` makes for history 1, with sources
            await js.add_stream(StreamConfig(
                name=ZONE_INSIGHTS_STREAM, subjects=[f"$KV.{ZONE_INSIGHTS_BUCKET}.>"],
                allow_direct=True, allow_rollup_hdrs=True, deny_delete=True,
                discard=DiscardPolicy.NEW, duplicate_window=120, max_consumers=-1,
                max_msgs=-1, max_msgs_per_subject=1, num_replicas=replicas,
                storage=StorageType.FILE, allow_msg_ttl=True,
                sources=list(wanted.values()) or None))
            await await_stream_leader(js, ZONE_INSIGHTS_STREAM)
            return True
        have = config.sources or []
        kept = [s for s in have if _key(s) in wanted]
        added = [s for key, s in wanted.items() if key not in {_key(h) for h in have}]
        # a bucket an earlier release made has no per-message TTL: turned on here (it can
        # be turned on, never off), for the purges' markers (`forget_zone_insights`)
        if len(kept) == len(have) and not added and config.allow_msg_ttl:
            return False
    except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
        raise EventLogUnavailable(
            f"cannot set the sources of stream {ZONE_INSIGHTS_STREAM}: {exc!r}") from exc
    await update_sources(nc, ZONE_INSIGHTS_STREAM, kept + added, zone=GLOBAL_ZONE,
                         allow_msg_ttl=True)
    return True


async def held_zones(nc: NATS) -> set[str]:
    """The zones global's bucket holds a key of (a value, or a purge's marker not yet
    expired); none while there is no bucket."""
    try:
        subjects = await _subjects(nc, f"$KV.{ZONE_INSIGHTS_BUCKET}.*.>")
    except _NoBucket:
        return set()
    return {_zone_of(subject) for subject in subjects}


async def forget_zone_insights(nc: NATS, zones: Iterable[str]) -> dict[str, int]:
    """Purge every key of each of `zones` from global's bucket (`<zone>.>`: its proxies'
    insights and its gateways' heartbeats), each purge's marker kept `PURGE_MARKER_TTL_S`;
    a zone the bucket still sources (registered again meanwhile, or another sync process
    added it back) is left alone, its source would write the keys again. Returns how many
    keys were purged per zone. The sync role's grant: `STREAM.INFO` of the bucket's stream
    and publishing to its keys' subjects (`$KV.meshlog_zone_insights.>`)."""
    wanted = set(zones)
    if not wanted:
        return {}
    try:
        info = await _stream_info(nc, {})
    except _NoBucket:
        return {}
    sourced = {zone for s in info.get("config", {}).get("sources") or []
               if (zone := zone_of_api((s.get("external") or {}).get("api", ""))) is not None}
    js = nc.jetstream(timeout=_TIMEOUT_S)
    try:
        kv = await js.key_value(ZONE_INSIGHTS_BUCKET)
    except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
        raise EventLogUnavailable(f"cannot open bucket {ZONE_INSIGHTS_BUCKET}: {exc!r}") from exc
    purged: dict[str, int] = {}
    prefix = f"$KV.{ZONE_INSIGHTS_BUCKET}."
    for zone in sorted(wanted - sourced):
        keys = [s.removeprefix(prefix) for s in await _subjects(nc, f"{prefix}{zone}.>")]
        for start in range(0, len(keys), _PURGES_AT_ONCE):
            try:
                await asyncio.gather(*(kv.purge(key, msg_ttl=PURGE_MARKER_TTL_S)
                                       for key in keys[start:start + _PURGES_AT_ONCE]))
            except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
                raise EventLogUnavailable(
                    f"cannot purge zone {zone!r}'s insights: {exc!r}") from exc
        purged[zone] = len(keys)
    return purged


async def install_of(nc: NATS, zone: str, *, timeout_s: float = 1.0) -> str | None:
    """Which install of `zone` answers now: when its insights bucket was made (its stream's
    `created`, asked through its domain over the link), which a fresh install, or the
    bucket made again, changes. None when the zone does not answer (link down) or has no
    bucket yet. The sync role's grant `$JS.*.API.STREAM.INFO.KV_meshlog_insights`."""
    try:
        reply = await nc.request(f"$JS.{zone}.API.STREAM.INFO.KV_{INSIGHTS_BUCKET}", b"",
                                 timeout=timeout_s)
        info = json.loads(reply.data)
    except (nats.errors.Error, TimeoutError, ValueError):
        return None
    created = info.get("created") if isinstance(info, dict) else None
    return created if isinstance(created, str) and "error" not in info else None


async def recorded_install(nc: NATS, zone: str) -> str | None:
    """The install of `zone` global's bucket holds the insights of (`install_of` when they
    were first copied), kept under `<zone>.install` (a zone writes only `proxy.` and
    `gateway.` keys, so its source never writes it; purged with the zone's keys)."""
    try:
        kv = await nc.jetstream(timeout=_TIMEOUT_S).key_value(ZONE_INSIGHTS_BUCKET)
        entry = await kv.get(_install_key(zone))
    except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
        return None
    except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
        raise EventLogUnavailable(f"cannot read zone {zone!r}'s install: {exc!r}") from exc
    return entry.value.decode() if entry.value else None


async def record_install(nc: NATS, zone: str, install: str) -> None:
    try:
        kv = await nc.jetstream(timeout=_TIMEOUT_S).key_value(ZONE_INSIGHTS_BUCKET)
        await kv.put(_install_key(zone), install.encode())
    except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
        raise EventLogUnavailable(f"cannot record zone {zone!r}'s install: {exc!r}") from exc


def _install_key(zone: str) -> str:
    return f"{zone}.install"


class _NoBucket(EventLogUnavailable):
    """Global's bucket does not exist (yet): the sync makes it at its first step."""


def _zone_of(subject: str) -> str:
    return subject.split(".", 3)[2]


async def _stream_info(nc: NATS, request: dict[str, Any]) -> dict[str, Any]:
    """The bucket's stream's info, nats-server's own answer (nats-py's has no paging)."""
    try:
        reply = await nc.request(f"$JS.API.STREAM.INFO.{ZONE_INSIGHTS_STREAM}",
                                 json.dumps(request).encode(), timeout=_TIMEOUT_S)
        info: dict[str, Any] = json.loads(reply.data)
    except (nats.errors.Error, TimeoutError, ValueError) as exc:
        raise EventLogUnavailable(f"cannot read stream {ZONE_INSIGHTS_STREAM}: {exc!r}") from exc
    error = info.get("error")
    if error:
        if error.get("err_code") == _STREAM_NOT_FOUND:
            raise _NoBucket(f"no stream {ZONE_INSIGHTS_STREAM} yet")
        raise EventLogUnavailable(f"cannot read stream {ZONE_INSIGHTS_STREAM}: {error}")
    return info


async def _subjects(nc: NATS, subjects_filter: str) -> list[str]:
    """Each subject matching `subjects_filter` the stream holds a message of, page by page
    (nats-server answers at most 100,000 a request)."""
    subjects: list[str] = []
    while True:
        info = await _stream_info(nc, {"subjects_filter": subjects_filter,
                                       "offset": len(subjects)})
        page = (info.get("state") or {}).get("subjects") or {}
        subjects.extend(page)
        if not page or len(subjects) >= int(info.get("total", 0)):
            return subjects
