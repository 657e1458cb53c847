"""What each meshlog process may do on NATS: the permissions of its role's user.

nats-server checks every publish and subscription of a connection against its user's allow
and deny lists (deny wins). meshlog's processes need:

    api        the command side: appends any event of its zone; reads the log and the
               insights (on global also the zones', `meshlog_zone_insights`, without making
               it); asks gateways for computed config (meshlog.xds.config.>)
    projector  reads the log; appends only clock ticks and its own settings (grace period,
               MeshMultiZoneService CIDR); writes the projection bucket
    gateway    reads the log (a subject's last event, before it decides) and the projection
               bucket; appends only Dataplane registrations, deregistrations and health
               (meshlog.ev.<zone>.dataplane.<mesh>.<name>); writes the insights bucket;
               answers config requests
    sync       the multi-zone sync (services.runtime.zone_sync): reads the zones from the log
               and asks the source keeper (events.bus.source_keeper, admin's connection) to
               change the event stream's sources (`meshlog.sources.update.<zone>.<stream>`, its own
               zone's only: the subject crosses the leafnode; it may
               update no stream itself); in a zone, reads global's log through its JetStream domain
               (`$JS.global.API`) and appends only its own zone's registration there
               (meshlog.ev._global.zone._.<zone>); on global, makes the zone-insights
               bucket (`STREAM.CREATE`/`INFO` of its stream only: events.bus.zone_insights)
               and has the keeper keep its sources, and purges a deleted or reinstalled
               zone's keys there and records each zone's install (a publish to each key,
               `$KV.meshlog_zone_insights.>`, and its `DIRECT.GET`: it could write any
               zone's keys there too, observations, never the log)
    admin      everything: maintenance commands (replay), benchmarks, tests, and the source
               keeper (`meshlog up`, `meshlog projector --admin-creds`), which applies the
               sync's requests, sources only and only sources the sync would make

So a gateway, the part exposed to proxies, cannot rewrite the log: it cannot append a Mesh,
a MeshService or a policy, write the projections every gateway serves, or purge, delete or
change a stream (those JetStream API subjects are denied to every role but admin, the sync's
included: nats-server applies a stream update whole, limits, retention and subjects with the
sources, so the sync asks the keeper, which changes nothing but the sources; a leaked sync
seed can choose which zones are sourced, not drop or rewrite what the log holds).

The JetStream API subjects are those nats-py 2.16 sends for what `events.bus` does:
`STREAM.INFO`/`STREAM.CREATE` (open; creating a stream or bucket that exists with another
configuration is refused by the server, error 10058, so CREATE cannot change one; INFO also
tells a process deciding on an R1 stream whether it was scaled up), `DIRECT.GET` (a subject's
last event, a KV get), `STREAM.MSG.GET` (the same from the stream leader: the read a write
decides on, on a replicated stream, the check of a refused append, and the fence of a read
across subjects),
`CONSUMER.CREATE` (readers: `<stream>.<name>.<filter>` for
pull consumers, bare `<stream>` for KV watchers), `CONSUMER.INFO`, `CONSUMER.MSG.NEXT`
(fetch), `CONSUMER.DELETE` of the log's consumers for the API and the projector (a guard's
read across subjects, and a projector's read of a skip decision, deletes its consumer when
done, `events.bus._latest`; it could delete another
process's consumer of the log too, a projector's reader, which then makes a new one at the
sequence it owes: a stall of seconds, nothing lost), `$JS.FC` (flow control of KV watchers),
`$KV.<bucket>.>` (KV writes), and replies on `_INBOX.>`. Caveat (reference/security.md §5):
subscribe permissions do not limit what a consumer reads; only reads of other streams are kept
out, by stream name. Reads of the log are not secret here: writes are what the roles
separate.
"""

from __future__ import annotations

from typing import Any, Literal, assert_never

from msgspec import Struct

