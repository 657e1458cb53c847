"""The gateway's Prometheus metrics, in the process's default registry (prometheus-client).

The push path stays as it was (docs/benchmarks.md, Propagation): the streams already count
their responses, ACKs and NACKs per type (`TypeState`), and the encode-once cache its hits
(`ResourceCache`); a custom collector reads those when scraped. What is added per response is
one callback (`StreamMetrics.on_stream_response`: a dict lookup, and a histogram observation
only for the first response of a type after a view change); per snapshot, two clock reads.

    meshlog_xds_streams{protocol}                     gauge: open streams (sotw, delta, hds)
    meshlog_xds_subscribed_streams{protocol,type_url} gauge: open streams subscribed to a type
    meshlog_xds_responses_total{protocol,type_url}    counter
    meshlog_xds_resources_sent_total{protocol,type_url} counter
    meshlog_xds_acks_total{protocol,type_url}         counter
    meshlog_xds_nacks_total{protocol,type_url}        counter
    meshlog_xds_cache_lookups_total{cache,result}     counter: cache resource|shared|response,
                                                      result hit|miss (miss = built and encoded)
    meshlog_xds_view_generation                       gauge: batches applied to the view
    meshlog_xds_view_checkpoint                       gauge: the projector checkpoint it holds
    meshlog_xds_push_latency_seconds{type_url}        histogram: a projector batch applied to the
                                                      view -> a response of a type written
    meshlog_xds_snapshot_build_seconds                histogram: one proxy's snapshot built

Counters stay monotonic across stream ends: a closed stream's counts are added to the totals
of its gateway (`on_stream_closed`). Streams refused for their token are not here (this
module comes after authentication): `meshlog_xds_token_refusals_total{reason}` is
xds_gateway.proxies.auth's.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import Counter as Tally
from collections.abc import Iterable, Iterator, Mapping

from prometheus_client import REGISTRY, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from xds_gateway.resources.cache import ResourceCache
from xds_gateway.resources.node import ProxyNode
from xds_gateway.resources.snapshot import Snapshot
from xds_gateway.server.callbacks import NoCallbacks, StreamInfo
from xds_gateway.server.source import SnapshotSource
from xds_gateway.server.subscription import TypeState
from xds_gateway.view import ProjectionView

__all__ = ["StreamMetrics", "TimedSnapshots"]

PUSH_LATENCY = Histogram(
    "meshlog_xds_push_latency_seconds",
    "From a projector batch applied to the gateway's view to a response of a type written "
    "to a stream that was already connected.", ["type_url"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
SNAPSHOT_BUILD = Histogram(
    "meshlog_xds_snapshot_build_seconds", "Time to build one proxy's snapshot (per view "
    "generation per stream; shared parts are built by the first proxy that needs them).",
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5))

_COUNTS = ("responses", "resources_sent", "acks", "nacks")
_live: weakref.WeakSet[StreamMetrics] = weakref.WeakSet()


class StreamMetrics(NoCallbacks):
    """A `StreamCallbacks` that keeps one gateway's streams for the collector, and times pushes.
    The gateway puts it after authentication: refused streams are not counted."""

    def __init__(self, view: ProjectionView, cache: ResourceCache) -> None:
        self.view = view
        self.cache = cache
        self.streams: dict[StreamInfo, dict[str, int]] = {}
        """Open streams -> the view generation of their last response, per type."""
        self.closed: Tally[tuple[str, str, str]] = Tally()
        """(count, protocol, type URL) -> what streams that ended had counted."""
        _live.add(self)

    async def on_stream_open(self, stream: StreamInfo) -> None:
        self.streams[stream] = {}

    def on_stream_response(self, stream: StreamInfo, type_url: str, version: str, nonce: str,
                           resources: int) -> None:
        generations = self.streams.get(stream)
        if generations is None:
            return
        generation = self.view.generation
        previous = generations.get(type_url)
        generations[type_url] = generation
        # a stream that had this type at an older generation: this response is a push
        if previous is not None and previous != generation:
            PUSH_LATENCY.labels(type_url).observe(time.monotonic() - self.view.applied_at)

    async def on_stream_closed(self, stream: StreamInfo) -> None:
        if self.streams.pop(stream, None) is None:
            return
        for type_url, state in stream.types.items():
            for count in _COUNTS:
                self.closed[count, stream.protocol, type_url] += getattr(state, count)


class TimedSnapshots:
    """A `SnapshotSource` that times its source's snapshot builds."""

    def __init__(self, source: SnapshotSource) -> None:
        self._source = source

    @property
    def generation(self) -> int:
        return self._source.generation

    def wake_on_change(self, wake: asyncio.Event) -> None:
        self._source.wake_on_change(wake)

    def stop_waking(self, wake: asyncio.Event) -> None:
        self._source.stop_waking(wake)

    def snapshot(self, mesh: str, name: str, node: ProxyNode,
                 previous: Snapshot | None) -> Snapshot:
        started = time.perf_counter()
        try:
            return self._source.snapshot(mesh, name, node, previous)
        finally:
            SNAPSHOT_BUILD.observe(time.perf_counter() - started)


