"""What every outbound policy kind (MeshTimeout, MeshRetry, MeshCircuitBreaker, MeshHTTPRoute)
does alike to a proxy's config: a policy that selects no proxy changes nothing, a change and
a delete reach the config through one cache (a delete gives back the config as it was,
versions too), and proxies selected alike share one build. Each kind's own effects: its
test_<kind>_config.py."""

from __future__ import annotations

from typing import Any

import pytest

from events import (
    MESH_CIRCUIT_BREAKER,
    MESH_HTTP_ROUTE,
    MESH_LOAD_BALANCING_STRATEGY,
    MESH_RETRY,
    MESH_TIMEOUT,
    PolicyKind,
)
from tests._policy_samples import resource, sample
from tests.xds_gateway._outbound import apply, dataplane, view_of
from xds_gateway.resources.cache import ResourceCache
from xds_gateway.resources.config_dump import config_json
from xds_gateway.resources.snapshot import build_snapshot
from xds_gateway.view import ProjectionView

pytestmark = pytest.mark.parametrize("kind", [MESH_TIMEOUT, MESH_RETRY, MESH_CIRCUIT_BREAKER,
                                              MESH_HTTP_ROUTE, MESH_LOAD_BALANCING_STRATEGY],
                                     ids=lambda k: k.type_name)


def _view() -> tuple[ProjectionView, Any]:
    return view_of(dataplane("backend-1", "10.0.0.1", 8080, "backend"),
                   dataplane("db-1", "10.0.0.3", 5432, "db", "tcp"),
                   dataplane("web-1", "10.0.0.9", 7070, "web"),
                   dataplane("web-2", "10.0.0.10", 7070, "web"))


def test_a_policy_that_selects_no_proxy_changes_nothing(kind: PolicyKind[Any]) -> None:
    view, projection = _view()
    before = config_json(view, "default", "web-1", ResourceCache())
    elsewhere = {**sample(kind).spec, "targetRef": {"kind": "Dataplane", "name": "db-1"}}

    apply(view, projection, resource(kind, "elsewhere", spec=elsewhere))

    assert config_json(view, "default", "web-1", ResourceCache()) == before


def test_a_change_and_a_delete_reach_the_config_through_one_cache(kind: PolicyKind[Any]
                                                                  ) -> None:
    view, projection = _view()
    cache = ResourceCache()
    before = config_json(view, "default", "web-1", cache)
    apply(view, projection, resource(kind, "p"))
    applied = config_json(view, "default", "web-1", cache)
    apply(view, projection, resource(kind, "p", spec=sample(kind).changed))
    changed = config_json(view, "default", "web-1", cache)

    view.apply(projection.fold([kind.deleted_event("default", "p", 3_000_000_000_000)]))

    assert before != applied != changed != before
    assert config_json(view, "default", "web-1", cache) == before  # versions too


def test_proxies_selected_alike_share_one_build(kind: PolicyKind[Any]) -> None:
    view, projection = _view()
    apply(view, projection, resource(kind, "p"))  # the sample selects web's proxies
    cache = ResourceCache()

    web1 = build_snapshot(view, "default", "web-1", cache)
    web2 = build_snapshot(view, "default", "web-2", cache)
    build_snapshot(view, "default", "db-1", cache)  # not selected: a part of its own

    assert web1.shared is web2.shared
    assert cache.shared_builds == 2
