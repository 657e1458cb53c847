"""One scrape of a `/metrics` endpoint, read with prometheus_client's own parser, and the
arithmetic `meshlog top` does on scrapes: sums over labels, rates between two scrapes and
quantiles from histogram buckets (Prometheus's `histogram_quantile`)."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Scrape", "ScrapeError", "merged", "quantile", "scrape"]

_TIMEOUT = httpx.Timeout(5.0, connect=2.0)

Key = tuple[str, frozenset[tuple[str, str]]]


class ScrapeError(Exception):
    """An endpoint that did not answer with a Prometheus exposition; the message names it."""


@dataclass(frozen=True)
class Scrape:
    """The samples of one or more endpoints at one moment (`at`, monotonic seconds)."""

    url: str
    at: float
    samples: dict[Key, float]

    def value(self, name: str, **labels: str) -> float:
        """The sum of `name`'s samples that carry `labels` (0 if none)."""
        wanted = set(labels.items())
        return sum(v for (n, have), v in self.samples.items() if n == name and wanted <= have)

    def has(self, name: str) -> bool:
        return any(n == name for n, _ in self.samples)

    def by(self, name: str, *labels: str) -> dict[tuple[str, ...], float]:
        """`name`'s samples summed by the values of `labels` (`sum by (...)`)."""
        out: dict[tuple[str, ...], float] = defaultdict(float)
        for (n, have), v in self.samples.items():
            if n == name:
                d = dict(have)
                out[tuple(d.get(label, "") for label in labels)] += v
        return dict(out)

    def buckets(self, name: str, **labels: str) -> list[tuple[float, float]]:
        """The histogram `name`'s cumulative buckets as (upper bound, count), summed over
        every other label, in order of bound."""
        counts: dict[float, float] = defaultdict(float)
        wanted = set(labels.items())
        for (n, have), v in self.samples.items():
            if n == name + "_bucket" and wanted <= have:
                counts[float(dict(have)["le"])] += v
        return sorted(counts.items())


def scrape(client: httpx.Client, url: str) -> Scrape:
    """GET `url` and parse it; `ScrapeError` naming `url` if it is down or not Prometheus."""
    try:
        response = client.get(url, timeout=_TIMEOUT)
    except httpx.HTTPError as exc:
        raise ScrapeError(f"cannot scrape {url}: {exc or type(exc).__name__}") from exc
    if response.status_code != 200:
        raise ScrapeError(f"cannot scrape {url}: HTTP {response.status_code}")
    try:
        samples = {(s.name, frozenset(s.labels.items())): s.value
                   for family in text_string_to_metric_families(response.text)
                   for s in family.samples}
    except ValueError as exc:
        raise ScrapeError(f"cannot scrape {url}: not a Prometheus exposition ({exc})") from exc
    return Scrape(url, time.monotonic(), samples)


def merged(scrapes: Iterable[Scrape]) -> Scrape:
    """Several endpoints as one (samples with the same name and labels added), like
    Prometheus's `sum` across instances; `at` is the latest scrape's."""
    samples: dict[Key, float] = defaultdict(float)
    at, urls = 0.0, []
    for one in scrapes:
        urls.append(one.url)
        at = max(at, one.at)
        for key, v in one.samples.items():
            samples[key] += v
    return Scrape(", ".join(urls), at, dict(samples))


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """The `q` quantile of cumulative `buckets`, interpolated linearly inside the bucket it
    falls in, as Prometheus's `histogram_quantile` does; None with no observations. In the
    +Inf bucket it is the largest finite bound."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound
