"""`meshlog top`'s quantiles from histogram buckets agree with Prometheus's
`histogram_quantile`: linear inside the bucket the rank falls in, the largest finite bound in
+Inf, nothing without observations."""

from __future__ import annotations

import math

from services.cli._samples import quantile

INF = math.inf


def test_a_quantile_is_interpolated_inside_its_bucket() -> None:
    buckets = [(0.1, 50.0), (0.2, 100.0), (INF, 100.0)]
    assert quantile(0.5, buckets) == 0.1
    assert quantile(0.75, buckets) == 0.15000000000000002
    assert quantile(0.25, buckets) == 0.05  # the first bucket starts at 0


def test_a_quantile_in_the_inf_bucket_is_the_largest_finite_bound() -> None:
    assert quantile(0.99, [(0.1, 1.0), (0.5, 2.0), (INF, 10.0)]) == 0.5


def test_no_observations_have_no_quantile() -> None:
    assert quantile(0.5, [(0.1, 0.0), (INF, 0.0)]) is None
    assert quantile(0.5, []) is None
