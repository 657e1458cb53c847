"""Opening (or creating) the JetStream KV buckets meshlog shares between processes."""

from __future__ import annotations

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from events.errors import EventLogUnavailable

_TIMEOUT_S = 5.0


async def stop_watcher(watcher: KeyValue.KeyWatcher) -> None:
    """Stop a KV watcher; one whose connection or subscription is already gone is stopped."""
    try:
        await watcher.stop()  # type: ignore[no-untyped-call]  # nats-py leaves it unannotated
    except (nats.errors.ConnectionClosedError, nats.errors.BadSubscriptionError):
        pass


async def open_bucket(nc: NATS, bucket: str, *, replicas: int, what: str) -> KeyValue:
    """The bucket, created if missing (history 1, file storage, direct get); any NATS error,
    also a closed or draining connection, is `EventLogUnavailable` naming `what`."""
    js = nc.jetstream(timeout=_TIMEOUT_S)
    try:
        try:
            return await js.key_value(bucket)
        except nats.js.errors.BucketNotFoundError:
            return await js.create_key_value(KeyValueConfig(
                bucket=bucket, history=1, storage=StorageType.FILE, replicas=replicas,
                direct=True))
    except nats.errors.Error as exc:
        raise EventLogUnavailable(f"cannot open {what} bucket {bucket}: {exc!r}") from exc


async def allow_atomic_batches(nc: NATS, bucket: str, *, what: str) -> None:
    """Turn on atomic batches (`allow_atomic`, nats-server >= 2.12) on the bucket's stream if
    they are off (a bucket made by an earlier meshlog): an additive change, nothing stored
    changes."""
    js = nc.jetstream(timeout=_TIMEOUT_S)
    stream = f"KV_{bucket}"
    try:
        info = await js.stream_info(stream)
        if not info.config.allow_atomic:
            info.config.allow_atomic = True
            await js.update_stream(info.config)
    except nats.errors.Error as exc:
        raise EventLogUnavailable(f"cannot allow atomic batches on the {what} bucket "
                                  f"{bucket}: {exc!r}") from exc
