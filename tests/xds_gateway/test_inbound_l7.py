"""An inbound's filter chains per protocol and mTLS mode (`listeners.inbound_listener`):
which proxy each chain runs, its codec and where MeshTrafficPermission sits."""

from __future__ import annotations

import pytest
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2 import (  # noqa: E501
    HttpConnectionManager,
)
from envoy.extensions.filters.network.rbac.v3.rbac_pb2 import RBAC

from xds_gateway.resources.listeners import InboundTls, inbound_listener


def _chains(listener: Listener) -> list[tuple[list[str], str | None, list[str]]]:
    """Per chain: its network filters' names, the connection manager's codec and its HTTP
    filters' names (None and [] without one)."""
    out = []
    for chain in listener.filter_chains:
        names = [f.name for f in chain.filters]
        codec, http = None, []
        for f in chain.filters:
            if f.name == "envoy.filters.network.http_connection_manager":
                hcm = HttpConnectionManager()
                f.typed_config.Unpack(hcm)
                codec = HttpConnectionManager.CodecType.Name(hcm.codec_type)
                http = [h.name for h in hcm.http_filters]
        out.append((names, codec, http))
    return out


_HCM = "envoy.filters.network.http_connection_manager"
_TCP = "envoy.filters.network.tcp_proxy"
_ROUTER = "envoy.filters.http.router"


def _tls(mode: str) -> InboundTls:
    return InboundTls(mesh="default", mode=mode, rbac=RBAC(stat_prefix="inbound_8080."))


@pytest.mark.parametrize(("protocol", "codec"), [("http", "AUTO"), ("grpc", "HTTP2"),
                                                 ("http2", "HTTP2")])
def test_permissive_l7_inbound_http2_only_on_the_mesh_mtls_chain(protocol: str,
                                                                  codec: str) -> None:
    """The mesh's mTLS negotiates ALPN `kuma`, so its chain names the codec; plaintext finds
    HTTP/2 by its preface (an HTTP/1.1 client of a gRPC app still gets an answer); the app's
    own TLS passes through at L4. RBAC is the mTLS chain's first HTTP filter only."""
    listener = inbound_listener("inbound:10.0.0.1:8080", "10.0.0.1", 8080, "localhost:8080",
                                _tls("PERMISSIVE"), protocol)

    assert _chains(listener) == [
        ([_HCM], codec, ["envoy.filters.http.rbac", _ROUTER]),
        ([_TCP], None, []),
        ([_HCM], "AUTO", [_ROUTER]),
    ]


def test_strict_l7_and_l4_inbounds() -> None:
    strict = inbound_listener("inbound:10.0.0.1:8080", "10.0.0.1", 8080, "localhost:8080",
                              _tls("STRICT"), "grpc")
    assert _chains(strict) == [([_HCM], "HTTP2", ["envoy.filters.http.rbac", _ROUTER])]
    tcp = inbound_listener("inbound:10.0.0.1:8080", "10.0.0.1", 8080, "localhost:8080",
                           _tls("STRICT"), "tcp")
    assert _chains(tcp) == [(["envoy.filters.network.rbac", _TCP], None, [])]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_an_l7_inbound_without_mtls_finds_the_codec_per_connection(protocol: str) -> None:
    listener = inbound_listener("inbound:10.0.0.1:8080", "10.0.0.1", 8080, "localhost:8080",
                                None, protocol)
    assert _chains(listener) == [([_HCM], "AUTO", [_ROUTER])]
