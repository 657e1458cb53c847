"""The multi-zone sync supervisor: keeps this control plane's stream sourcing what it should,
as the zones registered in the log say (events.bus.sources).

- global: a source per registered zone (its own subjects, from its domain), and one of each
  registered zone's insights bucket into global's `meshlog_zone_insights`
  (events.bus.zone_insights: Kuma syncs DataplaneInsights to global); a zone no longer
  registered (deleted) loses its source there, then its keys are purged, as Kuma deletes a
  zone's insights with the zone: at the step that sees it gone, retried at each step until
  done, and at the first step for every zone the bucket holds keys of that is not registered
  (deleted while no sync ran, or before this release purged); likewise a zone installed
  afresh under the same name without being deleted (its insights bucket made anew), whose
  old install's keys are purged before its source copies the new one's;
- zone: registers itself on global (a `ZoneApplied` on global's subject, through the one
  command path, retried until global answers) with its event stream's creation time, then
  sources global's subjects and, through global, each other registered zone's.

A zone whose registration names another install than the first (its data dir wiped) is
refused (`ZoneApplied.refused_install`, events.commands.zones): no sync sources it, global's
and its own sync log why, once.

When a link comes back, it restarts the event stream's sources that stalled during the cut
(services.runtime._source_nudge) rather than waiting out nats-server's own retry backoff.

It reads the zones from its own log (global's zone subjects: on a zone, sourced from global),
so what it does follows the log; it only decides which sources the stream has, never copies an
event itself. It runs as the sync role's user (`events.bus.permissions`), which may not
update a stream: it asks the source keeper (events.bus.source_keeper, on admin's connection:
`meshlog up`, `meshlog projector --admin-creds`) for each change of sources.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

from nats.aio.client import Client as NATS

from events import JetStreamEventLog, ZoneApplied, decode_event
from events.bus.sources import (
    GLOBAL_DOMAIN,
    ensure_sources,
    global_sources,
    stream_install,
    zone_sources,
)
from events.bus.zone_insights import (
    ZONE_INSIGHTS_STREAM,
    ensure_zone_insight_sources,
    forget_zone_insights,
    held_zones,
    install_of,
    record_install,
    recorded_install,
)
from events.commands.zones import ZoneCommands, zones_filter
from events.errors import MeshlogError
from events.subjects import EVENTS_STREAM, GLOBAL_ZONE
from services.runtime._source_nudge import SourceNudger

__all__ = ["Mode", "ZoneSync", "refusal", "registered_zones", "zone_registrations"]

log = logging.getLogger("meshlog.sync")

Mode = Literal["standalone", "global", "zone"]


async def zone_registrations(event_log: JetStreamEventLog) -> list[ZoneApplied]:
    """The zones the log says are registered (not deleted), refused installs included."""
    zones = []
    for record in await event_log.latest(zones_filter()):
        try:
            event = decode_event(record.data, seq=record.seq, subject=record.subject,
                                 schema_version=record.schema_version)
        except MeshlogError:
            continue  # the projector quarantines it; a source is not worth a crash
        if isinstance(event, ZoneApplied):
            zones.append(event)
    return sorted(zones, key=lambda z: z.name)


async def registered_zones(event_log: JetStreamEventLog) -> list[str]:
    """The zones the log says are registered (not deleted) and synced, by name: not one
    whose registration is another install's, refused (`ZoneApplied.refused_install`)."""
    return [z.name for z in await zone_registrations(event_log) if not z.refused_install]


def refusal(zone: ZoneApplied) -> str:
    """What to say of a zone whose new install is refused (logs, the zone's insight)."""
    return (f"zone {zone.name!r} was installed afresh under its name (its event stream was "
            f"created {zone.refused_install}; global's log holds the events of the install "
            f"created {zone.install}): refused and not synced, as global cannot yet resync a "
            "new install from its start (it would skip its first events and keep the old "
            f"install's resources). Restore the old install's data dir, or delete zone "
            f"{zone.name!r} on global and run the new install under another name "
            "(docs/operations.md, Deleting a zone)")