from events.bus._source_updates import sources_subject
from events.bus.insights import BUCKET as INSIGHTS_BUCKET
from events.bus.projection_bus import BUCKET as PROJECTION_BUCKET
from events.bus.requests import XDS_CONFIG_SUBJECTS
from events.bus.sources import GLOBAL_DOMAIN
from events.bus.zone_insights import ZONE_INSIGHTS_BUCKET, ZONE_INSIGHTS_STREAM
from events.subjects import (
    EVENTS_STREAM,
    GLOBAL,
    GLOBAL_ZONE,
    events_wildcard,
    grace_period_subject,
    ipam_subject,
    provenance_of,
    resource_subject,
)

__all__ = ["ROLES", "Permissions", "Role", "permissions", "server_users"]

Role = Literal["api", "projector", "gateway", "sync", "admin"]
ROLES: tuple[Role, ...] = ("api", "projector", "gateway", "sync", "admin")

_API = "$JS.API"
_INBOX = "_INBOX.>"
_REMOVE = (f"{_API}.STREAM.PURGE.>", f"{_API}.STREAM.DELETE.>", f"{_API}.STREAM.MSG.DELETE.>")
"""What only admin may do: a stream's messages are removed."""
_NEVER = (*_REMOVE, f"{_API}.STREAM.UPDATE.>")
"""What only admin may do: a stream's messages are removed or its rules changed (the sync
role asks the source keeper for a change of sources, `_sync`)."""


class Permissions(Struct, frozen=True, kw_only=True):
    publish: tuple[str, ...]
    publish_deny: tuple[str, ...] = ()
    subscribe: tuple[str, ...]
    allow_responses: bool = False
    """Publish to the reply subject of a request it received (and nothing else there)."""

    def as_config(self) -> dict[str, Any]:
        """nats-server's `permissions` block."""
        publish: dict[str, Any] = {"allow": list(self.publish)}
        if self.publish_deny:
            publish["deny"] = list(self.publish_deny)
        block: dict[str, Any] = {"publish": publish, "subscribe": {"allow": list(self.subscribe)}}
        if self.allow_responses:
            block["allow_responses"] = True
        return block


def _stream(stream: str, *, consume: bool = True, create: bool = True) -> tuple[str, ...]:
    """Open `stream` (with `create`, create it if missing), read single messages; with
    `consume`, read it through consumers too."""
    subjects = (f"{_API}.STREAM.INFO.{stream}",
                *((f"{_API}.STREAM.CREATE.{stream}",) if create else ()),
                f"{_API}.DIRECT.GET.{stream}", f"{_API}.DIRECT.GET.{stream}.>",
                f"{_API}.STREAM.MSG.GET.{stream}")
    if not consume:
        return subjects
    return (*subjects, f"{_API}.CONSUMER.CREATE.{stream}", f"{_API}.CONSUMER.CREATE.{stream}.>",
            f"{_API}.CONSUMER.INFO.{stream}.*", f"{_API}.CONSUMER.MSG.NEXT.{stream}.*",
            f"$JS.FC.{stream}.>")


def _bucket(bucket: str, *, write: bool) -> tuple[str, ...]:
    reads = _stream(f"KV_{bucket}")
    return (*reads, f"$KV.{bucket}.>") if write else reads


