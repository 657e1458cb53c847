"""What every meshlog process's `/metrics` serves: the default prometheus-client registry,
rendered after the values that are read when scraped are refreshed.

Each part defines its own metrics next to its code (`projections.metrics`,
`xds_gateway.server.metrics`, `services.api.metrics`); this module adds the NATS connections
and renders. One process, one registry: `meshlog up` serves every part on the API's
`/metrics`.

    meshlog_nats_connected{connection}         gauge: 1 while the connection is up, else 0
    meshlog_nats_reconnects_total{connection}  counter
    meshlog_projection_rows_left_out_total{collection}  counter: read-model rows too big to
        publish (`events.bus.projection_bus`), which gateways then serve an older version of
"""

from __future__ import annotations

from collections.abc import Iterator

from nats.aio.client import Client as NATS
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from events.bus.projection_bus import LEFT_OUT
from projections.metrics import refresh as refresh_projector_lag

__all__ = ["CONTENT_TYPE", "exposition", "watch_nats"]

CONTENT_TYPE = "text/plain; version=0.0.4"
"""What `generate_latest` renders (the text format every Prometheus reads); the HTTP servers
add `charset=utf-8`."""

_connections: dict[str, NATS] = {}
"""By connection name (meshlog-api, meshlog-projector, meshlog-gateway): the latest one."""


def watch_nats(name: str, nc: NATS) -> None:
    """Report `nc`'s state as connection `name` (a later connection of the name replaces it)."""
    _connections[name] = nc


class _NatsCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        connected = GaugeMetricFamily("meshlog_nats_connected",
                                      "1 while the NATS connection is up, 0 otherwise.",
                                      labels=["connection"])
        reconnects = CounterMetricFamily("meshlog_nats_reconnects",
                                         "Times the NATS connection was re-established.",
                                         labels=["connection"])
        for name, nc in sorted(_connections.items()):
            connected.add_metric([name], 1 if nc.is_connected else 0)
            reconnects.add_metric([name], nc.stats.get("reconnects", 0))
        yield connected
        yield reconnects
        left_out = CounterMetricFamily(
            "meshlog_projection_rows_left_out",
            "Read-model rows left out of a publish, too big for a NATS message even "
            "compressed; gateways keep serving their last version.", labels=["collection"])
        for collection, count in sorted(LEFT_OUT.items()):
            left_out.add_metric([collection], count)
        yield left_out


REGISTRY.register(_NatsCollector())


async def exposition() -> bytes:
    """The registry in Prometheus' text format, the values read when scraped refreshed first
    (each bounded: a scrape answers also while NATS is down)."""
    await refresh_projector_lag()
    return generate_latest(REGISTRY)