class ZoneSync:
    def __init__(self, nc: NATS, *, mode: Literal["global", "zone"], zone: str,
                 interval_s: float = 1.0, replicas: int = 1) -> None:
        """`nc`: a connection to this control plane's nats-server as the sync role's user;
        `zone`: this zone's name (ignored on global); `replicas`: of the zone-insights bucket
        global makes."""
        self._nc = nc
        self._replicas = replicas
        self._mode = mode
        self._zone = zone
        self._interval_s = interval_s
        self.registered = mode == "global"
        self._keeper_zone = GLOBAL_ZONE if mode == "global" else zone
        """Whose source keeper this sync asks (events.bus.source_keeper)."""
        self._nudger = SourceNudger(nc, zone=self._keeper_zone)
        self._insights_nudger = (SourceNudger(nc, zone=GLOBAL_ZONE, stream=ZONE_INSIGHTS_STREAM)
                                 if mode == "global" else None)
        """Global's zone-insights bucket sources each zone too, and stalls alike."""
        self.sources_set = asyncio.Event()
        """Set once the stream has the sources the log asked for (tests wait on it)."""
        self._registered: set[str] | None = None
        """The zones registered at the last step; None before the first."""
        self._forgetting: set[str] = set()
        """Deleted zones whose insights on global are still to purge."""
        self._installs: dict[str, str] = {}
        """The install of each zone whose insights global's bucket holds, as last checked."""
        self._install = ""
        """This zone's event stream's install (`stream_install`), once read."""
        self._refused: set[str] = set()
        """The refused installs (`<zone> <install>`) already logged."""

    async def run(self, keeper_ready: asyncio.Event | None = None) -> None:
        """Sync until cancelled; with `keeper_ready`, from when it is set (the source keeper
        this sync asks serves, events.bus.source_keeper)."""
        if keeper_ready is not None:
            await keeper_ready.wait()
        local = JetStreamEventLog(self._nc, self._nc.jetstream(timeout=5.0), EVENTS_STREAM)
        remote = JetStreamEventLog(
            self._nc, self._nc.jetstream(domain=GLOBAL_DOMAIN, timeout=5.0), EVENTS_STREAM)
        failing = ""
        while True:
            try:
                await self._step(local, remote)
                if failing:
                    log.warning("multi-zone sync works again")
                failing = ""
            except Exception as exc:  # a supervisor retries whatever failed
                # (global unreachable, a refused request): the control plane keeps serving
                # what it has meanwhile, and the sync resumes when the cause goes
                text = f"{type(exc).__name__}: {exc}"
                if text != failing:  # once per kind of failure, not every second
                    log.warning("multi-zone sync: %s (retrying)", text)
                failing = text
            await asyncio.sleep(self._interval_s)

    async def _step(self, local: JetStreamEventLog, remote: JetStreamEventLog) -> None:
        registrations = await zone_registrations(local)
        self._log_refused(registrations)
        zones = [z.name for z in registrations if not z.refused_install]
        wanted = (global_sources(zones) if self._mode == "global"
                  else zone_sources(self._zone, zones))
        if await ensure_sources(self._nc, wanted, zone=self._keeper_zone):
            log.info("event stream now sources %s",
                     ", ".join(f"{s.filter_subject} ({s.api})" for s in wanted))
        if self._mode == "global" and await ensure_zone_insight_sources(
                self._nc, zones, replicas=self._replicas):
            log.info("zone insights bucket now sources %s", ", ".join(zones) or "no zone")
        self.sources_set.set()
        if restarted := await self._nudger.step():
            log.info("link back: restarted the event stream's sources %s",
                     ", ".join(f"{s.filter_subject} ({s.api})" for s in restarted))
        if self._insights_nudger is not None and (
                restarted := await self._insights_nudger.step()):
            log.info("link back: restarted the zone insights bucket's sources %s",
                     ", ".join(s.api for s in restarted))
        if self._mode == "global":
            await self._forget_deleted(zones)
            await self._forget_replaced(zones)
        if self._mode == "zone":
            # every step (a read of global's subject; appends only when absent): a zone
            # deleted on global while it was offline registers again when it is back, as a
            # Kuma zone does when it reconnects
            if not self._install:
                self._install = await stream_install(self._nc)
            if await ZoneCommands(remote).register(self._zone, self._install):
                log.info("zone %s registered on the global control plane", self._zone)
            self.registered = True

    def _log_refused(self, registrations: list[ZoneApplied]) -> None:
        """Say once, as an error, each refused install (global's log, and the refused
        install's own; other zones' and the old install's say nothing)."""
        for zone in registrations:
            key = f"{zone.name} {zone.refused_install}"
            if not zone.refused_install or key in self._refused:
                continue
            if self._mode == "zone" and (zone.name, zone.refused_install) != (
                    self._zone, self._install):
                continue  # another zone's, or another install of this one's
            self._refused.add(key)
            log.error("%s", refusal(zone))

    async def _forget_deleted(self, zones: list[str]) -> None:
        """Purge the insights of the zones deleted since the last step (on the first, of each
        zone the bucket holds keys of but the log does not register), after their sources
        were removed (`_step`); what fails is retried at the next step."""
        registered = set(zones)
        if self._registered is None:
            self._forgetting |= await held_zones(self._nc) - registered
        else:
            self._forgetting |= self._registered - registered
        self._registered = registered
        # one registered again before its purge: its source is back, its keys are its own
        self._forgetting -= registered
        if self._forgetting:
            # one still sourced (another sync process's older view of the log added it back)
            # is skipped: kept until its source is gone or the log registers it again
            purged = await forget_zone_insights(self._nc, self._forgetting)
            for zone, count in purged.items():
                log.info("zone %s deleted: purged its %d insight keys from global's bucket",
                         zone, count)
                # its `<zone>.install` went too: recorded again when it is sourced again
                self._installs.pop(zone, None)
            self._forgetting -= purged.keys()

    async def _forget_replaced(self, zones: list[str]) -> None:
        """Purge the insights of each zone installed afresh under its name without being
        deleted (`install_of` another than the bucket records): its source removed first,
        then its keys purged, the new install recorded, and its source added back, which
        copies the new install's bucket from its start. Kuma's global likewise replaces a
        reconnecting zone's state with what the zone has. A zone that does not answer (link
        down) is checked when it does."""
        installs = await asyncio.gather(*(install_of(self._nc, zone) for zone in zones))
        for zone, install in zip(zones, installs, strict=True):
            if install is None or self._installs.get(zone) == install:
                continue
            recorded = await recorded_install(self._nc, zone)
            if recorded is not None and recorded != install:
                await ensure_zone_insight_sources(
                    self._nc, [z for z in zones if z != zone], replicas=self._replicas)
                purged = await forget_zone_insights(self._nc, [zone])
                if zone not in purged:  # another sync process added its source back
                    continue  # meanwhile: not recorded, so the next step tries again
                log.info("zone %s installed afresh: purged its old install's %d insight keys "
                         "from global's bucket", zone, purged[zone])
            if recorded != install:
                await record_install(self._nc, zone, install)
            await ensure_zone_insight_sources(self._nc, zones, replicas=self._replicas)
            self._installs[zone] = install
