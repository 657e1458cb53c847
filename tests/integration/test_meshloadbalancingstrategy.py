"""A MeshLoadBalancingStrategy in a real Envoy (resources.load_balancing): two backend
endpoints, each answering with its own address. Without a policy, Envoy's round robin sends
requests with the same `x-user` header to both; with RingHash hashing on `x-user`, every
request with one value reaches one endpoint, and many values reach both. Synchronised on
Envoy's admin API (the active listener's route, the cluster's lb_policy), never on time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import Envoy, answering_backend, free_port_on_all, meshlog_up, wait_for
from tests.integration._policy_envoy import BACKEND, active_route, web_to_backend

pytestmark = pytest.mark.integration

OTHER = "127.0.0.3"


def _lb_policy(envoy: Envoy, port: int) -> str | None:
    """backend's cluster's lb_policy in Envoy ("" when the cluster is there with Envoy's
    default, round robin)."""
    for entry in envoy.config_dump("dynamic_active_clusters").get("configs", []):
        cluster = entry.get("cluster", {})
        if cluster.get("name") == f"default_backend___msvc_{port}":
            policy: str = cluster.get("lb_policy", "")
            return policy
    return None


def _answered_by(url: str, users: list[str]) -> list[str]:
    """Which backend answered each GET of `url` with `x-user` set to each of `users` (one
    connection each, so no connection reuse hides the balancing)."""
    out = []
    for user in users:
        with httpx.Client(timeout=30) as client:
            answer = client.get(url, headers={"x-user": user})
        assert answer.status_code == 200, answer.text
        out.append(answer.text)
    return out


def test_ring_hash_on_a_header_sends_one_value_to_one_backend(tmp_path: Path) -> None:
    port = free_port_on_all([BACKEND, OTHER])
    with meshlog_up(tmp_path / "cp", "--vip-cidr", "127.100.0.0/16") as cp, \
            answering_backend(BACKEND, port, lambda path: (200, BACKEND.encode())), \
            answering_backend(OTHER, port, lambda path: (200, OTHER.encode())), \
            web_to_backend(cp, tmp_path, port, backends=(BACKEND, OTHER)) as (
                envoy, vip, listener):
        url = f"http://{vip}:{port}/"
        assert _lb_policy(envoy, port) == ""
        # round robin: one user's requests reach both
        assert set(_answered_by(url, ["alice"] * 8)) == {BACKEND, OTHER}

        cp.apply({"type": "MeshLoadBalancingStrategy", "mesh": "default", "name": "sticky",
                  "spec": {"to": [{"targetRef": {"kind": "MeshService", "name": "backend"},
                                   "default": {"loadBalancer": {
                                       "type": "RingHash", "ringHash": {"hashPolicies": [
                                           {"type": "Header",
                                            "header": {"name": "x-user"}}]}}}}]}})

        def applied() -> bool:
            route: dict[str, Any] = active_route(
                envoy.config_dump("dynamic_listeners"), listener) or {}
            return bool(route.get("hash_policy")) and _lb_policy(envoy, port) == "RING_HASH"

        wait_for(applied, timeout=60, what="the ring hash and the route's hash policy in Envoy")

        for user in ("alice", "bob", "carol"):
            assert len(set(_answered_by(url, [user] * 16))) == 1, user
        assert set(_answered_by(url, [f"user-{i}" for i in range(32)])) == {BACKEND, OTHER}
