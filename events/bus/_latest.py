"""The last record of each subject of a filter, as one replica of the stream has them: the
read behind `JetStreamEventLog.latest`, which checks it covers what the stream leader had; or,
with `every`, each record of them (`deliver_policy: all`), behind `JetStreamEventLog.history`.

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

import asyncio
import contextlib
import logging

import nats.errors
import nats.nuid
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from events.bus._pull import schema_of
from events.bus._retry import raise_if_cancelled
from events.bus.connection import TRANSIENT
from events.errors import EventLogUnavailable, JetStreamUnavailable
from events.log import Record

log = logging.getLogger("meshlog.nats")

FENCED_ATTEMPT_S = 1.0
"""One attempt of a fenced read (`fenced_last_per_subject`): a consumer put on a follower
that is catching up may not deliver until it has, so an attempt that waited the read's whole
time there left a guard a 503 where another replica could answer at once."""
BEHIND_RETRY_S = 0.05
"""A fenced read whose replica was behind the stream leader is made again this soon: a
follower catching up gains thousands of records in that time."""

_names = nats.nuid.NUID()
"""Names of the reads' consumers: NUIDs, as nats-py names the ones it makes."""

__all__ = ["fenced_last_per_subject", "last_per_subject"]


async def last_per_subject(nc: NATS, js: JetStreamContext, stream: str, subject_filter: str, *,
                           inactive_s: float, timeout_s: float, every: bool = False,
                           after: int = 0) -> list[Record]:
    """The last record of each subject that matches `subject_filter` in the copy of the
    replica the consumer is put on, in stream order; with `every`, each of their records
    (those after sequence `after`). Raises what nats-py raises when JetStream does not
    answer."""
    name = _names.next().decode()
    if not every:
        policy, start = DeliverPolicy.LAST_PER_SUBJECT, None
    elif after:
        policy, start = DeliverPolicy.BY_START_SEQUENCE, after + 1
    else:
        policy, start = DeliverPolicy.ALL, None
    config = ConsumerConfig(name=name, filter_subject=subject_filter, deliver_policy=policy,
                            opt_start_seq=start, ack_policy=AckPolicy.NONE,
                            inactive_threshold=inactive_s, mem_storage=True, num_replicas=1)
    last: dict[str | int, Record] = {}
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
                    last[record.seq if every else record.subject] = record
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


async def fenced_last_per_subject(nc: NATS, js: JetStreamContext, stream: str,
                                  subject_filter: str, fence: int, *, inactive_s: float,
                                  timeout_s: float, every: bool = False, after: int = 0
                                  ) -> list[Record]:
    """`last_per_subject` made again until a replica's answer reaches `fence` (the stream
    leader's last record of the filter: `JetStreamEventLog.latest`), for up to `timeout_s`,
    in attempts of `FENCED_ATTEMPT_S`; a replica that does not answer is read again like one
    that is behind. Then the last attempt's error, or JetStreamUnavailable saying the replicas
    were behind."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        raise_if_cancelled()  # a cancel lost in an attempt is not another attempt
        left = deadline - loop.time()
        try:
            # each of an attempt's requests (make the consumer, its info, a fetch) is bounded
            # by this: an attempt ends within a few of them of the deadline
            records = await last_per_subject(nc, js, stream, subject_filter,
                                             inactive_s=inactive_s,
                                             timeout_s=max(min(FENCED_ATTEMPT_S, left), 0.1),
                                             every=every, after=after)
        except (nats.errors.ConnectionClosedError, nats.errors.NoServersError):
            raise  # not a replica's silence: no attempt will get through
        except TRANSIENT as exc:
            raise_if_cancelled()
            if loop.time() >= deadline:
                raise
            why = f"did not answer ({type(exc).__name__})"
        else:
            if records and records[-1].seq >= fence:
                return records
            if loop.time() >= deadline:
                raise JetStreamUnavailable(
                    f"JetStream is unavailable: cannot read {subject_filter}: the replicas "
                    f"that answered had not reached sequence {fence} of stream {stream} "
                    f"within {timeout_s:.0f} s (catching up?)")
            why = f"was behind sequence {fence}"
        log.debug("the replica that read %s for a guard %s; reading again", subject_filter, why)
        await asyncio.sleep(BEHIND_RETRY_S)
