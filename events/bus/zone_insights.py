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
not from the messages left (reference §4). A deleted zone's source is removed; what it had
synced stays in the bucket, unseen while no zone of that name is registered: global shows
insights only of the Dataplanes it lists (services.api._zone_insights). Not unseen once a zone
of that name registers again from a fresh install (a new bucket): its source starts anew, and
until its gateways write a key again the old key stays, so a Dataplane of an old name shows
the old install's last insight with `current: true`. Nothing purges the keys: only admin may
(nats-server grants by subject, and a purge's subject filter is in the request's body, so a
grant of `STREAM.PURGE` of this stream cannot be limited to one zone's `<zone>.` keys: the
sync could purge every zone's copy, which its sources would not bring back, as they resume
from their persisted positions). docs/status.md says what an operator does about it.
"""

from __future__ import annotations

from collections.abc import Iterable

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
from events.bus.insights import BUCKET as INSIGHTS_BUCKET
from events.errors import EventLogUnavailable

__all__ = ["ZONE_INSIGHTS_BUCKET", "ZONE_INSIGHTS_STREAM", "ensure_zone_insight_sources",
           "zone_insights_source", "zone_of_api"]

ZONE_INSIGHTS_BUCKET = "meshlog_zone_insights"
ZONE_INSIGHTS_STREAM = f"KV_{ZONE_INSIGHTS_BUCKET}"
_TIMEOUT_S = 5.0


def zone_insights_source(zone: str) -> StreamSource:
    """The source of zone `zone`'s insights bucket, its keys prefixed with `<zone>.`."""
    return StreamSource(
        name=f"KV_{INSIGHTS_BUCKET}", external=ExternalStream(api=f"$JS.{zone}.API"),
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
    """Make global's zone-insights bucket (created if missing, at `replicas`) source exactly
    each of `zones`' insights bucket; True when it changed. The sync role's grant
    (`events.bus.permissions`: `STREAM.INFO`, `STREAM.CREATE` and `STREAM.UPDATE` of this
    bucket's stream)."""
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
                storage=StorageType.FILE, sources=list(wanted.values()) or None))
            if replicas > 1:
                await await_stream_leader(js, ZONE_INSIGHTS_STREAM)
            return True
        have = config.sources or []
        kept = [s for s in have if _key(s) in wanted]
        added = [s for key, s in wanted.items() if key not in {_key(h) for h in have}]
        if len(kept) == len(have) and not added:
            return False
        config.sources = kept + added
        await js.update_stream(config)
    except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
        raise EventLogUnavailable(
            f"cannot set the sources of stream {ZONE_INSIGHTS_STREAM}: {exc!r}") from exc
    return True
