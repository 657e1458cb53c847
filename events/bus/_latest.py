"""The last record of each subject of a filter, as one replica of the stream has them: the
read behind `JetStreamEventLog.latest`, which checks it covers what the stream leader had.

An ephemeral pull consumer that delivers the last message per subject (JetStream's
`deliver_policy: last_per_subject`), then what arrives after it in stream order; its pending
count at creation is the number of messages to fetch, so an empty answer costs no fetch
timeout. It is R1, so nats-server puts it on one replica of the stream, any one that is up
(`createGroupForConsumer` in jetstream_cluster.go: a random pick), and it reads that
replica's copy.
"""

from __future__ import annotations

import contextlib

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from events.bus._pull import schema_of
from events.errors import EventLogUnavailable
from events.log import Record

__all__ = ["last_per_subject"]


async def last_per_subject(js: JetStreamContext, stream: str, subject_filter: str, *,
                           inactive_s: float, timeout_s: float) -> list[Record]:
    """The last record of each subject that matches `subject_filter` in the copy of the
    replica the consumer is put on, in stream order. Raises what nats-py raises when
    JetStream does not answer."""
    sub = await js.pull_subscribe(
        subject_filter, durable=None, stream=stream,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
                              ack_policy=AckPolicy.NONE, inactive_threshold=inactive_s,
                              mem_storage=True, num_replicas=1))
    last: dict[str, Record] = {}
    try:
        pending = (await sub.consumer_info()).num_pending
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
        with contextlib.suppress(nats.errors.ConnectionClosedError, nats.errors.Error):
            await sub.unsubscribe()
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
