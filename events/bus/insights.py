"""Proxy insights: what the gateways know about connected proxies, shared on the bus.

Insights are observations, not facts of the domain: they live in a JetStream KV bucket
(`meshlog_insights`), never in the event log, and are not replayed. Every gateway writes the
insights of the streams it serves and reads everyone's, so decisions that depend on "is this
proxy connected anywhere?" (deregistration after a delay) are taken from the shared view, never
from one gateway's memory.

Keys:
- `proxy.<mesh>.<name>`: a `ProxyInsight`, written by the gateway serving the proxy's stream.
  Writes after the first carry the revision the writer last wrote, so a gateway that lost the
  proxy to another one cannot overwrite the newer insight (`update` returns None then).
- `gateway.<instance>`: a `GatewayHeartbeat`, rewritten every few seconds; a proxy whose
  gateway stopped beating is as good as disconnected since the last beat.

Mesh and Dataplane names are RFC 1123 labels (no dots), so `.` separates key parts safely.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import cast

import msgspec
import nats.errors
import nats.js.errors
from msgspec import Struct
from nats.aio.client import Client as NATS
from nats.js.kv import KeyValue

from events.bus._kv import open_bucket, stop_watcher
from events.errors import EventLogUnavailable

__all__ = ["BeatStamps", "GatewayHeartbeat", "InsightsSnapshot", "JetStreamInsights",
           "ProxyInsight", "TypeInsight"]

log = logging.getLogger("meshlog.insights")

BUCKET = "meshlog_insights"
_WRONG_LAST_SEQUENCE = 10071
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
"""A message's timestamp in Unix ms, exactly (no float on the way)."""
_KV_OPERATION = "KV-Operation"
_KV_DEL = "DEL"
_KV_PURGE = "PURGE"
_MARKER_REASON = "Nats-Marker-Reason"
"""A marker nats-server places (a message's TTL ended, nats-server 2.11+): no value."""
_SCAN_TIMEOUT_S = 10.0
"""A watcher's deliveries have no timeout of their own: a bus that stops mid-scan would
hold `snapshot` (and the reaper's sweep waiting on it) for as long as it is stopped."""


class TypeInsight(Struct, kw_only=True, omit_defaults=True):
    """Per xDS type, on one stream."""

    responses_sent: int = 0
    acks: int = 0
    nacks: int = 0
    last_acked_version: str = ""
    last_nack_message: str = ""


class ProxyInsight(Struct, kw_only=True, omit_defaults=True):
    mesh: str
    name: str
    gateway: str
    """Instance id of the gateway serving (or that last served) the proxy."""
    session: str
    """Unique per stream: tells one connection from the next."""
    connected_at: int
    """Unix ms."""
    disconnected_at: int | None = None
    """Unix ms; None while the stream is open."""
    protocol: str = "sotw"
    """"sotw" or "delta"."""
    user_agent: str = ""
    dns_port: int | None = None
    """The DNS listener port the node asked for (node metadata), if not the default."""
    self_registered: bool = False
    """The proxy registered its Dataplane from node metadata (and is deregistered after a
    delay once it is gone everywhere)."""
    types: dict[str, TypeInsight] = {}
    """Keyed by type URL."""

    @property
    def connected(self) -> bool:
        return self.disconnected_at is None

    def last_heard(self, beat: GatewayHeartbeat | None) -> int:
        """When its gateway was last heard of: its heartbeat `beat`, or the connect time if
        later (Unix ms). The rule of both the reaper and the API's `connected`."""
        return max(beat.beat_at if beat is not None else 0, self.connected_at)


class GatewayHeartbeat(Struct, kw_only=True):
    instance: str
    address: str
    started_at: int
    beat_at: int
    streams: int = 0
    swept_at: int = 0
    """Unix ms at the start of the gateway's last completed reaper sweep (0: none yet)."""


_encode = msgspec.json.Encoder().encode
_proxy = msgspec.json.Decoder(ProxyInsight).decode
_beat = msgspec.json.Decoder(GatewayHeartbeat).decode