def _sync(zone: str) -> tuple[str, ...]:
    """What the multi-zone sync sends (services.runtime.zone_sync): its log's zones, read
    through a consumer fenced by the stream leader (`events.bus._latest`), and the stream's
    sources (`STREAM.INFO`, and a request to the source keeper for a change:
    `events.bus.sources.ensure_sources`, and on global each zone's stream's `STREAM.INFO` to
    see its link back); in a zone, also its own
    registration on global: a decision read from global's log (its domain's API, as a log of
    unknown replica count reads), and the append of `zone`'s Zone, which crosses the leafnode to
    global's stream."""
    local = (f"{_API}.STREAM.INFO.{EVENTS_STREAM}", sources_subject(zone, EVENTS_STREAM),
             f"{_API}.STREAM.MSG.GET.{EVENTS_STREAM}",
             f"{_API}.CONSUMER.CREATE.{EVENTS_STREAM}.>",
             f"{_API}.CONSUMER.INFO.{EVENTS_STREAM}.*",
             f"{_API}.CONSUMER.MSG.NEXT.{EVENTS_STREAM}.*",
             f"{_API}.CONSUMER.DELETE.{EVENTS_STREAM}.*")
    if zone == GLOBAL_ZONE:  # and the zones' insights (events.bus.zone_insights)
        return (*local, f"{_API}.STREAM.INFO.{ZONE_INSIGHTS_STREAM}",
                # whether a zone's API answers again (services.runtime._source_nudge)
                f"$JS.*.API.STREAM.INFO.{EVENTS_STREAM}",
                f"$JS.*.API.STREAM.INFO.KV_{INSIGHTS_BUCKET}",
                f"{_API}.STREAM.CREATE.{ZONE_INSIGHTS_STREAM}",
                sources_subject(zone, ZONE_INSIGHTS_STREAM),
                # a deleted or reinstalled zone's keys purged, each a publish to the key
                # (events.bus.zone_insights.forget_zone_insights), and the install of each
                # zone recorded and read there (`<zone>.install`, a KV get is a direct get)
                f"$KV.{ZONE_INSIGHTS_BUCKET}.>",
                f"{_API}.DIRECT.GET.{ZONE_INSIGHTS_STREAM}",
                f"{_API}.DIRECT.GET.{ZONE_INSIGHTS_STREAM}.>")
    remote = f"$JS.{GLOBAL_DOMAIN}.API"
    return (*local, f"{remote}.STREAM.INFO.{EVENTS_STREAM}",
            f"{remote}.STREAM.MSG.GET.{EVENTS_STREAM}",
            f"{remote}.DIRECT.GET.{EVENTS_STREAM}", f"{remote}.DIRECT.GET.{EVENTS_STREAM}.>",
            resource_subject("Zone", None, zone, GLOBAL_ZONE))


def permissions(role: Role, zone: str) -> Permissions:
    """The permissions of `role` in the control plane of `zone` (each control plane appends
    only its own subjects, DESIGN.md Multi-zone). Raise `MalformedSubject` for a zone that
    cannot be a subject token."""
    events = f"{events_wildcard().removesuffix('>')}{zone}"
    provenance_of(f"{events}.x.{GLOBAL}.y")  # the zone is a label or the global zone's token
    match role:
        case "admin":
            return Permissions(publish=(">",), subscribe=(">",))
        case "api":
            # on global, the zones' insights too: read, never made (the sync makes it)
            zones = (_stream(ZONE_INSIGHTS_STREAM, create=False) if zone == GLOBAL_ZONE
                     else ())
            return Permissions(
                publish=(f"{events}.>", *_stream(EVENTS_STREAM),
                         f"{_API}.CONSUMER.DELETE.{EVENTS_STREAM}.*",
                         *_bucket(INSIGHTS_BUCKET, write=False), *zones,
                         XDS_CONFIG_SUBJECTS),
                publish_deny=_NEVER, subscribe=(_INBOX,))
        case "projector":
            return Permissions(
                publish=(f"{events}.clock.{GLOBAL}.*",
                         grace_period_subject("MeshService", zone),
                         ipam_subject("MeshMultiZoneService", zone), *_stream(EVENTS_STREAM),
                         f"{_API}.CONSUMER.DELETE.{EVENTS_STREAM}.*",
                         *_bucket(PROJECTION_BUCKET, write=True)),
                publish_deny=_NEVER, subscribe=(_INBOX,))
        case "gateway":
            return Permissions(
                publish=(f"{events}.dataplane.*.*", *_stream(EVENTS_STREAM, consume=False),
                         *_bucket(PROJECTION_BUCKET, write=False),
                         *_bucket(INSIGHTS_BUCKET, write=True)),
                publish_deny=_NEVER, subscribe=(_INBOX, XDS_CONFIG_SUBJECTS),
                allow_responses=True)
        case "sync":
            return Permissions(publish=_sync(zone), publish_deny=_NEVER, subscribe=(_INBOX,))
        case _:
            assert_never(role)


def server_users(public_keys: dict[Role, str], zone: str) -> list[dict[str, Any]]:
    """nats-server's `users` list: one nkey user per role, with the role's permissions."""
    return [{"nkey": key, "permissions": permissions(role, zone).as_config()}
            for role, key in public_keys.items()]
