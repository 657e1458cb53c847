"""Multi-zone sync on JetStream's own mechanism: stream sources across JetStream domains.

Every control plane's nats-server has its own JetStream domain (a zone's name, or `global`);
zones join global's server as leafnodes (reference/multizone.md §4). Each event stream takes
only its own control plane's subjects (`meshlog.ev.<zone>.>`, global `meshlog.ev._global.>`,
since plain subjects flow across leafnodes and a stream with overlapping subjects would store
another's publishes) and sources the others':

    global  <- each zone Z's stream, filter `meshlog.ev.Z.>`           (api `$JS.Z.API`)
    zone Z  <- global's stream, filter `meshlog.ev._global.>`          (api `$JS.global.API`)
            <- global's stream, filter `meshlog.ev.Y.>`, each other zone Y (zone to zone
               through global; never Z's own back)

A sourced message keeps its subject (so `events.provenance_of` still names who wrote it), its
`Nats-Msg-Id` (made unique across zones by the command path) and gets the next sequence of
the sourcing stream, so each log stays gapless. nats-server resumes a source after a cut from
the last origin sequence it stored (`Nats-Stream-Source` header); JetStream's own flow
control, heartbeats and retries carry it: meshlog only says which sources a stream has.

`restart_sources` makes nats-server set sources up again at once (services.runtime._source_nudge
uses it when a link comes back: nats-server's own retry of a failed source waits out a 30 s
consumer-create timeout and then a 5 s x 2 x failures backoff, and no stream update with an
unchanged source restarts it).

`source_states` reads each source's `lag` and `active` from the stream's info (raw JSON: nats-py
2.16's StreamSourceInfo drops the filter and the external API). During a cut `lag` stays 0 and
`active` (time since the source last heard from its upstream) grows (reference §4): staleness
is judged by `active`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

import nats.errors
import nats.js.errors
from msgspec import Struct
from nats.aio.client import Client as NATS
from nats.js.api import ExternalStream, StreamSource

from events.bus._source_updates import update_sources
from events.errors import EventLogUnavailable
from events.subjects import EVENTS_STREAM, GLOBAL_ZONE

__all__ = ["GLOBAL_DOMAIN", "SourceSpec", "SourceState", "ensure_sources", "global_sources",
           "restart_sources", "source_states", "stream_install", "upstream_answers",
           "zone_filter", "zone_sources"]

GLOBAL_DOMAIN = "global"
"""The JetStream domain of the global control plane's nats-server (a zone may not take this
name)."""
_TIMEOUT_S = 5.0


class SourceSpec(Struct, frozen=True, order=True):
    filter_subject: str
    api: str
    """The upstream's JetStream API prefix, `$JS.<domain>.API`."""


class SourceState(Struct, frozen=True):
    filter_subject: str
    api: str
    lag: int
    """Messages the upstream had that were not yet sourced, when last known."""
    active_ms: int | None
    """Since the source last heard from its upstream; None: never."""
    error: str | None = None
    name: str = ""
    """The upstream stream's name."""


def zone_filter(zone: str) -> str:
    """What control plane `zone` (`GLOBAL_ZONE` for global) writes."""
    return f"meshlog.ev.{zone}.>"


def _api(domain: str) -> str:
    return f"$JS.{domain}.API"


def global_sources(zones: Iterable[str]) -> list[SourceSpec]:
    """The sources of global's stream: each registered zone's own subjects."""
    return sorted(SourceSpec(zone_filter(zone), _api(zone)) for zone in set(zones))


def zone_sources(zone: str, zones: Iterable[str]) -> list[SourceSpec]:
    """The sources of `zone`'s stream: global's own subjects and, from global's stream, each
    other zone's."""
    specs = {SourceSpec(zone_filter(GLOBAL_ZONE), _api(GLOBAL_DOMAIN))}
    specs |= {SourceSpec(zone_filter(other), _api(GLOBAL_DOMAIN)) for other in zones
              if other != zone}
    return sorted(specs)


