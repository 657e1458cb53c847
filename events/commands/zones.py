"""Zone commands: a zone joins the global control plane, an operator enables, disables or
deletes it. Zones live in global's log (`meshlog.ev._global.zone._.<name>`, Kuma's `Zone`);
a zone's control plane registers itself there through its leafnode (a publish to global's
subject reaches global's stream), and every zone sees them through its source of global's
stream."""

from __future__ import annotations

from collections.abc import Callable

from events.commands.handler import Append, CommandHandler, Current, Decision, Keep
from events.errors import Conflict, NotFound
from events.event_types import ZoneApplied, ZoneDeleted, now_ms
from events.log import EventLog
from events.subjects import GLOBAL_ZONE, resource_subject, resources_filter

__all__ = ["ZoneCommands", "zone_subject", "zones_filter"]


def zone_subject(name: str) -> str:
    return resource_subject("Zone", None, name, GLOBAL_ZONE)


def zones_filter() -> str:
    return resources_filter("Zone", None, GLOBAL_ZONE)


class ZoneCommands:
    def __init__(self, log: EventLog | CommandHandler, *,
                 clock: Callable[[], int] = now_ms) -> None:
        """`log`: global's log (in a zone, the log of JetStream domain `global`)."""
        self.handler = CommandHandler.of(log)
        self._clock = clock

    async def register(self, name: str, install: str = "") -> bool:
        """Make `name` a zone of global, enabled unless an operator disabled it; True when
        this appended. `install`: the creation time of the zone's event stream ("" unknown).

        The first install registered is the one the logs hold the events of (`install`);
        another one (the zone's data dir wiped, deleted on global first or not) is recorded
        as refused (`refused_install`): global's source of the zone resumes after the last
        origin sequence it holds of the old install, so it would skip the new install's
        first events and keep the old one's resources (docs/status.md). The old install
        back (its data dir restored) clears the refusal. A zone registered by a release
        before has no install recorded: the one registering now is recorded as is."""
        at = self._clock()

        def decide(current: Current) -> Decision:
            event = current.event
            if not isinstance(event, ZoneApplied | ZoneDeleted):
                return Append(ZoneApplied(at=at, name=name, install=install))
            enabled = event.enabled if isinstance(event, ZoneApplied) else True
            known = event.install or install
            if not install:  # not known: changes nothing
                refused = event.refused_install if isinstance(event, ZoneApplied) else ""
            else:
                refused = "" if install == known else install
            if isinstance(event, ZoneApplied) and (event.install, event.refused_install) == (
                    known, refused):
                return Keep()
            return Append(ZoneApplied(at=at, name=name, enabled=enabled, install=known,
                                      refused_install=refused))

        return (await self.handler.execute(zone_subject(name), decide, retries=3)).appended

    async def set_enabled(self, name: str, enabled: bool) -> int:
        at = self._clock()

        def decide(current: Current) -> Decision:
            if not isinstance(current.event, ZoneApplied):
                raise NotFound(f"zone {name!r} does not exist")
            if current.event.enabled == enabled:
                return Keep()
            return Append(ZoneApplied(at=at, name=name, enabled=enabled,
                                      install=current.event.install,
                                      refused_install=current.event.refused_install))

        return (await self.handler.execute(zone_subject(name), decide)).seq

    async def delete(self, name: str, *, online: bool) -> int:
        """Kuma's rule: only an offline zone can be deleted (its resources go with it)."""
        if online:
            raise Conflict(zone_subject(name), 0, f"zone {name!r} is online: stop its control "
                           "plane (or cut its link) before deleting it")
        at = self._clock()

        def decide(current: Current) -> Decision:
            if not isinstance(current.event, ZoneApplied):
                raise NotFound(f"zone {name!r} does not exist")
            return Append(ZoneDeleted(at=at, name=name, install=current.event.install),
                          content=b"delete")

        return (await self.handler.execute(zone_subject(name), decide)).seq