InsightsSnapshot = tuple[dict[tuple[str, str], ProxyInsight], dict[str, GatewayHeartbeat]]
"""Every proxy insight by (mesh, name) and every gateway heartbeat by instance."""
BeatStamps = dict[tuple[str, str], int]
"""When the bucket's stream stored each gateway heartbeat (Unix ms, its server's clock), by
(zone, instance): the zone "" in an unzoned bucket."""


def proxy_key(mesh: str, name: str) -> str:
    return f"proxy.{mesh}.{name}"


def gateway_key(instance: str) -> str:
    return f"gateway.{instance}"


def _zoned(zone: str, key: str) -> str:
    return f"{zone}.{key}" if zone else key


class JetStreamInsights:
    """The insights bucket. Every call has a timeout; driver errors become
    `EventLogUnavailable`."""

    def __init__(self, kv: KeyValue, nc: NATS, bucket: str, *,
                 scan_timeout_s: float = _SCAN_TIMEOUT_S) -> None:
        self._kv = kv
        self._nc = nc
        self._js = nc.jetstream(timeout=scan_timeout_s)
        self._direct = kv._direct
        """Read a key as nats-py's KV `get` does: a direct get when the stream allows it."""
        self._bucket = bucket
        self._scan_timeout_s = scan_timeout_s

    @classmethod
    async def open(cls, nc: NATS, *, bucket: str = BUCKET, replicas: int = 1,
                   scan_timeout_s: float = _SCAN_TIMEOUT_S) -> JetStreamInsights:
        kv = await open_bucket(nc, bucket, replicas=replicas, what="insights")
        return cls(kv, nc, bucket, scan_timeout_s=scan_timeout_s)

    @classmethod
    async def open_existing(cls, nc: NATS, bucket: str, *,
                            scan_timeout_s: float = _SCAN_TIMEOUT_S) -> JetStreamInsights:
        """A bucket another process makes (global's copy of the zones' insights,
        events.bus.zone_insights), opened without making it: `EventLogUnavailable` while it
        does not exist."""
        try:
            kv = await nc.jetstream(timeout=scan_timeout_s).key_value(bucket)
        except nats.js.errors.BucketNotFoundError as exc:
            raise EventLogUnavailable(f"no bucket {bucket} yet") from exc
        except nats.errors.Error as exc:
            raise EventLogUnavailable(f"cannot open bucket {bucket}: {exc!r}") from exc
        return cls(kv, nc, bucket, scan_timeout_s=scan_timeout_s)

    async def put(self, insight: ProxyInsight) -> int:
        """Write unconditionally (a new stream takes the key); return the revision."""
        try:
            return await self._kv.put(proxy_key(insight.mesh, insight.name), _encode(insight))
        except nats.errors.Error as exc:
            raise EventLogUnavailable(f"insight not written: {exc!r}") from exc

    async def update(self, insight: ProxyInsight, last: int) -> int | None:
        """Write only if the key is still at revision `last` (nobody else took the proxy);
        return the new revision, or None if someone else wrote in between."""
        try:
            return await self._kv.update(proxy_key(insight.mesh, insight.name),
                                         _encode(insight), last=last)
        except nats.js.errors.KeyWrongLastSequenceError:
            return None
        except nats.errors.Error as exc:
            raise EventLogUnavailable(f"insight not written: {exc!r}") from exc

    async def proxy(self, mesh: str, name: str, *, zone: str = ""
                    ) -> tuple[ProxyInsight, int] | None:
        """The insight of one proxy and its revision, if any (of `zone`, in a zoned bucket)."""
        got = await self._get(_zoned(zone, proxy_key(mesh, name)), "insight")
        if got is None:
            return None
        value, revision, _ = got
        return _proxy(value), revision

    async def delete_proxy(self, mesh: str, name: str, last: int) -> bool:
        """Forget a proxy if its insight is still at revision `last`."""
        return await self._delete(proxy_key(mesh, name), last, "insight")

    async def beat(self, heartbeat: GatewayHeartbeat) -> None:
        try:
            await self._kv.put(gateway_key(heartbeat.instance), _encode(heartbeat))
        except nats.errors.Error as exc:
            raise EventLogUnavailable(f"heartbeat not written: {exc!r}") from exc

    async def snapshot(self) -> InsightsSnapshot:
        """Every proxy insight (by (mesh, name)) and every gateway heartbeat, now."""
        return (await self.zoned_snapshot(zoned=False)).get("", ({}, {}))

    async def zoned_snapshot(self, *, zoned: bool = True) -> dict[str, InsightsSnapshot]:
        """The snapshot of each zone of a bucket whose keys are a zone's key prefixed with
        `<zone>.` (global's copy of the zones' insights, `events.bus.zone_insights`), by zone;
        without `zoned`, this bucket's own under "" ."""
        return (await self.stamped_zoned_snapshot(zoned=zoned))[0]

    async def stamped_zoned_snapshot(self, *, zoned: bool = True
                                     ) -> tuple[dict[str, InsightsSnapshot], BeatStamps]:
        """`zoned_snapshot`, with when this bucket's server stored each gateway heartbeat it
        read (`BeatStamps`): on global, global's clock against the heartbeat's own, the
        zone's (services.api._clock_offsets). From the same scan, no read more."""
        try:
            async with asyncio.timeout(self._scan_timeout_s):
                return await self._scan(zoned)
        except TimeoutError as exc:
            raise EventLogUnavailable(
                f"insights not read within {self._scan_timeout_s:g} s") from exc

    async def _scan(self, zoned: bool) -> tuple[dict[str, InsightsSnapshot], BeatStamps]:
        zones: dict[str, InsightsSnapshot] = {}
        stamps: BeatStamps = {}
        async for key, value, stored in self._entries():
            zone, local = key.partition(".")[::2] if zoned else ("", key)
            kind, _, rest = local.partition(".")
            proxies, gateways = zones.setdefault(zone, ({}, {}))
            try:
                if kind == "proxy":
                    insight = _proxy(value)
                    proxies[(insight.mesh, insight.name)] = insight
                elif kind == "gateway":
                    gateways[rest] = _beat(value)
                    if stored is not None:
                        stamps[(zone, rest)] = stored
            except msgspec.DecodeError as exc:
                # one entry this version cannot read (another version's gateway?) must not
                # hide every other proxy from the reaper and the API: skip it, loudly
                log.warning("insight %s skipped, not decodable: %s", key, exc)
        return zones, stamps

    async def _entries(self) -> AsyncIterator[tuple[str, bytes, int | None]]:
        """Every key that has a value, with it and when the stream stored it (Unix ms, the
        server's clock: the watcher's message's timestamp, or the `Nats-Time-Stamp` of a key
        read alone below, so that a heartbeat missed by the watcher is stamped as well).
        A watcher alone can miss a key written again
        while it runs: the bucket keeps one value per key, so the one the watcher was to
        deliver is gone when it gets there, and JetStream's count of what is pending can say
        the current values are done before the new one comes (seen: 34 scans in 200 missed a
        key, with 300 keys rewritten by 4 writers meanwhile). So when the stream holds more
        keys than the watcher delivered (its `num_subjects`, one small answer), they are
        listed, and any the watcher did not deliver is read alone (none missed in 200 such
        scans). Deleted keys come through the watcher too, so only a key written meanwhile
        costs a read. (A key missed while another is made anew in the same scan evens the
        count: it is missed until the next scan.)"""
        seen: set[str] = set()
        try:
            watcher = await self._kv.watchall()
        except nats.errors.Error as exc:
            raise EventLogUnavailable(f"insights not read: {exc!r}") from exc
        try:
            async for entry in watcher:
                if entry is None:  # end of the current values
                    break
                seen.add(entry.key)
                if entry.value:
                    # nats-py's Entry says `created: int`, but the watcher gives the message's
                    # timestamp, a datetime
                    created = cast("datetime | None", entry.created)
                    yield (entry.key, entry.value,
                           None if created is None else (created - _EPOCH) // _MS)
        finally:
            await stop_watcher(watcher)
        if await self._key_count() <= len(seen):
            return  # the watcher delivered every key: nothing to list (the common case)
        for key in sorted(await self._keys() - seen):
            got = await self._get(key, "insight")
            if got is not None:
                yield key, got[0], got[2]

    async def _key_count(self) -> int:
        """How many keys the bucket's stream holds a message of, now (the stream's
        `num_subjects`: one small answer, without the keys)."""
        try:  # nats-py's StreamState has no num_subjects: the API's own answer
            reply = await self._nc.request(f"$JS.API.STREAM.INFO.KV_{self._bucket}", b"",
                                           timeout=self._scan_timeout_s)
            count = json.loads(reply.data)["state"].get("num_subjects", 0)
        except (nats.errors.Error, ValueError, KeyError, TypeError) as exc:
            raise EventLogUnavailable(f"insights not counted: {exc!r}") from exc
        return int(count)

    async def _keys(self) -> set[str]:
        """The keys the bucket's stream holds a message of (a value or a delete), now: the
        first 100,000 (nats-server pages a longer list; a bucket of more proxies than that
        is read as before, by the watcher alone, past them)."""
        prefix = f"$KV.{self._bucket}."
        try:
            info = await self._js.stream_info(f"KV_{self._bucket}", subjects_filter=f"{prefix}>")
        except nats.errors.Error as exc:
            raise EventLogUnavailable(f"insights not listed: {exc!r}") from exc
        return {subject.removeprefix(prefix) for subject in info.state.subjects or {}}

    async def gateway(self, instance: str, *, zone: str = "") -> GatewayHeartbeat | None:
        """The last heartbeat of one gateway instance, if any (of `zone`, in a zoned
        bucket)."""
        got = await self._get(_zoned(zone, gateway_key(instance)), "heartbeat")
        return _beat(got[0]) if got is not None else None

    async def forget_gateway(self, instance: str, beat_at: int) -> bool:
        """Delete a gateway's heartbeat if it still is the one that beat at `beat_at` (the
        gateway did not come back meanwhile)."""
        key = gateway_key(instance)
        got = await self._get(key, "heartbeat")
        if got is None or _beat(got[0]).beat_at != beat_at:
            return False
        return await self._delete(key, got[1], "heartbeat")

    async def _get(self, key: str, what: str) -> tuple[bytes, int, int | None] | None:
        """The value at `key`, its revision and when the stream stored it (Unix ms, the
        server's clock; None if the answer does not say), None if there is none (deleted,
        purged or empty). The read nats-py's KV `get` makes (a direct get, or
        `STREAM.MSG.GET`), whose answer carries the message's time, which `get` drops."""
        subject = f"$KV.{self._bucket}.{key}"
        try:
            msg = await self._js.get_msg(f"KV_{self._bucket}", subject=subject,
                                         direct=self._direct)
        except nats.js.errors.NotFoundError:
            return None
        except nats.errors.Error as exc:
            raise EventLogUnavailable(f"{what} not read: {exc!r}") from exc
        headers = msg.headers or {}
        if (msg.subject != subject or not msg.data or msg.seq is None
                or headers.get(_KV_OPERATION) in (_KV_DEL, _KV_PURGE)
                or _MARKER_REASON in headers):
            return None
        stored = None if msg.time is None else (msg.time - _EPOCH) // _MS
        return msg.data, msg.seq, stored

    async def _delete(self, key: str, last: int | None, what: str) -> bool:
        """Delete `key` if it is still at revision `last`; False if it moved."""
        try:
            await self._kv.delete(key, last=last)
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code == _WRONG_LAST_SEQUENCE:  # nats-py does not map it on delete
                return False
            raise EventLogUnavailable(f"{what} not deleted: {exc!r}") from exc
        except nats.errors.Error as exc:
            raise EventLogUnavailable(f"{what} not deleted: {exc!r}") from exc
        return True