async def ensure_sources(nc: NATS, wanted: Sequence[SourceSpec], *, zone: str,
                         stream: str = EVENTS_STREAM) -> bool:
    """Make `stream` source exactly `wanted` (adding and removing sources, keeping the ones
    it has: nats-server keeps each one's position); True when it changed. The change is
    asked of `zone`'s source keeper (`_global` on global; events.bus.source_keeper: the sync
    role may not update the stream itself); `STREAM.INFO` of `stream` is the caller's own."""
    js = nc.jetstream(timeout=_TIMEOUT_S)
    try:
        info = await js.stream_info(stream)
        config = info.config
        have = [(s, _spec(s)) for s in config.sources or []]
        want = set(wanted)
        kept = [source for source, spec in have if spec in want]
        added = sorted(want - {spec for _, spec in have})
        if len(kept) == len(have) and not added:
            return False
        sources = kept + [
            StreamSource(name=stream, filter_subject=spec.filter_subject,
                         external=ExternalStream(api=spec.api)) for spec in added]
    except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
        raise EventLogUnavailable(f"cannot set the sources of stream {stream}: {exc!r}") from exc
    await update_sources(nc, stream, sources, zone=zone)
    return True


async def restart_sources(nc: NATS, specs: Iterable[SourceSpec], *, zone: str,
                          stream: str = EVENTS_STREAM) -> list[SourceSpec]:
    """Make nats-server set up again at once those of `stream`'s sources that are in `specs`
    (the ones it restarted): one update without them, one with them back as they were. A source
    added is set up without a backoff, and resumes after the last origin sequence the stream
    holds (nats-server finds it in the stream's `Nats-Stream-Source` headers, scanning
    backwards; newer releases may keep it per source too), so nothing is sourced twice or
    skipped; nats-server ignores an update that keeps a source unchanged, so there is no
    one-update way. When the second update fails the source is missing until `ensure_sources`
    adds it back (the sync's next step). Both updates are asked of the source keeper, as
    `ensure_sources`'."""
    want = set(specs)
    js = nc.jetstream(timeout=_TIMEOUT_S)
    try:
        config = (await js.stream_info(stream)).config
        have = list(config.sources or [])
        restarted = [s for s in have if _spec(s) in want]
        if not restarted:
            return []
    except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
        raise EventLogUnavailable(
            f"cannot restart the sources of stream {stream}: {exc!r}") from exc
    await update_sources(nc, stream, [s for s in have if _spec(s) not in want], zone=zone)
    await update_sources(nc, stream, have, zone=zone)
    return sorted(_spec(s) for s in restarted)


def _spec(source: StreamSource) -> SourceSpec:
    return SourceSpec(source.filter_subject or "",
                      source.external.api if source.external else "")


async def upstream_answers(nc: NATS, api: str, stream: str, *, timeout_s: float = 1.0
                           ) -> bool:
    """Whether the JetStream API `api` (`$JS.<domain>.API`) answers, here for the info of its
    `stream`: the link to that nats-server is up. Any answer counts, an error too (no such
    stream)."""
    try:
        await nc.request(f"{api}.STREAM.INFO.{stream}", b"", timeout=timeout_s)
    except (nats.errors.Error, TimeoutError):
        return False
    return True


async def stream_install(nc: NATS, *, stream: str = EVENTS_STREAM) -> str:
    """Which install of this control plane's `stream` this is: its creation time as
    nats-server reports it (`created`, RFC 3339), which a data dir made afresh changes. A
    zone registers with it (`ZoneCommands.register`)."""
    try:
        reply = await nc.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=_TIMEOUT_S)
        info = json.loads(reply.data)
    except (nats.errors.Error, TimeoutError, ValueError) as exc:
        raise EventLogUnavailable(f"cannot read stream {stream}: {exc!r}") from exc
    created = info.get("created") if isinstance(info, dict) else None
    if not isinstance(created, str) or "error" in info:
        raise EventLogUnavailable(f"cannot read stream {stream}'s creation time: {info!r}")
    return created


async def source_states(nc: NATS, *, stream: str = EVENTS_STREAM) -> list[SourceState]:
    """What nats-server knows of each source of `stream`."""
    try:
        reply = await nc.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=_TIMEOUT_S)
    except (nats.errors.Error, TimeoutError) as exc:
        raise EventLogUnavailable(f"cannot read stream {stream}: {exc!r}") from exc
    info = json.loads(reply.data)
    if "error" in info:
        raise EventLogUnavailable(f"cannot read stream {stream}: {info['error']}")
    states = []
    for source in info.get("sources") or []:
        active = source.get("active", -1)
        error = source.get("error")
        states.append(SourceState(
            filter_subject=source.get("filter_subject", ""),
            api=(source.get("external") or {}).get("api", ""),
            name=str(source.get("name", "")),
            lag=int(source.get("lag", 0)),
            active_ms=None if active is None or active < 0 else int(active) // 1_000_000,
            error=None if not error else str(error.get("description", error))))
    return states