def _types(streams: Iterable[StreamInfo]) -> Iterator[tuple[str, str, TypeState]]:
    for stream in streams:
        for type_url, state in list(stream.types.items()):
            yield stream.protocol, type_url, state


class _GatewayCollector(Collector):
    """Reads every live gateway's streams and cache when scraped."""

    def collect(self) -> Iterator[Metric]:
        gateways = list(_live)
        streams = GaugeMetricFamily("meshlog_xds_streams", "Open xDS streams by protocol.",
                                    labels=["protocol"])
        subscribed = GaugeMetricFamily("meshlog_xds_subscribed_streams",
                                       "Open ADS streams subscribed to a type.",
                                       labels=["protocol", "type_url"])
        open_streams: Tally[str] = Tally({"sotw": 0, "delta": 0, "hds": 0})
        subscriptions: Tally[tuple[str, str]] = Tally()
        totals: Tally[tuple[str, str, str]] = Tally()
        for gateway in gateways:
            live = list(gateway.streams)
            open_streams.update(s.protocol for s in live)
            totals.update(gateway.closed)
            for protocol, type_url, state in _types(live):
                subscriptions[protocol, type_url] += 1
                for count in _COUNTS:
                    totals[count, protocol, type_url] += getattr(state, count)
        for protocol, n in sorted(open_streams.items()):
            streams.add_metric([protocol], n)
        for (protocol, type_url), n in sorted(subscriptions.items()):
            subscribed.add_metric([protocol, type_url], n)
        yield streams
        yield subscribed
        yield from _counters(totals)
        yield from _cache([g.cache for g in gateways])
        yield from _view([g.view for g in gateways])


def _counters(totals: Mapping[tuple[str, str, str], int]) -> Iterator[Metric]:
    helps = {"responses": "xDS responses written.",
             "resources_sent": "Resources carried by xDS responses.",
             "acks": "xDS responses the client ACKed.",
             "nacks": "xDS responses the client NACKed (rejected)."}
    for count, text in helps.items():
        family = CounterMetricFamily(f"meshlog_xds_{count}", text,
                                     labels=["protocol", "type_url"])
        for (name, protocol, type_url), n in sorted(totals.items()):
            if name == count:
                family.add_metric([protocol, type_url], n)
        yield family


def _cache(caches: list[ResourceCache]) -> Iterator[Metric]:
    family = CounterMetricFamily(
        "meshlog_xds_cache_lookups", "Encode-once cache lookups (miss: built and encoded).",
        labels=["cache", "result"])
    family.add_metric(["resource", "hit"], sum(c.hits for c in caches))
    family.add_metric(["resource", "miss"], sum(c.builds for c in caches))
    family.add_metric(["shared", "hit"], sum(c.shared_hits for c in caches))
    family.add_metric(["shared", "miss"], sum(c.shared_builds for c in caches))
    family.add_metric(["response", "hit"], sum(c.body_hits for c in caches))
    family.add_metric(["response", "miss"], sum(c.body_builds for c in caches))
    yield family


def _view(views: list[ProjectionView]) -> Iterator[Metric]:
    yield GaugeMetricFamily("meshlog_xds_view_generation",
                            "Projector batches applied to the gateway's view.",
                            value=max((v.generation for v in views), default=0))
    yield GaugeMetricFamily("meshlog_xds_view_checkpoint",
                            "The projector checkpoint the gateway's view holds.",
                            value=max((v.checkpoint for v in views), default=0))


REGISTRY.register(_GatewayCollector())
