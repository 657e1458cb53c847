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

from events.errors import EventLogUnavailable
from events.subjects import EVENTS_STREAM, GLOBAL_ZONE

__all__ = ["GLOBAL_DOMAIN", "SourceSpec", "SourceState", "ensure_sources", "global_sources",
           "source_states", "zone_filter", "zone_sources"]

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


async def ensure_sources(nc: NATS, wanted: Sequence[SourceSpec], *,
                         stream: str = EVENTS_STREAM) -> bool:
    """Make `stream` source exactly `wanted` (adding and removing sources, keeping the ones
    it has: nats-server keeps each one's position); True when it changed. Needs the admin
    user's permissions (`$JS.API.STREAM.UPDATE`)."""
    js = nc.jetstream(timeout=_TIMEOUT_S)
    try:
        info = await js.stream_info(stream)
        config = info.config
        have = [(s, SourceSpec(s.filter_subject or "", s.external.api if s.external else ""))
                for s in config.sources or []]
        want = set(wanted)
        kept = [source for source, spec in have if spec in want]
        added = sorted(want - {spec for _, spec in have})
        if len(kept) == len(have) and not added:
            return False
        config.sources = kept + [
            StreamSource(name=stream, filter_subject=spec.filter_subject,
                         external=ExternalStream(api=spec.api)) for spec in added]
        await js.update_stream(config)
    except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
        raise EventLogUnavailable(f"cannot set the sources of stream {stream}: {exc!r}") from exc
    return True


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
            lag=int(source.get("lag", 0)),
            active_ms=None if active is None or active < 0 else int(active) // 1_000_000,
            error=None if not error else str(error.get("description", error))))
    return states
