"""Trace headers are not input to the fold (DESIGN.md, Observability): read models are the
same whether the writes were traced or not, and whether the projector traces or not, on a
real nats-server."""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

import pytest

from events import JetStreamEventLog, connect_nats, encode_event
from events.bus.trace_context import TRACEPARENT, tracer
from projections import Projector, open_store
from projections.tracing import MAX_LINKS
from services.bench.history import synthetic_history
from services.runtime.embedded_nats import run_nats_server
from tests.tracing import in_memory_tracing, int_attribute, spans_named

pytestmark = pytest.mark.integration

EVENTS = 300


async def _write(url: str, closing: contextlib.AsyncExitStack) -> JetStreamEventLog:
    """The same history into the log at `url`, one append at a time, each in a span of its
    own when tracing is on (`JetStreamEventLog.append` puts its context in the headers)."""
    nc = await connect_nats(url, name="test")
    closing.push_async_callback(nc.close)
    log = await JetStreamEventLog.open(nc)
    last: dict[str, int] = {}
    for subject, event in synthetic_history(EVENTS, services=20, dataplanes=100):
        msg_id = hashlib.sha256(subject.encode() + encode_event(event)).hexdigest()[:32]
        with contextlib.ExitStack() as stack:
            traces = tracer()
            if traces is not None:  # what the API does: a span per request
                stack.enter_context(traces.start_as_current_span("write"))
            appended = await log.append(subject, event,
                                        expected_last_subject_seq=last.get(subject, 0),
                                        msg_id=msg_id)
        last[subject] = appended.seq
    return log


async def _fold(log: JetStreamEventLog, db: Path) -> list[tuple[str, str, bytes]]:
    store = await open_store(f"sqlite:///{db}")
    try:
        await Projector(log, store, None, zone="default").run(until_seq=await log.last_seq())
        return await store.rows()
    finally:
        await store.close()


async def test_read_models_are_the_same_with_tracing_on_or_off(tmp_path: Path) -> None:
    async with run_nats_server(tmp_path / "traced") as traced_url, \
            run_nats_server(tmp_path / "plain") as plain_url, \
            contextlib.AsyncExitStack() as stack:
        with in_memory_tracing() as spans:
            traced_log = await _write(traced_url, stack)
            folded_traced = await _fold(traced_log, tmp_path / "traced-on.db")
        plain_log = await _write(plain_url, stack)
        replayed_untraced = await _fold(traced_log, tmp_path / "traced-off.db")
        folded_plain = await _fold(plain_log, tmp_path / "plain.db")
        first = await traced_log.at(1)
        untraced_first = await plain_log.at(1)
    # the traced log's records do carry trace context, and the projector used it
    assert first is not None and TRACEPARENT in first.headers
    assert untraced_first is not None and TRACEPARENT not in untraced_first.headers
    assert len(spans_named(spans, "meshlog.append")) == EVENTS
    [*folds] = spans_named(spans, "meshlog.projector.fold")
    assert sum(int_attribute(f, "meshlog.batch.events") for f in folds) == EVENTS
    # every write linked, up to the SDK's link limit per batch
    assert sum(len(f.links) for f in folds) == sum(
        min(int_attribute(f, "meshlog.batch.events"), MAX_LINKS) for f in folds)
    # ...and none of it reached the read models
    assert folded_traced
    assert folded_traced == replayed_untraced == folded_plain
