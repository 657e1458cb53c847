"""Zones in Kuma's API shape: the zones registered on global, each with its insight.

    GET    /zones                    {"total", "items", "next"} of Zone
    GET    /zones/{name}             a Zone: {"type", "name", "enabled", times}
    GET    /zones/{name}/_overview   ZoneOverview: the Zone and its ZoneInsight
    GET    /zone-insights            ZoneInsight of every zone
    PUT    /zones/{name}             body {"enabled": bool} (global only): disable or enable
    DELETE /zones/{name}             (global only) an offline zone, with what it synced

A ZoneInsight is read live from nats-server's view of the stream source that carries the zone
(events.bus.sources): on global, its source of the zone's stream; in a zone, its source of the
zone's subjects through global. `connected` while the source heard from its upstream in the
last `CONNECTED_WITHIN_S` (its heartbeat is 1 s); `lastSeen` = now - `active`; `syncLag`:
`events` = the source's `lag` while the source hears from its upstream (within
`LAG_KNOWN_WITHIN_S`, a few of its 1 s heartbeats), otherwise null: during a cut nats-server
keeps reporting `lag` 0 (reference/multizone.md §4), and how many events the other side wrote
meanwhile cannot be known from here, so the insight says so (`reason`) instead of showing 0;
`seconds` = time since the source last heard from its upstream (grows during a cut).
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
from litestar import Response, delete, get, put

from events import NotFound, rfc3339
from events.bus.sources import SourceState, zone_filter
from events.commands.zones import ZoneCommands
from events.errors import Conflict
from projections import decode_row
from projections.views import ZoneRow
from services.api._state import ApiRequest, api_state, await_projection

__all__ = ["CONNECTED_WITHIN_S", "LAG_KNOWN_WITHIN_S", "ZONE_ROUTES", "zone_insight"]

CONNECTED_WITHIN_S = 10.0
"""Like nats-server's own inactive threshold of a source's consumer (10 s)."""
LAG_KNOWN_WITHIN_S = 3.0
"""The source's `lag` is reported only while it heard from its upstream this recently (its
heartbeat is 1 s): after that nats-server's `lag` is stale (it stays 0 during a cut)."""


class ZoneUpdate(msgspec.Struct, frozen=True):
    enabled: bool


def _render(row: ZoneRow) -> dict[str, Any]:
    doc: dict[str, Any] = {"type": "Zone", "name": row.name, "enabled": row.enabled,
                           "creationTime": rfc3339(row.meta.creation_time),
                           "modificationTime": rfc3339(row.meta.modification_time)}
    if row.install:  # meshlog's: which install of the zone the logs hold (its event stream)
        doc["install"] = row.install
    if row.refused_install:
        doc["refusedInstall"] = row.refused_install
    return doc


def _refused(row: ZoneRow) -> str | None:
    """Why the zone is not synced, when another install of it registered (refused)."""
    if not row.refused_install:
        return None
    return (f"installed afresh under this name (its event stream created "
            f"{row.refused_install}; the logs hold the install created {row.install}): "
            "refused and not synced, as a new install cannot yet be resynced from its start. "
            "Restore the old install's data dir, or delete the zone here and run the new "
            "install under another name (docs/operations.md, Deleting a zone)")


def _insight(row: ZoneRow, sources: list[SourceState], now_ms: int) -> dict[str, Any]:
    doc = zone_insight(row.name, sources, now_ms)
    if (reason := _refused(row)) is not None:
        doc["reason"] = reason
    return doc


