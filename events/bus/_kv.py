"""Opening (or creating) the JetStream KV buckets meshlog shares between processes."""

from __future__ import annotations

import asyncio
import contextlib

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, KeyValueConfig, StorageType, StreamConfig
from nats.js.kv import KeyValue

from events.errors import EventLogUnavailable

_TIMEOUT_S = 5.0
_STREAM_NAME_IN_USE = 10058
"""A stream of that name exists with another configuration."""


async def stop_watcher(watcher: KeyValue.KeyWatcher) -> None:
    """Stop a KV watcher; one whose connection or subscription is already gone is stopped."""
    try:
        await watcher.stop()  # type: ignore[no-untyped-call]  # nats-py leaves it unannotated
    except (nats.errors.ConnectionClosedError, nats.errors.BadSubscriptionError):
        pass


async def open_bucket(nc: NATS, bucket: str, *, replicas: int, what: str,
                      atomic: bool = False) -> KeyValue:
    """The bucket, created if missing (history 1, file storage, direct get; with `atomic`,
    atomic batches allowed); any NATS error, also a closed or draining connection, is
    `EventLogUnavailable` naming `what`. An existing bucket is taken as it is (changing a
    stream's configuration is for admins, events.bus.permissions)."""
    js = nc.jetstream(timeout=_TIMEOUT_S)
    try:
        try:
            return await js.key_value(bucket)
        except nats.js.errors.BucketNotFoundError:
            if not atomic:
                kv = await js.create_key_value(KeyValueConfig(
                    bucket=bucket, history=1, storage=StorageType.FILE, replicas=replicas,
                    direct=True))
            else:
                await _create_atomic(js, bucket, replicas)
                kv = await js.key_value(bucket)
            await await_stream_leader(js, f"KV_{bucket}")
            return kv
    except nats.errors.Error as exc:
        raise EventLogUnavailable(f"cannot open {what} bucket {bucket}: {exc!r}") from exc



async def atomic_batches_allowed(nc: NATS, bucket: str) -> bool:
    """Whether the bucket's stream takes atomic batches (`allow_atomic`)."""
    try:
        info = await nc.jetstream(timeout=_TIMEOUT_S).stream_info(f"KV_{bucket}")
    except nats.errors.Error as exc:
        raise EventLogUnavailable(f"cannot read the bucket {bucket}: {exc!r}") from exc
    return bool(info.config.allow_atomic)


async def _create_atomic(js: JetStreamContext, bucket: str, replicas: int) -> None:
    """The stream nats-py's `create_key_value` makes for history 1, plus `allow_atomic`
    (nats-py's KeyValueConfig has no such field). A racing creator's identical stream is
    fine; one made without atomic batches (an older meshlog) is taken as it is."""
    try:
        await js.add_stream(StreamConfig(
            name=f"KV_{bucket}", subjects=[f"$KV.{bucket}.>"], allow_direct=True,
            allow_rollup_hdrs=True, allow_msg_ttl=True, deny_delete=True,
            discard=DiscardPolicy.NEW, duplicate_window=120, max_consumers=-1, max_msgs=-1,
            max_msgs_per_subject=1, num_replicas=replicas, storage=StorageType.FILE,
            allow_atomic=True))
    except nats.js.errors.BadRequestError as exc:
        if exc.err_code != _STREAM_NAME_IN_USE:
            raise


_LEADER_WAIT_S = 10.0


async def await_stream_leader(js: JetStreamContext, stream: str) -> None:
    """After creating a stream on a cluster, of any replica count (an R1 stream is a group of
    one there, with its own election): until its group has elected a leader (a few hundred ms
    on loopback), so the first write is not refused for having none (seen in CI: an R1 log's
    first append on a 3-node cluster found no responder). One `STREAM.INFO` on a single
    server. Bounded: past it, writes get the usual transient error."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _LEADER_WAIT_S
    while loop.time() < deadline:
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            info = await js.stream_info(stream)
            if info.cluster is None or info.cluster.leader:
                return  # a single server has no group; or the group has its leader
        await asyncio.sleep(0.05)
