"""The last record of each subject of a filter, as one replica of the stream has them: the
read behind `JetStreamEventLog.latest`, which checks it covers what the stream leader had.

An ephemeral pull consumer that delivers the last message per subject (JetStream's
`deliver_policy: last_per_subject`), then what arrives after it in stream order; its pending
count once made is the number of messages to fetch, so an empty answer costs no fetch
timeout. It is R1, so nats-server puts it on one replica of the stream, any one that is up
(`createGroupForConsumer` in jetstream_cluster.go: a random pick), and it reads that
replica's copy.

Each read deletes its consumer when it is done, whether it read, failed or was cancelled: a
guard's read is made per delete request (and again while a replica is behind), and a consumer
left to nats-server's inactivity threshold stays on the server for that long (`inactive_s`,
120 s for the log: under a burst of deletes, one per read). nats-py's `unsubscribe` drops only
the inbox, so the read names its consumer itself (as nats-py would, a NUID) and, once done,
publishes `$JS.API.CONSUMER.DELETE.<stream>.<name>` without a reply subject: nats-server does
the delete all the same and answers no one (`jsConsumerDeleteRequest`, jetstream_api.go; on a
cluster the meta leader does it). Nothing waits for it, so a read is no slower and a cancelled
read leaves no task behind; a delete that is lost (the connection gone, no meta leader) or
refused (a user without `CONSUMER.DELETE`, which `Refusals` logs) leaves the consumer to the
inactivity threshold, the backstop.
"""

from __future__ import annotations

import contextlib

import nats.errors
import nats.nuid
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from events.bus._pull import schema_of
from events.errors import EventLogUnavailable
from events.log import Record

_names = nats.nuid.NUID()
"""Names of the reads' consumers: NUIDs, as nats-py names the ones it makes."""

__all__ = ["last_per_subject"]


async def last_per_subject(nc: NATS, js: JetStreamContext, stream: str, subject_filter: str, *,
                           inactive_s: float, timeout_s: float) -> list[Record]:
    """The last record of each subject that matches `subject_filter` in the copy of the
    replica the consumer is put on, in stream order. Raises what nats-py raises when
    JetStream does not answer."""
    name = _names.next().decode()
    config = ConsumerConfig(name=name, filter_subject=subject_filter,
                            deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
                            ack_policy=AckPolicy.NONE, inactive_threshold=inactive_s,
                            mem_storage=True, num_replicas=1)
    last: dict[str, Record] = {}
    try:
        # deleted below even if this times out: the server may have made it all the same
        await js.add_consumer(stream, config=config, timeout=timeout_s)
        sub = await js.pull_subscribe_bind(consumer=name, stream=stream)
        try:
            # asked, not taken from the answer to the creation: on a cluster a fetch right
            # after that answer can reach the client's server before the consumer's interest
            # does (a 503, no responders: 28 reads in 2,000 on a loopback R3, none with the
            # info asked first)
            # within `timeout_s` too: a consumer on a replica that is catching up answers
            # late, and the JetStream context's own timeout is the whole read's
            pending = (await js.consumer_info(stream, name, timeout=timeout_s)).num_pending
            if pending is None:  # nats-server always sends it; without it nothing is known
                raise EventLogUnavailable(
                    f"cannot read {subject_filter}: consumer info without num_pending")
            while pending > 0:
                msgs = await sub.fetch(batch=min(pending, 1000), timeout=timeout_s)
                for msg in msgs:
                    # a subject written again after the consumer was made comes twice: the
                    # later record is its last
                    record = _record(msg)
                    last[record.subject] = record
                pending = msgs[-1].metadata.num_pending if msgs else 0
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
    finally:
        with contextlib.suppress(nats.errors.Error):
            await nc.publish(f"$JS.API.CONSUMER.DELETE.{stream}.{name}", b"")
    return sorted(last.values(), key=lambda record: record.seq)


def _record(msg: Msg) -> Record:
    headers = dict(msg.headers or {})
    return Record(
        seq=msg.metadata.sequence.stream,
        subject=msg.subject,
        data=msg.data,
        headers=headers,
        schema_version=schema_of(headers),
    )
