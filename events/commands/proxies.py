"""Commands a gateway takes for the proxies it serves: self-registration, deregistration after
a disconnect, and inbound readiness reported by the proxy's health checks (HDS).

- `register`: make the log hold the Dataplane a proxy carries in its node metadata. One
  registered through the API is the API's: a proxy never takes it over (and so never removes
  it). A Dataplane equal to the one in the log appends nothing, so a reconnect is silent.
- `deregister`: only a Dataplane whose last registration came from a proxy.
- `restore`: undo a deregistration the proxy raced (it reconnected meanwhile).
- `report_readiness`: `inbound[i].health.ready` of the probed inbounds, origin kept.

Gateways race each other on these subjects, so every command retries on a conflict (reads
and decides again); Msg-Ids derive from (subject, sequence, content), so two gateways taking
the same decision append one event.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec
from msgspec import Struct

from events.commands.handler import Append, CommandHandler, Current, Decision, Keep
from events.commands.meshes import current_mesh
from events.errors import Conflict, NotFound, WrongControlPlane
from events.event_types import DataplaneDeregistered, DataplaneRegistered, MeshApplied
from events.log import EventLog
from events.resources import Dataplane, Health, Inbound
from events.subjects import GLOBAL_ZONE, resource_subject

__all__ = ["Deregistered", "ProbeTarget", "ProxyCommands", "probe_target", "registration_of",
           "with_readiness"]

_RETRIES = 2

ProbeTarget = tuple[str, int]
"""(service address, service port) of a probed inbound."""


class Deregistered(Struct, frozen=True):
    dataplane: Dataplane
    seq: int
    """Sequence of the `DataplaneDeregistered` event."""


def registration_of(current: Current) -> DataplaneRegistered | None:
    """The Dataplane registration a subject's last event is, if it is one."""
    return current.event if isinstance(current.event, DataplaneRegistered) else None


def probe_target(inbound: Inbound) -> ProbeTarget:
    """The address and port an inbound's local cluster sends traffic to, which its
    `serviceProbe` checks."""
    return inbound.service_address or "127.0.0.1", inbound.service_port or inbound.port


def with_readiness(dataplane: Dataplane, ready: Mapping[ProbeTarget, bool]) -> Dataplane | None:
    """`dataplane` with the `health.ready` of its probed inbounds set from `ready`; None when
    nothing changes (absent health is ready, as in Kuma)."""
    inbounds = list(dataplane.networking.inbound)
    changed = False
    for i, inbound in enumerate(inbounds):
        if inbound.service_probe is None:
            continue
        now = ready.get(probe_target(inbound))
        was = inbound.health.ready if inbound.health is not None else True
        if now is not None and now != was:
            inbounds[i] = msgspec.structs.replace(inbound, health=Health(ready=now))
            changed = True
    if not changed:
        return None
    networking = msgspec.structs.replace(dataplane.networking, inbound=inbounds)
    return msgspec.structs.replace(dataplane, networking=networking)


class ProxyCommands:
    def __init__(self, log: EventLog | CommandHandler, *, zone: str) -> None:
        self.handler = CommandHandler.of(log)
        self._zone = zone

    async def register(self, dataplane: Dataplane, at: int) -> bool:
        """Make the log hold `dataplane`; True when the proxy owns the registration (False:
        the API registered it and keeps it as it is). Raises `NotFound` without its Mesh,
        `Conflict` if the subject kept changing, `WrongControlPlane` on the global control plane."""
        subject = resource_subject("Dataplane", dataplane.mesh, dataplane.name, self._zone)
        if self._zone == GLOBAL_ZONE:
            # Kuma's rule, as the API's (`Commands._check_owner`): global holds no Dataplanes
            raise WrongControlPlane(
                subject, f"Dataplane {dataplane.mesh}.{dataplane.name}: Dataplanes register in "
                "their zone's control plane, not on global; point the proxy at its zone's xDS "
                "address")
        mesh = await current_mesh(self.handler, dataplane.mesh, self._zone)
        owned = True

        def decide(current: Current) -> Decision:
            nonlocal owned
            registered = registration_of(current)
            if registered is not None and registered.origin != "proxy":
                owned = False  # registered through the API: the API owns it
                return Keep()
            if registered is not None and registered.dataplane == dataplane:
                return Keep()  # a reconnect: nothing to append
            if not isinstance(mesh.event, MeshApplied):
                raise NotFound(f"mesh {dataplane.mesh!r} does not exist: create it before its "
                               "Dataplanes connect")
            return Append(DataplaneRegistered(at=at, dataplane=dataplane, origin="proxy"))

        await self.handler.execute(subject, decide, retries=_RETRIES)
        return owned

    async def deregister(self, mesh: str, name: str, at: int) -> Deregistered | str:
        """Append `DataplaneDeregistered` if the proxy owns the registration; otherwise
        return why not: "api" (registered through the API), "absent", or "changed"."""
        subject = resource_subject("Dataplane", mesh, name, self._zone)
        why_not = ""

        def decide(current: Current) -> Decision:
            nonlocal why_not
            registered = registration_of(current)
            if registered is None:
                why_not = "absent"
                return Keep()
            if registered.origin != "proxy":
                why_not = "api"
                return Keep()
            return Append(DataplaneDeregistered(at=at, mesh=mesh, name=name),
                          content=b"deregister")

        try:
            outcome = await self.handler.execute(subject, decide)
        except Conflict:
            return "changed"
        registered = registration_of(outcome.previous)
        if not outcome.appended or registered is None:
            return why_not
        return Deregistered(dataplane=registered.dataplane, seq=outcome.seq)

    async def restore(self, removed: Deregistered, at: int) -> bool:
        """Register again what `removed` deregistered, unless the subject moved on since
        (the proxy's new stream registered it itself)."""
        dp = removed.dataplane
        subject = resource_subject("Dataplane", dp.mesh, dp.name, self._zone)

        def decide(current: Current) -> Decision:
            if current.seq != removed.seq:
                raise Conflict(subject, removed.seq)
            return Append(DataplaneRegistered(at=at, dataplane=dp, origin="proxy"))

        try:
            await self.handler.execute(subject, decide)
        except Conflict:
            return False
        return True

    async def report_readiness(self, mesh: str, name: str, ready: Mapping[ProbeTarget, bool],
                               at: int) -> bool:
        """Record what the proxy's health checks say of its probed inbounds; True when an
        event was appended (False: deregistered meanwhile, or the log already says so)."""
        subject = resource_subject("Dataplane", mesh, name, self._zone)

        def decide(current: Current) -> Decision:
            registered = registration_of(current)
            updated = (with_readiness(registered.dataplane, ready)
                       if registered is not None else None)
            if registered is None or updated is None:
                return Keep()
            return Append(DataplaneRegistered(at=at, dataplane=updated,
                                              origin=registered.origin))

        outcome = await self.handler.execute(subject, decide, retries=_RETRIES)
        return outcome.appended and not outcome.duplicate