def zone_insight(name: str, sources: list[SourceState], now_ms: int) -> dict[str, Any]:
    """The ZoneInsight of zone `name` from the sources of this control plane's stream."""
    source = next((s for s in sources if s.filter_subject == zone_filter(name)), None)
    if source is None:
        return {"type": "ZoneInsight", "name": name, "connected": False,
                "reason": "no source of this zone's events here (not registered yet, or this "
                          "is the zone itself)"}
    def heard_within(seconds: float) -> bool:
        return (source.active_ms is not None and source.error is None
                and source.active_ms < seconds * 1000)

    connected = heard_within(CONNECTED_WITHIN_S)
    lag_known = heard_within(LAG_KNOWN_WITHIN_S)
    doc: dict[str, Any] = {"type": "ZoneInsight", "name": name, "connected": connected,
                           "lastSeen": None if source.active_ms is None
                           else rfc3339(now_ms - source.active_ms),
                           "syncLag": {"events": source.lag if lag_known else None,
                                       "seconds": None if source.active_ms is None
                                       else round(source.active_ms / 1000, 3)},
                           "source": {"filter": source.filter_subject, "api": source.api}}
    if source.error is not None:
        doc["error"] = source.error
    if not lag_known:
        doc["reason"] = ("not heard from the upstream recently: how many events are not yet "
                         "synced cannot be known until the link is back (syncLag.seconds is "
                         "the time since it was last heard)")
    return doc


async def _rows(request: ApiRequest) -> list[ZoneRow]:
    rows = []
    for _, body in await api_state(request.app).store.scan("zone"):
        row = decode_row("zone", body)
        if isinstance(row, ZoneRow) and not row.deleted:
            rows.append(row)
    return sorted(rows, key=lambda r: r.name)


async def _row(request: ApiRequest, name: str) -> ZoneRow:
    body = await api_state(request.app).store.get("zone", name)
    row = None if body is None else decode_row("zone", body)
    if not isinstance(row, ZoneRow) or row.deleted:
        raise NotFound(f"zone {name!r} not found")
    return row


async def _sources(request: ApiRequest) -> list[SourceState]:
    read = api_state(request.app).sources
    return [] if read is None else await read()


@get("/zones", summary="List zones")
async def list_zones(request: ApiRequest) -> dict[str, Any]:
    items = [_render(r) for r in await _rows(request)]
    return {"total": len(items), "items": items, "next": None}


@get("/zones/{name:str}", summary="Get a zone")
async def get_zone(request: ApiRequest, name: str) -> dict[str, Any]:
    return _render(await _row(request, name))


@get("/zones/{name:str}/_overview", summary="A zone and its insight")
async def zone_overview(request: ApiRequest, name: str) -> dict[str, Any]:
    row = await _row(request, name)
    insight = _insight(row, await _sources(request), _now_ms())
    return {"type": "ZoneOverview", "name": name,
            "creationTime": rfc3339(row.meta.creation_time),
            "modificationTime": rfc3339(row.meta.modification_time),
            "zone": {"enabled": row.enabled}, "zoneInsight": insight}


@get("/zone-insights", summary="Every zone's insight")
async def list_zone_insights(request: ApiRequest) -> dict[str, Any]:
    sources, now = await _sources(request), _now_ms()
    items = [_insight(r, sources, now) for r in await _rows(request)]
    return {"total": len(items), "items": items, "next": None}


def _global_only(request: ApiRequest, name: str) -> ZoneCommands:
    commands = api_state(request.app).commands
    if commands.deployment != "global":
        raise Conflict("zone", 0, f"zone {name!r}: zones are changed on the global control "
                       "plane")
    return ZoneCommands(commands.handler)


@put("/zones/{name:str}", summary="Enable or disable a zone (global only)", status_code=200)
async def put_zone(request: ApiRequest, name: str, data: ZoneUpdate) -> dict[str, Any]:
    seq = await _global_only(request, name).set_enabled(name, data.enabled)
    await await_projection(api_state(request.app), seq)
    return _render(await _row(request, name))


@delete("/zones/{name:str}", summary="Delete an offline zone (global only)", status_code=200)
async def delete_zone(request: ApiRequest, name: str) -> Response[dict[str, Any]]:
    commands = _global_only(request, name)
    await _row(request, name)
    online = zone_insight(name, await _sources(request), _now_ms())["connected"]
    seq = await commands.delete(name, online=bool(online))
    await await_projection(api_state(request.app), seq)
    return Response({"name": name, "deleted": True})


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


ZONE_ROUTES = [list_zones, get_zone, zone_overview, list_zone_insights, put_zone, delete_zone]
