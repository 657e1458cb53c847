"""DNS for transparent proxies, with real parts: `meshlog up`, a real Envoy and real queries.

The sidecar's Dataplane has `transparentProxying`, so the gateway gives it Envoy's UDP DNS
filter answering the hostnames of the MeshServices it may reach with their VIPs. The DNS port
reaches the gateway the way kuma-dp tells Kuma's control plane: node metadata
`dataplane.dns.port` in the bootstrap (here a free port, instead of the default 15053).
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from services.cli.bootstrap import sidecar_bootstrap
from tests.harness import free_port, meshlog_up, run_envoy, wait_for

pytestmark = pytest.mark.integration


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _dataplane(name: str, address: str, port: int, service: str,
               **networking: object) -> dict[str, Any]:
    return {"type": "Dataplane", "mesh": "default", "name": name,
            "networking": {"address": address, **networking, "inbound": [
                {"port": port, "tags": {"kuma.io/service": service}}]}}


def _query(port: int, name: str) -> dns.message.Message | None:
    try:
        return dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port,
                             timeout=1)
    except dns.exception.Timeout:
        return None


def _a_records(port: int, name: str) -> list[str]:
    response = _query(port, name)
    if response is None:
        return []
    return [item.address for rrset in response.answer if rrset.rdtype == dns.rdatatype.A
            for item in rrset]


def test_transparent_proxy_resolves_meshservice_hostnames_to_vips(tmp_path: Path) -> None:
    with meshlog_up(tmp_path / "cp", "--vip-cidr", "127.101.0.0/16") as cp:
        cp.apply({"type": "Mesh", "name": "default"})
        cp.apply(_dataplane("backend-1", "127.0.0.2", free_port("127.0.0.2"), "backend"))
        cp.apply(_dataplane("web-1", "127.0.0.4", free_port("127.0.0.4"), "web",
                            transparentProxying={}))
        vip = cp.meshservice("backend")["status"]["vips"][0]["ip"]
        dns_port = _free_udp_port()
        bootstrap = sidecar_bootstrap(mesh="default", name="web-1", xds_host="127.0.0.1",
                                      xds_port=cp.xds_port, admin_port=0,
                                      token=cp.dataplane_token("web-1"))
        bootstrap["node"]["metadata"] = {"dataplane.dns.port": str(dns_port)}
        with run_envoy(bootstrap, tmp_path / "envoy", "web-1") as envoy:
            assert wait_for(lambda: _a_records(dns_port, "backend.svc.mesh.local"),
                            timeout=60, what="an A record from Envoy's DNS") == [vip]

            unknown = _query(dns_port, "nothing.svc.mesh.local")
            assert unknown is not None, "no answer for an unknown name"
            assert unknown.rcode() == dns.rcode.NXDOMAIN and not unknown.answer

            # a MeshService applied later is answered too (the listener is updated in place)
            cp.apply({"type": "MeshService", "mesh": "default", "name": "backend-api",
                      "spec": {"selector": {"dataplaneTags": {"kuma.io/service": "backend"}},
                               "ports": [{"port": 9090, "appProtocol": "http"}]}})
            api_vip = cp.meshservice("backend-api")["status"]["vips"][0]["ip"]
            assert wait_for(lambda: _a_records(dns_port, "backend-api.svc.mesh.local"),
                            timeout=60, what="the later MeshService in DNS") == [api_vip]

            rejected = envoy.stats("update_rejected")
            assert rejected and all(v == 0 for v in rejected.values()), rejected
