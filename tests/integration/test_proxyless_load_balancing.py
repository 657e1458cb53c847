"""MeshLoadBalancingStrategy's RingHash for proxyless gRPC with real parts: `meshlog up`, two
real grpcio servers as `backend` (`backend-1`, `backend-2`) and grpcio's own xDS client
(`xds:///backend:<port>`) as Dataplane `client-1`, with no Envoy in between
(xds_gateway.resources.proxyless_policies.for_load_balancing).

Without a policy the client round-robins: calls reach both backends, so no `x-user` value
sticks to one. With a RingHash hashing the `x-user` header (gRFC A42: the cluster's
`RING_HASH`, the route's header `hash_policy`), every call with one `x-user` reaches one
backend, and different values reach both. The config's arrival is polled by calls: the
policy has arrived once every user's calls stick.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.harness import ControlPlane, free_port, grpc_server, meshlog_up, wait_for
from tests.integration._proxyless import BACKEND, grpc_dataplane, proxyless_client

pytestmark = pytest.mark.integration

WHO = "/meshlog.test.Lb/Who"
BACKEND_2 = "127.0.0.3"
USERS = [f"user-{n}" for n in range(16)]
CALLS = 4  # per user: round robin over two backends never keeps 4 calls on one


def _backend(host: str, port: int, name: bytes) -> contextlib.AbstractContextManager[None]:
    return grpc_server(host, port, "meshlog.test.Lb", {"Who": lambda _r, _c: name})


def _who(channel: grpc.Channel, user: str | None = None) -> bytes:
    call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(WHO)
    metadata = None if user is None else (("x-user", user),)
    answer: bytes = call(b"", timeout=30, metadata=metadata)
    return answer


def _sticky(channel: grpc.Channel) -> dict[str, set[bytes]]:
    """The backends each user's CALLS calls reached."""
    return {u: {_who(channel, u) for _ in range(CALLS)} for u in USERS}


@contextlib.contextmanager
def _mesh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
          ) -> Iterator[tuple[ControlPlane, grpc.Channel]]:
    """`meshlog up --no-auth`, both backends and a channel as `client-1` whose calls have
    reached both."""
    port = free_port(BACKEND)
    with (meshlog_up(tmp_path / "cp", "--no-auth") as cp,
          _backend(BACKEND, port, b"backend-1"), _backend(BACKEND_2, port, b"backend-2")):
        cp.apply({"type": "Mesh", "name": "default"})
        with proxyless_client(cp, monkeypatch, port,
                              lambda channel: _who(channel) == b"backend-1") as channel:
            cp.apply(grpc_dataplane("backend-2", BACKEND_2, port, "backend"))
            seen: set[bytes] = set()

            def both() -> bool:
                seen.add(_who(channel))
                return seen == {b"backend-1", b"backend-2"}

            wait_for(both, timeout=60, what="calls to reach both backends")
            yield cp, channel


def test_ring_hash_on_a_header_keeps_each_users_calls_on_one_backend(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with _mesh(tmp_path, monkeypatch) as (cp, channel):
        assert all(len(backends) == 2 for backends in _sticky(channel).values())

        cp.apply({"type": "MeshLoadBalancingStrategy", "mesh": "default", "name": "by-user",
                  "spec": {"targetRef": {"kind": "MeshSubset",
                                         "tags": {"kuma.io/service": "client"}},
                           "to": [{"targetRef": {"kind": "MeshService", "name": "backend"},
                                   "default": {"loadBalancer": {
                                       "type": "RingHash", "ringHash": {"hashPolicies": [
                                           {"type": "Header",
                                            "header": {"name": "x-user"}}]}}}}]}})
        wait_for(lambda: all(len(b) == 1 for b in _sticky(channel).values()),
                 timeout=60, what="the RingHash to keep each user on one backend")

        sticky = _sticky(channel)
        assert all(len(backends) == 1 for backends in sticky.values()), sticky
        assert set().union(*sticky.values()) == {b"backend-1", b"backend-2"}, sticky
